"""Protocol text and defaults of caller entry, in one place (entry.md and the outbound captures
in ``confd_tests/captures/outbound``)."""

from __future__ import annotations

# --- outbound event socket commands (a_member_pin.cmds) ------------------------------------------
CMD_CONNECT = "connect"
CMD_MYEVENTS = "myevents"
CMD_LINGER = "linger"
CMD_EXIT = "exit"
CMD_SENDMSG = "sendmsg"
CMD_API = "api"

# sendmsg headers
H_CALL_COMMAND = "call-command"
H_APP_NAME = "execute-app-name"
H_APP_ARG = "execute-app-arg"
H_EVENT_LOCK = "event-lock"
H_EVENT_UUID = "Event-UUID"
H_HANGUP_CAUSE = "hangup-cause"
CALL_EXECUTE = "execute"
CALL_HANGUP = "hangup"

# Applications confd runs on a caller's channel.
APP_ANSWER = "answer"
APP_PLAYBACK = "playback"
APP_READ_DIGITS = "play_and_get_digits"
APP_SET = "set"
APP_RECORD = "record"
APP_CONFERENCE = "conference"
APP_HANGUP = "hangup"
APPS = frozenset(
    (APP_ANSWER, APP_PLAYBACK, APP_READ_DIGITS, APP_SET, APP_RECORD, APP_CONFERENCE, APP_HANGUP)
)

# Replies (a_member_pin.cmds, d2_hangup_mid_pagd_nolinger.cmds)
REPLY_OK = "+OK"
REPLY_ERR = "-ERR"
REPLY_BYE = "+OK bye"
REPLY_EVENTS_ENABLED = "+OK Events Enabled"
REPLY_WILL_LINGER = "+OK will linger"
REPLY_CONNECT = "+OK\n"  # the connect reply's Reply-Text, URL-encoded on the wire ("%2BOK%0A")

# Headers of the connect reply and of channel events
H_SOCKET_MODE = "Socket-Mode"
H_CONTROL = "Control"
H_UNIQUE_ID = "Unique-ID"
H_EVENT_NAME = "Event-Name"
H_APPLICATION = "Application"
H_APPLICATION_UUID = "Application-UUID"
H_APPLICATION_RESPONSE = "Application-Response"
H_ANSWER_STATE = "Answer-State"
H_HANGUP_CAUSE_EVENT = "Hangup-Cause"
H_DESTINATION = "Caller-Destination-Number"
H_CONTENT_DISPOSITION = "Content-Disposition"
VAR_PREFIX = "variable_"  # a channel variable as an event header
SOCKET_MODE_ASYNC = "async"
SOCKET_MODE_STATIC = "static"  # `socket ... full` without async (f_sync_member)
ANSWER_STATE_HANGUP = "hangup"
DISPOSITION_LINGER = "linger"
DISPOSITION_DISCONNECT = "disconnect"

# Channel events confd reads (myevents)
EV_EXECUTE = "CHANNEL_EXECUTE"
EV_EXECUTE_COMPLETE = "CHANNEL_EXECUTE_COMPLETE"
EV_HANGUP = "CHANNEL_HANGUP"
EV_HANGUP_COMPLETE = "CHANNEL_HANGUP_COMPLETE"
EV_ANSWER = "CHANNEL_ANSWER"
EV_DTMF = "DTMF"
HANGUP_EVENTS = frozenset((EV_HANGUP, EV_HANGUP_COMPLETE))

# Hang-up causes
CAUSE_CALL_REJECTED = "CALL_REJECTED"
CAUSE_NORMAL_CLEARING = "NORMAL_CLEARING"
CAUSE_CONGESTION = "NORMAL_CIRCUIT_CONGESTION"  # max_calls reached

# --- channel variables ---------------------------------------------------------------------------
# Read from the call (entry.md steps 2-3)
ACCOUNT_ID_SUFFIX = "Account-ID"  # <events.channel_var_prefix>Account-ID
VAR_CONFERENCE_ID = "confd_conference_id"
VAR_CONFERENCE_NUMBER = "confd_conference_number"
# Set on the call before the join (step 7)
VAR_ROLE = "confd_role"
# Where play_and_get_digits leaves the digits: the names the captures used.  FreeSWITCH clears
# the variable when a prompt starts, sets it only on a match and puts a non-matching entry in
# <var>_invalid (c2_pagd_regex_x3); a hang-up leaves the partial digits (d_hangup_mid_pagd).
VAR_NUMBER_DIGITS = "conf_num"
VAR_PIN_DIGITS = "pin"
# mod_conference's own channel variables
VAR_ENFORCE_SECURITY = "conference_enforce_security"  # "false": a locked room lets the call in
VAR_MAX_MEMBERS = "conference_max_members"
VAR_ENTER_SOUND = "conference_enter_sound"
VAR_EXIT_SOUND = "conference_exit_sound"
VAR_MEMBER_ID = "conference_member_id"  # set once the member is in (a_member_pin frame 41)

ROLE_MEMBER = "member"
ROLE_MODERATOR = "moderator"
ROLES = (ROLE_MEMBER, ROLE_MODERATOR)

# Join flags (mod_conference member flags)
FLAG_MUTE = "mute"
FLAG_DEAF = "deaf"
FLAG_MODERATOR = "moderator"
FLAG_WAIT_MOD = "wait-mod"
FLAG_ENDCONF = "endconf"

SILENCE = "silence_stream://1"  # play_*_tone false: nothing audible instead of the profile's tone
TERMINATOR = "#"
DIGITS_REGEX = r"\d+"
MAX_DIGITS = 16  # longest number or PIN a caller can type in one prompt
NAME_SECONDS = 5  # play_name: the longest recording
# On the FreeSWITCH host; %s = the call's uuid.  confd cannot delete it: FreeSWITCH's only
# commands that remove a file are `system`/`bg_system` (a shell, which confd never asks for), so
# cleaning these up is the operator's (README: systemd's tmp.conf ages /tmp out, or a find job).
NAME_FILE = "/tmp/confd-entry-name-%s.wav"

# --- sounds --------------------------------------------------------------------------------------
# Distinct tones, so entry works on a FreeSWITCH without sound packages.  The prompt and wrong-PIN
# tones are the ones of the captures (a_member_pin, c_wrong_pin_x3).
SOUND_NAMES = (
    "enter_number",
    "bad_number",
    "enter_pin",
    "bad_pin",
    "locked",
    "full",
    "record_name",
    "goodbye",
)
DEFAULT_SOUNDS = {
    "enter_number": "tone_stream://%(200,0,600)",
    "bad_number": "tone_stream://%(200,100,400);%(200,0,400)",
    "enter_pin": "tone_stream://%(200,0,800)",
    "bad_pin": "tone_stream://%(200,0,400)",
    "locked": "tone_stream://%(250,250,480,620);%(250,0,480,620)",
    "full": "tone_stream://%(500,500,480,620);%(500,0,480,620)",
    "record_name": "tone_stream://%(500,0,1000)",
    "goodbye": "tone_stream://%(500,0,350)",
}

# --- outcomes (confd_entry_calls_total{outcome}) -------------------------------------------------
OUTCOME_JOINED = "joined"
OUTCOME_BAD_NUMBER = "bad_number"
OUTCOME_BAD_PIN = "bad_pin"
OUTCOME_LOCKED = "locked"
OUTCOME_FULL = "full"
OUTCOME_NO_ACCOUNT = "no_account"
OUTCOME_HANGUP = "hangup"
OUTCOME_ERROR = "error"
# Not in entry.md's list: a caller refused because max_calls were already in entry.
OUTCOME_BUSY = "busy"
OUTCOMES = (
    OUTCOME_JOINED,
    OUTCOME_BAD_NUMBER,
    OUTCOME_BAD_PIN,
    OUTCOME_LOCKED,
    OUTCOME_FULL,
    OUTCOME_NO_ACCOUNT,
    OUTCOME_HANGUP,
    OUTCOME_ERROR,
    OUTCOME_BUSY,
)

# --- defaults of the entry configuration section (entry.md) --------------------------------------
DEFAULT_PROFILE = "default"
DEFAULT_NUMBER_TRIES = 3
DEFAULT_PIN_TRIES = 3
DEFAULT_DIGIT_TIMEOUT = 5.0
DEFAULT_MAX_CALLS = 500
DEFAULT_CHANNEL_VAR_PREFIX = "ecallmgr_"

# --- deadlines (seconds) -------------------------------------------------------------------------
CONNECT_TIMEOUT = 5.0  # FreeSWITCH's reply to `connect`
COMMAND_TIMEOUT = 5.0  # myevents, linger, set, answer, api: answered at once in async mode
SOUND_TIMEOUT = 60.0  # a playback or a prompt's sound: longer ones are cut off as stalled
JOIN_TIMEOUT = 10.0  # the conference application: seen in the live state, or refused
HANGUP_TIMEOUT = 5.0  # after confd hangs up: FreeSWITCH confirms it
EXIT_TIMEOUT = 2.0  # `exit`: "+OK bye" and the close
MAX_BUFFER = 256 * 1024  # bytes of unparsed input per call before the connection is dropped

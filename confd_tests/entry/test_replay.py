"""Every outbound capture replayed to confd's entry listener (captures/outbound/README.md):
cut at the recorded TCP segments and at every byte.  What confd sends is compared with what
the recorder sent, in meaning (see outbound_replay.meaning), and each scenario's outcome is
the one entry.md asks for.

Modes:
* ``chunks``: the replay sends the recorded TCP segments; confd reads as it likes;
* ``bytes``: the same segments, and confd's sessions read one byte per ``recv``
  (``session.RECV_BYTES = 1``), so its parser and its session see the stream cut at every
  byte, each byte a read of its own -- for every scenario, at a fraction of the cost of
  sending each byte in a TCP segment of its own;
* ``wire``: one byte per TCP segment, the replay yielding after each, confd reading as it
  likes (so it also waits on the socket between the bytes of a frame): for the member-PIN
  scenario, the one every other scenario starts with.
"""

import contextlib

import gevent
import pytest

from confd.entry import constants as c
from confd.entry import rules
from confd.entry import session as entry_session
from confd.entry.directory import MemoryDirectory
from confd.entry.server import EntryService
from confd.entry.session import Timeouts
from confd_tests.entry.outbound_replay import Capture, OutboundReplay

ACCOUNT = "a" * 32
ENTER = "tone_stream://%(200,0,500,600,700)"  # the recorder's conference_enter_sound
EXIT = "tone_stream://%(500,0,300,200,100,50,25)"
# The sounds the recorder used: prompts 600 Hz (number) / 800 Hz (PIN), 400 Hz for a wrong
# entry, 350 Hz goodbye.
SOUNDS = rules.Sounds(
    enter_number="tone_stream://%(200,0,600)",
    bad_number="tone_stream://%(200,0,400)",
    enter_pin="tone_stream://%(200,0,800)",
    bad_pin="tone_stream://%(200,0,400)",
    goodbye="tone_stream://%(500,0,350)",
)
NUMBER = ("play_and_get_digits", "5000", "#", SOUNDS.enter_number, SOUNDS.bad_number)
PIN = ("play_and_get_digits", "5000", "#", SOUNDS.enter_pin, SOUNDS.bad_pin)
HEAD = [(("connect",), "played"), (("myevents",), "played"), (("linger",), "played")]
ANSWER = [(("answer", None), "played")]


def room(number, **extra):
    body = {
        "conference_numbers": [number],
        "member": {"pins": ["1234"]},
        "moderator": {"pins": ["5678"]},
        "play_entry_tone": ENTER,
        "play_exit_tone": EXIT,
    }
    body.update(extra)
    return body


def sets(conf, role, how_role="played", how_conf="played"):
    out = [
        (("set", "confd_role", role), how_role),
        (("set", "confd_conference_id", conf), how_conf),
        (("set", "ecallmgr_Account-ID", ACCOUNT), "synthesized"),
        (("set", "conference_enter_sound", ENTER), "played"),
        (("set", "conference_exit_sound", EXIT), "played"),
    ]
    if role == c.ROLE_MODERATOR:
        out.append((("set", "conference_enforce_security", "false"), "synthesized"))
    return out


@contextlib.contextmanager
def reads_of(size):
    """confd's entry sessions read at most ``size`` bytes per recv meanwhile."""
    old = entry_session.RECV_BYTES
    entry_session.RECV_BYTES = size
    try:
        yield
    finally:
        entry_session.RECV_BYTES = old


def run_replay(name, docs, mode, pin_tries=3, locked=False):
    if mode == "bytes":
        with reads_of(1):
            return _run_replay(name, docs, "chunks", pin_tries, locked)
    return _run_replay(name, docs, "bytes" if mode == "wire" else mode, pin_tries, locked)


def _run_replay(name, docs, mode, pin_tries=3, locked=False):
    cap = Capture.load(name)
    directory = MemoryDirectory()
    for conf_id, body in docs.items():
        directory.add(ACCOUNT, conf_id, body)
    outcomes = []
    holder = {}

    def rooms(conf):
        r = holder["replay"].rooms(conf)
        return rules_room(r, locked)

    service = EntryService(
        listen="127.0.0.1:0",
        settings=rules.EntrySettings(
            default_account=ACCOUNT, sounds=SOUNDS, name_pattern="[0-9]{4}", pin_tries=pin_tries
        ),
        directory=directory,
        rooms=rooms,
        on_outcome=outcomes.append,
        # per-byte replays of ~100 KB take seconds: generous deadlines
        timeouts=Timeouts(join=30.0, exit=30.0),
    )
    service.start()
    try:
        replay = OutboundReplay(cap, ("127.0.0.1", service.port), mode=mode)
        holder["replay"] = replay
        with gevent.Timeout(60):
            transcript = replay.run()
            while not outcomes:
                gevent.sleep(0.01)
        assert service.active == 0
        assert service.ctx.admissions.pending == 0  # nothing left reserved
    finally:
        service.stop(timeout=1)
    return cap, transcript, outcomes


def rules_room(r, locked):
    from confd.entry.directory import Room

    return Room(locked, r.call_ids)


def summary(transcript):
    return [(ex.meaning, ex.how) for ex in transcript]


def conference_args(transcript):
    out = []
    for ex in transcript:
        if ex.meaning[0] == "conference":
            line = [x for x in ex.raw.decode().split("\n") if x.startswith("execute-app-arg: ")]
            out.append(line[0].split(": ", 1)[1])
    return out


def skipped(cap, transcript):
    """The recorder's commands confd had no counterpart for (never played)."""
    used = {ex.matched for ex in transcript if ex.matched is not None}
    return [i for i in range(len(cap.steps)) if i not in used]


MODES = ["chunks", "bytes"]
WELCOME = 4  # the recorder's welcome tone (step 4 of every scenario): confd plays none


@pytest.mark.parametrize("mode", MODES + ["wire"])
def test_a_member_pin_joins_muted(mode):
    cap, tr, outcomes = run_replay("a_member_pin", {"7101": room("7101")}, mode)
    assert summary(tr) == HEAD + ANSWER + [(NUMBER, "played"), (PIN, "played")] + sets(
        "7101", c.ROLE_MEMBER
    ) + [(("conference", "7101@default"), "played"), (("exit",), "played")]
    assert conference_args(tr) == ["7101@default+flags{mute}"]  # the recorder's, byte for byte
    assert skipped(cap, tr) == [WELCOME]
    assert outcomes == [c.OUTCOME_JOINED]


@pytest.mark.parametrize("mode", MODES)
def test_b_moderator_pin_joins_as_moderator(mode):
    cap, tr, outcomes = run_replay("b_moderator_pin", {"7102": room("7102")}, mode)
    assert summary(tr) == HEAD + ANSWER + [(NUMBER, "played"), (PIN, "played")] + sets(
        "7102", c.ROLE_MODERATOR
    ) + [(("conference", "7102@default"), "played"), (("exit",), "played")]
    assert conference_args(tr) == ["7102@default+flags{moderator}"]
    assert skipped(cap, tr) == [WELCOME]
    assert outcomes == [c.OUTCOME_JOINED]


@pytest.mark.parametrize("mode", MODES)
def test_c_wrong_pin_three_times(mode):
    cap, tr, outcomes = run_replay("c_wrong_pin_x3", {"7103": room("7103")}, mode)
    bad = (("playback", SOUNDS.bad_pin), "played")
    assert summary(tr) == HEAD + ANSWER + [
        (NUMBER, "played"),
        (PIN, "played"),
        bad,
        (PIN, "played"),
        bad,
        (PIN, "played"),
        (("playback", SOUNDS.goodbye), "played"),
        (("hangup", "CALL_REJECTED"), "played"),
        (("exit",), "played"),
    ]
    assert skipped(cap, tr) == [WELCOME]
    assert outcomes == [c.OUTCOME_BAD_PIN]


@pytest.mark.parametrize("mode", MODES)
def test_c2_failed_regex_says_success_but_no_digits_no_entry(mode):
    # read_result=success, variable_pin absent, pin_invalid=3333: judged by the digits.
    cap, tr, outcomes = run_replay("c2_pagd_regex_x3", {"7104": room("7104")}, mode, pin_tries=1)
    assert summary(tr) == HEAD + ANSWER + [
        (NUMBER, "played"),
        (PIN, "played"),  # the recorder's regex variant of the PIN prompt
        (("playback", SOUNDS.goodbye), "synthesized"),
        (("hangup", "CALL_REJECTED"), "played"),  # the recorder used the hangup application
        (("exit",), "played"),
    ]
    assert outcomes == [c.OUTCOME_BAD_PIN]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name,number", [("d_hangup_mid_pagd", "7105")])
def test_d_hangup_mid_pin_with_linger(mode, name, number):
    cap, tr, outcomes = run_replay(name, {number: room(number)}, mode)
    assert summary(tr) == HEAD + ANSWER + [
        (NUMBER, "played"),
        (PIN, "played"),
        (("exit",), "played"),
    ]
    assert outcomes == [c.OUTCOME_HANGUP]


@pytest.mark.parametrize("mode", MODES)
def test_d2_hangup_mid_pin_without_linger(mode):
    # The recorder sent no linger: FreeSWITCH said goodbye and closed by itself.
    cap, tr, outcomes = run_replay("d2_hangup_mid_pagd_nolinger", {"7108": room("7108")}, mode)
    assert summary(tr)[:6] == [
        (("connect",), "played"),
        (("myevents",), "played"),
        (("linger",), "reply"),
        (("answer", None), "played"),
        (NUMBER, "played"),
        (PIN, "played"),
    ]
    assert len(tr) <= 7  # at most confd's exit, into a closing socket
    assert outcomes == [c.OUTCOME_HANGUP]


@pytest.mark.parametrize("mode", MODES)
def test_e_locked_between_check_and_join_refuses_the_member(mode):
    # The room was unlocked when confd checked; the conference application came back at once
    # without a member id (locked meanwhile): the caller hears `locked` and is hung up.
    cap, tr, outcomes = run_replay("e_locked", {"7106": room("7106")}, mode)
    assert summary(tr) == HEAD + ANSWER + [(NUMBER, "played"), (PIN, "played")] + sets(
        "7106", c.ROLE_MEMBER
    ) + [
        (("conference", "7106@default"), "played"),
        (("playback", SOUNDS.locked), "synthesized"),
        (("hangup", "NORMAL_CLEARING"), "ending"),
        (("exit",), "played"),
    ]
    assert conference_args(tr) == ["7106@default+flags{mute}"]
    assert outcomes == [c.OUTCOME_LOCKED]


@pytest.mark.parametrize("mode", MODES)
def test_e_locked_room_lets_a_moderator_in(mode):
    # The same call with 1234 as a moderator PIN, the room locked: confd sets
    # conference_enforce_security=false (the recorder's retry) and the join succeeds.
    doc = room("7106", moderator={"pins": ["1234"]}, member={"pins": ["9999"]})
    cap, tr, outcomes = run_replay("e_locked", {"7106": doc}, mode, locked=True)
    assert summary(tr) == HEAD + ANSWER + [(NUMBER, "played"), (PIN, "played")] + [
        (("set", "confd_role", "moderator"), "synthesized"),  # the recorder said member
        (("set", "confd_conference_id", "7106"), "played"),
        (("set", "ecallmgr_Account-ID", ACCOUNT), "synthesized"),
        (("set", "conference_enter_sound", ENTER), "played"),
        (("set", "conference_exit_sound", EXIT), "played"),
        (("set", "conference_enforce_security", "false"), "played"),
        (("conference", "7106@default"), "played"),  # the recorder's retry, joined
        (("exit",), "played"),
    ]
    assert conference_args(tr) == ["7106@default+flags{moderator}"]
    assert outcomes == [c.OUTCOME_JOINED]


@pytest.mark.parametrize("mode", MODES)
def test_f_sync_mode_member(mode):
    cap, tr, outcomes = run_replay("f_sync_member", {"7107": room("7107")}, mode)
    assert summary(tr) == HEAD + ANSWER + [(NUMBER, "played"), (PIN, "played")] + sets(
        "7107", c.ROLE_MEMBER
    ) + [(("conference", "7107@default"), "played"), (("exit",), "played")]
    assert conference_args(tr) == ["7107@default+flags{mute}"]
    assert outcomes == [c.OUTCOME_JOINED]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "name,number", [("g1_pipelined_nolock", "7109"), ("g2_pipelined_event_lock", "7110")]
)
def test_g_foreign_completions_around_a_prompt_are_not_taken_for_it(mode, name, number):
    # The number prompt is answered with the recorder's pipelined frames: two playbacks'
    # CHANNEL_EXECUTE/COMPLETE with other Application-UUIDs around the prompt's own (nested
    # in g1: the prompt completes first).  confd takes the digits of its own completion only.
    doc = {"member": {"numbers": [number], "join_muted": False}}
    cap, tr, outcomes = run_replay(name, {number: doc}, mode)
    assert summary(tr) == HEAD + ANSWER + [
        (NUMBER, "played"),
        (("set", "confd_role", "member"), "synthesized"),
        (("set", "confd_conference_id", number), "synthesized"),
        (("set", "ecallmgr_Account-ID", ACCOUNT), "synthesized"),
        (("conference", number + "@default"), "synthesized"),
        (("exit",), "played"),
    ]
    assert conference_args(tr) == [number + "@default"]
    assert outcomes == [c.OUTCOME_JOINED]


def test_every_scenario_of_the_capture_readme_is_replayed():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "captures" / "outbound" / "README.md").read_text()
    names = set()
    for line in readme.splitlines():
        if line.startswith("| `"):
            for part in line.split("|")[1].split("/"):
                names.add(part.strip().strip("`"))
    source = Path(__file__).read_text()
    assert names and all('"%s"' % n in source for n in names), names

"""Caller entry decisions (entry.md), as pure functions of plain values.

Which account and which conference a call is for, what its digits make of it (member,
moderator, nothing), whether the room lets it in, and the exact channel variables and
``conference`` argument of the join.  No I/O here: the session asks, these functions answer.

Every value that will reach FreeSWITCH is checked here against a small ASCII whitelist with
``re.fullmatch``.  A sendmsg argument is one header line, and FreeSWITCH expands ``${...}`` in
application arguments (``${api(args)}`` runs an api command), splits play_and_get_digits'
argument at spaces and reads ``+flags{a|b}`` / ``{var=value,...}`` inside conference and
originate strings: so no value may carry a line break, ``$``, ``{``, ``}``, ``|``, whitespace,
or a ``,`` outside the ``%(...)`` groups a tone string needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from confd.conferences.commands import CommandBuilder, InvalidCommand
from confd.entry import constants as c

_DIGITS = re.compile(r"[0-9]{1,%d}" % c.MAX_DIGITS)
_ACCOUNT_ID = re.compile(r"[0-9a-f]{32}")
_PROFILE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VAR_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
TONE_PREFIX = "tone_stream://"
_TONE = re.compile(re.escape(TONE_PREFIX) + r"[A-Za-z0-9%();,.=+#*@_:-]{1,480}")
_TONE_GROUP = re.compile(r"%\([0-9,.+-]*\)")
# Files, silence_stream://, say:, http(s):// ... without whitespace or any character above.
_PLAYABLE = re.compile(r"[A-Za-z0-9_./:%@+=;#~-]{1,512}")
_SET_VALUE = re.compile(r"[!-~]{1,512}")  # printable ASCII, no space

FIELD_ACCOUNT = "account"
FIELD_CONFERENCE = "conference"
FIELD_PROFILE = "profile"
FIELD_SOUND = "sound"
FIELD_DIGITS = "digits"
FIELD_FLAG = "flag"
FIELD_NUMBERS = "numbers"
FIELD_PINS = "pins"
FIELD_MAX = "max_participants"
FIELD_UUID = "call uuid"
FIELD_VARIABLE = "variable"
FIELD_TRIES = "tries"

_REPR_LIMIT = 64

# Schema defaults (confd/store/conference.schema.json): a member joins muted unless told not to.
_DEFAULT_JOIN_MUTED = {c.ROLE_MEMBER: True, c.ROLE_MODERATOR: False}


class InvalidValue(ValueError):
    """A value that must not reach FreeSWITCH; ``field`` names what was refused."""

    def __init__(self, field_name: str, value: object, reason: str = "not allowed") -> None:
        self.field = field_name
        self.value = value
        self.reason = reason
        shown = repr(value[:_REPR_LIMIT]) if isinstance(value, (str, bytes)) else repr(value)
        super().__init__(f"invalid {field_name} {shown[: _REPR_LIMIT * 2]}: {reason}")


# --- value checks -------------------------------------------------------------------------------


def check_digits(value: object, field_name: str = FIELD_DIGITS) -> str:
    if not isinstance(value, str) or not _DIGITS.fullmatch(value):
        raise InvalidValue(field_name, value, "not 1-%d ASCII digits" % c.MAX_DIGITS)
    return value


def check_account_id(value: object) -> str:
    if not isinstance(value, str) or not _ACCOUNT_ID.fullmatch(value):
        raise InvalidValue(FIELD_ACCOUNT, value, "not an account id")
    return value


def check_profile(value: object) -> str:
    if not isinstance(value, str) or not _PROFILE.fullmatch(value):
        raise InvalidValue(FIELD_PROFILE, value, "not [A-Za-z0-9_-]{1,64}")
    return value


def check_uuid(value: object) -> str:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise InvalidValue(FIELD_UUID, value, "not a UUID")
    return value


def check_variable_name(value: object) -> str:
    if not isinstance(value, str) or not _VAR_NAME.fullmatch(value):
        raise InvalidValue(FIELD_VARIABLE, value, "not [A-Za-z0-9_-]{1,64}")
    return value


def check_sound(value: object, field_name: str = FIELD_SOUND) -> str:
    """A FreeSWITCH playable with nothing FreeSWITCH would read as syntax: a tone string
    (commas only inside its ``%(...)`` groups) or a path/URI of the ``_PLAYABLE`` characters."""
    if not isinstance(value, str):
        raise InvalidValue(field_name, value, "not a string")
    if _TONE.fullmatch(value):
        rest = _TONE_GROUP.sub("", value[len(TONE_PREFIX) :])
        if not any(ch in rest for ch in ",()"):
            return value
        raise InvalidValue(field_name, value, "',' or parentheses outside a %(...) tone group")
    if _PLAYABLE.fullmatch(value):
        return value
    raise InvalidValue(
        field_name, value, "a sound may not hold whitespace, control characters, $ { } | , ^"
    )


def check_conference_id(value: object, builder: CommandBuilder) -> str:
    """The conference name FreeSWITCH will use: the document id, under the operator's pattern."""
    try:
        return builder.check_name(value)
    except InvalidCommand as exc:
        raise InvalidValue(FIELD_CONFERENCE, value, str(exc)) from None


# --- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sounds:
    enter_number: str = c.DEFAULT_SOUNDS["enter_number"]
    bad_number: str = c.DEFAULT_SOUNDS["bad_number"]
    enter_pin: str = c.DEFAULT_SOUNDS["enter_pin"]
    bad_pin: str = c.DEFAULT_SOUNDS["bad_pin"]
    locked: str = c.DEFAULT_SOUNDS["locked"]
    full: str = c.DEFAULT_SOUNDS["full"]
    record_name: str = c.DEFAULT_SOUNDS["record_name"]
    goodbye: str = c.DEFAULT_SOUNDS["goodbye"]

    def __post_init__(self) -> None:
        for name in c.SOUND_NAMES:
            check_sound(getattr(self, name), "sounds." + name)


@dataclass(frozen=True)
class EntrySettings:
    """What the decisions depend on besides the call and the document (the entry section of
    the configuration, plus the two values it shares with other sections)."""

    default_account: Optional[str] = None
    default_profile: str = c.DEFAULT_PROFILE
    number_tries: int = c.DEFAULT_NUMBER_TRIES
    pin_tries: int = c.DEFAULT_PIN_TRIES
    digit_timeout: float = c.DEFAULT_DIGIT_TIMEOUT
    channel_var_prefix: str = c.DEFAULT_CHANNEL_VAR_PREFIX  # events.channel_var_prefix
    sounds: Sounds = field(default_factory=Sounds)
    name_pattern: str = r"[0-9a-f]{32}"  # freeswitch.conference_name_pattern

    def __post_init__(self) -> None:
        if self.default_account is not None:
            check_account_id(self.default_account)
        check_profile(self.default_profile)
        for name in ("number_tries", "pin_tries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
                raise InvalidValue(FIELD_TRIES, value, name + " must be 1..10")
        if isinstance(self.digit_timeout, bool) or not 0 < self.digit_timeout <= 60:
            raise InvalidValue("digit_timeout", self.digit_timeout, "must be in (0, 60]")
        check_variable_name(self.channel_var_prefix + c.ACCOUNT_ID_SUFFIX)

    @property
    def account_variable(self) -> str:
        return self.channel_var_prefix + c.ACCOUNT_ID_SUFFIX

    def builder(self) -> CommandBuilder:
        return CommandBuilder(self.name_pattern)


def parse_listen(text: str) -> Tuple[str, int]:
    """``entry.listen``: ``host:port`` (``[v6]:port`` for IPv6); ValueError otherwise."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError("entry.listen must be host:port, got %r" % (text,))
    host, _, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("entry.listen must be host:port, got %r" % (text,))
    return host, int(port)


def settings_from(entry: Any, channel_var_prefix: str, name_pattern: str) -> EntrySettings:
    """EntrySettings from the configuration's ``entry`` section (any object with the
    attributes of entry.md's keys; ``sounds`` an object or mapping whose unset sounds are None)
    plus ``events.channel_var_prefix`` and ``freeswitch.conference_name_pattern``."""
    given = getattr(entry, "sounds", None)
    sounds: Dict[str, str] = {}
    for name in c.SOUND_NAMES:
        value = given.get(name) if isinstance(given, dict) else getattr(given, name, None)
        if value is not None:
            sounds[name] = value
    return EntrySettings(
        default_account=entry.default_account,
        default_profile=entry.default_profile,
        number_tries=entry.number_tries,
        pin_tries=entry.pin_tries,
        digit_timeout=float(entry.digit_timeout),
        channel_var_prefix=channel_var_prefix,
        sounds=Sounds(**sounds),
        name_pattern=name_pattern,
    )


# --- which account, which conference ------------------------------------------------------------


def channel_variables(headers: Mapping[str, str]) -> dict:
    """``variable_<name>`` headers of the connect reply as ``{name: value}``."""
    n = len(c.VAR_PREFIX)
    return {k[n:]: v for k, v in headers.items() if k.startswith(c.VAR_PREFIX)}


def call_account(variables: Mapping[str, str], settings: EntrySettings) -> Optional[str]:
    """The account of the call: its ``<prefix>Account-ID`` variable, else the default.  A
    variable that is not an account id counts as absent (it would be refused anyway)."""
    value = variables.get(settings.account_variable)
    if isinstance(value, str) and _ACCOUNT_ID.fullmatch(value):
        return value
    return settings.default_account


@dataclass(frozen=True)
class Target:
    """What the call says about its conference before any prompt."""

    conference_id: Optional[str] = None  # confd_conference_id: skips the number step
    number: Optional[str] = None  # confd_conference_number, else an all-digits destination


def call_target(variables: Mapping[str, str], destination: Optional[str]) -> Target:
    conf_id = variables.get(c.VAR_CONFERENCE_ID)
    if conf_id:
        return Target(conference_id=conf_id)
    for candidate in (variables.get(c.VAR_CONFERENCE_NUMBER), destination):
        if isinstance(candidate, str) and _DIGITS.fullmatch(candidate):
            return Target(number=candidate)
    return Target()


def _section(body: Mapping[str, Any], role: str) -> Mapping[str, Any]:
    section = body.get(role)
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise InvalidValue(role, section, "not an object")
    return section


def _digit_list(value: object, field_name: str) -> List[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidValue(field_name, value, "not a list")
    return [check_digits(v, field_name) for v in value]


def role_for_number(body: Mapping[str, Any], number: str) -> Tuple[bool, Optional[str]]:
    """``(found, role)``: in ``member.numbers`` -> member, in ``moderator.numbers`` ->
    moderator, in ``conference_numbers`` -> role decided by the PIN (None)."""
    if number in _digit_list(_section(body, c.ROLE_MEMBER).get("numbers"), FIELD_NUMBERS):
        return True, c.ROLE_MEMBER
    if number in _digit_list(_section(body, c.ROLE_MODERATOR).get("numbers"), FIELD_NUMBERS):
        return True, c.ROLE_MODERATOR
    if number in _digit_list(body.get("conference_numbers"), FIELD_NUMBERS):
        return True, None
    return False, None


# --- PIN ----------------------------------------------------------------------------------------


def pins(body: Mapping[str, Any], role: str) -> List[str]:
    return _digit_list(_section(body, role).get("pins"), FIELD_PINS)


def pin_needed(body: Mapping[str, Any], role: Optional[str]) -> bool:
    """Whether the caller is asked for a PIN: the role's pins (role known), either list (role
    decided by the PIN)."""
    if role is not None:
        return bool(pins(body, role))
    return bool(pins(body, c.ROLE_MEMBER) or pins(body, c.ROLE_MODERATOR))


def judge_pin(body: Mapping[str, Any], role: Optional[str], digits: Optional[str]) -> Optional[str]:
    """The role the digits earn, or None.  Judged by the digits alone: FreeSWITCH's read_result
    says "success" for a failed regex too (c2_pagd_regex_x3).  When the role is decided by the
    PIN, a moderator PIN is tried first (Kazoo's order)."""
    if not isinstance(digits, str) or not _DIGITS.fullmatch(digits):
        return None
    if role is not None:
        return role if digits in pins(body, role) else None
    if digits in pins(body, c.ROLE_MODERATOR):
        return c.ROLE_MODERATOR
    if digits in pins(body, c.ROLE_MEMBER):
        return c.ROLE_MEMBER
    return None


def role_without_pin(role: Optional[str]) -> str:
    """No PIN asked: the number's role, or member when the PIN would have decided."""
    return role or c.ROLE_MEMBER


# --- admission ----------------------------------------------------------------------------------

ADMIT = "admit"


def max_participants(body: Mapping[str, Any]) -> int:
    value = body.get("max_participants", 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidValue(FIELD_MAX, value, "not an integer >= 0")
    return value


def admission(role: str, locked: bool, participants: int, limit: int) -> str:
    """``ADMIT``, ``locked`` or ``full``.  ``participants`` counts those in the room plus those
    confd is already letting in (the caller's own reservation excluded)."""
    if locked and role != c.ROLE_MODERATOR:
        return c.OUTCOME_LOCKED
    if limit > 0 and participants >= limit:
        return c.OUTCOME_FULL
    return ADMIT


def refusal_sound(outcome: str, body: Mapping[str, Any], sounds: Sounds) -> str:
    """What a refused caller hears: ``max_members_media`` for a full room when it is a valid
    sound (a refusal must not fail on a bad document), else the configured sound."""
    if outcome == c.OUTCOME_FULL:
        media = body.get("max_members_media")
        if media is not None:
            try:
                return check_sound(media, "max_members_media")
            except InvalidValue:
                pass
        return sounds.full
    return getattr(sounds, outcome, sounds.goodbye)


# --- the join -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JoinPlan:
    conference_id: str
    role: str
    variables: Tuple[Tuple[str, str], ...]  # set on the channel before the join, in this order
    conference_arg: str  # <id>@<profile>[+flags{a|b}]
    limit: int  # max_participants (0: none)
    name_file: Optional[str] = None  # play_name: where the caller's name is recorded


def _flag(body: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidValue(FIELD_FLAG, value, key + " is not true/false")
    return value


def join_flags(body: Mapping[str, Any], role: str) -> List[str]:
    section = _section(body, role)
    flags = []
    if _flag(section, "join_muted", _DEFAULT_JOIN_MUTED[role]):
        flags.append(c.FLAG_MUTE)
    if _flag(section, "join_deaf"):
        flags.append(c.FLAG_DEAF)
    if role == c.ROLE_MODERATOR:
        flags.append(c.FLAG_MODERATOR)
        if _flag(body, "require_moderator"):
            flags.append(c.FLAG_ENDCONF)
    elif _flag(body, "wait_for_moderator"):
        flags.append(c.FLAG_WAIT_MOD)
    return flags


def profile_of(body: Mapping[str, Any], default: str) -> str:
    """The document's ``profile`` (when a string), else ``profile_name``, else the default."""
    for key in ("profile", "profile_name"):
        value = body.get(key)
        if isinstance(value, str):
            return check_profile(value)
        if value is not None and key == "profile_name":
            raise InvalidValue(FIELD_PROFILE, value, "not a string")
    return check_profile(default)


def tone(value: object, field_name: str) -> Optional[str]:
    """play_entry_tone / play_exit_tone: true (or absent) -> the profile's sound (None),
    false -> silence, a string -> that sound."""
    if value is None or value is True:
        return None
    if value is False:
        return c.SILENCE
    return check_sound(value, field_name)


def set_arg(name: str, value: str) -> str:
    """The ``set`` application's argument ``name=value``, both checked."""
    check_variable_name(name)
    if not isinstance(value, str) or not _SET_VALUE.fullmatch(value) or "$" in value:
        raise InvalidValue(FIELD_VARIABLE, value, "not a printable ASCII value without '$'")
    return f"{name}={value}"


def join_plan(
    conference_id: str,
    account_id: str,
    body: Mapping[str, Any],
    role: str,
    call_id: str,
    settings: EntrySettings,
    builder: Optional[CommandBuilder] = None,
) -> JoinPlan:
    """Everything the join sends, validated: raises ``InvalidValue`` for a document value that
    must not reach FreeSWITCH (the caller is then refused, never joined with less checking)."""
    if role not in c.ROLES:
        raise InvalidValue("role", role, "not member or moderator")
    conf = check_conference_id(conference_id, builder or settings.builder())
    account = check_account_id(account_id)
    profile = profile_of(body, settings.default_profile)
    flags = join_flags(body, role)
    limit = max_participants(body)
    variables: List[Tuple[str, str]] = [
        (c.VAR_ROLE, role),
        (c.VAR_CONFERENCE_ID, conf),
        (settings.account_variable, account),
    ]
    enter = tone(body.get("play_entry_tone"), "play_entry_tone")
    if enter is not None:
        variables.append((c.VAR_ENTER_SOUND, enter))
    leave = tone(body.get("play_exit_tone"), "play_exit_tone")
    if leave is not None:
        variables.append((c.VAR_EXIT_SOUND, leave))
    if limit > 0:
        # FreeSWITCH enforces it too, where several confd admissions race (entry.md step 5).
        variables.append((c.VAR_MAX_MEMBERS, str(limit)))
    if role == c.ROLE_MODERATOR:
        # A moderator enters a locked room, even one locked between the check and the join.
        variables.append((c.VAR_ENFORCE_SECURITY, "false"))
    for name, value in variables:
        set_arg(name, value)  # every pair must render
    arg = f"{conf}@{profile}"
    if flags:
        arg += "+flags{%s}" % "|".join(flags)
    name_file = c.NAME_FILE % check_uuid(call_id) if _flag(body, "play_name") else None
    return JoinPlan(conf, role, tuple(variables), arg, limit, name_file)


# --- prompts ------------------------------------------------------------------------------------


def read_digits_arg(prompt: str, invalid: str, variable: str, digit_timeout: float) -> str:
    """play_and_get_digits: one try, 1..MAX_DIGITS digits ended by '#'.  confd counts the tries
    itself, so that every one is judged by its digits; the invalid sound is what FreeSWITCH
    plays for an empty entry (a_member_pin's argument layout)."""
    check_sound(prompt)
    check_sound(invalid)
    check_variable_name(variable)
    ms = int(round(digit_timeout * 1000))
    return f"1 {c.MAX_DIGITS} 1 {ms} {c.TERMINATOR} {prompt} {invalid} {variable} {c.DIGITS_REGEX}"


def record_arg(path: str) -> str:
    check_sound(path, "name file")
    return f"{path} {c.NAME_SECONDS}"


def announce_api(conference_id: str, path: str, builder: CommandBuilder) -> str:
    """``conference <id> play <file>``: the recorded name, to the whole conference."""
    conf = check_conference_id(conference_id, builder)
    check_sound(path, "name file")
    return f"{c.APP_CONFERENCE} {conf} play {path}"


def entry_seconds_text(seconds: float) -> str:
    return "%.2f" % seconds


def summary(values: Iterable[Tuple[str, object]]) -> str:
    """``k=v`` pairs for the one log line per call (values are confd's own, not the caller's
    raw text)."""
    return " ".join(f"{k}={'-' if v is None else v}" for k, v in values)

"""Tests for confd.conferences.commands: exact command text, refusal of hostile values (every
injection FreeSWITCH fell for in the s6 capture), and reply interpretation (s1/s6 replies)."""

from __future__ import annotations

import ast
import functools
import hashlib
import re
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confd.conferences import commands
from confd.conferences.commands import (
    CONFERENCE_ACTIONS,
    DEFAULT_NAME_PATTERN,
    MAX_MEMBER_ID,
    MEMBER_ACTIONS,
    RELAXED_NAME_PATTERN,
    SELECTOR_FOR,
    Command,
    CommandBuilder,
    InvalidCommand,
    parse_member_id,
    reply_ok,
)

CAPTURES = Path(__file__).parent.parent / "captures"
HEX = "0123456789abcdef0123456789abcdef"
ROOM = "room6"  # the conference name used in s6_bad_input
CALL = "37e5ded0-2507-480b-bd76-e7317c66d180"  # a Unique-ID from s1_room1_plain


@pytest.fixture
def default() -> CommandBuilder:
    return CommandBuilder()


@pytest.fixture
def relaxed() -> CommandBuilder:
    return CommandBuilder(RELAXED_NAME_PATTERN)


def _refused(field: str, func, *args) -> InvalidCommand:
    with pytest.raises(InvalidCommand) as info:
        func(*args)
    assert info.value.field == field, (field, info.value)
    return info.value


# --- constants ------------------------------------------------------------------------------------


def test_protocol_text_constants() -> None:
    assert commands.CONFERENCE == "conference"
    assert commands.JSON_LIST == "json_list"
    assert commands.UUID_DUMP == "uuid_dump"
    assert commands.SELECTOR_NON_MODERATOR == "non_moderator"
    assert commands.SELECTOR_ALL == "all"
    assert commands.API_PREFIX == "api "
    assert MEMBER_ACTIONS == ("mute", "unmute", "deaf", "undeaf", "kick")
    assert CONFERENCE_ACTIONS == ("lock", "unlock")
    assert MAX_MEMBER_ID == 2**31 - 1
    assert DEFAULT_NAME_PATTERN == r"[0-9a-f]{32}"
    assert RELAXED_NAME_PATTERN == r"[A-Za-z0-9_.@-]{1,128}"


def test_selector_for_follows_api_md() -> None:
    # api.md: mute/unmute/deaf/undeaf act on every participant except moderators; kick on all.
    assert SELECTOR_FOR == {
        "mute": "non_moderator",
        "unmute": "non_moderator",
        "deaf": "non_moderator",
        "undeaf": "non_moderator",
        "kick": "all",
    }


# --- exact text -----------------------------------------------------------------------------------

EXACT_CASES = [
    # (builder kind, name)
    ("default", HEX),
    ("relaxed", HEX),
    ("relaxed", "room1"),
    ("relaxed", "conf-1.a_b@default"),
]


def _builder(kind: str) -> CommandBuilder:
    return CommandBuilder() if kind == "default" else CommandBuilder(RELAXED_NAME_PATTERN)


@pytest.mark.parametrize("kind,name", EXACT_CASES)
def test_exact_text_conference_actions(kind: str, name: str) -> None:
    b = _builder(kind)
    lock = b.lock(name)
    assert lock.text == f"conference {name} lock"
    assert lock.line() == f"api conference {name} lock"
    assert (lock.action, lock.conference, lock.target) == ("lock", name, None)
    unlock = b.unlock(name)
    assert unlock.line() == f"api conference {name} unlock"
    assert unlock.action == "unlock"
    assert b.conference_action(name, "lock") == lock
    assert b.conference_action(name, "unlock") == unlock


@pytest.mark.parametrize("kind,name", EXACT_CASES)
@pytest.mark.parametrize(
    "action,expected_verb",
    [
        ("mute", "mute"),
        ("unmute", "unmute"),
        ("deaf", "deaf"),
        ("undeaf", "undeaf"),
        ("kick", "kick"),
    ],
)
def test_exact_text_member_actions(kind: str, name: str, action: str, expected_verb: str) -> None:
    b = _builder(kind)
    for member_id in (7, "7"):
        cmd = b.member(name, action, member_id)
        assert cmd.text == f"conference {name} {expected_verb} 7"
        assert cmd.line() == f"api conference {name} {expected_verb} 7"
        assert (cmd.action, cmd.conference, cmd.target) == (action, name, "7")
    assert (
        b.member(name, action, MAX_MEMBER_ID).line()
        == f"api conference {name} {expected_verb} 2147483647"
    )


@pytest.mark.parametrize("kind,name", EXACT_CASES)
@pytest.mark.parametrize(
    "action,expected",
    [
        ("mute", "mute non_moderator"),
        ("unmute", "unmute non_moderator"),
        ("deaf", "deaf non_moderator"),
        ("undeaf", "undeaf non_moderator"),
        ("kick", "kick all"),
    ],
)
def test_exact_text_everyone(kind: str, name: str, action: str, expected: str) -> None:
    cmd = _builder(kind).everyone(name, action)
    assert cmd.line() == f"api conference {name} {expected}"
    assert cmd.action == action
    assert cmd.conference == name
    assert cmd.target == expected.split(" ")[1]


@pytest.mark.parametrize("kind,name", EXACT_CASES)
def test_exact_text_selector(kind: str, name: str) -> None:
    b = _builder(kind)
    assert b.selector(name, "mute", "all").line() == f"api conference {name} mute all"
    assert b.selector(name, "kick", "non_moderator").line() == (
        f"api conference {name} kick non_moderator"
    )


@pytest.mark.parametrize("kind,name", EXACT_CASES)
def test_exact_text_json_list(kind: str, name: str) -> None:
    b = _builder(kind)
    everything = b.json_list()
    assert everything.line() == "api conference json_list"
    assert (everything.action, everything.conference, everything.target) == (
        "json_list",
        None,
        None,
    )
    one = b.json_list(name)
    assert one.line() == f"api conference {name} json_list"
    assert one.conference == name


@pytest.mark.parametrize("uuid", [CALL, CALL.upper(), "00000000-0000-0000-0000-000000000000"])
def test_exact_text_uuid_dump(default: CommandBuilder, uuid: str) -> None:
    cmd = default.uuid_dump(uuid)
    assert cmd.line() == f"api uuid_dump {uuid} json"
    assert (cmd.action, cmd.target, cmd.conference) == ("uuid_dump", uuid, None)


def test_capture_commands_reproduced_exactly(relaxed: CommandBuilder) -> None:
    # Sends that FreeSWITCH answered +OK in s1_room1_plain.cmds, rebuilt byte for byte.
    def wire(cmd: Command) -> bytes:
        return cmd.line().encode("ascii") + b"\n\n"

    assert wire(relaxed.member("room1", "mute", "1")) == b"api conference room1 mute 1\n\n"
    assert wire(relaxed.member("room1", "kick", 1)) == b"api conference room1 kick 1\n\n"
    assert wire(relaxed.everyone("room1", "mute")) == (
        b"api conference room1 mute non_moderator\n\n"
    )
    assert wire(relaxed.everyone("room1", "kick")) == b"api conference room1 kick all\n\n"
    assert wire(relaxed.lock("room1")) == b"api conference room1 lock\n\n"
    assert wire(relaxed.unlock("room1")) == b"api conference room1 unlock\n\n"
    assert wire(relaxed.json_list("room1")) == b"api conference room1 json_list\n\n"
    assert wire(relaxed.json_list()) == b"api conference json_list\n\n"


# --- parse_member_id ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,expected",
    [(1, 1), ("1", 1), ("7", 7), ("2147483647", 2147483647), (2147483647, 2147483647), ("10", 10)],
)
def test_parse_member_id_accepts(value: object, expected: int) -> None:
    assert parse_member_id(value) == expected


MEMBER_ID_BAD = [
    "abc",
    "0",
    "00",
    "-1",
    "+1",
    "007",
    "01",
    "7abc",
    "4294967297",  # atoi wraps it to member 1 (s6 H)
    "4294967295",
    "2147483648",
    "9999999999",
    "7;hup all",
    "caller_id_number=6102",  # selects by channel variable (s6 H)
    "8 9",
    "ALL",
    "All",
    "all",
    "last",
    "non_moderator",
    "1 ",
    " 1",
    "1\n",
    "1\r\n",
    "1\r",
    "\r1",
    "\n1",
    "1\x00",
    "\x001",
    "1\t",
    "\t1",
    "1\x0b",
    "1\u00a0",
    "",
    " ",
    "\uff11",  # fullwidth digit one
    "\u0663",  # arabic-indic digit three
    "\u00b2",  # superscript two (str.isdigit() is True)
    "1\uff11",  # int() reads it as 11
    "7\u0663",
    "1_000",  # int() would accept it
    "0x7",
    "1e3",
    "7.0",
    "7" * 10_000,
    "1" + "0" * 9_999,
    0,
    -1,
    2147483648,
    2**64 + 1,
    True,
    False,
    1.0,
    7.5,
    None,
    b"7",
    [7],
]


@pytest.mark.parametrize("value", MEMBER_ID_BAD)
def test_parse_member_id_refuses(value: object) -> None:
    error = _refused("member_id", parse_member_id, value)
    assert error.value is value


@pytest.mark.parametrize("value", MEMBER_ID_BAD)
@pytest.mark.parametrize("action", MEMBER_ACTIONS)
def test_member_refuses_bad_id(relaxed: CommandBuilder, action: str, value: object) -> None:
    _refused("member_id", relaxed.member, ROOM, action, value)
    _refused("member_id", CommandBuilder().member, HEX, action, value)


# --- names ---------------------------------------------------------------------------------------

NAME_BAD_ANY = [
    "",
    "room 6",
    " room6",
    "room6 ",
    "room6\n",
    "room6\r",
    "room6\x00",
    "room6\t",
    "room6\n\napi system echo x",
    "room6%0A",
    "%0A",
    "../",
    "../etc",
    "room6;hup",
    "room6|x",
    "${x}",
    "room'6",
    'room"6',
    "room\\6",
    "r\u00f6\u00f6m",
    "room\u212a",  # KELVIN SIGN, matched by (?i)[a-z]
    "a" * 129,
    "x" * 10_000,
    # names mod_conference takes as global commands when no such conference exists
    "list",
    "LIST",
    "json_list",
    "JSON_List",
    "xml_list",
    "count",
    "help",
    "commands",
    None,
    123,
    b"room6",
]

NAME_BAD_DEFAULT_ONLY = [
    "room1",
    HEX.upper(),
    HEX[:-1] + "A",
    HEX[:31],
    HEX + "0",
    HEX + "\n",
    "\n" + HEX,
    HEX[:31] + "\uff10",  # fullwidth zero
    "g" * 32,
]


@pytest.mark.parametrize("name", NAME_BAD_ANY + NAME_BAD_DEFAULT_ONLY)
def test_default_builder_refuses_name(default: CommandBuilder, name: object) -> None:
    error = _refused("conference", default.check_name, name)
    assert error.value is name
    _refused("conference", default.lock, name)
    _refused("conference", default.unlock, name)
    _refused("conference", default.member, name, "mute", 1)
    _refused("conference", default.everyone, name, "kick")
    if name is not None:  # json_list(None) is the all-conferences form
        _refused("conference", default.json_list, name)


@pytest.mark.parametrize("name", NAME_BAD_ANY)
def test_relaxed_builder_refuses_name(relaxed: CommandBuilder, name: object) -> None:
    _refused("conference", relaxed.check_name, name)
    _refused("conference", relaxed.lock, name)
    _refused("conference", relaxed.member, name, "kick", "1")
    if name is not None:
        _refused("conference", relaxed.json_list, name)


@pytest.mark.parametrize(
    "pattern", [r"(?s).*", r".+", r"[^ ]+", r"(?i)[a-z]+", r"\S+", r"room[\s\S]*"]
)
@pytest.mark.parametrize("name", NAME_BAD_ANY)
def test_operator_pattern_cannot_widen_beyond_relaxed(pattern: str, name: object) -> None:
    _refused("conference", CommandBuilder(pattern).check_name, name)


@pytest.mark.parametrize("name", ["room1", "a", "a" * 128, "conf-1.a_b@default", HEX, "ROOM9"])
def test_relaxed_builder_accepts_name(relaxed: CommandBuilder, name: str) -> None:
    assert relaxed.check_name(name) == name


def test_default_builder_accepts_hex(default: CommandBuilder) -> None:
    assert default.check_name(HEX) == HEX
    assert default.check_name("f" * 32) == "f" * 32


def test_operator_pattern_narrows(relaxed: CommandBuilder) -> None:
    narrow = CommandBuilder(r"room[0-9]")
    assert narrow.check_name("room1") == "room1"
    _refused("conference", narrow.check_name, "room12")
    _refused("conference", narrow.check_name, "xroom1")  # fullmatch, not search


@pytest.mark.parametrize("pattern", ["(", "[a-z", "*", "(?P<x>a)(?P<x>b)"])
def test_bad_pattern_is_a_configuration_error(pattern: str) -> None:
    with pytest.raises(ValueError) as info:
        CommandBuilder(pattern)
    assert not isinstance(info.value, InvalidCommand)
    assert "pattern" in str(info.value)


def test_non_string_pattern_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        CommandBuilder(None)  # type: ignore[arg-type]


# --- actions, selectors, uuids -----------------------------------------------------------------

ACTION_BAD = [
    "MUTE",
    "Mute",
    "mute ",
    " mute",
    "mute\n",
    "mute\n\napi status",
    "mute 7",
    "kick all",
    "hup",
    "tmute",
    "energy",
    "list",
    "json_list",
    "dial",
    "",
    None,
    1,
    b"mute",
]


@pytest.mark.parametrize("action", ACTION_BAD + list(CONFERENCE_ACTIONS))
def test_member_action_refused(relaxed: CommandBuilder, action: object) -> None:
    _refused("action", relaxed.member, ROOM, action, 7)
    _refused("action", relaxed.everyone, ROOM, action)
    _refused("action", relaxed.selector, ROOM, action, "all")


@pytest.mark.parametrize("action", ACTION_BAD + list(MEMBER_ACTIONS) + ["LOCK", "lock\n"])
def test_conference_action_refused(relaxed: CommandBuilder, action: object) -> None:
    _refused("action", relaxed.conference_action, ROOM, action)


@pytest.mark.parametrize(
    "selector", ["ALL", "All", "last", "Non_Moderator", "all ", "all\n", "7", "", None, "moderator"]
)
def test_selector_refused(relaxed: CommandBuilder, selector: object) -> None:
    _refused("selector", relaxed.selector, ROOM, "mute", selector)


@pytest.mark.parametrize(
    "uuid",
    [
        "",
        CALL[:-1],
        CALL + "0",
        CALL.replace("-", ""),
        f"{{{CALL}}}",
        CALL + "\n",
        CALL + " json",
        CALL + "\n\napi status",
        CALL.replace("d", "g"),
        CALL.replace("1", "\uff11"),
        " " + CALL,
        None,
        12,
    ],
)
def test_uuid_refused(default: CommandBuilder, uuid: object) -> None:
    _refused("uuid", default.uuid_dump, uuid)


# --- Command's own check ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "conference x mute 1\n",
        "conference x mute 1\n\napi status",
        "conference x\rmute 1",
        "conference x mute 1\x00",
        "conference  x mute 1",
        " conference x mute 1",
        "conference x mute 1 ",
        "conference\tx mute 1",
        "conference r\u00f6\u00f6m mute 1",
        "conference " + "a" * 600 + " lock",
    ],
)
def test_command_refuses_malformed_text(text: str) -> None:
    _refused("command", Command, "mute", text)


def test_command_accepts_single_line() -> None:
    cmd = Command("lock", "conference room1 lock", conference="room1")
    assert cmd.line() == "api conference room1 lock"


def test_invalid_command_attributes_and_short_message() -> None:
    value = "7" * 10_000
    error = _refused("member_id", parse_member_id, value)
    assert isinstance(error, ValueError)
    assert error.value == value
    assert len(str(error)) < 200


# --- every send of s6_bad_input.cmds -----------------------------------------------------------

_SEND_SHORT = re.compile(r" SEND (b'.*'|b\".*\")$")
_SEND_LONG = re.compile(
    r" SEND (\d+) bytes sha256=([0-9a-f]{64}) head=(b'.*?') \.\.\. tail=(b'.*')$"
)


@functools.cache
def _s6_sends() -> Tuple[bytes, ...]:
    """Every SEND of the capture, in order.  Sends over 2 KiB are abbreviated to length, sha256,
    head and tail; their middle is one repeated byte, so they are rebuilt and the rebuild is
    checked against the recorded sha256."""
    sends: List[bytes] = []
    text = (CAPTURES / "s6_bad_input.cmds").read_text(encoding="utf-8")
    for line in text.splitlines():
        long = _SEND_LONG.search(line)
        if long:
            length, digest = int(long.group(1)), long.group(2)
            head = ast.literal_eval(long.group(3))
            tail = ast.literal_eval(long.group(4))
            data = head + head[-1:] * (length - len(head) - len(tail)) + tail
            assert hashlib.sha256(data).hexdigest() == digest, line[:120]
            sends.append(data)
            continue
        short = _SEND_SHORT.search(line)
        if short:
            sends.append(ast.literal_eval(short.group(1)))
        else:
            assert " SEND " not in line, f"unparsed SEND line: {line[:120]}"
    return tuple(sends)


def _hostile_part(send: bytes) -> Tuple[str, Optional[str], str]:
    """Where the attacker's text sits in a send: (slot, verb, value).

    slot "member_id": after ``api conference room6 <member verb> ``;
    slot "action": after ``api conference room6 `` when the verb is not a member verb;
    slot "conference": the name of a conference command on another conference;
    slot "any": not a conference command at all (the whole line is the value).
    The value ends before the client's one "\\n\\n" terminator.
    """
    text = send.decode("utf-8", "surrogateescape")
    if text.endswith("\n\n"):
        text = text[:-2]
    room_prefix = f"api conference {ROOM} "
    if text.startswith(room_prefix):
        rest = text[len(room_prefix) :]
        verb = re.match(r"[A-Za-z_]*", rest).group(0)
        if verb in MEMBER_ACTIONS and rest[len(verb) : len(verb) + 1] == " ":
            return "member_id", verb, rest[len(verb) + 1 :]
        return "action", None, rest
    if text.startswith("api conference "):
        name, _, verb = text[len("api conference ") :].rpartition(" ")
        return "conference", verb, name
    return "any", None, text


class Legit(NamedTuple):
    send: bytes
    why: str


class Hostile(NamedTuple):
    label: str
    slot: str
    verb: Optional[str]
    value: str


def _originate(number: int, name: str) -> bytes:
    return (
        b"bgapi originate {origination_caller_id_number=%d,origination_caller_id_name=%s}"
        b"null/%d &conference(room6@default)\n\n" % (number, name.encode(), number)
    )


_SETUP = "test setup: a null channel joins room6 (confd never originates)"
_LIST = "plain read of room6; confd does not send it (it resyncs with json_list)"

# Every SEND of s6_bad_input.cmds in order, legitimate or not; the capture's section letters.
S6_SENDS = [
    Legit(b"auth ClueCon\n\n", "ESL auth, sent by the connection layer"),
    Legit(b"event plain CUSTOM conference::maintenance\n\n", "event subscription"),
    *[Legit(_originate(6000 + i, f"P{i}"), _SETUP) for i in range(1, 7)],
    Legit(b"api conference room6 list\n\n", _LIST),
    Hostile("A: \\n\\n runs a 2nd command", "member_id", "kick", "1\n\napi status"),
    Hostile("B: \\n makes an ESL header", "member_id", "mute", "2\nX-Injected: api status"),
    Hostile("C: CRLF line ending", "member_id", "unmute", "2\r\n\r\n"),
    Hostile("D: bare \\r truncates", "member_id", "deaf", "2\rapi status"),
    Hostile("E: injected noevents", "member_id", "undeaf", "2\n\nnoevents"),
    Legit(b"api conference room6 mute 3\n\n", "a proper member command"),
    Legit(b"event plain CUSTOM conference::maintenance\n\n", "re-subscription after E"),
    Legit(b"api conference room6 unmute 3\n\n", "a proper member command"),
    Hostile("F: injected hup all", "member_id", "mute", "4\n\napi conference room6 hup all"),
    Legit(b"api conference room6 list\n\n", _LIST),
    Hostile("G: unknown ESL command", "any", None, "frobnicate now"),
    Hostile("G: unknown api", "any", None, "api frobnicate now"),
    Hostile("G: empty api", "any", None, "api "),
    Hostile("G: empty lines first", "any", None, "\n\n\n\napi version"),
    *[Legit(_originate(6100 + i, f"Q{i}"), _SETUP) for i in range(1, 4)],
    Legit(b"api conference room6 list\n\n", _LIST),
    Hostile("H: atoi 7abc -> 7", "member_id", "mute", "7abc"),
    Hostile("H: -1 -> 4294967295", "member_id", "mute", "-1"),
    Hostile("H: 0 -> usage line", "member_id", "mute", "0"),
    Hostile("H: 4294967297 -> 1", "member_id", "mute", "4294967297"),
    Hostile("H: 7;hup all", "member_id", "unmute", "7;hup all"),
    Hostile("H: select by variable", "member_id", "deaf", "caller_id_number=6102"),
    Hostile("H: select by variable", "member_id", "undeaf", "caller_id_number=6102"),
    Hostile("H: two ids", "member_id", "kick", "8 9"),
    Legit(b"api conference room6 list\n\n", _LIST),
    Hostile("H: ALL is all", "member_id", "mute", "ALL"),
    Hostile("H: All is all", "member_id", "unmute", "All"),
    Hostile("H2: NUL", "action", None, "list\x00api status"),
    Hostile("I: 100 kB argument", "action", None, "list " + "A" * 100_000),
    Hostile("I: 5000-digit id", "member_id", "mute", "9" * 5_000),
    Hostile("I: 1 MB name", "conference", "list", "B" * 1_000_000),
    Hostile("I: 10 MiB api line", "any", None, "api status " + "C" * 10_485_860),
    Legit(b"api version\n\n", "a read of the version (not a conference command)"),
    Hostile(
        "J: injected system", "action", None, "list\n\napi system echo fsanchor-injection-test"
    ),
    Hostile("K: injected exit", "action", None, "list\n\nexit"),
]


def test_s6_table_covers_every_send() -> None:
    assert len(_s6_sends()) == len(S6_SENDS) == 46


def _label(index: int) -> str:
    row = S6_SENDS[index]
    return f"{index:02d}-" + (row.label if isinstance(row, Hostile) else "legit")


@pytest.mark.parametrize("index", range(len(S6_SENDS)), ids=_label)
def test_s6_send(index: int) -> None:
    send = _s6_sends()[index]
    row = S6_SENDS[index]
    relaxed = CommandBuilder(RELAXED_NAME_PATTERN)
    default = CommandBuilder()
    if isinstance(row, Legit):
        assert send == row.send
        slot, verb, value = _hostile_part(send)
        if slot == "member_id":
            # the legitimate member commands are exactly what the builder produces
            assert relaxed.member(ROOM, verb, value).line().encode() + b"\n\n" == send
        return

    # The value is taken from the capture; the table says what it is, so the extraction is
    # checked too.
    slot, verb, value = _hostile_part(send)
    assert (slot, verb) == (row.slot, row.verb)
    assert value == row.value
    if slot == "member_id":
        _refused("member_id", parse_member_id, value)
        _refused("member_id", relaxed.member, ROOM, verb, value)
        _refused("member_id", default.member, HEX, verb, value)
        _refused("selector", relaxed.selector, ROOM, verb, value)
    elif slot == "action":
        _refused("action", relaxed.conference_action, ROOM, value)
        _refused("action", relaxed.member, ROOM, value, 1)
        _refused("action", relaxed.everyone, ROOM, value)
        _refused("action", default.conference_action, HEX, value)
    elif slot == "conference":
        _refused("conference", relaxed.check_name, value)
        _refused("conference", relaxed.json_list, value)
        _refused("conference", relaxed.lock, value)
        _refused("conference", default.member, value, "mute", 1)
    else:
        # Not a conference command: whatever slot such text lands in, it is refused there.
        assert slot == "any"
        for builder in (relaxed, default):
            _refused("conference", builder.check_name, value)
            _refused(
                "member_id", builder.member, ROOM if builder is relaxed else HEX, "mute", value
            )
            _refused("action", builder.conference_action, HEX, value)
            _refused("uuid", builder.uuid_dump, value)


# --- reply_ok on the captured replies ------------------------------------------------------------

_REPLY_TO = re.compile(r"# reply to '(api conference[^']*)': (.*)$")


def _conference_replies(capture: str) -> List[Tuple[str, str]]:
    out = []
    for line in (CAPTURES / capture).read_text(encoding="utf-8").splitlines():
        match = _REPLY_TO.search(line)
        if match:
            out.append((match.group(1), ast.literal_eval(match.group(2))))
    return out


# (command, expected verdict) for every "# reply to 'api conference ...'" in s1_room1_plain.cmds,
# in order.  Verdicts follow FreeSWITCH's words, not reply_ok: "-ERR" fails, "+OK" succeeds, a
# usage line, a listing, a count or an energy readout is not a success of an action.
S1_EXPECTED = [
    ("api conference room1 list", False),  # -ERR Conference room1 not found
    ("api conference room1 mute 1", False),  # -ERR not found
    ("api conference room1 kick all", False),  # -ERR not found
    ("api conference room1 json_list", False),  # -ERR not found
    ("api conference json_list", False),  # []
    ("api conference list", True),  # +OK No active conferences.
    ("api conference xml_list", False),  # <?xml ...
    ("api conference room1 list", False),  # member lines
    ("api conference room1 list delim |", False),
    ("api conference room1 list count", False),  # 3
    ("api conference room1 count", False),  # 3
    ("api conference room1 json_list", False),
    ("api conference room1 json_list compact", False),
    ("api conference json_list", False),
    ("api conference json_list compact", False),
    ("api conference room1 xml_list", False),
    ("api conference list", True),  # +OK Conference room1 (3 members ...
    ("api conference count", False),  # 1
    ("api conference room1 mute 1", True),
    ("api conference room1 mute 1", True),
    ("api conference room1 unmute 1", True),
    ("api conference room1 deaf 1", True),
    ("api conference room1 undeaf 1", True),
    ("api conference room1 mute 1 quiet", True),
    ("api conference room1 unmute 1 quiet", True),
    ("api conference room1 undeaf 3", True),
    ("api conference room1 deaf 3", True),
    ("api conference room1 energy 1", False),  # Energy 1 = 100
    ("api conference room1 energy 1 300", False),  # Energy 1 = 300
    ("api conference room1 tmute 1", True),
    ("api conference room1 tmute 1", True),
    ("api conference room1 mute non_moderator", True),  # +OK / Skipping moderator / +OK
    ("api conference room1 unmute non_moderator", True),
    ("api conference room1 mute all", True),
    ("api conference room1 unmute last", True),
    ("api conference room1 deaf last", True),
    ("api conference room1 undeaf all", True),
    ("api conference room1 unmute all", True),
    ("api conference room1 lock", True),  # +OK room1 locked
    ("api conference room1 list", False),
    ("api conference room1 list", False),
    ("api conference room1 unlock", True),
    ("api conference room1 json_list", False),
    ("api conference room1 mute 999", False),  # -ERR Non-Existant ID 999
    ("api conference room1 unmute 999", False),
    ("api conference room1 deaf 999", False),
    ("api conference room1 undeaf 999", False),
    ("api conference room1 kick 999", False),
    ("api conference room1 hup 999", False),
    ("api conference room1 mute", False),  # bare usage line, no -ERR
    ("api conference room1 mute abc", False),  # bare usage line
    ("api conference room1 kick 0", False),  # bare usage line
    ("api conference room1 frobnicate", False),  # -ERR Conference command ... not found.
    ("api conference room1", False),  # Conference command, not specified.
    ("api conference room9 mute 1", False),
    ("api conference room9 lock", False),
    ("api conference room9 json_list", False),
    ("api conference", False),  # usage listing
    ("api conference room1 mute caller_id_number=9999", False),  # -ERR Non-Existant member
    ("api conference room1 lock extra args", True),  # +OK room1 locked
    ("api conference room1 unlock", True),
    ("api conference room1 kick 1", True),  # +OK kicked 1
    ("api conference room1 kick 1", False),  # -ERR Non-Existant ID 1
    ("api conference room1 hup last", True),  # +OK hup 5
    ("api conference room1 list", False),
    ("api conference room1 kick all", True),  # three +OK kicked lines
    ("api conference room1 list", False),  # -ERR not found
    ("api conference room1 kick all", False),  # -ERR not found
    ("api conference json_list", False),  # []
    ("api conference list", True),  # +OK No active conferences.
]

# The same for s6_bad_input.cmds.  Note that the hostile ids got "+OK" from FreeSWITCH, acting
# on the wrong member: the reply cannot reveal that, which is why values are validated first.
S6_EXPECTED = [
    ("api conference room6 list", False),
    ("api conference room6 list", False),  # -ERR Conference room6 not found
    ("api conference room6 list", False),
    ("api conference room6 mute 7abc", True),  # +OK mute 7
    ("api conference room6 mute -1", False),  # -ERR Non-Existant ID 4294967295
    ("api conference room6 mute 0", False),  # usage line
    ("api conference room6 mute 4294967297", False),  # -ERR Non-Existant ID 1
    ("api conference room6 unmute 7;hup all", True),
    ("api conference room6 deaf caller_id_number=6102", True),
    ("api conference room6 undeaf caller_id_number=6102", True),
    ("api conference room6 kick 8 9", True),
    ("api conference room6 list", False),
    ("api conference room6 mute ALL", True),
    ("api conference room6 unmute All", True),
]


@pytest.mark.parametrize(
    "capture,expected",
    [("s1_room1_plain.cmds", S1_EXPECTED), ("s6_bad_input.cmds", S6_EXPECTED)],
)
def test_reply_table_matches_capture(capture: str, expected: List[Tuple[str, bool]]) -> None:
    assert [command for command, _ in _conference_replies(capture)] == [c for c, _ in expected]


@pytest.mark.parametrize(
    "capture,index",
    [("s1_room1_plain.cmds", i) for i in range(len(S1_EXPECTED))]
    + [("s6_bad_input.cmds", i) for i in range(len(S6_EXPECTED))],
)
def test_reply_ok_on_captured_reply(capture: str, index: int) -> None:
    table = S1_EXPECTED if capture.startswith("s1") else S6_EXPECTED
    command, reply = _conference_replies(capture)[index]
    expected_command, verdict = table[index]
    assert command == expected_command
    assert reply_ok(reply) is verdict, (command, reply[:200])


@pytest.mark.parametrize(
    "reply,verdict",
    [
        ("+OK mute 1\n", True),
        ("+OK kicked 1\n", True),
        ("+OK room1 locked\n", True),
        ("+OK mute 1\r\n", True),
        ("+OK mute 3\nSkipping moderator (member id 2).\n+OK mute 1\n", True),
        ("+OK hup 6\n+OK hup 5\n+OK hup 4\n+OK hup 3\n+OK hup 2\n", True),  # s6 F
        # non_moderator with only moderators present: nothing to do, nothing failed
        ("Skipping moderator (member id 2).\n", True),
        ("Skipping moderator (member id 2).\nSkipping moderator (member id 5).\n", True),
        ("-ERR Conference room9 not found\n", False),
        ("-ERR Non-Existant ID 999\n", False),
        ("+OK mute 3\n-ERR Non-Existant ID 4\n", False),
        ("-ERR x\nSkipping moderator (member id 2).\n", False),
        ("mute <[member_id|all]|last|non_moderator> [<quiet>]", False),
        ("kick <[member_id|all|last|non_moderator]> [<optional sound file>]", False),
        ("Skipping moderator (member id 2).\nmute <[member_id|all]|last|non_moderator>", False),
        ("Skipping moderator (member id x).\n", False),
        ("OK mute 1\n", False),
        ("", False),
        ("\n", False),
        ("\n\n", False),
        (None, False),
    ],
)
def test_reply_ok_rules(reply: str, verdict: bool) -> None:
    assert reply_ok(reply) is verdict


# --- property: nothing unchecked ever reaches the wire --------------------------------------------

_ANY_TEXT = st.text(
    alphabet=st.characters() | st.sampled_from(list("\r\n\x00\t 0123456789 ")),
    max_size=40,
)
_NAMES = st.one_of(
    _ANY_TEXT,
    st.from_regex(RELAXED_NAME_PATTERN, fullmatch=True),
    st.from_regex(DEFAULT_NAME_PATTERN, fullmatch=True),
    st.sampled_from(["room1", HEX, "list", "room1\n", "room 1", HEX.upper()]),
)
_MEMBER_IDS = st.one_of(
    _ANY_TEXT,
    st.integers(min_value=-(2**40), max_value=2**40),
    st.from_regex(r"[0-9]{1,12}", fullmatch=True),
    st.booleans(),
    st.none(),
)
_ACTIONS = st.one_of(
    _ANY_TEXT,
    st.sampled_from(MEMBER_ACTIONS + CONFERENCE_ACTIONS + ("MUTE", "list", "hup", "mute\n")),
)
_BUILDERS = st.sampled_from([DEFAULT_NAME_PATTERN, RELAXED_NAME_PATTERN, r"(?s).*", r"(?i)\w+"])


def _assert_clean(cmd: Command, tokens: List[str]) -> None:
    line = cmd.line()
    assert not any(c in line for c in "\r\n\x00")
    assert line.split(" ") == ["api", *tokens]
    assert all(token and token.isascii() and token.isprintable() for token in tokens)


@settings(max_examples=300, deadline=None)
@given(pattern=_BUILDERS, name=_NAMES, action=_ACTIONS, member_id=_MEMBER_IDS)
def test_property_member(pattern: str, name: object, action: object, member_id: object) -> None:
    builder = CommandBuilder(pattern)
    try:
        cmd = builder.member(name, action, member_id)
    except InvalidCommand:
        return
    assert action in MEMBER_ACTIONS
    _assert_clean(cmd, ["conference", name, action, str(int(member_id))])
    assert 1 <= int(cmd.target) <= MAX_MEMBER_ID


@settings(max_examples=300, deadline=None)
@given(pattern=_BUILDERS, name=_NAMES, action=_ACTIONS)
def test_property_conference_and_everyone(pattern: str, name: object, action: object) -> None:
    builder = CommandBuilder(pattern)
    for build, expected in (
        (builder.conference_action, lambda: ["conference", name, action]),
        (builder.everyone, lambda: ["conference", name, action, SELECTOR_FOR[action]]),
    ):
        try:
            cmd = build(name, action)
        except InvalidCommand:
            continue
        _assert_clean(cmd, expected())
    try:
        cmd = builder.json_list(name)
    except InvalidCommand:
        return
    _assert_clean(cmd, ["conference", name, "json_list"])


@settings(max_examples=200, deadline=None)
@given(uuid=st.one_of(_ANY_TEXT, st.uuids().map(str), st.uuids().map(lambda u: str(u).upper())))
def test_property_uuid_dump(uuid: str) -> None:
    try:
        cmd = CommandBuilder().uuid_dump(uuid)
    except InvalidCommand:
        return
    _assert_clean(cmd, ["uuid_dump", uuid, "json"])

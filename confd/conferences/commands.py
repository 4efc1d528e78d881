"""Validated values -> the exact FreeSWITCH api command text, and what its reply means.

Pure functions, no I/O.  This is the only place in confd where a conference command string is
born, so it is also the place that keeps hostile text out of it.  The captures show why that
matters (confd_tests/captures/s6_bad_input.cmds, FreeSWITCH 1.11.3):

* ``\\n\\n`` inside an api line ends the command and starts another one: an injected
  ``api system echo ...`` ran a shell command, ``noevents`` silently stopped event delivery and
  ``exit`` closed the connection (sections A, E, F, J, K).
* a single ``\\n`` turns the rest into an ESL header; a bare ``\\r`` or a NUL truncates the
  command (sections B, D, H2).
* member ids go through ``atoi``: ``7abc`` acts on member 7, ``-1`` becomes 4294967295,
  ``4294967297`` wraps to member 1, ``8 9`` acts on 8, and ``caller_id_number=6102`` selects a
  member by channel variable (section H); ``ALL`` / ``All`` are the ``all`` selector.

So every value is checked against a small ASCII-only whitelist with ``re.fullmatch`` (``$``
would accept a trailing newline, ``\\d`` would accept non-ASCII digits), and every finished
command is checked once more for its overall shape before it can exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Pattern, Tuple

# --- protocol text (what mod_conference / mod_commands understand) ----------------------------
API_PREFIX = "api "  # ESL: run an api command and wait for its api/response
CONFERENCE = "conference"  # mod_conference's api
JSON_LIST = "json_list"
UUID_DUMP = "uuid_dump"  # mod_commands: a channel's variables
UUID_DUMP_FORMAT = "json"
MUTE = "mute"
UNMUTE = "unmute"
DEAF = "deaf"
UNDEAF = "undeaf"
KICK = "kick"
LOCK = "lock"
UNLOCK = "unlock"
# Member selectors.  "last" exists in FreeSWITCH too but is never sent: which member it hits
# depends on who joined last at the moment FreeSWITCH reads the command.
SELECTOR_NON_MODERATOR = "non_moderator"
SELECTOR_ALL = "all"
SELECTORS = (SELECTOR_NON_MODERATOR, SELECTOR_ALL)

# Reply text (s1_room1_plain.cmds): "+OK mute 1", "+OK kicked 1", "+OK room1 locked",
# "-ERR Conference room9 not found", "-ERR Non-Existant ID 999", and for non_moderator
# "Skipping moderator (member id 2)." once per moderator.
REPLY_OK = "+OK"
REPLY_ERR = "-ERR"
_SKIPPING_MODERATOR = re.compile(r"Skipping moderator \(member id [0-9]+\)\.")

# --- value rules ---------------------------------------------------------------------------------
DEFAULT_NAME_PATTERN = r"[0-9a-f]{32}"  # conference ids are Kazoo document ids
RELAXED_NAME_PATTERN = r"[A-Za-z0-9_.@-]{1,128}"  # the widest an operator may configure
MAX_MEMBER_ID = 2147483647
_MEMBER_ID = re.compile(r"[1-9][0-9]{0,9}")  # ASCII only: "\d" would accept "１"
_RELAXED_NAME = re.compile(RELAXED_NAME_PATTERN)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# mod_conference looks a conference up by name first and, only when none is found, treats these
# words (compared case-insensitively) as commands of their own: "conference json_list" answers
# "[]" and "conference list" answers "+OK No active conferences." (s1_room1_plain.cmds).  A
# conference named like one of them could make an action on a missing conference look like a
# success, so no such name is accepted even when the operator's pattern would allow it.
RESERVED_NAMES = frozenset(("list", "xml_list", "json_list", "count", "help", "commands"))

MEMBER_ACTIONS = (MUTE, UNMUTE, DEAF, UNDEAF, KICK)
CONFERENCE_ACTIONS = (LOCK, UNLOCK)
# api.md: on the participants collection, mute/unmute/deaf/undeaf act on everyone except the
# moderators, kick on everyone.
SELECTOR_FOR = {
    MUTE: SELECTOR_NON_MODERATOR,
    UNMUTE: SELECTOR_NON_MODERATOR,
    DEAF: SELECTOR_NON_MODERATOR,
    UNDEAF: SELECTOR_NON_MODERATOR,
    KICK: SELECTOR_ALL,
}

# The shape every command text must have: printable ASCII tokens separated by single spaces.
# No CR, LF, NUL, tab, double or edge space, nothing outside ASCII.
_COMMAND_SHAPE = re.compile(r"[!-~]+(?: [!-~]+)*")
MAX_COMMAND_TEXT = 512  # the longest legal command is ~180 characters

FIELD_CONFERENCE = "conference"
FIELD_MEMBER_ID = "member_id"
FIELD_ACTION = "action"
FIELD_SELECTOR = "selector"
FIELD_UUID = "uuid"
FIELD_COMMAND = "command"  # the finished text failed the final shape check (a bug, not input)

_REPR_LIMIT = 64


class InvalidCommand(ValueError):
    """A value that must not go into a FreeSWITCH command.

    ``field`` names the part that was refused (``conference``, ``member_id``, ``action``,
    ``selector``, ``uuid``, or ``command`` for the final check); ``value`` is what was given.
    The message shows at most the first characters of the value: it may be megabytes long.
    """

    def __init__(self, field: str, value: object, reason: str = "not allowed") -> None:
        self.field = field
        self.value = value
        if isinstance(value, (str, bytes)) and len(value) > _REPR_LIMIT:
            shown = repr(value[:_REPR_LIMIT]) + "..."  # cut before repr: it may be megabytes
        else:
            shown = repr(value)[: _REPR_LIMIT * 4]
        super().__init__(f"invalid {field} {shown}: {reason}")


def parse_member_id(value: object) -> int:
    """A FreeSWITCH member id: an int, or its canonical decimal text, in 1..MAX_MEMBER_ID."""
    if isinstance(value, bool):  # bool is an int subclass; True is not member 1
        raise InvalidCommand(FIELD_MEMBER_ID, value, "not an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        if not _MEMBER_ID.fullmatch(value):
            raise InvalidCommand(FIELD_MEMBER_ID, value, f"not a decimal 1..{MAX_MEMBER_ID}")
        number = int(value)
    else:
        raise InvalidCommand(FIELD_MEMBER_ID, value, "not an integer")
    if not 1 <= number <= MAX_MEMBER_ID:
        raise InvalidCommand(FIELD_MEMBER_ID, value, f"out of range 1..{MAX_MEMBER_ID}")
    return number


@dataclass(frozen=True)
class Command:
    """One api command: ``text`` is the argument line, ``line()`` what goes on the wire."""

    action: str
    text: str
    conference: Optional[str] = None
    target: Optional[str] = None  # member id, selector or call uuid

    def __post_init__(self) -> None:
        # Defense in depth: whatever produced ``text``, it must be a single line of
        # space-separated printable tokens, so it can never carry a second command.
        if (
            not isinstance(self.text, str)
            or len(self.text) > MAX_COMMAND_TEXT
            or not _COMMAND_SHAPE.fullmatch(self.text)
        ):
            raise InvalidCommand(FIELD_COMMAND, self.text, "not a single-line command")

    def line(self) -> str:
        return API_PREFIX + self.text


def _join(*tokens: str) -> str:
    return " ".join(tokens)


class CommandBuilder:
    """Builds conference commands.  ``name_pattern`` is the operator's rule for conference names;
    a name must also satisfy RELAXED_NAME_PATTERN whatever the operator configured."""

    def __init__(self, name_pattern: str = DEFAULT_NAME_PATTERN) -> None:
        if not isinstance(name_pattern, str):
            raise ValueError(f"conference name pattern must be a string, got {name_pattern!r}")
        try:
            self._name: Pattern[str] = re.compile(name_pattern)
        except re.error as exc:
            # A configuration error, deliberately not InvalidCommand (which means "bad request").
            raise ValueError(
                f"conference name pattern {name_pattern!r} is not a valid regular expression: {exc}"
            ) from exc
        self.name_pattern = name_pattern

    # --- values ---
    def check_name(self, name: object) -> str:
        if not isinstance(name, str):
            raise InvalidCommand(FIELD_CONFERENCE, name, "not a string")
        if not _RELAXED_NAME.fullmatch(name) or not self._name.fullmatch(name):
            raise InvalidCommand(FIELD_CONFERENCE, name, "does not match the name pattern")
        if name.lower() in RESERVED_NAMES:
            raise InvalidCommand(FIELD_CONFERENCE, name, "reserved by mod_conference")
        return name

    @staticmethod
    def _check_action(action: object, allowed: Tuple[str, ...]) -> str:
        # Exact, case-sensitive membership: the value is then one of our own constants.
        if not isinstance(action, str) or action not in allowed:
            raise InvalidCommand(FIELD_ACTION, action, "expected one of " + ", ".join(allowed))
        return action

    @staticmethod
    def check_uuid(uuid: object) -> str:
        if not isinstance(uuid, str) or not _UUID.fullmatch(uuid):
            raise InvalidCommand(FIELD_UUID, uuid, "not a UUID")
        return uuid

    # --- conference actions ---
    def conference_action(self, name: object, action: object) -> Command:
        verb = self._check_action(action, CONFERENCE_ACTIONS)
        conf = self.check_name(name)
        return Command(verb, _join(CONFERENCE, conf, verb), conference=conf)

    def lock(self, name: object) -> Command:
        return self.conference_action(name, LOCK)

    def unlock(self, name: object) -> Command:
        return self.conference_action(name, UNLOCK)

    # --- participant actions ---
    def member(self, name: object, action: object, member_id: object) -> Command:
        verb = self._check_action(action, MEMBER_ACTIONS)
        conf = self.check_name(name)
        target = str(parse_member_id(member_id))  # re-rendered from the int: canonical form
        return Command(verb, _join(CONFERENCE, conf, verb, target), conference=conf, target=target)

    def selector(self, name: object, action: object, selector: object) -> Command:
        """An action on a member selector; only ``non_moderator`` and ``all``, exact case."""
        verb = self._check_action(action, MEMBER_ACTIONS)
        conf = self.check_name(name)
        if not isinstance(selector, str) or selector not in SELECTORS:
            raise InvalidCommand(
                FIELD_SELECTOR, selector, "expected one of " + ", ".join(SELECTORS)
            )
        return Command(
            verb, _join(CONFERENCE, conf, verb, selector), conference=conf, target=selector
        )

    def everyone(self, name: object, action: object) -> Command:
        """The participants-collection action of api.md (moderators spared except by kick)."""
        verb = self._check_action(action, MEMBER_ACTIONS)
        return self.selector(name, verb, SELECTOR_FOR[verb])

    # --- reads ---
    def json_list(self, name: object = None) -> Command:
        if name is None:
            return Command(JSON_LIST, _join(CONFERENCE, JSON_LIST))
        conf = self.check_name(name)
        return Command(JSON_LIST, _join(CONFERENCE, conf, JSON_LIST), conference=conf)

    def uuid_dump(self, uuid: object) -> Command:
        call = self.check_uuid(uuid)
        return Command(UUID_DUMP, _join(UUID_DUMP, call, UUID_DUMP_FORMAT), target=call)


def reply_ok(text: str) -> bool:
    """Whether FreeSWITCH's reply to a conference *action* (mute ... kick, lock, unlock) says it
    was done.

    Any ``-ERR`` line fails; otherwise one ``+OK`` line succeeds; a reply made only of
    ``Skipping moderator (member id N).`` lines succeeds too (a non_moderator selector when only
    moderators are present: nothing to do).  Anything else fails: a missing or non-numeric member
    id gets the bare usage line with no ``-ERR`` at all, e.g.
    ``mute <[member_id|all]|last|non_moderator> [<quiet>]`` (s1_room1_plain.cmds), and an empty
    reply says nothing was done.  Not meant for list/json_list replies.
    """
    if not isinstance(text, str):
        return False
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return False
    if any(line.startswith(REPLY_ERR) for line in lines):
        return False
    if any(line.startswith(REPLY_OK) for line in lines):
        return True
    return all(_SKIPPING_MODERATOR.fullmatch(line.strip()) for line in lines)

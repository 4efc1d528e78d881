"""API fuzzing against a running confd (real HTTP) with live conferences on a fake FreeSWITCH.

Bounded for CI by default; a longer run:

    CONFD_FUZZ_EXAMPLES=2000 python -m pytest confd_tests/fuzz

``CONFD_FUZZ_EXAMPLES`` is the number of examples per operation and generation mode (the
garbage-token and raw-path fuzzers take a proportional share).
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterator, List

import pytest
from hypothesis import HealthCheck, settings

from confd_tests.fuzz.server import LiveApi

EXAMPLES_ENV = "CONFD_FUZZ_EXAMPLES"
DEFAULT_EXAMPLES = 25


def examples() -> int:
    text = os.environ.get(EXAMPLES_ENV, "")
    return int(text) if text.strip() else DEFAULT_EXAMPLES


def fuzz_settings(max_examples: int) -> Any:
    """Hypothesis settings of every fuzz test: no deadline (a 2-core machine shared with other
    test runs), no example database in the tree; a failure prints its reproduction blob."""
    return settings(
        max_examples=max(1, max_examples),
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


# What confd may send to FreeSWITCH, and nothing else: its own handshake and reads, and
# conference actions of exactly the shape `api conference <32hex> <verb> [<id>|selector]`.
_MEMBER_ID = r"[1-9][0-9]{0,9}"
_HEX32 = r"[0-9a-f]{32}"
_MEMBER_VERB = r"(?:mute|unmute|deaf|undeaf|kick)"
ALLOWED_COMMANDS = [
    re.compile(r"auth ClueCon"),
    re.compile(r"event plain HEARTBEAT CUSTOM conference::maintenance"),
    re.compile(r"api conference json_list"),
    re.compile(rf"api conference {_HEX32} json_list"),
    re.compile(r"api uuid_dump [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12} json"),
    re.compile(rf"api conference {_HEX32} (?:lock|unlock)"),
    re.compile(rf"api conference {_HEX32} {_MEMBER_VERB} (?:{_MEMBER_ID}|non_moderator|all)"),
]
MAX_MEMBER_ID = 2147483647

# The one 5xx this setup legitimately produces: fuzzed kicks end calls and conferences, and an
# action that confd sent while its live state (fed by events) still showed them is answered
# -ERR by FreeSWITCH, which api.md maps to 502 freeswitch_error. Only these two replies
# (s1_room1_plain.cmds) are excused; any other 5xx fails.
RACE_REPLIES = re.compile(rf"-ERR (?:Conference {_HEX32} not found|Non-Existant ID {_MEMBER_ID})")


def lost_race(status: int, body: object) -> bool:
    """A 502 whose FreeSWITCH reply says the conference or member had just gone."""
    if status != 502 or not isinstance(body, dict) or body.get("message") != "freeswitch_error":
        return False
    data = body.get("data")
    reply = data.get("reply") if isinstance(data, dict) else None
    return isinstance(reply, str) and RACE_REPLIES.fullmatch(reply) is not None


def bad_commands(lines: List[str]) -> List[str]:
    """The lines that are not one of ALLOWED_COMMANDS (member ids within 1..2^31-1)."""
    bad = []
    for line in lines:
        if not any(p.fullmatch(line) for p in ALLOWED_COMMANDS):
            bad.append(line)
            continue
        last = line.rsplit(" ", 1)[-1]
        if last.isdigit() and last.isascii() and int(last) > MAX_MEMBER_ID:
            bad.append(line)
    return bad


@pytest.fixture(scope="session")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    db = tmp_path_factory.mktemp("fuzz") / "confd.db"
    api = LiveApi(f"sqlite:///{db}").start()
    yield api
    api.stop()

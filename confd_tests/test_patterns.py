"""Issue 10, item 12: no pattern lets a trailing newline in.

Python's ``$`` also matches before a final ``"\\n"``, so ``re.match(r"^[0-9]+$", "4000\\n")``
succeeds. Two checks:

* every regular expression written in confd's source is read, and none ends a match with
  ``$`` (outside ``re.MULTILINE``, where a line end is what is meant): validation uses
  ``fullmatch`` or ``\\Z``;
* every validator that decides on a pattern refuses its own valid sample with a newline
  appended (the JSON Schema and OpenAPI patterns, ECMA-262 ones, have tests of their own in
  confd_tests/store/test_values.py and confd_tests/http/test_zz_openapi.py).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest

from confd.conferences.commands import (
    RELAXED_NAME_PATTERN,
    CommandBuilder,
    InvalidCommand,
    parse_member_id,
)
from confd.conferences.events import event_time
from confd.events.shape import parse_binding
from confd.http.responses import request_id

PACKAGE = Path(__file__).resolve().parents[1] / "confd"
RE_FUNCTIONS = {"compile", "match", "search", "fullmatch", "findall", "finditer", "sub", "split"}
MULTILINE_FLAGS = {"M", "MULTILINE"}


def dollar_anchors(pattern: str) -> int:
    """How many ``$`` anchors a Python ``pattern`` has (not escaped, not in a character class;
    a ``]`` first in a class, after ``[`` or ``[^``, is a character there)."""
    count = 0
    class_start = -1  # index where the open class's members begin, or -1 outside a class
    escaped = False
    for i, char in enumerate(pattern):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif class_start >= 0:
            if char == "^" and i == class_start:
                class_start += 1
            elif char == "]" and i > class_start:
                class_start = -1
        elif char == "[":
            class_start = i + 1
        elif char == "$":
            count += 1
    return count


def literal_text(node: ast.AST) -> Optional[str]:
    """The constant text of a pattern expression (string parts of ``+`` and f-strings)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        parts = [literal_text(node.left), literal_text(node.right)]
        return "".join(p for p in parts if p is not None)
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant))
    return None


def uses_multiline(call: ast.Call) -> bool:
    flags = list(call.args[1:]) + [kw.value for kw in call.keywords if kw.arg == "flags"]
    return any(
        isinstance(sub, ast.Attribute) and sub.attr in MULTILINE_FLAGS
        for flag in flags
        for sub in ast.walk(flag)
    )


def regexes_in(path: Path) -> Iterator[Tuple[int, str, bool]]:
    """``(line, pattern text, multiline)`` of every ``re.<function>(pattern, ...)`` call and
    every string constant named ``*_PATTERN``/``*_RE`` in a module."""
    tree = ast.parse(path.read_text("utf-8"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in RE_FUNCTIONS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "re"
            and node.args
        ):
            text = literal_text(node.args[0])
            if text is not None:
                yield node.lineno, text, uses_multiline(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            names += [t.attr for t in targets if isinstance(t, ast.Attribute)]
            if node.value is not None and any(
                n.upper().endswith(("_PATTERN", "_RE")) for n in names
            ):
                text = literal_text(node.value)
                if text is not None:
                    yield node.lineno, text, False


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_scan_finds_the_patterns_it_is_meant_to_check():
    found = [text for path in SOURCES for _, text, _ in regexes_in(path)]
    assert len(found) >= 20, found
    assert RELAXED_NAME_PATTERN in found


def test_no_pattern_in_confd_ends_a_match_with_dollar():
    offenders: List[str] = []
    for path in SOURCES:
        for line, text, multiline in regexes_in(path):
            if dollar_anchors(text) and not multiline:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}")
    assert offenders == [], "use fullmatch or \\Z: " + "; ".join(offenders)


@pytest.mark.parametrize(
    ("pattern", "anchors"),
    [
        ("^a$", 1),
        ("a\\$", 0),
        ("[$]", 0),
        ("a\\\\$", 1),
        ("(a|b)$|c$", 2),
        ("[]$]", 0),
        ("[^]$]", 0),
        ("[a]$", 1),
        ("[\\]$]", 0),
    ],
)
def test_dollar_anchors_are_counted_outside_classes_and_escapes(pattern, anchors):
    assert dollar_anchors(pattern) == anchors


# --- behaviour: each validator refuses its valid sample with a newline after it -----------------

HEX32 = "0123456789abcdef0123456789abcdef"
UUID = "0f5d3c7e-2a4b-4c6d-8e9f-0a1b2c3d4e5f"


def refuses(check: Callable[[str], Any], errors: Tuple[type, ...]) -> Callable[[str], bool]:
    def accepted(text: str) -> bool:
        try:
            check(text)
        except errors:
            return False
        return True

    return accepted


VALIDATORS = [
    ("member id", refuses(parse_member_id, (InvalidCommand,)), "5"),
    ("conference name", refuses(CommandBuilder().check_name, (InvalidCommand,)), HEX32),
    (
        "relaxed conference name",
        refuses(CommandBuilder(RELAXED_NAME_PATTERN).check_name, (InvalidCommand,)),
        "room-1",
    ),
    (
        "operator's name pattern with its own $",
        refuses(CommandBuilder("^[a-z]+$").check_name, (InvalidCommand,)),
        "room",
    ),
    ("call uuid", refuses(CommandBuilder.check_uuid, (InvalidCommand,)), UUID),
    ("binding segment", refuses(parse_binding, (ValueError,)), f"conference.event.{HEX32}.*"),
    ("X-Request-ID", lambda text: request_id(text) == text, "req-1"),
    (
        "event timestamp",
        lambda text: event_time({"Event-Date-Timestamp": text}, default=-1.0) != -1.0,
        "1700000000000000",
    ),
]


@pytest.mark.parametrize(("name", "accepted", "sample"), VALIDATORS, ids=[v[0] for v in VALIDATORS])
@pytest.mark.parametrize("tail", ["\n", "\r\n", "\n\n"], ids=repr)
def test_every_validator_refuses_a_trailing_newline(name, accepted, sample, tail):
    assert accepted(sample), (name, sample)
    assert not accepted(sample + tail), (name, sample + tail)

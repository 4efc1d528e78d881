"""What a stored JSON value may hold: text every backend stores, numbers JSON can carry.

Python's ``json`` accepts two things confd cannot keep:

* strings that are not Unicode text: a lone UTF-16 surrogate (``"\\ud800"``) decodes to a
  ``str`` that cannot be encoded as UTF-8 (SQLite's driver and hashing raise, PostgreSQL
  refuses it), and NUL (``"\\u0000"``), which PostgreSQL's ``text`` cannot hold;
* numbers beyond a double (``1e400``), which become ``inf`` and are written back as ``null``
  or as the non-JSON ``Infinity``.

One walk finds them anywhere in a value, in object keys too, so no field is checked on its
own. The walk is iterative: a document may be nested deeper than the recursion limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

NUL = "\x00"
REASON_SURROGATE = "a lone UTF-16 surrogate (not Unicode text)"
REASON_NUL = "a NUL character (U+0000)"
REASON_NOT_FINITE = "a number beyond the range of a double"

Path = tuple[Any, ...]


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None when it can."""
    if NUL in text:
        return REASON_NUL
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # only surrogates fail: every other code point has UTF-8
        return REASON_SURROGATE
    return None


def value_problems(value: Any) -> Iterator[tuple[Path, str]]:
    """``(path, reason)`` for every string (key or value) and number in ``value`` that
    cannot be stored; a key's problem is reported at the key's own path."""
    stack: list[tuple[Path, Any]] = [((), value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            reason = text_problem(node)
            if reason is not None:
                yield path, reason
        elif isinstance(node, float):
            if not math.isfinite(node):
                yield path, REASON_NOT_FINITE
        elif isinstance(node, dict):
            for key, child in reversed(list(node.items())):
                reason = text_problem(key) if isinstance(key, str) else None
                if reason is not None:
                    yield path + (key,), reason
                stack.append((path + (key,), child))
        elif isinstance(node, list):
            stack.extend((path + (i,), child) for i, child in reversed(list(enumerate(node))))


def shown(text: str, limit: int = 200) -> str:
    """``text`` safe to echo in an error body or a log line: ASCII, at most ``limit``
    characters, a surrogate, NUL or newline written as its escape."""
    escaped = text[:limit].encode("unicode_escape").decode("ascii")
    return escaped + ("..." if len(text) > limit else "")

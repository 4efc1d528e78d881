"""Standard JSON only (RFC 8259), from clients: what a browser's ``JSON.parse`` would also take.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``-Infinity``, turns ``1e400`` into an
infinite float, and recurses once per nesting level (``[[[[...`` 30,000 deep raises
``RecursionError``, which is no ``ValueError``).  Whatever such a value reaches is later
written back out as non-standard JSON (``{"request_id": NaN}``) that no browser can parse.
``loads`` refuses all of it with ``JsonRefused`` (a ``ValueError``) and a message for the
client.  Pure; no I/O.
"""

from __future__ import annotations

import json
import math
from typing import Any

# Deeper values are refused: the standard library (deepcopy, json) recurses once per level.
MAX_DEPTH = 32


class JsonRefused(ValueError):
    """Not standard JSON, or nested deeper than allowed; ``str()`` says which."""


def _constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JsonRefused(f"the number {text[:40]} is out of range")
    return value


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a parsed JSON value, without recursion (stops counting past
    ``limit``)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        if level > limit:
            return level
        stack.extend((child, level + 1) for child in children)
    return deepest


def loads(text: str, max_depth: int = MAX_DEPTH) -> Any:
    """The value of ``text``, or ``JsonRefused``."""
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_finite)
    except JsonRefused:
        raise
    except RecursionError:
        raise JsonRefused("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int() past its digit limit
        raise JsonRefused(f"not valid JSON: {exc}") from None
    if depth(value, max_depth) > max_depth:
        raise JsonRefused(f"nested deeper than {max_depth}")
    return value

"""Reading a request: the JSON body and its ``data``, actions, paging, ``If-Match``.

Every function raises an ``ApiError`` for bad input, so views never build error bodies.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence, Tuple

from flask import g, request

from confd import strict_json
from confd.http import errors as e
from confd.store.schema import MSG_ENUM, error_path
from confd.store.values import shown, text_problem, value_problems

MAX_BODY_BYTES = 64 * 1024  # api.md: a body over 64 KiB is 413 request_too_large
DATA_KEY = "data"
ACTION_KEY = "action"
# Deeper bodies are refused before anything copies or validates them: the standard library
# (deepcopy, json) recurses once per level and would hit the interpreter's recursion limit.
MAX_JSON_DEPTH = strict_json.MAX_DEPTH

DEFAULT_PAGE_SIZE = 50  # crossbar's default page size
MAX_PAGE_SIZE = 1000
_PAGE_SIZE = re.compile(r"[1-9][0-9]{0,5}")
IF_MATCH_HEADER = "If-Match"
_WEAK_PREFIX = "W/"


def parse_json(raw: bytes) -> Any:
    """Strict JSON or ``InvalidJson``: UTF-8, no NaN/Infinity or numbers beyond a double,
    bounded depth, and every string (keys too) Unicode text without NUL -- a lone surrogate
    escape (``"\\ud800"``) is valid JSON syntax but not text, and no backend stores NUL.
    Checked here, once for every body, so no view or field can forget it."""
    if not raw.strip():
        raise e.InvalidJson({"message": "the body is empty; expected a JSON object"})
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise e.InvalidJson({"message": "the body is not UTF-8"}) from None
    try:
        value = strict_json.loads(text, MAX_JSON_DEPTH)  # the websocket's messages' rules too
    except strict_json.JsonRefused as exc:
        raise e.InvalidJson({"message": f"the body is not valid JSON: {exc}"}) from None
    problem = next(value_problems(value), None)
    if problem is not None:
        path, reason = problem
        where = shown(error_path(path)) or "the top level"
        raise e.InvalidJson({"message": f"the body holds {reason} at {where}"})
    return value


def read_body(limit: int) -> bytes:
    """The request body, at most ``limit`` bytes, else 413.

    Read in a loop rather than with ``request.get_data()``: for a chunked body (no
    Content-Length) Werkzeug's limited stream stops quietly at the limit, which would hand
    a truncated body to the JSON parser instead of refusing it.
    """
    cached = g.get("_confd_body")
    if cached is not None:
        return cached
    parts = []
    total = 0
    while True:
        part = request.stream.read(16384)
        if not part:
            break
        total += len(part)
        if total > limit:
            raise e.RequestTooLarge({"message": "body over %d bytes" % limit})
        parts.append(part)
    g._confd_body = b"".join(parts)
    return g._confd_body


def request_data() -> Any:
    """The ``data`` member of the request's JSON object body."""
    body = parse_json(read_body(MAX_BODY_BYTES))
    if not isinstance(body, dict):
        raise e.InvalidRequest({"message": "the body must be a JSON object"})
    if DATA_KEY not in body:
        raise e.InvalidRequest({"message": 'the body must carry its payload under "data"'})
    return body[DATA_KEY]


def invalid_action(allowed: Sequence[str]) -> e.InvalidAction:
    return e.InvalidAction({ACTION_KEY: {"enum": {"message": MSG_ENUM, "target": list(allowed)}}})


def request_action(allowed: Sequence[str]) -> str:
    """``data.action`` of the body, exactly one of ``allowed`` (case-sensitive)."""
    data = request_data()
    if not isinstance(data, dict):
        raise e.InvalidRequest({"message": '"data" must be an object with an "action"'})
    action = data.get(ACTION_KEY)
    if not isinstance(action, str) or action not in allowed:
        raise invalid_action(allowed)
    return action


def query_text(name: str) -> Optional[str]:
    """A query-string argument, or 400 ``invalid_request`` when it holds what no backend can
    compare (NUL: PostgreSQL refuses it in a query)."""
    value = request.args.get(name)
    reason = text_problem(value) if value is not None else None
    if reason is not None:
        raise e.InvalidRequest({"message": f"{name} holds {reason}"})
    return value


def paging() -> Tuple[Optional[str], int]:
    """``(start_key, page_size)`` from the query string."""
    start_key = query_text("start_key") or None
    text = request.args.get("page_size")
    if text is None:
        return start_key, DEFAULT_PAGE_SIZE
    if not _PAGE_SIZE.fullmatch(text) or int(text) > MAX_PAGE_SIZE:
        raise e.InvalidRequest(
            {"message": f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}"}
        )
    return start_key, int(text)


def if_match() -> Optional[str]:
    """The revision of ``If-Match``, bare or as a (weak or strong) HTTP entity tag."""
    value = request.headers.get(IF_MATCH_HEADER)
    if value is None:
        return None
    value = value.strip()
    if value.startswith(_WEAK_PREFIX):
        value = value[len(_WEAK_PREFIX) :]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


def etag(revision: str) -> str:
    """The ``ETag`` header for a revision: the revision as an HTTP entity tag (quoted)."""
    return f'"{revision}"'

"""How confd answers: the envelope (``envelope.py``) as JSON, sent as a Flask response, as a
WSGI response, or as the raw bytes of an HTTP response (errors found before any WSGI app runs).

One place for the request id too: the server gives every request one (``X-Request-ID`` echoed
when well formed, else generated) in the WSGI environ, and every envelope and access-log line
of that request carries it.
"""

from __future__ import annotations

import http
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import orjson
from flask import Response, g

import confd
from confd.http import envelope

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
JSON_TYPE = "application/json"

# WSGI environ keys the server sets for each request (the app and the websocket read them).
REQUEST_ID_KEY = "confd.request_id"
IDENTITY_KEY = "confd.identity"
# Set by whoever answers the request: the route pattern, for the access log.
ROUTE_KEY = "confd.route"
UNMATCHED_ROUTE = "unmatched"  # requests no rule matched (a bounded label and log word)

Headers = Iterable[Tuple[str, str]]


@dataclass(frozen=True)
class Identity:
    """The envelope's ``node`` and ``version``, for answers made outside a Flask request."""

    node: str
    version: str = confd.__version__


def request_id(header: Optional[str]) -> str:
    """The client's ``X-Request-ID`` when it is well formed, else a new one."""
    if header and REQUEST_ID_RE.fullmatch(header):
        return header
    return uuid.uuid4().hex


def environ_request_id(environ: Dict[str, Any]) -> str:
    """The request id the server gave this request (one is made when there is none yet)."""
    rid = environ.get(REQUEST_ID_KEY)
    if not rid:
        rid = environ[REQUEST_ID_KEY] = request_id(environ.get("HTTP_X_REQUEST_ID"))
    return rid


def encode(body: Dict[str, Any]) -> bytes:
    # orjson: a 1,000-participant conference is ~500 KB of JSON, which the standard encoder
    # takes ~5 ms to write on the event loop; orjson about a tenth of that.
    try:
        return orjson.dumps(body)
    except TypeError:  # an integer beyond 64 bits, which a stored document may hold
        return json.dumps(body).encode()


# --- inside a Flask request ---------------------------------------------------------------


def render(status: int, body: Dict[str, Any], headers: Optional[Dict[str, str]] = None) -> Response:
    resp = Response(encode(body), status=status, mimetype=JSON_TYPE)
    resp.headers[REQUEST_ID_HEADER] = body.get("request_id") or ""
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def ok(data: Any, status: int = 200, **kw: Any) -> Response:
    ctx = g.ctx
    headers = kw.pop("headers", None)
    body = envelope.success(
        data,
        request_id=g.request_id,
        node=ctx.node_name,
        version=ctx.version,
        auth_token=g.get("auth_token"),
        **kw,
    )
    return render(status, body, headers)


def error_response(
    status: int, message: str, data: Any, headers: Optional[Dict[str, str]] = None
) -> Response:
    ctx = g.ctx
    body = envelope.error(
        status,
        message,
        data,
        request_id=g.get("request_id") or uuid.uuid4().hex,
        node=ctx.node_name,
        version=ctx.version,
        auth_token=g.get("auth_token"),
    )
    return render(status, body, headers)


# --- outside Flask: the websocket endpoint and the HTTP server itself ----------------------


def status_line(status: int) -> str:
    """``"405 Method Not Allowed"``."""
    try:
        return "%d %s" % (status, http.HTTPStatus(status).phrase)
    except ValueError:
        return "%d Error" % status


def error_parts(
    status: int,
    message: str,
    data: Any,
    *,
    request_id: str,
    identity: Identity,
    headers: Headers = (),
) -> Tuple[str, List[Tuple[str, str]], bytes]:
    """An error envelope as (status line, headers, body)."""
    payload = encode(
        envelope.error(
            status,
            message,
            data,
            request_id=request_id,
            node=identity.node,
            version=identity.version,
        )
    )
    head = [
        ("Content-Type", JSON_TYPE),
        ("Content-Length", str(len(payload))),
        (REQUEST_ID_HEADER, request_id),
    ]
    return status_line(status), head + list(headers), payload


def wsgi_error(
    environ: Dict[str, Any],
    start_response: Callable,
    status: int,
    message: str,
    data: Any,
    headers: Headers = (),
) -> List[bytes]:
    """An error envelope as a WSGI response (identity and request id from the environ)."""
    line, head, payload = error_parts(
        status,
        message,
        data,
        request_id=environ_request_id(environ),
        identity=environ.get(IDENTITY_KEY) or Identity(""),
        headers=headers,
    )
    start_response(line, head)
    return [payload]


def raw_error(
    status: int,
    message: str,
    data: Any,
    *,
    request_id: str,
    identity: Identity,
    headers: Headers = (),
) -> bytes:
    """An error envelope as the bytes of a whole HTTP/1.1 response that closes the connection
    (for requests the server refuses before any WSGI app sees them)."""
    line, head, payload = error_parts(
        status, message, data, request_id=request_id, identity=identity, headers=headers
    )
    lines = ["HTTP/1.1 " + line] + ["%s: %s" % kv for kv in head] + ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + payload

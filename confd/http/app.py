"""Flask application factory: envelope, request ids, body limits, and the one error handler."""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import orjson
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from confd.http import envelope
from confd.http import errors as e
from confd.http.body import MAX_BODY_BYTES

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# app.extensions key of the conference document defaults (what an ad-hoc conference shows).
DEFAULTS_EXTENSION = "confd.conference_defaults"
UNMATCHED_ROUTE = "unmatched"  # metrics label of requests no rule matched (bounded cardinality)


@dataclass
class ApiContext:
    """What the HTTP layer may use; handed in by the daemon (no reach-around to ESL)."""

    version: str
    node_name: str
    health: Callable[[], List[Dict[str, Any]]]
    health_extra: Callable[[], Dict[str, Any]] = dict
    observe_request: Callable[[str, str, int], None] = lambda route, method, status: None
    metrics_text: Optional[Callable[[], tuple]] = None
    store: Any = None  # confd.store.Store
    control: Any = None  # confd.conferences.control.ConferenceControl
    builder: Any = None  # confd.conferences.commands.CommandBuilder
    token_ttl: int = 3600
    channel_var_prefix: str = "ecallmgr_"


def render(status: int, body: Dict[str, Any], headers: Optional[Dict[str, str]] = None) -> Response:
    # orjson: a 1,000-participant conference is ~500 KB of JSON, which the standard encoder
    # takes ~5 ms to write on the event loop; orjson about a tenth of that.
    try:
        payload = orjson.dumps(body)
    except TypeError:  # an integer beyond 64 bits, which a stored document may hold
        payload = json.dumps(body).encode()
    resp = Response(payload, status=status, mimetype="application/json")
    resp.headers[REQUEST_ID_HEADER] = body.get("request_id") or ""
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def ok(data: Any, status: int = 200, **kw: Any) -> Response:
    ctx: ApiContext = g.ctx
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


def error_response(status: int, message: str, data: Any) -> Response:
    ctx: ApiContext = g.ctx
    body = envelope.error(
        status,
        message,
        data,
        request_id=g.get("request_id") or uuid.uuid4().hex,
        node=ctx.node_name,
        version=ctx.version,
        auth_token=g.get("auth_token"),
    )
    return render(status, body)


def create_app(ctx: ApiContext, blueprints: Optional[List[Any]] = None) -> Flask:
    """The API: health and metrics, api_auth, conferences, participants, the OpenAPI document,
    plus any extra ``blueprints`` (e.g. the websocket endpoint)."""
    from confd.http import auth, conferences, health, openapi, participants
    from confd.store.schema import ConferenceSchema

    app = Flask("confd")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    # "/v2//health" must be a 404 envelope, not Werkzeug's HTML redirect (which a client
    # following it would answer by sending its action again).
    app.url_map.merge_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[DEFAULTS_EXTENSION] = ConferenceSchema().with_defaults({})

    @app.before_request
    def _start() -> None:
        g.ctx = ctx
        rid = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = rid if REQUEST_ID_RE.fullmatch(rid) else uuid.uuid4().hex
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            raise e.RequestTooLarge({"message": "body over %d bytes" % MAX_BODY_BYTES})

    app.before_request(auth.authorize)

    @app.after_request
    def _observe(resp: Response) -> Response:
        # The rule pattern, never the raw path: label values stay a small, fixed set.
        rule = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
        ctx.observe_request(rule, request.method, resp.status_code)
        if REQUEST_ID_HEADER not in resp.headers and g.get("request_id"):
            resp.headers[REQUEST_ID_HEADER] = g.request_id
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        if code == 405:
            return error_response(405, "invalid_method", {"message": "method not allowed"})
        if code == 404:
            return error_response(404, "not_found", {"message": "no such path"})
        if code == 413:
            return error_response(413, "request_too_large", {"message": "body too large"})
        return error_response(code, exc.name.lower().replace(" ", "_"), {"message": exc.name})

    @app.errorhandler(Exception)
    def _error(exc: Exception) -> Response:
        """The one place an error becomes an envelope: ApiErrors as they are, store and
        conference-control errors through ``errors.translate``, anything else a logged 500."""
        api_error = e.translate(exc)
        if api_error is not None:
            return error_response(api_error.status, api_error.message, api_error.data)
        rid = g.get("request_id") or uuid.uuid4().hex
        g.request_id = rid
        log.exception("request %s: unexpected error", rid)
        return error_response(500, "internal_error", {"message": "internal error, see log"})

    app.register_blueprint(health.blueprint)
    app.register_blueprint(auth.blueprint())
    app.register_blueprint(conferences.blueprint())
    app.register_blueprint(participants.blueprint())
    app.register_blueprint(openapi.blueprint(ctx.version))
    for bp in blueprints or ():
        app.register_blueprint(bp)
    return app

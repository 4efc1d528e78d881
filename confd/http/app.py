"""Flask application factory: request ids, body limits, CORS, and the one error handler."""

from __future__ import annotations

import logging
from typing import Any, List, Optional, Sequence

from flask import Flask, Response, g, request
from flask_cors import CORS
from werkzeug.exceptions import HTTPException

from confd.http import auth, conferences, health, openapi, participants
from confd.http import errors as e
from confd.http import responses as r
from confd.http.body import MAX_BODY_BYTES
from confd.http.context import DEFAULTS_EXTENSION, ApiContext
from confd.store.schema import ConferenceSchema

log = logging.getLogger(__name__)

__all__ = ["ApiContext", "create_app"]

OPTIONS = "OPTIONS"
CORS_PATHS = r"/v2/*"  # the API; /metrics is for Prometheus, never a browser page
# What a browser page may send and read (api.md's headers).
CORS_ALLOW_HEADERS = ["Content-Type", "X-Auth-Token", "X-Request-ID", "If-Match"]
CORS_EXPOSE_HEADERS = ["X-Request-ID", "ETag"]
CORS_METHODS = ["GET", "PUT", "POST", "PATCH", "DELETE"]
CORS_MAX_AGE = 600  # seconds a browser may reuse a preflight's answer


def create_app(
    ctx: ApiContext, blueprints: Optional[List[Any]] = None, cors_origins: Sequence[str] = ()
) -> Flask:
    """The API: health and metrics, api_auth, conferences, participants, the OpenAPI document,
    plus any extra ``blueprints``. ``cors_origins``: the browser origins allowed to call it
    (``http.cors_origins``; none = no CORS headers at all)."""
    app = Flask("confd")
    # Werkzeug refuses a read made at its limit, so its limit is one byte more than the
    # contract's (api.md: 413 only over 64 KiB); _start() checks a declared length exactly.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES + 1
    # "/v2//health" must be a 404 envelope, not Werkzeug's HTML redirect (which a client
    # following it would answer by sending its action again).
    app.url_map.merge_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[DEFAULTS_EXTENSION] = ConferenceSchema().with_defaults({})

    @app.before_request
    def _start() -> None:
        g.ctx = ctx
        # The server gave the request its id (the access log line carries the same one).
        g.request_id = r.environ_request_id(request.environ)
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            raise e.RequestTooLarge({"message": "body over %d bytes" % MAX_BODY_BYTES})

    @app.before_request
    def _options() -> Optional[Response]:
        """``OPTIONS`` on a path of the API says which methods it takes, without a token: a
        browser's CORS preflight never carries one (the CORS headers are added after)."""
        if request.method == OPTIONS and request.routing_exception is None:
            return app.make_default_options_response()
        return None

    app.before_request(auth.authorize)

    @app.after_request
    def _observe(resp: Response) -> Response:
        # The rule pattern, never the raw path: label values stay a small, fixed set.
        rule = request.url_rule.rule if request.url_rule is not None else r.UNMATCHED_ROUTE
        request.environ[r.ROUTE_KEY] = rule
        ctx.observe_request(rule, request.method, resp.status_code)
        if r.REQUEST_ID_HEADER not in resp.headers and g.get("request_id"):
            resp.headers[r.REQUEST_ID_HEADER] = g.request_id
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        if code == 405:
            allowed = getattr(exc, "valid_methods", None) or ()
            return r.error_response(
                405,
                "invalid_method",
                {"message": "method not allowed"},
                {"Allow": ", ".join(sorted(allowed))} if allowed else None,
            )
        if code == 404:
            return r.error_response(404, "not_found", {"message": "no such path"})
        if code == 413:
            return r.error_response(413, "request_too_large", {"message": "body too large"})
        return r.error_response(code, exc.name.lower().replace(" ", "_"), {"message": exc.name})

    @app.errorhandler(Exception)
    def _error(exc: Exception) -> Response:
        """The one place an error becomes an envelope: ApiErrors as they are, store and
        conference-control errors through ``errors.translate``, anything else a logged 500."""
        api_error = e.translate(exc)
        if api_error is not None:
            return r.error_response(api_error.status, api_error.message, api_error.data)
        rid = g.get("request_id") or r.environ_request_id(request.environ)
        g.request_id = rid
        log.exception("request %s: unexpected error", rid)
        return r.error_response(500, "internal_error", {"message": "internal error, see log"})

    app.register_blueprint(health.blueprint)
    app.register_blueprint(auth.blueprint())
    app.register_blueprint(conferences.blueprint())
    app.register_blueprint(participants.blueprint())
    app.register_blueprint(openapi.blueprint(ctx.version))
    for bp in blueprints or ():
        app.register_blueprint(bp)
    if cors_origins:
        # flask-cors: exact, case-insensitive origin matching, Vary, preflight answers; and
        # the error envelopes get the headers too (it wraps Flask's exception handling).
        CORS(
            app,
            resources={CORS_PATHS: {}},
            origins=list(cors_origins),
            methods=CORS_METHODS,
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
            max_age=CORS_MAX_AGE,
            always_send=False,  # no Origin header: not a browser, no CORS headers
        )
    return app

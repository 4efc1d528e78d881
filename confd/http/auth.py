"""``PUT /v2/api_auth`` and the token check every other account path goes through.

operations.md: a token works for its own account's paths; an admin account's token works for
every account. Missing, unknown or expired token: 401. Valid token, other account: 403. For an
admin, an account id that does not exist is 404 ``bad_identifier``; a non-admin gets 403 for
any account but its own, so it cannot probe which accounts exist.  The check itself is
``AccountService.scope``, which websocket subscriptions use too.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, TypeVar

from flask import Blueprint, Response, current_app, g, request

from confd.http import body
from confd.http import errors as e
from confd.http.responses import ok
from confd.store import errors as store_errors
from confd.store.schema import MSG_REQUIRED, MSG_TYPE

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Auth-Token"
API_KEY = "api_key"
ACCOUNT_ID_ARG = "account_id"
MSG_OTHER_ACCOUNT = "this token is not valid for that account"

# Views marked with ``public`` need no token (operations.md: health, metrics, the token exchange
# itself; and the API description). Everything else, extra blueprints included, needs one.
PUBLIC_ATTR = "confd_public"

View = TypeVar("View", bound=Callable[..., Any])


def public(view: View) -> View:
    """Mark a view as reachable without ``X-Auth-Token``."""
    setattr(view, PUBLIC_ATTR, True)
    return view


def blueprint() -> Blueprint:
    bp = Blueprint("auth", __name__)
    bp.add_url_rule("/v2/api_auth", "api_auth", api_auth, methods=["PUT"])
    return bp


@public
def api_auth() -> Response:
    ctx = g.ctx
    data = body.request_data()
    if not isinstance(data, dict):
        raise e.ValidationError(
            {"data": {"type": {"message": MSG_TYPE.format(target="object"), "target": "object"}}}
        )
    key = data.get(API_KEY)
    if key is None:
        raise e.ValidationError({API_KEY: {"required": {"message": MSG_REQUIRED}}})
    if not isinstance(key, str):
        raise e.ValidationError(
            {API_KEY: {"type": {"message": MSG_TYPE.format(target="string"), "target": "string"}}}
        )
    account = ctx.store.accounts.authenticate(key)  # InvalidCredentials -> 401
    token = ctx.store.accounts.issue_token(account["id"], ctx.token_ttl)
    g.auth_token = token
    log.info("account %s: token issued (ttl %ds)", account["id"], ctx.token_ttl)
    return ok(
        {
            "account_id": account["id"],
            "account_name": account["name"],
            "admin": account["admin"],
            "expires_in": ctx.token_ttl,
        },
        201,
    )


def authorize() -> None:
    """``before_request``: check the token of every non-public endpoint and, on account paths,
    that it may act for that account; leaves ``g.account`` (the path's account)."""
    if request.routing_exception is not None:
        return  # unknown path or wrong method: 404/405 need no token
    if getattr(current_app.view_functions.get(request.endpoint), PUBLIC_ATTR, False):
        return
    ctx = g.ctx
    token = request.headers.get(TOKEN_HEADER)
    account = ctx.store.accounts.check_token(token)  # InvalidCredentials -> 401
    g.auth_token = token
    g.token_account = account
    path_id = (request.view_args or {}).get(ACCOUNT_ID_ARG)
    if path_id is None:
        return
    # The check websocket subscriptions make too (the token's second check is a cache hit):
    # 403 for another account, 404 bad_identifier for an admin and an unknown one.
    try:
        _, g.account = ctx.store.accounts.scope(token, path_id)
    except store_errors.Forbidden:
        raise e.Forbidden({"message": MSG_OTHER_ACCOUNT}) from None

"""Accounts and tokens through HTTP (operations.md "Accounts and tokens", api.md envelope)."""

from __future__ import annotations

import re

import pytest

from confd_tests.http.client import ApiClient

HEX64 = re.compile(r"[0-9a-f]{64}")
ENVELOPE_KEYS = {"status", "data", "request_id", "auth_token", "node", "version", "timestamp"}
ERROR_KEYS = ENVELOPE_KEYS | {"error", "message"}


def assert_error(reply, status, message):
    assert reply.status == status, reply
    assert set(reply.body) >= ERROR_KEYS, reply.body
    assert reply.body["status"] == "error"
    assert reply.body["error"] == str(status)
    assert reply.body["message"] == message
    return reply.body["data"]


def test_api_auth_gives_a_token_in_the_envelope(stored):
    account, key = stored.daemon.store.accounts.create_account("acme")
    reply = stored.anon.put("/v2/api_auth", {"api_key": key}, token=None)
    assert reply.status == 201
    assert set(reply.body) >= ENVELOPE_KEYS
    assert reply.body["status"] == "success"
    assert HEX64.fullmatch(reply.body["auth_token"])
    assert reply.data["account_id"] == account["id"]
    assert reply.data["account_name"] == "acme" and reply.data["admin"] is False
    assert reply.data["expires_in"] == 3600
    assert reply.body["node"] == "confd-test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", reply.body["timestamp"])
    # The token works, and is echoed in every envelope it authorises.
    api = ApiClient(stored.daemon.http_port, reply.body["auth_token"])
    listed = api.get(f"/v2/accounts/{account['id']}/conferences")
    assert listed.status == 200 and listed.body["auth_token"] == reply.body["auth_token"]


def test_api_auth_errors(stored):
    stored.daemon.store.accounts.create_account("acme")
    data = assert_error(
        stored.anon.put("/v2/api_auth", {"api_key": "0" * 64}, token=None),
        401,
        "invalid_credentials",
    )
    assert data == {"message": "invalid credentials"}
    assert_error(
        stored.anon.put("/v2/api_auth", {"api_key": ""}, token=None), 401, "invalid_credentials"
    )
    data = assert_error(stored.anon.put("/v2/api_auth", {}, token=None), 400, "validation error")
    assert "required" in data["api_key"]
    data = assert_error(
        stored.anon.put("/v2/api_auth", {"api_key": 5}, token=None), 400, "validation error"
    )
    assert "type" in data["api_key"]
    assert_error(stored.anon.put("/v2/api_auth", raw=b"{nope", token=None), 400, "invalid_json")
    assert_error(
        stored.anon.put("/v2/api_auth", body={"api_key": "x"}, token=None), 400, "invalid_request"
    )
    # A wrong method on a public path is a 405 envelope, not a token error.
    assert_error(stored.anon.get("/v2/api_auth", token=None), 405, "invalid_method")


@pytest.mark.parametrize(
    "token", [None, "", "garbage", "0" * 64, "ab" * 32 + "\u00e9".encode().hex()]
)
def test_missing_or_unknown_token_is_401(stored, token):
    acme = stored.account()
    reply = acme.api.get(acme.path("/conferences"), token=token)
    data = assert_error(reply, 401, "invalid_credentials")
    assert data == {"message": "invalid credentials"}
    assert reply.body["auth_token"] is None


def test_every_account_path_needs_a_token(stored):
    acme = stored.account()
    conf = stored.conference(acme)
    paths = [
        ("GET", "/conferences"),
        ("PUT", "/conferences"),
        ("GET", f"/conferences/{conf}"),
        ("POST", f"/conferences/{conf}"),
        ("PATCH", f"/conferences/{conf}"),
        ("DELETE", f"/conferences/{conf}"),
        ("PUT", f"/conferences/{conf}"),
        ("GET", f"/conferences/{conf}/participants"),
        ("PUT", f"/conferences/{conf}/participants"),
        ("GET", f"/conferences/{conf}/participants/1"),
        ("PUT", f"/conferences/{conf}/participants/1"),
    ]
    for method, rest in paths:
        reply = acme.api.request(method, acme.path(rest), {"action": "lock"}, token=None)
        assert_error(reply, 401, "invalid_credentials")
    assert stored.control_sent() == []
    assert acme.api.get(acme.path(f"/conferences/{conf}")).status == 200  # still there


def test_public_endpoints_need_no_token(stored):
    assert stored.anon.get("/v2/health", token=None).status == 200
    assert stored.anon.get("/metrics", token=None).status == 200
    assert stored.anon.get("/v2/openapi.json", token=None).status == 200


def test_expired_token_is_401(make_harness, database_url):
    h = make_harness(database_url, token_ttl=60)
    acme = h.account()
    assert acme.api.get(acme.path("/conferences")).status == 200
    h.clock.advance(59)
    assert acme.api.get(acme.path("/conferences")).status == 200
    h.clock.advance(2)
    assert_error(acme.api.get(acme.path("/conferences")), 401, "invalid_credentials")
    # A new token from the same key works again.
    fresh = h.anon.put("/v2/api_auth", {"api_key": acme.api_key}, token=None)
    assert fresh.status == 201 and fresh.data["expires_in"] == 60
    assert acme.api.get(acme.path("/conferences"), token=fresh.body["auth_token"]).status == 200


def test_other_accounts_token_is_403(stored):
    acme, other = stored.account("acme"), stored.account("other")
    conf = stored.conference(acme)
    data = assert_error(other.api.get(acme.path("/conferences")), 403, "forbidden")
    assert data["message"]
    assert_error(other.api.get(acme.path(f"/conferences/{conf}")), 403, "forbidden")
    assert_error(other.api.delete(acme.path(f"/conferences/{conf}")), 403, "forbidden")
    assert_error(
        other.api.put(acme.path(f"/conferences/{conf}"), {"action": "lock"}), 403, "forbidden"
    )
    # A non-admin cannot tell unknown accounts from others' accounts.
    assert_error(other.api.get("/v2/accounts/" + "f" * 32 + "/conferences"), 403, "forbidden")
    assert_error(other.api.get("/v2/accounts/nothex/conferences"), 403, "forbidden")
    assert acme.api.get(acme.path(f"/conferences/{conf}")).status == 200


def test_admin_token_works_for_every_account(stored):
    acme = stored.account("acme")
    root = stored.account("root", admin=True)
    conf = stored.conference(acme, name="board")
    listed = root.api.get(acme.path("/conferences"))
    assert listed.status == 200 and [r["id"] for r in listed.data] == [conf]
    assert root.api.get(acme.path(f"/conferences/{conf}")).data["name"] == "board"
    created = root.api.put(acme.path("/conferences"), {"name": "by-admin"})
    assert created.status == 201
    assert acme.api.get(acme.path(f"/conferences/{created.data['id']}")).status == 200
    # Unknown account ids are 404 bad_identifier for an admin.
    missing = "e" * 32
    data = assert_error(root.api.get(f"/v2/accounts/{missing}/conferences"), 404, "bad_identifier")
    assert data == {"cause": missing, "message": "bad identifier"}
    data = assert_error(root.api.get("/v2/accounts/NOTHEX/conferences"), 404, "bad_identifier")
    assert data["cause"] == "NOTHEX"
    # ...and the non-admin account cannot use the admin's paths.
    assert_error(acme.api.get(root.path("/conferences")), 403, "forbidden")


def test_token_survives_a_daemon_restart(stored):
    acme = stored.account()
    conf = stored.conference(acme, name="persist")
    stored.restart_daemon()
    api = ApiClient(stored.daemon.http_port, acme.token)
    reply = api.get(acme.path(f"/conferences/{conf}"))
    assert reply.status == 200 and reply.data["name"] == "persist"


def test_rotated_key_and_its_tokens_stop_working(stored):
    acme = stored.account()
    new_key = stored.daemon.store.accounts.rotate_key(acme.id)
    assert_error(acme.api.get(acme.path("/conferences")), 401, "invalid_credentials")
    assert_error(
        stored.anon.put("/v2/api_auth", {"api_key": acme.api_key}, token=None),
        401,
        "invalid_credentials",
    )
    assert stored.anon.put("/v2/api_auth", {"api_key": new_key}, token=None).status == 201

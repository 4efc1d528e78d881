"""Robustness at the edge: body limits, bad bodies, unknown paths and methods, unexpected
errors, request ids, the database going away, metrics labels."""

from __future__ import annotations

import http.client
import json
import re

from gevent import socket as gsocket

from confd.store import DatabaseUnavailable
from confd_tests.http.test_auth import ERROR_KEYS, assert_error

LIMIT = 64 * 1024


def test_body_over_64_kib_is_413_and_nothing_stored(harness):
    acme = harness.account()
    big = {"name": "big", "ui_metadata": {"blob": "x" * LIMIT}}
    assert_error(acme.api.put(acme.path("/conferences"), big), 413, "request_too_large")
    # Just under the limit is fine.
    fits = {"name": "fits", "ui_metadata": {"blob": "x" * (LIMIT - 200)}}
    assert acme.api.put(acme.path("/conferences"), fits).status == 201
    assert [r["name"] for r in acme.api.get(acme.path("/conferences")).data] == ["fits"]


def test_chunked_bodies_are_held_to_the_same_limit(harness):
    acme = harness.account()

    class Conn(http.client.HTTPConnection):
        def connect(self):
            self.sock = gsocket.create_connection((self.host, self.port), 10)

    def put_chunked(n_chunks):
        conn = Conn("127.0.0.1", harness.daemon.http_port)
        chunks = iter(
            [b'{"data": {"name": "c", "ui_metadata": {"x": "']
            + [b"x" * 8192] * n_chunks
            + [b'"}}}']
        )
        conn.request(
            "PUT",
            acme.path("/conferences"),
            body=chunks,
            encode_chunked=True,
            headers={"X-Auth-Token": acme.token, "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        return resp.status, body

    status, body = put_chunked(10)
    assert status == 413 and body["message"] == "request_too_large", body
    assert acme.api.get(acme.path("/conferences")).data == []
    status, body = put_chunked(4)
    assert status == 201, body
    assert len(body["data"]["ui_metadata"]["x"]) == 4 * 8192


def test_bad_bodies(harness):
    acme = harness.account()
    path = acme.path("/conferences")
    cases = [
        (b"", "invalid_json"),
        (b"   ", "invalid_json"),
        (b"{not json", "invalid_json"),
        (b'{"data": NaN}', "invalid_json"),
        (b'{"data": {"name": "\xff"}}', "invalid_json"),
        (b"[" * 100 + b"]" * 100, "invalid_json"),
        (b'{"data": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}", "invalid_json"),
        (b"[]", "invalid_request"),
        (b'"data"', "invalid_request"),
        (b"null", "invalid_request"),
        (b'{"name": "x"}', "invalid_request"),
    ]
    for raw, message in cases:
        data = assert_error(acme.api.put(path, raw=raw), 400, message)
        assert isinstance(data.get("message"), str)
    assert acme.api.get(path).data == []


def test_unknown_paths_and_wrong_methods_are_envelopes(harness):
    acme = harness.account()
    for path in (
        "/",
        "/v2",
        "/v2/nope",
        acme.path(""),
        acme.path("/conferences/x/y/z/w"),
        acme.path("/conferences/"),
    ):
        reply = acme.api.get(path)
        assert reply.status == 404 and set(reply.body) >= ERROR_KEYS, (path, reply)
    for method, path in (
        ("DELETE", acme.path("/conferences")),
        ("PATCH", acme.path("/conferences")),
        ("POST", "/v2/health"),
        ("DELETE", acme.path("/conferences/" + "a" * 32 + "/participants")),
        ("POST", acme.path("/conferences/" + "a" * 32 + "/participants/1")),
    ):
        assert_error(acme.api.request(method, path, {}), 405, "invalid_method")


def test_unexpected_error_is_a_500_envelope_with_a_logged_request_id(harness, caplog, monkeypatch):
    acme = harness.account()

    def boom(*a, **kw):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(harness.daemon.store.conferences, "list", boom)
    reply = acme.api.get(acme.path("/conferences"), headers={"X-Request-ID": "req-500"})
    data = assert_error(reply, 500, "internal_error")
    assert reply.body["request_id"] == "req-500" and reply.headers["x-request-id"] == "req-500"
    assert b"secret" not in reply.raw and b"Traceback" not in reply.raw
    assert data == {"message": "internal error, see log"}
    logged = [r for r in caplog.records if "req-500" in r.getMessage()]
    assert logged and logged[0].exc_info is not None


def test_database_unavailable_is_503(harness, monkeypatch):
    acme = harness.account()

    def down(*a, **kw):
        raise DatabaseUnavailable("connection refused")

    monkeypatch.setattr(harness.daemon.store.conferences, "create", down)
    data = assert_error(acme.api.put(acme.path("/conferences"), {}), 503, "datastore_unavailable")
    assert "refused" not in json.dumps(data)  # no driver text for the client
    monkeypatch.setattr(harness.daemon.store.accounts, "check_token", down)
    assert_error(acme.api.get(acme.path("/conferences")), 503, "datastore_unavailable")


def test_request_id_is_echoed_or_generated(harness):
    acme = harness.account()
    reply = acme.api.get(acme.path("/conferences"), headers={"X-Request-ID": "abc-123.x:y"})
    assert reply.body["request_id"] == "abc-123.x:y" == reply.headers["x-request-id"]
    reply = acme.api.get(acme.path("/conferences"), headers={"X-Request-ID": "bad id\u00e9"})
    assert re.fullmatch(r"[0-9a-f]{32}", reply.body["request_id"])
    assert reply.headers["x-request-id"] == reply.body["request_id"]
    reply = acme.api.get("/v2/nope", headers={"X-Request-ID": "r404"})
    assert reply.body["request_id"] == "r404"
    metrics = acme.api.get("/metrics", headers={"X-Request-ID": "m1"})
    assert metrics.headers["x-request-id"] == "m1"


def test_metrics_label_routes_by_rule_pattern(harness):
    acme = harness.account()
    conf = harness.conference(acme)
    acme.api.get(acme.path(f"/conferences/{conf}"))
    acme.api.get(acme.path(f"/conferences/{conf}/participants/abc"))
    acme.api.get("/v2/no/such/" + conf)
    text = harness.anon.get("/metrics", token=None).raw.decode()
    assert (
        'confd_http_requests_total{method="GET",'
        'route="/v2/accounts/<account_id>/conferences/<conference_id>",status="200"} 1.0' in text
    )
    assert (
        'route="/v2/accounts/<account_id>/conferences/<conference_id>/participants/'
        '<participant_id>",status="400"' in text
    )
    assert 'route="unmatched",status="404"' in text
    assert acme.id not in text and conf not in text

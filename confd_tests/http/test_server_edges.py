"""What the HTTP server refuses before the API sees it, and how: framing that RFC 9112 forbids,
request lines and headers too long, websocket requests that are not upgrades -- every refusal
the API's JSON error envelope (api.md); 405 answers say which methods are allowed; made-up
methods do not crowd real ones out of the metrics."""

from __future__ import annotations

import pytest

from confd.metrics import MAX_ACTION_LABELS
from confd_tests.http.serverutil import exchange

HEALTH = b"GET /v2/health HTTP/1.1\r\nHost: x\r\n"


def put_auth(*headers: bytes, body: bytes = b"{}") -> bytes:
    return (
        b"PUT /v2/api_auth HTTP/1.1\r\nHost: x\r\nX-Request-ID: framing-1\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + b"\r\n"
        + body
    )


@pytest.mark.parametrize(
    "raw, status, message",
    [
        (put_auth(b"Content-Length: 2", b"Content-Length: 3"), 400, "bad_request"),
        (put_auth(b"Content-Length: 2, 3"), 400, "bad_request"),
        (put_auth(b"Content-Length: +2"), 400, "bad_request"),
        (put_auth(b"Content-Length: 0_2"), 400, "bad_request"),
        (put_auth(b"Transfer-Encoding: chunked", b"Content-Length: 2"), 400, "bad_request"),
        (put_auth(b"Transfer-Encoding: gzip, chunked"), 501, "not_implemented"),
        (b"NOT A REQUEST LINE AT ALL\r\n\r\n", 400, "bad_request"),
        (b"GET /v2/health HTTP/7.0\r\n\r\n", 400, "bad_request"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414, "request_uri_too_large"),
        (HEALTH + b"X-Big: " + b"y" * 40_000 + b"\r\n\r\n", 431, "request_header_fields_too_large"),
    ],
    ids=[
        "two-content-lengths",
        "content-length-list",
        "content-length-sign",
        "content-length-underscore",
        "te-and-cl",
        "unknown-coding",
        "bad-request-line",
        "bad-version",
        "uri-too-long",
        "headers-too-large",
    ],
)
def test_the_server_refuses_with_an_envelope(harness, raw, status, message):
    reply = exchange(harness.daemon.http_port, raw)
    data = reply.envelope(status, message)
    assert isinstance(data["message"], str)
    assert reply.body["node"] == "confd-test"
    if b"X-Request-ID: framing-1" in raw and status != 431:
        assert reply.body["request_id"] == "framing-1"  # the headers were read: echoed
    assert harness.anon.get("/v2/health", token=None).status == 200


def test_the_same_content_length_twice_is_one(harness):
    reply = exchange(
        harness.daemon.http_port,
        HEALTH + b"Content-Length: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    assert reply.status == 200, reply


def test_websocket_refusals_are_envelopes(harness):
    port = harness.daemon.http_port
    upgrade = (
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5a2==\r\n"
    )
    wrong_method = exchange(port, b"POST /v2/websocket HTTP/1.1\r\nConnection: close\r\n\r\n")
    wrong_method.envelope(405, "invalid_method")
    assert wrong_method.headers["allow"] == "GET"
    plain = exchange(port, b"GET /v2/websocket HTTP/1.1\r\nConnection: close\r\n\r\n")
    plain.envelope(400, "websocket_upgrade_required")
    old = exchange(
        port,
        b"GET /v2/websocket HTTP/1.1\r\n" + upgrade + b"Sec-WebSocket-Version: 8\r\n\r\n",
    )
    old.envelope(426, "unsupported_websocket_version")
    assert old.headers["sec-websocket-version"] == "13"


def test_405_answers_say_which_methods_are_allowed(harness):
    acme = harness.account()
    reply = acme.api.request("DELETE", acme.path("/conferences"))
    assert reply.status == 405, reply
    assert {"GET", "PUT"} <= {m.strip() for m in reply.headers["allow"].split(",")}
    reply = acme.api.request("POST", "/v2/health")
    assert reply.status == 405 and "GET" in reply.headers["allow"], reply


def test_made_up_methods_take_no_metrics_labels(harness):
    port = harness.daemon.http_port
    for i in range(MAX_ACTION_LABELS + 20):
        made_up = b"BREW%d /v2/health HTTP/1.1\r\nConnection: close\r\n\r\n" % i
        assert exchange(port, made_up).status == 405
    assert harness.anon.request("POST", "/v2/health", token=None).status == 405
    text = harness.anon.get("/metrics", token=None).raw.decode()
    # A 405 matched no rule (of that method): its route label is "unmatched".
    assert 'confd_http_requests_total{method="POST",route="unmatched",status="405"} 1.0' in text
    assert "BREW" not in text
    assert (
        'confd_http_requests_total{method="other",route="unmatched",status="405"} %d.0'
        % (MAX_ACTION_LABELS + 20)
        in text
    )

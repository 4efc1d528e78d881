"""Browser pages on other origins (``http.cors_origins``) and the access log
(``http.access_log``): the request id of an error envelope is found in the log."""

from __future__ import annotations

import logging
import re

import pytest

from confd.config import ConfigError, config_from_dict
from confd_tests.http.client import ApiClient
from confd_tests.http.serverutil import KeepAlive, exchange

PAGE = "https://dashboard.example.com"
OTHER = "https://evil.example.net"
ACCOUNT_PATH = "/v2/accounts/%s/conferences" % ("a" * 32)


def preflight(port: int, origin: str, method: str = "PUT"):
    conn = KeepAlive(port)
    try:
        return conn.request(
            "OPTIONS",
            ACCOUNT_PATH,
            {
                "Origin": origin,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "x-auth-token, content-type",
            },
        )
    finally:
        conn.close()


def test_a_preflight_from_an_allowed_origin_needs_no_token(live):
    api = live(cors_origins=[PAGE])
    status, headers, _ = preflight(api.port, PAGE)
    assert status == 200
    assert headers["access-control-allow-origin"] == PAGE
    assert "PUT" in headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert {"x-auth-token", "content-type"} <= allowed
    assert int(headers["access-control-max-age"]) > 0
    assert "PUT" in headers["allow"]


def test_requests_from_an_allowed_origin_get_the_cors_headers_errors_too(live):
    api = live(cors_origins=[PAGE, "https://other.example.org"])
    reply = ApiClient(api.port).get(ACCOUNT_PATH, token="nope", headers={"Origin": PAGE})
    assert reply.status == 401  # the token is still required for the request itself
    assert reply.headers["access-control-allow-origin"] == PAGE
    exposed = {h.strip().lower() for h in reply.headers["access-control-expose-headers"].split(",")}
    assert "x-request-id" in exposed
    assert "origin" in reply.headers.get("vary", "").lower()
    ok = ApiClient(api.port).get("/v2/health", token=None, headers={"Origin": PAGE})
    assert ok.status == 200 and ok.headers["access-control-allow-origin"] == PAGE


def test_other_origins_and_the_default_get_no_cors_headers(live):
    api = live(cors_origins=[PAGE])
    status, headers, _ = preflight(api.port, OTHER)
    assert not [h for h in headers if h.startswith("access-control-")], headers
    reply = ApiClient(api.port).get("/v2/health", token=None, headers={"Origin": OTHER})
    assert not [h for h in reply.headers if h.startswith("access-control-")], reply.headers
    plain = live()  # http.cors_origins not set: no CORS at all
    status, headers, _ = preflight(plain.port, PAGE)
    assert not [h for h in headers if h.startswith("access-control-")], headers


def test_cors_origins_are_checked_at_start():
    for bad in ("dashboard.example.com", "https://dashboard.example.com/", "https://a.com/x"):
        with pytest.raises(ConfigError) as info:
            config_from_dict({"http": {"cors_origins": [bad]}})
        assert info.value.key == "http.cors_origins[0]"
    cfg = config_from_dict({"http": {"cors_origins": [PAGE, "http://[::1]:8080", "*"]}})
    assert cfg.http.cors_origins == (PAGE, "http://[::1]:8080", "*")


ACCESS_LINE = re.compile(r"request (\S+) (\S+) (\S+) (\d{3}) ([0-9.]+)ms")


def access_lines(caplog):
    return [
        ACCESS_LINE.fullmatch(r.getMessage())
        for r in caplog.records
        if r.name == "confd.access" and r.levelno == logging.INFO
    ]


def test_the_access_log_traces_an_error_envelope(live, caplog):
    caplog.set_level(logging.INFO, logger="confd.access")
    api = live(access_log=True)
    client = ApiClient(api.port)
    reply = client.get(ACCOUNT_PATH, token="nope")
    assert reply.status == 401
    rid = reply.body["request_id"]
    client.get("/v2/health", token=None, headers={"X-Request-ID": "probe-1"})
    bad = exchange(
        api.port, b"GET /v2/health HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    )
    bad.envelope(400, "bad_request")
    lines = [m.groups() for m in access_lines(caplog) if m is not None]
    assert len(lines) == len(access_lines(caplog)), "a line not in the access-log format"
    by_id = {line[0]: line for line in lines}
    assert by_id[rid][1:4] == ("GET", "/v2/accounts/<account_id>/conferences", "401")
    assert by_id["probe-1"][1:4] == ("GET", "/v2/health", "200")
    assert by_id[bad.body["request_id"]][1:4] == ("GET", "unmatched", "400")
    assert all(float(line[4]) >= 0 for line in lines)


def test_the_access_log_is_off_by_default(live, caplog):
    caplog.set_level(logging.INFO, logger="confd.access")
    api = live()
    assert ApiClient(api.port).get("/v2/health", token=None).status == 200
    assert access_lines(caplog) == []
    caplog.set_level(logging.DEBUG, logger="confd.access")  # log.level: debug shows them
    assert ApiClient(api.port).get("/v2/health", token=None).status == 200
    debug = [r for r in caplog.records if r.name == "confd.access"]
    assert len(debug) == 1 and ACCESS_LINE.fullmatch(debug[0].getMessage()), debug

"""``GET /v2/openapi.json`` describes exactly the routes the app serves, and every status the
HTTP tests of this session observed on a route is documented for it.

(Named ``zz`` so that it runs after the other HTTP tests and sees what they observed; on its
own it still checks what its own short tour observes.)
"""

from __future__ import annotations

import re

import pytest
from gevent import socket as gsocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import OpenAPIV30SpecValidator

import confd
from confd.conferences.commands import MAX_MEMBER_ID, InvalidCommand, parse_member_id
from confd.events.websocket import WEBSOCKET_PATH
from confd.http.openapi import load_spec
from confd.store.schema import python_pattern
from confd_tests.http.conftest import hexid

IGNORED_METHODS = {"HEAD", "OPTIONS"}
# Answered by the websocket middleware in front of the Flask app, so not in its url_map.
MIDDLEWARE_ROUTES = {(WEBSOCKET_PATH, "get")}
# The operator console's page and files (confd.console) are served by the app but are no API.
CONSOLE_ENDPOINTS = "console."
SPEC = load_spec(confd.__version__)


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", r"{\1}", rule)


def served_routes(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith(CONSOLE_ENDPOINTS):
            continue
        for method in rule.methods - IGNORED_METHODS:
            routes.add((openapi_path(rule.rule), method.lower()))
    return routes | MIDDLEWARE_ROUTES


def resolve(spec, ref):
    assert ref.startswith("#/"), ref
    node = spec
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def all_refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from all_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from all_refs(value)


def tour(h):
    """A few requests, so the coverage check has something to check when run alone."""
    acme = h.account()
    conf = h.conference(acme)
    acme.api.get(acme.path(f"/conferences/{conf}"))
    acme.api.put(acme.path(f"/conferences/{conf}"), {"action": "lock"})
    acme.api.get(acme.path(f"/conferences/{conf}/participants/0"))
    acme.api.get(acme.path(f"/conferences/{hexid(3)}/participants"))
    acme.api.get(acme.path("/conferences"), token=None)


def test_document_matches_the_routes(harness):
    reply = harness.anon.get("/v2/openapi.json", token=None)
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    spec = reply.body
    assert spec["openapi"].startswith("3.0.")
    assert spec["info"]["version"] == confd.__version__
    documented = {
        (path, method)
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "put", "post", "patch", "delete")
    }
    assert documented == served_routes(harness.daemon.app)
    for ref in set(all_refs(spec)):
        assert resolve(spec, ref) is not None
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert op["responses"], (path, method)
            names = {
                p["name"]
                for p in item.get("parameters", []) + op.get("parameters", [])
                for p in [resolve(spec, p["$ref"]) if "$ref" in p else p]
            }
            assert set(re.findall(r"{([a-z_]+)}", path)) <= names, (path, method)
            if method in ("put", "post", "patch") and path not in ("/v2/api_auth",):
                assert "requestBody" in op, (path, method)


def test_every_observed_status_is_documented(harness, observed_statuses):
    tour(harness)
    spec = harness.anon.get("/v2/openapi.json", token=None).body
    checked = 0
    missing = []
    for (rule, method), statuses in sorted(observed_statuses.items()):
        if rule == "unmatched" or method in IGNORED_METHODS:
            continue
        op = spec["paths"][openapi_path(rule)][method.lower()]
        for status in statuses:
            checked += 1
            if str(status) not in op["responses"]:
                missing.append((rule, method, status))
    assert missing == []
    assert checked >= 8


def test_unknown_and_ui_keys_are_documented_as_stored_as_given(harness):
    """api.md: ``ui_metadata`` and other unknown keys are stored as given (the schema is open).
    The documented Conference schema must accept what confd stores and returns (the fuzzer
    found ``ui_metadata: []`` answered 201, against a schema that said it was an object)."""
    import jsonschema

    spec = harness.anon.get("/v2/openapi.json", token=None).body
    documented = spec["components"]["schemas"]["Conference"]["properties"]["ui_metadata"]
    acme = harness.account("uimeta")
    for value in ([], "text", 3, None, {"origin": "test"}):
        reply = acme.api.put(acme.path("/conferences"), {"name": "c", "ui_metadata": value})
        assert reply.status == 201, reply.body
        assert reply.data["ui_metadata"] == value
        jsonschema.validate(reply.data["ui_metadata"], documented)


def test_document_is_valid_openapi(harness):
    """Checked with openapi-spec-validator: a stray key (an unquoted comma in a YAML flow
    mapping once made ``from confd accounts`` a property of ``api_key``) fails here."""
    spec = harness.anon.get("/v2/openapi.json", token=None).body
    errors = [
        f"{list(err.path)}: {err.message[:300]}"
        for err in OpenAPIV30SpecValidator(spec).iter_errors()
    ]
    assert errors == []
    api_key = spec["paths"]["/v2/api_auth"]["put"]["requestBody"]["content"]["application/json"]
    assert set(api_key["schema"]["properties"]["data"]["properties"]["api_key"]) == {
        "type",
        "description",
    }


def documented_patterns(node, path=()):
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            yield "/".join(map(str, path)), node["pattern"]
        for key, value in node.items():
            yield from documented_patterns(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from documented_patterns(value, path + (i,))


PATTERNS = sorted(set(documented_patterns(SPEC)))


@pytest.mark.parametrize(("where", "pattern"), PATTERNS, ids=[w for w, _ in PATTERNS])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_documented_pattern_refuses_a_trailing_newline(where, pattern, data):
    """Read as a client's ECMA-262 engine reads it (``$`` is the end of the string)."""
    compiled = python_pattern(pattern)
    sample = data.draw(st.from_regex(compiled, fullmatch=True))
    assert compiled.search(sample)
    assert not compiled.search(sample + "\n")


PARTICIPANT_PATTERN = python_pattern(
    SPEC["components"]["parameters"]["ParticipantId"]["schema"]["pattern"]
)


def server_takes(text: str) -> bool:
    try:
        parse_member_id(text)
    except InvalidCommand:
        return False
    return True


@pytest.mark.parametrize(
    "text",
    [
        "1",
        "9",
        "10",
        "999999999",
        "1000000000",
        "1999999999",
        "2000000000",
        "2147483646",
        "2147483647",
        "2147483648",
        "2147483649",
        "2147483650",
        "2199999999",
        "2999999999",
        "9999999999",
        "10000000000",
        "0",
        "00",
        "007",
        "-1",
        "+1",
        "7abc",
        "4294967297",
        "",
        "1\n",
        " 1",
        "\uff11",
    ],
)
def test_participant_id_pattern_is_what_the_server_takes(text):
    assert bool(PARTICIPANT_PATTERN.search(text)) is server_takes(text), text


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.integers(min_value=-5, max_value=2 * MAX_MEMBER_ID + 5).map(str),
        st.from_regex(r"[0-9]{1,11}", fullmatch=True),
        st.from_regex(PARTICIPANT_PATTERN, fullmatch=True),
        st.text(max_size=12),
    )
)
def test_participant_id_pattern_agrees_with_the_server_everywhere(text):
    assert bool(PARTICIPANT_PATTERN.search(text)) is server_takes(text), text


def handshake_status(port: int, method: str = "GET", **headers: str) -> tuple:
    """The status line and headers of a websocket opening handshake (raw: http.client does
    not expect a 101)."""
    sent = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    for name, value in headers.items():
        name = name.replace("_", "-")
        if value is None:
            sent.pop(name, None)
        else:
            sent[name] = value
    request = f"{method} {WEBSOCKET_PATH} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in sent.items()
    )
    sock = gsocket.create_connection(("127.0.0.1", port), 10)
    try:
        sock.sendall((request + "\r\n").encode("latin-1"))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    finally:
        sock.close()
    lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}


def test_websocket_answers_are_documented(harness):
    op = SPEC["paths"][WEBSOCKET_PATH]["get"]
    port = harness.daemon.http_port
    status, headers = handshake_status(port)
    assert status == 101 and headers["upgrade"].lower() == "websocket"
    assert set(op["responses"]["101"]["headers"]) >= {
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Accept",
    }
    assert handshake_status(port, Upgrade=None)[0] == 400
    assert handshake_status(port, Sec_WebSocket_Key=None)[0] == 400
    status, headers = handshake_status(port, Sec_WebSocket_Version="8")
    assert status == 426 and headers["sec-websocket-version"] == "13"
    for status in (101, 400, 426):
        assert str(status) in op["responses"], status
    status, headers = handshake_status(port, method="POST")
    assert status == 405 and headers["allow"] == "GET"
    assert "405 invalid_method" in op["description"] and "Allow: GET" in op["description"]
    assert op["security"] == []

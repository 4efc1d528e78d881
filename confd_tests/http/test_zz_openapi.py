"""``GET /v2/openapi.json`` describes exactly the routes the app serves, and every status the
HTTP tests of this session observed on a route is documented for it.

(Named ``zz`` so that it runs after the other HTTP tests and sees what they observed; on its
own it still checks what its own short tour observes.)
"""

from __future__ import annotations

import re

import confd
from confd_tests.http.conftest import hexid

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", r"{\1}", rule)


def served_routes(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in rule.methods - IGNORED_METHODS:
            routes.add((openapi_path(rule.rule), method.lower()))
    return routes


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

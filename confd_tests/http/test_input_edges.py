"""Input that used to get through (issue 10, items 11-13 and 16): text no database can hold,
numbers JSON cannot carry, patterns that let a trailing newline in, the body-size boundary.

Every test that stores something runs on SQLite and, with CONFD_TEST_DATABASE_URL set, on
PostgreSQL (``stored``): what SQLite happens to accept, PostgreSQL may refuse with a 500.
"""

from __future__ import annotations

import http.client
import json
from typing import Any, List

import pytest
from gevent import socket as gsocket

from confd.http.body import MAX_BODY_BYTES
from confd.store.schema import load_packaged_schema
from confd_tests.http.test_auth import assert_error

SURROGATE = "\ud800"
NUL = "\x00"
BAD_TEXT = [SURROGATE, "a" + NUL + "b", "ok\udfff", NUL]


def raw_json(value: Any) -> bytes:
    """``value`` as JSON text; lone surrogates come out as ``\\ud800`` escapes, as a client
    would send them (``json.dumps`` never fails on them)."""
    return json.dumps(value).encode("ascii")


def assert_refused(reply, statuses=(400,)) -> None:
    """Refused with an error envelope (never a 500, never stored)."""
    assert reply.status in statuses, reply
    assert reply.body["status"] == "error", reply
    assert reply.body["error"] == str(reply.status)
    assert reply.body["request_id"]


# --- item 11: lone surrogates and NUL, on every backend -----------------------------------------


@pytest.mark.parametrize("bad", BAD_TEXT, ids=ascii)
def test_api_key_that_is_not_text_is_refused_not_a_500(stored, bad):
    reply = stored.anon.request(
        "PUT", "/v2/api_auth", raw=raw_json({"data": {"api_key": bad}}), token=None
    )
    assert_refused(reply, (400, 401))
    assert "auth_token" not in reply.body or reply.body["auth_token"] is None


def documents_with(bad: str) -> List[Any]:
    """Documents carrying ``bad`` in every kind of place: a checked field, a free-form
    field, a key, deep inside an unknown key, a list item."""
    return [
        {"name": bad},
        {"name": "room", "owner_id": (bad * 32)[:32]},
        {"name": "room", "profile_name": bad},
        {"name": "room", "flags": ["ok", bad]},
        {"name": "room", "k" + bad: 1},
        {"name": "room", "ui_metadata": {"deep": [{"deeper": bad}]}},
        {"name": "room", "ui_metadata": {bad: True}},
    ]


@pytest.mark.parametrize("bad", BAD_TEXT, ids=ascii)
def test_documents_with_text_no_database_holds_are_refused(stored, bad):
    acme = stored.account()
    conf = stored.conference(acme, name="kept")
    item = acme.path(f"/conferences/{conf}")
    for doc in documents_with(bad):
        body = raw_json({"data": doc})
        for method, path in (("PUT", acme.path("/conferences")), ("POST", item), ("PATCH", item)):
            reply = acme.api.request(method, path, raw=body)
            assert_refused(reply)
    listed = acme.api.get(acme.path("/conferences"))
    assert listed.status == 200
    assert [row["name"] for row in listed.data] == ["kept"]
    assert acme.api.get(item).data["name"] == "kept"


@pytest.mark.parametrize("bad", BAD_TEXT, ids=ascii)
def test_actions_with_text_that_is_not_text_are_refused(stored, bad):
    acme = stored.account()
    conf = stored.conference(acme)
    body = raw_json({"data": {"action": "lock", "note": bad}})
    assert_refused(acme.api.request("PUT", acme.path(f"/conferences/{conf}"), raw=body))


@pytest.mark.parametrize("arg", ["filter_owner_id", "start_key"])
def test_query_text_with_nul_is_refused(stored, arg):
    acme = stored.account()
    stored.conference(acme)
    reply = acme.api.get(acme.path(f"/conferences?{arg}=a%00b"))
    assert_error(reply, 400, "invalid_request")


# --- item 12: a trailing newline is not part of a number -----------------------------------------


def pattern_paths(schema: Any, path=()) -> List[tuple]:
    """The document paths of every ``pattern`` in the schema, array items as ``[]``."""
    found = []
    if isinstance(schema, dict):
        if "pattern" in schema:
            found.append(path)
        for name, sub in schema.get("properties", {}).items():
            found += pattern_paths(sub, path + (name,))
        if "items" in schema:
            found += pattern_paths(schema["items"], path + ("[]",))
    return found


PATTERN_PATHS = pattern_paths(load_packaged_schema())


def place(path: tuple, value: str) -> dict:
    """A document with ``value`` at ``path`` (``[]`` becomes a one-item list)."""
    node: Any = value
    for part in reversed(path):
        node = [node] if part == "[]" else {part: node}
    return node


def test_every_schema_pattern_is_found():
    assert len(PATTERN_PATHS) == 5, PATTERN_PATHS  # the three number lists and two pin lists


@pytest.mark.parametrize("path", PATTERN_PATHS, ids=".".join)
@pytest.mark.parametrize("tail", ["\n", "\r\n", "\n\n"], ids=ascii)
def test_trailing_newline_is_refused_by_every_schema_pattern(stored, path, tail):
    acme = stored.account()
    doc = {"name": "room", **place(path, "4000" + tail)}
    reply = acme.api.put(acme.path("/conferences"), doc)
    assert_error(reply, 400, "validation error")
    key = ".".join(p for p in path if p != "[]") + ".0"
    assert "pattern" in reply.data[key], reply.data
    assert acme.api.put(
        acme.path("/conferences"), {"name": "ok", **place(path, "4000")}
    ).status == (201)


def test_a_trailing_newline_does_not_get_around_number_uniqueness(stored):
    acme = stored.account()
    stored.conference(acme, name="first", conference_numbers=["4000"])
    for doc in (
        {"name": "second", "conference_numbers": ["4000\n"]},
        {"name": "second", "member": {"numbers": ["4000\n"]}},
        {"name": "second", "moderator": {"numbers": ["4000\n"]}},
    ):
        assert_error(acme.api.put(acme.path("/conferences"), doc), 400, "validation error")
    assert [r["name"] for r in acme.api.get(acme.path("/conferences")).data] == ["first"]


def test_path_and_query_ids_with_a_trailing_newline_are_refused(harness):
    """The ids the OpenAPI document describes with patterns: each refused with ``%0A``."""
    admin = harness.account("root", admin=True)
    acme = harness.account("acme")
    conf = harness.conference(acme)
    assert_error(admin.api.get(f"/v2/accounts/{acme.id}%0A/conferences"), 404, "bad_identifier")
    assert_error(acme.api.get(acme.path(f"/conferences/{conf}%0A")), 404, "bad_identifier")
    reply = acme.api.get(acme.path(f"/conferences/{conf}/participants/5%0A"))
    assert_error(reply, 400, "invalid_participant_id")
    assert_error(acme.api.get(acme.path("/conferences?page_size=5%0A")), 400, "invalid_request")


# --- item 13: numbers JSON cannot carry ----------------------------------------------------------


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1E+999", b"-0.1e99999"])
@pytest.mark.parametrize("where", ["max_participants", "ui_metadata"])
def test_numbers_beyond_a_double_are_refused_not_stored_as_null(stored, number, where):
    acme = stored.account()
    body = b'{"data": {"name": "room", "%s": %s}}' % (where.encode(), number)
    reply = acme.api.request("PUT", acme.path("/conferences"), raw=body)
    assert_error(reply, 400, "invalid_json")
    assert acme.api.get(acme.path("/conferences")).data == []


def test_large_but_finite_numbers_are_kept(stored):
    acme = stored.account()
    body = b'{"data": {"name": "room", "ui_metadata": {"big": 1e300, "small": -2.5e-300}}}'
    reply = acme.api.request("PUT", acme.path("/conferences"), raw=body)
    assert reply.status == 201, reply
    assert reply.data["ui_metadata"] == {"big": 1e300, "small": -2.5e-300}


# --- item 16 (body part): "over 64 KiB" ----------------------------------------------------------


def body_of(size: int) -> bytes:
    """A valid document body of exactly ``size`` bytes."""
    head, tail = b'{"data": {"name": "big", "ui_metadata": "', b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def put_chunked(h, account, payload: bytes) -> tuple:
    class Conn(http.client.HTTPConnection):
        def connect(self):
            self.sock = gsocket.create_connection((self.host, self.port), 10)

    conn = Conn("127.0.0.1", h.daemon.http_port)
    try:
        pieces = iter([payload[i : i + 10_000] for i in range(0, len(payload), 10_000)])
        conn.request(
            "PUT",
            account.path("/conferences"),
            body=pieces,
            encode_chunked=True,
            headers={"X-Auth-Token": account.token, "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_body_of_exactly_64_kib_is_taken_and_one_byte_more_is_not(harness):
    assert MAX_BODY_BYTES == 65_536
    acme = harness.account()
    path = acme.path("/conferences")
    exact = acme.api.request("PUT", path, raw=body_of(MAX_BODY_BYTES))
    assert exact.status == 201, exact
    assert len(exact.data["ui_metadata"]) > 65_000
    assert_error(
        acme.api.request("PUT", path, raw=body_of(MAX_BODY_BYTES + 1)), 413, "request_too_large"
    )
    status, body = put_chunked(harness, acme, body_of(MAX_BODY_BYTES))
    assert status == 201, body
    status, body = put_chunked(harness, acme, body_of(MAX_BODY_BYTES + 1))
    assert (status, body["message"]) == (413, "request_too_large"), body
    assert len(acme.api.get(path).data) == 2

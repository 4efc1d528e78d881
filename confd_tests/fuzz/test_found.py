"""Inputs the fuzzers found, as plain regression tests (deterministic, one request each)."""

from __future__ import annotations

from confd_tests.fuzz.raw import send_raw
from confd_tests.fuzz.server import LiveApi

BIG = 2**64  # past every 64-bit integer; JSON itself has no limit, Python's json none either


def conferences(api: LiveApi, rest: str = "") -> str:
    return f"/v2/accounts/{api.account_id}/conferences{rest}"


def test_a_big_integer_in_an_open_field_is_stored_and_read_back(live_api: LiveApi) -> None:
    """The schema is open (``ui_metadata`` and unknown keys are stored as given): a document
    carrying an integer past 64 bits must be answered, read, listed and deleted like any other,
    not answered 500 after being stored (and then be unreadable)."""
    body = b'{"data": {"name": "big", "ui_metadata": {"n": %d}, "extra": [%d]}}' % (BIG, -BIG)
    status, reply, _ = send_raw(live_api, "PUT", conferences(live_api), body)
    assert status == 201, reply
    conf = reply["data"]["id"]
    assert reply["data"]["ui_metadata"] == {"n": BIG} and reply["data"]["extra"] == [-BIG]
    status, reply, _ = send_raw(live_api, "GET", conferences(live_api, f"/{conf}"))
    assert status == 200 and reply["data"]["ui_metadata"] == {"n": BIG}, reply
    status, reply, _ = send_raw(live_api, "DELETE", conferences(live_api, f"/{conf}"))
    assert status == 200, reply


def test_a_big_integer_in_a_refused_field_gets_the_400_envelope(live_api: LiveApi) -> None:
    """The validation error echoes the refused value; that must not turn the 400 envelope into
    a bare ``text/plain`` 500 from Flask."""
    for field in (b'"name"', b'"max_participants"', b'"member": {"join_muted"'):
        closing = b"}" if field.startswith(b'"member"') else b""
        body = b'{"data": {%s: %d%s}}' % (field, -BIG if b"max" in field else BIG, closing)
        status, reply, _ = send_raw(live_api, "PUT", conferences(live_api), body)
        assert (status, reply["message"]) == (400, "validation error"), (body, reply)

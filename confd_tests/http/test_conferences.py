"""Conference documents through HTTP, on every database backend (api.md "Conference
documents")."""

from __future__ import annotations

import re

from confd_tests.http.conftest import hexid
from confd_tests.http.test_auth import ENVELOPE_KEYS, assert_error

REVISION = re.compile(r"\d+-[0-9a-f]+")


def test_create_fills_defaults_at_every_depth(stored):
    acme = stored.account()
    reply = acme.api.put(acme.path("/conferences"), {})
    assert reply.status == 201
    doc = reply.data
    assert re.fullmatch(r"[0-9a-f]{32}", doc["id"])
    assert doc["member"] == {"join_muted": True, "join_deaf": False, "numbers": [], "pins": []}
    assert doc["moderator"]["join_muted"] is False and doc["moderator"]["join_deaf"] is False
    assert doc["conference_numbers"] == [] and doc["play_name"] is False
    assert REVISION.fullmatch(reply.body["revision"])
    assert reply.headers["etag"] == '"%s"' % reply.body["revision"]
    assert not any(k.startswith(("_", "pvt_")) for k in doc)


def test_create_ignores_private_and_read_only_keys_and_keeps_unknown_ones(stored):
    acme = stored.account()
    reply = acme.api.put(
        acme.path("/conferences"),
        {
            "name": "standup",
            "id": "f" * 32,
            "focus": "fs9",
            "_read_only": {"members": 9},
            "pvt_account_id": "x",
            "ui_metadata": {"origin": "test"},
            "custom": [1, 2],
        },
    )
    assert reply.status == 201
    doc = reply.data
    assert doc["id"] != "f" * 32 and "focus" not in doc
    assert "_read_only" not in doc and "pvt_account_id" not in doc
    assert doc["ui_metadata"] == {"origin": "test"} and doc["custom"] == [1, 2]


def test_get_has_doc_read_only_and_revision(stored):
    acme = stored.account()
    conf = stored.conference(acme, name="weekly", owner_id="a" * 32)
    reply = acme.api.get(acme.path(f"/conferences/{conf}"))
    assert reply.status == 200
    assert set(reply.body) >= ENVELOPE_KEYS | {"revision"}
    assert reply.data["name"] == "weekly" and reply.data["id"] == conf
    assert reply.data["_read_only"] == {
        "members": 0,
        "admins": 0,
        "duration": 0,
        "is_locked": False,
        "focus": None,
        "participants": [],
    }
    assert reply.headers["etag"] == '"%s"' % reply.body["revision"]


def test_several_validation_errors_in_one_body(stored):
    acme = stored.account()
    reply = acme.api.put(
        acme.path("/conferences"),
        {
            "name": "x" * 129,
            "owner_id": "short",
            "conference_numbers": ["12a", "5"],
            "member": {"join_muted": "yes"},
            "max_participants": -1,
        },
    )
    data = assert_error(reply, 400, "validation error")
    assert data["name"]["maxLength"] == {
        "message": "String must not be more than 128 characters",
        "target": 128,
        "value": "x" * 129,
        "cause": "x" * 129,
    }
    assert "minLength" in data["owner_id"]
    assert data["conference_numbers.0"]["pattern"]["value"] == "12a"
    assert "type" in data["member.join_muted"]
    assert data["max_participants"]["minimum"]["target"] == 0
    assert acme.api.get(acme.path("/conferences")).data == []  # nothing half-stored


def test_data_that_is_not_an_object_is_a_validation_error(stored):
    acme = stored.account()
    data = assert_error(acme.api.put(acme.path("/conferences"), [1]), 400, "validation error")
    assert "type" in data["data"]


def test_number_collisions_across_the_three_lists(stored):
    acme, other = stored.account("acme"), stored.account("other")
    first = stored.conference(
        acme, name="a", conference_numbers=["111"], member={"numbers": ["222"]}
    )
    data = assert_error(
        acme.api.put(
            acme.path("/conferences"),
            {"name": "b", "moderator": {"numbers": ["222"]}, "conference_numbers": ["111"]},
        ),
        400,
        "validation error",
    )
    assert data == {
        "numbers": {"unique": {"message": "Numbers already in use", "cause": "111, 222"}}
    }
    # Another account has its own namespace.
    assert other.api.put(other.path("/conferences"), {"conference_numbers": ["111"]}).status == 201
    # Replacing the owner of the numbers keeps them; deleting frees them.
    assert (
        acme.api.post(
            acme.path(f"/conferences/{first}"), {"name": "a2", "conference_numbers": ["111"]}
        ).status
        == 200
    )
    assert acme.api.delete(acme.path(f"/conferences/{first}")).status == 200
    assert acme.api.put(acme.path("/conferences"), {"conference_numbers": ["111"]}).status == 201


def test_replace_patch_and_revisions(stored):
    acme = stored.account()
    created = acme.api.put(
        acme.path("/conferences"), {"name": "a", "flags": ["x"], "member": {"pins": ["1"]}}
    )
    conf, rev1 = created.data["id"], created.body["revision"]
    # POST replaces every public field (defaults filled again).
    replaced = acme.api.post(
        acme.path(f"/conferences/{conf}"), {"name": "b"}, headers={"If-Match": rev1}
    )
    assert replaced.status == 200
    rev2 = replaced.body["revision"]
    assert rev2 != rev1 and replaced.headers["etag"] == f'"{rev2}"'
    assert "flags" not in replaced.data and replaced.data["member"]["pins"] == []
    # The old revision is stale now: 409, nothing changed.
    assert_error(
        acme.api.patch(
            acme.path(f"/conferences/{conf}"), {"name": "c"}, headers={"If-Match": rev1}
        ),
        409,
        "datastore_conflict",
    )
    # PATCH merges recursively, replaces arrays, null removes; quoted ETag accepted.
    patched = acme.api.patch(
        acme.path(f"/conferences/{conf}"),
        {"member": {"join_muted": False}, "name": None, "flags": ["y", "z"]},
        headers={"If-Match": replaced.headers["etag"]},
    )
    assert patched.status == 200, patched
    doc = patched.data
    assert "name" not in doc and doc["flags"] == ["y", "z"]
    assert doc["member"] == {"join_muted": False, "join_deaf": False, "numbers": [], "pins": []}
    # A PATCH that breaks the schema is refused as a whole.
    bad = acme.api.patch(acme.path(f"/conferences/{conf}"), {"flags": "no", "name": ""})
    data = assert_error(bad, 400, "validation error")
    assert set(data) == {"flags", "name"}
    assert acme.api.get(acme.path(f"/conferences/{conf}")).data["flags"] == ["y", "z"]
    # DELETE honours If-Match too.
    assert_error(
        acme.api.delete(acme.path(f"/conferences/{conf}"), headers={"If-Match": rev2}),
        409,
        "datastore_conflict",
    )


def test_soft_delete(stored):
    acme = stored.account()
    conf = stored.conference(acme, name="gone", conference_numbers=["5"])
    reply = acme.api.delete(acme.path(f"/conferences/{conf}"))
    assert reply.status == 200
    assert reply.data["_read_only"] == {"deleted": True}
    assert reply.data["id"] == conf and reply.data["name"] == "gone"
    assert REVISION.fullmatch(reply.body["revision"])
    for method in ("GET", "POST", "PATCH", "DELETE"):
        data = assert_error(
            acme.api.request(method, acme.path(f"/conferences/{conf}"), {}), 404, "bad_identifier"
        )
        assert data == {"cause": conf, "message": "bad identifier"}
    assert acme.api.get(acme.path("/conferences")).data == []


def test_unknown_and_malformed_conference_ids_are_404(stored):
    acme, other = stored.account("acme"), stored.account("other")
    theirs = stored.conference(other)
    for conf in (hexid(7), "NOT-HEX", "A" * 32, theirs):
        for method in ("GET", "POST", "PATCH", "DELETE"):
            reply = acme.api.request(method, acme.path(f"/conferences/{conf}"), {"name": "x"})
            data = assert_error(reply, 404, "bad_identifier")
            assert data["cause"] == conf
    assert other.api.get(other.path(f"/conferences/{theirs}")).data["name"] == "room"


def test_list_rows_paging_and_owner_filter(stored):
    acme = stored.account()
    owner = "b" * 32
    ids = sorted(
        stored.conference(
            acme,
            name=f"c{i}",
            owner_id=owner if i % 2 else "c" * 32,
            conference_numbers=[str(100 + i)],
        )
        for i in range(5)
    )
    listed = acme.api.get(acme.path("/conferences"))
    assert listed.status == 200 and listed.body["page_size"] == 5
    assert "next_start_key" not in listed.body
    assert [r["id"] for r in listed.data] == ids
    row = listed.data[0]
    assert set(row) == {
        "id",
        "name",
        "owner_id",
        "member",
        "moderator",
        "conference_numbers",
        "members",
        "admins",
        "duration",
        "is_locked",
    }
    assert (row["members"], row["admins"], row["duration"], row["is_locked"]) == (0, 0, 0, False)
    # Paging: page_size rows, next_start_key until the end.
    seen, key = [], None
    while True:
        query = "?page_size=2" + (f"&start_key={key}" if key else "")
        page = acme.api.get(acme.path("/conferences" + query))
        assert page.status == 200 and page.body["page_size"] == len(page.data) <= 2
        seen += [r["id"] for r in page.data]
        key = page.body.get("next_start_key")
        if key is None:
            break
    assert seen == ids
    # filter_owner_id
    owned = acme.api.get(acme.path(f"/conferences?filter_owner_id={owner}"))
    assert {r["owner_id"] for r in owned.data} == {owner} and len(owned.data) == 2
    for bad in ("0", "-1", "x", "100000"):
        assert_error(
            acme.api.get(acme.path(f"/conferences?page_size={bad}")), 400, "invalid_request"
        )

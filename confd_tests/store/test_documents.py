"""Conference documents on every backend: CRUD, revisions, numbers, paging."""

from __future__ import annotations

import re
import threading

import peewee
import pytest

from confd.store import Conflict, NotFound, Store, ValidationFailed
from confd.store.documents import GREGORIAN_UNIX_OFFSET, ConferenceService

REVISION = re.compile(r"^[0-9]+-[0-9a-f]{32}$")
OWNER = "0123456789abcdef0123456789abcdef"


def in_use(*numbers: str) -> dict:
    return {
        "numbers": {"unique": {"message": "Numbers already in use", "cause": ", ".join(numbers)}}
    }


def number_rows(store: Store) -> list[tuple[str, str]]:
    rows = store.db.execute_sql("SELECT number, conference_id FROM conference_numbers")
    return sorted((r[0], r[1]) for r in rows.fetchall())


# -- create / get -------------------------------------------------------------------------------


def test_create_empty_document_gets_defaults(store, account_id):
    doc = store.conferences.create(account_id, {})
    assert re.match(r"^[0-9a-f]{32}$", doc.id)
    assert REVISION.match(doc.revision) and doc.revision.startswith("1-")
    assert doc.data == {
        "id": doc.id,
        "conference_numbers": [],
        "member": {"join_muted": True, "join_deaf": False, "numbers": [], "pins": []},
        "moderator": {"join_muted": False, "join_deaf": False, "numbers": [], "pins": []},
        "play_name": False,
    }
    assert store.conferences.get(account_id, doc.id) == doc


def test_private_and_read_only_keys_are_not_taken_from_input(store, account_id, clock):
    doc = store.conferences.create(
        account_id,
        {
            "name": "standup",
            "_id": "f" * 32,
            "id": "e" * 32,
            "_rev": "9-x",
            "pvt_account_id": "a" * 32,
            "pvt_type": "device",
            "focus": "fs9",
            "ui_metadata": {"origin": "test"},
        },
    )
    stored = store.conferences.get(account_id, doc.id)
    assert stored.data == {**doc.data}
    assert set(stored.body) == {
        "name",
        "ui_metadata",
        "conference_numbers",
        "member",
        "moderator",
        "play_name",
    }
    assert stored.id not in ("f" * 32, "e" * 32) and stored.data["id"] == doc.id
    assert stored.private == {
        "pvt_type": "conference",
        "pvt_account_id": account_id,
        "pvt_created": int(clock.now) + GREGORIAN_UNIX_OFFSET,
        "pvt_modified": int(clock.now) + GREGORIAN_UNIX_OFFSET,
        "pvt_deleted": False,
    }


def test_create_invalid_document_stores_nothing(store, account_id):
    with pytest.raises(ValidationFailed) as err:
        store.conferences.create(account_id, {"name": "", "max_participants": -1})
    assert set(err.value.data) == {"name", "max_participants"}
    assert err.value.data["max_participants"]["minimum"]["message"] == "Value must be at least 0"
    assert store.conferences.list(account_id) == ([], None)


def test_create_rejects_non_object(store, account_id):
    with pytest.raises(ValidationFailed) as err:
        store.conferences.create(account_id, ["not", "an", "object"])
    assert err.value.data["data"]["type"]["target"] == "object"


def test_create_in_unknown_account(store):
    with pytest.raises(NotFound) as err:
        store.conferences.create("d" * 32, {})
    assert err.value.cause == "d" * 32


def test_get_unknown_or_other_account(store, account_id):
    other, _ = store.accounts.create_account("other")
    doc = store.conferences.create(account_id, {"name": "mine"})
    with pytest.raises(NotFound) as err:
        store.conferences.get(other["id"], doc.id)
    assert err.value.cause == doc.id
    with pytest.raises(NotFound):
        store.conferences.get(account_id, "e" * 32)


def test_get_any_maps_conference_to_account(store, account_id):
    doc = store.conferences.create(account_id, {"name": "x"})
    assert store.conferences.get_any(doc.id) == (account_id, doc)
    assert store.conferences.get_any("e" * 32) is None
    store.conferences.delete(account_id, doc.id)
    assert store.conferences.get_any(doc.id) is None


# -- replace / patch --------------------------------------------------------------------------


def test_replace_sets_all_public_fields(store, account_id, clock):
    doc = store.conferences.create(
        account_id, {"name": "old", "play_welcome": True, "member": {"join_muted": False}}
    )
    clock.advance(10)
    new = store.conferences.replace(account_id, doc.id, {"name": "new", "focus": "fs2"})
    assert new.data == {
        "id": doc.id,
        "name": "new",
        "conference_numbers": [],
        "member": {"join_muted": True, "join_deaf": False, "numbers": [], "pins": []},
        "moderator": {"join_muted": False, "join_deaf": False, "numbers": [], "pins": []},
        "play_name": False,
    }
    assert new.revision.startswith("2-") and new.revision != doc.revision
    assert new.created == doc.created and new.modified == doc.modified + 10
    assert new.private["pvt_modified"] == new.private["pvt_created"] + 10
    assert store.conferences.get(account_id, doc.id) == new


def test_patch_merges_recursively_and_null_removes(store, account_id):
    doc = store.conferences.create(
        account_id,
        {
            "name": "n",
            "profile_name": "default",
            "member": {"join_muted": False, "pins": ["1", "2"]},
            "ui_metadata": {"a": 1, "b": {"c": 2, "d": 3}},
        },
    )
    new = store.conferences.patch(
        account_id,
        doc.id,
        {
            "profile_name": None,
            "member": {"pins": ["3"], "join_deaf": True},
            "ui_metadata": {"b": {"c": None, "e": 4}},
            "flags": ["x"],
        },
    )
    assert "profile_name" not in new.data
    assert new.data["member"] == {
        "join_muted": False,
        "join_deaf": True,
        "numbers": [],
        "pins": ["3"],
    }
    assert new.data["ui_metadata"] == {"a": 1, "b": {"d": 3, "e": 4}}
    assert new.data["flags"] == ["x"]
    assert new.data["name"] == "n"
    assert new.revision.startswith("2-")


def test_patch_null_on_a_default_restores_the_default(store, account_id):
    doc = store.conferences.create(account_id, {"member": {"join_muted": False}})
    new = store.conferences.patch(account_id, doc.id, {"member": {"join_muted": None}})
    assert new.data["member"]["join_muted"] is True


def test_patch_validates_the_merged_whole(store, account_id):
    doc = store.conferences.create(account_id, {"name": "n"})
    with pytest.raises(ValidationFailed) as err:
        store.conferences.patch(account_id, doc.id, {"member": {"numbers": ["x"]}})
    assert err.value.data == {
        "member.numbers.0": {
            "pattern": {
                "message": "Failed to match pattern '^[0-9]+$'",
                "target": "^[0-9]+$",
                "value": "x",
            }
        }
    }
    assert store.conferences.get(account_id, doc.id) == doc  # nothing half-applied


def test_patch_ignores_focus_and_private_keys(store, account_id):
    doc = store.conferences.create(account_id, {"name": "n"})
    new = store.conferences.patch(account_id, doc.id, {"focus": "fs1", "pvt_deleted": True})
    assert new.body == doc.body
    assert not new.deleted


# -- delete -------------------------------------------------------------------------------------


def test_delete_is_soft_and_frees_numbers(store, account_id, clock):
    doc = store.conferences.create(account_id, {"name": "n", "conference_numbers": ["100"]})
    clock.advance(5)
    gone = store.conferences.delete(account_id, doc.id)
    assert gone.deleted is True
    assert gone.private["pvt_deleted"] is True
    assert gone.data == doc.data
    assert gone.revision.startswith("2-")
    with pytest.raises(NotFound):
        store.conferences.get(account_id, doc.id)
    for op in (
        lambda: store.conferences.replace(account_id, doc.id, {}),
        lambda: store.conferences.patch(account_id, doc.id, {}),
        lambda: store.conferences.delete(account_id, doc.id),
    ):
        with pytest.raises(NotFound):
            op()
    assert store.conferences.list(account_id) == ([], None)
    # The row is still there (soft), flagged, but its numbers are free again.
    row = store.db.execute_sql(
        "SELECT deleted, deleted_at FROM conferences WHERE id = %s" % store.db.param, (doc.id,)
    ).fetchone()
    assert bool(row[0]) is True and row[1] == clock.now
    assert number_rows(store) == []
    again = store.conferences.create(account_id, {"conference_numbers": ["100"]})
    assert again.data["conference_numbers"] == ["100"]


# -- revisions ----------------------------------------------------------------------------------


def test_if_match(store, account_id):
    doc = store.conferences.create(account_id, {"name": "a"})
    with pytest.raises(Conflict):
        store.conferences.replace(account_id, doc.id, {"name": "b"}, if_match="1-" + "0" * 32)
    second = store.conferences.patch(account_id, doc.id, {"name": "b"}, if_match=doc.revision)
    with pytest.raises(Conflict):  # stale now
        store.conferences.patch(account_id, doc.id, {"name": "c"}, if_match=doc.revision)
    with pytest.raises(Conflict):
        store.conferences.delete(account_id, doc.id, if_match=doc.revision)
    assert store.conferences.get(account_id, doc.id) == second
    third = store.conferences.replace(account_id, doc.id, {"name": "c"}, if_match="*")
    assert store.conferences.delete(account_id, doc.id, if_match=third.revision).deleted


def test_revision_changes_on_every_write(store, account_id):
    doc = store.conferences.create(account_id, {})
    seen = {doc.revision}
    for _ in range(3):
        doc = store.conferences.patch(account_id, doc.id, {})
        assert doc.revision not in seen
        seen.add(doc.revision)
    assert doc.revision.startswith("4-")


def test_update_loses_to_a_concurrent_writer(store, account_id, mocker):
    doc = store.conferences.create(account_id, {"name": "a"})
    real_prepare = ConferenceService._prepare

    def sneak_in_a_write(self, public):
        # Another writer commits between our read and our conditional update.
        conf = self._m.conference
        conf.update(revision=conf.revision + 1).where(conf.id == doc.id).execute()
        return real_prepare(self, public)

    mocker.patch.object(ConferenceService, "_prepare", sneak_in_a_write)
    with pytest.raises(Conflict):
        store.conferences.patch(account_id, doc.id, {"name": "b"})
    mocker.stopall()
    assert store.conferences.get(account_id, doc.id).data["name"] == "a"


# -- number uniqueness --------------------------------------------------------------------------


def test_numbers_unique_across_the_three_lists_of_an_account(store, account_id):
    store.conferences.create(
        account_id,
        {
            "conference_numbers": ["100"],
            "member": {"numbers": ["200"]},
            "moderator": {"numbers": ["300"]},
        },
    )
    for data in (
        {"member": {"numbers": ["100"]}},
        {"moderator": {"numbers": ["200"]}},
        {"conference_numbers": ["300"]},
    ):
        with pytest.raises(ValidationFailed) as err:
            store.conferences.create(account_id, data)
        number = next(iter(err.value.data["numbers"]["unique"]["cause"].split(", ")))
        assert err.value.data == in_use(number)
    assert len(store.conferences.list(account_id)[0]) == 1


def test_numbers_error_names_every_number_in_use(store, account_id):
    store.conferences.create(account_id, {"conference_numbers": ["111", "222"]})
    with pytest.raises(ValidationFailed) as err:
        store.conferences.create(
            account_id, {"conference_numbers": ["111", "333"], "member": {"numbers": ["222"]}}
        )
    assert err.value.data == in_use("111", "222")


def test_numbers_unique_within_one_document(store, account_id):
    with pytest.raises(ValidationFailed) as err:
        store.conferences.create(
            account_id, {"conference_numbers": ["5"], "moderator": {"numbers": ["5"]}}
        )
    assert err.value.data == in_use("5")


def test_numbers_are_per_account(store, account_id):
    other, _ = store.accounts.create_account("other")
    store.conferences.create(account_id, {"conference_numbers": ["100"]})
    doc = store.conferences.create(other["id"], {"conference_numbers": ["100"]})
    assert doc.data["conference_numbers"] == ["100"]


def test_document_keeps_its_own_numbers_on_update(store, account_id):
    doc = store.conferences.create(account_id, {"conference_numbers": ["100", "101"]})
    new = store.conferences.replace(
        account_id, doc.id, {"conference_numbers": ["101"], "member": {"numbers": ["102"]}}
    )
    assert number_rows(store) == [("101", doc.id), ("102", doc.id)]
    # 100 was released by the replace.
    store.conferences.create(account_id, {"conference_numbers": ["100"]})
    with pytest.raises(ValidationFailed) as err:
        store.conferences.patch(account_id, new.id, {"conference_numbers": ["100"]})
    assert err.value.data == in_use("100")
    assert store.conferences.get(account_id, doc.id) == new  # failed patch left it alone


def test_unique_index_is_enforced_by_the_database(store, account_id):
    doc = store.conferences.create(account_id, {"conference_numbers": ["100"]})
    other = store.conferences.create(account_id, {})
    with pytest.raises(peewee.IntegrityError):
        with store.db.atomic():
            store.models.number.create(account=account_id, number="100", conference=other.id)
    assert number_rows(store) == [("100", doc.id)]


def test_two_concurrent_creates_cannot_both_take_a_number(database_url, clock, mocker):
    """Both writers pass the friendly pre-check; the unique index alone must stop one."""
    store = Store.from_url(database_url, clock=clock)
    try:
        account, _ = store.accounts.create_account("race")
        mocker.patch.object(ConferenceService, "_numbers_in_use", return_value=[])
        barrier = threading.Barrier(2)
        results: list[object] = []

        def create() -> None:
            # Two writers as two daemons would be: a store (a connection) each, in its thread.
            own = Store.from_url(database_url, clock=clock)
            try:
                barrier.wait()
                results.append(
                    own.conferences.create(account["id"], {"conference_numbers": ["555"]})
                )
            except ValidationFailed as exc:
                results.append(exc)
            finally:
                own.close()

        threads = [threading.Thread(target=create) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        failures = [r for r in results if isinstance(r, ValidationFailed)]
        assert len(results) == 2 and len(failures) == 1
        assert failures[0].data == in_use("555")
        mocker.stopall()
        docs, _ = store.conferences.list(account["id"])
        assert len(docs) == 1  # the loser's document was rolled back with its numbers
        assert number_rows(store) == [("555", docs[0].id)]
    finally:
        store.close()


# -- listing -------------------------------------------------------------------------------------


def test_list_pages_in_id_order(store, account_id):
    ids = sorted(store.conferences.create(account_id, {"name": f"c{i}"}).id for i in range(5))
    page, key = store.conferences.list(account_id, page_size=2)
    assert [d.id for d in page] == ids[:2] and key == ids[2]
    page, key = store.conferences.list(account_id, start_key=key, page_size=2)
    assert [d.id for d in page] == ids[2:4] and key == ids[4]
    page, key = store.conferences.list(account_id, start_key=key, page_size=2)
    assert [d.id for d in page] == ids[4:] and key is None
    everything, key = store.conferences.list(account_id)
    assert [d.id for d in everything] == ids and key is None
    page, key = store.conferences.list(account_id, page_size=5)
    assert len(page) == 5 and key is None


def test_list_filters_by_owner_and_skips_other_accounts(store, account_id):
    other, _ = store.accounts.create_account("other")
    mine = store.conferences.create(account_id, {"owner_id": OWNER})
    store.conferences.create(account_id, {"owner_id": "f" * 32})
    store.conferences.create(account_id, {})
    store.conferences.create(other["id"], {"owner_id": OWNER})
    docs, _ = store.conferences.list(account_id, owner_id=OWNER)
    assert [d.id for d in docs] == [mine.id]
    assert len(store.conferences.list(account_id)[0]) == 3
    # Ownership follows updates.
    store.conferences.patch(account_id, mine.id, {"owner_id": None})
    assert store.conferences.list(account_id, owner_id=OWNER) == ([], None)


def test_list_summary_fields(store, account_id):
    doc = store.conferences.create(account_id, {"name": "n", "owner_id": OWNER, "flags": ["x"]})
    (row,), _ = store.conferences.list(account_id)
    assert row.summary == {
        "id": doc.id,
        "name": "n",
        "owner_id": OWNER,
        "member": doc.data["member"],
        "moderator": doc.data["moderator"],
        "conference_numbers": [],
    }


def test_list_unknown_account_and_bad_page_size(store, account_id):
    with pytest.raises(NotFound):
        store.conferences.list("9" * 32)
    for bad in (0, -1, True, "2"):
        with pytest.raises(ValueError):
            store.conferences.list(account_id, page_size=bad)


def test_owners_of_many_conference_ids_in_one_call(store, account_id):
    other, _ = store.accounts.create_account("other")
    mine = [store.conferences.create(account_id, {"name": "m%d" % i}).id for i in range(3)]
    theirs = store.conferences.create(other["id"], {"name": "t"}).id
    store.conferences.delete(account_id, mine[2])
    unknown = "f" * 32
    got = store.conferences.owners(mine + [theirs, unknown] + ["0" * 32] * 600)
    assert got == {mine[0]: account_id, mine[1]: account_id, theirs: other["id"]}
    assert store.conferences.owners([]) == {}

"""Live state in the API (api.md "Realtime" and "Which live conference belongs to which
account") against a stateful fake FreeSWITCH."""

from __future__ import annotations

import time

from confd.conferences.model import GREGORIAN_OFFSET
from confd_tests.contract import PARTICIPANT_KEYS
from confd_tests.http.conftest import hexid
from confd_tests.http.test_auth import assert_error


def test_read_only_of_a_running_conference(harness):
    before = time.time()  # the join and duration are bounded by what passed, however long
    acme = harness.account()
    conf = harness.conference(acme, name="standup")
    alice = harness.join("fs1", conf, name="Alice", number="1001", account=acme.id)
    harness.join("fs1", conf, name="Bob", number="1002")
    boss = harness.join("fs1", conf, name="Boss", number="1003", moderator=True)
    reply = acme.api.get(acme.path(f"/conferences/{conf}"))
    assert reply.status == 200
    doc = reply.data
    assert doc["focus"] == "fs1"
    ro = doc["_read_only"]
    assert (ro["members"], ro["admins"], ro["is_locked"], ro["focus"]) == (2, 1, False, "fs1")
    assert 0 <= ro["duration"] <= time.time() - before + 1
    parts = ro["participants"]
    assert [p["participant_id"] for p in parts] == [alice, alice + 1, boss]
    first = parts[0]
    assert set(first) == PARTICIPANT_KEYS
    assert first["caller_id_name"] == "Alice" and first["caller_id_number"] == "1001"
    assert first["conference_name"] == conf and first["switch_hostname"] == "fs1"
    assert first["custom_channel_vars"] == {"account_id": acme.id}
    assert first["is_moderator"] is False and parts[2]["is_moderator"] is True
    assert before - 1 <= first["join_time"] - GREGORIAN_OFFSET <= time.time() + 1
    # The list shows the same counts.
    (row,) = acme.api.get(acme.path("/conferences")).data
    assert (row["members"], row["admins"], row["is_locked"]) == (2, 1, False)
    # Participants, collection and one.
    listed = acme.api.get(acme.path(f"/conferences/{conf}/participants"))
    assert listed.status == 200 and [p["caller_id_name"] for p in listed.data] == [
        "Alice",
        "Bob",
        "Boss",
    ]
    one = acme.api.get(acme.path(f"/conferences/{conf}/participants/{boss}"))
    assert one.status == 200 and one.data["caller_id_name"] == "Boss"
    assert one.data["is_moderator"] is True


def test_conference_not_running(harness):
    acme = harness.account()
    conf = harness.conference(acme)
    assert acme.api.get(acme.path(f"/conferences/{conf}/participants")).data == []
    data = assert_error(
        acme.api.get(acme.path(f"/conferences/{conf}/participants/1")), 404, "bad_identifier"
    )
    assert data["cause"] == "1"
    # Live, but no such member.
    harness.join("fs1", conf)
    assert_error(
        acme.api.get(acme.path(f"/conferences/{conf}/participants/99")), 404, "bad_identifier"
    )


def test_ad_hoc_conference_of_the_account(harness):
    acme, other = harness.account("acme"), harness.account("other")
    adhoc = hexid(0xADC)
    m = harness.join("fs1", adhoc, account=acme.id, name="Zed")
    (row,) = acme.api.get(acme.path("/conferences")).data
    assert row["id"] == adhoc and row["members"] == 1
    assert row["_read_only"] == {"ad_hoc": True}
    assert row["member"]["join_muted"] is True  # the schema defaults stand in for a document
    doc = acme.api.get(acme.path(f"/conferences/{adhoc}"))
    assert doc.status == 200 and "revision" not in doc.body and "etag" not in doc.headers
    assert doc.data["_read_only"]["ad_hoc"] is True
    assert doc.data["_read_only"]["participants"][0]["caller_id_name"] == "Zed"
    assert doc.data["moderator"]["join_muted"] is False and doc.data["focus"] == "fs1"
    # Controllable like any conference of the account.
    muted = acme.api.put(acme.path(f"/conferences/{adhoc}/participants/{m}"), {"action": "mute"})
    assert muted.status == 202
    harness.wait_participant(adhoc, m, speak=False)
    # Another account sees nothing of it.
    assert other.api.get(other.path("/conferences")).data == []
    assert_error(other.api.get(other.path(f"/conferences/{adhoc}")), 404, "bad_identifier")
    assert_error(
        other.api.put(other.path(f"/conferences/{adhoc}"), {"action": "lock"}),
        404,
        "bad_identifier",
    )
    # It has no document to replace or delete.
    assert_error(
        acme.api.post(acme.path(f"/conferences/{adhoc}"), {"name": "x"}), 404, "bad_identifier"
    )
    assert harness.control_sent() == [f"api conference {adhoc} mute {m}"]


def test_a_document_wins_over_the_account_variable(harness):
    acme, other = harness.account("acme"), harness.account("other")
    conf = harness.conference(other, name="theirs")
    harness.join("fs1", conf, account=acme.id)  # claims acme, but other has the document
    assert acme.api.get(acme.path("/conferences")).data == []
    assert_error(acme.api.get(acme.path(f"/conferences/{conf}")), 404, "bad_identifier")
    (row,) = other.api.get(other.path("/conferences")).data
    assert row["members"] == 1 and "_read_only" not in row


def test_orphans_are_shown_to_admin_accounts_only(harness):
    acme, root = harness.account("acme"), harness.account("root", admin=True)
    orphan = hexid(0x0F)
    unknown_account = hexid(0xDEAD)
    claimed_by_nobody = hexid(0x10)
    m = harness.join("fs1", orphan, name="Lost")
    harness.join("fs1", claimed_by_nobody, account=unknown_account)
    harness.join("fs1", "room-not-hex")  # outside the name pattern: never addressable
    assert acme.api.get(acme.path("/conferences")).data == []
    assert_error(acme.api.get(acme.path(f"/conferences/{orphan}")), 404, "bad_identifier")
    rows = root.api.get(root.path("/conferences")).data
    assert [(r["id"], r["_read_only"]) for r in rows] == [
        (orphan, {"orphan": True}),
        (claimed_by_nobody, {"orphan": True}),
    ]
    doc = root.api.get(root.path(f"/conferences/{orphan}")).data
    assert doc["_read_only"]["orphan"] is True and doc["_read_only"]["members"] == 1
    # An admin browsing acme's account sees acme's conferences, not the orphans.
    assert root.api.get(acme.path("/conferences")).data == []
    # Orphans are controllable by the admin account.
    kicked = root.api.put(root.path(f"/conferences/{orphan}/participants/{m}"), {"action": "kick"})
    assert kicked.status == 202 and kicked.data["reply"] == f"+OK kicked {m}"


def test_list_pages_merge_documents_and_live_only_conferences(harness):
    root = harness.account("root", admin=True)
    docs = [harness.conference(root, name=f"d{i}") for i in range(3)]
    live_only = [hexid(i) for i in (1, 2)]  # sort before every random document id
    for conf in live_only:
        harness.join("fs1", conf)
    everything = sorted(docs + live_only)
    seen, key = [], None
    while True:
        page = root.api.get(
            root.path("/conferences?page_size=2" + (f"&start_key={key}" if key else ""))
        )
        assert page.status == 200 and len(page.data) <= 2
        seen += [r["id"] for r in page.data]
        key = page.body.get("next_start_key")
        if key is None:
            break
    assert seen == everything
    # filter_owner_id leaves out live-only rows (they have no owner).
    assert root.api.get(root.path("/conferences?filter_owner_id=" + "a" * 32)).data == []

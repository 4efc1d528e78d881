"""Conference and participant actions: exactly one validated command reaches the node hosting
the conference, the 202 names it, and the state after FreeSWITCH's events shows its effect."""

from __future__ import annotations

import gevent
import pytest
from gevent.event import Event

from confd_tests.conftest import wait_until
from confd_tests.http.conftest import hexid
from confd_tests.http.test_auth import assert_error

MEMBER_ACTIONS = ["mute", "unmute", "deaf", "undeaf", "kick"]
CONFERENCE_ACTIONS = ["lock", "unlock"]

# api.md: a member id is 1..2147483647, canonical decimal; FreeSWITCH's atoi would read several
# of these as a real member (captures s6_bad_input.cmds, section H).
BAD_IDS = [
    "abc",
    "0",
    "-1",
    "007",
    "7abc",
    "4294967297",
    "2147483648",
    "+7",
    "7.0",
    "1e3",
    "%EF%BC%97",
    "7%0D",
    "7%0A",
    "7%00",
    "7%20",
    "%20",
    "%0A",
    "%0D%0Aapi%20version",
    "7%0A%0Aexit",
    "all",
    "non_moderator",
    "last",
]


@pytest.fixture
def room(harness):
    """acme's conference with a member (Ann), a moderator (Mo) and another member (Ben)."""
    acme = harness.account()
    conf = harness.conference(acme, name="room")
    ann = harness.join("fs1", conf, name="Ann")
    mo = harness.join("fs1", conf, name="Mo", moderator=True)
    ben = harness.join("fs1", conf, name="Ben")
    return acme, conf, {"ann": ann, "mo": mo, "ben": ben}


def participant(acme, conf, member_id):
    return acme.api.get(acme.path(f"/conferences/{conf}/participants/{member_id}")).data


def test_lock_and_unlock(harness, room):
    acme, conf, _ = room
    reply = acme.api.put(acme.path(f"/conferences/{conf}"), {"action": "lock"})
    assert reply.status == 202
    assert reply.data == {
        "action": "lock",
        "command": f"conference {conf} lock",
        "reply": f"+OK {conf} locked",
    }
    wait_until(lambda: harness.live(conf).is_locked, what="locked")
    assert acme.api.get(acme.path(f"/conferences/{conf}")).data["_read_only"]["is_locked"]
    assert acme.api.get(acme.path("/conferences")).data[0]["is_locked"] is True
    assert harness.fakes["fs1"].model.join(conf, caller_id_name="late") is None  # refused
    assert acme.api.put(acme.path(f"/conferences/{conf}"), {"action": "unlock"}).status == 202
    wait_until(lambda: not harness.live(conf).is_locked, what="unlocked")
    assert harness.control_sent() == [
        f"api conference {conf} lock",
        f"api conference {conf} unlock",
    ]


def test_mute_all_spares_moderators_then_unmute(harness, room):
    acme, conf, ids = room
    path = acme.path(f"/conferences/{conf}/participants")
    reply = acme.api.put(path, {"action": "mute"})
    assert reply.status == 202
    assert reply.data["command"] == f"conference {conf} mute non_moderator"
    assert reply.data["action"] == "mute" and "+OK mute" in reply.data["reply"]
    harness.wait_participant(conf, ids["ann"], speak=False)
    harness.wait_participant(conf, ids["ben"], speak=False)
    assert participant(acme, conf, ids["ann"])["speak"] is False
    assert participant(acme, conf, ids["mo"])["speak"] is True
    assert acme.api.put(path, {"action": "unmute"}).status == 202
    harness.wait_participant(conf, ids["ann"], speak=True)
    assert participant(acme, conf, ids["ben"])["speak"] is True
    assert harness.control_sent() == [
        f"api conference {conf} mute non_moderator",
        f"api conference {conf} unmute non_moderator",
    ]


def test_deaf_undeaf_all(harness, room):
    acme, conf, ids = room
    path = acme.path(f"/conferences/{conf}/participants")
    assert acme.api.put(path, {"action": "deaf"}).status == 202
    harness.wait_participant(conf, ids["ben"], hear=False)
    assert participant(acme, conf, ids["mo"])["hear"] is True
    assert acme.api.put(path, {"action": "undeaf"}).status == 202
    harness.wait_participant(conf, ids["ben"], hear=True)
    assert harness.control_sent() == [
        f"api conference {conf} deaf non_moderator",
        f"api conference {conf} undeaf non_moderator",
    ]


def test_kick_all_kicks_moderators_too(harness, room):
    acme, conf, _ = room
    reply = acme.api.put(acme.path(f"/conferences/{conf}/participants"), {"action": "kick"})
    assert reply.status == 202 and reply.data["command"] == f"conference {conf} kick all"
    wait_until(lambda: harness.live(conf) is None, what="conference gone")
    doc = acme.api.get(acme.path(f"/conferences/{conf}")).data
    assert doc["_read_only"]["members"] == 0 and doc["_read_only"]["participants"] == []
    assert "focus" not in doc
    assert_error(
        acme.api.put(acme.path(f"/conferences/{conf}"), {"action": "lock"}),
        409,
        "conference_not_running",
    )


@pytest.mark.parametrize(
    "action, field, value, reply",
    [
        ("mute", "speak", False, "+OK mute {id}"),
        ("deaf", "hear", False, "+OK deaf {id}"),
    ],
)
def test_one_participant(harness, room, action, field, value, reply):
    acme, conf, ids = room
    ann = ids["ann"]
    got = acme.api.put(acme.path(f"/conferences/{conf}/participants/{ann}"), {"action": action})
    assert got.status == 202
    assert got.data == {
        "action": action,
        "command": f"conference {conf} {action} {ann}",
        "reply": reply.format(id=ann),
    }
    harness.wait_participant(conf, ann, **{field: value})
    assert participant(acme, conf, ann)[field] is value
    assert participant(acme, conf, ids["ben"])[field] is not value
    undo = "un" + action
    assert (
        acme.api.put(acme.path(f"/conferences/{conf}/participants/{ann}"), {"action": undo}).status
        == 202
    )
    harness.wait_participant(conf, ann, **{field: not value})
    assert harness.control_sent() == [
        f"api conference {conf} {action} {ann}",
        f"api conference {conf} {undo} {ann}",
    ]


def test_kick_one(harness, room):
    acme, conf, ids = room
    path = acme.path(f"/conferences/{conf}/participants/{ids['ben']}")
    got = acme.api.put(path, {"action": "kick"})
    assert got.status == 202 and got.data["reply"] == f"+OK kicked {ids['ben']}"
    wait_until(lambda: ids["ben"] not in harness.live(conf).participants, what="kicked")
    assert_error(acme.api.get(path), 404, "bad_identifier")
    # Acting on the member that left: 404, nothing sent.
    data = assert_error(acme.api.put(path, {"action": "mute"}), 404, "bad_identifier")
    assert data["cause"] == str(ids["ben"])
    assert harness.control_sent() == [f"api conference {conf} kick {ids['ben']}"]


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_malformed_participant_id_is_400_and_nothing_is_sent(harness, room, bad_id):
    acme, conf, _ = room
    marks = harness.marks()
    path = acme.path(f"/conferences/{conf}/participants/{bad_id}")
    for reply in (acme.api.put(path, {"action": "kick"}), acme.api.get(path)):
        data = assert_error(reply, 400, "invalid_participant_id")
        assert set(data) == {"cause"}
        assert "%" not in data["cause"] or bad_id == "%EF%BC%97"  # the decoded id is echoed
    # Even when the conference does not exist or the body is bad, the id is refused first.
    assert_error(
        acme.api.put(
            acme.path(f"/conferences/{hexid(1)}/participants/{bad_id}"), {"action": "nope"}
        ),
        400,
        "invalid_participant_id",
    )
    assert harness.any_sent_since(marks) == []
    assert len(harness.live(conf).participants) == 3


def test_decoded_control_characters_are_echoed_as_the_cause(harness, room):
    acme, conf, _ = room
    reply = acme.api.put(
        acme.path(f"/conferences/{conf}/participants/7%0D%0Aapi%20version"), {"action": "mute"}
    )
    assert assert_error(reply, 400, "invalid_participant_id") == {"cause": "7\r\napi version"}


@pytest.mark.parametrize(
    "action",
    [
        "frobnicate",
        "MUTE",
        "mute\n",
        "mute\n\napi version",
        " mute",
        "lock",
        "",
        None,
        7,
        ["mute"],
        {"x": 1},
    ],
)
def test_unknown_member_action_is_400_and_nothing_is_sent(harness, room, action):
    acme, conf, ids = room
    marks = harness.marks()
    for path in (
        f"/conferences/{conf}/participants",
        f"/conferences/{conf}/participants/{ids['ann']}",
    ):
        data = assert_error(
            acme.api.put(acme.path(path), {"action": action}), 400, "invalid_action"
        )
        assert data == {
            "action": {
                "enum": {
                    "message": "Value not found in enumerated list of values",
                    "target": MEMBER_ACTIONS,
                }
            }
        }
    assert harness.any_sent_since(marks) == []


@pytest.mark.parametrize("action", ["mute", "LOCK", "lock\n", "unlock\r\n", "kick"])
def test_unknown_conference_action_is_400_and_nothing_is_sent(harness, room, action):
    acme, conf, _ = room
    marks = harness.marks()
    data = assert_error(
        acme.api.put(acme.path(f"/conferences/{conf}"), {"action": action}), 400, "invalid_action"
    )
    assert data["action"]["enum"]["target"] == CONFERENCE_ACTIONS
    assert harness.any_sent_since(marks) == []


def test_missing_action_and_bad_bodies(harness, room):
    acme, conf, ids = room
    marks = harness.marks()
    path = acme.path(f"/conferences/{conf}/participants/{ids['ann']}")
    assert_error(acme.api.put(path, {}), 400, "invalid_action")
    assert_error(acme.api.put(path, raw=b"mute"), 400, "invalid_json")
    assert_error(acme.api.put(path, raw=b""), 400, "invalid_json")
    assert_error(acme.api.put(path, body=["mute"]), 400, "invalid_request")
    assert_error(acme.api.put(path, body={"action": "mute"}), 400, "invalid_request")
    assert_error(acme.api.put(path, body={"data": "mute"}), 400, "invalid_request")
    assert harness.any_sent_since(marks) == []


def test_malformed_conference_id_is_404_and_nothing_is_sent(harness, room):
    acme, _, _ = room
    marks = harness.marks()
    for conf in ("json_list", "list", "A" * 32, "abc%0Aapi%20version", hexid(5) + "0"):
        for rest, data in (
            ("", {"action": "lock"}),
            ("/participants", {"action": "mute"}),
            ("/participants/1", {"action": "mute"}),
        ):
            reply = acme.api.put(acme.path(f"/conferences/{conf}{rest}"), data)
            assert_error(reply, 404, "bad_identifier")
    assert harness.any_sent_since(marks) == []


def test_not_running_is_409(harness):
    acme = harness.account()
    conf = harness.conference(acme)
    for rest, action in (("", "lock"), ("/participants", "mute"), ("/participants/1", "kick")):
        reply = acme.api.put(acme.path(f"/conferences/{conf}{rest}"), {"action": action})
        data = assert_error(reply, 409, "conference_not_running")
        assert data["cause"] == conf
    assert harness.control_sent() == []


def test_freeswitch_refusal_is_502_with_its_reply(harness, room):
    acme, conf, ids = room
    # The member vanished in FreeSWITCH without an event confd saw: it still looks live here.
    del harness.fakes["fs1"].model.conferences[conf].members[ids["ben"]]
    reply = acme.api.put(
        acme.path(f"/conferences/{conf}/participants/{ids['ben']}"), {"action": "mute"}
    )
    data = assert_error(reply, 502, "freeswitch_error")
    assert data == {"reply": f"-ERR Non-Existant ID {ids['ben']}"}
    assert harness.control_sent() == [f"api conference {conf} mute {ids['ben']}"]


def test_node_that_stops_answering_is_503_not_a_hang(harness, room):
    acme, conf, ids = room
    harness.fakes["fs1"].hold_replies(True)
    reply = acme.api.put(
        acme.path(f"/conferences/{conf}/participants/{ids['ann']}"), {"action": "mute"}
    )
    data = assert_error(reply, 503, "focus_unavailable")
    assert data == {"focus": "fs1"}


# --- a node restart while the request waits for the database (issue 10, item 10) ----------------


class HeldDatabase:
    """``store.conferences.get`` (the call an action makes after resolving the live conference)
    waits, once armed, until the test releases it: the node can restart meanwhile."""

    def __init__(self, harness, monkeypatch) -> None:
        self.entered, self.released = Event(), Event()
        store = harness.daemon.store.conferences
        real = store.get

        def held(*args, **kwargs):
            self.entered.set()
            assert self.released.wait(30), "never released"
            return real(*args, **kwargs)

        monkeypatch.setattr(store, "get", held)


def restart_fs1(harness, conf, *callers):
    """FreeSWITCH restarts (member ids from 1 again) and these callers join the conference
    anew; returns their member ids once confd has resynced the node."""
    fake, node = harness.fakes["fs1"], harness.node("fs1")
    sessions = node.connects
    fake.refuse(True)
    fake.restart(notice=None)
    ids = [fake.model.join(conf, caller_id_name=name) for name in callers]
    fake.refuse(False)

    def resynced():
        now = harness.live(conf)
        return (
            node.connected
            and node.connects > sessions
            and all(now is not None and i in now.participants for i in ids)
        )

    wait_until(resynced, timeout=10, what="fs1 restarted and resynced")
    return ids


def test_a_member_id_reused_after_a_restart_is_404_and_nothing_is_sent(harness, room, monkeypatch):
    """ "kick 1" resolved member 1 (Ann) before a database call; FreeSWITCH restarted meanwhile
    and member 1 is now another call: it is not kicked."""
    acme, conf, ids = room
    db = HeldDatabase(harness, monkeypatch)
    path = acme.path(f"/conferences/{conf}/participants/{ids['ann']}")
    request = gevent.spawn(acme.api.put, path, {"action": "kick"})
    assert db.entered.wait(10)
    (zed,) = restart_fs1(harness, conf, "Zed")
    assert zed == ids["ann"]  # the same member id, another call
    marks = harness.marks()
    db.released.set()
    reply = request.get(timeout=10)
    data = assert_error(reply, 404, "bad_identifier")
    assert data["cause"] == str(ids["ann"])
    assert harness.any_sent_since(marks) == []
    assert zed in harness.live(conf).participants
    assert [m.caller_id_name for m in harness.fakes["fs1"].model.members(conf)] == ["Zed"]


def test_a_member_gone_with_its_conference_after_a_restart_is_not_running(
    harness, room, monkeypatch
):
    acme, conf, ids = room
    db = HeldDatabase(harness, monkeypatch)
    path = acme.path(f"/conferences/{conf}/participants/{ids['ben']}")
    request = gevent.spawn(acme.api.put, path, {"action": "mute"})
    assert db.entered.wait(10)
    restart_fs1(harness, conf)  # back, with nobody in the conference
    marks = harness.marks()
    db.released.set()
    reply = request.get(timeout=10)
    assert_error(reply, 409, "conference_not_running")
    assert harness.any_sent_since(marks) == []


def test_a_conference_action_goes_to_the_instance_live_after_a_restart(
    make_harness, tmp_path, monkeypatch
):
    """lock names the conference, not one instance of it: when the conference's node restarted
    and the conference lives on another node by the time the command goes out, it is that
    instance that is locked (never a node that no longer hosts it)."""
    harness = make_harness(f"sqlite:///{tmp_path}/confd.db", nodes=("fs1", "fs2"))
    acme = harness.account()
    conf = harness.conference(acme, name="room")
    harness.join("fs1", conf, name="Ann")
    db = HeldDatabase(harness, monkeypatch)
    request = gevent.spawn(acme.api.put, acme.path(f"/conferences/{conf}"), {"action": "lock"})
    assert db.entered.wait(10)
    restart_fs1(harness, conf)  # fs1 is back, empty ...
    harness.join("fs2", conf, name="Ann again")  # ... and the caller dialled in through fs2
    assert harness.live(conf).node == "fs2"
    marks = harness.marks()
    db.released.set()
    reply = request.get(timeout=10)
    assert reply.status == 202, reply
    assert harness.any_sent_since(marks) == [f"api conference {conf} lock"]
    assert harness.fakes["fs2"].model.conferences[conf].locked
    wait_until(lambda: harness.live(conf).is_locked, what="the live instance locked")

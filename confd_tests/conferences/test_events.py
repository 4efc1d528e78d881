"""Event translation and the live state, with plain values (no sockets)."""

import json

import pytest

from confd.conferences import events as ev
from confd.conferences.model import GREGORIAN_OFFSET, Participant, to_gregorian
from confd.conferences.state import LiveState
from confd.esl import protocol as p
from confd_tests.contract import PARTICIPANT_KEYS
from confd_tests.replay import Capture

CONF_UUID = "846bf32d-575a-4d74-a381-20255f4cf852"


def frames(name):
    return [p.parse_event(f.frame) for f in Capture.load(name).events()]


def event(headers):
    """An event as FreeSWITCH would send it in plain format (values URL-encoded)."""
    return p.parse_event(p.FrameParser().feed(p.encode_plain_event(headers))[0])


def member_headers(action, member_id=7, **extra):
    h = {
        "Event-Subclass": "conference::maintenance",
        "Event-Name": "CUSTOM",
        "FreeSWITCH-Hostname": "vm",
        "Event-Date-Timestamp": "1795612808291867",
        "Conference-Name": "room1",
        "Conference-Profile-Name": "default",
        "Conference-Unique-ID": CONF_UUID,
        "Floor": "false",
        "Unique-ID": "37e5ded0-2507-480b-bd76-e7317c66d180",
        "Caller-Caller-ID-Name": "Outbound Call",
        "Caller-Caller-ID-Number": "1001",
        "Video": "false",
        "Hear": "true",
        "Speak": "true",
        "Talking": "false",
        "Mute-Detect": "false",
        "Member-ID": str(member_id),
        "Member-Type": "member",
        "Energy-Level": "100",
        "Current-Energy": "0",
        "Action": action,
    }
    h.update(extra)
    return h


def test_add_member_from_the_real_capture():
    events = frames("s1_room1_plain")
    assert events[0]["Action"] == "conference-create"
    create = ev.translate(events[0])
    assert create == ev.ConferenceCreated("room1", CONF_UUID, "default", 1795612808.291867)
    change = ev.translate(events[1])
    assert isinstance(change, ev.MemberEvent) and change.action == "add-member"
    alice = change.participant
    assert (alice.participant_id, alice.call_id) == (1, "37e5ded0-2507-480b-bd76-e7317c66d180")
    # originated call: Caller-Caller-ID-Name says "Outbound Call", the real name is Orig
    assert (alice.caller_id_name, alice.caller_id_number) == ("Alice", "1001")
    assert alice.switch_hostname == "vm"
    assert (alice.hear, alice.speak, alice.is_moderator, alice.energy_level) == (
        True,
        True,
        False,
        100,
    )
    assert alice.join_time == pytest.approx(1795612808.291867)
    assert alice.custom_channel_vars == {}


def test_carol_joined_muted_and_deaf_shows_only_in_flags():
    adds = [ev.translate(e) for e in frames("s1_room1_plain") if e["Action"] == "add-member"]
    carol = adds[2].participant
    assert carol.caller_id_name == "Carol"
    assert (carol.hear, carol.speak) == (False, False)
    bob = adds[1].participant
    assert bob.is_moderator


def test_caller_id_falls_back_to_caller_headers():
    h = member_headers("add-member")
    part = ev.translate(event(h)).participant
    assert (part.caller_id_name, part.caller_id_number) == ("Outbound Call", "1001")


def test_custom_channel_vars_with_prefix_and_presence():
    h = member_headers(
        "add-member",
        **{
            "variable_ecallmgr_Account-ID": "a" * 32,
            "variable_ecallmgr_Owner-ID": "o%1",
            "variable_ecallmgrX": "not a var of ours",
            "variable_other_Thing": "no",
            "Channel-Presence-ID": "1001@example.com",
        },
    )
    part = ev.translate(event(h)).participant
    assert part.custom_channel_vars == {"account_id": "a" * 32, "owner_id": "o%1"}
    assert part.channel_presence_id == "1001@example.com"
    other = ev.translate(event(h), channel_var_prefix="other_").participant
    assert other.custom_channel_vars == {"thing": "no"}


def test_conference_level_and_ignored_events():
    base = {
        "Event-Subclass": "conference::maintenance",
        "Event-Name": "CUSTOM",
        "Conference-Name": "room1",
        "Conference-Unique-ID": CONF_UUID,
    }
    assert ev.translate(event(dict(base, Action="lock"))) == ev.LockChanged(
        "room1", CONF_UUID, True
    )
    assert ev.translate(event(dict(base, Action="unlock"))).locked is False
    assert ev.translate(event(dict(base, Action="conference-destroy"))) == ev.ConferenceDestroyed(
        "room1", CONF_UUID
    )
    assert ev.translate(event(dict(base, Action="play-file-done"))) is None
    assert ev.translate(event(dict(base, Action="floor-change", **{"New-ID": "5"}))).new_id == 5
    assert ev.translate(event(dict(base, Action="floor-change", **{"New-ID": ""}))).new_id is None
    assert ev.translate(event({"Event-Name": "HEARTBEAT"})) is None
    other = dict(base, Action="lock", **{"Event-Subclass": "callcenter::info"})
    assert ev.translate(event(other)) is None


def test_json_list_snapshot_from_the_capture():
    cap = Capture.load("s1_room1_plain")
    cp = cap.checkpoints()[1]
    snap = ev.snapshot_from_json_list(cp.reply, "fs1", now=1000.0)
    (conf,) = snap.conferences
    assert (conf.name, conf.uuid, conf.node, conf.is_locked) == ("room1", CONF_UUID, "fs1", False)
    assert conf.start_time == 1000.0 - 3
    assert sorted(conf.participants) == [1, 2, 3]
    carol = conf.participants[3]
    assert (carol.hear, carol.speak, carol.caller_id_name) == (False, False, "Outbound Call")
    assert conf.participants[2].is_moderator and conf.participants[1].floor
    assert conf.participants[1].join_time == 1000.0 - 3


@pytest.mark.parametrize("text", ["[]", "", "-ERR no reply\n", "{}", "[1, 2]", "not json"])
def test_json_list_that_is_not_a_listing_means_nothing(text):
    assert ev.snapshot_from_json_list(text, "fs1", 0.0).conferences == []


def test_uuid_dump():
    dump = json.dumps(
        {
            "Unique-ID": "37e5ded0-2507-480b-bd76-e7317c66d180",
            "FreeSWITCH-Hostname": "vm",
            "Caller-Caller-ID-Name": "Outbound Call",
            "Caller-Orig-Caller-ID-Name": "Alice",
            "Caller-Orig-Caller-ID-Number": "1001",
            "variable_ecallmgr_Account-ID": "b" * 32,
            "variable_presence_id": "1001@x",
        }
    )
    data = ev.channel_data_from_uuid_dump(dump, "ecallmgr_")
    assert data.caller_id_name == "Alice" and data.custom_channel_vars == {"account_id": "b" * 32}
    assert data.channel_presence_id == "1001@x"
    assert ev.channel_data_from_uuid_dump("-ERR No such channel!\n", "ecallmgr_") is None


def test_gregorian_seconds():
    # the seed's example join_time 63635217275 is 2016-07-13 in Gregorian seconds
    assert to_gregorian(63635217275 - GREGORIAN_OFFSET) == 63635217275
    assert to_gregorian(0) == 62167219200


# --- state ---------------------------------------------------------------------------------


def apply_all(state, events, node="fs1"):
    out = []
    for e in events:
        change = ev.translate(e)
        if change is not None:
            out += state.apply(node, change)
    return out


def test_state_follows_s1_to_the_end_and_reports_updates():
    state = LiveState()
    updates = apply_all(state, frames("s1_room1_plain"))
    kinds = [u.event for u in updates]
    assert kinds[0] == "conference-create" and kinds[-1] == "conference-destroy"
    assert kinds.count("add-member") == 5 and kinds.count("del-member") == 5
    assert kinds.count("lock") == 2 and kinds.count("unlock") == 2
    assert kinds.count("kick-member") == 4
    assert state.conferences() == [] and state.find("room1") == []


def test_member_event_for_unknown_member_creates_it_and_its_conference():
    state = LiveState()
    state.apply("fs1", ev.translate(event(member_headers("mute-member", Speak="false"))))
    (conf,) = state.find("room1")
    assert conf.participants[7].speak is False and conf.profile == "default"


def test_flags_refresh_keeps_join_time_and_channel_vars():
    state = LiveState()
    add = member_headers("add-member", **{"variable_ecallmgr_Account-ID": "acc"})
    state.apply("fs1", ev.translate(event(add)))
    later = member_headers(
        "start-talking", Talking="true", **{"Event-Date-Timestamp": "1795612900000000"}
    )
    (u,) = state.apply("fs1", ev.translate(event(later)))
    assert u.event == "start-talking" and u.participant.talking
    part = state.find("room1")[0].participants[7]
    assert part.talking and part.join_time == pytest.approx(1795612808.291867)
    assert part.custom_channel_vars == {"account_id": "acc"}
    # a mute clears talking with no stop-talking (events.md)
    state.apply("fs1", ev.translate(event(member_headers("mute-member", Speak="false"))))
    assert not part.talking and not part.speak


def test_floor_moves():
    state = LiveState()
    state.apply("fs1", ev.translate(event(member_headers("add-member", 1, Floor="true"))))
    state.apply(
        "fs1", ev.translate(event(member_headers("add-member", 2, **{"Unique-ID": "x" * 36})))
    )
    base = {
        "Event-Subclass": "conference::maintenance",
        "Conference-Name": "room1",
        "Conference-Unique-ID": CONF_UUID,
        "Action": "floor-change",
    }
    state.apply("fs1", ev.translate(event(dict(base, **{"New-ID": "2"}))))
    conf = state.find("room1")[0]
    assert (conf.participants[1].floor, conf.participants[2].floor) == (False, True)
    state.apply("fs1", ev.translate(event(dict(base, **{"New-ID": ""}))))
    assert not any(p.floor for p in conf.participants.values())


def test_nodes_are_separate_and_drop_node_removes_only_one():
    state = LiveState()
    state.apply("fs1", ev.translate(event(member_headers("add-member", 1))))
    other = member_headers(
        "add-member", 1, **{"Conference-Unique-ID": "u2", "Conference-Name": "room2"}
    )
    state.apply("fs2", ev.translate(event(other)))
    assert state.counts("fs1") == (1, 1) and state.counts("fs2") == (1, 1)
    updates = state.drop_node("fs1")
    assert [(u.event, u.node, u.conference.name, u.reason) for u in updates] == [
        ("del-member", "fs1", "room1", "node_lost"),
        ("conference-destroy", "fs1", "room1", "node_lost"),
    ]
    assert updates[0].participant.participant_id == 1 and updates[1].participant is None
    assert state.counts("fs1") == (0, 0) and state.find("room1") == []
    assert state.counts("fs2") == (1, 1)


def test_snapshot_replaces_the_node_and_keeps_what_json_list_lacks():
    state = LiveState()
    add = member_headers(
        "add-member",
        1,
        **{"variable_ecallmgr_Account-ID": "acc", "Caller-Orig-Caller-ID-Name": "Alice"},
    )
    state.apply("fs1", ev.translate(event(add)))
    stale = member_headers("add-member", 9, **{"Unique-ID": "gone-call"})
    state.apply("fs1", ev.translate(event(stale)))
    snap = ev.Snapshot(
        [
            ev.snapshot_from_json_list(
                json.dumps(
                    [
                        {
                            "conference_name": "room1",
                            "conference_uuid": CONF_UUID,
                            "run_time": 5,
                            "locked": True,
                            "members": [
                                {
                                    "type": "caller",
                                    "id": 1,
                                    "uuid": "37e5ded0-2507-480b-bd76-e7317c66d180",
                                    "caller_id_name": "Outbound Call",
                                    "flags": {"can_hear": True, "can_speak": False},
                                    "join_time": 3,
                                    "energy": 100,
                                }
                            ],
                        }
                    ]
                ),
                "fs1",
                2e9,
            ).conferences[0]
        ]
    )
    updates = state.apply("fs1", snap)
    # what the resync made confd forget is published as such (events.md, lifecycle step 6)
    assert [(u.event, u.participant.participant_id, u.reason) for u in updates] == [
        ("del-member", 9, "resync")
    ]
    conf = state.find("room1")[0]
    assert conf.is_locked and list(conf.participants) == [1]
    alice = conf.participants[1]
    assert alice.speak is False  # fresh flags from the snapshot
    assert alice.caller_id_name == "Alice"  # the events' caller id, not "Outbound Call"
    assert alice.custom_channel_vars == {"account_id": "acc"}
    assert alice.join_time == pytest.approx(1795612808.291867)


def test_channel_data_fills_a_resynced_participant():
    state = LiveState()
    snap = ev.snapshot_from_json_list(
        json.dumps(
            [
                {
                    "conference_name": "room1",
                    "conference_uuid": CONF_UUID,
                    "run_time": 5,
                    "members": [
                        {
                            "type": "caller",
                            "id": 4,
                            "uuid": "abc",
                            "caller_id_name": "Outbound Call",
                            "flags": {},
                            "join_time": 1,
                        }
                    ],
                }
            ]
        ),
        "fs1",
        100.0,
    )
    state.apply("fs1", snap)
    state.apply("fs1", ev.ChannelData("abc", "vm", "Dave", "1004", {"account_id": "z"}, None))
    part = state.find("room1")[0].participants[4]
    assert (part.caller_id_name, part.switch_hostname, part.custom_channel_vars) == (
        "Dave",
        "vm",
        {"account_id": "z"},
    )


def test_participant_to_api_has_every_field_of_api_md():
    part = Participant(3, "c", "room1", "u", join_time=1000.0)
    api = part.to_api(now=1095.5)
    assert set(api) == PARTICIPANT_KEYS
    assert api["duration"] == 95 and api["join_time"] == 1000 + GREGORIAN_OFFSET


def listing(*confs):
    """A json_list reply: (name, uuid, [(member id, call id), ...]) per conference."""
    return json.dumps(
        [
            {
                "conference_name": name,
                "conference_uuid": uuid,
                "run_time": 5,
                "members": [
                    {"type": "caller", "id": mid, "uuid": call, "flags": {}, "join_time": 1}
                    for mid, call in members
                ],
            }
            for name, uuid, members in confs
        ]
    )


def test_node_loss_then_resync_publish_what_confd_forgot_and_learned():
    """events.md, lifecycle steps 5-6: a lost node's participants leave and its conferences end
    with reason node_lost; the resync's conferences and participants come back with reason
    resync, each conference before its members; real events carry no reason."""
    state = LiveState()
    real = state.apply("fs1", ev.translate(event(member_headers("add-member", 1))))
    real += state.apply("fs1", ev.translate(event(member_headers("mute-member", 1, Speak="false"))))
    assert [(u.event, u.reason) for u in real] == [("add-member", None), ("mute-member", None)]
    state.apply(
        "fs1",
        ev.translate(
            event(
                member_headers(
                    "add-member",
                    2,
                    **{"Conference-Unique-ID": "u2", "Conference-Name": "room2", "Unique-ID": "c2"},
                )
            )
        ),
    )
    lost = state.drop_node("fs1")
    assert sorted((u.event, u.conference.name, u.reason) for u in lost) == [
        ("conference-destroy", "room1", "node_lost"),
        ("conference-destroy", "room2", "node_lost"),
        ("del-member", "room1", "node_lost"),
        ("del-member", "room2", "node_lost"),
    ]
    # each conference's members leave before it ends
    for u in lost:
        if u.event == "conference-destroy":
            later = lost[lost.index(u) + 1 :]
            assert not any(v.conference.uuid == u.conference.uuid for v in later)
    snap = ev.snapshot_from_json_list(
        listing(("room1", "n1", [(1, "k1"), (2, "k2")]), ("room3", "n3", [(3, "k3")])), "fs1", 9.0
    )
    snap = ev.Snapshot(
        snap.conferences, {"k1": ev.ChannelData("k1", "vm", "Ann", "1", {"account_id": "a"}, None)}
    )
    found = state.apply("fs1", snap)
    assert [(u.event, u.conference.name, u.reason) for u in found] == [
        ("conference-create", "room1", "resync"),
        ("add-member", "room1", "resync"),
        ("add-member", "room1", "resync"),
        ("conference-create", "room3", "resync"),
        ("add-member", "room3", "resync"),
    ]
    # channel data fetched before the snapshot was applied is in the resync's add-member
    ann = found[1].participant
    assert (ann.call_id, ann.caller_id_name, ann.custom_channel_vars) == (
        "k1",
        "Ann",
        {"account_id": "a"},
    )


def test_resync_of_a_node_still_known_publishes_only_the_difference():
    state = LiveState()
    state.apply(
        "fs1",
        ev.snapshot_from_json_list(
            listing(("room1", "n1", [(1, "k1"), (2, "k2")]), ("room2", "n2", [(5, "k5")])),
            "fs1",
            9.0,
        ),
    )
    again = ev.snapshot_from_json_list(
        listing(("room1", "n1", [(1, "k1"), (3, "k3")]), ("room4", "n4", [(4, "k4")])), "fs1", 9.0
    )
    updates = state.apply("fs1", again)
    assert [(u.event, u.conference.name, u.reason) for u in updates] == [
        ("del-member", "room1", "resync"),
        ("del-member", "room2", "resync"),
        ("conference-destroy", "room2", "resync"),
        ("add-member", "room1", "resync"),
        ("conference-create", "room4", "resync"),
        ("add-member", "room4", "resync"),
    ]
    assert [u.participant.call_id for u in updates if u.participant] == ["k2", "k5", "k3", "k4"]


def test_a_dropped_conference_still_tells_which_call_a_member_id_named():
    """A request that resolved the conference before a node loss can check the member it meant
    against the live state (actions: "kick 5" must not hit whoever is member 5 now)."""
    state = LiveState()
    state.apply(
        "fs1", ev.snapshot_from_json_list(listing(("room1", "n1", [(5, "old")])), "fs1", 9.0)
    )
    seen = state.find("room1")[0]
    assert state.is_live(seen) and state.member("fs1", "n1", 5).call_id == "old"
    state.drop_node("fs1")
    state.apply(
        "fs1", ev.snapshot_from_json_list(listing(("room1", "n2", [(5, "new")])), "fs1", 9.0)
    )
    assert seen.participants[5].call_id == "old"  # as it was when it was resolved
    assert not state.is_live(seen) and state.member("fs1", "n1", 5) is None
    assert state.member("fs1", "n2", 5).call_id == "new"

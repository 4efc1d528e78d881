"""confd.cluster.wire: live conferences and requests as JSON values between instances.

A conference travels whole and comes back equal (every participant field); what a peer sends
that this version would not is a ``WireError``, never another exception type.
"""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confd.cluster import wire
from confd.conferences.model import Conference, Participant

UUID = "2f1c7a52-1111-4c1e-9a55-0123456789ab"


def participant(pid=7, **kw) -> Participant:
    values = dict(
        participant_id=pid,
        call_id="call-%d" % pid,
        conference_name="room1",
        conference_uuid=UUID,
        switch_hostname="fs-a",
        is_moderator=True,
        floor=True,
        hear=False,
        speak=False,
        talking=True,
        mute_detect=True,
        video=True,
        energy_level=300,
        current_energy=12,
        caller_id_name="Ann Ö",
        caller_id_number="+331234",
        join_time=1700000000.25,
        custom_channel_vars={"Account-ID": "acc1", "Owner-ID": "u1"},
        channel_presence_id="100@example.com",
    )
    values.update(kw)
    return Participant(**values)


def conference() -> Conference:
    conf = Conference(
        name="room1", uuid=UUID, node="fs1", profile="default", start_time=1700000000.5
    )
    conf.is_locked = True
    for p in (participant(7), participant(3, is_moderator=False, channel_presence_id=None)):
        conf.participants[p.participant_id] = p
    return conf


def through_json(value):
    return orjson.loads(orjson.dumps(value))


def test_every_participant_field_is_set_to_a_non_default_in_this_test():
    # So that the round trip below proves each field travels (a new field must be added here).
    p = participant(7)
    for f in dataclasses.fields(Participant):
        if f.name in ("participant_id", "call_id", "conference_name", "conference_uuid"):
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        assert getattr(p, f.name) != default, f.name


def test_conference_round_trip_keeps_everything():
    conf = conference()
    back = wire.conference_from_wire(through_json(wire.conference_to_wire(conf)))
    assert back == conf
    assert back.participants[7] == conf.participants[7]
    assert back.participants[7] is not conf.participants[7]


def test_participants_travel_in_member_id_order():
    d = wire.conference_to_wire(conference())
    assert [p["participant_id"] for p in d["participants"]] == [3, 7]


def test_custom_channel_vars_are_copied_not_shared():
    p = participant(1)
    d = wire.participant_to_wire(p)
    d["custom_channel_vars"]["x"] = "y"
    assert "x" not in p.custom_channel_vars


def test_conferences_round_trip():
    a, b = conference(), Conference(name="room2", uuid="u2", node="fs2")
    items = through_json([wire.conference_to_wire(c) for c in (a, b)])
    assert wire.conferences_from_wire(items) == [a, b]
    assert wire.conferences_from_wire([]) == []


def test_missing_optional_conference_fields_take_their_defaults():
    conf = wire.conference_from_wire({"name": "r", "uuid": "u", "node": "fs1"})
    assert conf == Conference(name="r", uuid="u", node="fs1")


def good() -> dict:
    return through_json(wire.conference_to_wire(conference()))


def without(key):
    d = good()
    del d[key]
    return d


def with_(key, value):
    d = good()
    d[key] = value
    return d


def with_participant(value):
    d = good()
    d["participants"] = [value]
    return d


BAD_CONFERENCES = [
    None,
    "room1",
    [],
    42,
    without("name"),
    without("uuid"),
    without("node"),
    with_("start_time", "soon"),
    with_("start_time", [1]),
    with_("start_time", None),
    with_("participants", 5),
    with_("participants", [1]),
    with_participant(None),
    with_participant({}),
    with_participant({"participant_id": 1}),
    with_participant(
        {"participant_id": "1", "call_id": "c", "conference_name": "r", "conference_uuid": "u"}
    ),
    with_participant(
        {"participant_id": 1, "call_id": 2, "conference_name": "r", "conference_uuid": "u"}
    ),
]


@pytest.mark.parametrize("value", BAD_CONFERENCES)
def test_bad_conference_is_a_wire_error(value):
    with pytest.raises(wire.WireError):
        wire.conference_from_wire(value)


@pytest.mark.parametrize("value", [None, {}, "x", 3, {"conferences": []}])
def test_conferences_not_a_list_is_a_wire_error(value):
    with pytest.raises(wire.WireError):
        wire.conferences_from_wire(value)


def test_one_bad_conference_in_a_list_is_a_wire_error():
    with pytest.raises(wire.WireError):
        wire.conferences_from_wire([good(), {"name": "x"}])


@pytest.mark.parametrize("value", [None, [], "p", {"participant_id": True}])
def test_bad_participant_is_a_wire_error(value):
    with pytest.raises(wire.WireError):
        wire.participant_from_wire(value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    ["name", "uuid", "node", "profile", "start_time", "is_locked", "participants"]
    + [f.name for f in dataclasses.fields(Participant)]
)


@settings(max_examples=400, deadline=None)
@given(JSON)
def test_any_json_is_a_conference_or_a_wire_error(value):
    try:
        wire.conference_from_wire(value)
    except wire.WireError:
        pass


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(FIELDS, JSON, max_size=8), st.lists(st.dictionaries(FIELDS, JSON), max_size=3)
)
def test_conference_like_json_is_a_conference_or_a_wire_error(fields, participants):
    d = good()
    d.update(fields)
    if participants:
        d["participants"] = participants
    try:
        wire.conference_from_wire(d)
    except wire.WireError:
        pass
    try:
        wire.conferences_from_wire([d])
    except wire.WireError:
        pass


def test_a_field_this_version_does_not_know_is_ignored():
    # A newer peer may send more: what this version knows still travels.
    d = wire.participant_to_wire(participant(1))
    d["added_later"] = 1
    assert wire.participant_from_wire(d) == participant(1)


BASE = {"participant_id": 1, "call_id": "c", "conference_name": "r", "conference_uuid": "u"}
WRONG_TYPES = [
    ("custom_channel_vars", 5),
    ("custom_channel_vars", ["a"]),
    ("custom_channel_vars", {"a": 1}),
    ("join_time", "soon"),
    ("energy_level", "loud"),
    ("current_energy", None),
    ("hear", "no"),
    ("is_moderator", 1.5),
    ("caller_id_name", 5),
    ("switch_hostname", None),
    ("channel_presence_id", 5),
    ("conference_uuid", ["u"]),
]


def test_a_participant_field_of_the_wrong_type_is_a_wire_error():
    # Accepted, such a value would fail later, far from the wire: rendering the participant
    # for the API (a 500) instead of the asker's "instance answered badly".
    accepted = []
    for field, value in WRONG_TYPES:
        try:
            wire.participant_from_wire(dict(BASE, **{field: value}))
        except wire.WireError:
            continue
        accepted.append((field, value))
    assert accepted == []


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from([f.name for f in dataclasses.fields(Participant)]), JSON))
def test_a_participant_from_the_wire_renders_for_the_api(fields):
    try:
        p = wire.participant_from_wire(dict(BASE, **fields))
    except wire.WireError:
        return
    p.to_api(1700000000.0)


def test_wire_error_is_a_value_error():
    assert issubclass(wire.WireError, ValueError)


def test_command_request_shape():
    conf = conference()
    member = conf.participants[7]
    body = wire.command_request("fs1", conf, "mute", "7", member)
    assert through_json(body) == {
        "kind": "command",
        "node": "fs1",
        "conference": "room1",
        "uuid": UUID,
        "action": "mute",
        "target": "7",
        "member": {"participant_id": 7, "call_id": "call-7"},
    }


def test_command_request_without_member_or_target():
    body = wire.command_request("fs2", conference(), "lock", None, None)
    assert body == {
        "kind": "command",
        "node": "fs2",
        "conference": "room1",
        "uuid": UUID,
        "action": "lock",
        "target": None,
        "member": None,
    }


def test_request_and_reply():
    assert wire.request(wire.KIND_FIND, name="room1") == {"kind": "find", "name": "room1"}
    assert wire.request(wire.KIND_LIST) == {"kind": "list"}
    assert wire.reply("a", ["fs1"], conferences=[]) == {
        "instance": "a",
        "owned": ["fs1"],
        "conferences": [],
    }
    assert wire.KINDS == ("find", "list", "status", "command")
    assert wire.OUTCOMES == ("ok", "unavailable", "rejected", "stale", "invalid")

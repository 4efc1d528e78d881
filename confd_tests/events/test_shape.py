"""Pure parts: event shapes, routing keys, filter, bindings; the hub and the ownership cache."""

import gevent
import pytest

import confd
from confd.conferences import events as ev
from confd.conferences.model import Conference, Participant
from confd.conferences.state import LiveState, Update
from confd.events import shape
from confd.events.hub import EventHub
from confd.events.ownership import OwnershipResolver
from confd.metrics import Metrics
from confd_tests.contract import (
    CONFERENCE_EVENT_KEYS,
    OPTIONAL_EVENT_KEY,
    PARTICIPANT_EVENT_KEYS,
)

CONF = "0123456789abcdef0123456789abcdef"
UUID = "e2e9007d-a4e4-4d5c-b9bf-013020e2f3fe"
CALL = "2f73be18-3d58-47dd-b191-6b94b664fe45"


def participant(**kw):
    base = dict(
        participant_id=20,
        call_id=CALL,
        conference_name=CONF,
        conference_uuid=UUID,
        switch_hostname="fs-a.example",
        caller_id_name="Alice",
        caller_id_number="1001",
        energy_level=20,
        custom_channel_vars={"account_id": "a" * 32, "owner_id": "o1"},
        channel_presence_id="1001@example.com",
    )
    base.update(kw)
    return Participant(**base)


def conference(locked=False):
    return Conference(name=CONF, uuid=UUID, node="fs1", is_locked=locked)


def build(event, p=None, **kw):
    u = Update(event, "fs1", conference(kw.pop("locked", False)), p)
    kw.setdefault("counts", (0, 0))
    return shape.build(
        u,
        node="confd-1",
        app_version="9.9",
        msg_id="00112233aabbccdd",
        focus=shape.focus_of(u, kw.pop("hostname", None)),
        **kw,
    )


@pytest.mark.parametrize("event", shape.PARTICIPANT_EVENTS)
def test_participant_event_every_key_in_order(event):
    p = participant(talking=event == "start-talking", is_moderator=True, join_time=1.7e9 + 0.75)
    pub = build(event, p, account_hint="h" * 32)
    assert list(pub.data) == PARTICIPANT_EVENT_KEYS
    d = pub.data
    assert d["event"] == event and pub.name == event
    assert d["custom_channel_vars"] == {"account_id": "a" * 32, "owner_id": "o1"}
    assert d["channel_presence_id"] == "1001@example.com"
    assert (d["caller_id_name"], d["caller_id_number"]) == ("Alice", "1001")
    assert d["participant_id"] == 20 and d["energy_level"] == 20
    # events.md: beyond the seed's keys, the role and the join time in Gregorian seconds
    assert d["is_moderator"] is True
    assert d["join_time"] == 1_700_000_000 + 62167219200
    assert d["talking"] is (event == "start-talking")
    assert (d["instance_id"], d["conference_id"], d["call_id"]) == (UUID, CONF, CALL)
    assert d["focus"] == "fs-a.example"
    assert d["node"] == "confd-1" and d["msg_id"] == "00112233aabbccdd"
    assert d["event_name"] == "participant_event" and d["event_category"] == "conference"
    assert (d["app_name"], d["app_version"]) == ("confd", "9.9")
    assert d["routing_key"] == "participant_event"
    assert pub.routing_key == "conference.event.%s.%s" % (CONF, CALL)
    # Whose conference it is, the hub says (one rule for every event), not the event's member.
    assert pub.account_hint == "h" * 32


@pytest.mark.parametrize("event", ["lock", "unlock", "conference-create", "conference-destroy"])
def test_conference_event_shape(event):
    pub = build(event, locked=event == "lock", counts=(3, 1), hostname="fs-a.example")
    assert list(pub.data) == CONFERENCE_EVENT_KEYS
    d = pub.data
    assert d["event_name"] == "conference_event" and d["routing_key"] == "conference_event"
    assert (d["members"], d["admins"], d["is_locked"]) == (3, 1, event == "lock")
    assert d["focus"] == "fs-a.example"  # learned from the node's earlier member events
    assert pub.routing_key == "conference.event.%s.conference" % CONF
    assert pub.call_id == "conference"


def test_conference_event_focus_falls_back_to_node_name():
    assert build("lock").data["focus"] == "fs1"


def test_kick_member_is_conference_level_with_the_call_id():
    pub = build("kick-member", participant(), counts=(1, 0))
    keys = CONFERENCE_EVENT_KEYS
    assert list(pub.data) == keys[:7] + ["call_id", "participant_id"] + keys[7:]
    assert pub.data["event_name"] == "conference_event"
    assert pub.data["call_id"] == CALL and pub.data["participant_id"] == 20
    assert pub.routing_key == "conference.event.%s.%s" % (CONF, CALL)


def test_not_published_kinds():
    assert build("energy-level-member", participant()) is None
    assert build("floor-change") is None
    assert build("add-member", None) is None
    assert build("kick-member", None) is None


def test_msg_id_is_16_hex():
    ids = {shape.new_msg_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


def test_event_filter():
    assert shape.event_filter(None) == frozenset(ev.PARTICIPANT_EVENTS + ev.CONFERENCE_EVENTS)
    assert len(shape.event_filter(None)) == 13
    assert shape.event_filter(["add-member", "lock", "bogus"]) == {"add-member", "lock"}
    assert shape.event_filter([]) == frozenset()


@pytest.mark.parametrize(
    "text,conf,call",
    [
        ("conference.event.*.*", None, None),
        ("conference.event.%s.*" % CONF, CONF, None),
        ("conference.event.%s.%s" % (CONF, CALL), CONF, CALL),
        ("conference.event.%s.conference" % CONF, CONF, "conference"),
    ],
)
def test_bindings(text, conf, call):
    b = shape.parse_binding(text)
    assert (b.conference_id, b.call_id, b.text) == (conf, call, text)
    assert b.matches(CONF, CALL) is (call in (None, CALL))
    assert b.matches("other", CALL) is (conf is None)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        5,
        "",
        "conference.event.*",
        "conference.event.*.*.*",
        "conference.events.*.*",
        "call.event.*.*",
        "conference.event.a b.*",
        "conference.event..*",
        "conference.event.#",
    ],
)
def test_bad_bindings(bad):
    with pytest.raises(shape.BindingError):
        shape.parse_binding(bad)


def test_binding_or_bindings():
    assert [b.text for b in shape.parse_bindings({"binding": "conference.event.*.*"})] == [
        "conference.event.*.*"
    ]
    two = shape.parse_bindings({"bindings": ["conference.event.a.*", "conference.event.b.*"]})
    assert [b.conference_id for b in two] == ["a", "b"]
    for data in ({}, {"bindings": []}, {"bindings": "conference.event.*.*"}):
        with pytest.raises(shape.BindingError):
            shape.parse_bindings(data)


# --- the hub ---------------------------------------------------------------------------------


def make_hub(**kw):
    state = LiveState()
    metrics = Metrics()
    hub = EventHub(
        node_name="confd-1", app_version=confd.__version__, state=state, metrics=metrics, **kw
    )
    return hub, state, metrics


def member_event(action, **kw):
    return ev.MemberEvent(action, participant(**kw), "default", 1.0)


def apply(hub, state, change, node="fs1"):
    hub.publish(state.apply(node, change))


def test_hub_builds_nothing_without_consumers(monkeypatch):
    hub, state, _ = make_hub()
    idle = []
    hub.add_sink(idle.append, active=lambda: False)  # e.g. the fan-out with no subscription
    calls = []
    monkeypatch.setattr(shape, "build", lambda *a, **k: calls.append(a))
    apply(hub, state, member_event("add-member"))
    assert calls == [] and idle == [] and hub.published == 0 and not hub.has_consumers()


def test_hub_publishes_filtered_events_to_every_sink():
    hub, state, metrics = make_hub(publish_filter=["add-member", "lock"])
    first, second = [], []
    hub.add_sink(first.append)
    hub.add_sink(second.append, active=lambda: False)  # it says no, but another sink wants
    apply(hub, state, ev.ConferenceCreated(CONF, UUID, "default", 1.0))  # filtered out
    apply(hub, state, member_event("add-member"))
    apply(hub, state, member_event("mute-member", speak=False))  # filtered out
    apply(hub, state, ev.LockChanged(CONF, UUID, True))
    assert [p.name for p in first] == ["add-member", "lock"]
    assert [p.name for p in second] == ["add-member", "lock"]
    assert first[0] is second[0]  # built once
    lock = first[1]
    # Counts come from the live state (the update's conference copy is detached).
    assert (lock.data["members"], lock.data["admins"]) == (1, 0)
    assert lock.data["focus"] == "fs-a.example" and lock.account_hint == "a" * 32
    text = metrics.render()[0].decode()
    assert 'confd_events_published_total{event="lock"} 1.0' in text


def test_hub_node_loss_publishes_leaves_and_the_end_with_reason_node_lost():
    hub, state, _ = make_hub()
    got = []
    hub.add_sink(got.append)
    apply(hub, state, member_event("add-member"))
    apply(hub, state, member_event("add-member", participant_id=21, call_id="c2"))
    # add-member creates the conference when its conference-create was missed, silently.
    assert [p.name for p in got] == ["add-member", "add-member"]
    assert not any(shape.REASON_KEY in p.data for p in got)  # real joins carry no reason
    del got[:]
    hub.publish(state.drop_node("fs1"))
    assert [(p.name, p.call_id) for p in got] == [
        ("del-member", CALL),
        ("del-member", "c2"),
        ("conference-destroy", "conference"),
    ]
    assert [p.data["reason"] for p in got] == ["node_lost"] * 3
    # what a consumer sees of the conference's end: nobody left in it
    assert (got[2].data["members"], got[2].data["admins"]) == (0, 0)


@pytest.mark.parametrize("reason", ["node_lost", "resync"])
@pytest.mark.parametrize("event", ["add-member", "del-member", "conference-create"])
def test_reason_is_the_last_key_of_events_confd_publishes_of_its_own_accord(event, reason):
    p = participant() if event in shape.PARTICIPANT_EVENTS else None
    pub = shape.build(
        Update(event, "fs1", conference(), p, reason),
        node="confd-1",
        app_version="9.9",
        msg_id="00112233aabbccdd",
        focus="fs1",
    )
    keys = PARTICIPANT_EVENT_KEYS if p is not None else CONFERENCE_EVENT_KEYS
    assert list(pub.data) == keys + [OPTIONAL_EVENT_KEY]
    assert pub.data[OPTIONAL_EVENT_KEY] == reason and pub.body().endswith(
        b',"reason":"%s"}' % reason.encode()
    )


def test_sink_failure_does_not_stop_the_others():
    hub, state, _ = make_hub()

    def broken(pub):
        raise RuntimeError("boom")

    got = []
    hub.add_sink(broken)
    hub.add_sink(got.append)
    apply(hub, state, member_event("add-member"))
    assert [p.name for p in got] == ["add-member"]


# --- ownership ---------------------------------------------------------------------------------


def test_ownership_document_wins_then_hint_then_nobody():
    docs = {"doc1": "acct-doc"}
    now = [100.0]
    calls = []

    def lookup(ids):
        calls.append(list(ids))
        return {i: docs[i] for i in ids if i in docs}

    r = OwnershipResolver(lookup, ttl=5, clock=lambda: now[0])
    assert r.owner("doc1", "acct-hint") == "acct-doc"
    assert r.owner("adhoc", "acct-hint") == "acct-hint"
    assert r.owner("adhoc", None) is None
    assert calls == [["doc1"], ["adhoc"]]  # cached within the TTL
    docs["adhoc"] = "acct-new"
    assert r.owner("adhoc", "acct-hint") == "acct-hint"
    now[0] += 6
    # Expired: still answered from the cache, never waiting for the database...
    assert r.owner("adhoc", "acct-hint") == "acct-hint"
    assert r.owner("doc1", None) == "acct-doc"
    assert calls == [["doc1"], ["adhoc"]]
    # ...while one background query refreshes every expired entry.
    gevent.sleep(0)
    assert calls[2:] == [["adhoc", "doc1"]]
    assert r.owner("adhoc", "acct-hint") == "acct-new"


def test_ownership_fails_closed_and_retries():
    now = [0.0]
    state = {"fail": True}

    def lookup(ids):
        if state["fail"]:
            raise OSError("database down")
        return {}

    r = OwnershipResolver(lookup, ttl=5, clock=lambda: now[0])
    assert r.owner("c", "acct") is None
    state["fail"] = False
    now[0] += 1.5
    assert r.owner("c", "acct") is None  # the retry runs in the background
    r.refresh()
    assert r.owner("c", "acct") == "acct"
    # A refresh that fails withholds again (fail closed), until a lookup succeeds.
    now[0] += 6
    state["fail"] = True
    r.owner("c", "acct")
    r.refresh()
    assert r.owner("c", "acct") is None


def test_ownership_cache_bounded():
    r = OwnershipResolver(lambda ids: {}, max_entries=3)
    for i in range(10):
        r.owner("c%d" % i, None)
    assert len(r._cache) == 3

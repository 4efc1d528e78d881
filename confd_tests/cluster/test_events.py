"""confd.cluster.events: the owner's headers, and ``Incoming`` turning the events queue's
messages back into ``Published`` events for the websocket fan-out (pure: amqp.Message values;
the same through a real RabbitMQ is in test_bus.py)."""

from __future__ import annotations

import amqp
import pytest

from confd.cluster import events as cev
from confd.events import shape

AT = 1_700_000_000.5


def published(name="add-member", conference="room1", call="call-1", **kw) -> shape.Published:
    return shape.Published(
        name=name,
        conference_id=conference,
        call_id=call,
        routing_key=shape.routing_key(conference, call),
        data={"Event": name, "Conference-Name": conference, "é": "ü"},
        account_hint=kw.pop("account_hint", "acc1"),
        owner_pending=kw.pop("owner_pending", False),
        at=kw.pop("at", AT),
        **kw,
    )


def message(pub: shape.Published, instance="owner", routing_key=None, headers=None, body=None):
    """What the events queue hands over: the message the owner's publisher made."""
    msg = amqp.Message(
        pub.body() if body is None else body,
        content_type="application/json",
        application_headers=(cev.publish_headers(instance)(pub) if headers is None else headers),
    )
    msg.delivery_info = {"routing_key": routing_key or pub.routing_key, "exchange": "conference"}
    return msg


class Sink:
    def __init__(self, since=0.0, instance="here", **kw):
        self.got = []
        self.since = since
        self.incoming = cev.Incoming(instance, self.got.append, lambda: self.since, **kw)

    def __call__(self, msg):
        self.incoming(msg)


# --- publish_headers --------------------------------------------------------------------------


def test_publish_headers():
    h = cev.publish_headers("a1")(published(account_hint="acc9", owner_pending=True))
    assert h == {
        "x-confd-instance": "a1",
        "x-confd-event": "add-member",
        "x-confd-account": "acc9",
        "x-confd-pending": True,
        "x-confd-at": AT,
    }
    assert type(h["x-confd-at"]) is float and type(h["x-confd-pending"]) is bool


def test_publish_headers_without_an_account_leave_the_header_out():
    h = cev.publish_headers("a1")(published(account_hint=None))
    assert "x-confd-account" not in h and h["x-confd-pending"] is False


# --- Incoming ---------------------------------------------------------------------------------


def test_an_event_of_another_instance_is_handed_on_whole():
    pub = published(account_hint="acc1", owner_pending=True)
    sink = Sink()
    sink(message(pub))
    assert len(sink.got) == 1 and sink.incoming.taken == 1
    got = sink.got[0]
    assert (got.name, got.conference_id, got.call_id, got.routing_key) == (
        "add-member",
        "room1",
        "call-1",
        "conference.event.room1.call-1",
    )
    assert got.account_hint == "acc1" and got.owner_pending is True and got.at == AT
    assert got.body() == pub.body()  # the exact bytes the owner published, not re-encoded


def test_the_body_bytes_are_kept_as_they_came():
    raw = b'{"b":1,  "a":"\\u00e9"}'  # not what orjson would write: proves nothing re-encodes
    sink = Sink()
    sink(message(published(), body=raw))
    assert sink.got[0].body() == raw


def test_a_text_body_is_taken_as_utf8():
    sink = Sink()
    msg = message(published())
    msg.body = '{"x":"é"}'
    sink(msg)
    assert sink.got[0].body() == '{"x":"é"}'.encode()


def test_no_account_hint_and_a_bad_one_read_as_none():
    sink = Sink()
    sink(message(published(account_hint=None)))
    headers = cev.publish_headers("owner")(published())
    headers["x-confd-account"] = 42
    sink(message(published(), headers=headers))
    assert [g.account_hint for g in sink.got] == [None, None]
    assert [g.owner_pending for g in sink.got] == [False, False]


def test_own_events_are_skipped():
    sink = Sink(instance="here")
    sink(message(published(), instance="here"))
    assert sink.got == [] and sink.incoming.taken == 0


def test_events_before_the_queue_was_declared_are_skipped():
    sink = Sink(since=AT + 1)
    sink(message(published(at=AT)))
    assert sink.got == [] and sink.incoming.skipped == 1
    sink(message(published(at=AT + 1)))  # not before: taken
    assert len(sink.got) == 1


def test_since_is_read_for_every_message():
    sink = Sink(since=0.0)
    sink(message(published(at=AT)))
    sink.since = AT + 5  # the bus reconnected: connected_at moved
    sink(message(published(at=AT + 4)))
    sink(message(published(at=AT + 6)))
    assert [g.at for g in sink.got] == [AT, AT + 6]


def test_dotted_conference_names_keep_their_dots():
    pub = published(conference="room.a.b", call="call-9")
    sink = Sink()
    sink(message(pub))
    assert (sink.got[0].conference_id, sink.got[0].call_id) == ("room.a.b", "call-9")


def test_conference_level_events_have_call_id_conference():
    pub = published(name="lock", call=shape.CONFERENCE_CALL_ID)
    sink = Sink()
    sink(message(pub))
    assert sink.got[0].call_id == "conference" and sink.got[0].name == "lock"


@pytest.mark.parametrize(
    "key, parts",
    [
        ("conference.event.room1.call-1", ("room1", "call-1")),
        ("conference.event.room.a.b.call-1", ("room.a.b", "call-1")),
        ("conference.event.room1.conference", ("room1", "conference")),
        ("conference.event.room1", None),
        ("conference.event.", None),
        ("conference.event..call", None),
        ("conference.event.room1.", None),
        ("conference.events.room1.call", None),
        ("other.event.room1.call", None),
        ("", None),
    ],
)
def test_split_routing_key(key, parts):
    assert cev.split_routing_key(key) == parts


@pytest.mark.parametrize("key", ["conference.event.room1", "x.y.z.w", ""])
def test_a_bad_routing_key_is_skipped(key):
    sink = Sink()
    sink(message(published(), routing_key=key) if key else _without_key(message(published())))
    assert sink.got == [] and sink.incoming.skipped == 1


def _without_key(msg):
    msg.delivery_info = {}
    return msg


@pytest.mark.parametrize(
    "change",
    [
        {"x-confd-event": "not-an-event"},
        {"x-confd-event": None},
        {"x-confd-at": "1700000000"},
        {"x-confd-at": None},
    ],
)
def test_bad_headers_are_skipped(change):
    headers = cev.publish_headers("owner")(published())
    headers.update(change)
    headers = {k: v for k, v in headers.items() if v is not None}
    sink = Sink()
    sink(message(published(), headers=headers))
    assert sink.got == [] and sink.incoming.skipped == 1


def test_no_headers_at_all_is_skipped_not_an_error():
    msg = amqp.Message(b"{}")
    msg.delivery_info = {"routing_key": "conference.event.room1.call-1"}
    sink = Sink()
    sink(msg)
    assert sink.got == [] and sink.incoming.skipped == 1


def test_only_the_allowed_events_are_taken():
    sink = Sink(allowed=shape.event_filter(["add-member"]))
    sink(message(published(name="add-member")))
    sink(message(published(name="mute-member")))
    assert [g.name for g in sink.got] == ["add-member"] and sink.incoming.skipped == 1


def test_every_published_event_name_is_taken_by_default():
    sink = Sink()
    for name in sorted(shape.PUBLISHED_EVENTS):
        sink(message(published(name=name)))
    assert sorted(g.name for g in sink.got) == sorted(shape.PUBLISHED_EVENTS)


# --- BusBindings ------------------------------------------------------------------------------


class FakeBus:
    def __init__(self):
        self.calls = []

    def bind(self, patterns):
        self.calls.append(("bind", patterns))

    def unbind(self, patterns):
        self.calls.append(("unbind", patterns))


def test_bus_bindings_are_the_bus_bindings():
    bus = FakeBus()
    b = cev.BusBindings(bus)
    b.acquire(iter(["conference.event.*.*", "conference.event.room1.*"]))
    b.release(("conference.event.room1.*",))
    assert bus.calls == [
        ("bind", ["conference.event.*.*", "conference.event.room1.*"]),
        ("unbind", ["conference.event.room1.*"]),
    ]

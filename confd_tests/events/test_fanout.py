"""The websocket fan-out without HTTP: routing, shared frames, batched writes, bounds."""

import json

import gevent
import pytest
from gevent import socket

import confd
from confd.conferences import events as ev
from confd.conferences.state import LiveState
from confd.events import shape
from confd.events.fanout import DROP_BEHIND, DROP_TOO_SLOW, Fanout, Outbox, Route
from confd.events.hub import EventHub
from confd.events.ownership import NO_DOCUMENT, OwnershipResolver
from confd.metrics import Metrics
from confd_tests.events.test_shape import CALL, CONF, member_event
from confd_tests.loadtools import FrameReader

OTHER_CONF = "fedcba9876543210fedcba9876543210"
ACCOUNT = "a" * 32  # the account_id channel variable of test_shape's participant


class RecordingSocket:
    """A socket that takes ``room`` bytes (None: everything) and records each send."""

    def __init__(self, room=None):
        self.room = room
        self.sends = []

    def send(self, data, flags=0, timeout=None):
        data = bytes(data)
        n = len(data) if self.room is None else min(self.room, len(data))
        if self.room is not None:
            self.room -= n
            if n == 0:
                raise BlockingIOError()
        self.sends.append(data[:n])
        return n

    def messages(self):
        reader = FrameReader()
        return [json.loads(p) for _, p in reader.feed(b"".join(self.sends))]


class Member:
    def __init__(self, sock, bindings, account=ACCOUNT, sees_all=False, bound=100):
        self.outbox = Outbox(sock, bound, "m")
        self._routes = []
        for text in bindings:
            b = shape.parse_binding(text)
            self._routes.append((b.conference_id, Route(b.text, b.call_id, account, sees_all)))
        self.dropped = []

    def routes(self):
        return self._routes

    def overflowed(self, reason):
        self.dropped.append(reason)


def setup(owner=NO_DOCUMENT, **kw):
    state = LiveState()
    metrics = Metrics()
    hub = EventHub(node_name="confd-1", app_version=confd.__version__, state=state)
    lookups = []

    def lookup(ids):
        lookups.append(list(ids))
        return {i: owner for i in ids if owner != NO_DOCUMENT}

    fanout = Fanout(OwnershipResolver(lookup), metrics=metrics, **kw)
    hub.add_sink(fanout.offer, active=fanout.active)
    return hub, state, fanout, metrics, lookups


def publish(hub, state, change):
    hub.publish(state.apply("fs1", change))


def join(fanout, *members):
    for m in members:
        fanout.join(m)


def test_routes_by_conference_call_and_account():
    hub, state, fanout, _, lookups = setup()
    everything = Member(RecordingSocket(), ["conference.event.*.*"])
    mine = Member(RecordingSocket(), ["conference.event.%s.*" % CONF])
    one_call = Member(RecordingSocket(), ["conference.event.%s.%s" % (CONF, CALL)])
    elsewhere = Member(RecordingSocket(), ["conference.event.%s.*" % OTHER_CONF])
    stranger = Member(RecordingSocket(), ["conference.event.*.*"], account="b" * 32)
    admin = Member(RecordingSocket(), ["conference.event.*.*"], account="c" * 32, sees_all=True)
    join(fanout, everything, mine, one_call, elsewhere, stranger, admin)
    publish(hub, state, member_event("add-member"))
    publish(hub, state, member_event("add-member", participant_id=21, call_id="c2"))
    fanout.dispatch()

    def calls(m):
        return [(msg["name"], msg["data"]["call_id"]) for msg in m.outbox.sock.messages()]

    both = [("add-member", CALL), ("add-member", "c2")]
    assert calls(everything) == both and calls(mine) == both and calls(admin) == both
    assert calls(one_call) == [("add-member", CALL)]
    assert calls(elsewhere) == [] and calls(stranger) == []
    # The ad-hoc conference's account comes from its members' channel variable; the document
    # lookup is made once per conference (cached), not per event or per connection.
    assert lookups == [[CONF]]
    msg = mine.outbox.sock.messages()[0]
    assert msg["action"] == "event" and msg["routing_key"] == "conference.event.%s.%s" % (
        CONF,
        CALL,
    )
    assert msg["subscribed_key"] == msg["subscription_key"] == "conference.event.%s.*" % CONF


def test_one_write_per_connection_per_round_and_frames_shared():
    hub, state, fanout, _, _ = setup()
    members = [Member(RecordingSocket(), ["conference.event.*.*"]) for _ in range(3)]
    join(fanout, *members)
    for i in range(10):
        publish(hub, state, member_event("mute-member" if i % 2 else "unmute-member"))
    fanout.dispatch()
    for m in members:
        assert len(m.outbox.sock.sends) == 1
        assert len(m.outbox.sock.messages()) == 10 and len(m.outbox) == 0
    assert members[0].outbox.sock.sends[0] == members[2].outbox.sock.sends[0]


def test_a_connection_with_two_matching_bindings_gets_a_frame_for_each():
    hub, state, fanout, _, _ = setup()
    m = Member(RecordingSocket(), ["conference.event.*.*", "conference.event.%s.*" % CONF])
    join(fanout, m)
    publish(hub, state, member_event("add-member"))
    fanout.dispatch()
    keys = sorted(msg["subscription_key"] for msg in m.outbox.sock.messages())
    assert keys == sorted(["conference.event.*.*", "conference.event.%s.*" % CONF])


def test_inactive_without_subscriptions_and_after_leaving():
    hub, state, fanout, _, _ = setup()
    assert not fanout.active() and not hub.has_consumers()
    m = Member(RecordingSocket(), ["conference.event.*.*"])
    fanout.join(m)
    assert fanout.active() and hub.has_consumers()
    fanout.leave(m)
    publish(hub, state, member_event("add-member"))
    assert not fanout.active() and fanout.waiting == 0


def test_slow_connection_dropped_at_bound_others_unaffected():
    hub, state, fanout, metrics, _ = setup()
    slow = Member(RecordingSocket(room=0), ["conference.event.*.*"], bound=3)
    fast = Member(RecordingSocket(), ["conference.event.*.*"], bound=100)
    join(fanout, slow, fast)
    for i in range(2):
        publish(hub, state, member_event("mute-member" if i % 2 else "unmute-member"))
    fanout.dispatch()
    assert slow.dropped == [] and len(slow.outbox) == 2  # nothing written: still in bound
    for i in range(2):
        publish(hub, state, member_event("mute-member" if i % 2 else "unmute-member"))
    fanout.dispatch()
    assert slow.dropped == [DROP_TOO_SLOW] and fanout.members == [fast]
    assert len(slow.outbox) == 0  # its stale backlog is not written
    assert len(fast.outbox.sock.messages()) == 4
    assert 'confd_queue_drops_total{queue="websocket"} 1.0' in metrics.render()[0].decode()
    # Dropped once: a second drop (its reader finding the outbox over bound too) is a no-op.
    fanout.drop(slow, DROP_TOO_SLOW)
    assert slow.dropped == [DROP_TOO_SLOW]
    assert 'confd_queue_drops_total{queue="websocket"} 1.0' in metrics.render()[0].decode()
    slow.outbox.stop()


def test_dispatcher_backlog_bound_drops_everyone():
    hub, state, fanout, _, _ = setup(backlog=5)
    a = Member(RecordingSocket(), ["conference.event.*.*"])
    b = Member(RecordingSocket(), ["conference.event.%s.*" % CONF])
    join(fanout, a, b)
    for i in range(6):
        publish(hub, state, member_event("mute-member" if i % 2 else "unmute-member"))
    assert a.dropped == [DROP_BEHIND] and b.dropped == [DROP_BEHIND]
    assert fanout.waiting == 0 and not fanout.active()


class SlowSocket(RecordingSocket):
    """Each send takes ``cost`` seconds of the fan-out's (fake) clock."""

    def __init__(self, clock, cost):
        super().__init__()
        self.clock, self.cost = clock, cost

    def send(self, data, flags=0, timeout=None):
        self.clock[0] += self.cost
        return super().send(data, flags, timeout)


def test_offer_never_yields_and_costly_rounds_are_spaced():
    """offer runs in the ESL reader greenlet: no switch may happen inside it.  The dispatcher
    then writes a burst in one round; after a round that took long, the next one waits as long
    (up to the interval), so that a steady stream goes out in batches."""
    now = [100.0]
    hub, state, fanout, _, _ = setup(flush_interval=0.5, clock=lambda: now[0])
    m = Member(SlowSocket(now, 0.05), ["conference.event.*.*"])
    fanout.join(m)
    fanout.start()
    try:
        gevent.sleep(0)
        switched = []
        gevent.spawn(lambda: switched.append(True))
        for _ in range(10):
            publish(hub, state, member_event("mute-member"))
        assert switched == []
        gevent.sleep(0.01)
        assert switched == [True] and len(m.outbox.sock.sends) == 1  # the first round at once
        publish(hub, state, member_event("unmute-member"))
        gevent.sleep(0.02)
        assert len(m.outbox.sock.sends) == 1  # that round took 50 ms: the next one waits
        gevent.sleep(0.06)
        assert len(m.outbox.sock.sends) == 2
        assert len(m.outbox.sock.messages()) == 11
    finally:
        fanout.stop()


def test_cheap_rounds_are_not_delayed():
    now = [100.0]
    hub, state, fanout, _, _ = setup(flush_interval=0.5, clock=lambda: now[0])
    m = Member(RecordingSocket(), ["conference.event.*.*"])
    fanout.join(m)
    fanout.start()
    try:
        for i in range(3):
            publish(hub, state, member_event("mute-member" if i % 2 else "unmute-member"))
            gevent.sleep(0.01)
            assert len(m.outbox.sock.sends) == i + 1
    finally:
        fanout.stop()


# --- the outbox on a real socket pair ----------------------------------------------------------


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    yield a, b
    a.close()
    b.close()


def read_exactly(sock, n, timeout=5):
    out = b""
    with gevent.Timeout(timeout):
        while len(out) < n:
            out += sock.recv(65536)
    return out


def test_outbox_finishes_in_the_background_in_order(pair):
    a, b = pair
    box = Outbox(a, bound=1000)
    frames = [bytes([i % 251]) * 1000 for i in range(200)]  # far more than the socket holds
    for f in frames[:100]:
        box.put(f)
    box.flush()  # returns at once, the writer greenlet takes the rest
    assert 0 < len(box) <= 100
    for f in frames[100:]:
        box.put(f)
    box.flush()  # the writer is busy: nothing is written out of order
    got = read_exactly(b, 200 * 1000)
    assert got == b"".join(frames)
    assert box.wait_drained(5) and len(box) == 0


def test_outbox_discard_keeps_the_frame_being_written(pair):
    a, b = pair
    box = Outbox(a, bound=1000)
    for i in range(50):
        box.put(bytes([65 + i % 26]) * 1000)
    box.flush()
    # Whatever was sent whole stays sent; the partly written frame is finished, the rest
    # dropped, and a frame put later (a close frame) follows it.
    dropped = box.discard()
    assert dropped > 0
    box.seal(b"CLOSE")
    box.put(b"ignored after the close frame")
    total = 50 * 1000 - dropped * 1000 + len(b"CLOSE")
    got = read_exactly(b, total)
    assert got.endswith(b"CLOSE") and len(got) % 1000 == len(b"CLOSE")
    assert box.wait_drained(5)


def test_outbox_write_timeout_calls_on_error(pair):
    a, _ = pair
    failed = []
    box = Outbox(a, bound=1000, on_error=failed.append, write_timeout=0.2)
    for _ in range(100):
        box.put(b"x" * 1000)
    box.flush()
    assert box.wait_drained(2)  # the peer never reads: the writer gives up after 0.2 s
    assert failed == ["client took nothing for 0.2s"] and box.failed and len(box) == 0
    box.put(b"more")
    assert len(box) == 0


def test_outbox_bound():
    box = Outbox(RecordingSocket(room=0), bound=2)
    box.put(b"1")
    box.put(b"2")
    assert not box.over_bound
    box.put(b"3")
    assert box.over_bound
    with pytest.raises(ValueError):
        Outbox(RecordingSocket(), bound=0)


def test_conference_level_events_routed_by_conference():
    hub, state, fanout, _, _ = setup()
    conf_only = Member(RecordingSocket(), ["conference.event.%s.conference" % CONF])
    join(fanout, conf_only)
    publish(hub, state, member_event("add-member"))
    publish(hub, state, ev.LockChanged(CONF, "e2e9007d-a4e4-4d5c-b9bf-013020e2f3fe", True))
    fanout.dispatch()
    assert [msg["name"] for msg in conf_only.outbox.sock.messages()] == ["lock"]


def test_nothing_is_written_after_the_close_frame():
    """A connection closing is sealed before it leaves the fan-out: a round routing to it
    meanwhile must not put frames after its close frame."""
    hub, state, fanout, _, _ = setup()
    m = Member(RecordingSocket(), ["conference.event.*.*"])
    fanout.join(m)
    publish(hub, state, member_event("add-member"))
    fanout.dispatch()
    m.outbox.seal(b"CLOSE")
    publish(hub, state, member_event("mute-member"))
    fanout.dispatch()
    sent = b"".join(m.outbox.sock.sends)
    assert sent.endswith(b"CLOSE") and sent.count(b'"action":"event"') == 1


def test_connections_with_several_subscriptions_keep_the_event_order():
    hub, state, fanout, _, _ = setup()
    both = Member(RecordingSocket(), ["conference.event.c1.*", "conference.event.c2.*"])
    one = Member(RecordingSocket(), ["conference.event.c1.*"])
    join(fanout, both, one)
    for i, conf in enumerate(("c1", "c2", "c1", "c2")):
        publish(
            hub,
            state,
            member_event(
                "add-member",
                conference_name=conf,
                conference_uuid="e2e9007d-a4e4-4d5c-b9bf-%012d" % (i % 2),
                participant_id=40 + i,
                call_id="k%d" % i,
            ),
        )
    fanout.dispatch()
    assert [msg["data"]["call_id"] for msg in both.outbox.sock.messages()] == [
        "k0",
        "k1",
        "k2",
        "k3",
    ]
    assert [msg["data"]["call_id"] for msg in one.outbox.sock.messages()] == ["k0", "k2"]


def test_new_conferences_of_a_round_are_looked_up_in_one_query():
    hub, state, fanout, _, lookups = setup()
    m = Member(RecordingSocket(), ["conference.event.*.*"])
    admin = Member(RecordingSocket(), ["conference.event.*.*"], sees_all=True)

    def event(action, i):
        return member_event(
            action,
            conference_name="c%d" % i,
            conference_uuid="e2e9007d-a4e4-4d5c-b9bf-%012d" % i,
            participant_id=30 + i,
            call_id="k%d" % i,
        )

    fanout.join(admin)
    for i in (1, 2):
        publish(hub, state, event("add-member", i))
    fanout.dispatch()
    assert lookups == []  # only admins listen: nobody's account is needed
    fanout.join(m)
    publish(hub, state, event("mute-member", 1))
    publish(hub, state, event("mute-member", 2))
    publish(hub, state, event("add-member", 3))
    publish(hub, state, event("unmute-member", 1))
    fanout.dispatch()
    assert lookups == [["c1", "c2", "c3"]]
    assert [msg["data"]["conference_id"] for msg in m.outbox.sock.messages()] == [
        "c1",
        "c2",
        "c3",
        "c1",
    ]

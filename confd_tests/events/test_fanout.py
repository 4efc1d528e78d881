"""The websocket fan-out without HTTP: routing, shared frames, batched writes, bounds, and the
outbox's writer (one per connection, the only one writing to its socket)."""

import json
import time

import gevent
import pytest
from gevent import socket
from gevent.event import Event
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, TextMessage
from wsproto.frame_protocol import FrameProtocol, Opcode

import confd
from confd.conferences import events as ev
from confd.conferences.state import LiveState
from confd.events import shape
from confd.events.fanout import DROP_BEHIND, DROP_TOO_SLOW, Fanout, Outbox, Route, frame_at
from confd.events.hub import EventHub
from confd.events.ownership import NO_DOCUMENT, OwnershipResolver
from confd.metrics import Metrics
from confd.simulator.model import ConferenceModel
from confd_tests.events.test_shape import CALL, CONF, member_event
from confd_tests.loadtools import FrameReader

OTHER_CONF = "fedcba9876543210fedcba9876543210"
ACCOUNT = "a" * 32  # the account_id channel variable of test_shape's participant
DEADLINE = 20.0  # seconds: waits for a condition, generous for a machine with no core to spare


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
                if timeout == 0.0:
                    raise BlockingIOError()
                gevent.sleep(3600)  # a full socket: a blocking send waits
        self.sends.append(data[:n])
        return n

    def messages(self):
        reader = FrameReader()
        return [json.loads(p) for _, p in reader.feed(b"".join(self.sends))]


class Member:
    def __init__(self, sock, bindings, account=ACCOUNT, sees_all=False, bound=100, **outbox):
        self.outbox = Outbox(sock, bound, "m", **outbox)
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


def dispatch(fanout):
    """One round, then until each connection's writer has written what it was given."""
    members = list(fanout.members)
    fanout.dispatch()
    for m in members:
        assert m.outbox.wait_drained(DEADLINE)


def wait_until(predicate, what="a condition", timeout=DEADLINE):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for %s" % what
        gevent.sleep(0.001)


def alternate(i):
    return member_event("mute-member" if i % 2 else "unmute-member")


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
    dispatch(fanout)

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
    dispatch(fanout)
    for m in members:
        assert len(m.outbox.sock.sends) == 1
        assert len(m.outbox.sock.messages()) == 10 and len(m.outbox) == 0
    assert members[0].outbox.sock.sends[0] == members[2].outbox.sock.sends[0]


def test_a_connection_with_two_matching_bindings_gets_a_frame_for_each():
    hub, state, fanout, _, _ = setup()
    m = Member(RecordingSocket(), ["conference.event.*.*", "conference.event.%s.*" % CONF])
    join(fanout, m)
    publish(hub, state, member_event("add-member"))
    dispatch(fanout)
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


def test_a_client_that_takes_nothing_is_dropped_after_the_grace_others_unaffected():
    now = [100.0]
    hub, state, fanout, metrics, _ = setup()
    slow = Member(RecordingSocket(room=0), ["conference.event.*.*"], bound=3, clock=lambda: now[0])
    fast = Member(RecordingSocket(), ["conference.event.*.*"], bound=3)
    join(fanout, slow, fast)
    for i in range(5):
        publish(hub, state, alternate(i))
    fanout.dispatch()
    # Over its bound, but only just now: a burst it may still take in.
    assert slow.dropped == [] and len(slow.outbox) == 5
    now[0] += slow.outbox.grace - 0.1
    publish(hub, state, alternate(5))
    fanout.dispatch()
    assert slow.dropped == []
    now[0] += 0.2  # the grace is over and its backlog is no smaller: too slow
    publish(hub, state, alternate(6))
    fanout.dispatch()
    assert slow.dropped == [DROP_TOO_SLOW] and fanout.members == [fast]
    assert slow.outbox.slow == "7 events waiting, over 3 for 5s"
    assert len(slow.outbox.sock.sends) == 0 and slow.outbox.queued == 0  # no stale backlog
    wait_until(lambda: len(fast.outbox.sock.messages()) == 7, "the fast client's events")
    assert 'confd_queue_drops_total{queue="websocket"} 1.0' in metrics.render()[0].decode()
    # Dropped once: a second drop (its reader finding it too slow as well) is a no-op.
    fanout.drop(slow, DROP_TOO_SLOW)
    assert slow.dropped == [DROP_TOO_SLOW]
    assert 'confd_queue_drops_total{queue="websocket"} 1.0' in metrics.render()[0].decode()
    slow.outbox.stop()


def test_too_slow_only_for_a_backlog_that_does_not_go_down():
    """Over the bound, a client is too slow only when its backlog is no smaller ``grace``
    seconds later; one taking in a burst is measured again from where it got to."""
    now = [0.0]
    box = Outbox(RecordingSocket(room=0), bound=10, grace=5, clock=lambda: now[0])
    for _ in range(100):
        box.put(b"x")
    assert box.too_slow() is None  # over the bound from now
    now[0] = 4.9
    assert box.too_slow() is None
    box.queued = 60  # (as if the writer had written 40 of them)
    now[0] = 5.0
    assert box.too_slow() is None  # it went down: a new window from 60
    now[0] = 9.9
    box.queued = 70
    assert box.too_slow() is None
    now[0] = 10.0
    assert box.too_slow() == "70 events waiting, over 10 for 5s"
    box.queued = 10
    assert box.too_slow() is None  # back within the bound: a later burst starts afresh
    box.queued = 500
    now[0] = 10.1
    assert box.too_slow() is None


def test_too_slow_at_once_over_the_byte_bound():
    box = Outbox(RecordingSocket(room=0), bound=1000, max_bytes=1 << 20)
    box.put(b"x" * (1 << 20))
    assert box.too_slow() is None
    box.put(b"x")
    assert box.too_slow() == "more than 1 MiB waiting"
    with pytest.raises(ValueError):
        Outbox(RecordingSocket(), bound=0)


def test_a_burst_far_over_the_bound_is_taken_in(pair):
    """A burst a hundred times the bound, to a client that reads as fast as it can through a
    small socket: every event arrives, in order, and it keeps its connection."""
    a, b = pair
    hub, state, fanout, metrics, _ = setup()
    reader = Member(a, ["conference.event.*.*"], bound=50)
    join(fanout, reader)
    fanout.start()
    got = []

    def read():
        stream = FrameReader()
        while len(got) < 5000:
            got.extend(json.loads(p)["data"]["talking"] for _, p in stream.feed(b.recv(65536)))

    client = gevent.spawn(read)
    try:
        publish(hub, state, member_event("add-member"))
        wait_until(lambda: got, "the first event")
        del got[:]
        updates = []
        for i in range(5000):
            talking = bool(i % 2)
            action = "start-talking" if talking else "stop-talking"
            updates += state.apply("fs1", member_event(action, talking=talking))
        hub.publish(updates)  # one intake burst: the dispatcher takes it in one round
        client.join(DEADLINE)
        assert got == [bool(i % 2) for i in range(5000)]
        assert reader.dropped == [] and fanout.members == [reader]
        assert 'queue="websocket"' not in metrics.render()[0].decode()
    finally:
        client.kill()
        fanout.stop()
        reader.outbox.stop()


class Reader(Member):
    """A connection on a real socket pair whose client reads as fast as it can (a greenlet),
    keeping the events' msg_ids."""

    def __init__(self, bindings, **kw):
        self.pair = socket.socketpair()
        super().__init__(self.pair[0], bindings, **kw)
        self.got = []
        self._client = gevent.spawn(self._read)

    def _read(self):
        stream = FrameReader()
        while True:
            data = self.pair[1].recv(65536)
            if not data:
                return
            self.got.extend(json.loads(p)["data"]["msg_id"] for _, p in stream.feed(data))

    def close(self):
        self._client.kill()
        self.outbox.stop()
        for end in self.pair:
            end.close()


def test_a_node_of_5000_lost_and_resynced_reaches_every_reader():
    """A node's resync publishes an add-member per participant at once, its loss a
    del-member per participant: three bursts of 5,000 events, five times the default bound
    (subscriber_queue, 1,000).  Every client that reads gets every event it subscribed to, in
    order, and keeps its connection; one watching another conference gets nothing and stays."""
    model = ConferenceModel(hostname="fs-sim", sounds=False)
    confs = ["%032x" % (i + 1) for i in range(10)]
    for i in range(5000):
        model.join(confs[i % 10], caller_id_name="p%d" % i, caller_id_number="1001")
    hub, state, fanout, metrics, _ = setup(owner=ACCOUNT)  # the documents are the account's
    published = []
    hub.add_sink(published.append)
    readers = {
        "admin": Reader(["conference.event.*.*"], account="c" * 32, sees_all=True, bound=1000),
        "account": Reader(["conference.event.*.*"], bound=1000),
        "one": Reader(["conference.event.%s.*" % confs[0]], bound=1000),
        "unrelated": Reader(["conference.event.%s.*" % OTHER_CONF], bound=1000),
    }
    join(fanout, *readers.values())
    fanout.start()
    try:
        for _ in range(2):
            listing = model.api("conference json_list")
            hub.publish(state.apply("fs1", ev.snapshot_from_json_list(listing, "fs1", 1.0)))
            hub.publish(state.drop_node("fs1"))  # the node is lost...
        hub.publish(state.apply("fs1", ev.snapshot_from_json_list(listing, "fs1", 2.0)))
        ids = [pub.data["msg_id"] for pub in published]
        assert sum(pub.name == "add-member" for pub in published) == 3 * 5000
        assert sum(pub.name == "del-member" for pub in published) == 2 * 5000
        expected = {
            "admin": ids,
            "account": ids,
            "one": [pub.data["msg_id"] for pub in published if pub.conference_id == confs[0]],
            "unrelated": [],
        }
        for name, reader in readers.items():
            want = expected[name]
            n = len(want)
            wait_until(lambda r=reader, n=n: len(r.got) >= n, "%s's events" % name, 90)
            assert reader.got == want, name
        assert all(r.dropped == [] for r in readers.values())
        assert sorted(fanout.members, key=id) == sorted(readers.values(), key=id)
        assert 'queue="websocket' not in metrics.render()[0].decode()
    finally:
        fanout.stop()
        for r in readers.values():
            r.close()


def test_dispatcher_backlog_bound_drops_everyone():
    """Past the dispatcher's own bound (far beyond any burst: it stalled for seconds), events
    are lost, counted, and every client is told."""
    hub, state, fanout, metrics, _ = setup(backlog=5)
    a = Member(RecordingSocket(), ["conference.event.*.*"])
    b = Member(RecordingSocket(), ["conference.event.%s.*" % CONF])
    join(fanout, a, b)
    for i in range(6):
        publish(hub, state, alternate(i))
    assert a.dropped == [DROP_BEHIND] and b.dropped == [DROP_BEHIND]
    assert fanout.waiting == 0 and not fanout.active()
    assert 'confd_queue_drops_total{queue="websocket_fanout"} 6.0' in metrics.render()[0].decode()


def test_the_dispatcher_bound_is_far_beyond_a_burst():
    _, _, fanout, _, _ = setup()
    assert fanout.backlog >= 100000


class SleepySocket(RecordingSocket):
    """Each send really takes ``cost`` seconds (the whole process waits, as for a costly
    write); when each began and ended is recorded."""

    def __init__(self, cost):
        super().__init__()
        self.cost = cost
        self.times = []

    def send(self, data, flags=0, timeout=None):
        began = time.monotonic()
        time.sleep(self.cost)
        self.times.append((began, time.monotonic()))
        return super().send(data, flags, timeout)


def test_offer_never_yields_and_costly_rounds_are_spaced():
    """offer runs in the ESL reader greenlet: no switch may happen inside it.  The dispatcher
    writes what came together in one round; after a round that took long (its writes
    included), the next one waits as long (up to the interval), so that a steady stream goes
    out in batches."""
    hub, state, fanout, _, _ = setup(flush_interval=5.0)
    m = Member(SleepySocket(0.05), ["conference.event.*.*"])
    fanout.join(m)
    fanout.start()
    try:
        gevent.sleep(0)
        switched = []
        gevent.spawn(lambda: switched.append(True))
        for _ in range(10):
            publish(hub, state, member_event("mute-member"))
        assert switched == []
        wait_until(lambda: m.outbox.sock.sends, "the first round")
        assert switched == [True] and len(m.outbox.sock.messages()) == 10  # one send
        publish(hub, state, member_event("unmute-member"))
        wait_until(lambda: len(m.outbox.sock.sends) == 2, "the second round")
        (_, first_end), (second_began, _) = m.outbox.sock.times
        assert second_began - first_end >= 0.05 * 0.9  # waited as long as the first took
        assert len(m.outbox.sock.messages()) == 11
    finally:
        fanout.stop()


def test_cheap_rounds_are_not_delayed():
    """Rounds that cost nothing (the clock does not move) are not spaced: with an interval of
    an hour, each event still goes out."""
    hub, state, fanout, _, _ = setup(flush_interval=3600.0, clock=lambda: 100.0)
    m = Member(RecordingSocket(), ["conference.event.*.*"])
    fanout.join(m)
    fanout.start()
    try:
        for i in range(3):
            publish(hub, state, alternate(i))
            wait_until(lambda n=i + 1: len(m.outbox.sock.sends) == n, "round %d" % i)
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


def read_exactly(sock, n, timeout=DEADLINE):
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
    box.flush()  # returns at once: the writer writes
    for f in frames[100:]:
        box.put(f)
    box.flush()  # the writer is busy: nothing is written out of order
    got = read_exactly(b, 200 * 1000)
    assert got == b"".join(frames)
    assert box.wait_drained(DEADLINE) and len(box) == 0


def test_outbox_write_timeout_calls_on_error(pair):
    a, _ = pair
    failed = []
    box = Outbox(a, bound=1000, on_error=failed.append, write_timeout=0.2)
    for _ in range(100):
        box.put(b"x" * 1000)
    box.flush()
    assert box.wait_drained(DEADLINE)  # the peer never reads: the writer gives up after 0.2 s
    assert failed == ["client took nothing for 0.2s"] and box.failed and len(box) == 0
    box.put(b"more")
    assert len(box) == 0


# --- a drop while a write is in progress -------------------------------------------------------


def server_frame(event):
    return Connection(ConnectionType.SERVER).send(event)


def text_frame(text):
    return server_frame(TextMessage(data=text))


def client_reads(data):
    """What a strict websocket client (wsproto's parser) makes of ``data``: ("text", str) or
    ("close", code) per frame.  Every frame must be whole and valid, and ``data`` exactly
    those frames."""
    proto = FrameProtocol(client=True, extensions=[])
    proto.receive_bytes(bytes(data))
    out, again = [], []
    for frame in proto.received_frames():  # raises ParseFailed on a broken frame
        assert frame.frame_finished and frame.message_finished, "a cut frame"
        if frame.opcode is Opcode.TEXT:
            out.append(("text", frame.payload))
            again.append(text_frame(frame.payload))
        elif frame.opcode is Opcode.CLOSE:
            out.append(("close", frame.payload[0]))
            again.append(server_frame(CloseConnection(*frame.payload)))
        else:
            raise AssertionError("unexpected frame %r" % frame.opcode)
    assert b"".join(again) == bytes(data), "bytes that are no whole frame"
    return out


class GatedSocket:
    """A socket that takes only what the test allows: a send waits, as a full socket makes a
    gevent send wait, until ``allow(n)`` lets ``n`` more bytes through (None: any)."""

    def __init__(self):
        self.received = bytearray()
        self.allowance = 0
        self.in_send = 0  # sends waiting for room
        self._opened = Event()

    def allow(self, n):
        self.allowance = n
        self._opened.set()

    def send(self, data, flags=0, timeout=None):
        while self.allowance == 0:
            if timeout == 0.0:
                raise BlockingIOError()
            self._opened.clear()
            self.in_send += 1
            try:
                self._opened.wait()
            finally:
                self.in_send -= 1
        n = len(data) if self.allowance is None else min(self.allowance, len(data))
        if self.allowance is not None:
            self.allowance -= n
        self.received += bytes(data[:n])
        return n


def event_text(i):
    return "event %02d " % i + "x" * 990


def test_a_drop_during_a_write_in_progress_keeps_the_stream_whole():
    """The writer is inside send(), two frames and part of a third written, when the client
    is dropped: it finishes the frame begun, then the notice and the close frame; the stale
    frames are not written and nothing is cut."""
    sock = GatedSocket()
    box = Outbox(sock, bound=1000)
    frames = [text_frame(event_text(i)) for i in range(50)]
    for f in frames:
        box.put(f)
    box.flush()
    wait_until(lambda: sock.in_send, "the writer waiting for the socket")
    size = len(frames[0])
    sock.allow(2 * size + 100)
    wait_until(lambda: sock.in_send and len(sock.received) == 2 * size + 100, "a frame cut")
    box.discard()  # (what Fanout.drop does)
    box.put(text_frame("too slow"))
    box.seal(server_frame(CloseConnection(1013, "too slow")))
    box.put(text_frame("nothing after the close frame"))
    box.flush()
    sock.allow(None)
    assert box.wait_drained(DEADLINE)
    assert client_reads(sock.received) == [
        ("text", event_text(0)),
        ("text", event_text(1)),
        ("text", event_text(2)),
        ("text", "too slow"),
        ("close", 1013),
    ]


def test_a_drop_while_waiting_at_a_frame_boundary():
    """Dropped while the writer waits for room with three frames written: the frame it is
    handing to the socket (the fourth) is written whole, nothing stale after it."""
    sock = GatedSocket()
    box = Outbox(sock, bound=1000)
    frames = [text_frame(event_text(i)) for i in range(20)]
    for f in frames:
        box.put(f)
    box.flush()
    wait_until(lambda: sock.in_send, "the writer waiting for the socket")
    sock.allow(3 * len(frames[0]))
    wait_until(lambda: sock.in_send and len(sock.received) == 3 * len(frames[0]), "3 frames")
    box.discard()
    box.seal(server_frame(CloseConnection(1013, "too slow")))
    box.flush()
    sock.allow(None)
    assert box.wait_drained(DEADLINE)
    assert client_reads(sock.received) == [("text", event_text(i)) for i in range(4)] + [
        ("close", 1013)
    ]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_frame_at_reads_frame_headers(size):
    frames = [text_frame("a" * size), text_frame("b"), text_frame("c" * size)]
    data = b"".join(frames)
    first, second = len(frames[0]), len(frames[0]) + len(frames[1])
    assert frame_at(data, 0) == (0, first)
    assert frame_at(data, first - 1) == (0, first)
    assert frame_at(data, first) == (first, second)
    assert frame_at(data, second, first) == (second, len(data))
    assert frame_at(data, len(data) - 1, second) == (second, len(data))


def test_conference_level_events_routed_by_conference():
    hub, state, fanout, _, _ = setup()
    conf_only = Member(RecordingSocket(), ["conference.event.%s.conference" % CONF])
    join(fanout, conf_only)
    publish(hub, state, member_event("add-member"))
    publish(hub, state, ev.LockChanged(CONF, "e2e9007d-a4e4-4d5c-b9bf-013020e2f3fe", True))
    dispatch(fanout)
    assert [msg["name"] for msg in conf_only.outbox.sock.messages()] == ["lock"]


def test_nothing_is_written_after_the_close_frame():
    """A connection closing is sealed before it leaves the fan-out: a round routing to it
    meanwhile must not put frames after its close frame."""
    hub, state, fanout, _, _ = setup()
    m = Member(RecordingSocket(), ["conference.event.*.*"])
    fanout.join(m)
    publish(hub, state, member_event("add-member"))
    dispatch(fanout)
    m.outbox.seal(b"CLOSE")
    publish(hub, state, member_event("mute-member"))
    dispatch(fanout)
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
    dispatch(fanout)
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
    dispatch(fanout)
    assert lookups == []  # only admins listen: nobody's account is needed
    fanout.join(m)
    publish(hub, state, event("mute-member", 1))
    publish(hub, state, event("mute-member", 2))
    publish(hub, state, event("add-member", 3))
    publish(hub, state, event("unmute-member", 1))
    dispatch(fanout)
    assert lookups == [["c1", "c2", "c3"]]
    assert [msg["data"]["conference_id"] for msg in m.outbox.sock.messages()] == [
        "c1",
        "c2",
        "c3",
        "c1",
    ]

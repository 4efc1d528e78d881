"""The AMQP publisher's confirm handling against a scripted connection (no broker): it
publishes without waiting for confirms, keeps at most WINDOW unconfirmed, and after a nack, an
overdue confirm or a lost connection sends every unconfirmed message again, in order.  The
same code against the real RabbitMQ: test_amqp.py."""

from __future__ import annotations

import time

import gevent
import pytest
from amqp.exceptions import ConnectionForced
from gevent.queue import Queue

from confd.events import amqp as amqp_mod
from confd.events.amqp import AmqpPublisher
from confd.events.shape import Published
from confd_tests.conftest import wait_until


class Broker:
    """Every connection the publisher opens, what was published on each, and the frames the
    test has the broker send back (acks, nacks, a failure)."""

    def __init__(self):
        self.connections = []
        self.refuse = False

    def connect(self):
        conn = FakeConnection(self)
        self.connections.append(conn)
        return conn

    @property
    def conn(self):
        return self.connections[-1]


class FakeSocket:
    timeout = None

    def settimeout(self, value):
        self.timeout = value


class FakeTransport:
    def __init__(self):
        self.sock = FakeSocket()


class FakeChannel:
    def __init__(self, conn):
        self.conn = conn
        self.events = {"basic_ack": set(), "basic_nack": set()}
        self.confirming = False

    def exchange_declare(self, name, kind, durable, auto_delete):
        self.conn.declared = (name, kind, durable, auto_delete)

    def confirm_select(self):
        self.confirming = True

    def basic_publish(self, msg, exchange, routing_key):
        assert self.confirming and not self.conn.closed
        if self.conn.broken_writes:
            raise BrokenPipeError(32, "Broken pipe")  # the frame may be half-written
        self.conn.published.append((routing_key, msg.body, msg.properties["delivery_mode"]))


class FakeConnection:
    def __init__(self, broker):
        self.broker = broker
        self.transport = FakeTransport()
        self.published = []
        self.frames: Queue = Queue()
        self.closed = False
        self.chan = None
        self.broken_writes = False
        # Heartbeats as py-amqp negotiates them; ``silent`` plays a broker whose heartbeats
        # stopped coming (heartbeat_tick raises as py-amqp's does after two intervals).
        self.heartbeat = 0
        self.ticks = 0
        self.silent = False

    def connect(self):
        if self.broker.refuse:
            raise ConnectionRefusedError(111, "Connection refused")

    def channel(self):
        self.chan = FakeChannel(self)
        return self.chan

    def drain_events(self, timeout=None):
        kind, *args = self.frames.get()
        if kind == "fail":
            raise args[0]
        for handler in list(self.chan.events["basic_" + kind]):
            handler(*args)

    def ack(self, tag, multiple=False):
        self.frames.put(("ack", tag, multiple))

    def nack(self, tag):
        self.frames.put(("nack", tag, False))

    def fail(self, exc):
        self.frames.put(("fail", exc))

    def heartbeat_tick(self):
        self.ticks += 1
        if self.silent:
            raise ConnectionForced("Too many heartbeats missed")

    def collect(self):
        self.closed = True


def event(i: int) -> Published:
    conf = "c%031d" % i
    return Published(
        name="talking",
        routing_key="conference.event.%s.call%d" % (conf, i),
        conference_id=conf,
        call_id="call%d" % i,
        data={"n": i},
    )


def offer(pub, conn, n, published=None):
    """Offer events 0..n-1, then wait until ``published`` (default n) are on ``conn``."""
    for i in range(n):
        pub.offer(event(i))
    want = n if published is None else published
    wait_until(lambda: len(conn.published) == want, what="%d published" % want)


def sent(conn):
    return [key for key, _, _ in conn.published]


@pytest.fixture
def publisher():
    broker = Broker()
    pub = AmqpPublisher(
        "amqp://guest:guest@127.0.0.1:1/",
        buffer=100,
        connect=broker.connect,
        reconnect_min=0.01,
        reconnect_max=0.02,
    )
    pub.start()
    wait_until(lambda: pub.connected, what="connected")
    yield pub, broker
    pub.stop(0.5)


def test_publishes_without_waiting_for_confirms(publisher):
    pub, broker = publisher
    conn = broker.conn
    assert conn.transport.sock.timeout == amqp_mod.IO_TIMEOUT  # gevent bounds every write
    assert conn.declared == ("conference", "topic", True, False)
    offer(pub, conn, 10)
    assert sent(conn) == [event(i).routing_key for i in range(10)]
    assert {mode for _, _, mode in conn.published} == {2}  # persistent
    assert pub.published == 0  # nothing confirmed yet
    conn.ack(4, multiple=True)
    wait_until(lambda: pub.published == 4, what="4 confirmed")
    conn.ack(10, multiple=True)
    wait_until(lambda: pub.published == 10, what="10 confirmed")
    assert pub.status()["buffered"] == 0 and pub.status()["dropped"] == 0


def test_single_acks_out_of_order(publisher):
    pub, broker = publisher
    conn = broker.conn
    offer(pub, conn, 3)
    conn.ack(2)
    conn.ack(3)
    gevent.sleep(0.05)
    assert pub.published == 0  # the oldest one is still unconfirmed
    conn.ack(1)
    wait_until(lambda: pub.published == 3, what="all confirmed")


def five_events_through_a_window_of_three(publisher, monkeypatch):
    """WINDOW set to 3, then 5 events offered: the connection once 3 are published."""
    pub, broker = publisher
    monkeypatch.setattr(amqp_mod, "WINDOW", 3)
    conn = broker.conn
    offer(pub, conn, 5, published=3)
    return conn


def test_window_bounds_the_unconfirmed(publisher, monkeypatch):
    pub, _ = publisher
    conn = five_events_through_a_window_of_three(publisher, monkeypatch)
    gevent.sleep(0.05)
    assert len(conn.published) == 3 and pub.status()["buffered"] == 2
    conn.ack(1)
    wait_until(lambda: len(conn.published) == 4, what="one more after one confirm")
    conn.ack(4, multiple=True)
    wait_until(lambda: len(conn.published) == 5, what="the rest")


@pytest.mark.parametrize(
    "loss",
    ["nack", "connection lost", "confirm overdue"],
)
def test_unconfirmed_messages_are_sent_again_in_order_after_a_reconnect(
    publisher, monkeypatch, loss
):
    pub, broker = publisher
    monkeypatch.setattr(amqp_mod, "CONFIRM_TIMEOUT", 0.3)
    first = broker.conn
    offer(pub, first, 6)
    first.ack(2, multiple=True)  # 0 and 1 confirmed; 2..5 are not
    wait_until(lambda: pub.published == 2, what="2 confirmed")
    if loss == "nack":
        first.nack(3)
    elif loss == "connection lost":
        first.fail(ConnectionResetError(104, "Connection reset by peer"))
    # "confirm overdue": the broker says nothing more.
    wait_until(lambda: len(broker.connections) == 2 and pub.connected, what="reconnected")
    assert first.closed
    second = broker.conn
    pub.offer(event(6))
    wait_until(lambda: len(second.published) == 5, what="the unconfirmed, then the new one")
    assert sent(second) == [event(i).routing_key for i in (2, 3, 4, 5, 6)]
    second.ack(5, multiple=True)  # tags count from 1 again on the new channel
    wait_until(lambda: pub.published == 7, what="everything confirmed once")
    assert pub.dropped == 0


def test_broker_down_buffers_then_drops_counted(publisher):
    pub, broker = publisher
    broker.refuse = True
    broker.conn.fail(ConnectionResetError(104, "Connection reset by peer"))
    wait_until(lambda: not pub.connected, what="lost")
    for i in range(150):
        pub.offer(event(i))  # never blocks: the buffer holds 100, the rest are counted
    assert pub.status()["buffered"] == 100 and pub.dropped == 50
    wait_until(lambda: "refused" in pub.status()["error"], what="the reconnect's error")
    broker.refuse = False
    wait_until(lambda: pub.connected and len(broker.conn.published) == 100, what="sent")
    assert sent(broker.conn) == [event(i).routing_key for i in range(100)]


def test_stop_sends_the_buffer_and_waits_for_its_confirms(publisher, monkeypatch):
    pub, _ = publisher
    conn = five_events_through_a_window_of_three(publisher, monkeypatch)
    stopping = gevent.spawn(pub.stop, 5.0)
    gevent.sleep(0.05)
    assert not stopping.dead  # 3 unconfirmed, 2 still buffered
    conn.ack(3, multiple=True)
    wait_until(lambda: len(conn.published) == 5, what="the buffer sent")
    assert not stopping.dead
    conn.ack(5, multiple=True)
    stopping.join(2)
    assert stopping.dead and pub.published == 5 and not pub.connected
    assert conn.closed


def test_stop_is_bounded_when_the_broker_never_confirms(publisher, caplog):
    pub, broker = publisher
    offer(pub, broker.conn, 4)
    t0 = time.monotonic()
    pub.stop(0.3)
    # Bounded: without its timeout it would wait for ever (a busy machine adds its delay).
    assert time.monotonic() - t0 < 10
    assert "stopped with 4 events not confirmed" in caplog.text


def test_a_publish_that_fails_half_way_loses_nothing(publisher):
    """The event taken from the buffer when the write fails goes first on the next channel."""
    pub, broker = publisher
    first = broker.conn
    offer(pub, first, 2)
    first.broken_writes = True
    pub.offer(event(2))  # taken from the buffer; its write fails
    wait_until(lambda: len(broker.connections) == 2 and pub.connected, what="reconnected")
    pub.offer(event(3))
    second = broker.conn
    wait_until(lambda: len(second.published) == 4, what="everything sent again")
    assert sent(second) == [event(i).routing_key for i in range(4)]
    assert pub.dropped == 0


def test_a_silent_broker_is_noticed_by_its_heartbeats(publisher, monkeypatch):
    """A half-open connection: no error, no confirm pending, the broker's heartbeats stop.
    The publisher's ticks notice it; health says why; it reconnects and sends again what was
    unconfirmed, in order."""
    pub, broker = publisher
    first = broker.conn
    offer(pub, first, 3)
    first.ack(1)
    wait_until(lambda: pub.published == 1, what="1 confirmed")
    wait_until(lambda: first.ticks >= 2, what="the publisher ticks while idle")
    first.heartbeat = 1
    first.silent = True
    wait_until(lambda: len(broker.connections) == 2 and pub.connected, what="reconnected")
    assert first.closed
    second = broker.conn
    pub.offer(event(3))
    wait_until(lambda: len(second.published) == 3, what="the unconfirmed, then the new one")
    assert sent(second) == [event(i).routing_key for i in (1, 2, 3)]


def test_a_heartbeat_loss_is_reported_in_the_status():
    broker = Broker()
    # A long pause before the reconnect: the status read below is the loss's, not a retry's.
    pub = AmqpPublisher("amqp://guest:guest@127.0.0.1:1/", connect=broker.connect, reconnect_min=60)
    pub.start()
    try:
        wait_until(lambda: pub.connected, what="connected")
        broker.conn.heartbeat = 2
        broker.conn.silent = True
        wait_until(lambda: not pub.connected, what="lost")
        status = pub.status()
        assert status["connected"] is False
        assert status["error"] == (
            "BrokerSilent: no heartbeat from the broker for 4s (interval 2s)"
        )
        assert broker.conn.closed
    finally:
        pub.stop(0.5)


def test_stop_while_reconnecting_still_delivers(publisher):
    """The connection is lost and the broker refuses for a while; stop() is called with
    events buffered and unconfirmed: the reconnect is tried again at once, and when the
    broker is back within the stop's timeout, every event is delivered before it returns."""
    pub, broker = publisher
    first = broker.conn
    offer(pub, first, 3)  # published, never confirmed
    broker.refuse = True
    first.fail(ConnectionResetError(104, "Connection reset by peer"))
    wait_until(lambda: not pub.connected, what="lost")
    for i in range(3, 5):
        pub.offer(event(i))
    attempts = len(broker.connections)
    stopping = gevent.spawn(pub.stop, 30.0)
    wait_until(lambda: len(broker.connections) > attempts, what="another attempt")
    assert not stopping.dead
    broker.refuse = False
    wait_until(lambda: pub.connected and len(broker.conn.published) == 5, what="all sent")
    assert sent(broker.conn) == [event(i).routing_key for i in range(5)]
    broker.conn.ack(5, multiple=True)
    stopping.join(10)
    assert stopping.dead and pub.published == 5 and pub.status()["buffered"] == 0


def test_stop_with_nothing_to_deliver_does_not_wait_for_the_broker():
    broker = Broker()
    broker.refuse = True
    pub = AmqpPublisher("amqp://guest:guest@127.0.0.1:1/", connect=broker.connect)
    pub.start()
    wait_until(lambda: broker.connections, what="a first attempt")
    t0 = time.monotonic()
    pub.stop(60.0)
    assert time.monotonic() - t0 < 10  # far from the 60 s it may take to deliver something
    assert pub.status()["connected"] is False

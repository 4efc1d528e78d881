"""Events to a real RabbitMQ (CONFD_TEST_AMQP_URL), through a TCP proxy this test can cut."""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
import urllib.request
from urllib.parse import urlsplit

import amqp
import pytest

from confd_tests.events.conftest import free_port, wait_for

AMQP_URL = os.environ["CONFD_TEST_AMQP_URL"]


class TcpProxy:
    """Forwards 127.0.0.1:port to the broker with plain threads; ``cut`` closes every
    connection and stops listening (connects are refused) until ``restore``; ``pause`` holds
    the bytes in both directions, connections open, until ``resume``."""

    def __init__(self, target):
        self.target = target
        self.port = free_port()
        self._conns = []
        self._lock = threading.Lock()
        self._listener = None
        self._flowing = threading.Event()
        self._flowing.set()
        self.restore()

    def pause(self):
        self._flowing.clear()

    def resume(self):
        self._flowing.set()

    def restore(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.cut()


class Consumer:
    """An exclusive queue on the real broker (polled: basic_get), bound to the events of one
    conference: other runs of these tests may share the broker and its exchange."""

    def __init__(self, conference: str):
        parts = urlsplit(AMQP_URL)
        self.conn = amqp.Connection(
            host="%s:%d" % (parts.hostname, parts.port or 5672),
            userid=parts.username or "guest",
            password=parts.password or "guest",
            virtual_host=parts.path[1:] or "/",
        )
        self.conn.connect()
        self.ch = self.conn.channel()
        self.ch.exchange_declare("conference", "topic", durable=True, auto_delete=False)
        self.queue, _, _ = self.ch.queue_declare("", exclusive=True)
        self.ch.queue_bind(self.queue, "conference", "conference.event.%s.*" % conference)

    def take(self, n, timeout=10.0):
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            msg = self.ch.basic_get(self.queue, no_ack=True)
            if msg is None:
                time.sleep(0.02)
                continue
            out.append(msg)
        return out

    def close(self):
        self.conn.close()


@pytest.fixture
def proxy():
    parts = urlsplit(AMQP_URL)
    p = TcpProxy((parts.hostname, parts.port or 5672))
    yield p
    p.close()


@pytest.fixture
def conf():
    """This test's conference: a name no other run uses at the same time."""
    return secrets.token_hex(16)


@pytest.fixture
def consumer(conf):
    c = Consumer(conf)
    yield c
    c.close()


def proxied_url(proxy):
    parts = urlsplit(AMQP_URL)
    return "amqp://%s:%s@127.0.0.1:%d%s" % (
        parts.username or "guest",
        parts.password or "guest",
        proxy.port,
        parts.path or "/",
    )


def metric(base, line_start):
    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


def test_events_reach_the_broker(confd, fake_fs, proxy, consumer, conf):
    c = confd({"events": {"amqp_url": proxied_url(proxy)}})
    wait_for(lambda: metric(c.base, "confd_amqp_connected") == 1.0, 30, "AMQP connected")
    mid = fake_fs.model("join", conf, caller_id_name="Alice", caller_id_number="1001")
    fake_fs.model("api", "conference %s mute %d" % (conf, mid))
    fake_fs.model("api", "conference %s lock" % conf)
    msgs = consumer.take(4, timeout=30)
    bodies = [json.loads(m.body) for m in msgs]
    assert [b["event"] for b in bodies] == [
        "conference-create",
        "add-member",
        "mute-member",
        "lock",
    ]
    call_id = bodies[1]["call_id"]
    keys = [m.delivery_info["routing_key"] for m in msgs]
    assert keys == [
        "conference.event.%s.conference" % conf,
        "conference.event.%s.%s" % (conf, call_id),
        "conference.event.%s.%s" % (conf, call_id),
        "conference.event.%s.conference" % conf,
    ]
    for m in msgs:
        assert m.properties["content_type"] == "application/json"
        assert m.properties["delivery_mode"] == 2
        assert m.delivery_info["exchange"] == "conference"
    assert bodies[1]["event_name"] == "participant_event" and bodies[1]["caller_id_name"] == "Alice"
    assert bodies[3]["event_name"] == "conference_event" and bodies[3]["is_locked"] is True


def delivered_in_order(got, sent):
    """Where each of ``got`` stands in ``sent``, and how many times the order goes back.

    At-least-once in order: ``got`` is ``sent`` with some events left out (dropped, and
    counted, when the buffer was full), and after each lost connection the messages it left
    unconfirmed go again, in order -- the broker may have routed some of them already, so
    each lost connection may go back once, never more."""
    index = {name: i for i, name in enumerate(sent)}
    assert all(name in index for name in got), got
    positions = [index[name] for name in got]
    rewinds = sum(1 for a, b in zip(positions, positions[1:]) if b <= a)
    return positions, rewinds


def taken_in(base, *actions):
    return sum(metric(base, 'confd_esl_events_total{action="%s"}' % a) for a in actions)


def test_broker_cut_mid_stream(confd, fake_fs, proxy, consumer, conf):
    """The broker goes away while 40 events come in and confd's buffer holds 5: intake and
    the API keep going, every event is either buffered or dropped and counted, and after
    the reconnect every buffered one is delivered, in order (at-least-once: a run of
    unconfirmed messages may come twice), none lost."""
    c = confd({"events": {"amqp_url": proxied_url(proxy), "amqp_buffer": 5}})
    wait_for(lambda: metric(c.base, "confd_amqp_connected") == 1.0, 30, "AMQP connected")
    fake_fs.model("join", conf, caller_id_name="Alice", caller_id_number="1000")
    assert len(consumer.take(2, timeout=30)) == 2  # conference-create, add-member
    # Both confirmed: the connection the cut ends holds none of them unconfirmed.
    wait_for(lambda: c.health()[1]["data"]["amqp"]["published"] == 2, 30, "confirms")
    proxy.cut()
    numbers = [str(2000 + i) for i in range(40)]
    for number in numbers:
        fake_fs.model("join", conf, caller_id_name="Caller", caller_id_number=number)
        assert c.health()[0] == 200  # the API answers while the broker is away
    # Intake never waits for the broker: every event was taken in while it was away.
    wait_for(lambda: taken_in(c.base, "add-member") == 41, 30, "confd took every event in")
    wait_for(lambda: metric(c.base, "confd_amqp_connected") == 0.0, 30, "AMQP lost")
    status, body = c.health()
    amqp = body["data"]["amqp"]  # /v2/health says why events are not reaching the broker
    assert status == 200 and amqp["connected"] is False and amqp["error"]
    drops = amqp["dropped"]
    assert drops == metric(c.base, 'confd_queue_drops_total{queue="amqp"}')
    assert amqp["buffered"] <= 5
    proxy.restore()
    wait_for(lambda: c.health()[1]["data"]["amqp"]["connected"], 30, "AMQP reconnected")
    # The buffer empties into the new connection before the last event comes in, so the
    # last one is not dropped for want of room.
    wait_for(lambda: c.health()[1]["data"]["amqp"]["buffered"] == 0, 30, "buffer sent")
    fake_fs.model("api", "conference %s lock" % conf)
    got = []
    while not got or json.loads(got[-1].body)["event"] != "lock":
        batch = consumer.take(1, timeout=30)
        assert batch, "the lock event never arrived; got %d messages" % len(got)
        got.extend(batch)
    bodies = [json.loads(m.body) for m in got[:-1]]
    assert {b["event"] for b in bodies} <= {"add-member"}
    positions, rewinds = delivered_in_order([b["caller_id_number"] for b in bodies], numbers)
    assert rewinds <= 1, positions  # one lost connection: at most one run sent again
    # None lost: each of the 40 was delivered or counted as dropped, never both.
    assert len(set(positions)) + drops == 40, (positions, drops)
    assert drops == c.health()[1]["data"]["amqp"]["dropped"]  # nothing dropped since


def test_a_broker_that_stops_answering_is_noticed(confd, fake_fs, proxy, consumer, conf):
    """A half-open connection: the path to the broker holds every byte, both ways, and
    closes nothing.  The heartbeats notice it while no event is pending, /v2/health says the
    broker is not connected, and once the path works again the events taken in meanwhile are
    all delivered, in order, none twice (none was in flight)."""
    c = confd({"events": {"amqp_url": proxied_url(proxy), "amqp_heartbeat": 1}})
    wait_for(lambda: metric(c.base, "confd_amqp_connected") == 1.0, 30, "AMQP connected")
    fake_fs.model("join", conf, caller_id_name="Alice", caller_id_number="1000")
    assert len(consumer.take(2, timeout=30)) == 2  # conference-create, add-member
    # Both confirmed: nothing is pending, so only the heartbeats can notice the silence.
    wait_for(lambda: c.health()[1]["data"]["amqp"]["published"] == 2, 30, "confirms")
    proxy.pause()
    wait_for(lambda: "connection lost: BrokerSilent" in c.log(), 60, "the silence noticed")
    status, body = c.health()
    amqp = body["data"]["amqp"]
    assert status == 200 and amqp["connected"] is False and amqp["error"]
    numbers = [str(2000 + i) for i in range(10)]
    for number in numbers:
        fake_fs.model("join", conf, caller_id_name="Caller", caller_id_number=number)
    wait_for(lambda: taken_in(c.base, "add-member") == 11, 30, "confd took every event in")
    proxy.resume()
    wait_for(lambda: c.health()[1]["data"]["amqp"]["connected"], 60, "AMQP reconnected")
    fake_fs.model("api", "conference %s lock" % conf)
    got = []
    while not got or json.loads(got[-1].body)["event"] != "lock":
        batch = consumer.take(1, timeout=30)
        assert batch, "the lock event never arrived; got %d messages" % len(got)
        got.extend(batch)
    assert [json.loads(m.body).get("caller_id_number") for m in got[:-1]] == numbers
    assert c.health()[1]["data"]["amqp"]["dropped"] == 0


def test_stop_delivers_what_is_buffered(confd, fake_fs, proxy, consumer, conf):
    """SIGTERM while the broker is slow to confirm and events still wait in confd's buffer
    (more than the 1,000 a connection may have unconfirmed): confd sends them and waits for
    their confirms before it exits, within its stop timeout; nothing is lost.  (Should the
    pause outlast a confirm's deadline, the connection is replaced and the unconfirmed sent
    again: at-least-once, so the broker may route a run of them twice.)"""
    published = ["conference-create", "add-member", "start-talking"]  # identified by energy
    c = confd({"events": {"amqp_url": proxied_url(proxy), "publish_participant_event": published}})
    wait_for(lambda: metric(c.base, "confd_amqp_connected") == 1.0, 30, "AMQP connected")
    mid = fake_fs.model("join", conf, caller_id_name="Alice", caller_id_number="1001")
    assert len(consumer.take(2, timeout=30)) == 2  # conference-create, add-member
    proxy.pause()
    total = 1500
    energies = [1000 + i for i in range(total)]

    def talk():
        model = fake_fs.fake.model
        for energy in energies:
            model.set_talking(mid, True, energy=energy)
            model.set_talking(mid, False)

    fake_fs.call(talk)
    wait_for(
        lambda: taken_in(c.base, "start-talking", "stop-talking") == 2 * total,
        60,
        "confd took every event in",
    )
    assert metric(c.base, 'confd_queue_depth{queue="amqp"}') > 0  # waiting in the buffer
    c.proc.terminate()
    wait_for(lambda: "stopping" in c.log(), 10, "confd took the signal")
    assert c.proc.poll() is None  # still draining: the broker has confirmed nothing yet
    proxy.resume()
    assert c.proc.wait(30) == 0
    log = c.log()
    assert "stopped with" not in log  # no event left unconfirmed
    got = []
    while True:
        batch = consumer.take(1, timeout=5)  # confirmed before confd exited: routed already
        if not batch:
            break
        got.extend(batch)
    bodies = [json.loads(m.body) for m in got]
    # Alice's two may come again: sent again with the rest when their confirms were lost.
    assert {b["event"] for b in bodies} <= {"start-talking", "conference-create", "add-member"}
    talks = [b["current_energy"] for b in bodies if b["event"] == "start-talking"]
    positions, rewinds = delivered_in_order(talks, energies)
    assert sorted(set(positions)) == list(range(total))  # every one, none lost
    assert rewinds <= log.count("AMQP: connection lost"), positions  # in order, resends aside

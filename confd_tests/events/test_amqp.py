"""Events to a real RabbitMQ (CONFD_TEST_AMQP_URL), through a TCP proxy this test can cut."""

from __future__ import annotations

import json
import os
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
    """An exclusive queue bound to conference.event.# on the real broker (polled: basic_get)."""

    def __init__(self):
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
        self.ch.queue_bind(self.queue, "conference", "conference.event.#")

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
def consumer():
    c = Consumer()
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


def test_events_reach_the_broker(confd, fake_fs, proxy, consumer):
    c = confd({"events": {"amqp_url": proxied_url(proxy)}})
    wait_for(lambda: metric(c.base, "confd_amqp_connected") == 1.0, 10, "AMQP connected")
    conf = "0123456789abcdef0123456789abcdef"
    mid = fake_fs.model("join", conf, caller_id_name="Alice", caller_id_number="1001")
    fake_fs.model("api", "conference %s mute %d" % (conf, mid))
    fake_fs.model("api", "conference %s lock" % conf)
    msgs = consumer.take(4)
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


def test_broker_cut_mid_stream(confd, fake_fs, proxy, consumer):
    c = confd({"events": {"amqp_url": proxied_url(proxy), "amqp_buffer": 5}})
    wait_for(lambda: metric(c.base, "confd_amqp_connected") == 1.0, 10, "AMQP connected")
    conf = "0123456789abcdef0123456789abcdef"
    mid = fake_fs.model("join", conf, caller_id_name="Alice", caller_id_number="1001")
    assert len(consumer.take(2)) == 2
    proxy.cut()
    t0 = time.monotonic()
    for i in range(40):
        fake_fs.model("set_talking", mid, i % 2 == 0)
        assert c.health()[0] == 200  # intake and the API keep their pace
    assert time.monotonic() - t0 < 10
    wait_for(lambda: metric(c.base, "confd_amqp_connected") == 0.0, 10, "AMQP lost")
    drops = metric(c.base, 'confd_queue_drops_total{queue="amqp"}')
    assert drops >= 40 - 5 - 1  # the buffer holds 5; one may be in flight
    status, body = c.health()
    amqp = body["data"]["amqp"]  # /v2/health says why events are not reaching the broker
    assert status == 200 and amqp["connected"] is False and amqp["error"]
    assert amqp["dropped"] == drops and amqp["buffered"] <= 5
    proxy.restore()
    wait_for(lambda: metric(c.base, "confd_amqp_connected") == 1.0, 15, "AMQP reconnected")
    assert c.health()[1]["data"]["amqp"]["connected"] is True
    fake_fs.model("api", "conference %s lock" % conf)
    got = consumer.take(40, timeout=5)
    names = [json.loads(m.body)["event"] for m in got]
    assert names[-1] == "lock"
    # What the buffer held when the broker went away is delivered after the reconnect.
    assert 1 <= len(names) - 1 <= 6


def test_stop_delivers_what_is_buffered(confd, fake_fs, proxy, consumer):
    """SIGTERM while the broker is slow to confirm and events still wait in confd's buffer
    (more than the 1,000 a connection may have unconfirmed): confd sends them and waits for
    their confirms before it exits, within its stop timeout; nothing is lost."""
    c = confd({"events": {"amqp_url": proxied_url(proxy)}})
    wait_for(lambda: metric(c.base, "confd_amqp_connected") == 1.0, 10, "AMQP connected")
    conf = "0123456789abcdef0123456789abcdef"
    mid = fake_fs.model("join", conf, caller_id_name="Alice", caller_id_number="1001")
    assert len(consumer.take(2)) == 2  # conference-create, add-member
    proxy.pause()
    total = 1500

    def talk():
        model = fake_fs.fake.model
        for i in range(total):
            model.set_talking(mid, i % 2 == 0)

    def taken_in():
        return sum(
            metric(c.base, 'confd_esl_events_total{action="%s"}' % a)
            for a in ("start-talking", "stop-talking")
        )

    fake_fs.call(talk)
    wait_for(lambda: taken_in() == total, 10, "confd took every event in")
    assert metric(c.base, 'confd_queue_depth{queue="amqp"}') > 0  # waiting in the buffer
    c.proc.terminate()
    time.sleep(0.5)
    assert c.proc.poll() is None  # still draining: the broker has confirmed nothing yet
    proxy.resume()
    assert c.proc.wait(10) == 0
    got = consumer.take(total, timeout=15)
    names = [json.loads(m.body)["event"] for m in got]
    assert len(names) == total and set(names) == {"start-talking", "stop-talking"}
    assert "stopped with" not in c.log()  # no event left unconfirmed

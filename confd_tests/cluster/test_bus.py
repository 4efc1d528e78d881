"""confd.cluster.bus against a real RabbitMQ (CONFD_TEST_AMQP_URL, default the local broker).

Each instance's Bus runs in a process of its own (bus_peer.py: py-amqp needs gevent-patched
sockets, and the test process is not patched); the test drives them and publishes events
itself.  Every test uses a cluster name of its own, and conference names of its own in the
events' routing keys.  Timings are asserted only as bounds that cannot be met the other way:
an answer that came before the peer's handler could have finished, a failure well before the
deadline that would otherwise have ended the wait.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import amqp
import pytest

from confd.cluster import events as cev
from confd.cluster import names
from confd.cluster.bus import Bus, BusUnavailable
from confd.events import shape
from confd.events.amqp import connection_params
from confd_tests.cluster.proxy import FaultProxy
from confd_tests.conftest import wait_until

AMQP_URL = os.environ.get("CONFD_TEST_AMQP_URL") or "amqp://guest:guest@127.0.0.1:5672/"
ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0


def poll(predicate, what: str) -> None:
    wait_until(predicate, WAIT, 0.05, what)


def via(url: str, port: int) -> str:
    params = connection_params(url)
    return "amqp://%s:%s@127.0.0.1:%d/%s" % (
        params["userid"],
        params["password"],
        port,
        "" if params["virtual_host"] == "/" else params["virtual_host"],
    )


class Peer:
    """One Bus in a child process (bus_peer.py), and a line-JSON client to it."""

    def __init__(self, tmp: Path, url: str, cluster: str, instance: str) -> None:
        self.instance = instance
        self.log_path = tmp / ("%s.log" % instance)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "confd_tests.cluster.bus_peer", url, cluster, instance],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        line = self.proc.stdout.readline().decode()
        assert line.startswith("PORT "), "bus_peer did not start: %r\n%s" % (line, self.log())
        self.sock = socket.create_connection(("127.0.0.1", int(line.split()[1])), timeout=120)
        self.f = self.sock.makefile("rwb")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def call(self, op: str, **kw: Any) -> Dict[str, Any]:
        self.f.write(json.dumps(dict(kw, op=op)).encode() + b"\n")
        self.f.flush()
        line = self.f.readline()
        assert line, "bus_peer %s died:\n%s" % (self.instance, self.log())
        return json.loads(line)

    def ok(self, op: str, **kw: Any) -> Any:
        answer = self.call(op, **kw)
        assert "ok" in answer, answer
        return answer["ok"]

    def status(self) -> Dict[str, Any]:
        return self.ok("status")

    def wait_connected(self) -> Dict[str, Any]:
        poll(lambda: self.status()["connected"], what=self.instance)
        return self.status()

    def close(self) -> None:
        try:
            self.sock.close()
            self.proc.stdin.close()  # the peer stops its Bus and exits
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        finally:
            self._log.close()


class Broker:
    """The test's own connection: publishes events as an owner's publisher would."""

    def __init__(self) -> None:
        self.conn = amqp.Connection(**connection_params(AMQP_URL))
        self.conn.connect()
        self.ch = self.conn.channel()
        self.ch.exchange_declare("conference", "topic", durable=True, auto_delete=False)

    def publish(self, pub: shape.Published, instance: str = "owner") -> None:
        msg = amqp.Message(
            pub.body(),
            content_type="application/json",
            application_headers=cev.publish_headers(instance)(pub),
        )
        self.ch.basic_publish(msg, exchange="conference", routing_key=pub.routing_key)

    def close(self, cluster: str) -> None:
        try:
            self.ch.exchange_delete(names.rpc_exchange(cluster))
        finally:
            self.conn.close()


@pytest.fixture
def bus_cluster(tmp_path):
    cluster = "t" + secrets.token_hex(5)
    peers: List[Peer] = []
    broker = Broker()

    class Made:
        name = cluster
        publisher = broker

        @staticmethod
        def peer(short: str, url: str = AMQP_URL) -> Peer:
            p = Peer(tmp_path, url, cluster, "%s-%s" % (short, cluster))
            peers.append(p)
            p.wait_connected()
            return p

    yield Made
    for p in peers:
        p.close()
    broker.close(cluster)


def event(conference: str, call: str = "call-1", name: str = "add-member", **kw):
    """An owner's event, stamped with when it happened (as the daemon's ``stamp`` sink does)."""
    kw.setdefault("at", time.time())
    return shape.Published(
        name=name,
        conference_id=conference,
        call_id=call,
        routing_key=shape.routing_key(conference, call),
        data={"Event": name, "Conference-Name": conference, "Call-ID": call},
        **kw,
    )


def room() -> str:
    return "room-" + secrets.token_hex(6)


def routing_keys(peer: Peer) -> List[str]:
    return [e["routing_key"] for e in peer.ok("events")]


# --- request / reply --------------------------------------------------------------------------


def test_request_reply_between_two_instances(bus_cluster):
    a, b = bus_cluster.peer("a"), bus_cluster.peer("b")
    body = {"kind": "find", "name": "room1", "from": a.instance}
    answer = a.ok("request", route=names.instance_route(b.instance), body=body, timeout=20)
    assert answer == {"instance": b.instance, "owned": [], "echo": body}
    back = b.ok(
        "request", route=names.instance_route(a.instance), body={"from": b.instance}, timeout=20
    )
    assert back["instance"] == a.instance
    assert a.ok("handled") == [{"from": b.instance}] and b.ok("handled") == [body]


def test_concurrent_requests_get_their_own_replies(bus_cluster):
    a, b = bus_cluster.peer("a"), bus_cluster.peer("b")
    route = names.instance_route(b.instance)
    tickets = [
        a.ok("spawn_request", route=route, body={"n": n, "from": a.instance}, timeout=30)
        for n in range(20)
    ]
    for n, ticket in enumerate(tickets):
        answer = a.call("result", ticket=ticket)
        assert answer.get("ok", {}).get("echo", {}).get("n") == n, answer


def test_a_request_to_an_instance_that_does_not_exist_fails_at_once(bus_cluster):
    a = bus_cluster.peer("a")
    answer = a.call(
        "request", route=names.instance_route("ghost-" + bus_cluster.name), body={}, timeout=30
    )
    assert answer["error"] == "NoAnswer", answer
    assert answer["elapsed"] < 15, "failed at its deadline, not when the broker returned it"


def test_a_request_not_answered_in_time_is_no_answer(bus_cluster):
    a, b = bus_cluster.peer("a"), bus_cluster.peer("b")
    answer = a.call(
        "request",
        route=names.instance_route(b.instance),
        body={"from": a.instance, "sleep_for": {b.instance: 5}},
        timeout=1,
    )
    assert answer["error"] == "NoAnswer" and answer["elapsed"] < 5, answer
    assert a.status()["timeouts"] == 1


# --- gather -----------------------------------------------------------------------------------


def test_gather_waits_for_every_expected_instance(bus_cluster):
    a, b, c = bus_cluster.peer("a"), bus_cluster.peer("b"), bus_cluster.peer("c")
    body = {"kind": "list", "from": a.instance, "sleep_for": {c.instance: 2}}
    answer = a.call("gather", body=body, expect=[b.instance, c.instance], timeout=30)
    replies = answer["ok"]
    assert set(replies) == {b.instance, c.instance}
    assert replies[c.instance]["echo"] == body
    assert answer["elapsed"] >= 2, "returned before c (2 s to answer) had answered"
    assert answer["elapsed"] < 20, "waited for its deadline though every instance answered"
    # A request to every instance reaches its asker too, which does not answer itself.
    assert a.ok("handled") == []


def test_gather_returns_what_came_at_its_deadline(bus_cluster):
    a, b = bus_cluster.peer("a"), bus_cluster.peer("b")
    answer = a.call("gather", body={"from": a.instance}, expect=[b.instance, "ghost"], timeout=2)
    assert set(answer["ok"]) == {b.instance}
    assert answer["elapsed"] >= 1.9


def test_gather_expecting_nobody_asks_nobody(bus_cluster):
    a, b = bus_cluster.peer("a"), bus_cluster.peer("b")
    assert a.ok("gather", body={"from": a.instance}, expect=[], timeout=5) == {}
    assert b.ok("handled") == []


# --- the events queue -------------------------------------------------------------------------


def test_bind_returns_once_the_events_queue_is_bound(bus_cluster):
    a = bus_cluster.peer("a")
    rooms = [room() for _ in range(10)]
    for r in rooms:
        a.ok("bind", patterns=["conference.event.%s.*" % r])
        bus_cluster.publisher.publish(event(r))  # right after bind() returned
    poll(lambda: len(routing_keys(a)) == 10, what="the 10 events")
    assert sorted(routing_keys(a)) == sorted(shape.routing_key(r, "call-1") for r in rooms)


def test_events_arrive_whole_through_the_broker(bus_cluster):
    a = bus_cluster.peer("a")
    r = room()
    a.ok("bind", patterns=["conference.event.%s.*" % r])
    pubs = [
        event(r, "call-7", account_hint="acc1", owner_pending=False),
        event(r, "conference", name="lock", account_hint=None, owner_pending=True),
    ]
    for pub in pubs:
        bus_cluster.publisher.publish(pub)
    poll(lambda: len(a.ok("events")) == 2, what="two events")
    got = a.ok("events")
    assert got == [
        {
            "name": p.name,
            "conference_id": r,
            "call_id": p.call_id,
            "routing_key": p.routing_key,
            "account_hint": p.account_hint,
            "owner_pending": p.owner_pending,
            "at": p.at,
            "body": p.body().decode(),
        }
        for p in pubs
    ]


def test_own_events_are_not_handed_on(bus_cluster):
    a = bus_cluster.peer("a")
    r = room()
    a.ok("bind", patterns=["conference.event.%s.*" % r])
    bus_cluster.publisher.publish(event(r, "mine"), instance=a.instance)
    bus_cluster.publisher.publish(event(r, "theirs"), instance="other")
    poll(lambda: routing_keys(a), what="the other's event")
    assert routing_keys(a) == [shape.routing_key(r, "theirs")]


def test_unbound_when_the_last_subscription_releases(bus_cluster):
    a = bus_cluster.peer("a")
    r, sentinel = room(), room()
    pattern = "conference.event.%s.*" % r
    a.ok("bind", patterns=[pattern])
    a.ok("bind", patterns=[pattern])  # a second subscription to the same binding
    a.ok("unbind", patterns=[pattern])
    assert a.status()["patterns"] == [pattern]
    # Still bound: the bind below is made after the unbind asked before it (one at a time, in
    # order), so once it returns the first unbind has had its chance.
    a.ok("bind", patterns=["conference.event.%s.*" % sentinel])
    bus_cluster.publisher.publish(event(r, "one"))
    bus_cluster.publisher.publish(event(sentinel, "s1"))
    poll(lambda: shape.routing_key(sentinel, "s1") in routing_keys(a), what="sentinel 1")
    assert shape.routing_key(r, "one") in routing_keys(a)
    # The last one releases: unbound.
    a.ok("unbind", patterns=[pattern])
    assert a.status()["patterns"] == ["conference.event.%s.*" % sentinel]
    a.ok("bind", patterns=["conference.event.%s.x" % sentinel])  # after the unbind, in order
    bus_cluster.publisher.publish(event(r, "two"))
    bus_cluster.publisher.publish(event(sentinel, "s2"))  # same channel: after "two"
    poll(lambda: shape.routing_key(sentinel, "s2") in routing_keys(a), what="sentinel 2")
    assert shape.routing_key(r, "two") not in routing_keys(a)


# --- losing the broker ------------------------------------------------------------------------


def test_a_lost_connection_fails_requests_in_flight_then_everything_comes_back(bus_cluster):
    target = connection_params(AMQP_URL)["host"].rsplit(":", 1)
    with FaultProxy(target[0], int(target[1]), name="bus-a") as proxy:
        a = bus_cluster.peer("a", via(AMQP_URL, proxy.port))
        b = bus_cluster.peer("b")
        r = room()
        a.ok("bind", patterns=["conference.event.%s.*" % r])
        before = a.status()["connected_at"]
        # b takes 30 s to answer; a's request may wait 60.
        ticket = a.ok(
            "spawn_request",
            route=names.instance_route(b.instance),
            body={"from": a.instance, "sleep_for": {b.instance: 30}},
            timeout=60,
        )
        poll(lambda: b.ok("handled"), what="b handling the request")
        proxy.cut()
        answer = a.call("result", ticket=ticket)
        assert answer.get("error") == "BusUnavailable", answer
        assert answer["elapsed"] < 30, "failed at the answer or the deadline, not at the loss"
        poll(lambda: not a.status()["connected"], what="a disconnected")
        # While it is lost: a request fails at once, a bind too.
        assert a.call("request", route="all", body={}, timeout=5)["error"] == "BusUnavailable"
        assert a.call("bind", patterns=["conference.event.x.*"])["error"] == "BusUnavailable"
        proxy.restore()
        status = a.wait_connected()
        assert status["connected_at"] > before
        assert status["patterns"] == ["conference.event.%s.*" % r]
        # The events queue was bound again; requests work again.
        bus_cluster.publisher.publish(event(r, "after"))
        poll(lambda: routing_keys(a) == [shape.routing_key(r, "after")], what="bound again")
        answer = a.ok("request", route=names.instance_route(b.instance), body={"n": 1}, timeout=20)
        assert answer["echo"] == {"n": 1}


# --- without a broker (in this process) -------------------------------------------------------


def bus_never_started() -> Bus:
    return Bus(
        "amqp://guest:guest@127.0.0.1:1/",
        cluster="t",
        instance="a",
        handle=lambda body: {},
        on_event=lambda msg: None,
    )


def test_not_connected_requests_and_binds_fail_at_once():
    bus = bus_never_started()
    with pytest.raises(BusUnavailable):
        bus.request(names.instance_route("b"), {}, timeout=30)
    with pytest.raises(BusUnavailable):
        bus.bind(["conference.event.room1.*"])
    assert bus.patterns == [], "a failed bind leaves no subscription counted"
    assert bus.status()["connected"] is False and bus.status()["error"]

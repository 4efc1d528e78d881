"""The connection and the node supervisor under the faults a daemon must survive."""

import random
import time

import gevent
import pytest
from gevent.server import StreamServer

from confd.backoff import backoff_delay
from confd.conferences.commands import RELAXED_NAME_PATTERN, CommandBuilder
from confd.esl import node as node_module
from confd.esl import protocol as p
from confd.esl.connection import (
    AuthFailed,
    CommandTimeout,
    ConnectionLost,
    EslConnection,
    TooManyPending,
)
from confd.esl.node import NodeUnavailable
from confd_tests.conftest import wait_until

AUTH_REQUEST = p.encode_frame({"Content-Type": p.AUTH_REQUEST})
OK = p.encode_frame({"Content-Type": p.COMMAND_REPLY, "Reply-Text": "+OK accepted"})
SUBSCRIBED = p.encode_frame(
    {"Content-Type": p.COMMAND_REPLY, "Reply-Text": "+OK event listener enabled plain"}
)

# room1's first member joins (one conference, one member on the node).
ADD_MEMBER = p.encode_plain_event(
    {
        "Event-Subclass": "conference::maintenance",
        "Event-Name": "CUSTOM",
        "Conference-Name": "room1",
        "Conference-Unique-ID": "u1",
        "Unique-ID": "c1",
        "Member-ID": "1",
        "Action": "add-member",
    }
)


def api_response(text):
    return p.encode_frame({"Content-Type": p.API_RESPONSE}, text.encode())


class Scripted:
    """A FreeSWITCH whose answers a test writes: ``answer(line) -> bytes | None``."""

    def __init__(self, answer, greet=True):
        self.answer = answer
        self.greet = greet
        self.lines = []
        self.socks = []
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.port = self.server.server_port

    def _handle(self, sock, _addr):
        self.socks.append(sock)
        if self.greet:
            sock.sendall(AUTH_REQUEST)
        parser = p.CommandParser()
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            for cmd in parser.feed(data):
                self.lines.append(cmd.line)
                out = self.answer(cmd.line)
                if out:
                    sock.sendall(out)

    def push(self, data):
        for s in self.socks:
            try:
                s.sendall(data)
            except OSError:
                pass

    def stop(self):
        self.server.stop(timeout=0)
        for s in self.socks:
            s.close()


def standard(line, extra=None):
    if line.startswith("auth "):
        return OK
    if line.startswith("event "):
        return SUBSCRIBED
    if line == "api conference json_list":
        return api_response("[]")
    if extra:
        return extra(line)
    return None


@pytest.fixture
def scripted():
    fakes = []

    def make(answer=standard, greet=True):
        fake = Scripted(answer, greet)
        fakes.append(fake)
        return fake

    yield make
    for f in fakes:
        f.stop()


# --- connection ------------------------------------------------------------------------------


def test_command_past_its_deadline_fails_and_kills_the_connection(scripted):
    fake = scripted()
    conn = EslConnection("127.0.0.1", fake.port, "ClueCon")
    conn.connect(timeout=2)
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout):
        conn.api("status", timeout=0.2)
    assert 0.2 <= time.monotonic() - t0 < 1.0
    assert conn.closed and "no reply" in conn.close_reason
    with pytest.raises(ConnectionLost):
        conn.api("status", timeout=1)


def test_pending_commands_fail_at_once_when_the_socket_closes(scripted):
    fake = scripted()
    conn = EslConnection("127.0.0.1", fake.port, "ClueCon")
    conn.connect(timeout=2)
    results = []

    def call():
        t0 = time.monotonic()
        try:
            conn.api("status", timeout=30)
        except ConnectionLost as exc:
            results.append((time.monotonic() - t0, str(exc)))

    waiters = [gevent.spawn(call) for _ in range(3)]
    wait_until(lambda: fake.lines.count("api status") == 3)
    fake.stop()  # FreeSWITCH dies with three commands pending
    gevent.joinall(waiters, timeout=5)
    assert len(results) == 3
    assert all(elapsed < 1.0 for elapsed, _ in results)


def test_replies_pair_with_commands_in_order(scripted):
    fake = scripted(lambda line: standard(line, lambda line: api_response("reply to " + line)))
    conn = EslConnection("127.0.0.1", fake.port, "ClueCon")
    conn.connect(timeout=2)
    jobs = [gevent.spawn(conn.api, "cmd%d" % i, 5) for i in range(20)]
    gevent.joinall(jobs, timeout=5)
    assert [j.value for j in jobs] == ["reply to api cmd%d" % i for i in range(20)]


def test_wrong_password(scripted):
    def refuse(line):
        if line.startswith("auth "):
            return p.encode_frame({"Content-Type": p.COMMAND_REPLY, "Reply-Text": "-ERR invalid"})
        return None

    fake = scripted(refuse)
    conn = EslConnection("127.0.0.1", fake.port, "wrong")
    with pytest.raises(AuthFailed):
        conn.connect(timeout=2)
    assert conn.closed


def test_no_auth_request_is_a_timeout(scripted):
    fake = scripted(greet=False)
    conn = EslConnection("127.0.0.1", fake.port, "ClueCon")
    with pytest.raises(CommandTimeout):
        conn.connect(timeout=0.3)


def test_refused_connection():
    conn = EslConnection("127.0.0.1", 1, "ClueCon", connect_timeout=1)
    with pytest.raises(ConnectionLost):
        conn.connect()
    assert "connect failed" in conn.close_reason


def test_silence_past_the_read_deadline_closes(scripted):
    fake = scripted()
    conn = EslConnection("127.0.0.1", fake.port, "ClueCon", read_timeout=0.3)
    conn.connect(timeout=2)
    assert conn.wait_closed(3)
    assert "heartbeat" in conn.close_reason


def test_garbage_is_a_protocol_error(scripted):
    fake = scripted()
    conn = EslConnection("127.0.0.1", fake.port, "ClueCon")
    conn.connect(timeout=2)
    fake.push(b"Content-Length: banana\n\n")
    assert conn.wait_closed(3)
    assert "protocol error" in conn.close_reason


def test_events_reach_the_callback_in_order(scripted):
    got = []
    fake = scripted()
    conn = EslConnection("127.0.0.1", fake.port, "ClueCon", on_event=got.append)
    conn.connect(timeout=2)
    frames = [p.encode_plain_event({"Event-Name": "CUSTOM", "N": str(i)}) for i in range(50)]
    fake.push(b"".join(frames))
    wait_until(lambda: len(got) == 50)
    assert [p.parse_event(f)["N"] for f in got] == [str(i) for i in range(50)]


def test_a_command_with_a_line_break_is_never_sent(scripted):
    fake = scripted()
    conn = EslConnection("127.0.0.1", fake.port, "ClueCon")
    conn.connect(timeout=2)
    with pytest.raises(ValueError):
        conn.api("conference x kick 1\n\napi status", timeout=1)
    gevent.sleep(0.05)
    assert fake.lines == ["auth ClueCon"]


# --- backoff and the supervisor ----------------------------------------------------------------


def test_backoff_doubles_with_jitter_and_caps():
    rng = random.Random(7)
    delays = [backoff_delay(n, 0.5, 30.0, rng) for n in range(12)]
    assert delays[0] == 0.5
    for n, d in enumerate(delays[1:], start=1):
        ceiling = min(30.0, 0.5 * 2**n)
        assert ceiling / 2 <= d <= ceiling
    assert max(delays) <= 30.0 and delays[-1] >= 15.0
    assert len({round(backoff_delay(3, 0.5, 30.0, rng), 6) for _ in range(20)}) > 1  # jitter


def test_node_auth_failure_is_reported_and_retried_slowly(scripted, make_node):
    def refuse(line):
        if line.startswith("auth "):
            return p.encode_frame({"Content-Type": p.COMMAND_REPLY, "Reply-Text": "-ERR invalid"})
        return None

    fake = scripted(refuse)
    node = make_node(fake.port, password="wrong", reconnect_min=0.05, reconnect_max=0.5)
    wait_until(lambda: node.error and "authentication" in node.error)
    first = fake.lines.count("auth wrong")
    gevent.sleep(0.3)
    # after an auth failure the next try waits the maximum (0.25 .. 0.5 s), not the minimum
    assert fake.lines.count("auth wrong") - first <= 1
    assert node.status()["connected"] is False
    with pytest.raises(NodeUnavailable):
        node.api(CommandBuilder(RELAXED_NAME_PATTERN).lock("room1"))


def test_node_heartbeat_deadline_drops_state(scripted, make_node):
    add = ADD_MEMBER
    fake = scripted()
    node = make_node(fake.port, heartbeat_timeout=0.4, reconnect_min=5)
    wait_until(lambda: node.connected)
    fake.push(add)
    wait_until(lambda: node.state.counts("fs1") == (1, 1))
    # the node goes silent: no heartbeat, no bytes
    wait_until(lambda: not node.connected, timeout=3)
    assert "heartbeat" in node.error
    assert node.state.counts("fs1") == (0, 0)


def test_node_command_past_its_deadline_costs_only_the_command_connection(scripted, make_node):
    """events.md, lifecycle step 4: a command with no reply fails (503 to the caller) and the
    command connection is made again; the event connection and the live state stay."""
    add = ADD_MEMBER
    slow = "api conference room1 lock"
    fake = scripted(
        lambda line: standard(line, lambda line: None if line == slow else api_response("+OK"))
    )
    published = []
    node = make_node(fake.port, command_timeout=0.3, reconnect_min=0.05, publish=published.extend)
    wait_until(lambda: node.connected)
    fake.push(add)
    wait_until(lambda: node.state.counts("fs1") == (1, 1))
    events_before = node._events
    builder = CommandBuilder(RELAXED_NAME_PATTERN)
    with pytest.raises(CommandTimeout):
        node.api(builder.lock("room1"))
    # the command went on the second connection, the one that subscribed to nothing
    assert fake.lines.count(slow) == 1 and fake.lines.count("auth ClueCon") >= 2
    # only the command connection is made again: a third auth, the same event connection
    wait_until(lambda: node.command_reconnects == 1, what="command connection made again")
    assert fake.lines.count("auth ClueCon") == 3
    assert node.connected and node._events is events_before and not events_before.closed
    assert node.state.counts("fs1") == (1, 1)
    assert [u.event for u in published] == ["add-member"]  # no leave, no destroy
    assert node.api(builder.unlock("room1")) == "+OK"
    assert node.connects == 1 and node.error is None


def test_events_during_resync_are_applied_after_the_snapshot(scripted, make_node):
    """json_list's reply is held back while two events arrive: the snapshot is applied first,
    then the held events, in order."""
    snapshot = (
        '[{"conference_name":"room1","conference_uuid":"u1","run_time":1,"locked":false,'
        '"members":[{"type":"caller","id":1,"uuid":"c1","flags":{"can_hear":true,'
        '"can_speak":true},"join_time":1}]}]'
    )
    base = {
        "Event-Subclass": "conference::maintenance",
        "Event-Name": "CUSTOM",
        "Conference-Name": "room1",
        "Conference-Unique-ID": "u1",
        "Hear": "true",
        "Speak": "true",
    }
    early = p.encode_plain_event(
        dict(
            base, **{"Unique-ID": "c1", "Member-ID": "1", "Action": "mute-member", "Speak": "false"}
        )
    )
    join2 = p.encode_plain_event(
        dict(base, **{"Unique-ID": "c2", "Member-ID": "2", "Action": "add-member"})
    )

    def answer(line):
        if line == "api conference json_list":
            return early + join2 + api_response(snapshot)
        return standard(line)

    fake = scripted(answer)
    node = make_node(fake.port, reconnect_min=5)
    wait_until(lambda: node.connected)
    (conf,) = node.state.conferences("fs1")
    assert sorted(conf.participants) == [1, 2]
    assert conf.participants[1].speak is False  # the held mute applied after the snapshot
    assert node.events_in == 2


def test_pending_commands_are_bounded(scripted):
    fake = scripted(lambda line: standard(line, lambda line: None))  # never answers
    conn = EslConnection("127.0.0.1", fake.port, "ClueCon", max_pending=3)
    conn.connect(timeout=2)
    waiters = [gevent.spawn(conn.api, "status", 5) for _ in range(3)]
    wait_until(lambda: conn.pending == 3)
    t0 = time.monotonic()
    with pytest.raises(TooManyPending):
        conn.api("status", timeout=5)
    # refused at once, not queued: far below the 5 s the caller would otherwise wait
    assert time.monotonic() - t0 < 2.5
    conn.close("test over")
    gevent.joinall(waiters, timeout=2)
    assert all(isinstance(w.exception, ConnectionLost) for w in waiters)


def test_resync_backlog_is_bounded(scripted, make_node, monkeypatch):
    """A json_list reply that never comes while events pour in: the held events stop at the
    bound, the connection is restarted, nothing grows without limit."""
    monkeypatch.setattr(node_module, "MAX_RESYNC_BACKLOG", 5)
    flood = b"".join(p.encode_plain_event({"Event-Name": "CUSTOM", "N": str(i)}) for i in range(20))

    def answer(line):
        if line == "api conference json_list":
            return flood  # events, and no reply
        return standard(line)

    fake = scripted(answer)
    node = make_node(fake.port, reconnect_min=5)
    wait_until(lambda: node.resync_overflows >= 1)
    wait_until(lambda: node.error is not None and "resync backlog" in node.error)
    assert not node.connected
    assert node.resync_backlog == 0

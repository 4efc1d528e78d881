"""FakeFreeSwitch over real loopback sockets, against what mod_event_socket does in the captures."""

from __future__ import annotations

import json
from collections import deque
from typing import Iterator, List, Optional

import gevent
import pytest
from gevent import socket

from confd.esl.protocol import (
    API_RESPONSE,
    AUTH_REQUEST,
    COMMAND_REPLY,
    DISCONNECT_NOTICE,
    EVENT_JSON,
    EVENT_PLAIN,
    Frame,
    FrameParser,
    parse_event,
)
from confd.simulator.model import ConferenceModel
from confd.simulator.server import GOODBYE_NOTICE, SHUTDOWN_NOTICE, FakeFreeSwitch
from confd_tests.conftest import wait_until

pytestmark = pytest.mark.timeout(10)


class Closed(Exception):
    pass


class Client:
    """A bare ESL client: a gevent socket and the project's FrameParser."""

    def __init__(self, address, password: Optional[str] = "ClueCon") -> None:
        self.sock = socket.create_connection(address, timeout=2)
        self.parser = FrameParser()
        self.frames: deque = deque()
        self.eof = False
        assert self.read().content_type == AUTH_REQUEST
        if password is not None:
            assert self.command("auth " + password).reply_text == "+OK accepted"

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n\n")

    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        """The next frame; None when nothing came within ``timeout``; Closed at EOF."""
        with gevent.Timeout(timeout, False):
            while not self.frames:
                if self.eof:
                    raise Closed()
                data = self.sock.recv(65536)
                if not data:
                    self.eof = True
                    continue
                self.frames.extend(self.parser.feed(data))
        return self.frames.popleft() if self.frames else None

    def command(self, line: str) -> Frame:
        self.send(line)
        frame = self.read()
        assert frame is not None, "no reply to %r" % line
        return frame

    def events(self, n: int, timeout: float = 1.0) -> List[Frame]:
        out = []
        while len(out) < n:
            frame = self.read(timeout)
            assert frame is not None, "got %d of %d events" % (len(out), n)
            out.append(frame)
        return out

    def closed_within(self, timeout: float = 1.0) -> List[Frame]:
        """Every frame until EOF (which must come within ``timeout``)."""
        got = []
        with gevent.Timeout(timeout):
            try:
                while True:
                    frame = self.read(timeout)
                    if frame is not None:
                        got.append(frame)
            except Closed:
                return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake() -> Iterator[FakeFreeSwitch]:
    server = FakeFreeSwitch(ConferenceModel(hostname="sim1")).start()
    yield server
    server.stop()


@pytest.fixture
def client(fake) -> Iterator[Client]:
    c = Client(fake.address)
    yield c
    c.close()


def actions(frames: List[Frame]) -> List[str]:
    return [parse_event(f).get("Action") for f in frames]


def test_preauth_and_wrong_password_like_s6(fake):
    c = Client(fake.address, password=None)
    assert c.command("api status").reply_text == "-ERR command not found"
    assert c.command("event plain ALL").reply_text == "-ERR command not found"
    reply = c.command("auth wrong")
    assert (reply.content_type, reply.reply_text) == (COMMAND_REPLY, "-ERR invalid")
    rest = c.closed_within()
    assert [f.content_type for f in rest] == [DISCONNECT_NOTICE]
    assert rest[0].body.decode() == GOODBYE_NOTICE
    assert fake.wait_for_connections(0)
    assert [line for _, line in fake.commands] == ["api status", "event plain ALL", "auth wrong"]


def test_subscription_then_join_sends_the_events_in_order(fake, client):
    reply = client.command("event plain CUSTOM conference::maintenance")
    assert reply.reply_text == "+OK event listener enabled plain"
    member = fake.model.join("room1", caller_id_name="Alice", caller_id_number="1001")
    frames = client.events(3)
    assert {f.content_type for f in frames} == {EVENT_PLAIN}
    assert actions(frames) == ["conference-create", "add-member", "floor-change"]
    add = parse_event(frames[1])
    assert add["Member-ID"] == str(member)
    assert add["FreeSWITCH-Hostname"] == "sim1"
    assert add["Caller-Orig-Caller-ID-Name"] == "Alice"
    assert add["Caller-Caller-ID-Name"] == "Outbound Call"
    assert add["Event-Subclass"] == "conference::maintenance"


def test_api_reply_comes_before_its_events(fake, client):
    client.command("event plain CUSTOM conference::maintenance")
    fake.model.join("room1", caller_id_number="1001")
    client.events(3)
    client.send("api conference room1 mute 1")
    reply = client.read()
    assert (reply.content_type, reply.body) == (API_RESPONSE, b"+OK mute 1\n")
    assert actions(client.events(1)) == ["mute-member"]
    listing = client.command("api conference room1 list").body.decode()
    assert listing.startswith("1;null/1001;") and listing.endswith(";hear|floor;0;0;100\n")
    assert client.command("api conference room9 lock").body == b"-ERR Conference room9 not found\n"
    assert client.command("api version").body == b"FreeSWITCH Version 1.11.3-dev~64bit ( 64bit)\n"
    assert client.command("frobnicate now").reply_text == "-ERR command not found"


def test_bgapi_answers_a_job_uuid_then_runs(fake, client):
    client.command("event plain CUSTOM conference::maintenance")
    reply = client.command(
        "bgapi originate {origination_caller_id_number=1002,origination_caller_id_name=Bob}"
        "null/1002 &conference(room1@default+flags{moderator})"
    )
    assert reply.reply_text == "+OK Job-UUID: " + reply.headers["Job-UUID"]
    frames = client.events(3)
    assert actions(frames) == ["conference-create", "add-member", "floor-change"]
    assert parse_event(frames[1])["Member-Type"] == "moderator"


def test_json_subscription(fake, client):
    assert client.command("event json ALL").reply_text == "+OK event listener enabled json"
    fake.model.join("room1", caller_id_number="1001", channel_vars={"ecallmgr_Account-ID": "a1"})
    frames = client.events(3)
    assert {f.content_type for f in frames} == {EVENT_JSON}
    body = json.loads(frames[1].body)
    assert body["Action"] == "add-member"
    assert body["Event-Subclass"] == "conference::maintenance"
    assert body["variable_ecallmgr_Account-ID"] == "a1"


def test_noevents_stops_delivery(fake, client):
    client.command("event plain CUSTOM conference::maintenance")
    assert client.command("noevents").reply_text == "+OK no longer listening for events"
    fake.model.join("room1", caller_id_number="1001")
    # The next frame is the api reply: no event was queued before it.
    assert client.command("api conference room1 count").body == b"1"


def test_custom_without_the_subclass_gets_nothing(fake, client):
    # mod_event_socket: a subclassed CUSTOM event goes only to who named the subclass, and
    # every word after CUSTOM is a subclass (so HEARTBEAT must come before CUSTOM).
    client.command("event plain CUSTOM other::thing HEARTBEAT")
    fake.model.join("room1", caller_id_number="1001")
    fake.model.heartbeat()
    assert client.command("api conference count").body == b"1"


def test_exit_says_bye_and_closes(fake, client):
    assert fake.connections == 1
    reply = client.command("exit")
    assert reply.reply_text == "+OK bye"
    rest = client.closed_within()
    assert [(f.content_type, f.body.decode()) for f in rest] == [
        (DISCONNECT_NOTICE, GOODBYE_NOTICE)
    ]
    assert fake.wait_for_connections(0)


def test_drop_all_with_and_without_notice(fake):
    a, b = Client(fake.address), Client(fake.address)
    assert fake.wait_for_connections(2)
    fake.drop_all()
    for c in (a, b):
        rest = c.closed_within()
        assert [(f.content_type, f.body.decode()) for f in rest] == [
            (DISCONNECT_NOTICE, SHUTDOWN_NOTICE)
        ]
    assert fake.connections == 0
    c = Client(fake.address)
    fake.drop_all(notice=None)
    assert c.closed_within() == []  # a killed FreeSWITCH: bare EOF (s5_fs_stop_sigkill)
    assert fake.connections == 0


def test_restart_resets_the_model_and_drops_clients(fake, client):
    fake.model.join("room1", caller_id_number="1001")
    fake.model.join("room1", caller_id_number="1002")
    fake.restart()
    assert client.closed_within()[-1].content_type == DISCONNECT_NOTICE
    again = Client(fake.address)
    assert again.command("api conference json_list").body == b"[]"
    assert fake.model.join("room1", caller_id_number="1003") == 1
    again.close()


def test_refuse_then_accept_on_the_same_port(fake, client):
    port = fake.port
    fake.refuse(True)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(fake.address, timeout=1)
    # The connection already there stays up.
    assert client.command("api conference count").body == b"0"
    fake.refuse(False)
    assert fake.port == port
    other = Client(fake.address)
    assert fake.wait_for_connections(2)
    other.close()


def test_silence_keeps_the_socket_but_sends_nothing(fake, client):
    client.command("event plain CUSTOM conference::maintenance")
    fake.silence(True)
    client.send("api version")
    fake.model.join("room1", caller_id_number="1001")
    assert client.read(timeout=0.3) is None
    assert fake.connections == 1
    fake.silence(False)
    assert client.command("api conference count").body == b"1"


def test_hold_replies_reads_but_never_answers(fake, client):
    fake.hold_replies(True)
    client.send("api conference count")
    assert fake.wait_for_command(lambda line: line == "api conference count") == (
        0,
        "api conference count",
    )
    assert client.read(timeout=0.3) is None
    fake.hold_replies(False)
    assert client.command("api version").content_type == API_RESPONSE
    assert fake.wait_for_command(lambda line: line == "never", timeout=0.05) is None


def test_send_raw_reaches_every_client(fake):
    a, b = Client(fake.address), Client(fake.address)
    fake.send_raw(b"Content-Type: api/response\nContent-Length: 3\n\nabc")
    for c in (a, b):
        frame = c.read()
        assert (frame.content_type, frame.body) == (API_RESPONSE, b"abc")
    fake.send_raw(b"Content-Type: api/resp")  # half a frame: nothing complete arrives
    assert a.read(timeout=0.2) is None


def test_heartbeat_events():
    fake = FakeFreeSwitch(heartbeat_interval=0.05).start()
    try:
        c = Client(fake.address)
        c.command("event plain HEARTBEAT CUSTOM conference::maintenance")
        event = parse_event(c.events(1)[0])
        assert event.name == "HEARTBEAT"
        assert event["Core-UUID"] == fake.model.core_uuid
        assert "Up-Time" in event
    finally:
        fake.stop()


def test_a_client_that_never_reads_is_dropped_alone():
    fake = FakeFreeSwitch(max_queue=50).start()
    try:
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(fake.address)
        slow.sendall(b"auth ClueCon\n\nevent plain ALL\n\n")
        fast = Client(fake.address)
        fast.command("event plain ALL")
        # Both subscribed (a command is applied as it is recorded), whatever the scheduling.
        wait_until(
            lambda: [line for _, line in fake.commands].count("event plain ALL") == 2,
            timeout=30,
            what="both clients subscribed",
        )
        for i in range(3000):  # MBs of events: more than the socket buffers and the queue
            fake.model.join("room%d" % (i % 10), caller_id_number=str(i))
            while fast.read(timeout=0 if i % 20 else 0.001):  # the fast client keeps up
                pass
            if fake.connections == 1:
                break
        assert fake.wait_for_connections(1)
        assert fake.slow_client_drops == 1
        # The fast client still gets answers (after the events it has not read yet).
        fast.send("api conference count")
        frame = fast.read(10)
        while frame is not None and frame.content_type != API_RESPONSE:
            frame = fast.read(10)
        assert frame is not None and frame.body == b"10"
        slow.close()
    finally:
        fake.stop()


def test_commands_are_recorded_per_connection(fake):
    a = Client(fake.address)
    b = Client(fake.address)
    a.command("api version")
    b.command("api status")
    assert fake.commands == [
        (0, "auth ClueCon"),
        (1, "auth ClueCon"),
        (0, "api version"),
        (1, "api status"),
    ]

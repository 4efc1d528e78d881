"""``python -m confd_tests.bench ws``: how long an event takes from FreeSWITCH to a consumer.

The path measured: a fake FreeSWITCH (a feeder process of this module) writes a
``conference::maintenance`` event on confd's ESL socket; a real ``python -m confd run`` daemon
takes it in, publishes it, and a websocket client (``GET /v2/websocket``) or an AMQP consumer
receives it.  Latency = receive time - send time, both ``time.time_ns()`` (CLOCK_REALTIME: one
clock for every process of the machine).

Where the send time travels: in the event's ``Current-Energy`` header, as microseconds since
the epoch (16 digits, so the frame keeps its size), which confd publishes as
``data.current_energy``.  A channel variable (``variable_ecallmgr_Bench-Sent``) would not do:
for a member confd already knows, talking and mute events update only the member flags
(``LiveState.apply``, ``MemberFlags``), so the channel variables in the published event are
the ones of the member's add-member, not of the event.

Population: 200 conferences of 10 members, every conference a document of one (non-admin)
bench account, created in the database before the daemon starts, so each event's account
resolves through the store as in production.  The feeder first sends the 2,000 add-member
events; clients subscribe after those are applied.  Then it paces start-talking/stop-talking
(80 %) and mute-member/unmute-member (20 %) events of those members at the asked rate, the
frames being the capture templates of ``feeder.load_templates`` (about 2.3 KB each, as
FreeSWITCH 1.10 sends them).

Websocket clients run in ``--client-procs`` processes (2 by default: the total client CPU
hardly depends on the split, and with 25 connections a process stays well under a core at
5,000 events/s x 50 clients), and must cost as little CPU as they can, for they share the
machine with confd.  A process serves all its connections from one thread: websocket-client
does the handshake and the subscribe request, then the socket is made non-blocking and read
through an epoll selector (stdin, the parent's lines, is in the same selector), 256 KiB per
``recv_into`` into the connection's own buffer.  There ``EventScanner`` walks the (unmasked)
server frames by offset: an event frame is counted from the 16 digits after
``"current_energy":``, found in place (those 16 bytes are all it copies), with no JSON
decoding; an error notice or a fragmented message takes a slower path (joined,
``json.loads``), a close frame ends the connection.  An event's receive time is
``time.time_ns()`` right after the ``recv`` that completed its frame.

Every connection subscribes either to every conference of the account (``all``: each client
gets every event, confd fans each event out to every client) or to its share of the
conferences (``split``: the clients together get every event once).  The AMQP consumer binds
an exclusive queue to the ``conference`` exchange.

The CPU of every process is read from /proc over the paced window; the machine's busy time
(/proc/stat) minus ours is what others (RabbitMQ, other jobs) used meanwhile.

Each child is ``python -m confd_tests.bench.ws {feeder,clients,amqp-consumer}``; it speaks a
line protocol on stdin/stdout with the parent and exits when its stdin closes.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import queue
import random
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

from confd_tests.bench import REPO_ROOT, percentile, settings, table
from confd_tests.loadtools import (
    OPCODE_CLOSE,
    OPCODE_PING,
    OPCODE_TEXT,
    Child,
    ChildFailed,
    LineReader,
    die_with_parent,
    machine_busy,
    parse_metrics,
    pong_frame,
    profile_top,
    say,
    self_cpu,
    stdin_lines,
    subscribe,
)

DESCRIPTION = "event latency: fake FreeSWITCH -> confd -> websocket clients / AMQP consumer"

# Population and event mix of the paced phase.
CONFERENCES = 200
MEMBERS = 10
PACED_MIX = (("talk", 80), ("mute", 20))

# The send time rides in this header (see the module docstring), as 16 digits of microseconds.
STAMP_HEADER = "Current-Energy"
STAMP_WIDTH = 16
STAMP_MARKER = "\x02" + "T" * (STAMP_WIDTH - 2) + "\x02"  # same width: Content-Length holds
STAMP_MIN = 10**15  # a stamp (microseconds since 1970) is at least this: 2001-09-09

PASSWORD = "ClueCon"
PACE_TICK = 0.002  # the feeder sends what is due every this many seconds
MAX_BATCH = 100  # events per send at most (about 230 KB)
WINDOW_GRACE = 1.0  # a paced window ends this long after its planned end, whatever was sent
SLOW_INTAKE = 0.9  # an achieved rate under this share of the asked one is reported
OTHERS_WARNING = 25.0  # % of a core used by other processes that earns a warning
JOIN_CHUNK = 64 * 1024
READ_CHUNK = 256 * 1024  # a client's recv size
BENCH_NODE = "bench"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
AMQP_BINDING = "conference.event.#"
DURABLE_QUEUE = "confd-bench-durable"  # bound during the "+ durable queue" AMQP runs

# Bounds of every step (seconds).
START_TIMEOUT = 30.0
READY_TIMEOUT = 15.0  # subscribing 50 clients takes about a second when confd is well
STEP_TIMEOUT = 30.0
STOP_WAIT = 3.0

TARGET_P99_MS = 20.0
TARGET_RATE = 5000
TARGET_CLIENTS = 50
TARGET_MODE = "all"

DEFAULTS: Dict[str, Any] = {
    "seconds": 10.0,
    "rates": "1000,5000",
    "clients": "1,50",
    "modes": "all,split",
    "amqp_rates": "1000,5000",
    "amqp_durable": "no,yes",
    "drain": 5.0,
}
QUICK: Dict[str, Any] = {
    "seconds": 1.0,
    "rates": "1000",
    "clients": "1,50",
    "modes": "all",
    "amqp_rates": "1000",
    "amqp_durable": "no",
    "drain": 3.0,
}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--events", type=int, help="events per run (default: rate x --seconds)")
    ap.add_argument("--quick", action="store_true", help="a few short runs, for the smoke test")
    ap.add_argument("--seconds", type=float, help="length of each paced run (10)")
    ap.add_argument("--rates", help="websocket runs: events/s, comma-separated (1000,5000)")
    ap.add_argument("--clients", help="websocket clients per run, comma-separated (1,50)")
    ap.add_argument(
        "--modes",
        help="what each of several clients subscribes to: all (every conference of the "
        "account: full fan-out) and/or split (its share of them) (all,split)",
    )
    ap.add_argument("--amqp-rates", help="AMQP runs: events/s, comma-separated; '' = none")
    ap.add_argument("--amqp-url", default=DEFAULT_AMQP_URL, help="broker for the AMQP runs")
    ap.add_argument(
        "--amqp-durable",
        help="AMQP runs without (no) and/or with (yes) a durable queue also bound, which the "
        "broker writes to disk before it confirms (no,yes)",
    )
    ap.add_argument("--drain", type=float, help="after the last event, wait this long at most")
    ap.add_argument("--client-procs", type=int, default=2, help="processes for the clients (2)")
    ap.add_argument("--subscriber-queue", type=int, default=20000, help="events.subscriber_queue")
    ap.add_argument("--amqp-buffer", type=int, default=20000, help="events.amqp_buffer")
    ap.add_argument(
        "--batch-ms", type=int, help="events.websocket_batch_ms (default: confd's default)"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--keep", type=Path, help="copy each run's logs (daemon, feeder, clients) to this folder"
    )
    ap.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="sample confd with py-spy over each paced window (DIR/<run>.txt, collapsed stacks) "
        "and print where its time goes",
    )


def _numbers(text: str) -> List[int]:
    return [int(float(x)) for x in str(text).split(",") if x.strip()]


# =============================================================================================
# The event plan (pure): which member does what, in order.
# =============================================================================================


def paced_actions(seed: int, conferences: int, members: int) -> Iterator[Tuple[int, int, str]]:
    """Endless ``(conference index, member index, action)``: each pick toggles a member's
    talking (start-/stop-talking) or muted (mute-/unmute-member) state, so every event is one
    FreeSWITCH could send next."""
    rng = random.Random(seed)
    kinds = [k for k, w in PACED_MIX for _ in range(w)]
    talking = [[False] * members for _ in range(conferences)]
    muted = [[False] * members for _ in range(conferences)]
    while True:
        ci, mi = rng.randrange(conferences), rng.randrange(members)
        if rng.choice(kinds) == "talk":
            talking[ci][mi] = not talking[ci][mi]
            yield ci, mi, "start-talking" if talking[ci][mi] else "stop-talking"
        else:
            muted[ci][mi] = not muted[ci][mi]
            yield ci, mi, "mute-member" if muted[ci][mi] else "unmute-member"


def stamp_templates(templates: Dict[str, Any]) -> Dict[str, Any]:
    """The capture templates with the value of ``Current-Energy`` replaced by STAMP_MARKER."""
    from confd_tests.bench.feeder import Template

    out = {}
    head = "\n%s: " % STAMP_HEADER
    for action, t in templates.items():
        text = "\n" + t.text
        start = text.index(head) + len(head)
        end = text.index("\n", start)
        out[action] = Template(action, (text[:start] + STAMP_MARKER + text[end:])[1:])
    return out


def stamp_bytes(unix_us: int) -> bytes:
    return b"%0*d" % (STAMP_WIDTH, unix_us)


def _latency_ms(received_ns: int, data: Any) -> Optional[float]:
    """The event's latency, or None when it carries no stamp (not a paced event)."""
    stamp = data.get("current_energy") if isinstance(data, dict) else None
    if not isinstance(stamp, int) or stamp < STAMP_MIN:
        return None
    return (received_ns // 1000 - stamp) / 1000.0


# =============================================================================================
# Children: the shared line protocol.
# =============================================================================================


# --- the fake FreeSWITCH ---------------------------------------------------------------------


class StampFeeder:
    """Answers confd's ESL commands like mod_event_socket; on the event connection (the one
    that subscribed and asked for ``conference json_list``) it sends the add-member of every
    member at once, then, on ``GO``, paces the stamped events."""

    def __init__(self, conference_ids: Sequence[str], members: int, seed: int) -> None:
        from confd_tests.bench.feeder import load_templates

        rng = random.Random(seed)
        self.templates = stamp_templates(load_templates())
        self.confs = [
            (cid, str(uuid.UUID(int=rng.getrandbits(128), version=4))) for cid in conference_ids
        ]
        self.calls = [
            [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(members)]
            for _ in conference_ids
        ]
        self.plan = paced_actions(seed, len(self.confs), members)
        self.seq = 1000
        self.events: Optional[Tuple[Any, Any]] = None  # (socket, lock) of the event connection
        self.error: Optional[str] = None

    def frame(self, ci: int, mi: int, action: str) -> bytes:
        from confd_tests.bench.feeder import _render

        self.seq += 1
        return _render(self.templates[action], self.confs[ci], self.calls[ci][mi], mi + 1, self.seq)

    def serve(self) -> None:
        import gevent
        from gevent.server import StreamServer

        server = StreamServer(("127.0.0.1", 0), self._handle)
        server.start()
        say("PORT %d" % server.server_port)
        lines = stdin_lines()
        while True:
            try:
                line = lines.get_nowait()
            except queue.Empty:
                gevent.sleep(0.01)
                continue
            if line is None or line == "QUIT":
                break
            if line.startswith("GO "):
                _, rate, count = line.split()
                say("DONE " + json.dumps(self.paced(float(rate), int(count))))
        server.stop(timeout=1)

    def _handle(self, sock, _addr) -> None:
        import gevent

        from confd_tests.bench.feeder import serve_esl

        def stream(sock, lock) -> None:
            if self.events is None:
                self.events = (sock, lock)
                gevent.spawn(self._joins)

        try:
            serve_esl(sock, stream)
        finally:
            if self.events is not None and self.events[0] is sock:
                self.error = "confd closed the event connection"

    def _joins(self) -> None:
        assert self.events is not None
        sock, lock = self.events
        frames = [
            self.frame(ci, mi, "add-member")
            for ci in range(len(self.confs))
            for mi in range(len(self.calls[ci]))
        ]
        data = b"".join(frames).replace(STAMP_MARKER.encode(), stamp_bytes(0))
        try:
            for off in range(0, len(data), JOIN_CHUNK):
                with lock:
                    sock.sendall(data[off : off + JOIN_CHUNK])
        except OSError as exc:
            self.error = "sending the joins: %s" % exc
            return
        say("JOINED %d" % len(frames))

    def paced(self, rate: float, count: int) -> Dict[str, Any]:
        """Send ``count`` events at ``rate``/s, each batch stamped just before its send."""
        import gevent

        if self.events is None:
            return {"error": "confd has no event connection"}
        sock, lock = self.events
        marker = STAMP_MARKER.encode()
        per_conf = [0] * len(self.confs)
        sent = batches = 0
        t0 = time.monotonic()
        wall0 = time.time()
        # When confd reads slower than the rate, sendall blocks (as FreeSWITCH's socket would
        # fill): the window still ends on time and the achieved rate tells.
        limit = t0 + count / rate + WINDOW_GRACE
        try:
            while sent < count and time.monotonic() < limit:
                # At most MAX_BATCH per send: a blocked send then never outlasts the window.
                due = min(count, int((time.monotonic() - t0) * rate) + 1, sent + MAX_BATCH)
                if due > sent:
                    parts = []
                    for _ in range(due - sent):
                        ci, mi, action = next(self.plan)
                        per_conf[ci] += 1
                        parts.append(self.frame(ci, mi, action))
                    data = b"".join(parts).replace(marker, stamp_bytes(time.time_ns() // 1000))
                    with lock:
                        sock.sendall(data)
                    sent, batches = due, batches + 1
                gevent.sleep(PACE_TICK)
        except OSError as exc:
            self.error = "sending: %s" % exc
        seconds = time.monotonic() - t0
        return {
            "sent": sent,
            "seconds": seconds,
            "batches": batches,
            "t0": wall0,
            "per_conference": per_conf,
            "error": self.error,
        }


def feeder_main(a: argparse.Namespace) -> int:
    conference_ids = json.loads(Path(a.conferences).read_text())
    StampFeeder(conference_ids, a.members, a.seed).serve()
    return 0


# --- websocket clients -----------------------------------------------------------------------

EVENT_PREFIX = b'{"action":"event"'  # how confd starts every event frame (fanout.event_frame_text)
STAMP_KEY = b'"current_energy":'  # the stamp's key in the compact JSON of the event's data
_NUMBER_END = frozenset(b",}")  # what follows a number in compact JSON


class EventScanner:
    """The server frames of one websocket connection, counted where they lie.

    The bytes received stay in one bytearray (``buf``, the first ``fill`` of it); the next
    ``recv_into`` goes to ``space()``, then ``scan(n, t_ns)`` walks the frame headers by offset.
    A whole (FIN) text frame that starts with ``{"action":"event"`` is an event: its stamp is
    the 16 digits after ``"current_energy":`` (found with ``find`` inside the frame; nothing is
    decoded or sliced out but those digits); an event without such a stamp counts as
    ``other``.  Anything else (an error notice, a fragmented message, ...) is joined and
    decoded with json; a close frame records its code and ends the connection.  Only an
    incomplete last frame is kept (moved to the front) for the next ``scan``.

    An event's receive time is the ``t_ns`` of the scan that completed its frame."""

    __slots__ = (
        "buf",
        "view",
        "fill",
        "latencies",
        "received",
        "other",
        "close_code",
        "notice",
        "_parts",
        "_opcode",
        "pings",
    )

    def __init__(self) -> None:
        self.buf = bytearray(2 * READ_CHUNK)
        self.view = memoryview(self.buf)
        self.fill = 0
        self.latencies = array.array("d")
        self.received = 0  # stamped events
        self.other = 0  # events without a stamp
        self.close_code: Optional[int] = None
        self.notice: Optional[str] = None
        self._parts: List[bytes] = []  # a fragmented message so far
        self.pings: List[bytes] = []  # payloads of pings to answer
        self._opcode = 0

    def space(self) -> memoryview:
        """Where the next READ_CHUNK bytes go (the buffer grows only for a frame that does
        not fit in it)."""
        if len(self.buf) - self.fill < READ_CHUNK:
            self.view.release()
            self.buf.extend(bytes(READ_CHUNK))
            self.view = memoryview(self.buf)
        return self.view[self.fill :]

    def feed(self, data: bytes, t_ns: int) -> bool:
        """``data`` received at ``t_ns``, as if a recv had put it in ``space()``."""
        for off in range(0, len(data), READ_CHUNK):
            part = data[off : off + READ_CHUNK]
            self.space()[: len(part)] = part
            if not self.scan(len(part), t_ns):
                return False
        return True

    def scan(self, n: int, t_ns: int) -> bool:
        """Take the ``n`` bytes just put in ``space()``, received at ``t_ns``.  False once a
        close frame ended the connection; ValueError for a masked frame or a notice that is
        not JSON."""
        buf = self.buf
        fill = self.fill + n
        pos = 0
        now_us = t_ns // 1000
        startswith, find, append = buf.startswith, buf.find, self.latencies.append
        key_len, width, stamp_min = len(STAMP_KEY), STAMP_WIDTH, STAMP_MIN
        received = other = 0
        going = True
        try:
            while fill - pos >= 2:
                b0, size = buf[pos], buf[pos + 1]
                if size < 126:
                    start = pos + 2
                elif size == 126:
                    if fill - pos < 4:
                        break
                    size = buf[pos + 2] << 8 | buf[pos + 3]
                    start = pos + 4
                elif size == 127:
                    if fill - pos < 10:
                        break
                    size = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                    start = pos + 10
                else:
                    raise ValueError("a server frame must not be masked")
                end = start + size
                if end > fill:
                    break
                pos = end
                if b0 == 0x81 and startswith(EVENT_PREFIX, start, end):  # FIN, text: an event
                    i = find(STAMP_KEY, start, end)
                    if i >= 0:
                        i += key_len
                        digits = buf[i : i + width]
                        if i + width < end and digits.isdigit() and buf[i + width] in _NUMBER_END:
                            stamp = int(digits)
                            if stamp >= stamp_min:
                                append((now_us - stamp) / 1000.0)
                                received += 1
                                continue
                    other += 1
                elif b0 & 0x0F >= OPCODE_CLOSE:  # control frames come whole, even mid-message
                    if b0 & 0x0F == OPCODE_CLOSE:
                        if size >= 2:
                            self.close_code = buf[start] << 8 | buf[start + 1]
                        going = False
                        break
                    if b0 & 0x0F == OPCODE_PING:
                        self.pings.append(bytes(buf[start:end]))
                else:
                    self._fragment(b0, bytes(buf[start:end]), t_ns)
        finally:
            self.received += received
            self.other += other
        if pos == fill:
            self.fill = 0
        elif pos:
            buf[: fill - pos] = buf[pos:fill]
            self.fill = fill - pos
        else:
            self.fill = fill
        return going

    def _fragment(self, b0: int, payload: bytes, t_ns: int) -> None:
        """The slow path: a data frame other than a whole event frame."""
        if b0 & 0x0F:
            self._opcode, self._parts = b0 & 0x0F, []
        self._parts.append(payload)
        if not b0 & 0x80:
            return
        message, self._parts = b"".join(self._parts), []
        if self._opcode != OPCODE_TEXT:
            return
        msg = json.loads(message)
        if not isinstance(msg, dict):
            return
        if msg.get("action") == "event":
            ms = _latency_ms(t_ns, msg.get("data"))
            if ms is None:
                self.other += 1
            else:
                self.latencies.append(ms)
                self.received += 1
        elif msg.get("action") == "error":
            self.notice = "; ".join(msg.get("data", {}).get("errors", []))


class _WsClient:
    """One websocket connection: subscribed with websocket-client, then its socket is made
    non-blocking and read by the process's selector loop (``clients_main``)."""

    def __init__(self, index: int, url: str, token: str, account: str, bindings: List[str]):
        self.index = index
        self.url = url
        self.token = token
        self.account = account
        self.bindings = bindings
        self.sock: Optional[socket.socket] = None
        self.scanner = EventScanner()
        self.error: Optional[str] = None
        self.ended = False

    def connect(self) -> None:
        self._ws, self.sock = subscribe(
            self.url,
            self.token,
            self.account,
            "s%d" % self.index,
            READY_TIMEOUT,
            bindings=self.bindings,
        )  # self._ws keeps the object (and so the socket) alive
        self.sock.setblocking(False)

    def read(self) -> bool:
        """One recv (the socket is readable) and the frames it completes; False once the
        connection ended (close frame, EOF, error)."""
        assert self.sock is not None
        scanner = self.scanner
        try:
            n = self.sock.recv_into(scanner.space(), READ_CHUNK)
            t = time.time_ns()
            if not n:
                return False
            going = scanner.scan(n, t)
            while scanner.pings:
                self.sock.send(pong_frame(scanner.pings.pop(0)))
            return going
        except BlockingIOError:
            return True
        except (OSError, ValueError) as exc:
            self.error = "%s: %s" % (type(exc).__name__, exc)
            return False

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass

    def result(self) -> Dict[str, Any]:
        s = self.scanner
        return {
            "received": s.received,
            "other": s.other,
            "close_code": s.close_code,
            "notice": s.notice,
            "error": self.error,
        }


def clients_main(a: argparse.Namespace) -> int:
    """Every connection of this process in one thread: one epoll selector over their sockets
    and stdin (the parent's lines)."""
    plan = json.loads(Path(a.plan).read_text())
    clients = [
        _WsClient(i, plan["url"], plan["token"], plan["account"], bindings)
        for i, bindings in enumerate(plan["connections"])
    ]
    try:
        for c in clients:
            c.connect()
    except Exception as exc:  # noqa: BLE001 - told to the parent, which reports it
        say("ERROR cannot subscribe: %s: %s" % (type(exc).__name__, exc))
        return 1
    parent = LineReader(sys.stdin.fileno())
    sel = selectors.DefaultSelector()
    sel.register(parent, selectors.EVENT_READ, None)
    for c in clients:
        assert c.sock is not None
        sel.register(c.sock, selectors.EVENT_READ, c)
    say("READY %d" % len(clients))
    expected: Optional[List[int]] = None
    deadline = time.monotonic() + a.deadline
    going = True
    while going:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for key, _ in sel.select(min(left, 1.0)):
            c = key.data
            if c is not None:
                if not c.read():
                    c.ended = True
                    sel.unregister(c.sock)
                continue
            for line in parent.read():
                if line is None or line == "STOP":
                    going = False
                elif line.startswith("EXPECT "):
                    expected = json.loads(line[len("EXPECT ") :])
        if expected is not None and all(
            c.scanner.received >= n or c.ended for c, n in zip(clients, expected)
        ):
            say("COMPLETE")
            expected = None
    sel.close()
    for c in clients:
        c.close()
    out = array.array("d")
    for c in clients:
        out.extend(c.scanner.latencies)
    with open(a.out, "wb") as fh:
        out.tofile(fh)
    say("RESULT " + json.dumps([c.result() for c in clients]))
    return 0


# --- the AMQP consumer -----------------------------------------------------------------------


def amqp_main(a: argparse.Namespace) -> int:
    import amqp

    from confd.events.amqp import EXCHANGE, EXCHANGE_TYPE, connection_params

    latencies = array.array("d")
    counts = {"received": 0, "other": 0}

    def on_message(msg: Any) -> None:
        t = time.time_ns()
        ms = _latency_ms(t, json.loads(msg.body))
        if ms is None:
            counts["other"] += 1
        else:
            latencies.append(ms)
            counts["received"] += 1

    try:
        conn = amqp.Connection(connect_timeout=5, **connection_params(a.url))
        conn.connect()
        ch = conn.channel()
        ch.exchange_declare(EXCHANGE, EXCHANGE_TYPE, durable=True, auto_delete=False)
        name, _, _ = ch.queue_declare("", exclusive=True, auto_delete=True)
        ch.queue_bind(name, EXCHANGE, AMQP_BINDING)
        ch.basic_consume(name, callback=on_message, no_ack=True)
    except Exception as exc:  # noqa: BLE001 - told to the parent, which reports it
        say("ERROR broker unreachable: %s: %s" % (type(exc).__name__, exc))
        return 1
    say("READY 1")
    expected: Optional[int] = None
    error = None
    lines = stdin_lines()
    deadline = time.monotonic() + a.deadline
    while time.monotonic() < deadline:
        try:
            conn.drain_events(timeout=0.02)
        except TimeoutError:
            pass
        except Exception as exc:  # noqa: BLE001
            error = "%s: %s" % (type(exc).__name__, exc)
            break
        try:
            line: Optional[str] = lines.get_nowait()
        except queue.Empty:
            line = ""
        if line is None or line == "STOP":
            break
        if line.startswith("EXPECT "):
            expected = json.loads(line[len("EXPECT ") :])[0]
        if expected is not None and counts["received"] >= expected:
            say("COMPLETE")
            expected = None
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass
    with open(a.out, "wb") as fh:
        latencies.tofile(fh)
    say("RESULT " + json.dumps([dict(counts, close_code=None, notice=None, error=error)]))
    return 0


def child_main(argv: List[str]) -> int:
    import logging

    ap = argparse.ArgumentParser(prog="confd_tests.bench.ws")
    sub = ap.add_subparsers(dest="role", required=True)
    f = sub.add_parser("feeder")
    f.add_argument("--conferences", required=True, type=Path, help="JSON list of names")
    f.add_argument("--members", type=int, default=MEMBERS)
    f.add_argument("--seed", type=int, default=1)
    c = sub.add_parser("clients")
    c.add_argument("--plan", required=True, type=Path)
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--deadline", type=float, default=300.0)
    q = sub.add_parser("amqp-consumer")
    q.add_argument("--url", default=DEFAULT_AMQP_URL)
    q.add_argument("--out", required=True, type=Path)
    q.add_argument("--deadline", type=float, default=300.0)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if a.role == "feeder":
        return feeder_main(a)
    if a.role == "clients":
        return clients_main(a)
    return amqp_main(a)


# =============================================================================================
# Parent side.
# =============================================================================================


class RunFailed(ChildFailed):
    """A step of a run did not complete; ``str()`` says which and why (a child's failure,
    ``ChildFailed``, is one too: ``except ChildFailed`` takes both)."""


def _module(role: str, *args: str) -> List[str]:
    return [sys.executable, "-m", "confd_tests.bench.ws", role, *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, timeout: float = 2.0) -> Tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metrics(base: str) -> Dict[str, float]:
    """``/metrics`` as ``{'name{labels}': value}`` (Prometheus text format, no parsing of the
    labels beyond keeping them in the key)."""
    _, body = _http(base + "/metrics")
    return parse_metrics(body.decode())


def _wait(predicate, timeout: float, what: str, daemon: Child) -> Any:
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        if daemon.proc.poll() is not None:
            raise RunFailed("confd exited (%s): %s" % (daemon.proc.returncode, daemon.tail()))
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise RunFailed("%s: not within %.0f s" % (what, timeout))


class Population:
    """The bench account, its token and its conference documents, in a sqlite database."""

    def __init__(self, workdir: Path, conferences: int) -> None:
        from confd.store import Store

        self.db_url = "sqlite:///%s" % (workdir / "confd.db")
        store = Store.from_url(self.db_url)
        try:
            account, _ = store.accounts.create_account("bench")
            self.account = account["id"]
            self.token = store.accounts.issue_token(self.account, 24 * 3600)
            self.conference_ids = [
                store.conferences.create(self.account, {"name": "bench %d" % i}).id
                for i in range(conferences)
            ]
        finally:
            store.close()
        self.conferences_file = workdir / "conferences.json"
        self.conferences_file.write_text(json.dumps(self.conference_ids))


def _bindings(pop: Population, clients: int, mode: str) -> List[List[str]]:
    """Each connection's bindings: everything of the account, or its share of conferences."""
    if mode == "all" or clients == 1:
        return [["conference.event.*.*"] for _ in range(clients)]
    shares: List[List[str]] = [[] for _ in range(clients)]
    for i, cid in enumerate(pop.conference_ids):
        shares[i % clients].append("conference.event.%s.*" % cid)
    return shares


def _expected(pop: Population, bindings: List[List[str]], per_conf: List[int]) -> List[int]:
    index = {cid: i for i, cid in enumerate(pop.conference_ids)}
    out = []
    for bs in bindings:
        if bs == ["conference.event.*.*"]:
            out.append(sum(per_conf))
        else:
            out.append(sum(per_conf[index[b.split(".")[2]]] for b in bs))
    return out


class Run:
    """One measurement: a daemon, a feeder and the consumers, all stopped at the end."""

    def __init__(self, tag: str, workdir: Path, pop: Population, s: Dict[str, Any], args) -> None:
        self.tag = tag
        self.dir = workdir / tag
        self.dir.mkdir()
        self.pop = pop
        self.s = s
        self.args = args
        self.children: List[Child] = []

    def child(self, name: str, argv: List[str], env: Optional[dict] = None) -> Child:
        c = Child(name, argv, self.dir / (name + ".log"), REPO_ROOT, env)
        self.children.append(c)
        return c

    def stop(self) -> None:
        for c in reversed(self.children):
            c.stop()
        if self.args.keep is not None:
            import shutil

            shutil.copytree(self.dir, self.args.keep / self.tag, dirs_exist_ok=True)

    def start(self, amqp_url: Optional[str]) -> None:
        self.feeder = self.child(
            "feeder",
            _module(
                "feeder",
                "--conferences",
                str(self.pop.conferences_file),
                "--members",
                str(MEMBERS),
                "--seed",
                str(self.args.seed),
            ),
        )
        fs_port = int(self.feeder.wait_for("PORT", START_TIMEOUT))
        self.port = _free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        events: Dict[str, Any] = {
            "subscriber_queue": self.args.subscriber_queue,
            "amqp_buffer": self.args.amqp_buffer,
        }
        if amqp_url:
            events["amqp_url"] = amqp_url
        if self.args.batch_ms is not None:
            events["websocket_batch_ms"] = self.args.batch_ms
        cfg = {
            "http": {"host": "127.0.0.1", "port": self.port},
            "database": {"url": self.pop.db_url},
            "freeswitch": {
                "nodes": [
                    {"host": "127.0.0.1", "port": fs_port, "password": PASSWORD, "name": BENCH_NODE}
                ],
                "heartbeat_timeout": 600.0,
            },
            "events": events,
            "log": {"level": "warning"},
        }
        import yaml

        path = self.dir / "confd.yml"
        path.write_text(yaml.safe_dump(cfg))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONFD_")}
        env.update(CONFD_CONFIG=str(path), PYTHONPATH=str(REPO_ROOT))
        self.daemon = self.child("confd", [sys.executable, "-m", "confd", "run"], env)
        joined = int(self.feeder.wait_for("JOINED", START_TIMEOUT))
        key = "confd_live_participants"
        _wait(
            lambda: metrics(self.base).get(key) == joined,
            START_TIMEOUT,
            "confd taking in the %d joins" % joined,
            self.daemon,
        )
        if amqp_url:
            # The joins went to the broker too: start once the publisher has caught up.
            _wait(
                lambda: (lambda m: m.get("confd_amqp_connected") == 1.0
                         and m.get('confd_queue_depth{queue="amqp"}') == 0.0)(metrics(self.base)),
                START_TIMEOUT,
                "the AMQP publisher connected with an empty buffer",
                self.daemon,
            )  # fmt: skip

    def consumers(self, groups: List[List[List[str]]], ws: bool) -> None:
        self.groups = groups
        self.consumer_procs: List[Child] = []
        for i, group in enumerate(groups):
            out = self.dir / ("latencies-%d.bin" % i)
            if ws:
                plan = self.dir / ("plan-%d.json" % i)
                plan.write_text(
                    json.dumps(
                        {
                            "url": "ws://127.0.0.1:%d/v2/websocket" % self.port,
                            "token": self.pop.token,
                            "account": self.pop.account,
                            "connections": group,
                        }
                    )
                )
                argv = _module("clients", "--plan", str(plan), "--out", str(out))
            else:
                argv = _module("amqp-consumer", "--url", self.args.amqp_url, "--out", str(out))
            self.consumer_procs.append(self.child("consumer-%d" % i, argv))
        for c in self.consumer_procs:
            c.wait_for("READY", READY_TIMEOUT)

    def _py_spy(self, seconds: float) -> Optional[subprocess.Popen]:
        """py-spy sampling confd over the paced window (only with --py-spy)."""
        if self.args.py_spy is None:
            return None
        exe = Path(sys.executable).with_name("py-spy")
        self.args.py_spy.mkdir(parents=True, exist_ok=True)
        self.profile = self.args.py_spy / (self.tag + ".txt")
        with open(self.dir / "py-spy.log", "w") as log:
            return subprocess.Popen(
                [
                    str(exe) if exe.exists() else "py-spy",
                    "record",
                    "--pid",
                    str(self.daemon.proc.pid),
                    "--rate",
                    "200",
                    "--duration",
                    str(max(1, int(seconds))),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(self.profile),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    def measure(self, rate: int, count: int, drain: float) -> Dict[str, Any]:
        procs = {"confd": [self.daemon], "feeder": [self.feeder], "clients": self.consumer_procs}
        cpu0 = {k: [c.cpu() for c in v] for k, v in procs.items()}
        busy0, self0, t0 = machine_busy(), self_cpu(), time.monotonic()
        spy = self._py_spy(count / rate)
        self.feeder.say("GO %d %d" % (rate, count))
        done = json.loads(self.feeder.wait_for("DONE", count / rate * 3 + STEP_TIMEOUT))
        wall = time.monotonic() - t0
        cpu1 = {k: [c.cpu() for c in v] for k, v in procs.items()}
        busy = machine_busy() - busy0
        own = self_cpu() - self0
        if spy is not None:
            try:
                spy.wait(STEP_TIMEOUT)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(STOP_WAIT)
        if done.get("error"):
            raise RunFailed("feeder: %s" % done["error"])
        per_conf = done["per_conference"]
        expected: List[List[int]] = []
        for c, group in zip(self.consumer_procs, self.groups):
            exp = _expected(self.pop, group, per_conf) if group else [done["sent"]]
            expected.append(exp)
            c.say("EXPECT " + json.dumps(exp))
        limit = time.monotonic() + drain
        complete = True
        for c in self.consumer_procs:
            try:
                c.wait_for("COMPLETE", max(0.0, limit - time.monotonic()))
            except ChildFailed:
                complete = False
        m = metrics(self.base)
        results = []
        latencies = array.array("d")
        for i, c in enumerate(self.consumer_procs):
            c.say("STOP")
            results.extend(json.loads(c.wait_for("RESULT", STEP_TIMEOUT)))
            path = self.dir / ("latencies-%d.bin" % i)
            with open(path, "rb") as fh:
                latencies.frombytes(fh.read())

        def pct(k: str) -> List[float]:
            return [
                100.0 * (b - a) / wall if a is not None and b is not None else 0.0
                for a, b in zip(cpu0[k], cpu1[k])
            ]

        cpu = {k: pct(k) for k in procs}
        ours = sum(sum(v) for v in cpu.values()) + 100.0 * own / wall
        machine = 100.0 * busy / wall
        flat_expected = [n for exp in expected for n in exp]
        return {
            "done": done,
            "complete": complete,
            "expected": flat_expected,
            "results": results,
            "latencies": latencies,
            "metrics": m,
            "cpu": {
                "confd": cpu["confd"][0],
                "feeder": cpu["feeder"][0],
                "clients": sum(cpu["clients"]),
                "clients_max_proc": max(cpu["clients"]) if cpu["clients"] else 0.0,
                "bench": 100.0 * own / wall,
                "machine": machine,
                "other": max(0.0, machine - ours),
            },
        }


def _summary(kind: str, r: Dict[str, Any], rate: int) -> Dict[str, Any]:
    """The figures of one run, JSON-able."""
    done, results = r["done"], r["results"]
    lat = sorted(r["latencies"])
    expected = sum(r["expected"])
    delivered = sum(x["received"] for x in results)
    closed = [x for x in results if x.get("close_code") is not None or x.get("error")]
    out: Dict[str, Any] = {
        "rate": rate,
        "sent": done["sent"],
        "achieved_rate": done["sent"] / done["seconds"] if done["seconds"] else 0.0,
        "expected": expected,
        "delivered": delivered,
        "lost": max(0, expected - delivered),
        "closed_by_confd": len(closed),
        "close_codes": sorted({x["close_code"] for x in closed if x.get("close_code")}),
        "cpu_pct": {k: round(v, 1) for k, v in r["cpu"].items()},
    }
    notices = sorted({x["notice"] for x in results if x.get("notice")})
    if notices:
        out["notices"] = notices
    out.update(latency_figures(lat, out["lost"]))
    m = r["metrics"]
    if kind == "websocket":
        out["confd_drops"] = int(m.get('confd_queue_drops_total{queue="websocket"}', 0))
    else:
        out["confd_amqp_dropped"] = int(m.get('confd_queue_drops_total{queue="amqp"}', 0))
        out["confd_amqp_published"] = int(m.get("confd_amqp_published_total", 0))
    problems = []
    if out["achieved_rate"] < SLOW_INTAKE * rate:
        problems.append("confd took in only %.0f events/s" % out["achieved_rate"])
    if out["lost"]:
        problems.append(
            "%d events not delivered%s"
            % (out["lost"], "" if r["complete"] else " within the drain time")
        )
    if out["closed_by_confd"]:
        problems.append("%d connection(s) closed" % out["closed_by_confd"])
    out["status"] = "; ".join(problems) or "ok"
    return out


def latency_figures(sorted_ms: Sequence[float], lost: int) -> Dict[str, Optional[float]]:
    """p50/p90/p99/max over every event that was due: one never delivered counts as later
    than any delivered, so a percentile that falls among those is None (not a number)."""
    n = len(sorted_ms) + lost
    out: Dict[str, Optional[float]] = {}
    if not n:
        return out
    ranks = range(1, n + 1)  # the delivered come first, in order, then the lost
    for name, pct in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("max_ms", 100)):
        rank = percentile(ranks, pct)
        out[name] = sorted_ms[rank - 1] if rank <= len(sorted_ms) else None
    return out


def _run_one(
    kind: str,
    workdir: Path,
    pop: Population,
    s: Dict[str, Any],
    args,
    rate: int,
    clients: int = 1,
    mode: str = "all",
    durable: bool = False,
) -> Dict[str, Any]:
    if kind == "websocket":
        tag = "%s-%d-%s-%d" % (kind, clients, mode, rate)
    else:
        tag = "amqp-%d%s" % (rate, "-durable" if durable else "")
    count = int(args.events) if args.events else int(rate * float(s["seconds"]))
    run = Run(tag, workdir, pop, s, args)
    try:
        if durable:
            _durable_queue(args.amqp_url, bind=True)
        run.start(args.amqp_url if kind == "amqp" else None)
        if kind == "websocket":
            bindings = _bindings(pop, clients, mode)
            n = max(1, min(args.client_procs, clients))
            groups = [bindings[i::n] for i in range(n)]
            run.consumers(groups, ws=True)
        else:
            run.consumers([[]], ws=False)
        r = run.measure(rate, count, float(s["drain"]))
        out = _summary(kind, r, rate)
        out["consumer_procs"] = len(run.consumer_procs)
        profile = getattr(run, "profile", None)
        if profile is not None and profile.exists():
            out["profile"] = str(profile)
    except ChildFailed as exc:
        out = {"rate": rate, "status": "failed: %s" % exc}
    finally:
        run.stop()
        if durable:
            _durable_queue(args.amqp_url, bind=False)
    if kind == "websocket":
        out.update(clients=clients, mode=mode if clients > 1 else "all")
    else:
        out["durable_queue"] = durable
    return out


def _durable_queue(url: str, bind: bool) -> None:
    """Declare and bind (or delete) DURABLE_QUEUE: with it bound, the broker confirms a
    persistent message only once that queue has it on disk, as with a production consumer's
    durable queue."""
    import amqp

    from confd.events.amqp import EXCHANGE, EXCHANGE_TYPE, connection_params

    try:
        conn = amqp.Connection(connect_timeout=5, **connection_params(url))
        conn.connect()
        try:
            ch = conn.channel()
            if bind:
                ch.exchange_declare(EXCHANGE, EXCHANGE_TYPE, durable=True, auto_delete=False)
                ch.queue_declare(DURABLE_QUEUE, durable=True, auto_delete=False)
                ch.queue_purge(DURABLE_QUEUE)
                ch.queue_bind(DURABLE_QUEUE, EXCHANGE, AMQP_BINDING)
            else:
                ch.queue_delete(DURABLE_QUEUE)
        finally:
            conn.close()
    except Exception as exc:  # noqa: BLE001 - the run reports the broker's absence itself
        if bind:
            raise RunFailed("durable queue: %s: %s" % (type(exc).__name__, exc)) from None


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt()


def run(args: argparse.Namespace, out: TextIO) -> Dict[str, Any]:
    s = settings(args, DEFAULTS, QUICK)
    rates, clients_list = _numbers(s["rates"]), _numbers(s["clients"])
    modes = [m.strip() for m in str(s["modes"]).split(",") if m.strip()]
    amqp_rates = _numbers(s["amqp_rates"])
    cores = os.cpu_count() or 1
    out.write(
        "confd event latency benchmark: fake FreeSWITCH send -> consumer receive\n"
        "%d conferences x %d members, all documents of one account; paced events: "
        "start/stop-talking 80%%, mute/unmute 20%%; %s per run\n"
        % (
            CONFERENCES,
            MEMBERS,
            "%d events" % args.events if args.events else "%.0f s" % float(s["seconds"]),
        )
    )
    out.write(
        "machine: %d CPU core(s), shared by confd, the fake FreeSWITCH, the clients%s and this "
        "process\n\n" % (cores, " (and RabbitMQ for AMQP)" if amqp_rates else "")
    )
    out.flush()
    results: Dict[str, Any] = {
        "seconds": float(s["seconds"]),
        "cores": cores,
        "conferences": CONFERENCES,
        "members": MEMBERS,
        "websocket": [],
        "amqp": [],
    }
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        with tempfile.TemporaryDirectory(prefix="confd-bench-ws-") as tmp:
            workdir = Path(tmp)
            pop = Population(workdir, CONFERENCES)
            plan = []
            for clients in clients_list:
                for mode in modes if clients > 1 else ["all"]:
                    plan.extend((clients, mode, rate) for rate in rates)
            for clients, mode, rate in plan:
                r = _run_one("websocket", workdir, pop, s, args, rate, clients, mode)
                results["websocket"].append(r)
                out.write("  websocket %2d client(s) %-5s %5d/s: %s\n" % (
                    clients, r["mode"], rate, _line(r)))  # fmt: skip
                out.flush()
            for durable in _durables(s["amqp_durable"]):
                for rate in amqp_rates:
                    r = _run_one("amqp", workdir, pop, s, args, rate, durable=durable)
                    results["amqp"].append(r)
                    out.write("  amqp %-19s %5d/s: %s\n" % (
                        "+ durable queue" if durable else "", rate, _line(r)))  # fmt: skip
                    out.flush()
    finally:
        signal.signal(signal.SIGTERM, previous)
    _report(results, out)
    return results


def _label(r: Dict[str, Any]) -> str:
    """A run's name in the CPU and profile tables."""
    if "clients" in r:
        return "websocket %d %s %d/s" % (r["clients"], r["mode"], r["rate"])
    return "amqp %d/s%s" % (r["rate"], " + durable q" if r.get("durable_queue") else "")


def _durables(text: str) -> List[bool]:
    words = [w.strip() for w in str(text).split(",") if w.strip()]
    if not set(words) <= {"no", "yes"}:
        raise SystemExit("--amqp-durable: no and/or yes, comma-separated")
    return [w == "yes" for w in words]


def _line(r: Dict[str, Any]) -> str:
    if "p99_ms" in r:
        return "p50 %s ms, p99 %s ms, %s" % (_ms(r, "p50_ms"), _ms(r, "p99_ms"), r["status"])
    return r["status"]


def _fmt(value: Any, spec: str = "{:,.0f}") -> str:
    return spec.format(value) if isinstance(value, (int, float)) else "-"


def _ms(r: Dict[str, Any], key: str, spec: str = "{:.2f}") -> str:
    """A latency figure; ``lost`` when it falls among the events never delivered."""
    if key in r and r[key] is None:
        return "lost"
    return _fmt(r.get(key), spec)


def _delivered(r: Dict[str, Any]) -> str:
    if not r.get("expected"):
        return "-"
    return "%.1f%%" % (100.0 * r["delivered"] / r["expected"])


def _latency_cells(r: Dict[str, Any]) -> List[str]:
    """rate/s, sent/s, to deliver, delivered, p50, p90, p99, max: the columns both tables share."""
    return [
        _fmt(r["rate"]),
        _fmt(r.get("achieved_rate")),
        _fmt(r.get("expected")),
        _delivered(r),
        _ms(r, "p50_ms", "{:.2f}"),
        _ms(r, "p90_ms", "{:.2f}"),
        _ms(r, "p99_ms", "{:.2f}"),
        _ms(r, "max_ms", "{:.1f}"),
    ]


def _report_profile(profiled: List[Dict[str, Any]], out: TextIO) -> None:
    r = next((x for x in profiled if _is_target(x)), profiled[-1])
    total, own, incl = profile_top(Path(r["profile"]))
    if not total:
        return
    label = _label(r)
    out.write("\n4. Where confd's time goes (py-spy, %d samples, run %s)\n" % (total, label))
    rows = []
    for i in range(max(len(own), len(incl))):
        a = own[i] if i < len(own) else ("", 0)
        b = incl[i] if i < len(incl) else ("", 0)
        rows.append(
            ["%.1f%%" % (100.0 * a[1] / total), a[0], "%.1f%%" % (100.0 * b[1] / total), b[0]]
        )
    out.write(table(["self", "function", "inclusive", "function"], rows, right=(0, 2)) + "\n")
    out.write("(all profiles: %s)\n" % Path(r["profile"]).parent)


def _is_target(r: Dict[str, Any]) -> bool:
    return (
        r.get("clients") == TARGET_CLIENTS
        and r.get("mode") == TARGET_MODE
        and r.get("rate") == TARGET_RATE
    )


def _report(results: Dict[str, Any], out: TextIO) -> None:
    ws, mq = results["websocket"], results["amqp"]
    out.write("\n1. Websocket: latency from the fake FreeSWITCH's send to the client's receive\n")
    rows = []
    for r in ws:
        rows.append(
            [str(r["clients"]), r["mode"]]
            + _latency_cells(r)
            + [_fmt(r.get("closed_by_confd")), r["status"]]
        )
    out.write(
        table(
            [
                "clients",
                "subscribed",
                "rate/s",
                "sent/s",
                "to deliver",
                "delivered",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "closed",
                "status",
            ],
            rows,
            right=tuple(range(2, 11)),
        )
        + "\n"
    )
    out.write(
        "(subscribed: all = every client binds conference.event.*.* of the account, so each event\n"
        " goes to every client; split = each client binds its share of the 200 conferences, so\n"
        " each event goes to one client.  closed = connections confd closed (1013: too slow,\n"
        " queue bound); an event not delivered counts as later than any: a percentile that\n"
        " falls among those reads 'lost'.  sent/s below the rate: confd read its ESL socket\n"
        " slower than that, and the fake FreeSWITCH's writes waited.)\n"
    )
    if mq:
        out.write("\n2. AMQP: latency from the fake FreeSWITCH's send to the consumer's receive\n")
        rows = []
        for r in mq:
            rows.append(
                ["yes" if r.get("durable_queue") else "no"]
                + _latency_cells(r)
                + [_fmt(r.get("confd_amqp_dropped")), r["status"]]
            )
        out.write(
            table(
                [
                    "durable q",
                    "rate/s",
                    "sent/s",
                    "to deliver",
                    "delivered",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "buffer drops",
                    "status",
                ],
                rows,
                right=tuple(range(1, 10)),
            )
            + "\n"
        )
        out.write(
            "(the consumer's exclusive queue is bound %s to the conference exchange; confd\n"
            " publishes persistent messages with publisher confirms.  durable q = yes: a durable\n"
            " queue, which nobody consumes, is bound too, so the broker confirms a message only\n"
            " once it is on disk, as with a production consumer's durable queue.  buffer drops =\n"
            " events.amqp_buffer overflows)\n" % AMQP_BINDING
        )

    out.write(
        "\n3. CPU during the paced window, %% of one core (the machine has %d%%)\n"
        % (100 * results["cores"])
    )
    rows = []
    for r in ws + mq:
        cpu = r.get("cpu_pct")
        if not cpu:
            continue
        label = _label(r)
        rows.append(
            [
                label,
                _fmt(cpu["confd"]),
                _fmt(cpu["feeder"]),
                "%s (%d proc, max %s)"
                % (_fmt(cpu["clients"]), r.get("consumer_procs", 0), _fmt(cpu["clients_max_proc"])),
                _fmt(cpu["bench"]),
                _fmt(cpu["other"]),
                _fmt(cpu["machine"]),
            ]
        )
    out.write(
        table(
            ["run", "confd", "feeder", "consumers", "bench", "others", "machine"],
            rows,
            right=(1, 2, 4, 5, 6),
        )
        + "\n"
    )
    out.write(
        "(confd is one gevent thread: near 100% it is the bottleneck.  A consumer process near\n"
        " 100% is itself saturated and its figures include its own queueing.  others = machine\n"
        " busy time minus ours: RabbitMQ in the AMQP runs, anything else running.)\n"
    )
    busy_others = [
        r["cpu_pct"]["other"]
        for r in ws
        if r.get("cpu_pct") and r["cpu_pct"]["other"] > OTHERS_WARNING
    ]
    if busy_others:
        out.write(
            "WARNING: in %d websocket run(s) other processes used %.0f-%.0f%% of a core: the\n"
            "figures of those runs are pessimistic (confd had less CPU than the machine has).\n"
            % (len(busy_others), min(busy_others), max(busy_others))
        )
    profiled = [r for r in ws + mq if r.get("profile")]
    if profiled:
        _report_profile(profiled, out)

    target = next((r for r in ws if _is_target(r)), None)
    p99 = target.get("p99_ms") if target else None
    ok: Optional[bool] = None
    if target is not None:
        ok = p99 is not None and p99 < TARGET_P99_MS and target.get("status") == "ok"
    results["targets"] = {
        "ws_p99": {
            "target": "p99 < %.0f ms at %d events/s, %d clients (%s), every event delivered"
            % (TARGET_P99_MS, TARGET_RATE, TARGET_CLIENTS, TARGET_MODE),
            "value": p99,
            "pass": ok,
        }
    }
    out.write("\nTarget\n")
    measured = "-" if target is None else "%s ms, %s" % (_ms(target, "p99_ms"), target["status"])
    out.write(
        table(
            ["target", "measured", "verdict"],
            [
                [
                    results["targets"]["ws_p99"]["target"],
                    measured,
                    "n/a" if ok is None else ("PASS" if ok else "MISS"),
                ]
            ],
        )
        + "\n"
    )
    out.flush()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("feeder", "clients", "amqp-consumer"):
        sys.exit(child_main(sys.argv[1:]))
    sys.stderr.write("usage: python -m confd_tests.bench ws [--quick] [options]\n")
    sys.exit(2)

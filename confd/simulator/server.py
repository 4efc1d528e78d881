"""A fake FreeSWITCH event socket (mod_event_socket) on loopback, backed by ConferenceModel.

It speaks the wire protocol of the captures (``confd_tests/captures``): ``auth/request`` on
connect, ``-ERR command not found`` to anything but ``auth`` before authentication (s6_preauth),
``-ERR invalid`` then a disconnect-notice and a close on a wrong password, ``api`` replies as
``api/response`` bodies, ``bgapi`` answered with a Job-UUID, events in plain or JSON format to the
connections that subscribed to them, and ``exit`` answered with ``+OK bye``, a notice and a close.

Every connection has a bounded outgoing queue drained by its own writer greenlet, so a client that
stops reading never delays the others: when its queue is full it is dropped (and counted).

The fault controls (``drop_all``, ``restart``, ``refuse``, ``silence``, ``hold_replies``,
``send_raw``) let tests play the ways a real FreeSWITCH goes away or misbehaves.
"""

from __future__ import annotations

import logging
import socket as stdlib_socket
import time
import uuid as uuidlib
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

import gevent
from gevent import queue as gqueue
from gevent.server import StreamServer

from confd.esl.protocol import (
    API_RESPONSE,
    AUTH_REQUEST,
    COMMAND_REPLY,
    DISCONNECT_NOTICE,
    CommandParser,
    CommandRequest,
    ProtocolError,
    encode_frame,
    encode_json_event,
    encode_plain_event,
)
from confd.simulator.model import EVENT_CUSTOM, ConferenceModel, EventPairs

log = logging.getLogger(__name__)

# --- protocol text (from the captures) ---------------------------------------------------------

REPLY_ACCEPTED = "+OK accepted"
REPLY_INVALID = "-ERR invalid"
REPLY_NOT_FOUND = "-ERR command not found"
REPLY_BYE = "+OK bye"
REPLY_NOEVENTS = "+OK no longer listening for events"
REPLY_EVENTS = "+OK event listener enabled %s"
# s1 (exit) and s6_preauth (wrong password): the notice mod_event_socket sends before closing.
GOODBYE_NOTICE = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
# s5_fs_stop_sigterm: the notice of a FreeSWITCH being stopped.
SHUTDOWN_NOTICE = "The system is being shut down.\n"
EVENT_FORMATS = ("plain", "json", "xml")
EVENT_ALL = "ALL"

DEFAULT_MAX_QUEUE = 10000  # frames waiting for one client before it is dropped
DRAIN_TIMEOUT = 1.0  # how long drop_all lets writers flush before forcing sockets shut
POLL_INTERVAL = 0.005

_CLOSE = object()  # writer-queue sentinel: flush what came before, then close the socket


class _HeaderPairs:
    """Ordered (header, value) pairs seen as a mapping by encode_plain_event: unlike a dict it
    keeps the headers FreeSWITCH repeats (floor-change's second Conference-* block, s1)."""

    def __init__(self, pairs: EventPairs) -> None:
        self._pairs = pairs

    def items(self) -> Iterator[Tuple[str, str]]:
        return iter(self._pairs)


class _Connection:
    """One client socket: the subscription it asked for and its outgoing queue."""

    def __init__(self, fake: FakeFreeSwitch, sock: stdlib_socket.socket, index: int, bound: int):
        self.fake = fake
        self.sock = sock
        self.index = index
        self.authed = False
        self.closing = False  # no more commands are read once exit/auth failure/drop began
        self.closed = False
        self.format: Optional[str] = None  # None: not listening for events
        self.events: Set[str] = set()
        self.subclasses: Set[str] = set()
        self.queue: gqueue.Queue = gqueue.Queue(maxsize=bound)
        self.writer = gevent.spawn(self._write_loop)

    # --- output ----------------------------------------------------------------------------

    def send(self, data: bytes, *, force: bool = False) -> None:
        """Queue bytes for the client; ``force`` ignores ``silence`` (notices, raw bytes)."""
        if self.closed or (self.closing and not force):
            return
        if self.fake.silenced and not force:
            return
        try:
            self.queue.put_nowait(data)
        except gqueue.Full:
            self.fake.slow_client_drops += 1
            log.warning("fake FreeSWITCH: client %d does not read, dropping it", self.index)
            self.kill()

    def close_after(self, data: Optional[bytes] = None) -> None:
        """Send ``data`` (if any) after what is queued, then close the socket."""
        if self.closed:
            return
        self.closing = True
        try:
            if data:
                self.queue.put_nowait(data)
            self.queue.put_nowait(_CLOSE)
        except gqueue.Full:
            self.kill()

    def _write_loop(self) -> None:
        try:
            while True:
                item = self.queue.get()
                if item is _CLOSE:
                    break
                self.sock.sendall(item)
        except OSError:
            pass
        finally:
            self._shut()

    def _shut(self) -> None:
        self.closed = True
        self.closing = True
        try:
            self.sock.shutdown(stdlib_socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def kill(self) -> None:
        """Close now, whatever is still queued."""
        self.closed = True
        self.closing = True
        if gevent.getcurrent() is not self.writer:
            self.writer.kill(block=False)
        self._shut()

    # --- subscription ----------------------------------------------------------------------

    def wants(self, name: str, subclass: str) -> bool:
        if self.format is None:
            return False
        if EVENT_ALL in self.events:
            return True
        if name not in self.events:
            return False
        # mod_event_socket: a CUSTOM event with a subclass goes only to listeners that named it.
        return name != EVENT_CUSTOM or not subclass or subclass in self.subclasses


class FakeFreeSwitch:
    """A fake FreeSWITCH event socket server (gevent StreamServer) around a ConferenceModel."""

    def __init__(
        self,
        model: Optional[ConferenceModel] = None,
        password: str = "ClueCon",
        host: str = "127.0.0.1",
        port: int = 0,
        heartbeat_interval: Optional[float] = None,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
    ) -> None:
        self.model = model if model is not None else ConferenceModel()
        self.password = password
        self.host = host
        self.port = port
        self.heartbeat_interval = heartbeat_interval
        self.max_queue = max_queue
        self.commands: List[Tuple[int, str]] = []
        self.slow_client_drops = 0
        self.silenced = False
        self.holding = False
        self._conns: List[_Connection] = []
        self._accepted = 0
        self._server: Optional[StreamServer] = None
        self._heartbeat: Optional[gevent.Greenlet] = None
        self._defer = 0
        self._deferred: List[EventPairs] = []
        self._started = False

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> Tuple[str, int]:
        return (self.host, self.port)

    def start(self) -> FakeFreeSwitch:
        self.model.add_listener(self._on_event)
        self._listen()
        self._started = True
        if self.heartbeat_interval:
            self._heartbeat = gevent.spawn(self._heartbeat_loop, self.heartbeat_interval)
        log.info("fake FreeSWITCH listening on %s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop listening and close every connection without a notice."""
        self._started = False
        if self._heartbeat is not None:
            self._heartbeat.kill(block=False)
            self._heartbeat = None
        self._close_listener()
        for conn in list(self._conns):
            conn.kill()
        self.model.remove_listener(self._on_event)

    def __enter__(self) -> FakeFreeSwitch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self) -> None:
        server = StreamServer((self.host, self.port), self._handle)
        server.start()
        self._server = server
        self.port = server.server_port

    def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    # --- test and fault controls -----------------------------------------------------------

    @property
    def connections(self) -> int:
        """Live client connections."""
        return len(self._conns)

    def wait_for_connections(self, n: int, timeout: float = 2.0) -> bool:
        return self._wait(lambda: len(self._conns) == n, timeout)

    def wait_for_command(
        self, predicate: Callable[[str], bool], timeout: float = 2.0
    ) -> Optional[Tuple[int, str]]:
        """The first recorded (connection index, line) whose line satisfies ``predicate``
        (commands already received count), or None after ``timeout``."""
        found: List[Tuple[int, str]] = []

        def check() -> bool:
            for entry in self.commands:
                if predicate(entry[1]):
                    found.append(entry)
                    return True
            return False

        return found[0] if self._wait(check, timeout) else None

    def drop_all(self, notice: Optional[str] = SHUTDOWN_NOTICE) -> None:
        """Close every client socket, after a text/disconnect-notice unless ``notice`` is None
        (None plays a killed FreeSWITCH: a bare EOF, s5_fs_stop_sigkill)."""
        conns = list(self._conns)
        for conn in conns:
            frame = _notice(notice) if notice is not None else None
            conn.close_after(frame)
        if not self._wait(lambda: all(c.closed for c in conns), DRAIN_TIMEOUT):
            for conn in conns:
                if not conn.closed:
                    conn.kill()
        self._wait(lambda: not any(c in self._conns for c in conns), DRAIN_TIMEOUT)

    def restart(self, notice: Optional[str] = SHUTDOWN_NOTICE) -> None:
        """A FreeSWITCH restart: connections dropped, conferences gone, member ids from 1."""
        self.drop_all(notice)
        self.model.restart()

    def refuse(self, refusing: bool = True) -> None:
        """Stop listening (connects get ECONNREFUSED) or listen again on the same port."""
        if refusing:
            self._close_listener()
        elif self._server is None and self._started:
            self._listen()

    def silence(self, silent: bool = True) -> None:
        """A silent node: nothing is sent (events, heartbeats, replies); sockets stay open."""
        self.silenced = silent

    def hold_replies(self, holding: bool = True) -> None:
        """Commands are read and recorded but neither run nor answered while holding."""
        self.holding = holding

    def send_raw(self, data: bytes) -> None:
        """Push bytes as they are to every connected client."""
        for conn in list(self._conns):
            conn.send(data, force=True)

    # --- connections -----------------------------------------------------------------------

    def _handle(self, sock: stdlib_socket.socket, address: Tuple[str, int]) -> None:
        conn = _Connection(self, sock, self._accepted, self.max_queue)
        self._accepted += 1
        self._conns.append(conn)
        log.debug("fake FreeSWITCH: connection %d from %s", conn.index, address)
        parser = CommandParser()
        conn.send(encode_frame({"Content-Type": AUTH_REQUEST}))
        try:
            while not conn.closed:
                data = sock.recv(65536)
                if not data:
                    break
                for request in parser.feed(data):
                    self._command(conn, request)
        except (OSError, ProtocolError) as exc:
            log.debug("fake FreeSWITCH: connection %d: %s", conn.index, exc)
        finally:
            if not conn.closing:
                conn.kill()  # the client went away: FreeSWITCH closes its side too
            elif not conn.closed:
                # exit or a drop is in progress: let the writer flush, but not forever.
                with gevent.Timeout(DRAIN_TIMEOUT, False):
                    conn.writer.join()
                conn.kill()
            if conn in self._conns:
                self._conns.remove(conn)

    def _command(self, conn: _Connection, request: CommandRequest) -> None:
        line = request.line
        self.commands.append((conn.index, line))
        if self.holding or conn.closing:
            return
        word, _, rest = line.partition(" ")
        word = word.lower()
        if word == "exit":
            conn.send(_reply(REPLY_BYE))
            conn.close_after(_notice(GOODBYE_NOTICE))
            return
        if not conn.authed:
            # s6_preauth: everything but auth is "-ERR command not found" before auth.
            if word != "auth":
                conn.send(_reply(REPLY_NOT_FOUND))
            elif rest.strip() == self.password:
                conn.authed = True
                conn.send(_reply(REPLY_ACCEPTED))
            else:
                conn.send(_reply(REPLY_INVALID))
                conn.close_after(_notice(GOODBYE_NOTICE))
            return
        if word == "api":
            self._deferred_run(conn, lambda: _api_frame(self.model.api(rest)))
        elif word == "bgapi":
            job = str(uuidlib.uuid4())
            conn.send(_reply("+OK Job-UUID: " + job, {"Job-UUID": job}))
            self._deferred_run(conn, lambda: _no_reply(self.model.api(rest)))
        elif word == "event":
            self._subscribe(conn, rest.split())
        elif word == "noevents":
            conn.format = None
            conn.events.clear()
            conn.subclasses.clear()
            conn.send(_reply(REPLY_NOEVENTS))
        else:
            conn.send(_reply(REPLY_NOT_FOUND))

    def _subscribe(self, conn: _Connection, tokens: List[str]) -> None:
        fmt = "plain"
        if tokens and tokens[0].lower() in EVENT_FORMATS:
            fmt = tokens.pop(0).lower()
        if fmt == "xml":
            log.warning("fake FreeSWITCH: xml events are not simulated, sending plain")
        custom = False
        for token in tokens:
            # mod_event_socket: every word after CUSTOM is a subclass name.
            if custom:
                conn.subclasses.add(token)
            elif token.upper() == EVENT_CUSTOM:
                custom = True
                conn.events.add(EVENT_CUSTOM)
            else:
                conn.events.add(token.upper())
        conn.format = fmt
        conn.send(_reply(REPLY_EVENTS % fmt))

    def _deferred_run(self, conn: _Connection, run: Callable[[], bytes]) -> None:
        """Run a command with its events held back until its reply is queued: FreeSWITCH answers
        `api ... mute 1` before the mute-member event reaches the socket (s1)."""
        self._defer += 1
        try:
            reply = run()
        finally:
            self._defer -= 1
        if reply:
            conn.send(reply)
        if not self._defer:
            held, self._deferred = self._deferred, []
            for pairs in held:
                self._deliver(pairs)

    # --- events ----------------------------------------------------------------------------

    def _on_event(self, pairs: EventPairs) -> None:
        if self._defer:
            self._deferred.append(pairs)
        else:
            self._deliver(pairs)

    def _deliver(self, pairs: EventPairs) -> None:
        name = subclass = ""
        for key, value in pairs:
            if key == "Event-Name" and not name:
                name = value
            elif key == "Event-Subclass" and not subclass:
                subclass = value
        encoded: Dict[str, bytes] = {}
        for conn in list(self._conns):
            if conn.closing or not conn.wants(name, subclass):
                continue
            fmt = "json" if conn.format == "json" else "plain"
            if fmt not in encoded:
                if fmt == "json":
                    # A JSON object cannot repeat a key; the repeated headers carry equal values.
                    encoded[fmt] = encode_json_event(dict(pairs))
                else:
                    encoded[fmt] = encode_plain_event(_HeaderPairs(pairs))  # type: ignore[arg-type]
            conn.send(encoded[fmt])

    def _heartbeat_loop(self, interval: float) -> None:
        while True:
            gevent.sleep(interval)
            self.model.heartbeat()

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _wait(condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                return condition()
            gevent.sleep(POLL_INTERVAL)
        return True


def _reply(text: str, extra: Optional[Dict[str, str]] = None) -> bytes:
    headers = {"Content-Type": COMMAND_REPLY, "Reply-Text": text}
    headers.update(extra or {})
    return encode_frame(headers)


def _api_frame(body: str) -> bytes:
    return encode_frame({"Content-Type": API_RESPONSE}, body.encode())


def _no_reply(_body: str) -> bytes:
    # bgapi already got its command/reply; the result would go in a BACKGROUND_JOB event,
    # which confd does not use.
    return b""


def _notice(text: str) -> bytes:
    return encode_frame({"Content-Type": DISCONNECT_NOTICE}, text.encode())

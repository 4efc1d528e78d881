"""The HTTP server: gevent's WSGI server with the bounds that keep the API answering whatever
clients do.

A connection is, in turn:

- *waiting* for a request: its line and headers must arrive within ``header_timeout`` (a new
  connection: from its accept; a kept-alive one may first stay idle ``keepalive_timeout``);
- *busy* while the app answers (a body must arrive within ``header_timeout`` too, and the
  client take each write of the answer within ``send_timeout``);
- or *websocket* once upgraded: then it counts against ``max_websockets`` and no longer against
  ``max_connections``, and it has no deadline here (the websocket's own pings bound it).

``max_connections`` bounds waiting and busy connections together. At the bound, the connection
waiting the longest is closed to make room for the new one: a client holding thousands of
silent or half-sent connections only closes its own, and ``/v2/health`` is answered. Only when
every connection is busy does the server stop accepting (new connections then wait in the
listen backlog). Every bound reached is counted (``confd_http_limit_hits_total``) and logged,
the first time at once and then in one line a minute at most -- never a line per connection.

The server also refuses what gevent would accept or answer in plain text: two different
``Content-Length`` headers (RFC 9112: a request smuggling vector), a ``Content-Length`` that
is not plain digits, ``Content-Length`` with ``Transfer-Encoding``, headers over
``MAX_HEADER_BYTES``; its 400/414/431/501 answers are the API's JSON error envelope.

On stop: the listener closes, waiting (idle keep-alive) connections are closed at once, busy
ones finish their request and close, within the stop's budget.
"""

from __future__ import annotations

import http.client
import io
import logging
import re
import resource
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import gevent
from gevent.pool import Group
from gevent.pywsgi import MAX_REQUEST_LINE, WSGIHandler, WSGIServer
from werkzeug.exceptions import RequestTimeout

from confd.http import responses as r
from confd.metrics import HTTP_METHODS, OTHER_LABEL

log = logging.getLogger(__name__)
access_log = logging.getLogger("confd.access")

# WSGI environ key of a callable the websocket endpoint calls before it answers 101: True
# moves the connection under the websocket bound, False means that bound is full.
UPGRADE_KEY = "confd.upgrade"

MAX_HEADER_BYTES = 32 * 1024  # the header block after the request line (nginx's default)
LIMIT_LOG_INTERVAL = 60.0  # seconds between two log lines about the same bound
KILL_WAIT = 0.5  # seconds of a stop's drain kept for ending the connections still busy
# File descriptors beyond the connection bounds: ESL (2 per node), database, AMQP, log files,
# connections being closed to make room.
SPARE_FDS = 256
# Seconds a response may take to be sent (a client that reads nothing must not hold a
# connection busy); the websocket, once upgraded, bounds its own writes.
SEND_TIMEOUT = 30.0

# confd_http_limit_hits_total{limit=...}
LIMIT_MAX_CONNECTIONS = "max_connections"  # a waiting connection closed to make room
LIMIT_ALL_BUSY = "all_busy"  # accepting paused: every connection busy
LIMIT_MAX_WEBSOCKETS = "max_websockets"  # an upgrade refused (503)
LIMIT_HEADER_TIMEOUT = "header_timeout"
LIMIT_KEEPALIVE_TIMEOUT = "keepalive_timeout"
LIMIT_BODY_TIMEOUT = "body_timeout"
LIMIT_SEND_TIMEOUT = "send_timeout"

WAITING, BUSY, WEBSOCKET, CLOSED = "waiting", "busy", "websocket", "closed"
CONTENT_LENGTH_RE = re.compile(rb"[0-9]{1,18}")
CHUNKED = b"chunked"


@dataclass(frozen=True)
class Limits:
    """The server's bounds (``http.*`` of the configuration)."""

    header_timeout: float = 10.0
    keepalive_timeout: float = 60.0
    max_connections: int = 1000
    max_websockets: int = 1000
    access_log: bool = False
    send_timeout: float = SEND_TIMEOUT

    @property
    def fds_needed(self) -> int:
        return self.max_connections + self.max_websockets + SPARE_FDS


def raise_fd_limit(needed: int) -> Tuple[int, int]:
    """Raise this process's soft limit of open files to ``needed`` (at most the hard limit);
    ``(soft limit now, needed)``.  Past the limit accept() fails and nothing is served."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit to %d: %s", target, exc)
    return soft, needed


# --- reporting bounds reached --------------------------------------------------------------


class LimitLog:
    """Counts every bound reached (``on_hit``) and logs it: at once the first time, then one
    line per ``interval`` at most with how many times it happened since -- a flood of hostile
    connections must not become a flood of log lines."""

    def __init__(
        self,
        on_hit: Callable[[str], None] = lambda limit: None,
        interval: float = LIMIT_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_hit = on_hit
        self.interval = interval
        self.clock = clock
        self._unlogged: Dict[str, int] = {}
        self._logged_at: Dict[str, float] = {}

    def hit(self, limit: str, text: str, level: int = logging.WARNING) -> None:
        self.on_hit(limit)
        n = self._unlogged.get(limit, 0) + 1
        now = self.clock()
        last = self._logged_at.get(limit)
        if last is not None and now - last < self.interval:
            self._unlogged[limit] = n
            return
        self._unlogged[limit] = 0
        self._logged_at[limit] = now
        if last is None:
            log.log(level, "http: %s", text)
        else:
            log.log(level, "http: %s (%d times in the last %.0f s)", text, n, min(now - last, 3600))


# --- the connections -----------------------------------------------------------------------


class Connection:
    """One client connection, as the bounds see it."""

    __slots__ = ("sock", "state", "requests", "evicted")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.state = WAITING
        self.requests = 0
        self.evicted = False  # closed by the server while waiting (bound reached, or stop)


class Connections:
    """The HTTP and websocket connections of one server, and their bounds."""

    def __init__(
        self, limits: Limits, report: LimitLog, on_room: Callable[[], None] = lambda: None
    ) -> None:
        self.limits = limits
        self.report = report
        self.on_room = on_room  # a place may have freed up: accept again
        self.waiting: OrderedDict[Connection, None] = OrderedDict()  # oldest first
        self.busy = 0
        self.websockets = 0
        self.pending = 0  # accepted, not yet seen by its handler
        self.stopping = False

    @property
    def http(self) -> int:
        """Connections counted against ``max_connections``."""
        return len(self.waiting) + self.busy + self.pending

    def full(self) -> bool:
        """Asked before each accept: True (pause accepting) only when every connection is
        busy; while some connection waits for a request, there is room to make."""
        if self.http < self.limits.max_connections or self.waiting:
            return False
        self.report.hit(
            LIMIT_ALL_BUSY,
            "all %d connections busy (http.max_connections): new connections wait in the"
            " listen backlog" % self.limits.max_connections,
        )
        return True

    def accepted(self) -> None:
        """A connection was accepted: at the bound, the one that has waited the longest for a
        request is closed to make room for it."""
        while self.http >= self.limits.max_connections and self.waiting:
            self._evict(next(iter(self.waiting)))
            self.report.hit(
                LIMIT_MAX_CONNECTIONS,
                "%d connections open (http.max_connections): closing the one idle the longest"
                " to make room" % self.limits.max_connections,
            )
        self.pending += 1

    def enter(self, sock: Any) -> Connection:
        self.pending = max(0, self.pending - 1)
        conn = Connection(sock)
        if self.stopping:
            self._evict(conn)  # accepted as the listener closed: not served
        else:
            self.waiting[conn] = None
        return conn

    def wait(self, conn: Connection) -> None:
        """``conn`` waits for its next request: it may be closed to make room."""
        if conn.state == BUSY:
            self.busy -= 1
        conn.state = WAITING
        self.waiting[conn] = None
        self.on_room()

    def work(self, conn: Connection) -> None:
        """``conn`` has a request: the app answers it."""
        if conn.state == WAITING:
            del self.waiting[conn]
            self.busy += 1
            conn.state = BUSY
        conn.requests += 1

    def upgrade(self, conn: Connection) -> bool:
        """Move ``conn`` under the websocket bound (False: that bound is full)."""
        if self.websockets >= self.limits.max_websockets:
            self.report.hit(
                LIMIT_MAX_WEBSOCKETS,
                "%d websockets open (http.max_websockets): refusing upgrades (503)"
                % self.limits.max_websockets,
            )
            return False
        if conn.state == BUSY:
            self.busy -= 1
        conn.state = WEBSOCKET
        self.websockets += 1
        self.on_room()
        return True

    def leave(self, conn: Connection) -> None:
        if conn.state == BUSY:
            self.busy -= 1
        elif conn.state == WEBSOCKET:
            self.websockets -= 1
        self.waiting.pop(conn, None)
        conn.state = CLOSED
        self.on_room()

    def close_waiting(self) -> int:
        """Stop: close every connection waiting for a request (idle keep-alive ones)."""
        self.stopping = True
        waiting = list(self.waiting)
        for conn in waiting:
            self._evict(conn)
        return len(waiting)

    def _evict(self, conn: Connection) -> None:
        """Close a waiting connection: its handler sees the end of the stream and stops."""
        self.waiting.pop(conn, None)
        conn.state = CLOSED
        conn.evicted = True
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# --- one connection's handler --------------------------------------------------------------


class _Refuse(Exception):
    """A request the server answers itself with an error envelope, then closes."""

    def __init__(self, status: int, message: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.message = message
        self.text = text


class _Deadline(Exception):
    """A connection's time to send its request (or body) ran out."""


class _BodyTimeout(RequestTimeout):
    """408 for the app: the body did not arrive in time (Flask renders it as an envelope)."""


class DeadlineInput:
    """``wsgi.input`` whose reads must all be done by a deadline (a body dripped a byte at a
    time cannot hold a connection)."""

    def __init__(self, inner: Any, deadline: float, expired: Callable[[], None]) -> None:
        self._inner = inner
        self._deadline = deadline  # time.monotonic()
        self._expired = expired
        self._timed_out = False

    def _call(self, fn: Callable, *args: Any) -> Any:
        left = self._deadline - time.monotonic()
        if self._timed_out or left <= 0:
            self._expire()
        timer = gevent.Timeout(left)
        timer.start()
        try:
            return fn(*args)
        except gevent.Timeout as t:
            if t is not timer:
                raise
            self._expire()
        finally:
            timer.close()

    def _expire(self) -> None:
        if not self._timed_out:
            self._timed_out = True
            self._expired()
        raise _BodyTimeout()

    def read(self, length: Optional[int] = None) -> bytes:
        return self._call(self._inner.read, length)

    def readline(self, size: Optional[int] = None) -> bytes:
        return self._call(self._inner.readline, size)

    def readlines(self, hint: Optional[int] = None) -> List[bytes]:
        return self._call(self._inner.readlines, hint)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def _discard(self) -> None:
        """gevent reads what the app left of the body before the next request: within the
        same deadline; after a timeout nothing (the connection closes)."""
        if self._timed_out:
            return
        try:
            self._call(self._inner._discard)
        except _BodyTimeout:
            pass


class ApiHandler(WSGIHandler):
    """gevent's WSGI handler with the deadlines and bounds above, JSON error envelopes for
    what it refuses itself, a request id per request and the access log."""

    server: ApiServer

    def __init__(self, sock: Any, address: Any, server: Any, rfile: Any = None) -> None:
        # pywsgi writes the status line and headers, then the body, in separate sends: with
        # Nagle's algorithm on, the body waits for the client's delayed ACK (~40 ms a request).
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not a TCP socket (tests may pass a socketpair)
        super().__init__(sock, address, server, rfile)
        self.conn: Optional[Connection] = None
        self.request_id: Optional[str] = None

    # --- the connection's loop -----------------------------------------------------------------

    def handle(self) -> None:
        conns = self.server.connections
        self.conn = conns.enter(self.socket)
        try:
            super().handle()
        except OSError:
            pass  # the client went away while we answered it
        finally:
            conns.leave(self.conn)

    def handle_one_request(self) -> Any:
        """gevent's, with the deadlines; ``None`` ends the connection, ``True`` reads the next
        request, ``(status, bytes)`` is a refusal gevent sends before closing."""
        conn = self.conn
        assert conn is not None
        if self.rfile.closed or conn.evicted:
            return None
        # What the previous request on this connection left (a refusal must not reuse them).
        self.environ = None
        self.request_id = None
        self.command = None
        self.__dict__.pop("headers", None)
        try:
            got = self._read_head(conn)
        except _Refuse as refusal:
            return None if conn.evicted else self._refusal(refusal)
        finally:
            if not conn.evicted and conn.state == WAITING:
                self.server.connections.work(conn)
        if not got or conn.evicted:
            return None
        self.environ = self.get_environ()
        self.application = self.server.application
        self.handle_one_response()
        if self.close_connection or self.rfile.closed or conn.state != BUSY:
            return None  # closed, or upgraded to a websocket that has ended
        if self.server.connections.stopping:
            return None  # stopping: no next request on this connection
        self.server.connections.wait(conn)
        return True

    def _read_head(self, conn: Connection) -> bool:
        """The request line and headers, within the deadlines (False: nothing came)."""
        limits = self.server.limits
        try:
            if conn.requests:
                # Kept alive: idle up to keepalive_timeout, then the usual header deadline.
                with _deadline(limits.keepalive_timeout, LIMIT_KEEPALIVE_TIMEOUT):
                    if not self.rfile.peek(1):
                        return False
            with _deadline(limits.header_timeout, LIMIT_HEADER_TIMEOUT):
                line = self.read_requestline()
                if not line or conn.evicted:
                    return False
                if len(line) >= MAX_REQUEST_LINE:
                    raise _Refuse(414, "request_uri_too_large", "request line too long")
                self.read_request(line)
                return True
        except _Deadline as exc:
            limit = str(exc)
            if limit == LIMIT_KEEPALIVE_TIMEOUT:
                self.server.limit_log.hit(
                    limit,
                    "idle keep-alive connections closed (http.keepalive_timeout)",
                    logging.DEBUG,
                )
            else:
                self.server.limit_log.hit(
                    limit,
                    "closed a connection that sent no complete request within %gs"
                    " (http.header_timeout)" % limits.header_timeout,
                )
            return False
        except OSError:
            return False

    def read_request(self, raw_requestline: str) -> bool:
        """gevent's parsing, on a header block bounded in bytes, then the framing checks
        gevent leaves out (RFC 9112 section 6)."""
        self.command = raw_requestline.split(" ", 1)[0]  # for a refusal's log line
        head = self._read_header_block()
        self._check_framing(head)  # before gevent's parsing, which drops some of it
        rfile = self.rfile
        self.rfile = io.BytesIO(head)
        try:
            super().read_request(raw_requestline)
        except (ValueError, http.client.HTTPException) as exc:
            log.debug("refused a malformed request from %s: %s", self.client_address, exc)
            raise _Refuse(400, "bad_request", "malformed HTTP request") from None
        finally:
            self.rfile = rfile
        return True

    def _read_header_block(self) -> bytes:
        lines: List[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(MAX_HEADER_BYTES + 1 - size)
            size += len(line)
            if size > MAX_HEADER_BYTES:
                raise _Refuse(
                    431,
                    "request_header_fields_too_large",
                    "headers over %d bytes" % MAX_HEADER_BYTES,
                )
            lines.append(line)
            if line in (b"\r\n", b"\n", b""):
                return b"".join(lines)

    def _check_framing(self, head: bytes) -> None:
        """RFC 9112 section 6.3: how long the body is must be unambiguous.  (Also notes the
        request id, for a refusal made before gevent parses the headers.)"""
        lengths: List[bytes] = []
        encodings: List[bytes] = []
        for line in head.split(b"\n"):
            name, colon, value = line.partition(b":")
            if not colon:
                continue
            name = name.strip().lower()
            if name == b"content-length":
                lengths.append(value.strip())
            elif name == b"transfer-encoding":
                encodings.append(value.strip().lower())
            elif name == b"x-request-id":
                self.request_id = r.request_id(value.strip().decode("latin-1"))
        if encodings:
            if encodings != [CHUNKED]:
                raise _Refuse(501, "not_implemented", "only Transfer-Encoding: chunked is taken")
            if lengths:
                raise _Refuse(
                    400, "bad_request", "both Transfer-Encoding and Content-Length (RFC 9112)"
                )
        if len(set(lengths)) > 1:
            raise _Refuse(400, "bad_request", "different Content-Length headers (RFC 9112)")
        if lengths and not CONTENT_LENGTH_RE.fullmatch(lengths[0]):
            raise _Refuse(400, "bad_request", "Content-Length is not a number of bytes")

    # --- what the app sees ---------------------------------------------------------------------

    def get_environ(self) -> Dict[str, Any]:
        env = super().get_environ()
        self.request_id = r.request_id(env.get("HTTP_X_REQUEST_ID"))
        env[r.REQUEST_ID_KEY] = self.request_id
        env[r.IDENTITY_KEY] = self.server.identity
        env[UPGRADE_KEY] = self._upgrade
        chunked = env.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        # gevent hands an upgrade request the raw stream (for the websocket); a request with a
        # body is no websocket handshake, and its body is read within the deadline whatever
        # its Upgrade header says.
        if env["wsgi.input"] is self.wsgi_input or self.content_length or chunked:
            timeout = self.server.limits.header_timeout
            self.wsgi_input = DeadlineInput(
                self.wsgi_input, time.monotonic() + timeout, self._body_timed_out
            )
            env["wsgi.input"] = self.wsgi_input
            env["wsgi.input_terminated"] = True
        return env

    def _upgrade(self) -> bool:
        assert self.conn is not None
        return self.server.connections.upgrade(self.conn)

    def _body_timed_out(self) -> None:
        self.close_connection = True
        self.server.limit_log.hit(
            LIMIT_BODY_TIMEOUT,
            "closed a connection whose request body did not arrive within %gs"
            " (http.header_timeout)" % self.server.limits.header_timeout,
        )

    # --- answers the server makes itself ---------------------------------------------------------

    def _refusal(self, refusal: _Refuse) -> Tuple[str, bytes]:
        rid = self.request_id or r.request_id(None)
        self.request_id = rid
        self.code = refusal.status
        self.server.observe(r.UNMATCHED_ROUTE, self.command or "", refusal.status)
        body = r.raw_error(
            refusal.status,
            refusal.message,
            {"message": refusal.text},
            request_id=rid,
            identity=self.server.identity,
        )
        return str(refusal.status), body

    def _send_error_response_if_possible(self, error_code: int) -> None:
        """gevent's plain-text 400 (a broken chunked body) and 500, as envelopes."""
        if self.response_length:
            self.close_connection = True
            return
        if error_code == 400:
            message, text = "bad_request", "malformed request body"
        else:
            message, text = "internal_error", "internal error, see log"
        line, head, payload = r.error_parts(
            error_code,
            message,
            {"message": text},
            request_id=self.request_id or r.request_id(None),
            identity=self.server.identity,
            headers=[("Connection", "close")],
        )
        self.close_connection = True
        try:
            self.start_response(line, head)
            self.write(payload)
        except OSError:
            pass

    def _sendall(self, data: bytes) -> None:
        """Every write of a response within ``send_timeout`` (gevent's writes go through
        here; an upgraded websocket writes on its own)."""
        timer = gevent.Timeout(self.server.limits.send_timeout)
        timer.start()
        try:
            super()._sendall(data)
        except gevent.Timeout as t:
            if t is not timer:
                raise
            raise TimeoutError("the client took nothing for %gs" % timer.seconds) from None
        finally:
            timer.close()

    def handle_error(self, t: Any, v: Any, tb: Any) -> None:
        """A response the client took nothing of for ``send_timeout``: counted and closed,
        not a traceback (it is the client's doing)."""
        if isinstance(v, TimeoutError):
            self.close_connection = True
            self.server.limit_log.hit(
                LIMIT_SEND_TIMEOUT,
                "closed a connection that took no part of its answer for %gs"
                % self.server.limits.send_timeout,
            )
            return
        super().handle_error(t, v, tb)

    def _handle_client_error(self, ex: BaseException) -> Tuple[str, bytes]:
        # gevent logs these at error level with the client's text; it is the client's error.
        log.debug("refused a request from %s: %s", self.client_address, ex)
        return self._refusal(_Refuse(400, "bad_request", "malformed HTTP request"))

    # --- the access log ------------------------------------------------------------------------

    def log_request(self) -> None:
        level = logging.INFO if self.server.limits.access_log else logging.DEBUG
        if not access_log.isEnabledFor(level):
            return
        env = self.environ or {}
        status = self.code if isinstance(self.code, int) and self.code else self.status
        if isinstance(status, bytes):
            status = status[:3].decode("latin-1")
        elapsed = max(0.0, (self.time_finish or time.time()) - self.time_start) * 1000
        method = self.command if self.command in HTTP_METHODS else OTHER_LABEL
        access_log.log(
            level,
            "request %s %s %s %s %.1fms",
            self.request_id or "-",
            method,
            env.get(r.ROUTE_KEY) or r.UNMATCHED_ROUTE,
            status,
            elapsed,
        )


class _deadline:
    """``with _deadline(seconds, name):`` raises ``_Deadline(name)`` when the time runs out."""

    def __init__(self, seconds: float, name: str) -> None:
        self.timer = gevent.Timeout(seconds)
        self.name = name

    def __enter__(self) -> None:
        self.timer.start()

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        self.timer.close()
        if exc is self.timer:
            raise _Deadline(self.name)
        return False


# --- the server ------------------------------------------------------------------------------


class ApiServer(WSGIServer):
    """gevent's WSGI server, its connections counted by ``Connections`` (no ``Pool``: a pool
    counts every greenlet alike, and would keep counting an upgraded websocket)."""

    handler_class = ApiHandler

    def __init__(
        self,
        address: Tuple[str, int],
        application: Callable,
        *,
        limits: Limits,
        identity: r.Identity,
        on_limit: Callable[[str], None] = lambda limit: None,
        observe: Callable[[str, str, int], None] = lambda route, method, status: None,
        handler_class: Optional[type] = None,
    ) -> None:
        self.limits = limits
        self.identity = identity
        self.observe = observe
        self.limit_log = LimitLog(on_limit)
        self.connections = Connections(limits, self.limit_log, self._room)
        self.group = Group()
        super().__init__(
            address,
            application,
            spawn=self._spawn_counted,
            log=None,
            error_log=log,
            handler_class=handler_class,
        )

    def _spawn_counted(self, *args: Any) -> gevent.Greenlet:
        self.connections.accepted()
        return self.group.spawn(*args)

    def full(self) -> bool:
        return self.connections.full()

    def _room(self) -> None:
        if self.started:
            self.start_accepting()

    def stop_gracefully(self, drain: float) -> None:
        """Close the listener and the idle connections at once; give the busy ones ``drain``
        seconds to finish their request (websockets: to answer their close), then end them."""
        self.close()
        idle = self.connections.close_waiting()
        if idle:
            log.info("http: closed %d idle connections", idle)
        kill_wait = min(KILL_WAIT, drain / 4)  # the end of the drain, for ending the rest
        self.group.join(timeout=max(0.0, drain - kill_wait))
        left = len(self.group)
        if left:
            log.warning("http: %d connections still busy after %.1fs, ending them", left, drain)
            self.group.kill(block=True, timeout=kill_wait)

"""One event-socket connection to FreeSWITCH: auth, commands with a deadline, a read loop.

confd owns this lifecycle instead of greenswitch's InboundESL because the latter cannot be
reconnected, never fails a pending ``send`` when the socket closes, crashes on ``event json``,
URL-decodes whole frames and buffers without bound (see README.rst, "Design", for the figures).

A connection is used once: when it dies (EOF, disconnect-notice, read deadline, protocol error,
a command past its deadline) every pending command fails at once with ``ConnectionLost`` and the
owner makes a new one.
"""

from __future__ import annotations

import collections
import logging
from typing import Callable, Deque, Optional

import gevent
from gevent import socket
from gevent.event import AsyncResult, Event

from confd.esl import protocol as p

log = logging.getLogger(__name__)

RECV_BYTES = 65536
OK_PREFIX = "+OK"
# Commands waiting for their reply on one connection; past this a caller is refused at once
# rather than queued behind a node that has stopped answering.
MAX_PENDING = 256


class EslError(Exception):
    """Base of connection failures."""


class ConnectionLost(EslError):
    """The connection is gone (or never was); pending and later commands fail with this."""


class CommandTimeout(EslError):
    """No reply within the command's deadline; the connection is closed as dead."""


class AuthFailed(EslError):
    """FreeSWITCH refused the password (``-ERR invalid``): a configuration error."""


class TooManyPending(EslError):
    """``MAX_PENDING`` commands already wait for a reply on this connection."""


class EslConnection:
    """A single ESL client connection.  ``on_event`` is called in the reader greenlet, in
    wire order, with each event frame; it must not block."""

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        name: str = "",
        on_event: Optional[Callable[[p.Frame], None]] = None,
        read_timeout: Optional[float] = None,
        connect_timeout: float = 5.0,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.host, self.port, self.name = host, port, name or "%s:%s" % (host, port)
        self._password = password
        self._on_event = on_event
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._sock: Optional[socket.socket] = None
        self._parser = p.FrameParser()
        self._pending: Deque[AsyncResult] = collections.deque()
        self._max_pending = max_pending
        self._reader: Optional[gevent.Greenlet] = None
        self._auth = AsyncResult()
        self._closed = Event()
        self.close_reason: Optional[str] = None

    # --- lifecycle ---------------------------------------------------------------------------

    def connect(self, timeout: float = 5.0) -> None:
        """Connect and authenticate; raises ``AuthFailed``, ``ConnectionLost`` or
        ``CommandTimeout``."""
        try:
            self._sock = socket.create_connection(
                (self.host, self.port), timeout=self._connect_timeout
            )
        except OSError as exc:
            self.close_reason = "connect failed: %s" % (exc.strerror or exc)
            self._closed.set()
            raise ConnectionLost(self.close_reason) from None
        self._sock.settimeout(None)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = gevent.spawn(self._read_loop)
        try:
            self._auth.get(timeout=timeout)
        except gevent.Timeout:
            self.close("no auth/request within %.1fs" % timeout)
            raise CommandTimeout(self.close_reason) from None
        except ConnectionLost:
            raise
        reply = self.command("auth %s" % self._password, timeout=timeout)
        if not reply.startswith(OK_PREFIX):
            self.close("authentication refused: %s" % reply)
            raise AuthFailed(reply)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def closed_event(self) -> Event:
        return self._closed

    def wait_closed(self, timeout: Optional[float] = None) -> bool:
        return self._closed.wait(timeout)

    def close(self, reason: str = "closed by confd") -> None:
        if self._closed.is_set():
            return
        self.close_reason = reason
        self._closed.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        exc = ConnectionLost(reason)
        if not self._auth.ready():
            self._auth.set_exception(exc)
        while self._pending:
            self._pending.popleft().set_exception(exc)
        reader = self._reader
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=False)

    # --- commands ----------------------------------------------------------------------------

    def send(self, line: str, timeout: float) -> p.Frame:
        """Send one command and wait for its reply frame.  Replies come back in the order the
        commands were sent (mod_event_socket answers one command at a time), so a FIFO of
        waiters is enough to pair them."""
        data = p.encode_command(line)  # refuses CR/LF/NUL before anything is sent
        if self._closed.is_set() or self._sock is None:
            raise ConnectionLost(self.close_reason or "not connected")
        if len(self._pending) >= self._max_pending:
            raise TooManyPending("%d commands already wait for a reply" % len(self._pending))
        waiter = AsyncResult()
        self._pending.append(waiter)
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.close("send failed: %s" % exc)
            raise ConnectionLost(self.close_reason) from None
        try:
            return waiter.get(timeout=timeout)
        except gevent.Timeout:
            # The reply may still come and would then answer the next command: the
            # connection cannot be trusted any more (events.md, lifecycle step 4).
            self.close("no reply within %.1fs" % timeout)
            raise CommandTimeout("no reply within %.1fs" % timeout) from None

    def command(self, line: str, timeout: float) -> str:
        """A non-api command (auth, event, ...): returns its Reply-Text."""
        frame = self.send(line, timeout)
        return frame.reply_text

    def api(self, line: str, timeout: float) -> str:
        """``api <line>``: returns the api/response body as text."""
        return self.send("api " + line, timeout).reply_text

    # --- reading -----------------------------------------------------------------------------

    def _read_loop(self) -> None:
        sock = self._sock
        reason = "EOF from FreeSWITCH"
        try:
            while sock is not None and not self._closed.is_set():
                try:
                    if self._read_timeout:
                        with gevent.Timeout(self._read_timeout):
                            data = sock.recv(RECV_BYTES)
                    else:
                        data = sock.recv(RECV_BYTES)
                except gevent.Timeout:
                    reason = "no data for %.1fs (heartbeat missed)" % self._read_timeout
                    break
                if not data:
                    break
                for frame in self._parser.feed(data):
                    if not self._dispatch(frame):
                        reason = self.close_reason or "disconnect-notice"
                        return
                # recv() does not yield while data is waiting: during a flood this greenlet
                # would otherwise starve the command connection and the HTTP server.
                gevent.sleep(0)
        except p.ProtocolError as exc:
            reason = "protocol error: %s" % exc
        except OSError as exc:
            reason = "socket error: %s" % exc
        except Exception as exc:  # a bug must end this connection, never leave it hanging
            log.exception("%s: reader failed", self.name)
            reason = "internal error: %s" % exc
        finally:
            if not self._closed.is_set():
                self.close(reason)

    def _dispatch(self, frame: p.Frame) -> bool:
        ctype = frame.content_type
        if ctype in p.EVENT_TYPES:
            if self._on_event is not None:
                self._on_event(frame)
        elif ctype in p.REPLY_TYPES:
            if self._pending:
                self._pending.popleft().set(frame)
            else:
                log.warning("%s: reply with no command waiting, ignored", self.name)
        elif ctype == p.AUTH_REQUEST:
            if not self._auth.ready():
                self._auth.set(frame)
        elif ctype == p.DISCONNECT_NOTICE:
            text = frame.body.decode("utf-8", "replace").strip().splitlines()
            self.close("disconnect-notice: %s" % (text[0] if text else ""))
            return False
        else:
            log.debug("%s: ignoring frame of type %r", self.name, ctype)
        return True

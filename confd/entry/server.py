"""The entry listener: FreeSWITCH's outbound connections in, one greenlet per call.

``EntryService`` takes everything it uses through its constructor (configuration values, the
directory of accounts and documents, the live rooms, metrics hooks), so the daemon wires it and
tests build it with fakes.  Off until ``listen`` is set.

Bounds: at most ``max_calls`` calls in entry at once.  One more is answered with ``goodbye`` and
hung up (outcome ``busy``) by a short session of its own; at most ``overflow`` of those run at
once, past that a connection is closed unanswered (FreeSWITCH then continues the dialplan after
``socket``: the shipped snippet hangs up).  Every session ends by itself (each step has a
deadline); ``stop`` ends the listener and kills what is left after its timeout.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Optional, Tuple

import gevent
from gevent import socket
from gevent.server import StreamServer

from confd.entry import constants as c
from confd.entry import rules
from confd.entry.directory import Directory, RoomReader
from confd.entry.rules import parse_listen, settings_from
from confd.entry.session import (
    Admissions,
    CallResult,
    CallSession,
    EntryContext,
    Timeouts,
    log_line,
)

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0


class EntryService:
    def __init__(
        self,
        *,
        listen: Optional[str],
        settings: rules.EntrySettings,
        directory: Directory,
        rooms: RoomReader,
        max_calls: int = c.DEFAULT_MAX_CALLS,
        overflow: Optional[int] = None,
        on_outcome: Optional[Callable[[str], None]] = None,
        on_step: Optional[Callable[[float], None]] = None,
        timeouts: Optional[Timeouts] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1:
            raise ValueError("max_calls must be an integer >= 1")
        self.listen = listen
        self._address = parse_listen(listen) if listen else None
        self.max_calls = max_calls
        self.overflow = overflow if overflow is not None else max(16, max_calls // 10)
        self._on_outcome = on_outcome
        self.ctx = EntryContext(
            settings=settings,
            directory=directory,
            rooms=rooms,
            admissions=Admissions(),
            builder=settings.builder(),
            timeouts=timeouts or Timeouts(),
            clock=clock,
            on_step=on_step,
        )
        self._server: Optional[StreamServer] = None
        self.active = 0  # calls in entry (confd_entry_active)
        self.refusing = 0  # busy sessions running
        self.outcomes: Dict[str, int] = {}
        self.dropped = 0  # connections closed unanswered (overflow full, or stopping)
        self._stopping = False
        self._sessions: set = set()  # the greenlets of the calls (entry and busy)

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def port(self) -> Optional[int]:
        return self._server.server_port if self._server is not None else None

    def bind(self) -> None:
        """Take the listening address without accepting yet: the daemon binds before it starts
        anything, so a taken address stops it at once (an OSError naming entry.listen)."""
        if self._address is None or self._server is not None:
            return
        # The kernel's queue of connections not accepted yet holds a burst of max_calls calls
        # and the ones to refuse: past it (gevent's default is 128) Linux drops the handshake's
        # last step and the call waits for a resent SYN-ACK (1 s, then 3 s, 7 s ...) before
        # confd even sees it.  (net.core.somaxconn caps it.)
        server = StreamServer(self._address, self._handle, backlog=self.max_calls + self.overflow)
        try:
            server.init_socket()
        except OSError as exc:
            raise OSError(
                exc.errno, "entry.listen %s: %s" % (self.listen, exc.strerror or exc)
            ) from None
        self._server = server

    def start(self) -> None:
        """Accept FreeSWITCH's connections (binding first when ``bind`` was not called)."""
        if self._address is None:
            return
        self.bind()
        server = self._server
        if server is None or server.started:
            return
        self._stopping = False
        server.start()
        log.info("entry: listening on %s:%d", self._address[0], server.server_port)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop accepting; calls still in entry get half of ``timeout`` to end by themselves,
        then their greenlets are killed within the other half (their sockets close: the
        application running on the call finishes, then FreeSWITCH continues the dialplan after
        ``socket``, which hangs up; a caller whose ``conference`` already runs stays in it).
        The daemon passes its share of the stop budget."""
        server, self._server = self._server, None
        self._stopping = True
        if server is None:
            return
        server.close()  # no new connections
        busy = self.active
        gevent.joinall(list(self._sessions), timeout=timeout / 2)
        left = list(self._sessions)
        if left:
            gevent.killall(left, block=True, timeout=timeout / 2)
        log.info("entry: stopped (%d call(s) were in entry, %d ended by the stop)", busy, len(left))

    def status(self) -> dict:
        """For /v2/health: ``{"listen": ..., "active": N}`` (plus what an operator may want)."""
        listen = self.listen
        if self._server is not None and self._address is not None:
            listen = "%s:%d" % (self._address[0], self._server.server_port)
        return {
            "listen": listen,
            "active": self.active,
            "max_calls": self.max_calls,
            "admitting": self.ctx.admissions.pending,
        }

    # --- connections -----------------------------------------------------------------------------

    def _handle(self, sock: socket.socket, address: Tuple[str, int]) -> None:
        me = gevent.getcurrent()
        self._sessions.add(me)
        try:
            self._serve(sock)
        finally:
            self._sessions.discard(me)

    def _serve(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._stopping:
            self.dropped += 1
            sock.close()
            return
        if self.active >= self.max_calls:
            if self.refusing >= self.overflow:
                self.dropped += 1
                log.warning(
                    "entry: %d calls in entry and %d refusing: closing", self.active, self.refusing
                )
                sock.close()
                return
            self.refusing += 1
            try:
                self._finish(self._busy(sock))
            finally:
                self.refusing -= 1
            return
        self.active += 1
        try:
            result = CallSession(sock, self.ctx).run()
        finally:
            self.active -= 1
        self._finish(result)

    def _finish(self, result: CallResult) -> None:
        self.outcomes[result.outcome] = self.outcomes.get(result.outcome, 0) + 1
        if self._on_outcome is not None:
            try:
                self._on_outcome(result.outcome)
            except Exception:
                log.exception("entry: outcome hook failed")
        log.info("entry: %s", log_line(result))

    def _busy(self, sock: socket.socket) -> CallResult:
        """Over ``max_calls``: answer, goodbye, hang up (the same deadlines as a call)."""
        return CallSession(sock, self.ctx).refuse_busy()


def from_config(
    entry: Any,
    *,
    channel_var_prefix: str,
    name_pattern: str,
    directory: Directory,
    rooms: RoomReader,
    on_outcome: Optional[Callable[[str], None]] = None,
    on_step: Optional[Callable[[float], None]] = None,
) -> EntryService:
    """The daemon's one call: ``from_config(cfg.entry, channel_var_prefix=...,
    name_pattern=..., directory=StoreDirectory(store), rooms=live_rooms(state), ...)``."""
    return EntryService(
        listen=entry.listen,
        settings=settings_from(entry, channel_var_prefix, name_pattern),
        directory=directory,
        rooms=rooms,
        max_calls=entry.max_calls,
        on_outcome=on_outcome,
        on_step=on_step,
    )

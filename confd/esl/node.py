"""One supervisor per FreeSWITCH node: connect, subscribe, resync, read, reconnect.

Two connections per node:
- the *event* connection subscribes to ``CUSTOM conference::maintenance`` and ``HEARTBEAT``,
  asks for the ``json_list`` snapshot on the same ordered stream, and feeds the live state;
- the *command* connection subscribes to nothing, so an operator's command never waits behind
  a backlog of queued events.

Only the event connection tells what the node holds (events.md, lifecycle steps 4-7):
- when it is lost (EOF, disconnect-notice, heartbeat deadline, protocol error) the node's state
  is dropped at once (FreeSWITCH forgets its conferences when it restarts and member ids start
  again at 1) and published as ``del-member`` / ``conference-destroy`` with reason
  ``node_lost``; pending commands fail, and the supervisor retries with exponential backoff
  and jitter between ``reconnect_min`` and ``reconnect_max``;
- when the command connection dies (a command past its deadline closes it: a late reply
  would answer the next command) only that connection is made again, the state is kept;
- confd's own stop publishes nothing: nobody left a conference.
"""

from __future__ import annotations

import datetime
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import gevent
from gevent.event import Event
from gevent.pool import Pool

from confd.backoff import backoff_delay
from confd.conferences import events as ev
from confd.conferences.commands import Command, CommandBuilder
from confd.conferences.state import LiveState, Update
from confd.esl import protocol as p
from confd.esl.connection import (
    AuthFailed,
    CommandTimeout,
    ConnectionLost,
    EslConnection,
    EslError,
)

log = logging.getLogger(__name__)

# HEARTBEAT must come before CUSTOM: every word after CUSTOM is read as a subclass name.
EVENT_SUBSCRIPTION = "event %s HEARTBEAT CUSTOM conference::maintenance"
# Events held while the json_list reply is pending (events.md, lifecycle step 3).  Past this
# bound the resync is abandoned and the connection restarted rather than buffering forever.
MAX_RESYNC_BACKLOG = 100_000
# uuid_dump tries per resynced participant: the resync's, and one more after the command
# connection was made again (a dump that itself never answers must not loop forever).
MAX_DUMP_TRIES = 2


class NodeUnavailable(EslError):
    """The node is not connected: the command was not sent."""


@dataclass
class NodeSettings:
    name: str
    host: str
    port: int
    password: str
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    command_timeout: float = 5.0
    heartbeat_timeout: float = 60.0
    event_format: str = "plain"
    channel_var_prefix: str = "ecallmgr_"
    resync_concurrency: int = 4


class NodeSupervisor:
    def __init__(
        self,
        settings: NodeSettings,
        state: LiveState,
        builder: CommandBuilder,
        *,
        publish: Optional[Callable[[List[Update]], None]] = None,
        wants_updates: Callable[[], bool] = lambda: True,
        on_event_taken: Callable[[str], None] = lambda action: None,
        on_status: Callable[[NodeSupervisor], None] = lambda node: None,
        on_retry: Callable[[float], None] = lambda delay: None,
        rng: Optional[random.Random] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self._state = state
        self._builder = builder
        self._publish = publish or (lambda updates: None)
        # Whether anyone consumes flag updates right now (no publish: nobody ever does).
        self._wants_updates = wants_updates if publish is not None else (lambda: False)
        self._on_event_taken = on_event_taken
        self._on_status = on_status
        self._on_retry = on_retry
        self._rng = rng or random.Random()
        self._clock = clock
        self._events: Optional[EslConnection] = None
        self._commands: Optional[EslConnection] = None
        self._stopping = Event()
        self._greenlet: Optional[gevent.Greenlet] = None
        self._resync_buffer: Optional[List[p.Frame]] = None
        self._enrich_pool = Pool(max(1, settings.resync_concurrency))
        self._keeper: Optional[gevent.Greenlet] = None
        # Channel data of resynced participants (events.md, "uuid_dump"), per session: call ids
        # waiting for their uuid_dump -> tries so far (bounded by the participants of one
        # snapshot), dumps under way, and where their results go while the resync is not
        # applied yet (None afterwards: they go to the live state).
        self._dumper: Optional[gevent.Greenlet] = None
        self._undumped: Dict[str, int] = {}
        self._dumping = 0
        self._dump_wakeup = Event()  # something to dump, or the command connection is back
        self._dumps_settled = Event()  # nothing waiting, nothing under way
        self._resync_found: Optional[Dict[str, ev.ChannelData]] = None
        self._ran = False
        # Status, for /v2/health and metrics.
        self.connected = False
        self.since = clock()
        self.error: Optional[str] = "not connected yet"
        self.attempts = 0
        self.connects = 0
        self.events_in = 0
        self.resync_overflows = 0
        self.command_reconnects = 0

    # --- public ------------------------------------------------------------------------------

    def start(self) -> gevent.Greenlet:
        self._greenlet = gevent.spawn(self.run)
        self._greenlet.name = "node-%s" % self.name
        return self._greenlet

    def stop(self, timeout: float = 2.0) -> None:
        """Close both connections and end the supervisor.  Publishes nothing: confd stopping
        is not everyone leaving (events.md, lifecycle step 7)."""
        self._stopping.set()
        for conn in (self._events, self._commands):
            if conn is not None:
                conn.close("confd stopping")
        if self._greenlet is not None:
            self._greenlet.join(timeout)
            if not self._greenlet.dead:
                self._greenlet.kill(block=True, timeout=timeout)
        for helper in (self._keeper, self._dumper):
            if helper is not None:
                helper.kill(block=False)
        self._enrich_pool.kill(block=False)

    def status(self) -> dict:
        conferences, participants = self._state.counts(self.name)
        return {
            "name": self.name,
            "host": self.settings.host,
            "port": self.settings.port,
            "connected": self.connected,
            "since": datetime.datetime.fromtimestamp(self.since, datetime.UTC)
            .isoformat()
            .replace("+00:00", "Z"),
            "conferences": conferences,
            "participants": participants,
            "error": self.error,
        }

    def api(self, command: Command, timeout: Optional[float] = None) -> str:
        """Send a built command on the command connection; returns FreeSWITCH's reply text.
        Raises ``NodeUnavailable`` when the node (or just its command connection, being made
        again) is not connected, and ``ConnectionLost`` / ``CommandTimeout`` when it goes away
        meanwhile or does not answer in time (never hangs past the deadline)."""
        conn = self._commands
        if not self.connected:
            raise NodeUnavailable(self.error or "not connected")
        if conn is None or conn.closed:
            why = conn.close_reason if conn is not None else None
            raise NodeUnavailable("command connection down: %s" % (why or "reconnecting"))
        return conn.api(command.text, timeout or self.settings.command_timeout)

    # --- the supervisor loop -------------------------------------------------------------------

    def run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            self.attempts += 1
            self._ran = False
            try:
                self._session()
            except AuthFailed as exc:
                # A wrong password will not fix itself: retry at the slowest pace.
                self._lost("authentication failed: %s" % exc, level=logging.ERROR)
                attempt = 64
            except EslError as exc:
                self._lost(str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug must not end the supervisor
                log.exception("node %s: unexpected error", self.name)
                self._lost("internal error: %s" % exc)
            if self._stopping.is_set():
                break
            if self._ran:
                attempt = 0  # a session that got as far as running resets the backoff
            delay = backoff_delay(
                attempt, self.settings.reconnect_min, self.settings.reconnect_max, self._rng
            )
            attempt += 1
            log.debug("node %s: next attempt in %.3fs", self.name, delay)
            self._on_retry(delay)
            self._stopping.wait(delay)
        self._lost("confd stopping", level=logging.DEBUG)

    def _connection(self, on_event=None, read_timeout=None) -> EslConnection:
        s = self.settings
        return EslConnection(
            s.host,
            s.port,
            s.password,
            name=self.name,
            on_event=on_event,
            read_timeout=read_timeout,
            connect_timeout=s.command_timeout,
        )

    def _session(self) -> None:
        s = self.settings
        events = self._connection(on_event=self._on_frame, read_timeout=s.heartbeat_timeout)
        self._events = events
        events.connect(timeout=s.command_timeout)
        reply = events.command(EVENT_SUBSCRIPTION % s.event_format, timeout=s.command_timeout)
        if not reply.startswith("+OK"):
            raise ConnectionLost("subscription refused: %s" % reply)
        commands = self._connection()
        self._commands = commands
        commands.connect(timeout=s.command_timeout)
        # Resync: json_list goes on the event connection so that its reply takes its place in
        # the event stream; events that arrive before the reply are held and applied after the
        # snapshot, in order.
        self._resync_buffer = []
        try:
            listing = events.api(self._builder.json_list().text, timeout=s.command_timeout)
            snapshot = ev.snapshot_from_json_list(listing, self.name, self._clock())
            snapshot = self._with_channel_data(snapshot, events)
            self._apply(snapshot)
            held, self._resync_buffer = self._resync_buffer, None
            for frame in held:
                self._take(frame)
        finally:
            self._resync_buffer = None
        self.connects += 1
        self._ran = True
        self._set_status(True, None)
        n_conf, n_part = self._state.counts(self.name)
        log.info(
            "node %s: connected to %s:%s, %d conference(s), %d participant(s)",
            self.name,
            s.host,
            s.port,
            n_conf,
            n_part,
        )
        self._keeper = gevent.spawn(self._keep_commands, events)
        self._keeper.name = "node-%s-commands" % self.name
        # Run until the event connection dies: only that says the node's state is gone.
        events.wait_closed()
        raise ConnectionLost(events.close_reason or "connection closed")

    def _keep_commands(self, events: EslConnection) -> None:
        """While the event connection lives, make the command connection again whenever it
        dies (a command past its deadline, an EOF on it alone): the live state is untouched,
        commands are refused with ``NodeUnavailable`` until it is back."""
        s = self.settings
        attempt = 0
        while not events.closed:
            current = self._commands
            if current is not None and not current.closed:
                gevent.wait([current.closed_event, events.closed_event], count=1)
                continue
            # Paced like the node's own retries; the first pause also lets the EOF of a node
            # that went away reach the event connection, which then ends the session instead.
            delay = backoff_delay(attempt, s.reconnect_min, s.reconnect_max, self._rng)
            if events.wait_closed(delay):
                return
            if attempt == 0:
                why = current.close_reason if current is not None else None
                log.warning(
                    "node %s: command connection lost (%s); making it again, live state kept",
                    self.name,
                    why or "closed",
                )
            attempt += 1
            conn = self._connection()
            try:
                conn.connect(timeout=s.command_timeout)
            except EslError as exc:
                log.debug("node %s: command connection attempt failed: %s", self.name, exc)
                continue
            except BaseException:
                conn.close("command connection not made: supervisor ending it")
                raise
            if events.closed:
                conn.close("event connection lost meanwhile")
                return
            self._commands = conn
            self.command_reconnects += 1
            attempt = 0
            log.info("node %s: command connection made again", self.name)
            self._dump_wakeup.set()  # dumps it took with it are tried again

    def _lost(self, reason: str, level: int = logging.WARNING) -> None:
        stopping = self._stopping.is_set()
        if stopping:
            level = min(level, logging.INFO)  # our own doing, not an incident
        if self._keeper is not None:
            # Blocking: a keeper that just made a connection must not install it afterwards.
            self._keeper.kill(block=True, timeout=self.settings.command_timeout)
            self._keeper = None
        for conn in (self._events, self._commands):
            if conn is not None:
                conn.close(reason)
        self._events = self._commands = None
        if self._dumper is not None:
            self._dumper.kill(block=False)
            self._dumper = None
        self._enrich_pool.kill(block=False)
        self._undumped.clear()
        self._dumping = 0
        self._resync_found = None
        updates = self._state.drop_node(self.name)
        # confd's own stop says nothing about the participants (events.md, lifecycle step 7):
        # nobody left, and consumers (billing, presence) must not see everyone leave.
        if updates and not stopping:
            self._publish(updates)
        # One log line per state change, not one per retry.
        if self.connected:
            log.log(level, "node %s: disconnected: %s", self.name, reason)
        elif reason != self.error:
            log.log(level, "node %s: not connected: %s", self.name, reason)
        self._set_status(False, reason)

    def _set_status(self, connected: bool, error: Optional[str]) -> None:
        if connected != self.connected or error != self.error:
            if connected != self.connected:
                self.since = self._clock()
            self.connected, self.error = connected, error
            self._on_status(self)

    # --- intake --------------------------------------------------------------------------------

    def _on_frame(self, frame: p.Frame) -> None:
        buffer = self._resync_buffer
        if buffer is not None:
            if len(buffer) >= MAX_RESYNC_BACKLOG:
                self.resync_overflows += 1
                if self._events is not None:
                    self._events.close("resync backlog over %d events" % MAX_RESYNC_BACKLOG)
                return
            buffer.append(frame)
            return
        self._take(frame)

    @property
    def pending_commands(self) -> int:
        conn = self._commands
        return conn.pending if conn is not None else 0

    @property
    def resync_backlog(self) -> int:
        return len(self._resync_buffer) if self._resync_buffer is not None else 0

    def _take(self, frame: p.Frame) -> None:
        event = p.parse_event(frame)
        h = event.pick(ev.INTAKE_HEADERS)
        if h.get("Event-Name") == ev.EVENT_HEARTBEAT:
            return
        self.events_in += 1
        self._on_event_taken(h.get("Action") or h.get("Event-Name") or "")
        change = ev.translate(event, self.settings.channel_var_prefix)
        if change is not None:
            self._apply(change)

    def _apply(self, change: ev.Change) -> None:
        updates = self._state.apply(self.name, change, self._wants_updates())
        if updates:
            self._publish(updates)

    # --- around a resync: channel data json_list does not carry ---------------------------------

    def _with_channel_data(self, snapshot: ev.Snapshot, events: EslConnection) -> ev.Snapshot:
        """``uuid_dump`` every participant of the snapshot on the command connection,
        ``resync_concurrency`` at a time, and wait for them at most one command deadline, so
        that the resync's ``add-member`` events carry the channel variables (account, owner)
        clients and consumers need.  Events meanwhile are held (``_resync_buffer``); the
        reader is never blocked.  Dumps not done by then go on and fill the live state."""
        call_ids = [
            part.call_id
            for conf in snapshot.conferences
            for part in conf.participants.values()
            if ev.UUID_RE.fullmatch(part.call_id)
        ]
        self._undumped = dict.fromkeys(call_ids, 0)
        self._dumping = 0
        self._resync_found = {}
        if call_ids:
            self._dumps_settled.clear()
        else:
            self._dumps_settled.set()
        self._dumper = gevent.spawn(self._dump_loop)
        self._dumper.name = "node-%s-uuid-dump" % self.name
        self._dump_wakeup.set()
        waits = [self._dumps_settled, events.closed_event]
        if self._commands is not None:
            # Nothing makes the command connection again before the session runs: if it
            # closes, what is left waits for the command keeper.
            waits.append(self._commands.closed_event)
        gevent.wait(waits, count=1, timeout=self.settings.command_timeout)
        found, self._resync_found = self._resync_found, None
        if len(found) < len(call_ids):
            log.info(
                "node %s: channel data of %d of %d participant(s) in time for the resync",
                self.name,
                len(found),
                len(call_ids),
            )
        return ev.Snapshot(snapshot.conferences, found)

    def _dump_loop(self) -> None:
        """The session's one dumper: takes waiting call ids while the command connection is
        up, and sleeps until there is something to do again."""
        while True:
            conn = self._commands
            if not self._undumped or conn is None or conn.closed:
                self._dump_wakeup.clear()
                self._dump_wakeup.wait()
                continue
            call_id, tries = self._undumped.popitem()
            self._dumping += 1
            self._enrich_pool.spawn(self._dump, conn, call_id, tries)  # waits for a free slot

    def _dump(self, conn: EslConnection, call_id: str, tries: int) -> None:
        """One ``uuid_dump``.  Failed with the command connection: tried again once it is back,
        ``MAX_DUMP_TRIES`` in all; no such channel: nothing to learn."""
        data = None
        try:
            text = conn.api(self._builder.uuid_dump(call_id).text, self.settings.command_timeout)
        except (EslError, ValueError) as exc:
            log.debug("node %s: uuid_dump %s failed: %s", self.name, call_id, exc)
            if isinstance(exc, EslError) and tries + 1 < MAX_DUMP_TRIES:
                self._undumped[call_id] = tries + 1
                self._dump_wakeup.set()
        else:
            data = ev.channel_data_from_uuid_dump(text, self.settings.channel_var_prefix)
        if data is not None:
            if self._resync_found is not None:
                self._resync_found[call_id] = data
            else:
                self._apply(data)
        self._dumping -= 1
        if not self._dumping and not self._undumped:
            self._dumps_settled.set()


__all__ = [
    "NodeSupervisor",
    "NodeSettings",
    "NodeUnavailable",
    "CommandTimeout",
    "ConnectionLost",
]

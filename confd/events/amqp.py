"""Events to an AMQP broker (RabbitMQ): topic exchange ``conference``, publisher confirms.

``offer`` is the hub's sink: it runs on the intake path and only ``put_nowait``s into a
bounded buffer (``events.amqp_buffer``); when the buffer is full the event is dropped and
counted.  One publisher greenlet drains the buffer over py-amqp (the AMQP 0-9-1 client of the
Celery project, plain sockets, so it cooperates with gevent once the entry point has
monkey-patched ``socket``).  Each message is persistent and published as soon as it is
taken from the buffer; the broker's confirms are read meanwhile by a second greenlet on the
same connection.  Publishing does not wait for them: with a durable queue bound, the broker
confirms a persistent message once it is on disk, and awaiting each batch's confirms held
every event behind that write (at 5,000 events/s, p90 100-118 ms against 13-36 ms).  At most
WINDOW messages are unconfirmed at a time; a nack, a confirm overdue by CONFIRM_TIMEOUT or a
lost connection sends every unconfirmed message again after the reconnect (at-least-once, in
order).  Reconnects back off exponentially with jitter.  On stop, the publisher first sends
what is buffered or unconfirmed and waits for its confirms, within the stop's timeout -- also
when the connection is being re-established then, since a reconnect may well succeed within
it; what is left is logged.

A broker that stops answering without closing the connection (a half-open connection: a
dead host, a firewall that drops the flow) sends no error, and while no event is waiting for
a confirm nothing else would notice.  So the connection negotiates AMQP heartbeats
(``events.amqp_heartbeat`` seconds; RabbitMQ sends one every half interval while idle) and
the publisher greenlet calls py-amqp's ``heartbeat_tick`` every TICK: it sends our own
heartbeats (nothing else does on gevent: py-amqp has no background thread) and raises once no
frame has come from the broker for two intervals.  That counts as a lost connection: health
says so, and the unconfirmed messages are sent again after the reconnect.
"""

from __future__ import annotations

import datetime
import logging
import random
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Optional, Tuple
from urllib.parse import unquote, urlsplit

import amqp
import gevent
from amqp.exceptions import ConnectionForced
from gevent.event import Event
from gevent.queue import Empty, Full, Queue

from confd.backoff import backoff_delay
from confd.events.shape import Published

log = logging.getLogger(__name__)

EXCHANGE = "conference"
EXCHANGE_TYPE = "topic"
CONTENT_TYPE = "application/json"
PERSISTENT = 2  # AMQP delivery mode
CONNECT_TIMEOUT = 5.0
IO_TIMEOUT = 10.0  # a write the broker does not take in this long: the broker is gone
CONFIRM_TIMEOUT = 5.0  # the oldest unconfirmed message waits this long at most
POLL = 0.25  # how often the publisher looks at the confirms' state while idle
WINDOW = 1000  # messages published and not confirmed yet, at most
TICK = 0.25  # how often heartbeats are sent and the broker's are checked, at most
CLOSE_GRACE = 0.2  # seconds stop() gives the publisher to end once its connection is closed


class ConfirmFailed(Exception):
    """The broker refused or did not confirm a message: every unconfirmed message is sent
    again after a reconnect."""


class BrokerSilent(Exception):
    """No frame from the broker for two heartbeat intervals: the connection is taken for
    dead (half-open) and replaced."""


def connection_params(url: str) -> Dict[str, Any]:
    """``amqp[s]://user:pass@host:port/vhost`` -> py-amqp ``Connection`` keyword arguments."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ValueError("not an AMQP URL")
    host = parts.hostname or "localhost"
    if ":" in host:
        host = "[%s]" % host
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return {
        "host": "%s:%d" % (host, port),
        "userid": unquote(parts.username) if parts.username else "guest",
        "password": unquote(parts.password) if parts.password else "guest",
        "virtual_host": vhost,
        "ssl": parts.scheme == "amqps",
    }


def _iso(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).isoformat().replace("+00:00", "Z")


class AmqpPublisher:
    def __init__(
        self,
        url: str,
        *,
        buffer: int = 10000,
        metrics: Any = None,
        exchange: str = EXCHANGE,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        clock: Callable[[], float] = time.time,
        rng: Optional[random.Random] = None,
        connect: Optional[Callable[[], Any]] = None,
        heartbeat: int = 0,
        headers: Optional[Callable[[Published], Dict[str, Any]]] = None,
    ) -> None:
        """``heartbeat``: the interval in seconds proposed to the broker (it may choose
        less; the daemon passes ``events.amqp_heartbeat``); 0: no heartbeats.  ``headers``:
        the AMQP headers of an event's message (a cluster's, ``confd.cluster.events``)."""
        self._headers = headers
        self._params = connection_params(url)
        self._heartbeat = heartbeat
        self._next_tick = 0.0  # time.monotonic() of the next heartbeat_tick
        self._exchange = exchange
        self._queue: Queue = Queue(maxsize=buffer)
        self._metrics = metrics
        self._reconnect = (reconnect_min, reconnect_max)
        self._clock = clock
        self._rng = rng or random.Random()
        self._connect_fn = connect or self._connect
        self._stopping = Event()
        self._wake = Event()  # set by stop(): ends a reconnect's backoff pause
        self._draining = False  # stop asked: finish the buffer, then end
        self._greenlet: Optional[gevent.Greenlet] = None
        self._conn: Any = None
        # Published on the current channel and not confirmed yet: (delivery tag, when, event),
        # in publishing order; after a loss, what is sent first on the next channel.
        self._unconfirmed: Deque[Tuple[int, float, Published]] = deque()
        self._acked_early: set = set()  # single acks of tags after the oldest unconfirmed one
        self._sent_tag = 0
        self._room = Event()  # set when confirms free room in the window
        self._failure: Optional[Exception] = None  # a nack, or why the confirm reader ended
        self.connected = False
        self.since = clock()
        self.error: Optional[str] = "not connected yet"
        self.published = 0
        self.dropped = 0
        if metrics is not None:
            metrics.queue_depth.labels("amqp").set_function(lambda: float(self._queue.qsize()))

    # --- the sink (intake path) ----------------------------------------------------------------

    def offer(self, pub: Published) -> None:
        try:
            self._queue.put_nowait(pub)
        except Full:
            self.dropped += 1
            if self._metrics is not None:
                self._metrics.queue_drops.labels("amqp").inc()

    # --- status --------------------------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        """For /v2/health: ``connected``, ``since`` (ISO 8601 of the last change), ``error``,
        ``published`` (confirmed), ``dropped`` (buffer full), ``buffered``."""
        return {
            "connected": self.connected,
            "since": _iso(self.since),
            "error": self.error,
            "published": self.published,
            "dropped": self.dropped,
            "buffered": self._queue.qsize(),
        }

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> gevent.Greenlet:
        self._greenlet = gevent.spawn(self.run)
        self._greenlet.name = "amqp-publisher"
        return self._greenlet

    def stop(self, timeout: float = 2.0) -> None:
        """Deliver what is buffered or unconfirmed and wait for its confirms -- connected
        or still reconnecting, which is then retried at once and at the shortest pace --
        for ``timeout`` seconds at most (and CLOSE_GRACE to close); what is left is logged."""
        deadline = time.monotonic() + timeout
        greenlet = self._greenlet
        alive = greenlet is not None and not greenlet.dead
        if alive and (self._queue.qsize() or self._unconfirmed):
            self._draining = True
            self._room.set()
            self._wake.set()  # a reconnect's backoff pause ends now
            greenlet.join(max(0.0, deadline - time.monotonic()))
        self._stopping.set()
        self._wake.set()
        self._close()
        if greenlet is not None:
            greenlet.join(max(0.0, deadline - time.monotonic()))
            if not greenlet.dead:
                greenlet.kill(block=True, timeout=CLOSE_GRACE)
        left = self._queue.qsize() + len(self._unconfirmed)
        if left:
            log.warning("AMQP: stopped with %d events not confirmed by the broker", left)

    def run(self) -> None:
        attempt = 0
        lo, hi = self._reconnect
        while not self._stopping.is_set():
            try:
                channel = self._open()
                attempt = 0
                self._pump(channel)
                break  # drained, on stop
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                if self._stopping.is_set():
                    break
                self._lost(exc)
            delay = backoff_delay(attempt, lo, hi, self._rng)
            if self._draining:
                delay = min(delay, lo)  # stopping: the time left is short
            attempt += 1
            # No greenlet switch between the check above and this wait, so stop()'s
            # wake-up cannot fall in between and be lost.
            self._wake.clear()
            self._wake.wait(delay)
        self._close()
        self._set(False, "stopped")

    # --- internals -----------------------------------------------------------------------------

    def _connect(self) -> Any:
        return amqp.Connection(
            confirm_publish=False,  # confirms are read by _read_confirms, not awaited
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=IO_TIMEOUT,
            write_timeout=IO_TIMEOUT,
            heartbeat=self._heartbeat,
            **self._params,
        )

    def _open(self) -> Any:
        conn = self._connect_fn()
        self._conn = conn
        conn.connect()
        # py-amqp's read/write timeouts are socket options, which gevent's non-blocking
        # sockets do not obey: gevent's own timeout bounds each write (and each read of the
        # confirm reader, which then reads again).
        conn.transport.sock.settimeout(IO_TIMEOUT)
        channel = conn.channel()
        channel.exchange_declare(self._exchange, EXCHANGE_TYPE, durable=True, auto_delete=False)
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        self._next_tick = 0.0
        self._set(True, None)
        log.info(
            "AMQP: connected to %s (heartbeat %ss)",
            self._params["host"],
            conn.heartbeat or "off",
        )
        return channel

    def _pump(self, channel: Any) -> None:
        """Publish on ``channel`` until it fails: first what the last channel left
        unconfirmed, then the buffer.  A second greenlet reads the confirms."""
        resend = deque(pub for _, _, pub in self._unconfirmed)
        # Taken from the buffer and not yet among the unconfirmed: a publish that fails
        # half-way must not lose it (it goes first on the next channel).
        taken: Optional[Published] = None
        self._unconfirmed.clear()
        self._acked_early.clear()
        self._sent_tag = 0  # delivery tags count from 1 on a channel in confirm mode
        self._failure = None
        reader = gevent.spawn(self._read_confirms, self._conn)
        reader.name = "amqp-confirms"
        try:
            while resend:
                self._publish(channel, resend[0])
                resend.popleft()
            while not self._stopping.is_set():
                self._check()
                if self._draining and not self._unconfirmed and self._queue.empty():
                    return
                if len(self._unconfirmed) >= WINDOW or (self._draining and self._queue.empty()):
                    self._room.clear()
                    self._room.wait(POLL)
                    continue
                try:
                    taken = self._queue.get(timeout=POLL)
                except Empty:
                    continue
                self._publish(channel, taken)
                taken = None
        finally:
            reader.kill(block=False)
            if taken is not None:
                resend.append(taken)
            # Not sent on this channel: after its unconfirmed messages, on the next one.
            self._unconfirmed.extend((0, 0.0, pub) for pub in resend)

    def _publish(self, channel: Any, pub: Published) -> None:
        if self._headers is None:
            msg = amqp.Message(pub.body(), content_type=CONTENT_TYPE, delivery_mode=PERSISTENT)
        else:
            msg = amqp.Message(
                pub.body(),
                content_type=CONTENT_TYPE,
                delivery_mode=PERSISTENT,
                application_headers=self._headers(pub),
            )
        channel.basic_publish(msg, exchange=self._exchange, routing_key=pub.routing_key)
        self._sent_tag += 1
        self._unconfirmed.append((self._sent_tag, time.monotonic(), pub))

    def _check(self) -> None:
        """Raise when the channel must be given up: a nack, a dead confirm reader, a
        message unconfirmed for CONFIRM_TIMEOUT, or a broker silent for two heartbeats."""
        if self._failure is not None:
            raise self._failure
        now = time.monotonic()
        if self._unconfirmed and now - self._unconfirmed[0][1] > CONFIRM_TIMEOUT:
            raise ConfirmFailed("no confirm within %.0fs" % CONFIRM_TIMEOUT)
        if now >= self._next_tick:
            self._next_tick = now + TICK
            self._tick_heartbeat()

    def _tick_heartbeat(self) -> None:
        """Send a heartbeat when one is due; raise BrokerSilent when the broker's are
        overdue.  Runs in the publisher greenlet, the connection's only writer."""
        conn = self._conn
        if conn is None:  # closed by stop()
            return
        try:
            conn.heartbeat_tick()
        except ConnectionForced:
            interval = conn.heartbeat
            raise BrokerSilent(
                "no heartbeat from the broker for %ss (interval %ss)" % (2 * interval, interval)
            ) from None

    def _read_confirms(self, conn: Any) -> None:
        """The confirm reader: the broker's frames, dispatched to _on_ack / _on_nack."""
        try:
            while True:
                try:
                    conn.drain_events()
                except TimeoutError:
                    continue  # nothing for IO_TIMEOUT: the publisher's deadline decides
        except Exception as exc:  # noqa: BLE001 - the publisher reconnects (a kill passes)
            self._failure = exc
            self._room.set()

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        unconfirmed = self._unconfirmed
        if not unconfirmed:
            return
        if multiple:
            self._acked_early = {t for t in self._acked_early if t > delivery_tag}
            last = delivery_tag
        else:
            self._acked_early.add(delivery_tag)
            last = 0
        confirmed = 0
        while unconfirmed:
            tag = unconfirmed[0][0]
            if tag <= last:
                pass
            elif tag in self._acked_early:
                self._acked_early.discard(tag)
            else:
                break
            unconfirmed.popleft()
            confirmed += 1
        if confirmed:
            self.published += confirmed
            if self._metrics is not None:
                self._metrics.amqp_published.inc(confirmed)
            self._room.set()

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._failure = ConfirmFailed("the broker refused (nack) message %d" % delivery_tag)
        self._room.set()

    def _lost(self, exc: Exception) -> None:
        reason = "%s: %s" % (type(exc).__name__, exc) if str(exc) else type(exc).__name__
        if self.connected:
            log.warning("AMQP: connection lost: %s", reason)
        elif reason != self.error:
            log.warning("AMQP: cannot connect: %s", reason)
        self._close()
        self._set(False, reason)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.collect()  # drop the socket without a closing handshake
        except Exception:  # noqa: BLE001
            pass

    def _set(self, connected: bool, error: Optional[str]) -> None:
        if connected != self.connected:
            self.since = self._clock()
            if self._metrics is not None:
                self._metrics.amqp_connected.set(1 if connected else 0)
        self.connected, self.error = connected, error

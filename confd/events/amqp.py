"""Events to an AMQP broker (RabbitMQ): topic exchange ``conference``, publisher confirms.

``offer`` is the hub's sink: it runs on the intake path and only ``put_nowait``s into a
bounded buffer (``events.amqp_buffer``); when the buffer is full the event is dropped and
counted.  One publisher greenlet drains the buffer over py-amqp (the AMQP 0-9-1 client of the
Celery project, plain sockets, so it cooperates with gevent once the entry point has
monkey-patched ``socket``).  Each message is persistent; the publisher sends a batch (up to
BATCH messages) and waits for the broker's confirms of all of it before the next; a batch whose
publish or confirm fails is kept and sent again after the reconnect (at-least-once).
Reconnects back off exponentially with jitter.
"""

from __future__ import annotations

import datetime
import logging
import random
import time
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import unquote, urlsplit

import amqp
import gevent
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
IO_TIMEOUT = 10.0  # socket reads/writes: a broker that stops reading is treated as gone
CONFIRM_TIMEOUT = 5.0
IDLE_POLL = 1.0
BATCH = 500  # messages published before waiting for their confirms


class ConfirmFailed(Exception):
    """The broker did not confirm a batch: it is sent again after a reconnect."""


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
    ) -> None:
        self._params = connection_params(url)
        self._exchange = exchange
        self._queue: Queue = Queue(maxsize=buffer)
        self._metrics = metrics
        self._reconnect = (reconnect_min, reconnect_max)
        self._clock = clock
        self._rng = rng or random.Random()
        self._connect_fn = connect or self._connect
        self._stopping = Event()
        self._greenlet: Optional[gevent.Greenlet] = None
        self._conn: Any = None
        self._sent_tag = self._acked_tag = 0
        self._acked_out_of_order: set = set()
        self._nacked = False
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
        self._stopping.set()
        self._close()
        if self._greenlet is not None:
            self._greenlet.join(timeout)
            if not self._greenlet.dead:
                self._greenlet.kill(block=True, timeout=timeout)

    def run(self) -> None:
        attempt = 0
        # Published but not confirmed yet: sent again after a reconnect (at-least-once).
        batch: List[Published] = []
        while not self._stopping.is_set():
            try:
                channel = self._open()
                attempt = 0
                while not self._stopping.is_set():
                    if not batch:
                        try:
                            batch.append(self._queue.get(timeout=IDLE_POLL))
                        except Empty:
                            continue
                        while len(batch) < BATCH:
                            try:
                                batch.append(self._queue.get_nowait())
                            except Empty:
                                break
                    self._publish_batch(channel, batch)
                    self.published += len(batch)
                    if self._metrics is not None:
                        self._metrics.amqp_published.inc(len(batch))
                    batch = []
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                if self._stopping.is_set():
                    break
                self._lost(exc)
            delay = backoff_delay(attempt, self._reconnect[0], self._reconnect[1], self._rng)
            attempt += 1
            self._stopping.wait(delay)
        self._close()
        self._set(False, "stopped")

    # --- internals -----------------------------------------------------------------------------

    def _connect(self) -> Any:
        return amqp.Connection(
            confirm_publish=False,  # confirms are collected per batch in _publish_batch
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=IO_TIMEOUT,
            write_timeout=IO_TIMEOUT,
            heartbeat=0,
            **self._params,
        )

    def _open(self) -> Any:
        conn = self._connect_fn()
        self._conn = conn
        conn.connect()
        channel = conn.channel()
        channel.exchange_declare(self._exchange, EXCHANGE_TYPE, durable=True, auto_delete=False)
        channel.confirm_select()
        # Delivery tags count from 1 on a channel in confirm mode.
        self._sent_tag, self._acked_tag, self._acked_out_of_order = 0, 0, set()
        self._nacked = False
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        self._set(True, None)
        log.info("AMQP: connected to %s", self._params["host"])
        return channel

    def _publish_batch(self, channel: Any, batch: List[Published]) -> None:
        """Publish every message of ``batch``, then wait until the broker has confirmed them
        all: one round trip per batch instead of one per message.  Raises on a nack, a
        timeout or a lost connection; the caller sends the batch again after reconnecting."""
        for pub in batch:
            msg = amqp.Message(pub.body(), content_type=CONTENT_TYPE, delivery_mode=PERSISTENT)
            channel.basic_publish(msg, exchange=self._exchange, routing_key=pub.routing_key)
            self._sent_tag += 1
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while self._acked_tag < self._sent_tag:
            if self._nacked:
                raise ConfirmFailed("the broker refused (nack) a message")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConfirmFailed("no confirm within %.0fs" % CONFIRM_TIMEOUT)
            try:
                self._conn.drain_events(timeout=remaining)
            except TimeoutError:
                continue

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._acked_tag = max(self._acked_tag, delivery_tag)
        else:
            self._acked_out_of_order.add(delivery_tag)
        while self._acked_tag + 1 in self._acked_out_of_order:
            self._acked_tag += 1
            self._acked_out_of_order.discard(self._acked_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._nacked = True

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

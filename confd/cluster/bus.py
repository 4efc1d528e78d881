"""RabbitMQ between instances: request/reply, and the queue of events this instance's
websocket clients subscribed to (cluster.md, items 3 and 4).

Two AMQP connections, so that no two greenlets ever read one socket:

* the *consumer* connection, read by one greenlet only, which also makes every declaration
  and binding on it (a binding asked by another greenlet waits for that greenlet's next pass,
  at most POLL later).  It holds this instance's two exclusive queues (deleted by the broker
  when the connection ends): ``<cluster>.rpc.<instance>``, bound to the direct exchange
  ``<cluster>.rpc`` under ``all`` and ``instance.<instance>`` (requests, and the replies to
  this instance's own requests), and ``<cluster>.events.<instance>``, bound to the topic
  exchange ``conference`` by the websocket clients' bindings;
* the *publisher* connection, written by any greenlet under one lock (requests, replies),
  read by a greenlet of its own for what the broker returns: a request to an instance whose
  queue is gone comes back at once (``mandatory``) instead of waiting for its deadline.

A request carries an AMQP ``expiration`` equal to its deadline: the broker drops one that
waited longer, so an owner never acts on a request its asker gave up.  Losing either
connection fails every request in flight, and both are made again with backoff; the events
queue is declared again with every binding, and ``connected_at`` moves (events older than it
were published while nobody here could have wanted them: ``confd.cluster.events``).
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

import amqp
import gevent
import orjson
from amqp.exceptions import ConnectionForced
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore
from gevent.pool import Pool

from confd.backoff import backoff_delay
from confd.cluster import names
from confd.cluster.claims import iso
from confd.events.amqp import EXCHANGE_TYPE, connection_params

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
IO_TIMEOUT = 10.0
POLL = 0.05  # the consumer's read wakes this often to make bindings asked meanwhile
TICK = 0.25  # heartbeats sent and checked this often
RECONNECT_MIN = 0.25
RECONNECT_MAX = 5.0
HANDLERS = 128  # requests handled at once; more are answered "busy"
BIND_TIMEOUT = 5.0
CONTENT_TYPE = "application/json"
TYPE_REQUEST = "request"
TYPE_REPLY = "reply"


class BusUnavailable(Exception):
    """Not connected to the broker, or the connection was lost while waiting."""


class NoAnswer(Exception):
    """The instance asked did not answer within the deadline (or is gone)."""


Handler = Callable[[Dict[str, Any]], Dict[str, Any]]
EventSink = Callable[[Any], None]  # an amqp.Message from the events queue


class Bus:
    def __init__(
        self,
        url: str,
        *,
        cluster: str,
        instance: str,
        handle: Handler,
        on_event: EventSink,
        on_lost: Callable[[], None] = lambda: None,
        heartbeat: int = 10,
        rng: Optional[random.Random] = None,
    ) -> None:
        self._params = connection_params(url)
        self.cluster = cluster
        self.instance = instance
        self._handle = handle
        self._event_sink = on_event
        self._on_lost = on_lost
        self._heartbeat = heartbeat
        self._rng = rng or random.Random()
        self.exchange = names.rpc_exchange(cluster)
        self.rpc_queue = names.rpc_queue(cluster, instance)
        self.events_queue = names.events_queue(cluster, instance)
        self._consumer: Any = None
        self._publisher: Any = None
        self._pub_channel: Any = None
        self._write = Semaphore()
        self._ids = itertools.count(1)
        self._prefix = "%s-%x-" % (instance, random.SystemRandom().getrandbits(32))
        # correlation id -> (AsyncResult or a gather's collector, expected answers)
        self._waiting: Dict[str, Any] = {}
        self._patterns: Dict[str, int] = {}  # events binding pattern -> subscriptions using it
        self._bound: Set[str] = set()  # what the events queue is bound to now
        self._asked: List[Tuple[str, str, Optional[AsyncResult]]] = []  # (op, pattern, done)
        self._pool = Pool(HANDLERS)
        self._greenlet: Optional[gevent.Greenlet] = None
        self._stopping = Event()
        self.connected = False
        self.connected_at = 0.0
        self.since = time.time()
        self.error: Optional[str] = "not connected yet"
        self.requests = 0
        self.timeouts = 0

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> gevent.Greenlet:
        self._greenlet = gevent.spawn(self._run)
        self._greenlet.name = "cluster-bus"
        return self._greenlet

    def stop(self, timeout: float = 1.0) -> None:
        self._stopping.set()
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=timeout)
        self._pool.kill(block=False)
        self._teardown("stopping")

    def status(self) -> Dict[str, Any]:
        return {"connected": self.connected, "since": iso(self.since), "error": self.error}

    # --- requests ----------------------------------------------------------------------------

    def request(self, route: str, body: Dict[str, Any], timeout: float) -> Dict[str, Any]:
        """Send ``body`` to ``route`` (``names.instance_route(x)``) and wait for its reply."""
        done = AsyncResult()
        cid = self._send(route, body, timeout, done)
        try:
            return done.get(timeout=timeout)
        except gevent.Timeout:
            self.timeouts += 1
            raise NoAnswer("no answer within %.2fs" % timeout) from None
        finally:
            self._waiting.pop(cid, None)

    def gather(
        self, body: Dict[str, Any], expect: Set[str], timeout: float
    ) -> Dict[str, Dict[str, Any]]:
        """Ask every instance; the replies by instance, once every instance in ``expect`` has
        answered or ``timeout`` has passed (the missing ones are simply absent)."""
        replies: Dict[str, Dict[str, Any]] = {}
        if not expect:
            return replies
        done = AsyncResult()
        collector = (replies, set(expect), done)
        cid = self._send(names.ROUTE_ALL, body, timeout, collector)
        try:
            done.get(timeout=timeout)
        except gevent.Timeout:
            self.timeouts += 1
        except NoAnswer:
            pass
        finally:
            self._waiting.pop(cid, None)
        return replies

    def _send(self, route: str, body: Dict[str, Any], timeout: float, waiter: Any) -> str:
        if not self.connected or self._pub_channel is None:
            raise BusUnavailable(self.error or "not connected")
        cid = self._prefix + str(next(self._ids))
        self._waiting[cid] = waiter
        msg = amqp.Message(
            orjson.dumps(body),
            content_type=CONTENT_TYPE,
            correlation_id=cid,
            reply_to=self.rpc_queue,
            type=TYPE_REQUEST,
            expiration=str(max(1, int(timeout * 1000))),
        )
        self.requests += 1
        try:
            with self._write:
                self._pub_channel.basic_publish(
                    msg, exchange=self.exchange, routing_key=route, mandatory=True
                )
        except Exception as exc:  # noqa: BLE001 - the connection is failing: reconnect
            self._waiting.pop(cid, None)
            raise BusUnavailable("publish failed: %s" % exc) from None
        return cid

    def _reply(self, reply_to: str, cid: str, body: Dict[str, Any]) -> None:
        ch = self._pub_channel
        if ch is None:
            return
        msg = amqp.Message(
            orjson.dumps(body), content_type=CONTENT_TYPE, correlation_id=cid, type=TYPE_REPLY
        )
        try:
            with self._write:
                ch.basic_publish(msg, exchange="", routing_key=reply_to)
        except Exception as exc:  # noqa: BLE001
            log.warning("cluster bus: reply not sent: %s", exc)

    # --- events bindings ---------------------------------------------------------------------

    def bind(self, patterns: Iterable[str], timeout: float = BIND_TIMEOUT) -> None:
        """Count a subscription on each pattern; returns once the events queue is bound to
        each (raises ``BusUnavailable`` when it cannot be)."""
        waits = []
        for p in patterns:
            self._patterns[p] = self._patterns.get(p, 0) + 1
            if p not in self._bound:
                done = AsyncResult()
                self._asked.append(("bind", p, done))
                waits.append((p, done))
        if waits and not self.connected:
            self.unbind([p for p, _ in waits])
            raise BusUnavailable("not connected to the broker: %s" % (self.error or ""))
        try:
            for _pattern, done in waits:
                done.get(timeout=timeout)
        except BaseException as exc:
            self.unbind([p for p, _ in waits])
            if isinstance(exc, gevent.Timeout):
                raise BusUnavailable("binding not made within %.0fs" % timeout) from None
            if isinstance(exc, BusUnavailable):
                raise
            raise BusUnavailable(str(exc)) from None

    def unbind(self, patterns: Iterable[str]) -> None:
        """Uncount a subscription on each pattern; unbound when none uses it (not waited)."""
        for p in patterns:
            n = self._patterns.get(p, 0) - 1
            if n > 0:
                self._patterns[p] = n
                continue
            self._patterns.pop(p, None)
            self._asked.append(("unbind", p, None))

    @property
    def patterns(self) -> List[str]:
        return sorted(self._patterns)

    # --- the connections ---------------------------------------------------------------------

    def _connect(self) -> Any:
        conn = amqp.Connection(
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=IO_TIMEOUT,
            write_timeout=IO_TIMEOUT,
            heartbeat=self._heartbeat,
            **self._params,
        )
        conn.connect()
        return conn

    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                self._open()
                attempt = 0
                self._consume()
            except Exception as exc:  # noqa: BLE001 - any failure: both connections again
                if self._stopping.is_set():
                    break
                self._teardown("%s: %s" % (type(exc).__name__, str(exc) or "no detail"))
            delay = backoff_delay(attempt, RECONNECT_MIN, RECONNECT_MAX, self._rng)
            attempt += 1
            self._stopping.wait(delay)

    def _open(self) -> None:
        with gevent.Timeout(CONNECT_TIMEOUT * 2, BusUnavailable("connect timed out")):
            consumer = self._connect()
            self._consumer = consumer
            consumer.transport.sock.settimeout(POLL)
            ch = consumer.channel()
            ch.exchange_declare(self.exchange, "direct", durable=False, auto_delete=False)
            ch.exchange_declare(
                names.EVENTS_EXCHANGE, EXCHANGE_TYPE, durable=True, auto_delete=False
            )
            ch.queue_declare(self.rpc_queue, exclusive=True, auto_delete=True)
            ch.queue_bind(self.rpc_queue, self.exchange, names.ROUTE_ALL)
            ch.queue_bind(self.rpc_queue, self.exchange, names.instance_route(self.instance))
            ch.queue_declare(self.events_queue, exclusive=True, auto_delete=True)
            self._bound = set()
            for p in list(self._patterns):
                ch.queue_bind(self.events_queue, names.EVENTS_EXCHANGE, p)
                self._bound.add(p)
            ch.basic_consume(self.rpc_queue, callback=self._on_rpc, no_ack=True)
            ch.basic_consume(self.events_queue, callback=self._on_event, no_ack=True)
            self._channel = ch
            publisher = self._connect()
            self._publisher = publisher
            publisher.transport.sock.settimeout(IO_TIMEOUT)
            pch = publisher.channel()
            pch.events["basic_return"].add(self._returned)
            self._pub_channel = pch
        self._pub_error = "ended"
        self._pub_reader = gevent.spawn(self._read_publisher, publisher)
        self._pub_reader.name = "cluster-bus-returns"
        self.connected_at = time.time()
        self._set(True, None)
        log.info("cluster bus: connected to %s", self._params["host"])

    def _consume(self) -> None:
        next_tick = 0.0
        conn = self._consumer
        while not self._stopping.is_set():
            try:
                conn.drain_events()
            except TimeoutError:
                pass
            if self._pub_reader.dead:
                raise BusUnavailable("publisher connection lost: %s" % self._pub_error)
            while self._asked:
                op, pattern, done = self._asked.pop(0)
                self._make(op, pattern, done)
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + TICK
                try:
                    conn.heartbeat_tick()
                except ConnectionForced:
                    raise BusUnavailable("no heartbeat from the broker") from None

    def _make(self, op: str, pattern: str, done: Optional[AsyncResult]) -> None:
        ch = self._channel
        if op == "bind":
            if pattern in self._patterns and pattern not in self._bound:
                ch.queue_bind(self.events_queue, names.EVENTS_EXCHANGE, pattern)
                self._bound.add(pattern)
            if done is not None:
                done.set(True)
        elif pattern not in self._patterns and pattern in self._bound:
            ch.queue_unbind(self.events_queue, names.EVENTS_EXCHANGE, pattern)
            self._bound.discard(pattern)

    def _read_publisher(self, conn: Any) -> None:
        """The publisher connection's reader: returned requests, and heartbeats.  It ends on
        the connection's loss (its error kept for the consumer loop, which then reconnects)."""
        next_tick = 0.0
        try:
            conn.transport.sock.settimeout(TICK)
            while True:
                try:
                    conn.drain_events()
                except TimeoutError:
                    pass
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TICK
                    with self._write:
                        conn.heartbeat_tick()
        except Exception as exc:  # noqa: BLE001 - a lost connection: the consumer loop sees it
            self._pub_error = "%s: %s" % (type(exc).__name__, str(exc) or "no detail")

    def _teardown(self, why: str) -> None:
        was = self.connected
        self._set(False, why)
        for conn in (self._consumer, self._publisher):
            if conn is not None:
                try:
                    conn.collect()
                except Exception:  # noqa: BLE001
                    pass
        reader = getattr(self, "_pub_reader", None)
        if reader is not None:
            reader.kill(block=False)
        self._consumer = self._publisher = self._pub_channel = None
        self._bound = set()
        # Every request in flight fails now, not at its deadline.
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            done = waiter[2] if isinstance(waiter, tuple) else waiter
            done.set_exception(BusUnavailable(why))
        asked, self._asked = self._asked, []
        for _, _, done in asked:
            if done is not None:
                done.set_exception(BusUnavailable(why))
        if was and self._stopping.is_set():
            log.info("cluster bus: closed (%s)", why)
        elif was:
            log.warning("cluster bus: connection lost: %s", why)
        if was:
            try:
                self._on_lost()
            except Exception:  # noqa: BLE001
                log.exception("cluster bus: on_lost failed")
        elif not self._stopping.is_set():
            log.debug("cluster bus: cannot connect: %s", why)

    def _set(self, connected: bool, error: Optional[str]) -> None:
        if connected != self.connected:
            self.since = time.time()
        self.connected, self.error = connected, error

    # --- incoming ----------------------------------------------------------------------------

    def _on_rpc(self, msg: Any) -> None:
        props = msg.properties
        kind = props.get("type")
        cid = props.get("correlation_id")
        if kind == TYPE_REPLY:
            waiter = self._waiting.get(cid)
            if waiter is None:
                return  # late: its asker gave up
            try:
                body = orjson.loads(msg.body)
            except orjson.JSONDecodeError:
                return
            if isinstance(waiter, tuple):
                replies, expect, done = waiter
                who = body.get("instance")
                if isinstance(who, str):
                    replies[who] = body
                    expect.discard(who)
                    if not expect:
                        done.set(True)
            else:
                waiter.set(body)
            return
        reply_to = props.get("reply_to")
        if kind != TYPE_REQUEST or not reply_to or not cid:
            return
        if self._pool.full():
            self._reply(reply_to, cid, {"instance": self.instance, "busy": True})
            return
        self._pool.spawn(self._answer, msg.body, reply_to, cid)

    def _answer(self, raw: bytes, reply_to: str, cid: str) -> None:
        try:
            body = orjson.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
            if body.get("from") == self.instance:
                return  # a request to every instance reaches its asker too: it knows its own
            answer = self._handle(body)
        except Exception as exc:  # noqa: BLE001 - a peer's bad request must not end us
            log.warning("cluster bus: request not answered: %s", exc)
            answer = {"instance": self.instance, "error": "bad request"}
        self._reply(reply_to, cid, answer)

    def _returned(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        """A request nobody could take (its instance's queue is gone): fail it now."""
        cid = message.properties.get("correlation_id")
        waiter = self._waiting.get(cid)
        if waiter is None:
            return
        if isinstance(waiter, tuple):
            return  # a gather: the others may still answer; its deadline ends it
        waiter.set_exception(NoAnswer("no instance took it (%s)" % routing_key))

    def _on_event(self, msg: Any) -> None:
        try:
            self._event_sink(msg)
        except Exception:  # noqa: BLE001 - one bad message must not end the consumer
            log.exception("cluster bus: event not taken")

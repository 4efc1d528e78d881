"""Websocket fan-out: hub events to the connections subscribed to them, in few writes.

Cost model.  One event may go to every connected client: at 5,000 events/s and 50 clients that
is 250,000 frames a second, on one core that also takes in the ESL events.  So nothing here is
done per frame that can be done per event or per write:

- The hub hands each event to ``Fanout.offer`` (a hub sink, on the intake path): one list
  append and, for the first event of a round, one wake-up of the dispatcher greenlet.
- The dispatcher takes every event waiting in one round.  For each event it looks up the
  route groups of its conference (an index by conference id, plus the groups of ``*``
  bindings; connections with the same subscription share a group), resolves the conference's
  account once (``OwnershipResolver``, cached; the only step that may wait on the database,
  which is why it is here and not on the intake path), and encodes the event's frame once per
  binding.  A group's frames of the round are joined once into one chunk, put in the
  ``Outbox`` of each of its connections (a connection with several subscriptions gets each
  frame as it is routed instead, so that its frames keep the events' order).
- Then it flushes every outbox it touched: one non-blocking ``send`` of all of that
  connection's waiting frames.  Whatever the socket does not take right away is left to a
  writer greenlet of that connection, which waits for the socket, bounded by a write timeout,
  while the dispatcher goes on with the others.
- After a round, the next one waits as long as that round took, up to ``flush_interval``: a
  steady stream to many clients is written in batches (one send per connection per round
  instead of one per event), while cheap rounds and an event after a quiet spell go out at
  once.  The interval bounds the latency this adds.

Ownership (``confd.conferences.ownership``, one rule with REST): the hub says which account
the conference's members claim at each event; the resolver adds its document.  A new
conference's conference-level events come before any member has said whose it is (an ad-hoc
conference's ``conference-create``: ``Published.owner_pending``): for subscriptions scoped to an
account they are held, per conference, until an event of that conference decides (its first
member, or a document found), then delivered in order before that event; admin subscriptions
get them at once.  Held events are bounded in age (``OWNER_WAIT``: then nobody's) and number
(``MAX_HELD``: counted drops).

Bounds: a connection whose outbox holds more than its bound of frames is dropped (the client
did not keep up: ``Member.overflowed``), and so is every connection when events wait for the
dispatcher beyond the backlog bound (the dispatcher itself fell behind, say on a stalled
database).  Either way intake never waits and nothing is buffered without limit.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

import gevent
import orjson
from gevent.event import Event
from wsproto.frame_protocol import FrameProtocol

from confd.events import shape
from confd.events.ownership import PENDING, OwnershipResolver

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.002  # seconds between two rounds of writes, at most the latency added
WRITE_TIMEOUT = 10.0  # a socket that takes nothing for this long: the client is gone
WRITE_CHUNK = 256 * 1024  # the writer greenlet's sends, at most (a slow client's backlog)

# A new conference's conference-level events wait this long (seconds) for its first member to
# say who owns it (an ad-hoc conference's conference-create comes before any member), and at
# most this many wait at once; past either they go to admin subscriptions only.
OWNER_WAIT = 5.0
MAX_HELD = 10000
HELD_QUEUE = "websocket_unowned"  # confd_queue_drops label of held events dropped at MAX_HELD

DROP_TOO_SLOW = "too slow"
DROP_BEHIND = "confd behind"

_UNRESOLVED = object()


def socket_error_text(exc: OSError) -> str:
    """What a socket error says, for a log line or a connection's end reason."""
    return exc.strerror or type(exc).__name__


class Outbox:
    """One connection's frames waiting to be written, and the writing of them.

    What waits is a list of chunks: a chunk is one or more whole websocket frames (a round's
    events for one subscription come as one chunk, joined once and shared by every connection
    with that subscription).  Only the first chunk may be partly written (``_offset`` bytes of
    it).  ``waiting`` counts frames, against ``bound``.  ``flush`` never blocks: what the socket
    does not take goes to a writer greenlet.  ``on_error(reason)`` is called (once) when the
    socket fails or takes nothing for ``write_timeout`` seconds."""

    def __init__(
        self,
        sock: Any,
        bound: int,
        name: str = "",
        on_error: Callable[[str], None] = lambda reason: None,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        if bound < 1:
            raise ValueError("bound must be >= 1")
        self.sock = sock
        self.bound = bound
        self.name = name
        self.write_timeout = write_timeout
        self._on_error = on_error
        self._chunks: List[bytes] = []
        self._counts: List[int] = []  # frames in each chunk
        self.waiting = 0  # frames in all chunks
        self._offset = 0
        self._writer: Optional[gevent.Greenlet] = None
        self._drained = Event()
        self._drained.set()
        self.failed = False
        self.sealed = False  # the close frame is queued: nothing more after it
        self.touched = False  # the dispatcher put frames in this round (its own bookkeeping)

    def __len__(self) -> int:
        return self.waiting

    @property
    def over_bound(self) -> bool:
        return self.waiting > self.bound

    def put(self, chunk: bytes, frames: int = 1) -> None:
        """Queue ``chunk`` (``frames`` whole frames); written at the next ``flush``."""
        if not self.sealed and not self.failed:
            self._chunks.append(chunk)
            self._counts.append(frames)
            self.waiting += frames
            self._drained.clear()

    def seal(self, last: bytes) -> None:
        """Queue the last frame (the close frame): nothing put after it is written."""
        self.put(last)
        self.sealed = True

    def discard(self) -> int:
        """Forget the frames not yet begun (a dropped client is not sent its stale backlog);
        a chunk partly written stays, or the stream would break mid-frame."""
        keep = 1 if self._offset else 0
        dropped = self.waiting - sum(self._counts[:keep])
        del self._chunks[keep:]
        del self._counts[keep:]
        self.waiting -= dropped
        if not self._chunks:
            self._drained.set()
        return dropped

    def flush(self) -> None:
        """Write what is waiting without blocking; the rest goes to the writer greenlet."""
        chunks = self._chunks
        if self._writer is not None or not chunks:
            return
        if self.failed:
            self._clear()
            return
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self._offset:
            data = memoryview(data)[self._offset :]
        try:
            n = self.sock.send(data, 0, 0.0)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._fail("write failed: %s" % socket_error_text(exc))
            return
        if n == len(data):
            self._clear()
            return
        self._consumed(n)
        self._drained.clear()
        self._writer = gevent.spawn(self._write_rest)
        self._writer.name = "ws-writer-%s" % self.name

    def wait_drained(self, timeout: Optional[float]) -> bool:
        """Until every waiting frame is written (True) or ``timeout`` (False)."""
        return self._drained.wait(timeout)

    def stop(self) -> None:
        """The connection is over: stop writing."""
        self.failed = True
        self._clear()
        if self._writer is not None and self._writer is not gevent.getcurrent():
            self._writer.kill(block=False)

    def _clear(self) -> None:
        self._chunks.clear()
        self._counts.clear()
        self.waiting = 0
        self._offset = 0
        self._drained.set()

    def _consumed(self, n: int) -> None:
        """``n`` more bytes of the waiting chunks were written."""
        n += self._offset
        chunks, counts = self._chunks, self._counts
        i = done = 0
        while i < len(chunks) and n >= len(chunks[i]):
            n -= len(chunks[i])
            done += counts[i]
            i += 1
        del chunks[:i]
        del counts[:i]
        self.waiting -= done
        self._offset = n

    def _write_rest(self) -> None:
        try:
            while self._chunks and not self.failed:
                size, parts = 0, []
                for chunk in self._chunks:
                    parts.append(chunk)
                    size += len(chunk)
                    if size >= WRITE_CHUNK:
                        break
                data = memoryview(b"".join(parts))[self._offset :]
                with gevent.Timeout(self.write_timeout):
                    n = self.sock.send(data)
                self._consumed(n)
        except gevent.Timeout:
            self._fail("client took nothing for %gs" % self.write_timeout)
        except OSError as exc:
            self._fail("write failed: %s" % socket_error_text(exc))
        finally:
            self._writer = None
            if not self._chunks:
                self._drained.set()

    def _fail(self, reason: str) -> None:
        if not self.failed:
            self.failed = True
            self._clear()
            try:
                self._on_error(reason)
            except Exception:  # noqa: BLE001
                log.exception("websocket %s: on_error failed", self.name)


@dataclass(frozen=True)
class Route:
    """One subscription of a connection: which events it takes, and for which binding."""

    binding: str  # the binding's text: the frame says which subscription it answers
    call_id: Optional[str]  # None = any call
    account_id: str
    sees_all: bool  # an admin account's subscription: every conference is its own


class Member(Protocol):
    """A connection, as the fan-out sees it (``WebsocketSession``)."""

    outbox: Outbox

    def routes(self) -> List[Tuple[Optional[str], Route]]:
        """(conference id or None for any, route) for each of its subscriptions."""

    def overflowed(self, reason: str) -> None:
        """Dropped by the fan-out: tell the client why and close (must not block)."""


# Server frames: never masked, no extension ever negotiated.  send_data keeps no state
# between calls for whole (fin) messages, so one encoder serves every frame.
_ENCODER = FrameProtocol(client=False, extensions=[])


def event_frame_text(binding: str, pub: shape.Published) -> bytes:
    """The event message of events.md for a subscription (``binding``), as UTF-8 JSON."""
    key = orjson.dumps(binding)
    return b"".join(
        (
            b'{"action":"event","subscribed_key":',
            key,
            b',"subscription_key":',
            key,
            b',"name":',
            orjson.dumps(pub.name),
            b',"routing_key":',
            orjson.dumps(pub.routing_key),
            b',"data":',
            pub.body(),
            b"}",
        )
    )


def encoded_event_frame(binding: str, pub: shape.Published) -> bytes:
    """The websocket frame of an event for a binding, encoded once and shared by every
    connection with that binding (server frames are the same bytes on every connection)."""
    cache = pub.frames
    data = cache.get(binding)
    if data is None:
        # wsproto frames text (str) as a text frame; bytes would be a binary one.
        text = event_frame_text(binding, pub).decode("utf-8")
        data = cache[binding] = bytes(_ENCODER.send_data(text, fin=True))
    return data


class _Group:
    """The connections with one same subscription (binding and account): an event is matched
    once per group.  ``solo`` connections have no other subscription: a round's frames for the
    group are joined once into one chunk that each of them is given.  ``mixed`` connections
    have other subscriptions too: they get each frame as it is routed, so that the frames of
    all their subscriptions keep the events' order."""

    __slots__ = ("call_id", "account_id", "sees_all", "binding", "solo", "mixed", "pending")

    def __init__(self, route: Route) -> None:
        self.call_id = route.call_id
        self.account_id = route.account_id
        self.sees_all = route.sees_all
        self.binding = route.binding
        self.solo: List[Member] = []
        self.mixed: List[Member] = []
        self.pending: List[bytes] = []  # this round's frames, for the solo connections


class Fanout:
    """Routes published events to the outboxes of the connections subscribed to them."""

    def __init__(
        self,
        resolver: OwnershipResolver,
        *,
        backlog: int = 20000,
        flush_interval: float = FLUSH_INTERVAL,
        metrics: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolver = resolver
        self.backlog = backlog
        self.flush_interval = flush_interval
        self.metrics = metrics
        self.clock = clock
        self.members: List[Member] = []
        self._pending: List[shape.Published] = []
        self._wake = Event()
        self._index: Optional[Tuple[Dict[str, List[_Group]], List[_Group]]] = None
        self._active = False
        self._scoped = False  # some subscription sees only its account's conferences
        self._greenlet: Optional[gevent.Greenlet] = None
        self._next_round = -1e9
        # Conference id -> its events waiting for an owner (hold time, event), oldest first.
        self._held: OrderedDict[str, List[Tuple[float, shape.Published]]] = OrderedDict()
        self._held_count = 0

    # --- connections ---------------------------------------------------------------------------

    def join(self, member: Member) -> None:
        self.members.append(member)
        self.changed()

    def leave(self, member: Member) -> None:
        if member in self.members:
            self.members.remove(member)
            self.changed()

    def changed(self) -> None:
        """A connection's subscriptions changed: the index is rebuilt before the next event."""
        self._index = None
        self._active = any(m.routes() for m in self.members)

    @property
    def waiting(self) -> int:
        """Events waiting for the dispatcher."""
        return len(self._pending)

    def active(self) -> bool:
        """Whether any connection subscribes to anything (cheap: intake asks)."""
        return self._active

    def _routes(self) -> Tuple[Dict[str, List[_Group]], List[_Group]]:
        """The index: conference id -> groups, and the groups of ``*`` conference bindings."""
        if self._index is None:
            groups: Dict[Tuple[Optional[str], str, Optional[str], str, bool], _Group] = {}
            for m in self.members:
                routes = m.routes()
                for conference_id, r in routes:
                    key = (conference_id, r.binding, r.call_id, r.account_id, r.sees_all)
                    group = groups.get(key)
                    if group is None:
                        group = groups[key] = _Group(r)
                    (group.solo if len(routes) == 1 else group.mixed).append(m)
            by_conf: Dict[str, List[_Group]] = {}
            anywhere: List[_Group] = []
            for key, group in groups.items():
                if key[0] is None:
                    anywhere.append(group)
                else:
                    by_conf.setdefault(key[0], []).append(group)
            self._index = (by_conf, anywhere)
            self._scoped = any(not group.sees_all for group in groups.values())
        return self._index

    # --- the intake side: a hub sink -----------------------------------------------------------

    def offer(self, pub: shape.Published) -> None:
        """Take an event (intake path: never blocks, never yields)."""
        if not self._active:
            return
        pending = self._pending
        pending.append(pub)
        if len(pending) == 1:
            self._wake.set()
        elif len(pending) > self.backlog:
            log.warning(
                "websocket fan-out: %d events waiting for the dispatcher, dropping every client",
                len(pending),
            )
            pending.clear()
            for m in list(self.members):
                self.drop(m, DROP_BEHIND)

    # --- the dispatcher ------------------------------------------------------------------------

    def start(self) -> gevent.Greenlet:
        self._greenlet = gevent.spawn(self._run)
        self._greenlet.name = "ws-fanout"
        return self._greenlet

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            wait = self._next_round - self.clock()
            if wait > 0:
                gevent.sleep(wait)
            start = self.clock()
            self.dispatch()
            end = self.clock()
            # The next round waits as long as this one took, up to the interval: under a steady
            # stream to many clients the writes stay batched, while a cheap round (a few
            # clients) adds no latency to the next event.
            self._next_round = end + min(self.flush_interval, end - start)

    def dispatch(self) -> None:
        """One round: route every waiting event, then flush what was touched."""
        batch, self._pending = self._pending, []
        touched: List[Member] = []
        groups: List[_Group] = []
        index = self._routes()  # up to date, and so is _scoped
        if self._scoped:
            self.resolver.prefetch([pub.conference_id for pub in batch])
        for pub in batch:
            self._route(pub, index, touched, groups)
        for g in groups:
            frames, g.pending = g.pending, []
            chunk = frames[0] if len(frames) == 1 else b"".join(frames)
            for m in g.solo:
                box = m.outbox
                box.put(chunk, len(frames))
                if not box.touched:
                    box.touched = True
                    touched.append(m)
        for m in touched:
            box = m.outbox
            box.touched = False
            if box.over_bound:
                self.drop(m, DROP_TOO_SLOW)
            else:
                box.flush()

    def _route(
        self,
        pub: shape.Published,
        index: Tuple[Dict[str, List[_Group]], List[_Group]],
        touched: List[Member],
        groups: List[_Group],
    ) -> None:
        owner: Any = _UNRESOLVED
        if pub.conference_id in self._held:
            owner = self._owner(pub)
            if owner is not PENDING:
                self._release(pub.conference_id, owner, index, touched, groups)
        self._deliver(pub, index, touched, groups, owner)

    def _owner(self, pub: shape.Published) -> Any:
        return self.resolver.owner(pub.conference_id, pub.account_hint, pub.owner_pending)

    def _deliver(
        self,
        pub: shape.Published,
        index: Tuple[Dict[str, List[_Group]], List[_Group]],
        touched: List[Member],
        groups: List[_Group],
        owner: Any = _UNRESOLVED,
        scoped_only: bool = False,
    ) -> None:
        """Put the event's frame in the way of every group it matches.  ``scoped_only``: only
        the groups that see their account's conferences (a held event: admins had it)."""
        by_conf, anywhere = index
        exact = by_conf.get(pub.conference_id)
        held = False
        for candidates in (exact, anywhere):
            if not candidates:
                continue
            for g in candidates:
                if g.call_id is not None and g.call_id != pub.call_id:
                    continue
                if g.sees_all:
                    if scoped_only:
                        continue
                else:
                    if owner is _UNRESOLVED:
                        owner = self._owner(pub)
                    if owner is PENDING:
                        # Nobody knows yet whose it is: the account's subscribers get it when
                        # its first member says, before that member's own event.
                        if not held:
                            held = True
                            self._hold(pub)
                        continue
                    if owner != g.account_id:
                        continue
                frame = encoded_event_frame(g.binding, pub)
                if g.solo:
                    if not g.pending:
                        groups.append(g)
                    g.pending.append(frame)
                for m in g.mixed:
                    box = m.outbox
                    box.put(frame)
                    if not box.touched:
                        box.touched = True
                        touched.append(m)

    # --- events waiting for their conference's owner ------------------------------------------

    def _hold(self, pub: shape.Published) -> None:
        now = self.clock()
        self._expire(now)
        if self._held_count >= MAX_HELD:
            conference_id, events = self._held.popitem(last=False)
            self._held_count -= len(events)
            log.warning(
                "websocket fan-out: %d events of conference %s dropped waiting for its owner "
                "(more than %d waiting)",
                len(events),
                conference_id,
                MAX_HELD,
            )
            if self.metrics is not None:
                self.metrics.drop(HELD_QUEUE, len(events))
        self._held.setdefault(pub.conference_id, []).append((now, pub))
        self._held_count += 1

    def _expire(self, now: float) -> None:
        """Forget held events OWNER_WAIT old, oldest conference first (bounding memory; a
        release skips them too): no member came to say whose the conference is, so it is
        nobody's (its admin subscribers had them)."""
        held = self._held
        while held:
            conference_id, events = next(iter(held.items()))
            if now - events[0][0] < OWNER_WAIT:
                return
            fresh = [e for e in events if now - e[0] < OWNER_WAIT]
            self._held_count -= len(events) - len(fresh)
            log.debug(
                "websocket: conference %s: no owner within %gs, %d event(s) to admins only",
                conference_id,
                OWNER_WAIT,
                len(events) - len(fresh),
            )
            del held[conference_id]
            if fresh:
                held[conference_id] = fresh  # to the end: its oldest is young now

    def _release(
        self,
        conference_id: str,
        owner: Optional[str],
        index: Tuple[Dict[str, List[_Group]], List[_Group]],
        touched: List[Member],
        groups: List[_Group],
    ) -> None:
        """The conference's owner is known: its held events go to its subscribers, in order,
        before the event that told."""
        now = self.clock()
        events = self._held.pop(conference_id, [])
        self._held_count -= len(events)
        for at, held in events:
            if now - at < OWNER_WAIT:  # older ones were nobody's (see _expire)
                self._deliver(held, index, touched, groups, owner, scoped_only=True)

    def drop(self, member: Member, reason: str) -> None:
        """Drop a connection that is too far behind: out of the fan-out, its stale frames
        discarded, counted, and told (``Member.overflowed``) to close with a notice.  Once:
        a connection no longer in the fan-out (dropped or closing already) is left alone."""
        if member not in self.members:
            return
        self.leave(member)
        if self.metrics is not None:
            self.metrics.queue_drops.labels("websocket").inc()
        member.outbox.discard()
        try:
            member.overflowed(reason)
        except Exception:  # noqa: BLE001 - one client's bug must not stop the others
            log.exception("websocket fan-out: dropping a client failed")

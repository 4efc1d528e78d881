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
- Then it wakes the writer of every outbox it touched.  Each connection has one writer
  greenlet, the only one that writes to its socket: it takes what waits, whole chunks, and
  sends it (one send per connection per round while the socket has room; a full socket is
  waited for, bounded by a write timeout, while the others go on).  The writers run right
  after the round, before the dispatcher's next one.
- After a round, the next one waits as long as that round (its writes included) took, up to
  ``flush_interval``: a steady stream to many clients is written in batches (one send per
  connection per round instead of one per event), while cheap rounds and an event after a
  quiet spell go out at once.  The interval bounds the latency this adds.

Ownership (``confd.conferences.ownership``, one rule with REST): the hub says which account
the conference's members claim at each event; the resolver adds its document.  A new
conference's conference-level events come before any member has said whose it is (an ad-hoc
conference's ``conference-create``: ``Published.owner_pending``): for subscriptions scoped to an
account they are held, per conference, until an event of that conference decides (its first
member, or a document found), then delivered in order before that event; admin subscriptions
get them at once.  Held events are bounded in age (``OWNER_WAIT``: then nobody's) and number
(``MAX_HELD``: counted drops).

Bounds: a connection is dropped only for what its client did not take (``Outbox.too_slow``):
more than its bound of frames waiting, its backlog no smaller ``SLOW_GRACE`` seconds later,
or more than ``MAX_BACKLOG_BYTES`` waiting (``Member.overflowed``: a notice, then close).  A
burst bigger than the bound (a node of thousands of participants lost and resynced) is no
reason while the client takes it in.  Events waiting for the dispatcher are bounded by
``MAX_DISPATCH_BACKLOG``, far beyond any burst: past it the dispatcher itself has been stalled
for seconds, the events are lost and every client is told so.  Either way intake never waits
and nothing is buffered without limit.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Protocol, Tuple

import gevent
import orjson
from gevent.event import Event
from wsproto.frame_protocol import FrameProtocol

from confd.events import shape
from confd.events.background import Background
from confd.events.ownership import PENDING, OwnershipResolver

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.002  # seconds between two rounds of writes, at most the latency added
WRITE_TIMEOUT = 10.0  # a socket that takes nothing for this long: the client is gone
WRITE_CHUNK = 256 * 1024  # the writer joins queued chunks up to this size for one send
SLOW_GRACE = 5.0  # seconds a client may stay over its frame bound without catching up
MAX_BACKLOG_BYTES = 32 << 20  # bytes waiting for one client: over it, too slow at once
MAX_DISPATCH_BACKLOG = 100000  # events waiting for the dispatcher: over it, confd fell behind
# Bytes a connection's kernel send queue may hold not yet sent (TCP_NOTSENT_LOWAT): more waits
# in the outbox, where the bounds see it, and a client reading at all makes the socket
# writable (else megabytes waiting in the kernel hide a client's lag, and a slow reader may
# not free enough of them within the write timeout to make it writable).
UNSENT_LOWAT = 128 * 1024

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


def frame_at(data: Any, offset: int, start: int = 0) -> Tuple[int, int]:
    """``(begin, end)`` of the frame that holds byte ``offset`` of ``data``, a run of whole
    websocket frames, read from ``start`` (where a frame begins) by the frames' headers
    (RFC 6455: 2 bytes, a 16- or 64-bit length if so marked, a mask key if masked)."""
    pos = start
    while True:
        b1 = data[pos + 1]
        n = b1 & 0x7F
        if n == 126:
            n, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        elif n == 127:
            n, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
        else:
            head = 2
        end = pos + head + (4 if b1 & 0x80 else 0) + n
        if end > offset:
            return pos, end
        pos = end


class Outbox:
    """One connection's frames waiting to be written, and its writer: the one greenlet that
    writes to the connection's socket.

    Everybody else only enqueues: ``put`` (the dispatcher's event chunks, the session's replies),
    ``seal`` (the close frame, last), ``discard`` (a dropped client: what the writer has not
    taken yet is forgotten) and ``flush`` (wake the writer: the end of a round, or a reply).
    The writer takes the waiting chunks (each one or more whole frames) into a buffer of its
    own and writes it; nobody else touches that buffer, so a drop neither cuts a frame nor
    loses what is queued after it (the notice and the close frame).  After a ``discard`` the
    writer cuts its buffer after the frame it has begun, or is handing to a full socket (the
    rest is stale).

    Bounds (the client is told it is too slow and closed, see ``too_slow``): more than
    ``bound`` frames waiting for ``grace`` seconds without the backlog going down, or more
    than ``max_bytes`` waiting.  A burst beyond ``bound`` that the client takes in, however
    big, is no reason: only what the socket does not take counts.  ``on_error(reason)`` is
    called (once) when the socket fails or takes nothing for ``write_timeout`` seconds."""

    def __init__(
        self,
        sock: Any,
        bound: int,
        name: str = "",
        on_error: Callable[[str], None] = lambda reason: None,
        write_timeout: float = WRITE_TIMEOUT,
        grace: float = SLOW_GRACE,
        max_bytes: int = MAX_BACKLOG_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if bound < 1:
            raise ValueError("bound must be >= 1")
        self.sock = sock
        self.bound = bound
        self.name = name
        self.write_timeout = write_timeout
        lowat = getattr(socket, "TCP_NOTSENT_LOWAT", None)
        if lowat is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, lowat, UNSENT_LOWAT)
            except (OSError, AttributeError):
                pass  # not a TCP socket (a test's socket pair or fake)
        self.grace = grace
        self.max_bytes = max_bytes
        self.clock = clock
        self._on_error = on_error
        # Queued: put here, taken by the writer (or forgotten by discard).
        self._chunks: Deque[bytes] = deque()
        self._counts: Deque[int] = deque()  # frames in each chunk
        self.queued = 0  # frames in _chunks
        self.queued_bytes = 0
        # The writer's own: what it took and is writing.
        self._buf: Any = b""
        self._buf_frames = 0
        self._sent = 0  # bytes of _buf written
        self._frame = 0  # where a frame of _buf begins, at or before _sent
        self._cut = False  # discard asked the writer to cut _buf after the frame begun
        self._writer: Optional[gevent.Greenlet] = None
        self._wake = Event()
        self._drained = Event()
        self._drained.set()
        self._over_since: Optional[float] = None  # when the backlog went over the bound
        self._over_mark = 0  # the backlog then
        self.slow: Optional[str] = None  # why too_slow() said so
        self.failed = False
        self.sealed = False  # the close frame is queued: nothing more after it
        self.touched = False  # the dispatcher put frames in this round (its own bookkeeping)

    @property
    def waiting(self) -> int:
        """Frames not written yet: the queued ones and the rest of the writer's buffer (from
        its bytes left: counting its frames as they go would cost a header parse per frame,
        and a buffer's frames are whole and much alike)."""
        size = len(self._buf)
        left = size - self._sent
        if left <= 0:
            return self.queued
        return self.queued + -(-self._buf_frames * left // size)

    def __len__(self) -> int:
        return self.waiting

    def put(self, chunk: bytes, frames: int = 1) -> None:
        """Queue ``chunk`` (``frames`` whole frames); written after the next ``flush``."""
        if not self.sealed and not self.failed:
            self._chunks.append(chunk)
            self._counts.append(frames)
            self.queued += frames
            self.queued_bytes += len(chunk)
            self._drained.clear()

    def seal(self, last: bytes) -> None:
        """Queue the last frame (the close frame): nothing put after it is written."""
        self.put(last)
        self.sealed = True

    def flush(self) -> None:
        """Let the writer write what is queued (it does once the caller yields)."""
        if self.failed or not self._chunks:
            return
        if self._writer is None:
            self._writer = gevent.spawn(self._run)
            self._writer.name = "ws-writer-%s" % self.name
        else:
            self._wake.set()

    def too_slow(self) -> Optional[str]:
        """Why the client is too slow to keep (also in ``slow``), or None: more than
        ``max_bytes`` waiting, or more than ``bound`` frames waiting and no fewer than
        ``grace`` seconds before (a burst being taken in is not that: its backlog goes down).
        Asked after frames are queued; the writer restarts the window once under the bound."""
        if self.queued_bytes + len(self._buf) - self._sent > self.max_bytes:
            self.slow = "more than %d MiB waiting" % (self.max_bytes >> 20)
            return self.slow
        waiting = self.waiting
        if waiting <= self.bound:
            self._over_since = None
            return None
        now = self.clock()
        if self._over_since is None:
            self._over_since, self._over_mark = now, waiting
            return None
        if now - self._over_since < self.grace:
            return None
        if waiting < self._over_mark:
            # It took more than came in: a burst being taken in.  A new window.
            self._over_since, self._over_mark = now, waiting
            return None
        self.slow = "%d events waiting, over %d for %gs" % (waiting, self.bound, self.grace)
        return self.slow

    def discard(self) -> None:
        """Forget the frames not begun (a dropped client is not sent its stale backlog): the
        queued ones now, those in the writer's buffer by the writer, which finishes the frame
        it has begun (or the stream would break mid-frame)."""
        self._chunks.clear()
        self._counts.clear()
        self.queued = self.queued_bytes = 0
        self._cut = True
        if not self._buf:
            self._drained.set()

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
        self.queued = self.queued_bytes = 0
        self._buf, self._buf_frames, self._sent, self._frame = b"", 0, 0, 0
        self._drained.set()

    # --- the writer greenlet -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self.failed:
                if self._cut:
                    self._cut = False
                    self._trim()
                if not self._buf:
                    if not self._chunks:
                        self._drained.set()
                        if self.sealed:
                            return  # the close frame is written: nothing can follow
                        self._wake.clear()
                        self._wake.wait()
                        continue
                    self._take()
                self._write()
        except gevent.Timeout:
            self._fail("client took nothing for %gs" % self.write_timeout)
        except OSError as exc:
            self._fail("write failed: %s" % socket_error_text(exc))
        except Exception:  # noqa: BLE001 - a bug here must end this connection, not hide
            log.exception("websocket %s: writer failed", self.name)
            self._fail("writer failed")

    def _take(self) -> None:
        """Move queued chunks, whole, into the writer's buffer: one chunk as it is (a round's
        frames for a subscription usually are one), else joined up to WRITE_CHUNK bytes."""
        chunks, counts = self._chunks, self._counts
        data, frames = chunks.popleft(), counts.popleft()
        if chunks and len(data) < WRITE_CHUNK:
            parts, size = [data], len(data)
            while chunks and size < WRITE_CHUNK:
                parts.append(chunks.popleft())
                frames += counts.popleft()
                size += len(parts[-1])
            data = b"".join(parts)
        self.queued -= frames
        self.queued_bytes -= len(data)
        self._buf, self._buf_frames, self._sent, self._frame = data, frames, 0, 0

    def _write(self) -> None:
        """One send of the rest of the buffer while the socket has room.  A full socket is
        waited for (at most ``write_timeout`` seconds: a client that takes nothing is gone)
        with only the rest of the frame begun at stake: a drop meanwhile still cuts the
        buffer right after that frame."""
        buf, sent = self._buf, self._sent
        try:
            n = self.sock.send(memoryview(buf)[sent:] if sent else buf, 0, 0.0)
        except BlockingIOError:
            n = 0
        if not n:
            self._frame, end = frame_at(buf, sent, self._frame)
            with gevent.Timeout(self.write_timeout):
                n = self.sock.send(memoryview(buf)[sent:end])
        self._sent += n
        if self._sent >= len(buf):
            self._buf, self._buf_frames, self._sent, self._frame = b"", 0, 0, 0
        if self._over_since is not None and self.waiting <= self.bound:
            self._over_since = None

    def _trim(self) -> None:
        """After a discard: keep only the rest of the frame begun; what the buffer holds
        beyond it is stale."""
        buf, sent = self._buf, self._sent
        if not buf:
            return
        begin, end = frame_at(buf, sent, self._frame) if sent else (0, 0)
        if begin == sent:  # that frame is not begun either: the buffer is done
            self._buf, self._buf_frames, self._sent, self._frame = b"", 0, 0, 0
        else:
            self._buf, self._buf_frames = memoryview(buf)[:end], 1

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


class Fanout(Background):
    """Routes published events to the outboxes of the connections subscribed to them."""

    GREENLET_NAME = "ws-fanout"

    def __init__(
        self,
        resolver: OwnershipResolver,
        *,
        backlog: int = MAX_DISPATCH_BACKLOG,
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
            # Not a burst (a node of thousands lost and resynced is a few thousand events):
            # the dispatcher itself has been stalled for seconds.  The events are lost, and
            # every client is told so instead of silently missing them.
            log.warning(
                "websocket fan-out: %d events waiting for the dispatcher, dropping every client",
                len(pending),
            )
            if self.metrics is not None:
                self.metrics.drop("websocket_fanout", len(pending))
            pending.clear()
            for m in list(self.members):
                self.drop(m, DROP_BEHIND)

    # --- the dispatcher ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            wait = self._next_round - self.clock()
            if wait > 0:
                gevent.sleep(wait)
            start = self.clock()
            self.dispatch()
            # The writers this round woke run now, before this greenlet: their sends are part
            # of the round's cost that spaces the next one.
            gevent.sleep(0)
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
            if box.too_slow():
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

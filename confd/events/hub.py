"""The event hub: live state updates in, events out to subscribers and sinks, never blocking.

``EventHub.publish`` runs in a node's ESL reader greenlet, right after ``LiveState.apply``.
It does only cheap, non-yielding work: a few dict updates, building each event once when
somebody listens, and ``put_nowait`` into each interested subscriber's bounded queue.  A
subscriber whose queue is full is dropped on the spot (its sender greenlet is woken to tell
the client why and close); the intake never waits for a consumer.  Sinks (the AMQP
publisher) get each event through a callable that must not block either.

No database I/O happens here: which account a conference belongs to is resolved later, in
each subscriber's own greenlet (``confd.events.ownership``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from gevent.queue import Empty, Queue

from confd.conferences import events as ev
from confd.conferences.model import Conference
from confd.conferences.state import LiveState, Update
from confd.events import shape

log = logging.getLogger(__name__)

# Remembered ad-hoc accounts (conference name -> account id) are bounded: conferences that end
# by a node loss never send conference-destroy, so their entries are evicted oldest first.
MAX_REMEMBERED_CONFERENCES = 10000

DROP_QUEUE_FULL = "queue full"


class _Dropped:
    """Queue item telling a subscriber's sender that the hub dropped it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Subscriber:
    """One consumer's bounded queue.  ``wants`` is called on the intake path: it must be a
    cheap, non-blocking test (a websocket connection matches its bindings)."""

    def __init__(self, bound: int, wants: Callable[[shape.Published], bool], name: str = ""):
        if bound < 1:
            raise ValueError("bound must be >= 1")
        self.bound = bound
        self.wants = wants
        self.name = name
        # One slot more than the bound, kept for the drop notice, so the sender always learns
        # of its drop even though its queue is full.
        self._queue: Queue = Queue(maxsize=bound + 1)
        self.dropped: Optional[str] = None
        # Called (on the intake path: it must not block) when the hub drops this subscriber,
        # so that a consumer stuck writing to its client learns of it at once.
        self.on_drop: Callable[[str], None] = lambda reason: None

    def qsize(self) -> int:
        return self._queue.qsize()

    def offer(self, item: shape.Published) -> bool:
        """Queue ``item``; False when the bound is reached (the caller drops this one)."""
        if self.dropped is not None:
            return True  # already going away; nothing more to queue
        if self._queue.qsize() >= self.bound:
            return False
        self._queue.put_nowait(item)
        return True

    def mark_dropped(self, reason: str) -> None:
        if self.dropped is None:
            self.dropped = reason
            self._queue.put_nowait(_Dropped(reason))
            try:
                self.on_drop(reason)
            except Exception:  # noqa: BLE001
                log.exception("subscriber %s: on_drop failed", self.name)

    def get(self, timeout: Optional[float] = None) -> Optional[shape.Published]:
        """The next event; None after ``timeout``.  Raises ``SubscriberDropped`` as soon as the
        hub has dropped this subscriber: a client that fell behind is told why and closed,
        not sent the stale backlog first."""
        if self.dropped is not None:
            raise SubscriberDropped(self.dropped)
        try:
            item = self._queue.get(timeout=timeout)
        except Empty:
            return None
        if isinstance(item, _Dropped):
            raise SubscriberDropped(item.reason)
        return item


class SubscriberDropped(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Sink = Callable[[shape.Published], None]


class EventHub:
    def __init__(
        self,
        *,
        node_name: str,
        app_version: str,
        publish_filter: Optional[Iterable[str]] = None,
        state: Optional[LiveState] = None,
        metrics: Any = None,
        msg_id: Callable[[], str] = shape.new_msg_id,
    ) -> None:
        self.node_name = node_name
        self.app_version = app_version
        self.allowed = shape.event_filter(publish_filter)
        self._state = state
        self._metrics = metrics
        self._msg_id = msg_id
        self._subscribers: List[Subscriber] = []
        self._sinks: List[Sink] = []
        self._hostnames: Dict[str, str] = {}  # node -> FreeSWITCH-Hostname seen in its events
        self._adhoc: Dict[str, str] = {}  # conference name -> <prefix>Account-ID of a member
        self.published = 0
        self.dropped_subscribers = 0

    # --- consumers -----------------------------------------------------------------------------

    def add_sink(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def subscribe(
        self, bound: int, wants: Callable[[shape.Published], bool], name: str = ""
    ) -> Subscriber:
        sub = Subscriber(bound, wants, name)
        self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def account_hint(self, conference_id: str) -> Optional[str]:
        return self._adhoc.get(conference_id)

    # --- the intake side -----------------------------------------------------------------------

    def has_consumers(self) -> bool:
        """Whether any subscriber or sink would take an event now (cheap: intake asks)."""
        return bool(self._subscribers or self._sinks)

    def publish(self, updates: List[Update]) -> None:
        """Called on the intake path with the updates one change made; never blocks."""
        for u in updates:
            self._learn(u)
        if self._subscribers or self._sinks:
            for u in updates:
                if u.event in self.allowed:
                    self._fan_out(u)
        for u in updates:
            if u.event == ev.CONFERENCE_DESTROY:
                self._adhoc.pop(u.conference.name, None)

    def _learn(self, u: Update) -> None:
        p = u.participant
        if p is None:
            return
        if p.switch_hostname:
            self._hostnames[u.node] = p.switch_hostname
        account = p.custom_channel_vars.get(shape.ACCOUNT_VAR)
        if account and self._adhoc.get(u.conference.name) != account:
            self._adhoc[u.conference.name] = account
            if len(self._adhoc) > MAX_REMEMBERED_CONFERENCES:
                self._adhoc.pop(next(iter(self._adhoc)))

    def _counts(self, node: str, conf: Conference) -> Tuple[int, int]:
        """Members and admins now (the update's copy of the conference is detached)."""
        if self._state is None:
            return conf.members, conf.admins
        for live in self._state.find(conf.name):
            if live.uuid == conf.uuid and live.node == node:
                return live.members, live.admins
        return 0, 0

    def _fan_out(self, u: Update) -> None:
        counts = (0, 0)
        if u.event in shape.CONFERENCE_EVENTS:
            counts = self._counts(u.node, u.conference)
        pub = shape.build(
            u,
            node=self.node_name,
            app_version=self.app_version,
            msg_id=self._msg_id(),
            focus=shape.focus_of(u, self._hostnames.get(u.node)),
            counts=counts,
            account_hint=self._adhoc.get(u.conference.name),
        )
        if pub is None:
            return
        self.published += 1
        if self._metrics is not None:
            self._metrics.event_published(pub.name)
        for sink in self._sinks:
            try:
                sink(pub)
            except Exception:  # noqa: BLE001 - a sink's bug must not stop intake
                log.exception("event sink failed")
        dropped = None
        for sub in self._subscribers:
            if sub.dropped is None and sub.wants(pub) and not sub.offer(pub):
                sub.mark_dropped(DROP_QUEUE_FULL)
                dropped = (dropped or []) + [sub]
        if dropped:
            for sub in dropped:
                self._subscribers.remove(sub)
                self.dropped_subscribers += 1
                log.warning(
                    "event subscriber %s dropped: %d events waiting (bound)", sub.name, sub.bound
                )
                if self._metrics is not None:
                    self._metrics.queue_drops.labels("websocket").inc()

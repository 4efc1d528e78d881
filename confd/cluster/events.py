"""Events everywhere (cluster.md, item 4).

The owner of a node publishes its events once, on the topic exchange ``conference`` that AMQP
consumers already bind to (the daemon's ``AmqpPublisher``), with headers saying what the
websocket scoping needs and the body cannot tell: the event's name, the account its members
claim, whether that is still undecided, the publishing instance and when the event happened.

Every instance binds its own events queue to what its websocket clients subscribed to (the
bindings of events.md are AMQP topic patterns as they are), and hands what arrives to its
fan-out as if it came from its own nodes: the account scoping is the fan-out's, the same rule
as today.  Its own events it has delivered already (from its hub), so it skips them; events
that happened before its queue was last declared (a broker outage) are skipped too: every
websocket client was closed at the loss and has re-read since.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Iterable

from confd.events import shape

log = logging.getLogger(__name__)

HDR_INSTANCE = "x-confd-instance"
HDR_EVENT = "x-confd-event"
HDR_ACCOUNT = "x-confd-account"
HDR_PENDING = "x-confd-pending"
HDR_AT = "x-confd-at"  # Unix seconds, as the owner saw the event


def stamp(pub: shape.Published) -> None:
    """A hub sink ahead of the AMQP publisher (intake path, cluster mode only): the time the
    event happened, for the headers the publisher sends later."""
    pub.at = time.time()


def publish_headers(instance: str) -> Callable[[shape.Published], Dict[str, Any]]:
    def headers(pub: shape.Published) -> Dict[str, Any]:
        h: Dict[str, Any] = {
            HDR_INSTANCE: instance,
            HDR_EVENT: pub.name,
            HDR_PENDING: bool(pub.owner_pending),
            HDR_AT: float(pub.at or time.time()),  # unstamped: no later than now
        }
        if pub.account_hint is not None:
            h[HDR_ACCOUNT] = pub.account_hint
        return h

    return headers


def split_routing_key(key: str):
    """(conference id, call id) of ``conference.event.<conference>.<call>``; None if not."""
    prefix = shape.ROUTING_PREFIX + "."
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    conference, dot, call = rest.rpartition(".")
    if not dot or not conference or not call:
        return None
    return conference, call


class Incoming:
    """The events queue's messages -> ``offer`` (the fan-out), as ``Published`` events."""

    def __init__(
        self,
        instance: str,
        offer: Callable[[shape.Published], None],
        since: Callable[[], float],
        allowed: Iterable[str] = shape.PUBLISHED_EVENTS,
    ) -> None:
        self.instance = instance
        self._offer = offer
        self._since = since
        self._allowed = frozenset(allowed)
        self.taken = 0
        self.skipped = 0

    def __call__(self, msg: Any) -> None:
        props = getattr(msg, "properties", {}) or {}
        h = props.get("application_headers") or {}
        if h.get(HDR_INSTANCE) == self.instance:
            return  # delivered from this instance's own hub already
        name = h.get(HDR_EVENT)
        at = h.get(HDR_AT)
        key = (getattr(msg, "delivery_info", None) or {}).get("routing_key", "")
        parts = split_routing_key(key)
        if parts is None or name not in self._allowed or not isinstance(at, (int, float)):
            self.skipped += 1
            return
        if at < self._since():
            self.skipped += 1
            return
        account = h.get(HDR_ACCOUNT)
        body = msg.body if isinstance(msg.body, bytes) else bytes(msg.body, "utf-8")
        pub = shape.Published(
            name=name,
            conference_id=parts[0],
            call_id=parts[1],
            routing_key=key,
            data={},  # the fan-out sends the body as it came; nothing reads the data
            account_hint=account if isinstance(account, str) else None,
            owner_pending=bool(h.get(HDR_PENDING)),
            at=float(at),
        )
        pub._body = body
        self.taken += 1
        self._offer(pub)


class BusBindings:
    """The websocket subscriptions' bindings, as bindings of this instance's events queue."""

    def __init__(self, bus: Any) -> None:
        self._bus = bus

    def acquire(self, patterns: Iterable[str]) -> None:
        self._bus.bind(list(patterns))

    def release(self, patterns: Iterable[str]) -> None:
        self._bus.unbind(list(patterns))

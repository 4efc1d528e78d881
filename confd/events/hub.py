"""The event hub: live state updates in, events out to sinks, never blocking.

``EventHub.publish`` runs in a node's ESL reader greenlet, right after ``LiveState.apply``.
It does only cheap, non-yielding work: a few dict updates, building each event once when
somebody listens, and handing it to each sink: the websocket fan-out
(``confd.events.fanout``) and the AMQP publisher, each of which queues it within its own bound
and does the rest in its own greenlets.  The intake never waits for a consumer.

No database I/O happens here: which account a conference belongs to is resolved later, by
the websocket fan-out (``confd.events.ownership``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from confd.conferences import events as ev
from confd.conferences.model import Conference
from confd.conferences.state import LiveState, Update
from confd.events import shape

log = logging.getLogger(__name__)

# Remembered ad-hoc accounts (conference name -> account id) are bounded: conferences that end
# by a node loss never send conference-destroy, so their entries are evicted oldest first.
MAX_REMEMBERED_CONFERENCES = 10000

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
        self._sinks: List[Sink] = []
        self._active: List[Callable[[], bool]] = []
        self._hostnames: Dict[str, str] = {}  # node -> FreeSWITCH-Hostname seen in its events
        self._adhoc: Dict[str, str] = {}  # conference name -> <prefix>Account-ID of a member
        self.published = 0

    # --- consumers -----------------------------------------------------------------------------

    def add_sink(self, sink: Sink, active: Optional[Callable[[], bool]] = None) -> None:
        """``sink(event)`` for every event, on the intake path (it must not block);
        ``active()`` tells whether it wants events now (None: always)."""
        self._sinks.append(sink)
        self._active.append(active if active is not None else (lambda: True))

    def account_hint(self, conference_id: str) -> Optional[str]:
        return self._adhoc.get(conference_id)

    # --- the intake side -----------------------------------------------------------------------

    def has_consumers(self) -> bool:
        """Whether any sink would take an event now (cheap: intake asks)."""
        return any(active() for active in self._active)

    def publish(self, updates: List[Update]) -> None:
        """Called on the intake path with the updates one change made; never blocks."""
        for u in updates:
            self._learn(u)
        if self.has_consumers():
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

"""The event hub: live state updates in, events out to sinks, never blocking.

``EventHub.publish`` runs in a node's ESL reader greenlet, right after ``LiveState.apply``.
It does only cheap, non-yielding work: a few dict updates, building each event once when
somebody listens, and handing it to each sink: the websocket fan-out
(``confd.events.fanout``) and the AMQP publisher, each of which queues it within its own bound
and does the rest in its own greenlets.  The intake never waits for a consumer.

No database I/O happens here.  Which account a conference belongs to is decided by one rule
(``confd.conferences.ownership``): the hub applies its member part to the live conference as it
is at each event (``Published.account_hint``), since by the time the fan-out routes the event the
members may have changed; the fan-out adds the document part (``confd.events.ownership``), which
needs the database.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from confd.conferences import events as ev
from confd.conferences import ownership
from confd.conferences.model import Conference
from confd.conferences.state import LiveState, Update
from confd.events import shape

log = logging.getLogger(__name__)

# Remembered member claims (one per live conference instance) are bounded: conferences that end
# by a node loss never send conference-destroy, so their entries are evicted oldest first.
MAX_REMEMBERED_CONFERENCES = 10000
# A conference's member claim is worked out again from the live state at least this often (s):
# channel variables that arrive without an event (uuid_dump after a resync) count within it.
CLAIM_RECHECK = 1.0

Sink = Callable[[shape.Published], None]
InstanceKey = Tuple[str, str]  # (node, conference uuid)


@dataclass
class _Members:
    """What the hub knows of one live conference instance's members, for the ownership rule."""

    claim: Optional[ownership.Claim]  # rule 3 over its members now
    last: Optional[str]  # the last account its members claimed (an empty conference's owner)
    had_member: bool  # a member was seen: ownership by members is decided
    checked: float  # when ``claim`` was worked out from the live state


class EventHub:
    def __init__(
        self,
        *,
        node_name: str,
        app_version: str,
        publish_filter: Optional[Iterable[str]] = None,
        state: LiveState,
        metrics: Any = None,
        msg_id: Callable[[], str] = shape.new_msg_id,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_name = node_name
        self.app_version = app_version
        self.allowed = shape.event_filter(publish_filter)
        self._state = state
        self._metrics = metrics
        self._msg_id = msg_id
        self._clock = clock
        self._sinks: List[Sink] = []
        self._active: List[Callable[[], bool]] = []
        self._hostnames: Dict[str, str] = {}  # node -> FreeSWITCH-Hostname seen in its events
        self._members: OrderedDict[InstanceKey, _Members] = OrderedDict()
        self.published = 0

    # --- consumers -----------------------------------------------------------------------------

    def add_sink(self, sink: Sink, active: Optional[Callable[[], bool]] = None) -> None:
        """``sink(event)`` for every event, on the intake path (it must not block);
        ``active()`` tells whether it wants events now (None: always)."""
        self._sinks.append(sink)
        self._active.append(active if active is not None else (lambda: True))

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
                # Every update, published or filtered out, keeps what is known of members right.
                claim = self._claim(u)
                if u.event in self.allowed:
                    self._fan_out(u, claim)
        else:
            # Nobody listens: what is known of members may go stale; it is worked out again
            # from the live state when somebody does.
            self._members.clear()
        for u in updates:
            if u.event == ev.CONFERENCE_DESTROY:
                self._members.pop((u.node, u.conference.uuid), None)

    def _learn(self, u: Update) -> None:
        p = u.participant
        if p is not None and p.switch_hostname:
            self._hostnames[u.node] = p.switch_hostname

    # --- the member part of the ownership rule -------------------------------------------------

    def _claim(self, u: Update) -> Tuple[Optional[str], bool]:
        """(the account the conference's members claim at this update, whether that is still
        undecided: a conference-level event of a conference no member was seen in yet)."""
        key = (u.node, u.conference.uuid)
        known = self._members.get(key)
        p = u.participant
        now = self._clock()
        if known is None or now - known.checked >= CLAIM_RECHECK or _stale(known.claim, u):
            known = self._work_out(key, self._instance(u), known, now)
        if p is not None:
            known.had_member = True
            # A leaving member is gone from the live state yet still present at its leave.
            # (Inline, not ownership.earlier: this runs for every event on the intake path.)
            claim = known.claim
            mine = p.custom_channel_vars.get(ownership.ACCOUNT_VAR)
            if mine and (claim is None or p.participant_id < claim.member_id):
                return mine, False
            return (claim.account if claim is not None else None), False
        if known.claim is not None:
            return known.claim.account, False
        live = self._instance(u)
        if live is None or not live.participants:
            # An empty conference is its last claimant's: its destroy follows its last
            # member's leave.
            return known.last, not known.had_member and u.event != ev.CONFERENCE_DESTROY
        return None, False  # members that claim nothing: nobody's

    def _work_out(
        self, key: InstanceKey, live: Optional[Conference], known: Optional[_Members], now: float
    ) -> _Members:
        """Rule 3 over the instance's members now.  An instance no longer in the live state
        (destroyed, or its node lost: its members' leaves are being published) keeps the claim
        it had."""
        if known is None:
            known = _Members(None, None, False, now)
            self._members[key] = known
            if len(self._members) > MAX_REMEMBERED_CONFERENCES:
                self._members.popitem(last=False)
        if live is not None:
            known.claim = ownership.member_claim(live.participants.values())
            if live.participants:
                known.had_member = True
        known.checked = now
        if known.claim is not None:
            known.last = known.claim.account
        return known

    def _instance(self, u: Update) -> Optional[Conference]:
        """The live instance the update is about (None when it is gone)."""
        for live in self._state.find(u.conference.name):
            if live.uuid == u.conference.uuid and live.node == u.node:
                return live
        return None

    def _counts(self, u: Update) -> Tuple[int, int]:
        """Members and admins now (the update's copy of the conference is detached)."""
        live = self._instance(u)
        return (live.members, live.admins) if live is not None else (0, 0)

    def _fan_out(self, u: Update, claim: Tuple[Optional[str], bool]) -> None:
        counts = (0, 0)
        if u.event in shape.CONFERENCE_EVENTS:
            counts = self._counts(u)
        account, pending = claim
        pub = shape.build(
            u,
            node=self.node_name,
            app_version=self.app_version,
            msg_id=self._msg_id(),
            focus=shape.focus_of(u, self._hostnames.get(u.node)),
            counts=counts,
            account_hint=account,
        )
        if pub is None:
            return
        pub.owner_pending = pending
        self.published += 1
        if self._metrics is not None:
            self._metrics.event_published(pub.name)
        for sink in self._sinks:
            try:
                sink(pub)
            except Exception:  # noqa: BLE001 - a sink's bug must not stop intake
                log.exception("event sink failed")


def _stale(claim: Optional[ownership.Claim], u: Update) -> bool:
    """Whether the update shows the remembered claim may be wrong (cheap: no scan)."""
    p = u.participant
    if p is None:
        return False
    if u.event == ev.DEL_MEMBER:
        return claim is not None and claim.member_id == p.participant_id
    mine = p.custom_channel_vars.get(ownership.ACCOUNT_VAR)
    if claim is None:
        return bool(mine)
    if p.participant_id == claim.member_id:
        return mine != claim.account  # the claimant's variable changed
    return bool(mine) and p.participant_id < claim.member_id

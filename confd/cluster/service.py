"""The cluster as the daemon wires it in: ownership, the bus, the control across instances,
events across instances, health.

The daemon hands it what it already has (the live state, the command builder, a way to make a
node supervisor) and takes back what the HTTP and websocket layers already use: a control
(``ClusterControl``: "read this conference", "send this command to its focus"), websocket
bindings (``BusBindings``: "subscribe these bindings"), the nodes for health and metrics.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional

import gevent

from confd.cluster import wire
from confd.cluster.bus import Bus, BusUnavailable
from confd.cluster.claims import Claims
from confd.cluster.control import ClusterControl, Responder
from confd.cluster.events import BusBindings, Incoming, publish_headers, stamp
from confd.cluster.nodes import OwnedNodes
from confd.conferences.commands import CommandBuilder
from confd.conferences.control import ConferenceControl, FocusUnavailable
from confd.conferences.state import LiveState
from confd.config import Config
from confd.entry.directory import room_of
from confd.esl.node import NodeSettings, NodeSupervisor
from confd.events import shape
from confd.events.websocket import CLOSE_TRY_AGAIN, notice

log = logging.getLogger(__name__)

# What a websocket client is told when the broker went away: events of the other instances'
# nodes may have been missed meanwhile, so it must subscribe again and re-read.
BUS_LOST_NOTICE = "events from the other instances were interrupted: subscribe again and re-read"


class Cluster:
    def __init__(
        self,
        cfg: Config,
        *,
        settings: List[NodeSettings],
        state: LiveState,
        builder: CommandBuilder,
        make_supervisor: Callable[[NodeSettings], NodeSupervisor],
        on_crash: Callable[[gevent.Greenlet], None],
        on_command: Callable[[str, str], None],
    ) -> None:
        c = cfg.cluster
        assert c.instance is not None and c.amqp_url is not None
        self.instance = c.instance
        self.name = c.name
        self.state = state
        self.request_timeout = c.request_timeout
        self.nodes = OwnedNodes(settings, make_supervisor, on_crash)
        self.claims = Claims(
            cfg.database.url,
            cluster=c.name,
            instance=c.instance,
            nodes=[s.name for s in settings],
            interval=c.claim_interval,
            on_claimed=self.nodes.claimed,
            on_released=self.nodes.released,
        )
        self.local = ConferenceControl(state, list(self.nodes), on_command=on_command)
        self.responder = Responder(
            instance=c.instance,
            state=state,
            claims=self.claims,
            nodes=self.nodes,
            local=self.local,
            builder=builder,
        )
        self._offer: Callable[[shape.Published], None] = lambda pub: None
        self._sessions: Callable[[], List[Any]] = list
        self.incoming = Incoming(
            c.instance,
            lambda pub: self._offer(pub),
            since=lambda: self.bus.connected_at,
            allowed=shape.event_filter(cfg.events.publish_participant_event),
        )
        self.bus = Bus(
            c.amqp_url,
            cluster=c.name,
            instance=c.instance,
            handle=self.responder.handle,
            on_event=self.incoming,
            on_lost=self._bus_lost,
            heartbeat=cfg.events.amqp_heartbeat,
        )
        self.control = ClusterControl(
            self.local,
            instance=c.instance,
            state=state,
            claims=self.claims,
            bus=self.bus,
            nodes=self.nodes,
            request_timeout=c.request_timeout,
            command_timeout=cfg.freeswitch.command_timeout,
            on_command=on_command,
        )
        self.bindings = BusBindings(self.bus)
        self.publish_headers = publish_headers(c.instance)
        self.stamp = stamp
        self._greenlets: List[gevent.Greenlet] = []

    def deliver_to(
        self, offer: Callable[[shape.Published], None], sessions: Callable[[], List[Any]]
    ) -> None:
        """Where events from the other instances go (the websocket fan-out), and the
        websocket sessions to close when the broker goes away."""
        self._offer = offer
        self._sessions = sessions

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> List[gevent.Greenlet]:
        self._greenlets = [self.bus.start(), self.claims.start()]
        return self._greenlets

    def hand_over(self, timeout: float) -> None:
        """Rolling restart: release every node (connections closed, then the lock), so the
        others claim them while this instance finishes stopping."""
        self.claims.hand_over(timeout / 2)
        self.nodes.stop_all(timeout)

    def stop(self, timeout: float) -> None:
        self.claims.stop(timeout / 2)
        self.nodes.stop_all(timeout / 2)
        self.bus.stop(timeout / 2)

    def _bus_lost(self) -> None:
        for session in list(self._sessions()):
            if session.subscriptions:
                text = notice(BUS_LOST_NOTICE, sorted({b for _, b in session.subscriptions}))
                gevent.spawn(session.close, CLOSE_TRY_AGAIN, "event bus lost", text)

    # --- health ------------------------------------------------------------------------------

    def health_nodes(self) -> List[Dict[str, Any]]:
        """Every configured node with its ``owner``; the owner's view of it (asked over the
        bus) when another instance owns it."""
        owners = {slot.name: self.claims.owner(slot.name) for slot in self.nodes}
        others = {o for o in owners.values() if o is not None and o != self.instance}
        reports: Dict[str, Dict[str, Any]] = {}
        if others:
            try:
                replies = self.bus.gather(
                    wire.request(wire.KIND_STATUS, **{"from": self.instance}),
                    others,
                    self.request_timeout,
                )
            except BusUnavailable:
                replies = {}
            for answer in replies.values():
                for status in answer.get("status") or ():
                    if isinstance(status, dict) and isinstance(status.get("name"), str):
                        reports[status["name"]] = status
        out = []
        for slot in self.nodes:
            owner = owners.get(slot.name)
            if owner == self.instance and slot.owned:
                status = slot.status()
            elif owner is not None and slot.name in reports:
                status = dict(reports[slot.name])
            else:
                status = slot.status()
                status["error"] = (
                    "no instance owns it now"
                    if owner is None
                    else "its owner %s did not answer in time" % owner
                )
            status["owner"] = owner
            out.append(status)
        return out

    def health_extra(self) -> Dict[str, Any]:
        return {
            "instance": self.instance,
            "instances": self.claims.live_instances(),
            "cluster": {
                "name": self.name,
                "database": self.claims.status(),
                "bus": self.bus.status(),
            },
        }

    def rooms(self, conference_id: str) -> Any:
        """Caller entry's room reader (``confd.entry.directory.RoomReader``): from this
        instance's own state when it owns the conference's node; otherwise asked of the owner
        (one request over the bus, which yields: entry's admission counts its own reservations
        atomically, so a read that yields can only lag by a call confirmed meanwhile)."""
        found = self.state.find(conference_id)
        if found:
            return room_of(found)
        try:
            live = self.control.live(conference_id)
        except FocusUnavailable:
            return None
        return room_of([live] if live is not None else [])

    def figures(self) -> Dict[str, float]:
        """For /metrics (``confd.metrics.ClusterFigures``)."""
        return {
            "confd_cluster_live": 1.0 if self.claims.live else 0.0,
            "confd_cluster_bus_connected": 1.0 if self.bus.connected else 0.0,
            "confd_cluster_nodes_owned": float(len(self.claims.mine)),
            "confd_cluster_instances": float(len(self.claims.instances)),
            "confd_cluster_bindings": float(len(self.bus.patterns)),
            "confd_cluster_requests": float(self.bus.requests),
            "confd_cluster_request_timeouts": float(self.bus.timeouts),
            "confd_cluster_events_received": float(self.incoming.taken),
            "confd_cluster_session_losses": float(self.claims.losses),
        }

    def unready(self) -> Optional[str]:
        """Why this instance cannot serve as a cluster member now (None: it can)."""
        if not self.claims.live:
            return "database session lost: %s" % (self.claims.error or "")
        if not self.bus.connected:
            return "event bus lost: %s" % (self.bus.error or "")
        return None

"""Any instance answers anything (cluster.md, item 3): "read this conference" and "send this
command to its focus", across instances.

``ClusterControl`` offers the HTTP layer exactly what ``ConferenceControl`` offers (``live``,
``conferences``, ``disconnected_nodes``, ``every_node_connected``, ``send``): the views do not
know there is a cluster.  What this instance owns it reads and commands itself; for the rest it
asks the owners over the bus, within ``cluster.request_timeout``.  A node without an owner (a
failover under way) reads as a node that is down in single-instance mode: its conferences are
not running, actions on them are 503 ``focus_unavailable``; never stale data.  An owner that
does not answer in time makes the read or the action 503 ``focus_unavailable`` naming its
nodes.

``Responder`` is the other side: the answers this instance gives the others, from its own
live state and its own node connections only.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from confd.cluster import names, wire
from confd.cluster.bus import Bus, BusUnavailable, NoAnswer
from confd.cluster.claims import Claims
from confd.cluster.nodes import OwnedNodes
from confd.conferences.commands import Command, CommandBuilder, InvalidCommand
from confd.conferences.control import (
    CommandRejected,
    ConferenceControl,
    FocusUnavailable,
    LiveView,
    MemberChanged,
    oldest,
)
from confd.conferences.model import Conference, Participant
from confd.conferences.state import LiveState

log = logging.getLogger(__name__)


def _oldest(found: List[Conference]) -> Optional[Conference]:
    return oldest(found) if found else None


class ClusterControl:
    def __init__(
        self,
        local: ConferenceControl,
        *,
        instance: str,
        state: LiveState,
        claims: Claims,
        bus: Bus,
        nodes: OwnedNodes,
        request_timeout: float,
        command_timeout: float,
        on_command: Callable[[str, str], None] = lambda action, result: None,
    ) -> None:
        self._local = local
        self.instance = instance
        self._state = state
        self._claims = claims
        self._bus = bus
        self._nodes = nodes
        self.request_timeout = request_timeout
        self.command_timeout = command_timeout
        self._on_command = on_command
        self.clock = local.clock
        # What owners last said of their nodes' connections (node -> connected).
        self._remote_connected: Dict[str, bool] = {}

    # --- reads -------------------------------------------------------------------------------

    def _ask(self, body: Dict[str, Any]) -> Tuple[List[Conference], List[str]]:
        """(the conferences the other owners report, the nodes whose owner did not answer)."""
        owners = dict(self._claims.owners)
        remote = {n: o for n, o in owners.items() if o != self.instance}
        if not remote:
            return [], []
        expect = set(remote.values())
        body = dict(body, **{"from": self.instance})
        try:
            replies = self._bus.gather(body, expect, self.request_timeout)
        except BusUnavailable:
            replies = {}
        found: List[Conference] = []
        for who, answer in replies.items():
            nodes = answer.get("nodes")
            owned = answer.get("owned")
            if isinstance(nodes, dict):
                for n, up in nodes.items():
                    if isinstance(n, str):
                        self._remote_connected[n] = bool(up)
            if isinstance(owned, list):
                for n in remote:
                    if remote[n] == who and n not in owned:
                        self._remote_connected[n] = False  # moving: not here any more
            try:
                found.extend(wire.conferences_from_wire(answer.get("conferences", [])))
            except wire.WireError as exc:
                log.warning("cluster: instance %s answered badly: %s", who, exc)
        silent = sorted(n for n, o in remote.items() if o not in replies)
        return found, silent

    def live(self, name: str) -> Optional[Conference]:
        """The live instance of ``name``: on this instance's own node without asking anyone
        (the owner's reads cost it nothing more than in a single process); else the oldest the
        owners report.  A conference live on two nodes at once (an anomaly FreeSWITCH allows)
        may read differently on the two owners; everywhere else it reads as the oldest."""
        found = list(self._state.find(name))
        if found:
            return _oldest(found)
        remote, silent = self._ask(wire.request(wire.KIND_FIND, name=name))
        found.extend(remote)
        if found:
            return _oldest(found)
        if silent:
            raise FocusUnavailable(", ".join(silent), "owner not answering")
        return None

    def conferences(self) -> List[Conference]:
        found = list(self._state.conferences())
        remote, silent = self._ask(wire.request(wire.KIND_LIST))
        if silent:
            raise FocusUnavailable(", ".join(silent), "owner not answering")
        found.extend(remote)
        return found

    def snapshot(self) -> LiveView:
        """Every live conference of the cluster, asked once: a list request's rows all read
        from it (one round trip to the owners, not one per row)."""
        return LiveView(self.conferences())

    def every_node_connected(self) -> bool:
        return not self.disconnected_nodes()

    def disconnected_nodes(self) -> List[str]:
        out = []
        for slot in self._nodes:
            owner = self._claims.owner(slot.name)
            if owner is None:
                out.append(slot.name)
            elif owner == self.instance:
                if not slot.connected:
                    out.append(slot.name)
            elif not self._remote_connected.get(slot.name, True):
                out.append(slot.name)
        return out

    # --- commands ----------------------------------------------------------------------------

    def send(
        self, conference: Conference, command: Command, member: Optional[Participant] = None
    ) -> str:
        node = conference.node
        slot = self._nodes.slots.get(node)
        if slot is not None and slot.owned:
            return self._local.send(conference, command, member)
        owner = self._claims.owner(node)
        if owner is None or owner == self.instance:
            self._on_command(command.action, "unavailable")
            raise FocusUnavailable(node, "no instance owns the node now")
        body = wire.command_request(node, conference, command.action, command.target, member)
        body["from"] = self.instance
        try:
            answer = self._bus.request(
                names.instance_route(owner), body, self.request_timeout + self.command_timeout
            )
        except (BusUnavailable, NoAnswer) as exc:
            self._on_command(command.action, "unavailable")
            log.warning("cluster: %s on node %s via %s: %s", command.action, node, owner, exc)
            raise FocusUnavailable(node, str(exc)) from None
        outcome = answer.get("outcome")
        reply = answer.get("reply") if isinstance(answer.get("reply"), str) else ""
        self._on_command(command.action, "ok" if outcome == wire.OK else str(outcome))
        if outcome == wire.OK:
            return reply
        if outcome == wire.REJECTED:
            raise CommandRejected(reply)
        if outcome == wire.STALE and member is not None:
            now = None
            if answer.get("now") is not None:
                try:
                    now = wire.participant_from_wire(answer["now"])
                except wire.WireError:
                    now = None
            raise MemberChanged(member, now)
        raise FocusUnavailable(node, str(answer.get("error") or outcome))


class Responder:
    """Answers the other instances' requests from this instance's own state and nodes."""

    def __init__(
        self,
        *,
        instance: str,
        state: LiveState,
        claims: Claims,
        nodes: OwnedNodes,
        local: ConferenceControl,
        builder: CommandBuilder,
    ) -> None:
        self.instance = instance
        self._state = state
        self._claims = claims
        self._nodes = nodes
        self._local = local
        self._builder = builder

    def _owned(self) -> List[str]:
        return sorted(s.name for s in self._nodes if s.owned)

    def handle(self, body: Dict[str, Any]) -> Dict[str, Any]:
        owned = self._owned()
        answer = wire.reply(
            self.instance, owned, nodes={n: self._nodes.slots[n].connected for n in owned}
        )
        kind = body.get("kind")
        if kind == wire.KIND_FIND:
            name = body.get("name")
            found = self._state.find(name) if isinstance(name, str) else []
            answer["conferences"] = [wire.conference_to_wire(c) for c in found if c.node in owned]
        elif kind == wire.KIND_LIST:
            answer["conferences"] = [
                wire.conference_to_wire(c) for c in self._state.conferences() if c.node in owned
            ]
        elif kind == wire.KIND_STATUS:
            answer["status"] = [self._nodes.slots[n].status() for n in owned]
        elif kind == wire.KIND_COMMAND:
            answer.update(self._command(body, owned))
        else:
            answer["error"] = "unknown request"
        return answer

    def _command(self, body: Dict[str, Any], owned: List[str]) -> Dict[str, Any]:
        node = body.get("node")
        if node not in owned:
            return {"outcome": wire.UNAVAILABLE, "error": "node %s not owned here" % node}
        action, name, target = body.get("action"), body.get("conference"), body.get("target")
        try:
            if target is None:
                command = self._builder.conference_action(name, action)
            elif isinstance(target, str) and target.isdigit():
                command = self._builder.member(name, action, int(target))
            else:
                command = self._builder.selector(name, action, target)
        except InvalidCommand as exc:
            return {"outcome": wire.INVALID, "error": str(exc)}
        live = [c for c in self._state.find(command.conference or "") if c.node == node]
        member = None
        raw = body.get("member")
        if isinstance(raw, dict):
            conf = next((c for c in live if c.uuid == body.get("uuid")), None)
            if conf is None:
                return {"outcome": wire.STALE, "now": None}
            try:
                member = Participant(
                    participant_id=int(raw["participant_id"]),
                    call_id=str(raw["call_id"]),
                    conference_name=conf.name,
                    conference_uuid=conf.uuid,
                )
            except (KeyError, TypeError, ValueError):
                return {"outcome": wire.INVALID, "error": "bad member"}
        else:
            conf = live[0] if live else None
            if conf is None:
                return {"outcome": wire.UNAVAILABLE, "error": "conference not live on %s" % node}
        try:
            reply = self._local.send(conf, command, member)
        except MemberChanged as exc:
            return {
                "outcome": wire.STALE,
                "now": wire.participant_to_wire(exc.now) if exc.now is not None else None,
            }
        except CommandRejected as exc:
            return {"outcome": wire.REJECTED, "reply": exc.reply}
        except FocusUnavailable as exc:
            return {"outcome": wire.UNAVAILABLE, "error": str(exc)}
        return {"outcome": wire.OK, "reply": reply}

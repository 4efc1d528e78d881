"""Live conferences as the API sees them: read them, and send a built command to the node
that hosts one.  The HTTP layer uses this and never touches ESL connections itself; this module
never writes live state (the events that follow a command do)."""

from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List, Optional, Protocol

from confd.conferences.commands import Command, reply_ok
from confd.conferences.model import Conference, Participant
from confd.conferences.state import LiveState
from confd.esl.connection import EslError

log = logging.getLogger(__name__)


class Focus(Protocol):
    """What a node offers the API: its name, whether it is up, and sending a command."""

    name: str
    connected: bool

    def api(self, command: Command, timeout: Optional[float] = None) -> str: ...


class ControlError(Exception):
    pass


class FocusUnavailable(ControlError):
    """The node hosting (or that could host) the conference is not connected."""

    def __init__(self, focus: Optional[str], why: str = "") -> None:
        super().__init__(why or "focus unavailable")
        self.focus = focus


class MemberChanged(ControlError):
    """The member id no longer names the call the caller meant: the call left, or its
    conference ended (a node restart) and the id now names another call.  Nothing was sent."""

    def __init__(self, member: Participant, now: Optional[Participant]) -> None:
        super().__init__(
            "member %d is no longer call %s (%s)"
            % (member.participant_id, member.call_id, "now " + now.call_id if now else "gone")
        )
        self.member = member
        self.now = now


class CommandRejected(ControlError):
    """FreeSWITCH answered ``-ERR`` or its bare usage line."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class LiveView:
    """Live conferences as one read saw them: a list request reads every row from one view
    instead of asking again per row (in a cluster, asking is a round trip to the owners)."""

    def __init__(self, conferences: List[Conference]) -> None:
        self._all = conferences
        self._by_name: Dict[str, List[Conference]] = {}
        for conf in conferences:
            self._by_name.setdefault(conf.name, []).append(conf)

    def live(self, name: str) -> Optional[Conference]:
        found = self._by_name.get(name)
        return oldest(found) if found else None

    def conferences(self) -> List[Conference]:
        return list(self._all)


def oldest(found: List[Conference]) -> Conference:
    """The instance actions go to, should two nodes host one conference: the one started
    first (then by node and uuid, so that every instance of a cluster picks the same)."""
    return min(found, key=lambda c: (c.start_time, c.node, c.uuid))


class ConferenceControl:
    def __init__(
        self,
        state: LiveState,
        nodes: List[Focus],
        *,
        on_command: Callable[[str, str], None] = lambda action, result: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self._nodes: Dict[str, Focus] = {n.name: n for n in nodes}
        self._on_command = on_command
        self.clock = clock

    # --- reads ---------------------------------------------------------------------------------

    def live(self, name: str) -> Optional[Conference]:
        """The live instance of conference ``name`` (the oldest, should two nodes host one)."""
        found = self._state.find(name)
        return found[0] if found else None

    def conferences(self) -> List[Conference]:
        return self._state.conferences()

    def snapshot(self) -> ConferenceControl:
        """What a request reads many conferences from: here, the live state itself (reads
        are in-process and never yield)."""
        return self

    def every_node_connected(self) -> bool:
        return all(n.connected for n in self._nodes.values())

    def disconnected_nodes(self) -> List[str]:
        return [n.name for n in self._nodes.values() if not n.connected]

    # --- commands ------------------------------------------------------------------------------

    def send(
        self, conference: Conference, command: Command, member: Optional[Participant] = None
    ) -> str:
        """Send ``command`` to the node hosting ``conference``; returns the ``+OK`` reply.
        Raises ``FocusUnavailable`` (node down or lost meanwhile) or ``CommandRejected``.

        ``member``: the participant the command is about, as the caller resolved it, maybe
        before something that yielded (a database call).  Member ids start again at 1 when
        FreeSWITCH restarts, so the command is sent only if that member id of that very
        conference instance is still that call (``MemberChanged`` otherwise); nothing yields
        between this check and the command's write."""
        node = self._nodes.get(conference.node)
        if node is None or not node.connected:
            self._on_command(command.action, "unavailable")
            raise FocusUnavailable(conference.node, "node not connected")
        if member is not None:
            now = self._state.member(conference.node, conference.uuid, member.participant_id)
            if now is None or now.call_id != member.call_id:
                self._on_command(command.action, "stale")
                changed = MemberChanged(member, now)
                log.info("node %s: %r not sent: %s", conference.node, command.text, changed)
                raise changed
        try:
            reply = node.api(command)
        except EslError as exc:  # not connected, lost meanwhile, or past the deadline
            self._on_command(command.action, "unavailable")
            log.warning("node %s: %s failed: %s", conference.node, command.action, exc)
            raise FocusUnavailable(conference.node, str(exc)) from None
        if not reply_ok(reply):
            self._on_command(command.action, "rejected")
            log.info("node %s: %r rejected: %s", conference.node, command.text, reply.strip())
            raise CommandRejected(reply)
        self._on_command(command.action, "ok")
        return reply

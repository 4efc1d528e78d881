"""The node connections an instance holds while it owns the nodes (cluster.md).

In a cluster the configured nodes are not all connected here: a node's supervisor is made when
this instance claims it and stopped when it releases or loses it (a stopped supervisor does not
start again, so a later claim makes a new one).  ``Slot`` stands for a configured node in the
API's eyes (``confd.conferences.control.Focus``): connected only while owned here and connected.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional

import gevent

from confd.conferences.commands import Command
from confd.esl.node import NodeSettings, NodeSupervisor, NodeUnavailable

log = logging.getLogger(__name__)

STOP_TIMEOUT = 2.0  # a released node's supervisor ends within this


class Slot:
    """One configured node, owned here or not."""

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.supervisor: Optional[NodeSupervisor] = None
        self.stopping: Optional[gevent.Greenlet] = None  # the last supervisor's stop

    @property
    def connected(self) -> bool:
        sup = self.supervisor
        return sup is not None and sup.connected

    @property
    def owned(self) -> bool:
        return self.supervisor is not None

    def api(self, command: Command, timeout: Optional[float] = None) -> str:
        sup = self.supervisor
        if sup is None:
            raise NodeUnavailable("not owned by this instance")
        return sup.api(command, timeout)

    def status(self) -> Dict[str, Any]:
        sup = self.supervisor
        if sup is not None:
            return sup.status()
        return {
            "name": self.name,
            "host": self.settings.host,
            "port": self.settings.port,
            "connected": False,
            "conferences": 0,
            "participants": 0,
            "error": "not owned by this instance",
        }

    # The daemon's metrics read these of every node.
    @property
    def pending_commands(self) -> int:
        return self.supervisor.pending_commands if self.supervisor is not None else 0

    @property
    def resync_backlog(self) -> int:
        return self.supervisor.resync_backlog if self.supervisor is not None else 0


class OwnedNodes:
    """Starts a node's supervisor on claim, stops it on release; ``make`` builds one."""

    def __init__(
        self,
        settings: List[NodeSettings],
        make: Callable[[NodeSettings], NodeSupervisor],
        on_crash: Callable[[gevent.Greenlet], None],
    ) -> None:
        self.slots: Dict[str, Slot] = {s.name: Slot(s) for s in settings}
        self._make = make
        self._on_crash = on_crash

    def __iter__(self):
        return iter(self.slots.values())

    def claimed(self, name: str) -> None:
        slot = self.slots[name]
        if slot.supervisor is not None:
            return
        if slot.stopping is not None and not slot.stopping.dead:
            # The last owner's supervisor must have dropped its state before a new one feeds it.
            slot.stopping.join(STOP_TIMEOUT * 2)
        sup = self._make(slot.settings)
        slot.supervisor = sup
        g = sup.start()
        g.link_exception(self._on_crash)

    def released(self, name: str) -> None:
        """Close the node's connections now; the supervisor ends in the background (its state
        is dropped without publishing: nobody left, the node moves)."""
        slot = self.slots[name]
        sup, slot.supervisor = slot.supervisor, None
        if sup is None:
            return
        slot.stopping = gevent.spawn(sup.stop, STOP_TIMEOUT)
        slot.stopping.name = "stop-node-" + name
        gevent.sleep(0)  # the stop closes the sockets now, before the lock can be released

    def stop_all(self, timeout: float) -> None:
        for name in list(self.slots):
            self.released(name)
        gevent.joinall(
            [s.stopping for s in self.slots.values() if s.stopping is not None], timeout=timeout
        )

"""A whole entry setup for tests: the simulated FreeSWITCH (model, inbound event socket,
outbound calls), confd's node connection and live state, a SQLite store with an account, and
the entry service between them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import gevent

from confd.conferences.commands import RELAXED_NAME_PATTERN, CommandBuilder
from confd.conferences.state import LiveState
from confd.entry import rules
from confd.entry.directory import StoreDirectory, live_rooms
from confd.entry.server import EntryService
from confd.entry.session import Timeouts
from confd.esl.node import NodeSettings, NodeSupervisor
from confd.simulator.model import ConferenceModel
from confd.simulator.outbound import OutboundSide, SimulatedCall
from confd.simulator.server import FakeFreeSwitch
from confd.store import Store

NODE = "fs1"


def wait_until(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        gevent.sleep(0.005)


@dataclass
class World:
    store: Store
    account: str
    model: ConferenceModel
    fake: FakeFreeSwitch
    node: NodeSupervisor
    state: LiveState
    side: OutboundSide
    service: EntryService
    outcomes: List[str] = field(default_factory=list)
    steps: List[float] = field(default_factory=list)

    def conference(self, body: Dict[str, Any], account: Optional[str] = None) -> str:
        return self.store.conferences.create(account or self.account, body).id

    def call(self, answers=None, variables=None, account=True, **kw) -> SimulatedCall:
        v = dict(variables or {})
        if account:
            v.setdefault("ecallmgr_Account-ID", self.account)
        return self.side.dial(("127.0.0.1", self.service.port), answers=answers, variables=v, **kw)

    def finish(self, call: SimulatedCall, n: int = 1, timeout: float = 15.0) -> str:
        """Wait for the call's entry to end; its outcome."""
        wait_until(lambda: len(self.outcomes) >= n, timeout, "the entry outcome")
        wait_until(lambda: self.service.active == 0, timeout, "no call in entry")
        return self.outcomes[n - 1]

    def participant(self, call: SimulatedCall, conference: str):
        for conf in self.state.find(conference):
            p = conf.by_call_id(call.uuid)
            if p is not None:
                return p
        return None

    def in_room(self, call: SimulatedCall, conference: str):
        wait_until(lambda: self.participant(call, conference) is not None, 10, "the participant")
        return self.participant(call, conference)

    def absent(self, call: SimulatedCall, conference: str) -> bool:
        gevent.sleep(0.05)  # any add-member would have reached the live state by now
        return self.participant(call, conference) is None and (
            self.model.member_by_uuid(call.uuid) is None
        )

    def stop(self) -> None:
        self.service.stop(timeout=1)
        for call in self.side.calls:
            call.hang_up()
        self.node.stop(timeout=1)
        self.fake.stop()
        self.store.close()


def make_world(
    tmp_path,
    settings: Optional[rules.EntrySettings] = None,
    max_calls: int = 500,
    timeouts: Optional[Timeouts] = None,
    enforce_max_members: bool = True,
    time_scale: float = 0.001,
    **service_kw,
) -> World:
    store = Store.from_url(f"sqlite:///{tmp_path}/entry.db")
    account, _ = store.accounts.create_account("entry-tests")
    model = ConferenceModel(hostname="sim")
    fake = FakeFreeSwitch(model).start()
    state = LiveState()
    node = NodeSupervisor(
        NodeSettings(
            name=NODE,
            host="127.0.0.1",
            port=fake.port,
            password="ClueCon",
            reconnect_min=0.05,
            reconnect_max=0.4,
            command_timeout=2.0,
            heartbeat_timeout=30.0,
        ),
        state,
        CommandBuilder(RELAXED_NAME_PATTERN),
        publish=lambda updates: None,
    )
    node.start()
    wait_until(lambda: node.connected, 10, "the node connection")
    outcomes: List[str] = []
    steps: List[float] = []
    service = EntryService(
        listen="127.0.0.1:0",
        settings=settings or rules.EntrySettings(),
        directory=StoreDirectory(store),
        rooms=live_rooms(state),
        max_calls=max_calls,
        on_outcome=outcomes.append,
        on_step=steps.append,
        timeouts=timeouts,
        **service_kw,
    )
    service.start()
    side = OutboundSide(model, time_scale=time_scale, enforce_max_members=enforce_max_members)
    return World(store, account["id"], model, fake, node, state, side, service, outcomes, steps)

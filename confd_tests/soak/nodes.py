"""``python -m confd_tests.soak nodes``: fake FreeSWITCH nodes and the callers that drive them.

One process hosts several ``FakeFreeSwitch`` servers (confd/simulator), each around its own
``ConferenceModel``, so every event confd gets is one the model produced for a caller's step,
with the headers, order and follow-ups (floor-change, play-file-done) of the captures.  The
callers are a driver greenlet: every TICK it takes the steps that are due at the rates the
parent set, spread over this process's nodes:

* talking: a random member of the node starts or stops talking (a muted one is passed over);
* churn: a caller joins or a non-moderator hangs up, keeping every conference within
  ``members`` +- CHURN_SPREAD (the moderator never leaves: a conference never ends, and the
  parent's REST load can act on it by a participant id that stays valid);
* mutes: ``conference <name> mute|unmute <id>`` through ``model.api``, as an operator's
  command would.

Back-pressure: a node whose event connection has more than HOLD_BACKLOG frames queued (confd
reads slower than the node writes) takes no step this tick; the step is counted as ``held``.
So a confd slower than the asked rate shows as a lower achieved rate, not as a node dropping
confd for not reading (which the fake does when its queue bound is hit).

Commands (stdin): ``POPULATE {"account": A, "plan": {node: [conference, ...]}}``,
``RATE {"talk": r, "churn": r, "mute": r}``, ``PAUSE``, ``RESUME``, ``DUMP <path>``, ``QUIT``.
Reports (stdout): ``PORTS [...]``, ``POPULATED <json>``, ``PAUSED <json>``, ``DUMPED``, and
``STATUS <json>`` every STATUS_EVERY seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import random
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import gevent

from confd.simulator.model import ConferenceModel
from confd.simulator.server import FakeFreeSwitch
from confd_tests.loadtools import say, stdin_lines

log = logging.getLogger(__name__)

TICK = 0.01  # seconds between two driver steps
STATUS_EVERY = 0.25
HOLD_BACKLOG = 1000  # frames queued for confd's event connection past which a node holds
MAX_QUEUE = 50000  # the fake's own bound per connection (it drops a client past it)
MAX_CATCH_UP = 0.1  # seconds of steps a driver may owe after a stall (no bursts)
CHURN_SPREAD = 2
PAUSE_DRAIN = 15.0  # seconds PAUSE waits for every node's queue to empty
ACCOUNT_VAR = "ecallmgr_Account-ID"  # what Kazoo's ecallmgr sets on every channel
NAMES = ("Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy")
KINDS = ("talk", "churn", "mute")


class Node:
    """One fake FreeSWITCH and what the driver needs to know of it."""

    def __init__(self, name: str, hostname: str) -> None:
        self.name = name
        self.model = ConferenceModel(hostname=hostname)
        self.fake = FakeFreeSwitch(self.model, max_queue=MAX_QUEUE)
        self.emitted = 0
        self.model.add_listener(self._count)
        self.conferences: List[str] = []
        self._talkers: Optional[List[int]] = None  # every member id, rebuilt after churn

    def _count(self, _pairs: Any) -> None:
        self.emitted += 1

    def backlog(self) -> int:
        # The fake's per-connection writer queues: frames produced but not yet on the socket.
        return sum(conn.queue.qsize() for conn in self.fake._conns)

    def talkers(self) -> List[int]:
        if self._talkers is None:
            self._talkers = [m.id for m in self.model.members()]
        return self._talkers

    def churned(self) -> None:
        self._talkers = None


class Driver:
    def __init__(self, nodes: List[Node], members: int, seed: int) -> None:
        self.nodes = nodes
        self.members = members
        self.account = ""
        self.rng = random.Random(seed)
        self.rates = {k: 0.0 for k in KINDS}
        self.done = {"talk": 0, "join": 0, "leave": 0, "mute": 0, "unmute": 0, "skipped": 0}
        self.held = {k: 0 for k in KINDS}
        self.paused = True
        self._owed = {k: 0.0 for k in KINDS}
        self._turn = 0

    # --- population --------------------------------------------------------------------------

    def join(self, node: Node, conference: str, moderator: bool = False) -> None:
        rng = self.rng
        node.model.join(
            conference,
            caller_id_name=rng.choice(NAMES),
            caller_id_number="1%03d" % rng.randrange(1000),
            moderator=moderator,
            channel_vars={ACCOUNT_VAR: self.account},
            direction="inbound",
        )
        node.churned()

    def populate(self, account: str, plan: Dict[str, List[str]]) -> None:
        """Fill every conference of ``plan`` (node name -> conference names): its moderator
        first, then ``members - 1`` callers, each carrying ``account`` as ecallmgr does."""
        self.account = account
        for node in self.nodes:
            node.conferences = list(plan.get(node.name, []))
            for name in node.conferences:
                self.join(node, name, moderator=True)
                for _ in range(self.members - 1):
                    self.join(node, name)

    # --- the steps ---------------------------------------------------------------------------

    def talk(self, node: Node) -> None:
        ids = node.talkers()
        for _ in range(3):  # a muted member cannot talk: try another one
            mid = ids[self.rng.randrange(len(ids))]
            m = node.model.member(mid)
            if m is None:
                continue
            if node.model.set_talking(mid, not m.talking):
                self.done["talk"] += 1
                return
        self.done["skipped"] += 1

    def churn(self, node: Node) -> None:
        name = self.rng.choice(node.conferences)
        conf = node.model.conferences.get(name)
        n = len(conf.members) if conf is not None else 0
        low, high = self.members - CHURN_SPREAD, self.members + CHURN_SPREAD
        others = [m for m in (conf.members.values() if conf else ()) if not m.moderator]
        if n < low or not others or (n < high and self.rng.random() < 0.5):
            self.join(node, name)
            self.done["join"] += 1
        else:
            node.model.leave(self.rng.choice(others).id)
            node.churned()
            self.done["leave"] += 1

    def mute(self, node: Node) -> None:
        name = self.rng.choice(node.conferences)
        conf = node.model.conferences.get(name)
        others = [m for m in (conf.members.values() if conf else ()) if not m.moderator]
        if not others:
            self.done["skipped"] += 1
            return
        m = self.rng.choice(others)
        verb = "mute" if m.can_speak else "unmute"
        node.model.api("conference %s %s %d" % (name, verb, m.id))
        self.done[verb] += 1

    def tick(self, dt: float) -> None:
        if self.paused:
            return
        ready = [n for n in self.nodes if n.conferences and n.backlog() <= HOLD_BACKLOG]
        for kind in KINDS:
            rate = self.rates[kind]
            owed = min(self._owed[kind] + rate * dt, rate * MAX_CATCH_UP + 1.0)
            steps = int(owed)
            self._owed[kind] = owed - steps
            if not steps:
                continue
            if not ready:
                self.held[kind] += steps
                continue
            step = getattr(self, kind)
            total = len(self.nodes)
            for _ in range(steps):
                node = self.nodes[self._turn % total]
                self._turn += 1
                if node in ready:
                    step(node)
                else:
                    self.held[kind] += 1

    def run(self) -> None:
        last = time.monotonic()
        while True:
            gevent.sleep(TICK)
            now = time.monotonic()
            try:
                self.tick(now - last)
            except Exception:  # noqa: BLE001 - reported to the parent, which fails the soak
                log.exception("driver step failed")
                say("ERROR driver step failed (see the nodes log)")
                self.paused = True
            last = now

    # --- reports -----------------------------------------------------------------------------

    def status(self) -> Dict[str, Any]:
        return {
            "t": time.monotonic(),
            "emitted": sum(n.emitted for n in self.nodes),
            "done": dict(self.done),
            "held": dict(self.held),
            "backlog": max((n.backlog() for n in self.nodes), default=0),
            "connections": [n.fake.connections for n in self.nodes],
            "accepted": [n.fake._accepted for n in self.nodes],
            "slow_client_drops": sum(n.fake.slow_client_drops for n in self.nodes),
            "members": sum(len(n.model.members()) for n in self.nodes),
            "commands": sum(len(n.fake.commands) for n in self.nodes),
        }

    def dump(self) -> Dict[str, Any]:
        return {
            n.name: {
                "hostname": n.model.hostname,
                "emitted": n.emitted,
                "json_list": json.loads(n.model.api("conference json_list compact")),
            }
            for n in self.nodes
        }


def _wait_drained(nodes: List[Node], timeout: float) -> bool:
    limit = time.monotonic() + timeout
    while any(n.backlog() for n in nodes):
        if time.monotonic() > limit:
            return False
        gevent.sleep(0.01)
    return True


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m confd_tests.soak nodes")
    ap.add_argument("--names", required=True, help="comma-separated node names")
    ap.add_argument("--members", type=int, default=10, help="members per conference")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    nodes = [Node(name, "soak-" + name) for name in a.names.split(",")]
    for n in nodes:
        n.fake.start()
    driver = Driver(nodes, a.members, a.seed)
    say("PORTS", [n.fake.port for n in nodes])
    gevent.spawn(driver.run)
    lines = stdin_lines()
    next_status = time.monotonic()
    while True:
        try:
            line = lines.get_nowait()
        except queue.Empty:
            line = ""
        if line is None or line == "QUIT":
            break
        if time.monotonic() >= next_status:
            say("STATUS", driver.status())
            next_status += STATUS_EVERY
        if not line:
            gevent.sleep(0.02)
            continue
        word, _, rest = line.partition(" ")
        if word == "POPULATE":
            spec = json.loads(rest)
            driver.populate(spec["account"], spec["plan"])
            _wait_drained(nodes, PAUSE_DRAIN)
            say("POPULATED", driver.status())
        elif word == "RATE":
            driver.rates.update({k: float(v) for k, v in json.loads(rest).items() if k in KINDS})
        elif word == "RESUME":
            driver.paused = False
        elif word == "PAUSE":
            driver.paused = True
            drained = _wait_drained(nodes, PAUSE_DRAIN)
            say("PAUSED", dict(driver.status(), drained=drained))
        elif word == "DUMP":
            Path(rest).write_text(json.dumps(driver.dump()))
            say("DUMPED", rest)
    for n in nodes:
        n.fake.stop()
    return 0

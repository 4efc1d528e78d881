"""Which nodes an instance claims, and which it hands over (cluster.md, "One owner per node").

Pure: a function of what the database shows (who owns what, who is live).  Every instance runs
it on its own each round; the advisory lock decides any race.

* An instance claims unowned nodes only up to its share (``ceil(nodes / live instances)``): no
  instance takes more than its share while others have none.
* A node does not move back when an instance returns, unless the spread is uneven by more than
  one node: then the instance with the most (the first by name, among equals) hands one over
  (released, then claimed by one of those with the fewest), one per round.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence


@dataclass(frozen=True)
class Plan:
    claim: List[str]  # try these, in this order, until the share is reached
    release: Optional[str]  # hand this one over


def share(nodes: int, live: int) -> int:
    return -(-nodes // max(1, live))


def _order(me: str, names: Iterable[str]) -> List[str]:
    """A per-instance order of the nodes: instances claiming at once start on different ones."""
    return sorted(names, key=lambda n: hashlib.sha256(("%s/%s" % (me, n)).encode()).digest())


def plan(me: str, nodes: Sequence[str], owners: Dict[str, str], live: Iterable[str]) -> Plan:
    """``owners``: node -> the live instance holding its lock; ``live``: the live instances
    (``me`` among them)."""
    alive = set(live) | {me}
    counts = {name: 0 for name in alive}
    for node in nodes:
        owner = owners.get(node)
        if owner in counts:
            counts[owner] += 1
    mine = sorted(n for n in nodes if owners.get(n) == me)
    unowned = [n for n in nodes if owners.get(n) not in alive]
    fair = share(len(nodes), len(alive))
    if unowned:
        # Only an instance with no more than the fewest claims: one that just handed a node
        # over (it has more than the fewest) must not take it straight back.
        room = fair - len(mine) if len(mine) <= min(counts.values()) else 0
        return Plan(_order(me, unowned) if room > 0 else [], None)
    if mine and len(mine) > min(counts.values()) + 1:
        # One node per round in the whole cluster: only the first (by name) of the instances
        # with the most hands one over, the last in its own order (the same node each round
        # until it goes).
        top = max(counts.values())
        if me == min(name for name, n in counts.items() if n == top):
            return Plan([], _order(me, mine)[-1])
    return Plan([], None)

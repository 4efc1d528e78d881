"""confd.cluster.spread: which nodes an instance claims and which it hands over (pure).

The rounds below play what ``Claims`` does with a plan: try the ``claim`` list in order until
the instance holds its share (a node someone holds cannot be taken: the advisory lock), then
release the ``release`` node.  The properties: no instance ever claims past its share; every
node ends owned and the spread even (max - min <= 1), whatever the start and whatever the
order the instances run in; an even spread never moves.
"""

from __future__ import annotations

from typing import Dict, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confd.cluster.spread import Plan, plan, share

NODES = ["fs%d" % i for i in range(1, 7)]


def counts(owners: Dict[str, str], live: Sequence[str]) -> Dict[str, int]:
    out = {name: 0 for name in live}
    for owner in owners.values():
        out[owner] += 1
    return out


def play_round(nodes: Sequence[str], owners: Dict[str, str], order: Sequence[str]) -> None:
    """Every live instance's round, in ``order``: as ``Claims._round`` does with its plan
    (asserting that no claim takes an instance past its share)."""
    live = list(order)
    for me in order:
        p = plan(me, nodes, owners, live)
        fair = share(len(nodes), len(live))
        for node in p.claim:
            if sum(1 for o in owners.values() if o == me) >= fair:
                break
            if node not in owners:  # the lock is free
                owners[node] = me
                assert fair >= sum(1 for o in owners.values() if o == me)
        if p.release is not None:
            assert owners[p.release] == me, "an instance hands over only its own node"
            del owners[p.release]


def is_even(nodes: Sequence[str], owners: Dict[str, str], live: Sequence[str]) -> bool:
    c = counts(owners, live)
    return set(owners) == set(nodes) and max(c.values()) - min(c.values()) <= 1


# --- share ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "nodes, live, expected",
    [(6, 3, 2), (7, 3, 3), (6, 4, 2), (1, 3, 1), (0, 2, 0), (6, 1, 6), (6, 0, 6), (5, 5, 1)],
)
def test_share_is_the_ceiling_of_nodes_per_live_instance(nodes, live, expected):
    assert share(nodes, live) == expected


# --- claiming -------------------------------------------------------------------------------


def test_alone_claims_every_node_and_releases_none():
    p = plan("a", NODES, {}, ["a"])
    assert sorted(p.claim) == NODES and p.release is None


def test_unowned_nodes_are_offered_in_an_order_of_the_instance_own():
    orders = {tuple(plan(me, NODES, {}, ["a", "b", "c"]).claim) for me in "abcdefgh"}
    assert all(sorted(o) == NODES for o in orders)
    assert len({o[0] for o in orders}) > 1, "every instance would race for the same node first"


def test_only_unowned_nodes_are_offered():
    owners = {"fs1": "a", "fs2": "b", "fs3": "b"}
    p = plan("a", NODES, owners, ["a", "b"])
    assert sorted(p.claim) == ["fs4", "fs5", "fs6"] and p.release is None


def test_a_node_of_a_dead_instance_is_unowned():
    owners = {"fs1": "gone", "fs2": "gone", "fs3": "b"}
    p = plan("a", NODES, owners, ["a", "b"])
    assert sorted(p.claim) == ["fs1", "fs2", "fs4", "fs5", "fs6"]


def test_no_claim_once_the_share_is_held():
    owners = {"fs1": "a", "fs2": "a", "fs3": "a"}  # share of 6 over 2 = 3
    assert plan("a", NODES, owners, ["a", "b"]) == Plan([], None)


def test_never_a_release_while_a_node_is_unowned():
    owners = {n: "a" for n in NODES[:5]}  # a: 5, b: 0, fs6 unowned
    p = plan("a", NODES, owners, ["a", "b"])
    assert p == Plan([], None)


def test_the_share_counts_this_instance_even_when_not_listed_live():
    # Its own lock may not be in the round's view yet: it is live all the same.
    assert plan("a", NODES, {}, ["b"]).claim  # share 3 of 6, room for a
    fair = share(len(NODES), len({"b"} | {"a"}))
    assert fair == 3


# --- moving back ----------------------------------------------------------------------------


def test_a_returning_instance_takes_nothing_itself():
    owners = {"fs1": "a", "fs2": "a", "fs3": "a", "fs4": "b", "fs5": "b", "fs6": "b"}
    assert plan("c", NODES, owners, ["a", "b", "c"]) == Plan([], None)


def test_no_move_back_when_uneven_by_one():
    # 5 nodes over 3: 2, 2, 1 (c came back and got the one left): nothing moves.
    nodes = NODES[:5]
    owners = {"fs1": "a", "fs2": "a", "fs3": "b", "fs4": "b", "fs5": "c"}
    for me in "abc":
        assert plan(me, nodes, owners, ["a", "b", "c"]) == Plan([], None)
    # 2 nodes over 3 (c returns with none): 1, 1, 0 is even enough.
    owners = {"fs1": "a", "fs2": "b"}
    for me in "abc":
        assert plan(me, NODES[:2], owners, ["a", "b", "c"]) == Plan([], None)


def test_uneven_by_more_than_one_hands_exactly_one_over():
    owners = {"fs1": "a", "fs2": "a", "fs3": "a", "fs4": "b", "fs5": "b", "fs6": "b"}
    live = ["a", "b", "c"]  # c returned: 3, 3, 0
    # One node per round in the whole cluster: of the two with the most, the first by name.
    p = plan("a", NODES, owners, live)
    assert p.claim == []
    assert p.release is not None and owners[p.release] == "a"
    # The same node round after round, until it has gone.
    assert plan("a", NODES, owners, live).release == p.release
    assert plan("b", NODES, owners, live) == Plan([], None)
    # Once a's node has gone to c (2, 3, 1), b is the one with the most: its turn.
    owners[p.release] = "c"
    q = plan("b", NODES, owners, live)
    assert q.release is not None and owners[q.release] == "b"
    assert plan("a", NODES, owners, live) == Plan([], None)


def test_only_the_instances_above_min_plus_one_hand_over():
    owners = {"fs1": "a", "fs2": "a", "fs3": "a", "fs4": "a", "fs5": "b", "fs6": "c"}
    live = ["a", "b", "c"]  # 4, 1, 1
    assert plan("a", NODES, owners, live).release in {"fs1", "fs2", "fs3", "fs4"}
    assert plan("b", NODES, owners, live) == Plan([], None)
    assert plan("c", NODES, owners, live) == Plan([], None)


def test_the_handed_over_node_goes_to_the_instance_with_fewer():
    owners = {n: "a" for n in NODES}
    live = ["a", "b"]
    released = plan("a", NODES, owners, live).release
    del owners[released]
    p = plan("b", NODES, owners, live)
    assert p.claim == [released]


# --- properties -----------------------------------------------------------------------------

INSTANCES = ["i%d" % i for i in range(1, 6)]


@st.composite
def cluster_states(draw):
    nodes = ["n%d" % i for i in range(draw(st.integers(min_value=0, max_value=12)))]
    live = draw(st.lists(st.sampled_from(INSTANCES), min_size=1, max_size=5, unique=True))
    # Owners among the live instances and some dead ones (their locks are gone: unowned).
    holders = live + ["dead1", "dead2"]
    owners = {}
    for node in nodes:
        owner = draw(st.one_of(st.none(), st.sampled_from(holders)))
        if owner is not None and owner in live:
            owners[node] = owner
    order = draw(st.permutations(live))
    return nodes, owners, list(order)


@settings(max_examples=300, deadline=None)
@given(cluster_states())
def test_rounds_converge_to_an_even_spread_with_every_node_owned(state):
    nodes, owners, order = state
    rounds = 0
    limit = 4 * len(nodes) + 4
    while not is_even(nodes, owners, order):
        rounds += 1
        assert rounds <= limit, "not even after %d rounds: %r" % (limit, owners)
        play_round(nodes, owners, order)
    # Even and complete: nothing moves any more.
    before = dict(owners)
    play_round(nodes, owners, order)
    assert owners == before


@settings(max_examples=300, deadline=None)
@given(cluster_states())
def test_no_plan_claims_a_held_node_or_releases_another_instance_node(state):
    nodes, owners, order = state
    for me in order:
        p = plan(me, nodes, owners, order)
        assert not set(p.claim) & set(owners)
        assert len(p.claim) == len(set(p.claim))
        assert p.release is None or owners.get(p.release) == me
        if p.claim:
            assert p.release is None
        mine = sum(1 for o in owners.values() if o == me)
        if mine >= share(len(nodes), len(order)):
            assert p.claim == [], "claims past its share"


@settings(max_examples=300, deadline=None)
@given(cluster_states())
def test_an_even_complete_spread_never_moves(state):
    nodes, owners, order = state
    if not is_even(nodes, owners, order):
        # Make it even and complete first: deal the nodes round-robin.
        owners = {n: order[i % len(order)] for i, n in enumerate(nodes)}
    for me in order:
        assert plan(me, nodes, owners, order) == Plan([], None)


def test_the_instance_that_handed_a_node_over_does_not_claim_it_back():
    # 4 nodes over a, b and c returning: a (2, 2, 0) hands fs1 over.  While c, with none, is
    # live, fs1 is c's to take: a taking it back would move it (drop, connect, resync) for
    # nothing, and again every round its turn comes before c's.
    nodes = NODES[:4]
    owners = {"fs1": "a", "fs2": "a", "fs3": "b", "fs4": "b"}
    live = ["a", "b", "c"]
    released = plan("a", nodes, owners, live).release
    assert released is not None
    del owners[released]
    assert plan("a", nodes, owners, live).claim == []
    assert plan("c", nodes, owners, live).claim == [released]


@settings(max_examples=300, deadline=None)
@given(cluster_states(), st.data())
def test_rounds_converge_whatever_order_the_instances_run_in(state, data):
    # Rounds are not in lockstep: one instance's round may come twice before another's.
    nodes, owners, order = state
    limit = 4 * len(nodes) + 4
    for _ in range(limit):
        if is_even(nodes, owners, order):
            break
        play_round(nodes, owners, data.draw(st.permutations(order)))
    assert is_even(nodes, owners, order), "not even after %d rounds: %r" % (limit, owners)

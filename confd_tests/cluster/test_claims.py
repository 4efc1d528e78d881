"""confd.cluster.claims against a real PostgreSQL (CONFD_TEST_DATABASE_URL): node ownership as
advisory locks on each instance's own session.

Several ``Claims`` run here as greenlets (psycopg2 made cooperative by the store's wait
callback), each with its own session, as separate instances would.  Every test uses a cluster
name and instance names of its own, so runs sharing the database never see each other's locks.
What is asserted is what PostgreSQL shows (``pg_locks`` joined with ``pg_stat_activity``) and
the order of the callbacks, never a duration.
"""

from __future__ import annotations

import os
import secrets
from typing import Dict, List, Optional, Set, Tuple

import gevent
import psycopg2
import pytest
from psycopg2 import extensions

from confd.cluster import claims as claims_mod
from confd.cluster import names
from confd.cluster.claims import Claims
from confd.store.db import install_gevent_wait_callback
from confd_tests.conftest import wait_until

PG_URL = os.environ.get("CONFD_TEST_DATABASE_URL")
# What the tests read of PostgreSQL, written here rather than taken from claims.py: every
# advisory lock held in this database, with the application_name of the session holding it.
HELD = """
SELECT l.classid::bigint, l.objid::bigint, a.application_name
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
NODES = ["fs%d" % i for i in range(1, 7)]
INTERVAL = 0.2
WAIT = 30.0  # generous: a busy 2-core machine


@pytest.fixture
def pg():
    assert PG_URL, "CONFD_TEST_DATABASE_URL must be set (postgresql://postgres@127.0.0.1:5432/test)"
    previous = extensions.get_wait_callback()
    install_gevent_wait_callback()
    conn = psycopg2.connect(PG_URL, application_name="confd-test-admin")
    conn.autocommit = True
    yield conn
    conn.close()
    extensions.set_wait_callback(previous)


class Instances:
    """``Claims`` of one cluster; ``log`` gets ("claimed" | "released", instance, node) in the
    order the callbacks ran, and ``held_at_release`` who PostgreSQL showed holding a node's
    lock when its ``on_released`` ran (a clean handover: connections first, then the lock)."""

    def __init__(self, admin, nodes: List[str] = NODES) -> None:
        self.admin = admin
        self.cluster = "t" + secrets.token_hex(5)
        self.nodes = list(nodes)
        self.log: List[Tuple[str, str, str]] = []
        self.held_at_release: List[Tuple[str, str, Optional[str]]] = []
        self.all: List[Claims] = []

    def name(self, short: str) -> str:
        return "%s-%s" % (short, self.cluster)

    def start(self, short: str, interval: float = INTERVAL, check_release: bool = False) -> Claims:
        instance = self.name(short)

        def claimed(node: str) -> None:
            self.log.append(("claimed", instance, node))

        def released(node: str) -> None:
            self.log.append(("released", instance, node))
            if check_release:
                self.held_at_release.append((instance, node, self.holders().get(node)))

        c = Claims(
            PG_URL,
            cluster=self.cluster,
            instance=instance,
            nodes=self.nodes,
            interval=interval,
            on_claimed=claimed,
            on_released=released,
        )
        c.start()
        self.all.append(c)
        return c

    def stop(self) -> None:
        for c in self.all:
            c.stop(timeout=2)

    def holders(self) -> Dict[str, str]:
        """node -> the instance whose session holds its lock, as PostgreSQL shows it."""
        with self.admin.cursor() as cur:
            cur.execute(HELD)
            rows = cur.fetchall()
        by_parts = {names.lock_parts(names.lock_key(self.cluster, n)): n for n in self.nodes}
        out = {}
        for classid, objid, application in rows:
            node = by_parts.get((int(classid), int(objid)))
            if node is not None:
                out[node] = names.instance_of(application or "")
        return out

    def live_sessions(self) -> Set[str]:
        """The instances whose own (instance) lock PostgreSQL shows held."""
        with self.admin.cursor() as cur:
            cur.execute(HELD)
            rows = cur.fetchall()
        out = set()
        for classid, objid, application in rows:
            instance = names.instance_of(application or "")
            key = names.instance_key(self.cluster, instance)
            if instance and (int(classid), int(objid)) == names.lock_parts(key):
                out.add(instance)
        return out

    def pid_of(self, c: Claims) -> int:
        with self.admin.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                (names.application_name(c.instance),),
            )
            rows = cur.fetchall()
        assert len(rows) == 1, rows
        return rows[0][0]

    def kill_session(self, c: Claims) -> None:
        with self.admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (self.pid_of(c),))

    def even(self, live: List[Claims]) -> bool:
        """Every node owned by one of ``live`` (as each believes and as PostgreSQL shows), the
        spread even."""
        mine = [c.mine for c in live]
        if sum(len(m) for m in mine) != len(self.nodes) or set().union(*mine) != set(self.nodes):
            return False
        if max(len(m) for m in mine) - min(len(m) for m in mine) > 1:
            return False
        held = self.holders()
        return all(held.get(n) == c.instance for c in live for n in c.mine)


@pytest.fixture
def cluster(pg):
    inst = Instances(pg)
    yield inst
    inst.stop()


def test_three_instances_share_six_nodes_two_each(cluster):
    a, b, c = (cluster.start(s) for s in "abc")
    wait_until(lambda: cluster.even([a, b, c]), WAIT, 0.05, "an even spread")
    assert sorted(len(x.mine) for x in (a, b, c)) == [2, 2, 2]
    # PostgreSQL shows each lock held by the session named after its owner.
    held = cluster.holders()
    for x in (a, b, c):
        assert {n for n, owner in held.items() if owner == x.instance} == x.mine
    assert cluster.live_sessions() == {a.instance, b.instance, c.instance}
    # Every callback: each node claimed once by the instance that holds it.
    claimed = [(i, n) for what, i, n in cluster.log if what == "claimed"]
    released = [(i, n) for what, i, n in cluster.log if what == "released"]
    for i, n in released:  # a handover while spreading: released, then claimed again
        claimed.remove((i, n))
    assert sorted(claimed) == sorted((x.instance, n) for x in (a, b, c) for n in x.mine)


def test_each_instance_sees_who_owns_what(cluster):
    a, b = cluster.start("a"), cluster.start("b")
    wait_until(lambda: cluster.even([a, b]), WAIT, 0.05, "an even spread")
    # The next round of each has read the other's locks.
    wait_until(
        lambda: all(x.owner(n) is not None for x in (a, b) for n in NODES), WAIT, 0.05, "owners"
    )
    for x in (a, b):
        for n in NODES:
            assert x.owner(n) == (a.instance if n in a.mine else b.instance)


def test_a_lost_session_drops_its_nodes_and_the_others_claim_them(cluster):
    a, b, c = (cluster.start(s) for s in "abc")
    wait_until(lambda: cluster.even([a, b, c]), WAIT, 0.05, "an even spread")
    lost = set(a.mine)
    assert len(lost) == 2
    mark = len(cluster.log)
    cluster.kill_session(a)
    wait_until(lambda: not a.mine, WAIT, 0.01, "a dropping its nodes")
    assert not a.live and a.error
    dropped = {n for what, i, n in cluster.log[mark:] if what == "released" and i == a.instance}
    assert dropped == lost, "on_released for every node the lost session held"
    # The others own everything meanwhile (or a is back and the spread is even again).
    wait_until(lambda: cluster.even([b, c]) or cluster.even([a, b, c]), WAIT, 0.05, "failover")
    taken = {n for what, i, n in cluster.log[mark:] if what == "claimed" and i != a.instance}
    assert lost <= taken
    # a comes back (a new session) and the spread evens out again: 3, 3, 0 moves one each.
    wait_until(lambda: cluster.even([a, b, c]), WAIT, 0.05, "a back in the spread")
    assert a.live and a.instance in cluster.live_sessions()
    assert a.losses == 1


def test_a_lost_session_is_seen_at_once_not_at_the_next_round(cluster):
    # A long interval: the next round is up to 10 s away; the session's socket tells at once
    # (within half of that here, a bound no busy machine comes near).
    a = cluster.start("a", interval=10.0)
    wait_until(lambda: len(a.mine) == len(NODES), 60, 0.05, "a owning every node")
    gevent.sleep(0.5)  # a is between rounds now
    cluster.kill_session(a)
    wait_until(lambda: not a.mine, 5.0, 0.01, "a dropping its nodes before its next round")
    assert not a.live


def test_hand_over_releases_first_then_frees_the_locks_and_others_claim(cluster):
    a = cluster.start("a", check_release=True)
    b = cluster.start("b", check_release=True)
    c = cluster.start("c", check_release=True)
    wait_until(lambda: cluster.even([a, b, c]), WAIT, 0.05, "an even spread")
    given = set(a.mine)
    cluster.held_at_release.clear()
    a.hand_over(timeout=2)
    # on_released ran for each node while its lock was still held: connections first.
    assert {n for i, n, _ in cluster.held_at_release if i == a.instance} == given
    assert all(h == a.instance for i, _, h in cluster.held_at_release if i == a.instance)
    # Then the session ended: a is not live any more, and its locks go with the session (the
    # server ends the backend a moment after the client closed it).
    assert not a.live and not a.mine
    wait_until(
        lambda: (
            a.instance not in cluster.holders().values()
            and a.instance not in cluster.live_sessions()
        ),
        WAIT,
        0.01,
        "a's locks gone",
    )
    wait_until(lambda: cluster.even([b, c]), WAIT, 0.05, "b and c owning every node")
    assert sorted(len(x.mine) for x in (b, c)) == [3, 3]
    gevent.sleep(4 * INTERVAL)
    assert not a.mine and a.instance not in cluster.holders().values(), "a claimed again"


def test_a_spread_handover_releases_before_unlocking(cluster):
    a = cluster.start("a", check_release=True)
    wait_until(lambda: len(a.mine) == len(NODES), WAIT, 0.05, "a owning every node")
    b = cluster.start("b", check_release=True)
    wait_until(lambda: cluster.even([a, b]), WAIT, 0.05, "an even spread")
    moved = [(i, n, h) for i, n, h in cluster.held_at_release if i == a.instance]
    assert len(moved) >= 3
    assert all(h == a.instance for _, _, h in moved), moved
    # Each move: released by a, then claimed by b.
    for _, node, _ in moved:
        events = [(what, i) for what, i, n in cluster.log if n == node]
        assert events[events.index(("released", a.instance)) + 1][1] == b.instance


def test_a_returning_instance_takes_nothing_back_when_even_by_one(pg):
    inst = Instances(pg, nodes=NODES[:2])
    try:
        a, b = inst.start("a"), inst.start("b")
        wait_until(lambda: inst.even([a, b]), WAIT, 0.05, "one node each")
        c = inst.start("c")
        wait_until(lambda: c.live and c.rounds >= 5, WAIT, 0.05, "c live for some rounds")
        assert not c.mine and len(a.mine) == len(b.mine) == 1
    finally:
        inst.stop()


def test_a_second_instance_of_the_same_name_waits_for_the_first(cluster):
    a = cluster.start("a")
    wait_until(lambda: a.live and len(a.mine) == len(NODES), WAIT, 0.05, "a owning every node")
    twin = Claims(
        PG_URL,
        cluster=cluster.cluster,
        instance=a.instance,
        nodes=NODES,
        interval=INTERVAL,
        on_claimed=lambda n: cluster.log.append(("claimed", "twin", n)),
        on_released=lambda n: cluster.log.append(("released", "twin", n)),
    )
    twin.start()
    cluster.all.append(twin)
    wait_until(lambda: twin.error and "another live instance" in twin.error, WAIT, 0.05, "twin")
    gevent.sleep(5 * INTERVAL)
    assert not twin.live and not twin.mine
    assert not any(i == "twin" for _, i, _ in cluster.log)
    a.stop(timeout=2)
    # Once the first is gone, the second is live and owns the nodes.
    wait_until(lambda: twin.live and len(twin.mine) == len(NODES), WAIT, 0.05, "twin live")


def test_live_instances_lists_every_live_instance_with_since_and_nodes(cluster):
    a, b = cluster.start("a"), cluster.start("b")
    wait_until(lambda: cluster.even([a, b]), WAIT, 0.05, "an even spread")
    wait_until(
        lambda: (
            all(len(x.live_instances()) == 2 for x in (a, b))
            and all(sum(len(i["nodes"]) for i in x.live_instances()) == 6 for x in (a, b))
        ),
        WAIT,
        0.05,
        "each seeing both",
    )
    with cluster.admin.cursor() as cur:
        cur.execute(
            "SELECT application_name, extract(epoch FROM backend_start)::float8"
            " FROM pg_stat_activity WHERE application_name IN (%s, %s)",
            (names.application_name(a.instance), names.application_name(b.instance)),
        )
        started = {names.instance_of(app): ts for app, ts in cur.fetchall()}
    expected = [
        {"name": x.instance, "since": claims_mod.iso(started[x.instance]), "nodes": sorted(x.mine)}
        for x in sorted((a, b), key=lambda x: x.instance)
    ]
    assert a.live_instances() == expected
    assert b.live_instances() == expected
    assert expected[0]["since"].endswith("Z") and "T" in expected[0]["since"]
    # A killed instance disappears from the others' list within a round or so.
    cluster.kill_session(a)
    a.stop(timeout=2)
    wait_until(
        lambda: [i["name"] for i in b.live_instances()] == [b.instance], WAIT, 0.05, "a gone"
    )


def test_status_says_live_or_why_not(cluster):
    a = cluster.start("a")
    wait_until(lambda: a.live, WAIT, 0.05, "a live")
    st = a.status()
    assert st["live"] is True and st["error"] is None and st["since"].endswith("Z")
    broken = Claims(
        "postgresql://postgres@127.0.0.1:1/none",
        cluster=cluster.cluster,
        instance=cluster.name("z"),
        nodes=NODES,
        interval=INTERVAL,
        on_claimed=lambda n: None,
        on_released=lambda n: None,
    )
    broken.start()
    cluster.all.append(broken)
    wait_until(lambda: broken.rounds == 0 and broken.error != "not connected yet", WAIT, 0.05)
    assert broken.status()["live"] is False and broken.status()["error"]
    assert broken.owner("fs1") is None and broken.live_instances() == []


def test_reconnecting_after_a_live_session_starts_the_backoff_again(cluster, monkeypatch):
    # A session that was live and is lost is the first failure of a new series: its reconnect
    # waits RECONNECT_MIN, however many sessions were lost before (days apart).
    attempts: List[int] = []
    real = claims_mod.backoff_delay

    def recording(attempt, lo, hi, rng):
        attempts.append(attempt)
        return real(attempt, lo, hi, rng)

    monkeypatch.setattr(claims_mod, "backoff_delay", recording)
    a = cluster.start("a")
    for n in range(3):
        wait_until(lambda n=n: a.live and a.losses == n, WAIT, 0.05, "a live")
        cluster.kill_session(a)
        wait_until(lambda n=n: len(attempts) == n + 1, WAIT, 0.01, "a reconnecting")
    assert attempts == [0, 0, 0]

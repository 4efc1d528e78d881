"""Account scoping across instances is exactly as strict as in one process (issue 13, item 3).

Events of a node reach another instance's websocket clients through that instance's own queue
and fan-out, which applies the one ownership rule (``confd.conferences.ownership``).  Here, on
every instance at once: the account's own client sees its conferences on every node (its own
instance's and the others'), an admin account's client sees them too, and a client of another,
non-admin account sees none of them, with a wildcard binding or one naming the conference.  And
the instance's queue bindings follow its clients: gone once the last one leaves.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Dict, List, Tuple

import pytest

from confd_tests.cluster.harness import Cluster, Subscriber
from confd_tests.soak import REPO_ROOT

pytestmark = pytest.mark.timeout(300)

EVERY = "conference.event.*.*"


def _account(c: Cluster, name: str, admin: bool) -> Tuple[str, str]:
    """A new account (``confd accounts create``) and a token for it: (id, token)."""
    done = subprocess.run(
        [sys.executable, "-m", "confd", "accounts", "create", "--name", name]
        + (["--admin"] if admin else [])
        + ["--config", str(c.instances[0].config)],
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=60,
        env=c.env,
    )
    assert done.returncode == 0, done.stderr
    account = json.loads(done.stdout)
    status, body = c.http(0, "PUT", "/v2/api_auth", {"data": {"api_key": account["api_key"]}})
    assert status == 201, body
    return account["id"], body["auth_token"]


def _conferences(sub: Subscriber) -> Dict[str, int]:
    """Conference id -> events received for it."""
    out: Dict[str, int] = {}
    for e in sub.events():
        cid = e["routing_key"].split(".")[2]
        out[cid] = out.get(cid, 0) + 1
    return out


def test_scoping_is_as_strict_on_every_instance_and_bindings_follow_clients() -> None:
    with Cluster(instances=3, nodes=6, conferences=6, members=3) as c:
        owners = c.wait_settled()
        stranger, stranger_token = _account(c, "stranger", admin=False)
        boss, boss_token = _account(c, "boss", admin=True)
        mine = list(c.conferences)  # one conference per node, round-robin
        own: List[Subscriber] = []
        bosses: List[Subscriber] = []
        strangers: List[Subscriber] = []
        for k in range(3):
            own.append(c.subscribe(k))
            bosses.append(Subscriber(c.port(k), boss_token, boss, EVERY))
            # A wildcard, and the one conference this instance does not own the node of.
            remote = next(cid for cid in mine if owners[c.conferences[cid]] != c.names[k])
            strangers.append(Subscriber(c.port(k), stranger_token, stranger, EVERY))
            strangers.append(
                Subscriber(c.port(k), stranger_token, stranger, "conference.event.%s.*" % remote)
            )
        # A token of one account cannot subscribe for another: refused, on any instance.
        with pytest.raises(RuntimeError, match="subscribe refused"):
            Subscriber(c.port(1), stranger_token, c.account, EVERY)

        c.load(talk=20.0, mute=2.0)
        for sub in own + bosses:
            sub.wait_for(
                lambda events, s=sub: set(_conferences(s)) >= set(mine),
                timeout=120,
                what="events of every node's conference on %d" % sub.port,
            )
        c.hold()
        # Whatever was still travelling when the nodes paused has arrived at the clients that
        # were to get it: one more event each after the pause proves the streams are flowing,
        # and the strangers' streams were empty all along.
        for sub in own + bosses:
            assert set(_conferences(sub)) == set(mine), _conferences(sub)
        for sub in strangers:
            assert sub.events() == [], sub.events()[:3]
            assert sub.ended is None, sub.ended

        # Bindings follow subscriptions: each instance's queue is bound to the two patterns
        # its clients use, and to nothing once they have all gone.
        for k in range(3):
            assert c.metrics(k)["confd_cluster_bindings"] == 2.0
        for sub in own + bosses + strangers:
            sub.close()
        for k in range(3):
            c.wait(
                lambda k=k: c.metrics(k)["confd_cluster_bindings"] == 0.0,
                timeout=60,
                what="instance %d's bindings gone with its clients" % k,
            )

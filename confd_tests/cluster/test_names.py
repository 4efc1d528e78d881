"""confd.cluster.names: the advisory-lock keys, application names, exchanges and queues.

The key is cluster.md's: the first 8 bytes of SHA-256 of ``"<cluster>:<node>"`` as a signed
64-bit integer, checked against hashlib, against values PostgreSQL computed itself
(``sha256()`` cut to 64 bits, as ``bigint``), and ``lock_parts`` against what ``pg_locks`` shows
for a lock held on a real PostgreSQL (``CONFD_TEST_DATABASE_URL``).
"""

from __future__ import annotations

import hashlib
import os

import psycopg2
import pytest

from confd.cluster import names
from confd.config import ClusterConfig

PG_URL = os.environ.get("CONFD_TEST_DATABASE_URL")

# Computed by PostgreSQL 15:
#   SELECT ('x' || substr(encode(sha256('confd:fs1'::bytea), 'hex'), 1, 16))::bit(64)::bigint
KNOWN = [
    ("confd", "fs1", -8699958526472615120),
    ("confd", "instance:a", -7997493102136234980),
    ("prod", "10.0.0.7:8021", 3647033219670045726),
]


@pytest.fixture
def pg():
    assert PG_URL, "CONFD_TEST_DATABASE_URL must be set (postgresql://postgres@127.0.0.1:5432/test)"
    conn = psycopg2.connect(PG_URL)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.mark.parametrize("cluster, node, key", KNOWN)
def test_lock_key_known_values(cluster, node, key):
    assert names.lock_key(cluster, node) == key


@pytest.mark.parametrize(
    "cluster, node", [("confd", "fs1"), ("c", "é:ü"), ("x.y", ""), ("a", "b:c")]
)
def test_lock_key_is_the_first_8_bytes_of_sha256_signed(cluster, node):
    digest = hashlib.sha256(("%s:%s" % (cluster, node)).encode("utf-8")).digest()
    expected = int.from_bytes(digest[:8], "big", signed=True)
    assert names.lock_key(cluster, node) == expected
    assert -(2**63) <= expected < 2**63


def test_lock_keys_differ_between_clusters_and_between_nodes_and_instances():
    keys = {
        names.lock_key("confd", "fs1"),
        names.lock_key("other", "fs1"),
        names.lock_key("confd", "fs2"),
        names.instance_key("confd", "fs1"),
        names.instance_key("other", "fs1"),
    }
    assert len(keys) == 5
    assert names.instance_key("confd", "a") == names.lock_key("confd", "instance:a")


@pytest.mark.parametrize(
    "key, parts",
    [
        (0, (0, 0)),
        (1, (0, 1)),
        (-1, (0xFFFFFFFF, 0xFFFFFFFF)),
        (2**32, (1, 0)),
        (-(2**63), (2**31, 0)),
    ],
)
def test_lock_parts_by_hand(key, parts):
    assert names.lock_parts(key) == parts


def test_lock_parts_match_pg_locks(pg):
    keys = [k for _, _, k in KNOWN] + [0, 1, -1, 2**63 - 1, -(2**63), 2**32, -(2**32) - 7]
    with pg.cursor() as cur:
        for key in keys:
            cur.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            cur.execute(
                "SELECT classid::bigint, objid::bigint, objsubid FROM pg_locks"
                " WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted"
            )
            shown = cur.fetchall()
        finally:
            cur.execute("SELECT pg_advisory_unlock_all()")
    assert all(sub == 1 for _, _, sub in shown), "a bigint advisory lock shows objsubid 1"
    assert sorted((c, o) for c, o, _ in shown) == sorted(names.lock_parts(k) for k in keys)


def test_application_name_round_trip():
    assert names.application_name("a-1") == "confd:a-1"
    assert names.instance_of("confd:a-1") == "a-1"
    assert names.instance_of("psql") == ""
    assert names.instance_of("") == ""


def test_the_longest_instance_name_fits_postgresql_application_name(pg):
    # PostgreSQL cuts application_name at 63 bytes: an instance must read back whole.
    longest = "i" + "x" * 49
    ClusterConfig(instance=longest, amqp_url="amqp://guest:guest@127.0.0.1:5672/")
    conn = psycopg2.connect(PG_URL, application_name=names.application_name(longest))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
            )
            (shown,) = cur.fetchone()
    finally:
        conn.close()
    assert names.instance_of(shown) == longest


def test_exchange_queue_and_route_names():
    assert names.EVENTS_EXCHANGE == "conference"  # events.md: what consumers bind to
    assert names.rpc_exchange("c1") == "c1.rpc"
    assert names.rpc_queue("c1", "a") == "c1.rpc.a"
    assert names.events_queue("c1", "a") == "c1.events.a"
    assert names.instance_route("a") == "instance.a"
    assert names.ROUTE_ALL == "all"
    # No instance name can make its own route collide with the route to every instance.
    assert names.instance_route("all") != names.ROUTE_ALL

"""The cluster harness on the machine's real PostgreSQL and RabbitMQ: the proxies break and
mend real database and broker sessions the way the cluster tests count on (an advisory lock
held through a cut proxy is released, one held through a paused proxy is not), ``Cluster``
sets up and removes its schema, nodes, proxies and instances, and its reads (tokens, health,
drift, websocket events) work through any instance.

Needs ``CONFD_TEST_DATABASE_URL`` (and RabbitMQ at ``CONFD_TEST_AMQP_URL`` or the local
default); without it the harness fails loudly, as the cluster tests must not pass unseen.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional
from urllib.parse import unquote, urlsplit

import pytest

from confd_tests.cluster.harness import (
    AMQP_URL_ENV,
    DEFAULT_AMQP_URL,
    PG_URL_ENV,
    Cluster,
    ClusterFailed,
    host_port,
    schema_url,
)
from confd_tests.cluster.proxy import FaultProxy

WAIT = 60.0  # generous: two busy cores
LOCK_KEY = 0x636F6E6664  # an advisory-lock key no other test uses ("confd")


def pg_base() -> str:
    url = os.environ.get(PG_URL_ENV)
    assert url, "%s must be set for the cluster tests" % PG_URL_ENV
    return url


def amqp_base() -> str:
    return os.environ.get(AMQP_URL_ENV) or DEFAULT_AMQP_URL


def wait_until(predicate, what: str, timeout: float = WAIT):
    limit = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > limit:
            raise AssertionError("not within %.0f s: %s" % (timeout, what))
        time.sleep(0.1)


def pg_via(proxy: FaultProxy):
    import psycopg2

    conn = psycopg2.connect(
        schema_url(pg_base(), "public", via_port=proxy.port), connect_timeout=10
    )
    conn.autocommit = True
    return conn


@pytest.fixture
def pg_proxy() -> Iterator[FaultProxy]:
    with FaultProxy(*host_port(pg_base(), 5432), name="pg-test") as p:
        yield p


@pytest.fixture
def amqp_proxy() -> Iterator[FaultProxy]:
    with FaultProxy(*host_port(amqp_base(), 5672), name="amqp-test") as p:
        yield p


def scalar(conn, sql: str, *args):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


# --- URLs ----------------------------------------------------------------------------------


def test_schema_url_sets_the_search_path_and_can_go_through_a_proxy() -> None:
    url = schema_url("postgresql://u:p@db.example:6543/x", "s1")
    assert url.startswith("postgresql://u:p@db.example:6543/x?options=")
    assert unquote(url.split("options=", 1)[1]) == "-csearch_path=s1"
    via = schema_url("postgresql://u:p@db.example:6543/x?sslmode=disable", "s1", via_port=7)
    assert via.startswith("postgresql://u:p@127.0.0.1:7/x?sslmode=disable&options=")


# --- the proxies in front of the real services ---------------------------------------------


def test_pg_through_the_proxy_cut_ends_the_session_and_its_advisory_lock(
    pg_proxy: FaultProxy,
) -> None:
    import psycopg2

    conn = pg_via(pg_proxy)
    assert scalar(conn, "SELECT pg_try_advisory_lock(%s)", LOCK_KEY) is True
    direct = psycopg2.connect(pg_base())
    direct.autocommit = True
    try:
        assert scalar(direct, "SELECT pg_try_advisory_lock(%s)", LOCK_KEY) is False
        pg_proxy.cut()
        with pytest.raises(psycopg2.Error):
            scalar(conn, "SELECT 1")
        with pytest.raises(psycopg2.OperationalError):
            pg_via(pg_proxy)  # refused while cut
        # The server saw its client go: the session, and the lock with it, ends.
        wait_until(
            lambda: scalar(direct, "SELECT pg_try_advisory_lock(%s)", LOCK_KEY),
            "the lock of the cut session released",
        )
        scalar(direct, "SELECT pg_advisory_unlock(%s)", LOCK_KEY)
        pg_proxy.restore()
        again = pg_via(pg_proxy)
        assert scalar(again, "SELECT 1") == 1
        again.close()
    finally:
        conn.close()
        direct.close()


def test_pg_through_a_paused_proxy_holds_the_query_and_keeps_the_lock(
    pg_proxy: FaultProxy,
) -> None:
    import psycopg2

    conn = pg_via(pg_proxy)
    direct = psycopg2.connect(pg_base())
    direct.autocommit = True
    try:
        assert scalar(conn, "SELECT pg_try_advisory_lock(%s)", LOCK_KEY) is True
        pg_proxy.pause()
        result = []
        query = threading.Thread(target=lambda: result.append(scalar(conn, "SELECT 41 + 1")))
        query.start()
        query.join(1.0)
        assert query.is_alive() and not result, "a query went through a paused proxy"
        # Paused is not gone: the server still has the session, so the lock stays held.
        assert scalar(direct, "SELECT pg_try_advisory_lock(%s)", LOCK_KEY) is False
        pg_proxy.resume()
        query.join(WAIT)
        assert result == [42]
        assert scalar(conn, "SELECT pg_advisory_unlock(%s)", LOCK_KEY) is True
    finally:
        pg_proxy.resume()
        conn.close()
        direct.close()


def amqp_params(port: Optional[int] = None) -> Dict[str, Any]:
    """py-amqp's connection arguments for the test broker, or for 127.0.0.1:``port``."""
    parts = urlsplit(amqp_base())
    host, default_port = host_port(amqp_base(), 5672)
    return {
        "host": "127.0.0.1:%d" % port if port else "%s:%d" % (host, default_port),
        "userid": unquote(parts.username or "guest"),
        "password": unquote(parts.password or "guest"),
        "virtual_host": unquote(parts.path[1:]) or "/",
        "connect_timeout": 10,
    }


def amqp_connect(proxy: FaultProxy):
    import amqp

    conn = amqp.Connection(**amqp_params(proxy.port))
    conn.connect()
    return conn


def test_amqp_through_the_proxy_cut_ends_the_connection_and_restore_mends_it(
    amqp_proxy: FaultProxy,
) -> None:
    import amqp

    conn = amqp_connect(amqp_proxy)
    ch = conn.channel()
    queue, _, _ = ch.queue_declare("", exclusive=True)
    ch.basic_publish(amqp.Message("hello"), exchange="", routing_key=queue)
    got = wait_until(lambda: ch.basic_get(queue, no_ack=True), "the message back")
    assert got.body == "hello"
    amqp_proxy.cut()
    with pytest.raises((OSError, amqp.exceptions.AMQPError)):
        conn.drain_events(timeout=WAIT)
    with pytest.raises((OSError, amqp.exceptions.AMQPError)):
        amqp_connect(amqp_proxy)  # refused while cut
    conn.collect()
    amqp_proxy.restore()
    again = amqp_connect(amqp_proxy)
    try:
        ch2 = again.channel()
        # The broker saw the first connection go: its exclusive queue went with it.
        with pytest.raises(amqp.exceptions.NotFound):
            ch2.queue_declare(queue, passive=True)
    finally:
        again.collect()


def test_amqp_through_a_paused_proxy_delivers_after_resume(amqp_proxy: FaultProxy) -> None:
    import amqp

    conn = amqp_connect(amqp_proxy)
    try:
        ch = conn.channel()
        queue, _, _ = ch.queue_declare("", exclusive=True)
        got = []
        ch.basic_consume(queue, callback=got.append, no_ack=True)
        amqp_proxy.pause()
        with amqp.Connection(**amqp_params()) as direct:
            direct.channel().basic_publish(amqp.Message("late"), exchange="", routing_key=queue)
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=1.0)
            assert got == []
            amqp_proxy.resume()
            conn.drain_events(timeout=WAIT)
        assert [m.body for m in got] == ["late"]
    finally:
        amqp_proxy.resume()
        conn.collect()


# --- the Cluster ---------------------------------------------------------------------------


def test_cluster_without_a_database_url_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PG_URL_ENV, raising=False)
    with pytest.raises(ClusterFailed, match=PG_URL_ENV):
        Cluster()


def _schema_exists(name: str) -> bool:
    import psycopg2

    conn = psycopg2.connect(pg_base())
    try:
        return bool(scalar(conn, "SELECT count(*) FROM pg_namespace WHERE nspname = %s", name))
    finally:
        conn.close()


def test_cluster_sets_up_nodes_schema_and_configs_and_removes_them() -> None:
    import psycopg2

    with Cluster(
        instances=2,
        nodes=3,
        conferences=6,
        members=3,
        start=False,
        pg_proxies=True,
        amqp_proxy=True,
    ) as c:
        workdir = c.workdir
        proxies = [c.pg_proxy(0), c.pg_proxy(1), c.amqp_proxy]
        assert _schema_exists(c.schema)
        assert c.running() == []
        # The database: the account and its documents, in the run's own schema.
        db = psycopg2.connect(c.database_url)
        try:
            tables = {
                r[0]
                for r in _rows(
                    db, "SELECT tablename FROM pg_tables WHERE schemaname = %s", c.schema
                )
            }
            assert tables, "no table in the schema"
        finally:
            db.close()
        assert c.account and c.api_key
        assert len(c.conferences) == 6
        assert sorted(set(c.conferences.values())) == ["fs0", "fs1", "fs2"]
        # The nodes: each conference on its node, with its callers and one moderator.
        dump = c.dump()
        assert sorted(dump) == ["fs0", "fs1", "fs2"]
        for node, d in dump.items():
            names = {conf["conference_name"] for conf in d["json_list"]}
            assert names == {cid for cid, n in c.conferences.items() if n == node}
            for conf in d["json_list"]:
                assert len(conf["members"]) == 3
        assert set(c.moderators) == set(c.conferences)
        # The configs: same nodes everywhere, one database proxy each, one broker proxy.
        cfgs = [json.loads(Path(inst.config).read_text()) for inst in c.instances]
        assert [x["cluster"]["instance"] for x in cfgs] == ["i0", "i1"]
        assert cfgs[0]["freeswitch"] == cfgs[1]["freeswitch"]
        assert [n["name"] for n in cfgs[0]["freeswitch"]["nodes"]] == ["fs0", "fs1", "fs2"]
        for k, x in enumerate(cfgs):
            assert ":%d/" % c.pg_proxy(k).port in x["database"]["url"]
            assert ":%d/" % c.amqp_proxy.port in x["cluster"]["amqp_url"]
            assert x["cluster"]["name"] == c.cluster_name
            assert x["http"] == {"host": "127.0.0.1", "port": 0}
        # Each instance's URL reaches the schema through its proxy.
        through = psycopg2.connect(cfgs[1]["database"]["url"])
        try:
            assert scalar(through, "SELECT current_schema()") == c.schema
        finally:
            through.close()
        nodes_pid = c.nodes_pid
    assert not _schema_exists(c.schema)
    assert not workdir.exists()
    assert not Path("/proc/%d" % nodes_pid).exists() or _zombie(nodes_pid)
    assert all(p.threads() == [] for p in proxies)


def _rows(conn, sql: str, *args):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def _zombie(pid: int) -> bool:
    try:
        return Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_cluster_failed_setup_cleans_up(monkeypatch: pytest.MonkeyPatch) -> None:
    made = []

    def broken(self: Cluster) -> None:
        made.append(self.schema)
        raise RuntimeError("populate broke")

    monkeypatch.setattr(Cluster, "_populate", broken)
    with pytest.raises(RuntimeError, match="populate broke"):
        with Cluster(instances=1, nodes=1, conferences=1, start=False):
            pass
    assert made and not _schema_exists(made[0])


def test_instances_start_answer_stop_and_restart() -> None:
    """Mode-agnostic: true of instances that claim nodes and of ones that do not."""
    with Cluster(instances=2, nodes=2, conferences=4, members=3) as c:
        assert c.running() == [0, 1]
        assert c.port(0) != c.port(1)
        for k in (0, 1):
            status, body = c.health(k)
            assert [n["name"] for n in body["data"]["nodes"]] == ["fs0", "fs1"], body
        token = c.token(0)
        cid = next(iter(c.conferences))
        status, body = c.http(1, "GET", c.conference_path(cid), token=token)
        assert status == 200, body  # a token from i0 works on i1 (it lives in the database)

        # Each conference, read through each instance, equals the nodes' own state.
        for k in (0, 1):
            c.wait(lambda k=k: c.drift(k, token)["drift"] == 0, what="no drift via i%d" % k)

        sub = c.subscribe(1, token=token)
        c.load(talk=20.0)
        sub.wait_for(lambda evs: len(evs) >= 5, what="5 events on i1's websocket")
        c.hold()
        assert all(e["routing_key"].startswith("conference.event.") for e in sub.events())

        pid = c.pid(0)
        c.kill(0)
        assert c.running() == [1]
        assert _zombie(pid) or not Path("/proc/%d" % pid).exists()
        with pytest.raises(ClusterFailed):
            c.port(0)
        port = c.restart(0)
        assert c.port(0) == port
        assert len(c.instances[0].logs) == 2
        assert c.health(0)[1]["data"]["nodes"]
        assert c.term(1) == 0
        assert c.running() == [0]
        assert c.log_path(1).exists()
        assert "HTTP API on" in c.tails()

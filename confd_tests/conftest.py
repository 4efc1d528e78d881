"""Shared fixtures: an in-process node supervisor against a fake FreeSWITCH, and the
databases storage-backed tests run on: SQLite, plus PostgreSQL when CONFD_TEST_DATABASE_URL is
set (each PostgreSQL test in a fresh schema of its own, dropped afterwards)."""

import logging
import os
import secrets
from collections.abc import Iterator

import gevent
import pytest

from confd.conferences.commands import RELAXED_NAME_PATTERN, CommandBuilder
from confd.conferences.state import LiveState
from confd.esl.node import NodeSettings, NodeSupervisor

PG_URL_ENV = "CONFD_TEST_DATABASE_URL"
PG_URL = os.environ.get(PG_URL_ENV)
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def pg_url_with_schema(base: str, schema: str) -> str:
    """The base URL with libpq's ``options`` setting the search_path to ``schema``."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, empty schema."""
    import psycopg2

    assert PG_URL, "only requested by PostgreSQL parametrizations"
    schema = f"confd_test_{secrets.token_hex(6)}"
    admin = psycopg2.connect(PG_URL)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {schema}")
        yield pg_url_with_schema(PG_URL, schema)
        with admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        admin.close()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """Each backend in turn: SQLite (a file in tmp_path), and PostgreSQL when configured."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/confd.db"  # tmp_path is absolute: sqlite:////tmp/...
    return request.getfixturevalue("pg_schema_url")


def wait_until(predicate, timeout=5.0, interval=0.005, what="condition"):
    """Cooperative wait (the fakes and the supervisor run in this process's greenlets)."""
    with gevent.Timeout(timeout, AssertionError("timed out waiting for %s" % what)):
        while not predicate():
            gevent.sleep(interval)


@pytest.fixture
def make_node():
    nodes = []

    def make(port, name="fs1", state=None, pattern=RELAXED_NAME_PATTERN, publish=None, **kw):
        settings = NodeSettings(
            name=name,
            host="127.0.0.1",
            port=port,
            password=kw.pop("password", "ClueCon"),
            reconnect_min=kw.pop("reconnect_min", 0.05),
            reconnect_max=kw.pop("reconnect_max", 0.4),
            command_timeout=kw.pop("command_timeout", 2.0),
            heartbeat_timeout=kw.pop("heartbeat_timeout", 30.0),
            **kw,
        )
        node = NodeSupervisor(
            settings,
            state if state is not None else LiveState(),
            CommandBuilder(pattern),
            publish=publish or (lambda updates: None),
        )
        node.state = node._state  # tests read it
        nodes.append(node)
        node.start()
        return node

    yield make
    for node in nodes:
        node.stop(timeout=1)


@pytest.fixture(autouse=True)
def _quiet_gevent_logs(caplog):
    caplog.set_level(logging.INFO, logger="confd")
    yield

"""Fixtures: every storage test runs on SQLite and, when CONFD_TEST_DATABASE_URL is set, on
PostgreSQL too (each PostgreSQL test in a schema of its own, dropped afterwards)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from confd.store import Store

PG_URL_ENV = "CONFD_TEST_DATABASE_URL"
PG_URL = os.environ.get(PG_URL_ENV)
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])
START_TIME = 1_700_000_000.0


class FakeClock:
    """Injectable clock (Unix seconds) that only moves when told to."""

    def __init__(self, now: float = START_TIME) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/confd.db"  # tmp_path is absolute: sqlite:////tmp/...
    return request.getfixturevalue("pg_schema_url")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(database_url: str, clock: FakeClock) -> Iterator[Store]:
    s = Store.from_url(database_url, clock=clock)
    yield s
    s.close()


@pytest.fixture
def account_id(store: Store) -> str:
    account, _key = store.accounts.create_account("acme")
    return account["id"]

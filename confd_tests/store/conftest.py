"""Fixtures: every storage test runs on SQLite and, when CONFD_TEST_DATABASE_URL is set, on
PostgreSQL too (``database_url``, from confd_tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from confd.store import Store

START_TIME = 1_700_000_000.0


class FakeClock:
    """Injectable clock (Unix seconds) that only moves when told to."""

    def __init__(self, now: float = START_TIME) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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

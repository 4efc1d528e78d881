"""Storage layer: accounts, auth tokens and conference documents (peewee; SQLite or PostgreSQL).

Typical use by the daemon / CLI::

    store = Store(open_database(config.database.url))
    store.init_schema()
    account, api_key = store.accounts.create_account("acme")
    doc = store.conferences.create(account["id"], {"name": "standup"})
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
import peewee

from confd.store.accounts import AccountService
from confd.store.db import SQLITE_MEMORY, db_session, is_sqlite, open_database
from confd.store.documents import ConferenceService, StoredDoc
from confd.store.errors import (
    Conflict,
    DatabaseUnavailable,
    InvalidCredentials,
    NotFound,
    SchemaTooNew,
    StoreError,
    ValidationFailed,
)
from confd.store.models import SCHEMA_VERSION, Models, init_schema, make_models
from confd.store.schema import ConferenceSchema

__all__ = [
    "SCHEMA_VERSION",
    "AccountService",
    "ConferenceSchema",
    "ConferenceService",
    "Conflict",
    "DatabaseUnavailable",
    "InvalidCredentials",
    "Models",
    "NotFound",
    "SchemaTooNew",
    "Store",
    "StoreError",
    "StoredDoc",
    "ValidationFailed",
    "db_session",
    "init_schema",
    "make_models",
    "open_database",
]


class WaitForLocks:
    """Runs a SQLite store's operations on the event loop, on one shared connection, and waits
    for another writer's lock with ``gevent.sleep`` between tries instead of inside sqlite3.

    sqlite3 waits for a lock (busy_timeout) inside C, where gevent cannot switch: that wait
    would stop ESL intake and every request.  So the connection's own busy_timeout is 0 and a
    locked database is retried here, with backoff, until the configured busy_timeout has
    passed -- then ``DatabaseUnavailable``.  A try that met the lock changed nothing (the write
    lock is taken at BEGIN IMMEDIATE), so running it again is safe.  Operations never yield
    while they run, so greenlets can share the connection (opened once, not per request)."""

    def __init__(self, service: object, deadline: float) -> None:
        self._service = service
        self._deadline = deadline

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._service, name)
        if not callable(attr):
            return attr
        deadline = self._deadline

        def call(*args: Any, **kwargs: Any) -> Any:
            return retry_while_locked(attr, deadline, *args, **kwargs)

        call.__name__ = name
        return call


def retry_while_locked(fn: Callable[..., Any], deadline: float, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, tried again (gevent.sleep between, with backoff) while another
    connection holds SQLite's lock, for at most ``deadline`` seconds."""
    give_up = time.monotonic() + deadline
    delay = 0.002
    while True:
        try:
            return fn(*args, **kwargs)
        except (DatabaseUnavailable, peewee.OperationalError) as exc:
            if not _locked(exc) or time.monotonic() + delay > give_up:
                raise
        gevent.sleep(delay)
        delay = min(delay * 2, 0.1)


def _locked(exc: Exception) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _share_one_sqlite_connection(db: peewee.SqliteDatabase) -> float:
    """Make ``db`` keep one connection for all greenlets, with no waiting inside sqlite3;
    returns the lock wait its pragmas asked for, in seconds."""
    pragmas = dict(db._pragmas)
    wait = float(pragmas.get("busy_timeout", 5000)) / 1000.0
    # peewee keeps connection state per thread (per greenlet once gevent has patched
    # threading.local); one state object means one connection, opened once -- here, with the
    # configured busy_timeout so that switching to WAL waits for another process's lock.
    db._state = peewee._ConnectionState()
    db.connect(reuse_if_open=True)
    db.execute_sql("PRAGMA busy_timeout = 0")
    # Should the connection ever be opened again, the same: no waiting inside sqlite3.
    db._pragmas = [(k, 0 if k == "busy_timeout" else v) for k, v in db._pragmas]
    return wait


class Store:
    """The services of one database, with model classes of their own (no shared state)."""

    def __init__(
        self,
        db: peewee.Database,
        clock: Callable[[], float] = time.time,
        schema: ConferenceSchema | None = None,
    ) -> None:
        self.db = db
        self.models = make_models(db)
        accounts = AccountService(db, self.models, clock)
        conferences = ConferenceService(db, self.models, clock, schema)
        wait = 0.0
        if is_sqlite(db) and db.database != SQLITE_MEMORY:
            wait = _share_one_sqlite_connection(db)
            accounts = WaitForLocks(accounts, wait)  # type: ignore[assignment]
            conferences = WaitForLocks(conferences, wait)  # type: ignore[assignment]
        self._lock_wait = wait if is_sqlite(db) and db.database != SQLITE_MEMORY else None
        self.accounts = accounts
        self.conferences = conferences

    @classmethod
    def from_url(cls, url: str, clock: Callable[[], float] = time.time) -> Store:
        """Open the database at ``url`` and make sure its schema is in place."""
        store = cls(open_database(url), clock)
        store.init_schema()
        return store

    def init_schema(self) -> int:
        """Create missing tables; raises ``SchemaTooNew`` for a newer database."""
        if self._lock_wait is not None:
            return retry_while_locked(init_schema, self._lock_wait, self.db, self.models)
        return init_schema(self.db, self.models)

    def close(self) -> None:
        """Close this thread's connection and, for a pool, every idle connection."""
        if not self.db.is_closed() and not self.db.in_transaction():
            self.db.close()
        close_all = getattr(self.db, "close_all", None)
        if close_all is not None:
            close_all()

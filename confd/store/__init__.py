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


class InThreads:
    """Calls the wrapped service's methods on gevent's thread pool; results and exceptions come
    back to the calling greenlet, which other greenlets run beside meanwhile."""

    def __init__(self, service: object) -> None:
        self._service = service

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._service, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return gevent.get_hub().threadpool.apply(attr, args, kwargs)

        call.__name__ = name
        return call


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
        if is_sqlite(db) and db.database != SQLITE_MEMORY:
            # sqlite3 waits for a lock (busy_timeout) inside C, where gevent cannot switch:
            # on the event loop's thread that wait would stop ESL intake and every request.
            # Each operation runs on gevent's thread pool instead, with its own connection.
            accounts = InThreads(accounts)  # type: ignore[assignment]
            conferences = InThreads(conferences)  # type: ignore[assignment]
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
        return init_schema(self.db, self.models)

    def close(self) -> None:
        """Close this thread's connection and, for a pool, every idle connection."""
        if not self.db.is_closed() and not self.db.in_transaction():
            self.db.close()
        close_all = getattr(self.db, "close_all", None)
        if close_all is not None:
            close_all()

"""Opening the database named by the ``database.url`` setting, and per-operation sessions.

Connection strategy
-------------------
* SQLite: a plain ``SqliteDatabase`` whose connections are per thread (per greenlet once gevent
  has patched ``threading``). Every store operation opens a connection and closes it afterwards
  (``db_session``), so nothing is shared between greenlets and a second process (the
  ``confd accounts`` CLI) can work on the same file; WAL plus ``busy_timeout`` make readers and
  the one writer coexist. Transactions start with ``BEGIN IMMEDIATE`` so that a read-then-write
  transaction takes the write lock up front instead of failing with SQLITE_BUSY half-way.
  ``:memory:`` is the exception: every connection would get its own empty database, so there is a
  single shared connection that stays open.
* PostgreSQL: ``PooledPostgresqlDatabase`` rather than ``ReconnectMixin``. Peewee documents the
  mixin as MySQL-oriented; it only retries outside transactions and matches error texts. The pool
  instead checks a connection on every check-out (round trip when idle) and throws dead ones away,
  so after a PostgreSQL restart the next operation simply gets a fresh connection. Each greenlet
  checks out its own connection for the duration of one store operation, so two greenlets never
  interleave statements on one socket.

Under gevent, psycopg2 must not block the hub: when (and only when) the entry point has
monkey-patched ``socket`` we install a wait callback that parks the greenlet on the connection's
file descriptor while libpq waits. NB: peewee keeps its per-connection state in a
``threading.local`` subclass created when peewee is imported, so the entry point must patch
before importing peewee for that state to become greenlet-local.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import peewee
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

from confd.store.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

SQLITE_PREFIX = "sqlite:///"
SQLITE_MEMORY = ":memory:"
POSTGRES_SCHEMES = ("postgresql", "postgres")
POSTGRES_INSTALL_HINT = "pip install 'confd[postgresql]'"

# Order matters: busy_timeout first so that switching the journal mode waits for a lock held
# by another process instead of failing at once.
SQLITE_PRAGMAS = (
    ("busy_timeout", 5000),
    ("journal_mode", "wal"),
    ("foreign_keys", 1),
    ("synchronous", "normal"),
)
SQLITE_LOCK_TYPE = "IMMEDIATE"

PG_MAX_CONNECTIONS = 20
PG_STALE_TIMEOUT = 300  # seconds; recycle connections so server-side idle limits never bite
PG_CHECKOUT_TIMEOUT = 10  # seconds to wait for a free pooled connection before giving up
PG_CONNECT_TIMEOUT = 5  # seconds, libpq connect_timeout unless the URL sets one

# Errors meaning "the database is not there / not usable right now" -> HTTP 503.
UNAVAILABLE_ERRORS = (peewee.OperationalError, peewee.InterfaceError, MaxConnectionsExceeded)


def open_database(url: str) -> peewee.Database:
    """Return an (unconnected) peewee database for ``url``.

    ``sqlite:///relative/path.db`` (relative to the cwd), ``sqlite:////abs/path.db``,
    ``sqlite:///:memory:``, ``postgresql://user:pass@host:port/db`` (or ``postgres://``; libpq
    query parameters such as ``sslmode`` or ``options`` pass through). Raises ``ValueError`` for
    anything else, and ``DriverMissing`` (a ``ValueError``) for a PostgreSQL URL without
    psycopg2 installed.
    """
    if url.startswith(SQLITE_PREFIX):
        return _open_sqlite(url[len(SQLITE_PREFIX) :])
    scheme = urlsplit(url).scheme
    if scheme in POSTGRES_SCHEMES:
        return _open_postgresql(url)
    raise ValueError(
        f"unsupported database url {_redact(url)!r}: "
        "expected sqlite:///path or postgresql://user:pass@host:port/db"
    )


def _open_sqlite(path: str) -> peewee.SqliteDatabase:
    if not path:
        raise ValueError("sqlite url without a path: use sqlite:///path/to/file.db")
    if path == SQLITE_MEMORY:
        db = peewee.SqliteDatabase(
            SQLITE_MEMORY, pragmas=SQLITE_PRAGMAS, lock_type=SQLITE_LOCK_TYPE, thread_safe=False
        )
        db.connect()  # the one connection that holds the whole database
        return db
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return peewee.SqliteDatabase(path, pragmas=SQLITE_PRAGMAS, lock_type=SQLITE_LOCK_TYPE)


class DriverMissing(ValueError):
    """The database URL names a backend whose driver is not installed (an install problem,
    not a bad URL): the message says what to install."""


def _require_postgresql_driver(url: str) -> None:
    """psycopg2 is an extra (``confd[postgresql]``); without it peewee would only fail at the
    first connect, deep in a request, with "Postgres driver not installed!"."""
    try:
        import psycopg2  # noqa: F401
    except ImportError as exc:
        raise DriverMissing(
            f"database url {_redact(url)!r} needs PostgreSQL support, which is not installed "
            f"({exc}): {POSTGRES_INSTALL_HINT}"
        ) from None


def _open_postgresql(url: str) -> peewee.PostgresqlDatabase:
    _require_postgresql_driver(url)
    dsn = "postgresql" + url[url.index(":") :]  # libpq and peewee both accept postgresql://
    params: dict[str, Any] = {}
    if "connect_timeout" not in parse_qs(urlsplit(dsn).query):
        params["connect_timeout"] = PG_CONNECT_TIMEOUT
    if _gevent_socket_patched():
        install_gevent_wait_callback()
    return PooledPostgresqlDatabase(
        dsn,
        max_connections=PG_MAX_CONNECTIONS,
        stale_timeout=PG_STALE_TIMEOUT,
        timeout=PG_CHECKOUT_TIMEOUT,
        **params,
    )


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def _gevent_socket_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a hard dependency
        return False
    return bool(monkey.is_module_patched("socket"))


def gevent_wait_callback(conn: Any) -> None:
    """psycopg2 wait callback: let other greenlets run while libpq waits on the socket.

    psycopg2 calls this whenever a connection would block; ``conn.poll()`` tells us which
    direction libpq is waiting for, and gevent's ``wait_read``/``wait_write`` suspend only the
    current greenlet until the descriptor is ready.
    """
    from gevent.socket import wait_read, wait_write
    from psycopg2 import OperationalError as PgOperationalError
    from psycopg2.extensions import POLL_OK, POLL_READ, POLL_WRITE

    while True:
        state = conn.poll()
        if state == POLL_OK:
            return
        if state == POLL_READ:
            wait_read(conn.fileno())
        elif state == POLL_WRITE:
            wait_write(conn.fileno())
        else:
            raise PgOperationalError(f"unexpected psycopg2 poll state {state!r}")


def install_gevent_wait_callback() -> None:
    """Make psycopg2 cooperative under gevent (process-wide, idempotent)."""
    from psycopg2 import extensions

    if extensions.get_wait_callback() is not gevent_wait_callback:
        extensions.set_wait_callback(gevent_wait_callback)
        logger.debug("psycopg2 gevent wait callback installed")


def is_sqlite(db: peewee.Database) -> bool:
    return isinstance(db, peewee.SqliteDatabase)


@contextmanager
def db_session(db: peewee.Database) -> Iterator[None]:
    """Hold a connection for one store operation; map connection failures to 503.

    Reuses a connection the caller already opened (and then leaves it open); otherwise opens
    one and closes it (returns it to the pool) at the end.
    """
    try:
        opened = db.connect(reuse_if_open=True)
    except UNAVAILABLE_ERRORS as exc:
        logger.warning("database unavailable: %s", exc)
        raise DatabaseUnavailable(str(exc)) from exc
    try:
        yield
    except UNAVAILABLE_ERRORS as exc:
        logger.warning("database error: %s", exc)
        raise DatabaseUnavailable(str(exc)) from exc
    finally:
        if opened and not db.in_transaction():
            try:
                db.close()
            except UNAVAILABLE_ERRORS as exc:  # a dead connection is dropped either way
                logger.debug("closing database connection failed: %s", exc)

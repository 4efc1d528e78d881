"""Opening databases from URLs, schema bootstrap/versioning, availability errors, gevent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import peewee
import pytest
from playhouse.pool import PooledPostgresqlDatabase

from confd.store import DatabaseUnavailable, SchemaTooNew, Store, init_schema, open_database
from confd.store.db import db_session, gevent_wait_callback
from confd.store.models import SCHEMA_VERSION
from confd_tests.conftest import PG_URL

UNREACHABLE_PG = "postgresql://confd:secret@127.0.0.1:1/confd?connect_timeout=2"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_sqlite_relative_path_is_under_cwd_and_parent_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = open_database("sqlite:///confd-data/sub/confd.db")
    assert isinstance(db, peewee.SqliteDatabase)
    assert (tmp_path / "confd-data" / "sub").is_dir()
    init_schema(db)
    assert (tmp_path / "confd-data" / "sub" / "confd.db").is_file()


def test_sqlite_absolute_path(tmp_path):
    path = tmp_path / "abs" / "confd.db"
    db = open_database(f"sqlite:///{path}")  # -> sqlite:////tmp/.../abs/confd.db
    assert db.database == str(path)
    init_schema(db)
    assert path.is_file()


def test_sqlite_pragmas(tmp_path):
    db = open_database(f"sqlite:///{tmp_path}/p.db")
    with db_session(db):
        pragma = {
            name: db.execute_sql(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
        }
    assert pragma == {
        "journal_mode": "wal",
        "busy_timeout": 5000,
        "foreign_keys": 1,
        "synchronous": 1,
    }


def test_sqlite_memory_keeps_one_database():
    store = Store.from_url("sqlite:///:memory:")
    account, key = store.accounts.create_account("m")
    assert store.accounts.authenticate(key) == account  # same database across operations


def test_postgresql_urls_give_a_pool_without_connecting():
    for url in ("postgresql://u:p@127.0.0.1:5432/db", "postgres://u:p@127.0.0.1:5432/db"):
        db = open_database(url)
        assert isinstance(db, PooledPostgresqlDatabase)
        assert db.database.startswith("postgresql://")
        assert db.connect_params["connect_timeout"] == 5
        assert db.is_closed()


@pytest.mark.parametrize("url", ["mysql://u@h/db", "sqlite://relative.db", "sqlite:///", "x"])
def test_unsupported_urls(url):
    with pytest.raises(ValueError):
        open_database(url)


def test_unsupported_url_message_hides_password():
    with pytest.raises(ValueError) as err:
        open_database("mysql://u:hunter2@h/db")
    assert "hunter2" not in str(err.value)


def test_unreachable_database_raises_database_unavailable():
    store = Store(open_database(UNREACHABLE_PG))
    with pytest.raises(DatabaseUnavailable):
        store.init_schema()
    with pytest.raises(DatabaseUnavailable):
        store.accounts.authenticate("0" * 64)


def test_locked_sqlite_raises_database_unavailable(tmp_path, mocker):
    store = Store.from_url(f"sqlite:///{tmp_path}/l.db")
    mocker.patch.object(
        peewee.SqliteDatabase,
        "execute_sql",
        side_effect=peewee.OperationalError("database is locked"),
    )
    with pytest.raises(DatabaseUnavailable):
        store.accounts.list_accounts()


# -- schema version -----------------------------------------------------------------------------


def test_schema_version_recorded_and_init_idempotent(database_url):
    store = Store(open_database(database_url))
    assert store.init_schema() == SCHEMA_VERSION == 1
    account, _ = store.accounts.create_account("keep")
    assert store.init_schema() == 1  # again: nothing recreated, nothing lost
    with db_session(store.db):
        rows = store.db.execute_sql("SELECT version FROM schema_version").fetchall()
    assert rows == [(1,)]
    assert store.accounts.list_accounts() == [account]
    store.close()


def test_newer_schema_version_is_refused(database_url):
    store = Store(open_database(database_url))
    store.init_schema()
    with db_session(store.db):
        store.db.execute_sql("UPDATE schema_version SET version = 2")
    store.close()
    again = Store(open_database(database_url))
    with pytest.raises(SchemaTooNew) as err:
        again.init_schema()
    assert (err.value.found, err.value.known) == (2, 1)
    again.close()


def test_two_stores_in_one_process_do_not_interfere(tmp_path):
    first = Store.from_url(f"sqlite:///{tmp_path}/a.db")
    second = Store.from_url(f"sqlite:///{tmp_path}/b.db")
    a, key_a = first.accounts.create_account("a")
    assert second.accounts.list_accounts() == []
    assert first.accounts.authenticate(key_a) == a
    assert first.models.account is not second.models.account


# -- gevent ---------------------------------------------------------------------------------------


class FakePgConn:
    def __init__(self, states):
        self.states = list(states)

    def poll(self):
        return self.states.pop(0)

    def fileno(self):
        return 42


def test_wait_callback_waits_in_the_direction_libpq_asks(mocker):
    from psycopg2 import extensions

    reads = mocker.patch("gevent.socket.wait_read")
    writes = mocker.patch("gevent.socket.wait_write")
    conn = FakePgConn(
        [extensions.POLL_WRITE, extensions.POLL_READ, extensions.POLL_READ, extensions.POLL_OK]
    )
    gevent_wait_callback(conn)
    assert writes.call_args_list == [mocker.call(42)]
    assert reads.call_args_list == [mocker.call(42), mocker.call(42)]
    assert conn.states == []


def test_wait_callback_rejects_unknown_poll_state(mocker):
    import psycopg2

    with pytest.raises(psycopg2.OperationalError):
        gevent_wait_callback(FakePgConn([99]))


def run_python(code: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_wait_callback_installed_only_under_gevent_patching():
    check = """
        if "{patch}" == "yes":
            from gevent import monkey; monkey.patch_all()
        from psycopg2 import extensions
        from confd.store.db import open_database, gevent_wait_callback
        open_database("sqlite:///:memory:")
        assert extensions.get_wait_callback() is None, "sqlite must not install it"
        open_database("postgresql://u@127.0.0.1:1/x")
        print(extensions.get_wait_callback() is gevent_wait_callback)
    """
    patched = run_python(check.replace("{patch}", "yes"))
    assert patched.returncode == 0, patched.stderr
    assert patched.stdout.strip() == "True"
    plain = run_python(check.replace("{patch}", "no"))
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == "False"


PG_ONLY = [PG_URL] if PG_URL else []


@pytest.mark.parametrize("pg_url", PG_ONLY)
def test_postgresql_queries_are_cooperative_under_gevent(pg_url):
    """While one greenlet waits for PostgreSQL, the others run: told by the order of what
    they record (the other greenlet runs before the query's answer is taken), not by a clock
    a busy machine can stretch."""
    result = run_python(
        """
        from gevent import monkey; monkey.patch_all()
        import os, gevent
        from gevent.event import Event
        from confd.store.db import open_database, db_session
        db = open_database(os.environ["PG"])
        order = []
        querying = Event()
        def query():
            with db_session(db):
                db.execute_sql("SELECT 1")  # connected
                querying.set()
                order.append("querying")
                db.execute_sql("SELECT pg_sleep(0.2)")
                order.append("answered")
        def other():
            querying.wait()
            order.append("other-ran")
        gevent.joinall([gevent.spawn(query), gevent.spawn(other)], raise_error=True)
        print(" ".join(order))
        db.close_all()
        """,
        {"PG": pg_url},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["querying", "other-ran", "answered"]

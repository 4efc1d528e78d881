"""Every subcommand, given a config it cannot use -- a bad port, a database that cannot be
opened, a config that does not parse -- says what is wrong on stderr, in one line naming it,
and exits 2: never a traceback (operations.md: "exits 0 or 2 with a clear message").

``check-config`` checks the file and the environment only: it opens no database and binds no
port, so an unusable database path is not its error (a malformed database URL is)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from confd import cli
from confd_tests.netutil import run_confd

# The subcommands and the arguments each needs besides --config.
COMMANDS = {
    "run": ["run"],
    "check-config": ["check-config"],
    "demo": ["demo"],
    "accounts create": ["accounts", "create", "--name", "acme"],
    "accounts list": ["accounts", "list"],
    "accounts rotate-key": ["accounts", "rotate-key", "f" * 32],
}
# The ones that open the configured database (demo has its own: see test_demo_database.py).
USE_THE_DATABASE = ["run", "accounts create", "accounts list", "accounts rotate-key"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("CONFD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # whatever a command creates lands in the test's directory


@pytest.fixture
def in_process(monkeypatch):
    """cli.main without patching this process for gevent nor touching its logging."""
    monkeypatch.setattr(cli, "_patch_gevent", lambda: None)
    monkeypatch.setattr(cli, "configure_logging", lambda level: None)

    def run(capsys, argv):
        code = cli.main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def unusable_sqlite_url(tmp_path: Path) -> str:
    """A SQLite file whose directory would have to be made inside a regular file."""
    (tmp_path / "a-file").write_text("not a directory")
    return f"sqlite:///{tmp_path}/a-file/confd.db"


def assert_clean_error(code: int, out: str, err: str, *names: str) -> None:
    """Exit 2, no traceback, and the last line of stderr (after the start-up log line or
    argparse's usage line) says what is wrong, naming each of ``names``."""
    assert code == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert err.endswith("\n"), err
    last = err.splitlines()[-1]
    assert "confd" in last, err
    for name in names:
        assert name in last, (name, err)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_config_that_does_not_parse(command, tmp_path, capsys, in_process):
    config = write(tmp_path, "bad.yml", "http: [1\n")
    code, out, err = in_process(capsys, COMMANDS[command] + ["--config", config])
    assert_clean_error(code, out, err, config, "invalid YAML")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_port_out_of_range_in_the_config(command, tmp_path, capsys, in_process):
    config = write(tmp_path, "port.yml", "http:\n  port: 99999\n")
    code, out, err = in_process(capsys, COMMANDS[command] + ["--config", config])
    assert_clean_error(code, out, err, "http.port", "99999")


@pytest.mark.parametrize("command", USE_THE_DATABASE)
def test_a_database_that_cannot_be_opened(command, tmp_path, capsys, in_process):
    url = unusable_sqlite_url(tmp_path)
    config = write(tmp_path, "db.yml", f"database:\n  url: {url}\n")
    code, out, err = in_process(capsys, COMMANDS[command] + ["--config", config])
    assert_clean_error(code, out, err, "cannot open the database", url)
    assert out == "" and err.count("\n") == 1  # one line


@pytest.mark.parametrize("command", USE_THE_DATABASE)
def test_an_unreachable_postgresql_names_it_without_its_password(
    command, tmp_path, capsys, in_process
):
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    config = write(
        tmp_path, "pg.yml", "database:\n  url: postgresql://confd:s3cret@127.0.0.1:9/confd\n"
    )
    code, out, err = in_process(capsys, COMMANDS[command] + ["--config", config])
    assert_clean_error(code, out, err, "cannot open the database postgresql://confd:****@")
    assert "s3cret" not in err


def test_check_config_names_a_malformed_database_url(tmp_path, capsys, in_process):
    config = write(tmp_path, "db.yml", "database:\n  url: mysql://db/confd\n")
    code, out, err = in_process(capsys, ["check-config", "--config", config])
    assert_clean_error(code, out, err, "database.url")


def test_demo_port_out_of_range(capsys, in_process):
    code, out, err = in_process(capsys, ["demo", "--port", "99999"])
    assert_clean_error(code, out, err, "--port", "99999")


def test_demo_database_that_cannot_be_opened(tmp_path, capsys, in_process):
    url = unusable_sqlite_url(tmp_path)
    code, out, err = in_process(capsys, ["demo", "--database", url])
    assert_clean_error(code, out, err, "cannot open the database", url)
    code, out, err = in_process(capsys, ["demo", "--database", "mysql://db/confd"])
    assert_clean_error(code, out, err, "--database")


def test_a_database_that_fails_after_it_opened(tmp_path, capsys, in_process, monkeypatch):
    """Opened, then unusable (read-only, locked past the wait, gone): the same exit 2."""
    from confd.store import DatabaseUnavailable
    from confd.store.accounts import AccountService

    def broken(*args, **kwargs):
        raise DatabaseUnavailable("attempt to write a readonly database")

    monkeypatch.setattr(AccountService, "create_account", broken)
    config = write(tmp_path, "db.yml", f"database:\n  url: sqlite:///{tmp_path}/ok.db\n")
    code, out, err = in_process(capsys, COMMANDS["accounts create"] + ["--config", config])
    assert_clean_error(code, out, err, "readonly database")


# --- as processes: the reported cases, and ports that are taken --------------------------------


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_demo_port_out_of_range_as_a_process(tmp_path):
    result = run_confd("demo", "--port", "99999", cwd=tmp_path)
    assert_clean_error(result.returncode, result.stdout, result.stderr, "--port", "99999")


def test_accounts_list_with_an_unusable_database_as_a_process(tmp_path):
    url = unusable_sqlite_url(tmp_path)
    result = run_confd("accounts", "list", cwd=tmp_path, env_extra={"CONFD_DATABASE_URL": url})
    assert_clean_error(result.returncode, result.stdout, result.stderr, "cannot open the database")


def test_run_with_an_unusable_database_as_a_process(tmp_path):
    url = unusable_sqlite_url(tmp_path)
    result = run_confd("run", cwd=tmp_path, env_extra={"CONFD_DATABASE_URL": url})
    assert_clean_error(result.returncode, result.stdout, result.stderr, "cannot open the database")


@pytest.mark.parametrize("command", [["run"], ["demo", "--database", "sqlite:///demo.db"]])
def test_a_port_already_taken(command, tmp_path, taken_port):
    result = run_confd(*command, cwd=tmp_path, env_extra={"CONFD_HTTP_PORT": str(taken_port)})
    assert_clean_error(
        result.returncode,
        result.stdout,
        result.stderr,
        "cannot start",
        "Address already in use",
        str(taken_port),
    )

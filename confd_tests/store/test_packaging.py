"""What confd needs installed: PostgreSQL's driver is an extra (``pip install
'confd[postgresql]'``) that the test extra pulls in, greenswitch is only the benchmark's, and a
PostgreSQL URL without the driver is a clear message, not a traceback."""

from __future__ import annotations

import ast
import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

from confd.store.db import POSTGRES_INSTALL_HINT, DriverMissing, open_database

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "confd"
PG_URL = "postgresql://confd:secret@127.0.0.1:1/confd"
# Runs the command line with psycopg2 unimportable, as on a host without the extra.
WITHOUT_PSYCOPG2 = (
    "import sys; sys.modules['psycopg2'] = None; "
    "from confd.cli import main; raise SystemExit(main(sys.argv[1:]))"
)


def requirements(section: str, key: str) -> dict:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in cfg[section][key].splitlines()]
    out = {}
    for line in lines:
        if line and not line.startswith("#"):
            name = line.split(">")[0].split("<")[0].split("=")[0].strip().lower()
            out[name] = line
    return out


def test_psycopg2_is_the_postgresql_extra_and_the_test_extra_pulls_it_in():
    assert "psycopg2-binary" not in requirements("options", "install_requires")
    postgresql = requirements("options.extras_require", "postgresql")
    assert postgresql["psycopg2-binary"].startswith("psycopg2-binary>=")
    assert "confd[postgresql]" in requirements("options.extras_require", "test")


def test_greenswitch_is_only_a_test_requirement_and_confd_never_imports_it():
    assert "greenswitch" not in requirements("options", "install_requires")
    assert requirements("options.extras_require", "test")["greenswitch"].startswith("greenswitch>=")
    importers = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "greenswitch" for name in names):
                importers.append(str(path.relative_to(ROOT)))
    assert importers == []


def test_the_openapi_validator_is_a_test_requirement_with_a_lower_bound():
    test = requirements("options.extras_require", "test")
    assert test["openapi-spec-validator"].startswith("openapi-spec-validator>=")


def test_a_postgresql_url_without_the_driver_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(DriverMissing) as info:
        open_database(PG_URL)
    assert POSTGRES_INSTALL_HINT in str(info.value)
    assert "secret" not in str(info.value)  # the password is redacted
    assert isinstance(info.value, ValueError)  # callers that report bad URLs report this too


def run_cli(*args: str, env_url: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONFD_DATABASE_URL=env_url)
    env.pop("CONFD_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_PSYCOPG2, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.parametrize("command", [["accounts", "list"], ["run"]], ids=" ".join)
def test_commands_without_the_driver_end_with_a_message_not_a_traceback(command):
    done = run_cli(*command, env_url=PG_URL)
    assert done.returncode != 0, done
    assert POSTGRES_INSTALL_HINT in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "secret" not in done.stderr


def test_sqlite_needs_no_postgresql_driver(tmp_path):
    done = run_cli("accounts", "create", "--name", "acme", env_url=f"sqlite:///{tmp_path}/confd.db")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr

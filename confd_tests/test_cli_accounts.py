"""``confd accounts create|list|rotate-key`` (operations.md), on the config's database."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from confd import cli
from confd.store import InvalidCredentials, Store

REPO = Path(__file__).resolve().parent.parent
HEX32 = re.compile(r"[0-9a-f]{32}")
HEX64 = re.compile(r"[0-9a-f]{64}")


@pytest.fixture
def db_url(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("CONFD_"):
            monkeypatch.delenv(key)
    url = f"sqlite:///{tmp_path}/confd.db"
    monkeypatch.setenv("CONFD_DATABASE_URL", url)
    return url


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_prints_one_json_object_and_the_key_works(db_url, capsys):
    code, out, err = run(capsys, "accounts", "create", "--name", "acme")
    assert code == 0, err
    assert out.count("\n") == 1
    created = json.loads(out)
    assert set(created) == {"id", "name", "api_key", "admin"}
    assert HEX32.fullmatch(created["id"]) and HEX64.fullmatch(created["api_key"])
    assert created["name"] == "acme" and created["admin"] is False
    store = Store.from_url(db_url)
    try:
        assert store.accounts.authenticate(created["api_key"])["id"] == created["id"]
    finally:
        store.close()


def test_admin_flag_and_list_without_keys(db_url, capsys):
    _, out, _ = run(capsys, "accounts", "create", "--name", "root", "--admin")
    root = json.loads(out)
    assert root["admin"] is True
    run(capsys, "accounts", "create", "--name", "acme")
    code, out, err = run(capsys, "accounts", "list")
    assert code == 0, err
    listed = json.loads(out)
    assert [(a["name"], a["admin"]) for a in listed] == [("root", True), ("acme", False)]
    assert listed[0]["id"] == root["id"]
    assert "api_key" not in out and root["api_key"] not in out
    assert all(not any("key" in k for k in a) for a in listed)


def test_list_of_an_empty_database(db_url, capsys):
    code, out, _ = run(capsys, "accounts", "list")
    assert code == 0 and json.loads(out) == []


def test_rotate_key_replaces_the_key(db_url, capsys):
    _, out, _ = run(capsys, "accounts", "create", "--name", "acme")
    created = json.loads(out)
    code, out, err = run(capsys, "accounts", "rotate-key", created["id"])
    assert code == 0, err
    rotated = {"api_key": out.strip()}
    assert out.endswith("\n") and HEX64.fullmatch(rotated["api_key"])
    assert rotated["api_key"] != created["api_key"]
    store = Store.from_url(db_url)
    try:
        with pytest.raises(InvalidCredentials):
            store.accounts.authenticate(created["api_key"])
        assert store.accounts.authenticate(rotated["api_key"])["id"] == created["id"]
    finally:
        store.close()


def test_errors(db_url, capsys):
    code, out, err = run(capsys, "accounts", "rotate-key", "f" * 32)
    assert code == 1 and out == "" and "no such account" in err
    code, out, err = run(capsys, "accounts", "create", "--name", "  ")
    assert code == 2 and out == "" and "name" in err
    code, _, err = run(capsys, "accounts", "create")  # --name is required
    assert code == 2 and "--name" in err
    code, _, err = run(capsys, "accounts")
    assert code == 2 and "subcommand is required" in err


def test_database_from_config_file(tmp_path, monkeypatch, capsys):
    for key in list(os.environ):
        if key.startswith("CONFD_"):
            monkeypatch.delenv(key)
    url = f"sqlite:///{tmp_path}/from-file.db"
    cfg = tmp_path / "confd.yml"
    cfg.write_text(f"database:\n  url: {url}\n")
    code, out, err = run(capsys, "accounts", "create", "--name", "acme", "--config", str(cfg))
    assert code == 0, err
    monkeypatch.setenv("CONFD_CONFIG", str(cfg))
    _, out, _ = run(capsys, "accounts", "list")
    assert [a["name"] for a in json.loads(out)] == ["acme"]
    assert (tmp_path / "from-file.db").exists()


def test_unreachable_database_is_a_clear_error(tmp_path, monkeypatch, capsys):
    for key in list(os.environ):
        if key.startswith("CONFD_"):
            monkeypatch.delenv(key)
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    monkeypatch.setenv("CONFD_DATABASE_URL", "postgresql://confd:pw@127.0.0.1:9/confd")
    code, out, err = run(capsys, "accounts", "list")
    assert code == 2 and out == "" and "cannot open the database" in err  # a config to fix
    assert "pw" not in err.replace("cannot open", "")


def test_as_a_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFD_")}
    env.update(PYTHONPATH=str(REPO), CONFD_DATABASE_URL="sqlite:///data/confd.db")
    proc = subprocess.run(
        [sys.executable, "-m", "confd", "accounts", "create", "--name", "acme", "--admin"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["admin"] is True
    assert (tmp_path / "data" / "confd.db").exists()  # relative to the working directory

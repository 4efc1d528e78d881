"""``confd check-config`` and ``confd accounts ...`` accept a cluster configuration and never
contact the broker (cluster.md, "Configuration"): a listener standing in for RabbitMQ counts
every connection made to it, and sees none."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import List

import yaml

from confd_tests.netutil import run_confd


class Listener:
    """A TCP port that counts the connections made to it (and answers nothing)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: List[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def _config(path: Path, database_url: str, broker_port: int) -> Path:
    cfg = {
        "database": {"url": database_url},
        "cluster": {
            "instance": "cli-test",
            "amqp_url": "amqp://guest:guest@127.0.0.1:%d/" % broker_port,
        },
    }
    path.write_text(json.dumps(cfg))
    return path


def test_check_config_and_accounts_never_contact_the_broker(tmp_path, pg_schema_url) -> None:
    broker = Listener()
    try:
        cfg = _config(tmp_path / "confd.yml", pg_schema_url, broker.port)
        checked = run_confd("check-config", "--config", str(cfg), cwd=tmp_path)
        assert checked.returncode == 0, checked.stderr
        shown = yaml.safe_load(checked.stdout)
        assert shown["cluster"]["instance"] == "cli-test"
        assert shown["cluster"]["amqp_url"] == "amqp://guest:****@127.0.0.1:%d/" % broker.port
        created = run_confd("accounts", "create", "--name", "a", "--config", str(cfg), cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        account = json.loads(created.stdout)
        listed = run_confd("accounts", "list", "--config", str(cfg), cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert account["id"] in listed.stdout
        assert broker.accepted == []
    finally:
        broker.close()


def test_a_cluster_config_on_sqlite_is_refused_naming_the_key(tmp_path) -> None:
    broker = Listener()
    try:
        cfg = _config(tmp_path / "confd.yml", "sqlite:///%s/c.db" % tmp_path, broker.port)
        for args in (("check-config",), ("accounts", "list"), ("run",)):
            result = run_confd(*args, "--config", str(cfg), cwd=tmp_path)
            assert result.returncode == 2, (args, result.stderr)
            assert "database.url" in result.stderr and "PostgreSQL" in result.stderr
        assert broker.accepted == []
        assert not (tmp_path / "c.db").exists()
    finally:
        broker.close()

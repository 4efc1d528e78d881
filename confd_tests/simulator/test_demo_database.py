"""``confd demo`` and databases: it keeps to a database of its own (never the configured one,
which on a production host is the daemon's), binds its port before it writes anything, and
takes its account again on the next start instead of adding another."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest

from confd.store import InvalidCredentials, Store

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90.0  # seconds; a start takes about 2 s on a quiet machine


class Demo:
    """``confd demo --port 0 ...`` as a process; ``wait_ready`` reads its instructions."""

    def __init__(self, cwd: Path, *args: str, env_extra: Optional[dict] = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONFD_")}
        env.update(PYTHONPATH=str(ROOT), **(env_extra or {}))
        self.stderr_path = cwd / ("demo-%d.stderr" % time.monotonic_ns())
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "confd", "demo", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.text = ""

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_ready(self) -> dict:
        """The account id, api key and first conference id the demo printed."""
        deadline = time.monotonic() + START_TIMEOUT
        while "Stop: Ctrl-C" not in self.text:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            assert line is not None, "no instructions: %s\n%s" % (self.text, self.log())
            self.text += line
        found = re.search(r"Demo account ([0-9a-f]{32}), api key ([0-9a-f]{64})", self.text)
        conference = re.search(r"/conferences/([0-9a-f]{32})/participants", self.text)
        assert found and conference, self.text
        return {"id": found[1], "api_key": found[2], "conference": conference[1]}

    def rest(self) -> str:
        """What is left of stdout, once the process has ended."""
        while (line := self._lines.get(timeout=30)) is not None:
            self.text += line
        return self.text

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self._stderr.close()

    def log(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()


@pytest.fixture
def demos():
    started: List[Demo] = []

    def start(cwd: Path, *args: str, env_extra: Optional[dict] = None) -> Demo:
        demo = Demo(cwd, *args, env_extra=env_extra)
        started.append(demo)
        return demo

    yield start
    for demo in started:
        if demo.proc.poll() is None:
            demo.proc.kill()
            demo.proc.wait()


def accounts_in(url: str) -> list:
    store = Store.from_url(url)
    try:
        return store.accounts.list_accounts()
    finally:
        store.close()


def test_demo_keeps_off_the_configured_database(tmp_path, demos):
    """On a host whose config names the daemon's database, the demo adds no account (no live
    api key) there: its account is in ./confd-demo/demo.db."""
    production = tmp_path / "production.db"
    config = tmp_path / "confd.yml"
    config.write_text("database:\n  url: sqlite:///%s\n" % production, encoding="utf-8")
    demo = demos(tmp_path, "--port", "0", env_extra={"CONFD_CONFIG": str(config)})
    printed = demo.wait_ready()
    assert demo.stop() == 0, demo.log()
    assert not production.exists()  # not even opened
    own = "sqlite:///%s" % (tmp_path / "confd-demo" / "demo.db")
    (account,) = accounts_in(own)
    assert account["id"] == printed["id"] and account["name"] == "confd-demo"
    store = Store.from_url(own)
    try:
        assert store.accounts.authenticate(printed["api_key"])["id"] == printed["id"]
    finally:
        store.close()


def test_demo_takes_its_account_again_on_the_next_start(tmp_path, demos):
    url = "sqlite:///%s" % (tmp_path / "mine.db")
    first = demos(tmp_path, "--port", "0", "--database", url)
    one = first.wait_ready()
    assert first.stop() == 0, first.log()
    second = demos(tmp_path, "--port", "0", "--database", url)
    two = second.wait_ready()
    assert second.stop() == 0, second.log()
    assert two["id"] == one["id"] and two["conference"] == one["conference"]
    assert [a["id"] for a in accounts_in(url)] == [one["id"]]  # no second account
    store = Store.from_url(url)
    try:
        docs, _ = store.conferences.list(one["id"])
        assert len(docs) == 2  # the two demo conferences, not four
        # Only a hash of a key is kept, so each start prints a new one; the last one works.
        with pytest.raises(InvalidCredentials):
            store.accounts.authenticate(one["api_key"])
        assert store.accounts.authenticate(two["api_key"])["id"] == one["id"]
    finally:
        store.close()


def test_demo_writes_nothing_when_its_port_is_taken(tmp_path, demos):
    url = "sqlite:///%s" % (tmp_path / "mine.db")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = demos(tmp_path, "--port", str(port), "--database", url)
        code = demo.proc.wait(120)
    err = demo.log()
    assert code == 2, err
    assert "Address already in use" in err and str(port) in err and "Traceback" not in err
    assert demo.rest() == "" and accounts_in(url) == []  # no account: nothing printed either

"""Fixtures for the event tests: a fake FreeSWITCH in its own thread, a ``confd run`` process.

The test process is not monkey-patched and websocket-client blocks, so the fake FreeSWITCH runs
on a gevent hub of its own in a separate thread; tests drive it through ``FakeThread.call``,
which runs a function in that thread and returns its result (gevent objects never cross threads).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import pytest

from confd_tests.netutil import free_port, process_log, serve_calls, stop_process

ROOT = Path(__file__).resolve().parents[2]


class FakeThread:
    """FakeFreeSwitch (confd.simulator) served by a gevent hub in a thread of its own."""

    def __init__(self, hostname: str = "fs-sim") -> None:
        self.hostname = hostname
        self._calls: queue.Queue[tuple] = queue.Queue()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self.port = 0
        self.fake: Any = None
        self._thread = threading.Thread(target=self._run, name="fake-freeswitch", daemon=True)

    def start(self) -> FakeThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake FreeSWITCH did not start")
        return self

    def _run(self) -> None:

        from confd.simulator.model import ConferenceModel
        from confd.simulator.server import FakeFreeSwitch

        self.fake = FakeFreeSwitch(ConferenceModel(hostname=self.hostname, sounds=False))
        self.fake.start()
        self.port = self.fake.port
        self._ready.set()
        serve_calls(self._calls, self._stop)
        self.fake.stop()

    def call(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._calls.put((fn, args, kwargs, fut))
        return fut.result(timeout=10)

    def model(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a ConferenceModel method (join, leave, set_talking, api) in the fake's thread."""
        return self.call(lambda: getattr(self.fake.model, method)(*args, **kwargs))

    def connections(self) -> int:
        return self.call(lambda: self.fake.connections)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def http(method: str, url: str, body: Optional[dict] = None, timeout: float = 5.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out waiting for %s" % what)


class ConfdProcess:
    def __init__(self, tmp: Path, fs_port: int, config: Optional[Dict[str, Any]] = None):
        import yaml

        self.tmp = tmp
        self.port = free_port()
        self.db_url = "sqlite:///%s" % (tmp / "confd.db")
        cfg_path = tmp / "confd.yml"
        cfg = {
            "freeswitch": {"reconnect_min": 0.05, "reconnect_max": 0.5},
            "log": {"level": "info"},
        }
        for section, values in (config or {}).items():
            cfg.setdefault(section, {}).update(values)
        cfg_path.write_text(yaml.safe_dump(cfg))
        env = dict(os.environ)
        env.update(
            CONFD_CONFIG=str(cfg_path),
            CONFD_HTTP_PORT=str(self.port),
            CONFD_FREESWITCH="127.0.0.1:%d:ClueCon" % fs_port,
            CONFD_DATABASE_URL=self.db_url,
            PYTHONPATH=str(ROOT),
        )
        self.stderr_path = tmp / "confd.stderr"
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "confd", "run"],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        self.base = "http://127.0.0.1:%d" % self.port
        self.ws_url = "ws://127.0.0.1:%d/v2/websocket" % self.port
        self._store: Any = None

    @property
    def store(self) -> Any:
        if self._store is None:
            from confd.store import Store

            self._store = Store.from_url(self.db_url)
        return self._store

    def health(self):
        return http("GET", self.base + "/v2/health", timeout=2)

    def wait_connected(self, timeout: float = 60.0) -> None:  # a busy machine starts slowly
        def ok():
            try:
                return self.health()[0] == 200
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError("confd exited: " + self.log()) from None
                return False

        wait_for(ok, timeout, "confd connected to the fake FreeSWITCH")

    def log(self) -> str:
        return process_log(self._stderr, self.stderr_path)

    def stop(self) -> None:
        stop_process(self.proc, self._stderr, 10)
        if self._store is not None:
            self._store.close()


@pytest.fixture
def fake_fs():
    fake = FakeThread().start()
    yield fake
    fake.stop()


@pytest.fixture
def confd(tmp_path, fake_fs):
    procs = []

    def start(config: Optional[Dict[str, Any]] = None) -> ConfdProcess:
        proc = ConfdProcess(tmp_path, fake_fs.port, config)
        procs.append(proc)
        proc.wait_connected()
        return proc

    yield start
    for proc in procs:
        proc.stop()


# The AMQP tests need a broker: they are collected only when CONFD_TEST_AMQP_URL names one
# (e.g. amqp://guest:guest@127.0.0.1:5672/), not collected-and-skipped otherwise.
collect_ignore = [] if os.environ.get("CONFD_TEST_AMQP_URL") else ["test_amqp.py"]

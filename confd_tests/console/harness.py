"""What the console's browser tests run against: the simulated FreeSWITCH node in a thread of its
own, ``confd`` as a real process, a TCP proxy the tests can cut, and the browser.

The test process is not monkey-patched and Playwright's sync API blocks, so the simulator runs
on a gevent hub of its own in a separate thread (as in ``confd_tests/events``); tests drive it
through ``Sim.call``, which runs a function in that thread and returns its result.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from confd_tests.netutil import free_port, process_log, serve_calls, stop_process

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CONFD_CHROMIUM", "/usr/bin/chromium")
# Debian's chromium, driven through executable_path (never `playwright install`): as root it
# needs --no-sandbox; the rest keep it from reaching out to the network on its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ACCOUNT_VAR = "ecallmgr_Account-ID"
LINGER_NONE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends an RST


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy (generous deadlines: a busy machine only slows)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.05)


def http(
    method: str,
    url: str,
    body: Optional[dict] = None,
    token: Optional[str] = None,
    timeout: float = 10.0,
) -> Tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, json.loads(raw) if "json" in ctype else raw
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw


# --- the simulated FreeSWITCH node -----------------------------------------------------------


class Sim:
    """FakeFreeSwitch (confd.simulator) in a thread with its own gevent hub, plus the controls
    the console tests need: hold the node's events back (a command answered +OK whose event
    has not come yet), answer chosen commands with -ERR, and record every command."""

    def __init__(self, hostname: str = "fs-console") -> None:
        self.hostname = hostname
        self._calls: queue.Queue = queue.Queue()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self.port = 0
        self.fake: Any = None
        self.held: List[Any] = []
        self.gate_closed = False
        self.failures: List[Tuple[str, str]] = []  # (substring of the api line, reply)
        self._thread = threading.Thread(target=self._run, name="console-sim", daemon=True)

    def start(self) -> Sim:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the simulated FreeSWITCH did not start")
        return self

    def _run(self) -> None:

        from confd.simulator.model import ConferenceModel
        from confd.simulator.server import FakeFreeSwitch

        model = ConferenceModel(hostname=self.hostname, sounds=False)
        self.fake = FakeFreeSwitch(model).start()
        # Events pass through a gate the tests can close: what FreeSWITCH would send after
        # its +OK is then held back until the test opens it again.
        model.remove_listener(self.fake._on_event)
        model.add_listener(self._gate)
        plain_api = model.api

        def api(line: str) -> str:
            for i, (needle, reply) in enumerate(self.failures):
                if needle in line:
                    del self.failures[i]
                    return reply
            return plain_api(line)

        model.api = api  # what the node answers to `api ...` commands
        self.port = self.fake.port
        self._ready.set()
        serve_calls(self._calls, self._stop)
        self.fake.stop()

    def _gate(self, pairs: Any) -> None:
        if self.gate_closed:
            self.held.append(pairs)
        else:
            self.fake._on_event(pairs)

    def call(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._calls.put((fn, args, kwargs, fut))
        return fut.result(timeout=30)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    # --- callers ---------------------------------------------------------------------------

    def join(self, conference: str, name: str, number: str = "", **kw: Any) -> int:
        kw.setdefault("direction", "inbound")
        member_id = self.call(
            lambda: self.fake.model.join(
                conference, caller_id_name=name, caller_id_number=number, **kw
            )
        )
        assert member_id is not None, "join refused (locked?)"
        return member_id

    def leave(self, member_id: int) -> None:
        assert self.call(lambda: self.fake.model.leave(member_id))

    def talk(self, member_id: int, talking: bool) -> bool:
        return self.call(lambda: self.fake.model.set_talking(member_id, talking))

    def api(self, line: str) -> str:
        """What an operator's command does, run on the node directly."""
        return self.call(lambda: self.fake.model.api(line))

    def member(self, member_id: int) -> Any:
        return self.call(lambda: self.fake.model.member(member_id))

    def members(self, conference: str) -> List[Any]:
        return self.call(lambda: list(self.fake.model.members(conference)))

    # --- commands and faults ---------------------------------------------------------------

    def commands(self) -> List[str]:
        """Every command line received, in order (``api conference ... mute 3``)."""
        return self.call(lambda: [line for _, line in self.fake.commands])

    def conference_commands(self, conference: str, since: int = 0) -> List[str]:
        """The ``api conference <conference> ...`` lines received after the first ``since``."""
        prefix = "api conference %s " % conference
        return [c for c in self.commands()[since:] if c.startswith(prefix)]

    def close_gate(self) -> None:
        self.call(lambda: setattr(self, "gate_closed", True))

    def open_gate(self) -> None:
        def release() -> None:
            self.gate_closed = False
            held, self.held = self.held, []
            for pairs in held:
                self.fake._on_event(pairs)

        self.call(release)

    def fail_next(self, needle: str, reply: str = "-ERR simulated failure\n") -> None:
        """The next ``api`` line containing ``needle`` is answered ``reply`` (nothing done)."""
        self.call(lambda: self.failures.append((needle, reply)))

    def hold_replies(self, holding: bool) -> None:
        """Commands are recorded but never answered (a stalled FreeSWITCH)."""
        self.call(lambda: self.fake.hold_replies(holding))


# --- confd -----------------------------------------------------------------------------------


class Confd:
    """``confd run`` as a real process against the simulator (the console is served by it)."""

    def __init__(
        self,
        tmp: Path,
        fs_port: int,
        config: Optional[Dict[str, Any]] = None,
        port: Optional[int] = None,
        db_url: Optional[str] = None,
        extra_nodes: Tuple[str, ...] = (),
    ) -> None:
        import yaml

        self.tmp = tmp
        self.port = port or free_port()
        self.db_url = db_url or "sqlite:///%s" % (tmp / "confd.db")
        cfg = {
            "freeswitch": {"reconnect_min": 0.05, "reconnect_max": 0.5, "command_timeout": 2.0},
            "log": {"level": "info"},
        }
        for section, values in (config or {}).items():
            cfg.setdefault(section, {}).update(values)
        cfg_path = tmp / ("confd-%d.yml" % self.port)
        cfg_path.write_text(yaml.safe_dump(cfg))
        env = dict(os.environ)
        env.update(
            CONFD_CONFIG=str(cfg_path),
            CONFD_HTTP_PORT=str(self.port),
            CONFD_FREESWITCH=",".join(("127.0.0.1:%d:ClueCon" % fs_port,) + extra_nodes),
            CONFD_DATABASE_URL=self.db_url,
            PYTHONPATH=str(ROOT),
        )
        self.stderr_path = tmp / ("confd-%d.stderr" % self.port)
        self._stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "confd", "run"],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        self.base = "http://127.0.0.1:%d" % self.port

    def wait_connected(self, timeout: float = 30.0) -> Confd:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError("confd exited: " + self.log())
            try:
                return http("GET", self.base + "/v2/health", timeout=2)[0] == 200
            except OSError:
                return False

        wait_for(up, timeout, "confd connected to the simulator")
        return self

    def log(self) -> str:
        return process_log(self._stderr, self.stderr_path)

    def stop(self) -> None:
        stop_process(self.proc, self._stderr, 15)


class Account:
    """An account of the running confd, with a token for the tests' own REST calls."""

    def __init__(self, base: str, account: Dict[str, Any], api_key: str) -> None:
        self.base = base
        self.id = account["id"]
        self.name = account["name"]
        self.api_key = api_key
        status, body = http("PUT", base + "/v2/api_auth", {"data": {"api_key": api_key}})
        assert status == 201, body
        self.token = body["auth_token"]

    def url(self, rest: str = "") -> str:
        return "%s/v2/accounts/%s%s" % (self.base, self.id, rest)

    def create_conference(self, name: str, **doc: Any) -> str:
        status, body = http(
            "PUT", self.url("/conferences"), {"data": {"name": name, **doc}}, self.token
        )
        assert status == 201, body
        return body["data"]["id"]

    def participants(self, conference: str) -> List[Dict[str, Any]]:
        status, body = http("GET", self.url("/conferences/%s/participants" % conference), None,
                            self.token)  # fmt: skip
        assert status == 200, body
        return body["data"]

    def wait_participants(self, conference: str, n: int, timeout: float = 30.0) -> None:
        wait_for(
            lambda: len(self.participants(conference)) == n,
            timeout,
            "confd to see %d participants in %s" % (n, conference),
        )


# --- a TCP proxy the tests can cut -----------------------------------------------------------


class CutProxy:
    """Forwards 127.0.0.1:<port> to confd. ``cut()`` closes every connection at once (no
    websocket close frame: what a dead network path looks like) and, while ``refusing``, new
    connections are closed as soon as they are accepted."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.refusing = False
        self.accepted = 0
        self._pairs: List[Tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="cut-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.accepted += 1
                self._pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    # Closed with no linger: an RST, not a FIN. The browser sees the connection
                    # die with no websocket close frame.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_NONE)
                    s.shutdown(socket.SHUT_RD)  # wakes the pump threads
                except OSError:
                    pass
            for s in pair:
                s.close()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()

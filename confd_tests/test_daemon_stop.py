"""Graceful stop of ``confd run`` (a real process): SIGTERM or SIGINT while API requests wait
for FreeSWITCH.

The daemon talks to a ``FakeFreeSwitch`` served in this process, through a loopback proxy that
can hold FreeSWITCH's bytes back: the action requests are then inside confd, their commands
sent and answered, the answers in the proxy. The signal comes while they wait. Expected:

* the listening socket closes at once (new connections refused) while they still wait;
* once the replies flow again, each of them gets its normal 202 answer;
* confd then closes its ESL connections itself (the proxy sees confd's side close first; the
  fake never drops anyone and sees its connections go);
* the process exits 0 within 5 s of the signal, without a traceback.

Everything here waits cooperatively (gevent sockets and sleeps), so the in-process fake and
proxy keep serving the daemon meanwhile.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import gevent
import pytest
from gevent import socket as gsocket
from gevent.event import Event
from gevent.server import StreamServer

from confd.simulator.model import ConferenceModel
from confd.simulator.server import FakeFreeSwitch
from confd_tests.http.client import ApiClient, Reply
from confd_tests.netutil import free_port

ROOT = Path(__file__).resolve().parent.parent
EXIT_DEADLINE = 5.0  # seconds from the signal to the process's exit
REFUSED_WITHIN = 3.0  # generous: two cores shared with other test runs
HOLD_AFTER_REFUSED = 0.5  # the requests keep waiting a while after the listener closed
START_TIMEOUT = 30.0
CONFD_SIDE = "confd"
FREESWITCH_SIDE = "freeswitch"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        gevent.sleep(0.02)


@dataclass
class Link:
    """One proxied connection; ``closed_first`` is the side whose end of stream came first."""

    closed_first: Optional[str] = None
    error: Optional[str] = None


class HoldingProxy:
    """Loopback TCP proxy to the fake FreeSWITCH; while ``holding``, FreeSWITCH -> confd bytes
    wait in the proxy (confd -> FreeSWITCH always flows)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.holding = False
        self.links: List[Link] = []
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.port = 0

    def start(self) -> HoldingProxy:
        self.server.start()
        self.port = self.server.server_port
        return self

    def stop(self) -> None:
        self.server.stop(timeout=1)

    def _handle(self, client: Any, _address: Any) -> None:
        link = Link()
        self.links.append(link)
        upstream = gsocket.create_connection(("127.0.0.1", self.upstream_port))
        pumps = [
            gevent.spawn(self._pump, client, upstream, link, CONFD_SIDE, False),
            gevent.spawn(self._pump, upstream, client, link, FREESWITCH_SIDE, True),
        ]
        try:
            gevent.joinall(pumps)
        finally:
            for pump in pumps:
                pump.kill(block=False)
            upstream.close()
            client.close()

    def _pump(self, src: Any, dst: Any, link: Link, side: str, held: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while held and self.holding:
                    gevent.sleep(0.005)
                dst.sendall(data)
        except OSError as exc:
            link.error = link.error or "%s: %r" % (side, exc)
        finally:
            if link.closed_first is None:
                link.closed_first = side
            try:
                dst.shutdown(socket.SHUT_WR)  # pass the end of stream on
            except OSError:
                pass


@pytest.fixture
def env(tmp_path: Path) -> Dict[str, str]:
    environ = dict(os.environ)
    for key in list(environ):
        if key.startswith("CONFD_"):
            del environ[key]
    environ.update(
        CONFD_DATABASE_URL=f"sqlite:///{tmp_path}/confd.db",
        PYTHONPATH=str(ROOT),
    )
    return environ


@pytest.fixture
def fake() -> Any:
    fs = FakeFreeSwitch(ConferenceModel(hostname="fs1")).start()
    yield fs
    fs.stop()


@pytest.fixture
def proxy(fake: FakeFreeSwitch) -> Any:
    p = HoldingProxy(fake.port).start()
    yield p
    p.holding = False
    p.stop()


@pytest.fixture
def procs() -> Any:
    started: List[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def create_account(env: Dict[str, str], cwd: Path) -> Dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "confd", "accounts", "create", "--name", "x"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def start_daemon(env: Dict[str, str], cwd: Path, fs_port: int, procs: List[Any]) -> Any:
    port = free_port()
    run_env = dict(env, CONFD_HTTP_PORT=str(port), CONFD_FREESWITCH=f"127.0.0.1:{fs_port}:ClueCon")
    log = open(cwd / "confd.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "confd", "run"],
        cwd=cwd,
        env=run_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()  # the child has its own copy
    procs.append(proc)
    anon = ApiClient(port)

    def healthy() -> bool:
        assert proc.poll() is None, (cwd / "confd.log").read_text()
        try:
            return anon.get("/v2/health", token=None).status == 200
        except OSError:
            return False

    wait_for(healthy, START_TIMEOUT, "confd healthy")
    return proc, port


def signed_in(env: Dict[str, str], cwd: Path, fs_port: int, procs: List[Any]) -> Any:
    """A running confd and a client holding a token of a fresh account; the account id."""
    created = create_account(env, cwd)
    proc, port = start_daemon(env, cwd, fs_port, procs)
    auth = ApiClient(port).put("/v2/api_auth", {"api_key": created["api_key"]}, token=None)
    assert auth.status == 201, auth
    return proc, port, ApiClient(port, auth.body["auth_token"]), created["id"]


def refused(port: int) -> bool:
    try:
        sock = gsocket.create_connection(("127.0.0.1", port), timeout=1.0)
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        # Our SYN was in the listen backlog when the listener closed: ask again, the next
        # attempt meets the closed port.
        return False
    sock.close()
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_finishes_in_flight_requests_then_closes_esl_and_exits_0(
    signum: int, tmp_path: Path, env: Dict[str, str], fake: Any, proxy: Any, procs: List[Any]
) -> None:
    proc, port, api, account_id = signed_in(env, tmp_path, proxy.port, procs)
    base = f"/v2/accounts/{account_id}/conferences"
    made = api.put(base, {"name": "room"})
    assert made.status == 201, made
    conf = made.data["id"]
    moderator = fake.model.join(conf, caller_id_name="mod", moderator=True)
    first = fake.model.join(conf, caller_id_name="a")
    second = fake.model.join(conf, caller_id_name="b")
    wait_for(lambda: len(api.get(f"{base}/{conf}/participants").data) == 3, 10.0, "3 participants")
    esl_links = len(proxy.links)
    assert esl_links >= 1 and fake.connections == esl_links

    # Requests that wait for FreeSWITCH: (method, path, action, the command confd must send).
    requests = [
        (f"{base}/{conf}/participants/{first}", "mute", f"conference {conf} mute {first}"),
        (f"{base}/{conf}/participants/{second}", "deaf", f"conference {conf} deaf {second}"),
        (f"{base}/{conf}/participants", "unmute", f"conference {conf} unmute non_moderator"),
        (f"{base}/{conf}", "lock", f"conference {conf} lock"),
    ]
    proxy.holding = True
    answers: List[Optional[Reply]] = [None] * len(requests)

    def send(i: int) -> None:
        path, action, _ = requests[i]
        answers[i] = api.put(path, {"action": action})

    workers = [gevent.spawn(send, i) for i in range(len(requests))]
    wanted = {"api " + command for _, _, command in requests}

    def all_sent() -> bool:
        finished = [answer for w, answer in zip(workers, answers) if w.dead]
        assert not finished, ("a request finished although its reply is held", finished)
        return wanted <= {line for _, line in fake.commands}

    wait_for(all_sent, 10.0, "every command at FreeSWITCH")

    t0 = time.monotonic()
    proc.send_signal(signum)
    wait_for(lambda: refused(port), REFUSED_WITHIN, "new connections refused")
    refused_after = time.monotonic() - t0
    gevent.sleep(HOLD_AFTER_REFUSED)
    assert all(not w.dead for w in workers), "an in-flight request ended before its reply"
    assert proc.poll() is None, "exited with requests in flight"
    proxy.holding = False

    gevent.joinall(workers, timeout=EXIT_DEADLINE)
    for (_, action, command), answer in zip(requests, answers):
        assert answer is not None, (action, "no answer")
        assert answer.status == 202, (action, answer)
        assert answer.data["action"] == action and answer.data["command"] == command, answer
        assert answer.data["reply"].startswith(("+OK", "Skipping moderator")), answer

    wait_for(lambda: proc.poll() is not None, EXIT_DEADLINE, "confd exits")
    elapsed = time.monotonic() - t0
    log = (tmp_path / "confd.log").read_text()
    assert proc.returncode == 0, log
    assert elapsed < EXIT_DEADLINE, (elapsed, log)
    assert refused_after < elapsed
    assert "Traceback" not in log, log

    # confd closed every ESL connection itself; the fake saw them go, without dropping anyone.
    wait_for(lambda: fake.connections == 0, 2.0, "the fake's connections closed")
    assert [link.closed_first for link in proxy.links] == [CONFD_SIDE] * len(proxy.links), [
        (link.closed_first, link.error) for link in proxy.links
    ]
    assert moderator is not None and fake.model.member(moderator) is not None


CONCURRENT = 10
ROUNDS = 30
ROUND_TIMEOUT = 5.0


def test_concurrent_requests_are_all_answered(
    tmp_path: Path, env: Dict[str, str], fake: Any, procs: List[Any]
) -> None:
    """The precondition of the test above, on its own: requests that reach the store at the
    same time (every token check does) are all answered. Each store call runs on gevent's
    thread pool; a hang there leaves the request without any answer, past every timeout."""
    proc, port, api, account_id = signed_in(env, tmp_path, fake.port, procs)
    path = f"/v2/accounts/{account_id}/conferences"
    for round_no in range(ROUNDS):
        workers = [gevent.spawn(api.get, path) for _ in range(CONCURRENT)]
        done = gevent.joinall(workers, timeout=ROUND_TIMEOUT)
        statuses = [w.value.status if w.successful() and w.value else w.exception for w in workers]
        assert len(done) == CONCURRENT, (round_no, "unanswered", statuses)
        assert statuses == [200] * CONCURRENT, (round_no, statuses)
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: proc.poll() is not None, EXIT_DEADLINE, "confd exits")
    assert proc.returncode == 0


# --- the stop budget (in-process daemons) ----------------------------------------------------


def test_the_stop_budget_fits_the_systemd_unit() -> None:
    """Every stop step takes its time from one budget, and that budget ends before systemd
    kills confd; the unit's open-files limit covers the connection bounds."""
    from confd import daemon
    from confd.config import HttpConfig
    from confd.http.server import Limits

    unit = (ROOT / "systemd" / "confd.service").read_text()
    stop_timeout = float(re.search(r"^TimeoutStopSec=([0-9]+)$", unit, re.M).group(1))
    nofile = int(re.search(r"^LimitNOFILE=([0-9]+)$", unit, re.M).group(1))
    steps = daemon.ENTRY_STOP + daemon.HTTP_DRAIN + daemon.NODES_STOP + daemon.AMQP_STOP
    assert steps <= daemon.STOP_BUDGET
    assert daemon.STOP_BUDGET <= stop_timeout - 3  # the interpreter's exit after it
    http = HttpConfig()
    bounds = Limits(max_connections=http.max_connections, max_websockets=http.max_websockets)
    assert nofile >= bounds.fds_needed


def test_an_idle_keepalive_connection_is_closed_at_once_on_stop(tmp_path: Path) -> None:
    """The stop closes a connection waiting for its next request at once, while a request in
    flight is still being answered (before, the idle one held the stop for its whole 5 s)."""
    from confd_tests.http.serverutil import KeepAlive, read_until_closed, start_live

    live = start_live(tmp_path)
    try:
        idle = KeepAlive(live.port)
        assert idle.request("GET", "/v2/health")[0] == 200  # the connection stays open
        entered, release = Event(), Event()
        health = live.daemon.ctx.health

        def held_health() -> Any:
            entered.set()
            release.wait()
            return health()

        live.daemon.ctx.health = held_health
        in_flight = gevent.spawn(ApiClient(live.port).get, "/v2/health", token=None)
        assert entered.wait(timeout=10)
        stopper = gevent.spawn(live.daemon.stop)
        assert read_until_closed(idle.sock, timeout=30) == b""
        assert not in_flight.dead, "the request in flight ended with the idle connection"
        release.set()
        reply = in_flight.get(timeout=30)
        assert reply.status == 200, reply
        stopper.get(timeout=30)
        idle.close()
    finally:
        live.fake.stop()


STUCK_BUDGET = 2.0


def test_nodes_whose_stop_hangs_do_not_pass_the_budget(tmp_path: Path) -> None:
    """Two nodes whose stop never returns: they are stopped side by side, and the daemon's
    stop still ends within its budget and closes the store."""
    from confd.config import config_from_dict
    from confd.daemon import Daemon
    from confd.store import Store

    fakes = [FakeFreeSwitch(ConferenceModel(hostname=n)).start() for n in ("fs1", "fs2")]
    cfg = config_from_dict(
        {
            "http": {"host": "127.0.0.1", "port": 0},
            "database": {"url": f"sqlite:///{tmp_path}/confd.db"},
            "freeswitch": {
                "nodes": [
                    {"host": "127.0.0.1", "port": f.port, "name": "fs%d" % i}
                    for i, f in enumerate(fakes)
                ],
                "reconnect_min": 0.05,
            },
        }
    )
    daemon = Daemon(cfg, store=Store.from_url(cfg.database.url))
    daemon.start()
    asked: List[str] = []
    closed: List[bool] = []
    real_close = daemon.store.close
    try:
        for node in daemon.nodes:

            def hang(timeout: float = 0.0, name: str = node.name) -> None:
                asked.append(name)
                gevent.sleep(3600)

            node.stop = hang  # type: ignore[method-assign]
        daemon.store.close = lambda: closed.append(True) or real_close()  # type: ignore
        t0 = time.monotonic()
        with gevent.Timeout(STUCK_BUDGET + 20, AssertionError("the stop passed its budget")):
            daemon.stop(budget=STUCK_BUDGET)
        elapsed = time.monotonic() - t0
        assert sorted(asked) == ["fs0", "fs1"]  # both asked, side by side
        assert closed == [True]
        assert elapsed >= STUCK_BUDGET / 4  # it did wait for them, a while
    finally:
        for node in daemon.nodes:
            type(node).stop(node, timeout=1.0)
        for fake in fakes:
            fake.stop()

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

"""Helpers for the tests of the HTTP server itself (``confd.http.server``): a daemon with its
``http`` settings chosen by the test, and raw HTTP over gevent sockets (requests no ordinary
client would send, connections held open on purpose)."""

from __future__ import annotations

import http.client
import json
import resource
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import gevent
from gevent import socket as gsocket

from confd.config import config_from_dict
from confd.daemon import Daemon
from confd.simulator.model import ConferenceModel
from confd.simulator.server import FakeFreeSwitch
from confd.store import Store
from confd_tests.conftest import wait_until

TIMEOUT = 10.0  # generous: two cores shared with other test runs


@dataclass
class Live:
    daemon: Daemon
    fake: FakeFreeSwitch

    @property
    def port(self) -> int:
        return self.daemon.http_port

    def metrics(self) -> str:
        return self.daemon.metrics.render()[0].decode()

    def stop(self) -> None:
        self.daemon.stop()
        self.fake.stop()


def start_live(tmp_path: Any, **http: Any) -> Live:
    """A daemon on 127.0.0.1 (port 0) with one simulated node, ``http`` settings on top."""
    fake = FakeFreeSwitch(ConferenceModel(hostname="fs1")).start()
    cfg = config_from_dict(
        {
            "http": {"host": "127.0.0.1", "port": 0, **http},
            "database": {"url": "sqlite:///%s/confd.db" % tmp_path},
            "freeswitch": {
                "nodes": [{"host": "127.0.0.1", "port": fake.port, "name": "fs1"}],
                "reconnect_min": 0.05,
                "reconnect_max": 0.2,
            },
        }
    )
    daemon = Daemon(cfg, instance_name="confd-test", store=Store.from_url(cfg.database.url))
    daemon.start()
    wait_until(lambda: daemon.nodes[0].connected, timeout=TIMEOUT, what="node connected")
    return Live(daemon, fake)


def at_least_open_files(n: int) -> None:
    """This process (client and daemon sockets both) needs ``n`` file descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        assert hard == resource.RLIM_INFINITY or hard >= n, ("open-files hard limit", hard, n)
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def connect(port: int, timeout: float = TIMEOUT) -> Any:
    return gsocket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_until_closed(sock: Any, timeout: float = TIMEOUT) -> bytes:
    chunks: List[bytes] = []
    with gevent.Timeout(timeout, AssertionError("the server did not close the connection")):
        while True:
            data = sock.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


@dataclass
class RawReply:
    status: int
    headers: Dict[str, str]  # lower-case names; repeated ones joined with ", "
    body: Any  # parsed JSON when it is JSON

    def envelope(self, status: int, message: str) -> Dict[str, Any]:
        """Asserts this is the API's error envelope (api.md) and returns its data."""
        assert self.status == status, self
        assert self.headers.get("content-type", "").startswith("application/json"), self
        body = self.body
        assert isinstance(body, dict), self
        assert body["status"] == "error" and body["error"] == str(status), body
        assert body["message"] == message, body
        for key in ("data", "request_id", "node", "version", "timestamp"):
            assert key in body, (key, body)
        assert self.headers.get("x-request-id") == body["request_id"], self
        return body["data"]


def parse(raw: bytes) -> RawReply:
    head, _, content = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = headers[key] + ", " + value.strip() if key in headers else value.strip()
    body: Any = content
    if headers.get("content-type", "").startswith("application/json"):
        body = json.loads(content)
    return RawReply(status, headers, body)


def exchange(port: int, raw: bytes, timeout: float = TIMEOUT) -> RawReply:
    """Send ``raw`` on a new connection; the server's answer, read until it closes."""
    sock = connect(port)
    try:
        sock.sendall(raw)
        return parse(read_until_closed(sock, timeout))
    finally:
        sock.close()


class KeepAlive:
    """One HTTP/1.1 connection used for several requests (``http.client`` on a gevent
    socket: the daemon in this process runs while it waits)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        self.conn.sock = connect(port)

    def request(
        self, method: str, path: str, headers: Optional[Dict[str, str]] = None
    ) -> Tuple[int, Dict[str, str], Any]:
        self.conn.request(method, path, headers=headers or {})
        resp = self.conn.getresponse()
        content = resp.read()
        out = {k.lower(): v for k, v in resp.getheaders()}
        body = json.loads(content) if content[:1] == b"{" else content
        return resp.status, out, body

    @property
    def sock(self) -> Any:
        return self.conn.sock

    def close(self) -> None:
        self.conn.close()

"""A small HTTP client for the in-process daemon.

The test process is not monkey-patched, and the daemon and the fake FreeSWITCH nodes run in its
greenlets; a blocking client would freeze them. This client is ``http.client`` over a *gevent*
socket: while it waits for the answer, the hub runs the daemon, which is what makes a real HTTP
round trip possible inside one process.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from gevent import socket as gsocket

TIMEOUT = 10.0


class _GeventConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = gsocket.create_connection((self.host, self.port), self.timeout)


@dataclass
class Reply:
    status: int
    headers: Dict[str, str]
    raw: bytes
    body: Any = field(default=None)

    @property
    def data(self) -> Any:
        return self.body["data"]

    @property
    def message(self) -> Optional[str]:
        return self.body.get("message")

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.raw[:400]!r})"


class ApiClient:
    def __init__(self, port: int, token: Optional[str] = None) -> None:
        self.port = port
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        data: Any = None,
        *,
        body: Any = None,
        raw: Optional[bytes] = None,
        token: Any = "default",
        headers: Optional[Dict[str, str]] = None,
    ) -> Reply:
        """``data`` is sent as ``{"data": data}``; ``body`` as it is (JSON); ``raw`` as bytes.
        ``token`` defaults to the client's; None sends no X-Auth-Token."""
        sent: Dict[str, str] = {}
        tok = self.token if token == "default" else token
        if tok is not None:
            sent["X-Auth-Token"] = tok
        payload: Optional[bytes] = raw
        if data is not None:
            payload = json.dumps({"data": data}).encode()
        elif body is not None:
            payload = json.dumps(body).encode()
        if payload is not None:
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        conn = _GeventConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            conn.request(method, path, body=payload, headers=sent)
            resp = conn.getresponse()
            content = resp.read()
            reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, content)
        finally:
            conn.close()
        if reply.headers.get("content-type", "").startswith("application/json"):
            reply.body = json.loads(content)
        return reply

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def put(self, path: str, data: Any = None, **kw: Any) -> Reply:
        return self.request("PUT", path, data, **kw)

    def post(self, path: str, data: Any = None, **kw: Any) -> Reply:
        return self.request("POST", path, data, **kw)

    def patch(self, path: str, data: Any = None, **kw: Any) -> Reply:
        return self.request("PATCH", path, data, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.request("DELETE", path, **kw)

"""A blocking HTTP client that sends the request path exactly as given (percent-encoding
included) to the fuzz server, and insists on a JSON answer."""

from __future__ import annotations

import http.client
import json
from typing import Any, Optional, Tuple

from confd_tests.fuzz.server import LiveApi

TIMEOUT = 10.0


def send_raw(
    api: LiveApi, method: str, path: str, body: Optional[bytes] = None
) -> Tuple[int, Any, str]:
    """``(status, parsed JSON body, content type)``; fails unless the answer is JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=TIMEOUT)
    headers = {"X-Auth-Token": api.token, "Connection": "close"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        raw = resp.read()
        ctype = resp.getheader("Content-Type", "")
    finally:
        conn.close()
    assert ctype.split(";")[0] == "application/json", (resp.status, ctype, raw[:300])
    return resp.status, json.loads(raw), ctype

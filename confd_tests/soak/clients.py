"""``python -m confd_tests.soak clients``: websocket subscribers, one thread per connection.

Each connection opens ``GET /v2/websocket`` and subscribes with websocket-client, then reads the
raw socket in large pieces and splits the (unmasked) server frames itself, so that its cost per
event is a slice and a prefix test: an event frame is counted, and one in VALIDATE_EVERY is
decoded and checked (action, routing key, data).  Anything else confd sends (an error notice,
a close frame, EOF) ends the connection and is reported: in a soak, each one is a failure.

Commands (stdin): ``STOP``.  Reports (stdout): ``READY n``, ``STATUS <json>`` every
STATUS_EVERY seconds, ``RESULT <json>`` after STOP.
"""

from __future__ import annotations

import argparse
import json
import queue
import socket
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from confd_tests.loadtools import (
    OPCODE_CLOSE,
    OPCODE_PING,
    OPCODE_TEXT,
    FrameReader,
    close_text,
    pong_frame,
    say,
    stdin_lines,
    subscribe,
)

READ_CHUNK = 256 * 1024
STATUS_EVERY = 0.5
VALIDATE_EVERY = 500
CONNECT_TIMEOUT = 15.0
JOIN_WAIT = 3.0
EVENT_PREFIX = b'{"action":"event"'
ROUTING_PREFIX = "conference.event."


def check_event(payload: bytes) -> Optional[str]:
    """Why an event frame is not what events.md describes, or None when it is."""
    try:
        msg = json.loads(payload)
    except ValueError:
        return "event frame is not JSON"
    data = msg.get("data")
    if not isinstance(data, dict):
        return "event without data"
    key = msg.get("routing_key")
    if not isinstance(key, str) or not key.startswith(ROUTING_PREFIX):
        return "bad routing_key %r" % (key,)
    if msg.get("name") != data.get("event"):
        return "name %r differs from data.event %r" % (msg.get("name"), data.get("event"))
    return None


class Client(threading.Thread):
    def __init__(self, index: int, url: str, token: str, account: str, binding: str) -> None:
        super().__init__(name="ws-%d" % index, daemon=True)
        self.index = index
        self.url = url
        self.token = token
        self.account = account
        self.binding = binding
        self.sock: Optional[socket.socket] = None
        self.received = 0
        self.ended: Optional[str] = None  # why the connection ended, when it did
        self.invalid: Optional[str] = None  # the first malformed event seen
        self.stopping = False

    def connect(self) -> None:
        self._ws, self.sock = subscribe(
            self.url,
            self.token,
            self.account,
            "soak-%d" % self.index,
            CONNECT_TIMEOUT,
            binding=self.binding,
        )  # self._ws keeps the object (and so the socket) alive

    def run(self) -> None:
        assert self.sock is not None
        frames = FrameReader()
        recv = self.sock.recv
        try:
            while True:
                data = recv(READ_CHUNK)
                if not data:
                    self.ended = "EOF"
                    return
                for opcode, payload in frames.feed(data):
                    if opcode == OPCODE_TEXT and payload.startswith(EVENT_PREFIX):
                        self.received += 1
                        if self.received % VALIDATE_EVERY == 1 and self.invalid is None:
                            self.invalid = check_event(payload)
                    elif opcode == OPCODE_CLOSE:
                        self.ended = close_text(payload)
                        return
                    elif opcode == OPCODE_TEXT:
                        self.ended = "message: %s" % payload[:200].decode(errors="replace")
                        return
                    elif opcode == OPCODE_PING:
                        self.sock.sendall(pong_frame(payload))
                    else:
                        self.ended = "unexpected opcode %d" % opcode
                        return
        except (OSError, ValueError) as exc:
            self.ended = "%s: %s" % (type(exc).__name__, exc)
        finally:
            if self.stopping:
                self.ended = None  # we shut it ourselves

    def shut(self) -> None:
        self.stopping = True
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _report(clients: List[Client]) -> Dict[str, Any]:
    return {
        "received": [c.received for c in clients],
        "ended": [c.ended for c in clients],
        "invalid": [c.invalid for c in clients if c.invalid],
    }


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m confd_tests.soak clients")
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--account", required=True)
    ap.add_argument("--first", type=int, default=0, help="index of the first connection")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--binding", default="conference.event.*.*")
    a = ap.parse_args(argv)
    clients = [Client(a.first + i, a.url, a.token, a.account, a.binding) for i in range(a.count)]
    try:
        for c in clients:
            c.connect()
    except Exception as exc:  # noqa: BLE001 - told to the parent, which fails the soak
        say("ERROR cannot subscribe: %s: %s" % (type(exc).__name__, exc))
        return 1
    for c in clients:
        c.start()
    say("READY", len(clients))
    lines = stdin_lines()
    while True:
        try:
            line = lines.get(timeout=STATUS_EVERY)
        except queue.Empty:
            line = ""
        say("STATUS", _report(clients))
        if line is None or line == "STOP":
            break
    ended_before = [c.ended for c in clients]
    for c in clients:
        c.shut()
    for c in clients:
        c.join(JOIN_WAIT)
    result = _report(clients)
    result["ended"] = ended_before
    say("RESULT", result)
    # The parent reads RESULT then closes our stdin; stay until then so it can read in peace.
    deadline = time.monotonic() + JOIN_WAIT
    while time.monotonic() < deadline:
        try:
            if lines.get(timeout=0.1) is None:
                break
        except queue.Empty:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

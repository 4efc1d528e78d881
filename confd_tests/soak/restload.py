"""``python -m confd_tests.soak rest``: REST load at a fixed rate (open loop), every answer checked.

A pacer thread issues tickets on a fixed schedule (``--rate`` per second); worker threads, each
with one keep-alive ``http.client`` connection, take a ticket and make one request of the mix:

* ``list``: ``GET /v2/accounts/{A}/conferences`` (every fourth one with ``page_size=1000``, all
  rows, the rest the default first page);
* ``get``: ``GET .../conferences/{C}`` (the document and ``_read_only`` with its participants);
* ``participants``: ``GET .../conferences/{C}/participants``;
* ``action``: ``PUT .../participants/{P}`` mute/unmute of the conference's moderator (who never
  leaves, so the id stays valid), or ``PUT .../participants`` mute/unmute of everyone else.

Every answer must be 200 (GET) or 202 (PUT) with a success envelope; a running conference
always has its moderator, so an empty participant list is an error too.  Tickets that wait more
than MAX_BEHIND seconds for a free worker are not sent but counted (``unsent``): confd being
slower than the rate shows as fewer requests, never as a growing queue here.

Commands (stdin): ``STOP``.  Reports (stdout): ``READY``, ``STATUS <json>`` every second,
``RESULT <json>`` after STOP.
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from confd_tests.loadtools import say, stdin_lines

MIX = (("list", 30), ("get", 35), ("participants", 25), ("action", 10))
TIMEOUT = 10.0
MAX_BEHIND = 1.0
STATUS_EVERY = 1.0
MAX_SAMPLES = 10  # error samples kept
FULL_LIST_EVERY = 4


class Load:
    def __init__(self, plan: Dict[str, Any], rate: float, connections: int, seed: int) -> None:
        self.port = int(plan["port"])
        self.token = plan["token"]
        base = "/v2/accounts/%s/conferences" % plan["account"]
        self.base = base
        self.conferences: List[str] = plan["conferences"]
        self.moderators: Dict[str, int] = {k: int(v) for k, v in plan["moderators"].items()}
        self.rate = rate
        self.connections = connections
        self.rng = random.Random(seed)
        self.kinds = [k for k, w in MIX for _ in range(w)]
        self.tickets: queue.Queue[Optional[float]] = queue.Queue()
        self.lock = threading.Lock()
        self.sent = 0
        self.unsent = 0
        self.errors = 0
        self.by_status: Dict[str, int] = {}
        self.samples: List[str] = []
        self.latency: Dict[str, List[float]] = {k: [] for k, _ in MIX}
        self.stop = threading.Event()
        self._lists = 0

    # --- requests ------------------------------------------------------------------------------

    def pick(self) -> Tuple[str, str, str, Optional[Dict[str, Any]], int]:
        """(kind, method, path, body, expected status) of the next request."""
        rng = self.rng
        kind = rng.choice(self.kinds)
        conf = rng.choice(self.conferences)
        if kind == "list":
            self._lists += 1
            full = self._lists % FULL_LIST_EVERY == 0
            return kind, "GET", self.base + ("?page_size=1000" if full else ""), None, 200
        if kind == "get":
            return kind, "GET", "%s/%s" % (self.base, conf), None, 200
        if kind == "participants":
            return kind, "GET", "%s/%s/participants" % (self.base, conf), None, 200
        action = rng.choice(("mute", "unmute"))
        if rng.random() < 0.5:
            path = "%s/%s/participants/%d" % (self.base, conf, self.moderators[conf])
        else:
            path = "%s/%s/participants" % (self.base, conf)
        return kind, "PUT", path, {"data": {"action": action}}, 202

    def problem(self, kind: str, status: int, body: bytes) -> Optional[str]:
        """Why an answer is wrong, or None."""
        try:
            doc = json.loads(body)
        except ValueError:
            return "body is not JSON"
        if doc.get("status") != "success":
            return "envelope status %r" % doc.get("status")
        data = doc.get("data")
        if kind == "participants" and not data:
            return "a running conference with no participant"
        if kind == "get" and not (data or {}).get("_read_only", {}).get("participants"):
            return "_read_only.participants empty"
        if kind == "list" and not isinstance(data, list):
            return "list data is not a list"
        return None

    def worker(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        headers = {"X-Auth-Token": self.token, "Content-Type": "application/json"}
        while True:
            due = self.tickets.get()
            if due is None:
                return
            if time.monotonic() - due > MAX_BEHIND:
                with self.lock:
                    self.unsent += 1
                continue
            with self.lock:
                kind, method, path, body, expected = self.pick()
            payload = json.dumps(body).encode() if body is not None else None
            t0 = time.monotonic()
            try:
                conn.request(method, path, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
                self.record(kind, None, "%s %s: %s: %s" % (method, path, type(exc).__name__, exc))
                continue
            ms = (time.monotonic() - t0) * 1000.0
            why = None
            if status != expected:
                why = "%s %s: HTTP %d %s" % (
                    method,
                    path,
                    status,
                    data[:300].decode(errors="replace"),
                )
            else:
                why = self.problem(kind, status, data)
                if why:
                    why = "%s %s: %s" % (method, path, why)
            self.record(kind, status, why, ms)

    def record(self, kind: str, status: Optional[int], why: Optional[str], ms: float = 0.0) -> None:
        with self.lock:
            self.sent += 1
            key = str(status) if status is not None else "no answer"
            self.by_status[key] = self.by_status.get(key, 0) + 1
            if why:
                self.errors += 1
                if len(self.samples) < MAX_SAMPLES:
                    self.samples.append(why)
            else:
                self.latency[kind].append(ms)

    def pace(self) -> None:
        t0 = time.monotonic()
        n = 0
        while not self.stop.is_set():
            now = time.monotonic()
            due = int((now - t0) * self.rate)
            while n < due:
                self.tickets.put(t0 + n / self.rate)
                n += 1
            self.stop.wait(0.005)

    def status(self) -> Dict[str, Any]:
        with self.lock:
            return {
                "sent": self.sent,
                "unsent": self.unsent,
                "errors": self.errors,
                "by_status": dict(self.by_status),
            }

    def result(self) -> Dict[str, Any]:
        out = self.status()
        out["samples"] = list(self.samples)
        lat: Dict[str, Any] = {}
        for kind, values in self.latency.items():
            v = sorted(values)
            if v:
                lat[kind] = {
                    "n": len(v),
                    "p50_ms": v[len(v) // 2],
                    "p99_ms": v[min(len(v) - 1, int(len(v) * 0.99))],
                    "max_ms": v[-1],
                }
        out["latency"] = lat
        return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m confd_tests.soak rest")
    ap.add_argument("--plan", required=True, type=Path)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    load = Load(json.loads(a.plan.read_text()), a.rate, a.connections, a.seed)
    workers = [
        threading.Thread(target=load.worker, name="rest-%d" % i, daemon=True)
        for i in range(a.connections)
    ]
    for w in workers:
        w.start()
    pacer = threading.Thread(target=load.pace, name="pacer", daemon=True)
    pacer.start()
    say("READY")
    lines = stdin_lines()
    while True:
        try:
            line = lines.get(timeout=STATUS_EVERY)
        except queue.Empty:
            line = ""
        say("STATUS", load.status())
        if line is None or line == "STOP":
            break
    load.stop.set()
    pacer.join(1.0)
    for _ in workers:
        load.tickets.put(None)
    for w in workers:
        w.join(TIMEOUT + 1.0)
    say("RESULT", load.result())
    return 0


if __name__ == "__main__":
    sys.exit(main())

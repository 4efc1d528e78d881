"""``python -m confd_tests.bench rest``: REST latency and throughput while events flow.

What is measured: ``GET /v2/accounts/{A}/conferences/{C}`` (the document plus ``_read_only``
with every live participant) of one conference with 20 participants and of one with 1,000,
with 1, 10 and 50 concurrent keep-alive clients, each case about 8 s, while 5,000
``conference::maintenance`` events per second flow into confd (start/stop-talking and
mute/unmute of members of the two measured conferences and of other conferences).  Then an
open-loop case: 500 GET/s of the 20-participant conference offered on a fixed schedule, its
latency counted from each request's scheduled time (so a stall is not hidden by the client
waiting for it); requests still unsent 2 s after the end are counted as ``unsent``, not sent.

Every part is its own process, on loopback:

* confd: the real daemon, ``python -m confd run --config <temp config>`` (SQLite in a temp
  directory); the account comes from ``python -m confd accounts create``, the token from
  ``PUT /v2/api_auth``, the two conference documents from ``PUT .../conferences``;
* its one FreeSWITCH node: ``python -m confd_tests.bench.rest feeder``, built from
  ``feeder.py``'s pieces (capture templates, frame rendering, replies).  It answers
  ``json_list`` with ``[]``; when the parent names the documents' ids on its stdin, it sends
  the add-member events (the ids are the FreeSWITCH conference names, api.md), then paces a
  repeating cycle of talking/mute events, in which every member's toggles pair up, so each
  turn of the cycle leaves the state where it found it;
* the load: ``wrk`` when it is on PATH (one thread, C connections), else, and always for the
  open-loop case, ``python -m confd_tests.bench.rest client``: one thread and one
  ``http.client`` keep-alive connection per client, every request timed.

The machine may have few cores: daemon, feeder and client share them; the CPU each used in each
case is printed (percent of one core), so whether the daemon was the bottleneck can be read off.
``--profile FILE`` runs the daemon under cProfile (through a wrapper here, not a confd option)
and prints where its time went; figures of such a run are slower than real.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

from confd_tests.bench import REPO_ROOT, percentile, settings, table
from confd_tests.bench.intake import _fmt, _Lines, _stop, _verdict
from confd_tests.loadtools import children_cpu, metrics_text, proc_cpu

DESCRIPTION = "REST GET of a 20- and a 1,000-participant conference under 5,000 events/s"

SIZES = (20, 1000)  # participants of the measured conferences
CONCURRENCY = (1, 10, 50)
OTHER_MEMBERS = 10  # members of every other (unmeasured) conference
# Share of the events that go to each measured conference; the rest go to the others.
MEASURED_SHARE = 0.1
TALK_WEIGHT, MUTE_WEIGHT = 80, 20  # talking toggles dominate real conference traffic
MAX_CYCLE = 20000  # events in the feeder's repeating cycle, at most (~2.4 KB each)
PACE_TICK = 0.005  # seconds between two paced sends
SEND_BATCH = 100  # events per sendall at most, so the SENT count moves while confd lags
# When confd reads slower than the pace, at most this many seconds of events wait to be sent;
# the schedule slips past the rest, so one case's backlog does not flood the next one.
MAX_BACKLOG_S = 0.5
LATE_GRACE = 2.0  # open loop: requests still unsent this long after the end are not sent
SENT_EVERY = 0.25  # seconds between two SENT lines of the feeder
REQUEST_TIMEOUT = 10.0
STEP_TIMEOUT = 60.0  # bound of one set-up step (start, connect, participants in place)
NODE_NAME = "bench-fs"
PROFILE_TOP = 25

# Targets printed next to the figures.
TARGET_SMALL_RPS = 500.0
TARGET_SMALL_P99_MS = 15.0
TARGET_LARGE_P99_MS = 50.0

DEFAULTS = {"seconds": 8.0, "rate": 5000.0, "others": 200, "cycle": 10000, "paced_rps": 500.0}
QUICK = {"seconds": 1.0, "rate": 5000.0, "others": 20, "cycle": 2000, "paced_rps": 500.0}

LOG_PORT_RE = re.compile(r"HTTP API on [0-9.]+:(\d+)")
EVENTS_METRIC = "confd_esl_events_total"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--events",
        type=int,
        help="events in the feeder's repeating cycle (10000; at most %d)" % MAX_CYCLE,
    )
    ap.add_argument("--quick", action="store_true", help="1 s per case, for the smoke test")
    ap.add_argument("--seconds", type=float, help="length of one measured case (8)")
    ap.add_argument("--rate", type=float, help="events/s flowing into confd (5000)")
    ap.add_argument("--others", type=int, help="other conferences, 10 members each (200)")
    ap.add_argument("--paced-rps", type=float, help="open-loop GET/s of the 20 conference (500)")
    ap.add_argument(
        "--client",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="closed-loop load generator: wrk if on PATH (auto), or the Python one",
    )
    ap.add_argument("--seed", type=int, default=1, help="seed of the event cycle")
    ap.add_argument("--profile", type=Path, help="run the daemon under cProfile, stats to FILE")


def _settings(args: argparse.Namespace) -> Dict[str, Any]:
    s = settings(args, DEFAULTS, QUICK)
    if args.events:
        s["cycle"] = args.events
    s["cycle"] = max(2, min(MAX_CYCLE, int(s["cycle"])))
    return s


# =============================================================================================
# The event stream (pure: no I/O)
# =============================================================================================


@dataclass(frozen=True)
class Room:
    """One live conference of the stream: FreeSWITCH name and uuid, (member id, call uuid)s."""

    name: str
    uuid: str
    members: Tuple[Tuple[int, str], ...]


def _uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def make_rooms(measured: Sequence[Tuple[str, int]], others: int, rng: random.Random) -> List[Room]:
    """The measured conferences (name, size) first, then ``others`` of ``OTHER_MEMBERS``."""
    specs = list(measured) + [
        (uuid.UUID(int=rng.getrandbits(128)).hex, OTHER_MEMBERS) for _ in range(others)
    ]
    return [
        Room(name, _uuid4(rng), tuple((i, _uuid4(rng)) for i in range(1, size + 1)))
        for name, size in specs
    ]


def talk_cycle(
    rooms: Sequence[Room], measured: int, length: int, rng: random.Random
) -> List[Tuple[int, int, str]]:
    """``(room index, member index, action)`` for a cycle of ``length`` (even) events.

    Each measured room (the first ``measured``) gets ``MEASURED_SHARE`` of the events, the
    others the rest evenly.  Every (member, talk|mute) toggle is drawn twice and the whole
    shuffled, so each member's toggles pair up: after one turn of the cycle every member talks
    and is muted exactly as before it, and the cycle can be repeated for as long as needed.
    """
    shares = [MEASURED_SHARE] * measured
    rest = len(rooms) - measured
    shares += [(1.0 - MEASURED_SHARE * measured) / rest] * rest if rest else []
    kinds = ["talk"] * TALK_WEIGHT + ["mute"] * MUTE_WEIGHT
    picks = []
    for ri in rng.choices(range(len(rooms)), weights=shares, k=length // 2):
        picks.append((ri, rng.randrange(len(rooms[ri].members)), rng.choice(kinds)))
    order = picks + picks
    rng.shuffle(order)
    talking: set = set()
    muted: set = set()
    out = []
    for ri, mi, kind in order:
        key = (ri, mi)
        flags = talking if kind == "talk" else muted
        if key in flags:
            flags.discard(key)
            action = "stop-talking" if kind == "talk" else "unmute-member"
        else:
            flags.add(key)
            action = "start-talking" if kind == "talk" else "mute-member"
        out.append((ri, mi, action))
    return out


def render_events(
    rooms: Sequence[Room], events: Sequence[Tuple[int, int, str]], templates: Dict[str, Any]
) -> Tuple[bytes, List[int]]:
    """Frames for ``events`` (feeder's templates, rewritten ids), and each frame's end offset.
    ``Event-Sequence`` repeats from one turn of a cycle to the next: confd does not read it."""
    from confd_tests.bench.feeder import _render

    frames = []
    ends = []
    pos = 0
    for seq, (ri, mi, action) in enumerate(events, 1000):
        room = rooms[ri]
        member_id, call_uuid = room.members[mi]
        frame = _render(templates[action], (room.name, room.uuid), call_uuid, member_id, seq)
        frames.append(frame)
        pos += len(frame)
        ends.append(pos)
    return b"".join(frames), ends


def joins(rooms: Sequence[Room]) -> List[Tuple[int, int, str]]:
    return [(ri, mi, "add-member") for ri, r in enumerate(rooms) for mi in range(len(r.members))]


# =============================================================================================
# The feeder process: FreeSWITCH for the daemon
# =============================================================================================


def _say(line: str) -> None:
    # The parent reads these lines from our stdout: this is the feeder's protocol, not logging.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class RestFeeder:
    """Answers like mod_event_socket; after ``GO`` (stdin) and the subscribed connection's
    ``json_list``, sends the add-members, then paces the talking cycle until stdin closes."""

    def __init__(self, rate: float, others: int, cycle: int, seed: int) -> None:
        self.rate = rate
        self.others = others
        self.cycle = cycle
        self.seed = seed
        self.go = threading.Event()
        self.measured: List[Tuple[str, int]] = []
        self.streaming = False
        self.sent = 0

    def read_stdin(self) -> None:
        """A native thread: ``GO name:size ...`` starts the stream; end of stdin ends all."""
        for line in sys.stdin:
            words = line.split()
            if words[:1] == ["GO"]:
                self.measured = [(w.split(":")[0], int(w.split(":")[1])) for w in words[1:]]
                self.go.set()
        os._exit(0)  # the parent has gone or is done with us

    def serve(self) -> None:
        from gevent.server import StreamServer

        threading.Thread(target=self.read_stdin, daemon=True).start()
        server = StreamServer(("127.0.0.1", 0), self._handle)
        server.start()
        _say("PORT %d" % server.server_port)
        server.serve_forever()

    def _handle(self, sock, _addr) -> None:
        import gevent

        from confd_tests.bench.feeder import serve_esl

        def stream(sock, lock) -> None:
            if not self.streaming:
                self.streaming = True
                gevent.spawn(self._stream, sock, lock)

        serve_esl(sock, stream)

    def _stream(self, sock, lock) -> None:
        import gevent

        from confd_tests.bench.feeder import load_templates

        while not self.go.is_set():
            gevent.sleep(0.02)
        rng = random.Random(self.seed)
        templates = load_templates()
        rooms = make_rooms(self.measured, self.others, rng)
        added, _ = render_events(rooms, joins(rooms), templates)
        data, ends = render_events(
            rooms, talk_cycle(rooms, len(self.measured), self.cycle, rng), templates
        )
        view = memoryview(data)
        starts = [0] + ends[:-1]
        n = len(ends)
        try:
            with lock:
                sock.sendall(added)
            _say("JOINED %d" % sum(len(r.members) for r in rooms))
            gevent.spawn(self._report)
            t0 = time.monotonic()
            backlog = int(self.rate * MAX_BACKLOG_S)
            while True:
                due = int((time.monotonic() - t0) * self.rate) + 1
                if due - self.sent > backlog:
                    t0 += (due - self.sent - backlog) / self.rate
                    due = self.sent + backlog
                while self.sent < due:
                    i = self.sent % n
                    j = min(n, i + due - self.sent, i + SEND_BATCH)
                    with lock:
                        sock.sendall(view[starts[i] : ends[j - 1]])
                    self.sent += j - i
                gevent.sleep(PACE_TICK)
        except OSError as exc:
            _say("ERROR %s" % exc)

    def _report(self) -> None:
        import gevent

        while True:
            _say("SENT %.6f %d" % (time.monotonic(), self.sent))
            gevent.sleep(SENT_EVERY)


def feeder_main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="confd_tests.bench.rest feeder")
    ap.add_argument("--rate", type=float, default=5000.0)
    ap.add_argument("--others", type=int, default=200)
    ap.add_argument("--cycle", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    RestFeeder(a.rate, a.others, a.cycle, a.seed).serve()
    return 0


# =============================================================================================
# The Python load generator (a process of its own)
# =============================================================================================


def client_main(argv: List[str]) -> int:
    """Closed loop (``--rate 0``: every client sends its next request when the last is
    answered) or open loop (``--rate R``: request k of client i is due at
    ``t0 + (k * clients + i) / R``; its latency runs from that due time)."""
    ap = argparse.ArgumentParser(prog="confd_tests.bench.rest client")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rate", type=float, default=0.0)
    a = ap.parse_args(argv)
    headers = {"X-Auth-Token": a.token}
    t0 = time.perf_counter() + 0.2  # every thread connected before the first request
    stop_at = t0 + a.seconds
    per_thread: List[Dict[str, Any]] = [
        {"lat": [], "errors": 0, "error": None, "last": t0, "unsent": 0} for _ in range(a.clients)
    ]

    def connect() -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=REQUEST_TIMEOUT)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def worker(i: int) -> None:
        mine = per_thread[i]
        conn = connect()
        k = 0
        while True:
            if a.rate:
                due = t0 + (k * a.clients + i) / a.rate
                k += 1
                if due >= stop_at:
                    break
                if time.perf_counter() > stop_at + LATE_GRACE:
                    mine["unsent"] += 1  # so far behind that it is not sent at all
                    continue
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                start = due
            else:
                delay = t0 - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                start = time.perf_counter()
                if start >= stop_at:
                    break
            try:
                conn.request("GET", a.path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as exc:
                mine["errors"] += 1
                mine["error"] = "%s %s" % (type(exc).__name__, exc)
                conn.close()
                conn = connect()
                continue
            end = time.perf_counter()
            mine["last"] = max(mine["last"], end)
            if status != 200:
                mine["errors"] += 1
                mine["error"] = "HTTP %d" % status
            else:
                mine["lat"].append(end - start)
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.seconds + REQUEST_TIMEOUT * 2)
    lat = sorted(x * 1000 for m in per_thread for x in m["lat"])
    errors = sum(m["errors"] for m in per_thread)
    elapsed = max(m["last"] for m in per_thread) - t0
    result: Dict[str, Any] = {
        "status": "ok" if lat and not errors else "errors",
        "requests": len(lat),
        "errors": errors,
        "seconds": elapsed,
        "rps": len(lat) / elapsed if elapsed > 0 else 0.0,
    }
    if a.rate:
        result["scheduled"] = math.ceil(a.seconds * a.rate)
        result["unsent"] = sum(m["unsent"] for m in per_thread)
    if lat:
        result.update(p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99), max_ms=lat[-1])
    if errors:
        result["error"] = next(m["error"] for m in per_thread if m["error"])
    if any(t.is_alive() for t in threads):
        result["status"] = "client threads still running at the deadline"
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # a stuck thread must not hold the process


# =============================================================================================
# The profiling wrapper (bench only: confd itself has no profiling switch)
# =============================================================================================


def daemon_main(argv: List[str]) -> int:
    """``confd run`` under cProfile; the stats are written when the daemon stops (SIGTERM)."""
    from gevent import monkey

    monkey.patch_all()  # as confd's entry point does, before the daemon's modules load
    import cProfile

    from confd import cli

    out, rest = argv[0], argv[1:]
    prof = cProfile.Profile()
    prof.enable()
    try:
        return cli.main(["run"] + rest)
    finally:
        prof.disable()
        prof.dump_stats(out)


# =============================================================================================
# Parent side
# =============================================================================================


def _http(
    port: int, method: str, path: str, data: Any = None, token: Optional[str] = None
) -> Tuple[int, Any, int]:
    """(status, parsed JSON body or None, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        headers = {"X-Auth-Token": token} if token else {}
        payload = None
        if data is not None:
            payload = json.dumps({"data": data}).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    return resp.status, body, len(raw)


def _wait(what: str, check, timeout: float = STEP_TIMEOUT, every: float = 0.1) -> Any:
    limit = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while time.monotonic() < limit:
        try:
            value = check()
            if value:
                return value
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            last_exc = exc
        time.sleep(every)
    raise RuntimeError(
        "timed out after %.0f s waiting for %s%s"
        % (timeout, what, " (last error: %r)" % last_exc if last_exc else "")
    )


def _events_taken(port: int) -> float:
    text = metrics_text(port, REQUEST_TIMEOUT)
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(EVENTS_METRIC + "{")
    )


_WRK_TIME = re.compile(r"([\d.]+)(us|ms|s|m|h)$")
_WRK_SCALE = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _wrk_ms(text: str) -> float:
    m = _WRK_TIME.match(text.strip())
    if not m:
        raise ValueError("not a wrk time: %r" % text)
    return float(m.group(1)) * _WRK_SCALE[m.group(2)]


def parse_wrk(text: str) -> Dict[str, Any]:
    """Figures of ``wrk --latency`` output (requests, rps, p50/p99/max ms, errors)."""
    out: Dict[str, Any] = {"errors": 0}
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "50%":
            out["p50_ms"] = _wrk_ms(words[1])
        elif words[0] == "99%":
            out["p99_ms"] = _wrk_ms(words[1])
        elif words[0] == "Latency" and len(words) >= 4:
            out["max_ms"] = _wrk_ms(words[3])
        elif len(words) > 3 and words[1] == "requests" and words[2] == "in":
            out["requests"] = int(words[0])
            out["seconds"] = _wrk_ms(words[3].rstrip(",")) / 1000.0
        elif line.strip().startswith("Requests/sec:"):
            out["rps"] = float(words[1])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            out["errors"] += int(words[-1])
        elif line.strip().startswith("Socket errors:"):
            out["errors"] += sum(int(n) for n in re.findall(r"\d+", line))
    missing = [k for k in ("requests", "rps", "p50_ms", "p99_ms") if k not in out]
    if missing:
        raise ValueError("wrk output without %s" % ", ".join(missing))
    # wrk counts a non-2xx answer as a request: those are not served GETs.
    out["requests"] -= min(out["requests"], out["errors"])
    out["status"] = "ok" if not out["errors"] else "errors"
    return out


def _run_wrk(port: int, path: str, token: str, clients: int, seconds: float) -> Dict[str, Any]:
    cmd = [
        "wrk",
        "-t1",
        "-c%d" % clients,
        "-d%ds" % max(1, round(seconds)),
        "--timeout",
        "%ds" % REQUEST_TIMEOUT,
        "--latency",
        "-H",
        "X-Auth-Token: %s" % token,
        "http://127.0.0.1:%d%s" % (port, path),
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + REQUEST_TIMEOUT + 20
        )
    except subprocess.TimeoutExpired:
        return {"status": "wrk timed out"}
    if proc.returncode != 0:
        return {"status": "wrk exited %d: %s" % (proc.returncode, proc.stderr.strip()[-200:])}
    try:
        return parse_wrk(proc.stdout)
    except ValueError as exc:
        return {"status": str(exc)}


def _run_python(
    port: int, path: str, token: str, clients: int, seconds: float, rate: float = 0.0
) -> Dict[str, Any]:
    cmd = [sys.executable, "-m", "confd_tests.bench.rest", "client", "--port", str(port)]
    cmd += ["--path", path, "--token", token, "--clients", str(clients)]
    cmd += ["--seconds", str(seconds), "--rate", str(rate)]
    try:
        proc = subprocess.run(
            cmd,
            cwd=str(REPO_ROOT),
            capture_output=True,
            text=True,
            timeout=seconds + REQUEST_TIMEOUT * 2 + 30,
        )
    except subprocess.TimeoutExpired:
        return {"status": "client timed out"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"status": "client exited %d: %s" % (proc.returncode, proc.stderr.strip()[-300:])}


class Bench:
    """Owns the processes of one run; ``close`` ends them (feeder, then daemon)."""

    def __init__(self, workdir: Path, s: Dict[str, Any], args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.s = s
        self.args = args
        self.feeder: Optional[subprocess.Popen] = None
        self.feeder_lines: Optional[_FeederLines] = None
        self.daemon: Optional[subprocess.Popen] = None
        self.port = 0
        self.token = ""
        self.account = ""
        self.paths: Dict[int, str] = {}

    # --- set-up ------------------------------------------------------------------------------

    def start(self) -> None:
        py = [sys.executable, "-m"]
        s = self.s
        with open(self.workdir / "feeder.log", "w") as err:
            self.feeder = subprocess.Popen(
                py
                + ["confd_tests.bench.rest", "feeder", "--rate", str(s["rate"])]
                + ["--others", str(s["others"]), "--cycle", str(s["cycle"])]
                + ["--seed", str(self.args.seed)],
                cwd=str(REPO_ROOT),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.feeder_lines = _FeederLines(self.feeder.stdout)
        self.feeder_lines.start()
        fs_port = self.feeder_lines.wait_for("PORT ", STEP_TIMEOUT)
        if fs_port is None:
            raise RuntimeError("feeder did not start: %s" % self._tail("feeder.log"))
        cfg = self.workdir / "confd.yml"
        cfg.write_text(
            json.dumps(  # JSON is YAML
                {
                    "http": {"host": "127.0.0.1", "port": 0},
                    "database": {"url": "sqlite:///%s" % (self.workdir / "confd.db")},
                    "freeswitch": {
                        "nodes": [{"host": "127.0.0.1", "port": int(fs_port), "name": NODE_NAME}],
                        "heartbeat_timeout": 3600,  # the feeder sends no HEARTBEAT
                    },
                    "log": {"level": "info"},
                },
                indent=1,
            )
        )
        created = subprocess.run(
            py + ["confd", "accounts", "create", "--name", "bench", "--config", str(cfg)],
            cwd=str(REPO_ROOT),
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
        )
        if created.returncode != 0:
            raise RuntimeError("confd accounts create: %s" % created.stderr.strip()[-300:])
        api_key = json.loads(created.stdout)["api_key"]
        run = ["confd", "run", "--config", str(cfg)]
        if self.args.profile:
            run = ["confd_tests.bench.rest", "daemon", str(self.args.profile.resolve())]
            run += ["--config", str(cfg)]
        with open(self.workdir / "confd.log", "w") as err:
            self.daemon = subprocess.Popen(
                py + run, cwd=str(REPO_ROOT), stdout=subprocess.DEVNULL, stderr=err
            )

        def port() -> Optional[int]:
            if self.daemon.poll() is not None:
                raise RuntimeError("confd exited: %s" % self._tail("confd.log"))
            m = LOG_PORT_RE.search((self.workdir / "confd.log").read_text())
            return int(m.group(1)) if m else None

        self.port = _wait("confd's HTTP port", port)

        def node_up() -> bool:
            status, body, _ = _http(self.port, "GET", "/v2/health")
            return status == 200 and body["data"]["nodes"][0]["connected"]

        _wait("confd connected to the feeder", node_up)
        status, body, _ = _http(self.port, "PUT", "/v2/api_auth", {"api_key": api_key})
        if status != 201:
            raise RuntimeError("PUT /v2/api_auth: HTTP %d %s" % (status, body))
        self.token, self.account = body["auth_token"], body["data"]["account_id"]
        names = []
        for size in SIZES:
            status, body, _ = _http(
                self.port,
                "PUT",
                "/v2/accounts/%s/conferences" % self.account,
                {"name": "bench %d" % size},
                self.token,
            )
            if status != 201:
                raise RuntimeError("PUT conference: HTTP %d %s" % (status, body))
            conf_id = body["data"]["id"]
            self.paths[size] = "/v2/accounts/%s/conferences/%s" % (self.account, conf_id)
            names.append("%s:%d" % (conf_id, size))
        self.feeder.stdin.write("GO %s\n" % " ".join(names))
        self.feeder.stdin.flush()
        if self.feeder_lines.wait_for("JOINED ", STEP_TIMEOUT) is None:
            raise RuntimeError("feeder did not stream: %s" % self._tail("feeder.log"))
        for size in SIZES:
            _wait(
                "%d participants in confd" % size,
                lambda size=size: len(self.read_only(size)["participants"]) == size,
            )

    def read_only(self, size: int) -> Dict[str, Any]:
        status, body, _ = _http(self.port, "GET", self.paths[size], token=self.token)
        if status != 200:
            raise RuntimeError("GET %s: HTTP %d" % (self.paths[size], status))
        return body["data"]["_read_only"]

    def _tail(self, name: str) -> str:
        try:
            lines = (self.workdir / name).read_text().strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:])

    # --- one case ----------------------------------------------------------------------------

    def case(
        self,
        size: int,
        clients: int,
        client: str,
        rate: float = 0.0,
        seconds: Optional[float] = None,
    ) -> Dict[str, Any]:
        """One load run against the ``size`` conference, with what the processes did meanwhile."""
        assert self.daemon and self.feeder and self.feeder_lines
        seconds = seconds or self.s["seconds"]
        ev0, cpu0, ch0 = (
            _events_taken(self.port),
            (proc_cpu(self.daemon.pid) or 0.0),
            children_cpu(),
        )
        fd0 = proc_cpu(self.feeder.pid) or 0.0
        sent0 = self.feeder_lines.sent
        t0 = time.monotonic()
        if client == "wrk":
            r = _run_wrk(self.port, self.paths[size], self.token, clients, seconds)
        else:
            r = _run_python(self.port, self.paths[size], self.token, clients, seconds, rate)
        wall = time.monotonic() - t0
        sent1 = self.feeder_lines.sent
        r["client"] = client
        r["events_per_s_confd"] = (_events_taken(self.port) - ev0) / wall
        if sent0 and sent1 and sent1[0] > sent0[0]:
            r["events_per_s_sent"] = (sent1[1] - sent0[1]) / (sent1[0] - sent0[0])
        r["cpu_pct_daemon"] = 100.0 * ((proc_cpu(self.daemon.pid) or 0.0) - cpu0) / wall
        r["cpu_pct_feeder"] = 100.0 * ((proc_cpu(self.feeder.pid) or 0.0) - fd0) / wall
        r["cpu_pct_client"] = 100.0 * (children_cpu() - ch0) / wall
        return r

    def close(self) -> None:
        if self.feeder is not None:
            try:
                self.feeder.stdin.close()  # the feeder exits when its stdin closes
            except OSError:
                pass
            _stop(self.feeder)
        if self.daemon is not None:
            _stop(self.daemon)  # SIGTERM: the daemon stops in order (and writes a profile)


class _FeederLines(_Lines):
    """The feeder's stdout lines; keeps the last ``SENT`` figures aside, as they come."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.sent: Optional[Tuple[float, int]] = None  # (feeder's monotonic time, events sent)

    def run(self) -> None:
        for line in self.stream:
            if line.startswith("SENT "):
                t, n = line.split()[1:3]
                self.sent = (float(t), int(n))
            else:
                self.lines.put(line.rstrip("\n"))


def _pick_client(choice: str) -> str:
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if choice == "wrk" and not shutil.which("wrk"):
        raise RuntimeError("wrk is not on PATH (apt-get install wrk), use --client python")
    return choice


def run(args: argparse.Namespace, out: TextIO) -> Dict[str, Any]:
    s = _settings(args)
    client = _pick_client(args.client)
    out.write(
        "confd REST benchmark: GET one conference (%s participants) with %s clients, %.0f s each,\n"
        "while %.0f events/s flow (%d other conferences of %d; %.0f%% of the events to each "
        "measured one)\n"
        % (
            " and ".join(f"{n:,}" for n in SIZES),
            ", ".join(str(c) for c in CONCURRENCY),
            s["seconds"],
            s["rate"],
            s["others"],
            OTHER_MEMBERS,
            MEASURED_SHARE * 100,
        )
    )
    out.write(
        "load: %s (closed loop, keep-alive); open loop: Python client; %d CPU core(s) shared by "
        "daemon, feeder and client%s\n"
        % (
            "wrk, 1 thread" if client == "wrk" else "Python threads + http.client",
            os.cpu_count() or 0,
            "; daemon under cProfile (slower than real)" if args.profile else "",
        )
    )
    out.flush()
    results: Dict[str, Any] = {
        "settings": dict(s, client=client, cpus=os.cpu_count(), profile=bool(args.profile)),
        "cases": {},
        "loadavg_before": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="confd-bench-rest-") as tmp:
        bench = Bench(Path(tmp), s, args)
        old_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            bench.start()
            results["participants"] = {
                str(n): len(bench.read_only(n)["participants"]) for n in SIZES
            }
            results["response_kb"] = {
                str(n): _http(bench.port, "GET", bench.paths[n], token=bench.token)[2] / 1024
                for n in SIZES
            }
            # Warm-up (not reported): connections, code paths and allocator settle.
            for n in SIZES:
                bench.case(n, 4, "python", seconds=min(1.0, s["seconds"]))
            for n in SIZES:
                results["cases"][str(n)] = {}
                for c in CONCURRENCY:
                    results["cases"][str(n)][str(c)] = bench.case(n, c, client)
            results["paced"] = bench.case(SIZES[0], 10, "python", s["paced_rps"])
            results["paced"]["offered_rps"] = s["paced_rps"]
            talking = [
                sum(1 for p in bench.read_only(n)["participants"] if p["talking"]) for n in SIZES
            ]
            results["talking_now"] = dict(zip([str(n) for n in SIZES], talking))
            results["status"] = "ok"
        except (RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            results["status"] = "failed: %s" % exc
            out.write("FAILED: %s\n" % exc)
        finally:
            bench.close()
            signal.signal(signal.SIGTERM, old_term)
            results["loadavg_after"] = os.getloadavg()[0]
            if args.profile and args.profile.exists():
                results["profile"] = str(args.profile)
    _summarise(results, s, out)
    if args.profile and args.profile.exists():
        _print_profile(args.profile, out)
    return results


def _summarise(results: Dict[str, Any], s: Dict[str, Any], out: TextIO) -> None:
    cases = results["cases"]
    rows = []
    for n in SIZES:
        for c in CONCURRENCY:
            r = cases.get(str(n), {}).get(str(c))
            if r is None:
                continue
            rows.append(
                [
                    f"{n:,}",
                    str(c),
                    _fmt(r.get("rps")),
                    _fmt(r.get("p50_ms"), "{:.2f}"),
                    _fmt(r.get("p99_ms"), "{:.2f}"),
                    _fmt(r.get("max_ms"), "{:.1f}"),
                    _fmt(r.get("errors")),
                    _fmt(r.get("events_per_s_confd")),
                    _fmt(r.get("cpu_pct_daemon")),
                    _fmt(r.get("cpu_pct_feeder")),
                    _fmt(r.get("cpu_pct_client")),
                    r.get("status", "-"),
                ]
            )
    kb = results.get("response_kb", {})
    out.write(
        "\n1. GET /v2/accounts/{A}/conferences/{C}, closed loop, %.0f s per case "
        "(response %s KB)\n"
        % (s["seconds"], " / ".join(_fmt(kb.get(str(n)), "{:.1f}") for n in SIZES))
    )
    out.write(
        table(
            [
                "participants",
                "clients",
                "req/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "errors",
                "events/s in",
                "CPU% confd",
                "CPU% feeder",
                "CPU% client",
                "status",
            ],
            rows,
            right=range(11),
        )
        + "\n"
    )
    out.write(
        "(events/s in: counted by confd's /metrics over the case; CPU%: of one core, over the\n"
        " case; confd serves HTTP and intake in one gevent thread, so ~100% means it is the\n"
        " bottleneck.  wrk reports no max; its max column shows its slowest request.)\n"
    )
    paced = results.get("paced")
    if paced:
        out.write(
            "\n2. Open loop: %.0f GET/s offered (20 participants), 10 connections, latency from "
            "each request's due time\n" % s["paced_rps"]
        )
        out.write(
            table(
                [
                    "offered/s",
                    "served/s",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "errors",
                    "unsent",
                    "events/s in",
                ],
                [
                    [
                        _fmt(s["paced_rps"]),
                        _fmt(paced.get("rps")),
                        _fmt(paced.get("p50_ms"), "{:.2f}"),
                        _fmt(paced.get("p99_ms"), "{:.2f}"),
                        _fmt(paced.get("max_ms"), "{:.1f}"),
                        _fmt(paced.get("errors")),
                        _fmt(paced.get("unsent")),
                        _fmt(paced.get("events_per_s_confd")),
                    ]
                ],
                right=range(8),
            )
            + "\n"
        )
    out.write(
        "machine: 1-min load average %.2f before, %.2f after, on %d core(s) (the bench itself "
        "adds ~1-2; more means other work shared the cores)\n"
        % (results["loadavg_before"], results.get("loadavg_after", 0.0), os.cpu_count() or 0)
    )
    if "talking_now" in results:
        out.write(
            "state check: participants seen %s; talking at the end %s\n"
            % (results.get("participants"), results["talking_now"])
        )
    results["targets"] = _targets(results, s)
    rows = []
    for t in results["targets"].values():
        rows.append([t["label"], t["target"], t["measured"], _verdict(t["pass"])])
    out.write("\nTargets\n")
    out.write(table(["target", "goal", "measured", "verdict"], rows) + "\n")
    out.flush()


def _ok(r: Optional[Dict[str, Any]]) -> bool:
    return bool(r) and r.get("status") == "ok" and "p99_ms" in r


def _targets(results: Dict[str, Any], s: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    small, large = str(SIZES[0]), str(SIZES[1])
    cases = results["cases"]
    targets: Dict[str, Dict[str, Any]] = {}
    paced = results.get("paced")
    # Served at least the target rate with every scheduled request answered in time; the
    # open-loop p99 counts from the due time, so falling behind shows in it.
    if _ok(paced):
        served_all = paced["requests"] >= 0.99 * s["paced_rps"] * s["seconds"]
        good = (
            s["paced_rps"] >= TARGET_SMALL_RPS
            and served_all
            and paced["p99_ms"] < TARGET_SMALL_P99_MS
        )
        measured = "%.0f req/s, p99 %.2f ms" % (paced["rps"], paced["p99_ms"])
    else:
        good, measured = None, (paced or {}).get("status", "not run")
    targets["small_open_loop"] = {
        "label": "20-p. GET, %.0f/s offered (open loop)" % s["paced_rps"],
        "target": ">= %.0f req/s, p99 < %.0f ms" % (TARGET_SMALL_RPS, TARGET_SMALL_P99_MS),
        "measured": measured,
        "value": [paced.get("rps"), paced.get("p99_ms")] if _ok(paced) else None,
        "pass": good,
    }
    for c in CONCURRENCY:
        r = cases.get(small, {}).get(str(c))
        targets["small_closed_%d" % c] = {
            "label": "20-p. GET, %d client(s), closed loop" % c,
            "target": ">= %.0f req/s, p99 < %.0f ms" % (TARGET_SMALL_RPS, TARGET_SMALL_P99_MS),
            "measured": "%.0f req/s, p99 %.2f ms" % (r["rps"], r["p99_ms"]) if _ok(r) else "-",
            "value": [r["rps"], r["p99_ms"]] if _ok(r) else None,
            "pass": (r["rps"] >= TARGET_SMALL_RPS and r["p99_ms"] < TARGET_SMALL_P99_MS)
            if _ok(r)
            else None,
        }
    for c in CONCURRENCY:
        r = cases.get(large, {}).get(str(c))
        targets["large_p99_%d" % c] = {
            "label": "1,000-p. GET p99, %d client(s)" % c,
            "target": "< %.0f ms" % TARGET_LARGE_P99_MS,
            "measured": "%.2f ms (%.0f req/s)" % (r["p99_ms"], r["rps"]) if _ok(r) else "-",
            "value": r["p99_ms"] if _ok(r) else None,
            "pass": r["p99_ms"] < TARGET_LARGE_P99_MS if _ok(r) else None,
        }
    return targets


def _print_profile(path: Path, out: TextIO) -> None:
    import io
    import pstats

    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        stats = pstats.Stats(str(path), stream=buf)
        stats.strip_dirs().sort_stats(key).print_stats(PROFILE_TOP)
        text = buf.getvalue()
        start = text.find("   ncalls")
        out.write("\nconfd under cProfile, top %d by %s\n" % (PROFILE_TOP, key))
        out.write(text[start:] if start >= 0 else text)
    out.flush()


if __name__ == "__main__":
    _COMMANDS = {"feeder": feeder_main, "client": client_main, "daemon": daemon_main}
    if len(sys.argv) > 1 and sys.argv[1] in _COMMANDS:
        sys.exit(_COMMANDS[sys.argv[1]](sys.argv[2:]))
    sys.stderr.write("usage: python -m confd_tests.bench rest [--quick] [options]\n")
    sys.exit(2)

"""``python -m confd_tests.bench entry``: caller entry under load, and what it costs the rest.

What is measured (issue 11):

1. **200 callers at once**: the simulated FreeSWITCH dials 200 calls into confd's entry
   listener in the same instant, each typing a conference number and a PIN (one in ten the
   moderator PIN), spread over 10 conference documents.  Every one must join with the flags
   its role gives (members ``mute``, moderators ``moderator``), as FreeSWITCH's ``conference``
   argument and confd's REST view both show.  confd's own time per step -- from the arrival
   of a ``CHANNEL_EXECUTE_COMPLETE`` to the next ``sendmsg`` sent on that call
   (``EntryContext.on_step``), the step's decisions and directory look-ups included -- is
   printed as p50/p99 (target p99 < 5 ms).
2. **Entry beside intake and REST**: while a second node paces talking/mute events into confd
   (5,000/s) and a client GETs a 20-participant conference on a fixed schedule (100/s, open
   loop), first with the entry service idle, then with waves of 200 callers entering back to
   back: events/s taken, REST p50/p99 and confd's CPU, side by side.
3. **1,000 connections opened and abandoned** (connect, take confd's ``connect``, close),
   five rounds: confd's RSS after each round (back to its plateau: the last round within
   5%/2 MB of the highest of the first two) and its live greenlets (back to the count before
   the first round), every session ended.

Processes, on loopback, sharing the machine's cores:

* confd: ``python -m confd_tests.bench.entry confd CONFIG`` -- the daemon as ``confd run``
  builds it (gevent-patched, the same ``Daemon``), plus the step recorder and a stdin
  protocol for figures (``STEPS``, ``STATS``);
* the entry simulator: ``... entry sim`` -- a simulated FreeSWITCH node (``FakeFreeSwitch``,
  confd's first node) whose calls connect out to confd's entry listener
  (``confd.simulator.outbound``);
* the event feeder: ``python -m confd_tests.bench.rest feeder`` (confd's second node);
* the REST load: ``python -m confd_tests.bench.rest client``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO

from confd_tests.bench import REPO_ROOT, percentile, settings, table
from confd_tests.bench.intake import _fmt, _verdict
from confd_tests.loadtools import Child, ChildFailed, children_cpu, metrics_text, proc_cpu, say

DESCRIPTION = "caller entry: 200 callers at once, time per step, intake/REST beside it, abandons"

DEFAULTS = {
    "callers": 200,
    "rooms": 10,
    "seconds": 8.0,
    "rate": 5000.0,
    "paced_rps": 100.0,
    "abandon": 1000,
    "rounds": 5,
}
QUICK = {
    "callers": 20,
    "rooms": 2,
    "seconds": 1.0,
    "rate": 1000.0,
    "paced_rps": 100.0,
    "abandon": 100,
    "rounds": 3,
}

MEMBER_PIN = "1111"
MODERATOR_PIN = "2222"
MODERATOR_EVERY = 10  # one caller in ten types the moderator PIN
FLAGS = {"member": ["mute"], "moderator": ["moderator"]}  # what each role joins with
FIRST_NUMBER = 8000
REST_SIZE = 20  # participants of the conference the REST client reads
REST_CLIENTS = 10
TIME_SCALE = 0.001  # the simulator's tones and digit timeouts, scaled
WAVE_EVERY = 2.0  # seconds: the busy case starts a wave of callers this often
WAVE_TIMEOUT = 120.0  # seconds for one wave of callers to end their entry
STEP_TIMEOUT = 60.0  # bound of one set-up step
SETTLE_TIMEOUT = 30.0  # seconds for the sessions of abandoned connections to end
TALK_ACTIONS = ("start-talking", "stop-talking", "mute-member", "unmute-member")
EVENTS_METRIC = "confd_esl_events_total"

TARGET_STEP_P99_MS = 5.0
RSS_SLACK = (0.05, 2.0)  # back to the plateau: within 5% or 2 MB of it, whichever is larger


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--events", type=float, help="events/s the second node paces (5000)")
    ap.add_argument("--quick", action="store_true", help="small numbers, for the smoke test")
    ap.add_argument("--callers", type=int, help="callers entering at once (200)")
    ap.add_argument("--rooms", type=int, help="conference documents they dial (10)")
    ap.add_argument("--seconds", type=float, help="length of each side-by-side case (8)")
    ap.add_argument("--paced-rps", type=float, help="open-loop GET/s during the cases (100)")
    ap.add_argument("--abandon", type=int, help="connections opened and abandoned a round (1000)")
    ap.add_argument("--rounds", type=int, help="rounds of abandoned connections (5)")


def _settings(args: argparse.Namespace) -> Dict[str, Any]:
    s = settings(args, DEFAULTS, QUICK)
    if args.events:
        s["rate"] = float(args.events)
    return s


def callers_plan(n: int, rooms: int) -> List[Dict[str, str]]:
    """Caller ``k`` dials room ``k % rooms`` and types the member PIN, or one in
    ``MODERATOR_EVERY`` the moderator PIN."""
    out = []
    for k in range(n):
        role = "moderator" if k % MODERATOR_EVERY == 0 else "member"
        out.append(
            {
                "number": str(FIRST_NUMBER + k % rooms),
                "pin": MODERATOR_PIN if role == "moderator" else MEMBER_PIN,
                "role": role,
            }
        )
    return out


def room_body(i: int) -> Dict[str, Any]:
    return {
        "name": "entry bench %d" % i,
        "conference_numbers": [str(FIRST_NUMBER + i)],
        "member": {"pins": [MEMBER_PIN]},
        "moderator": {"pins": [MODERATOR_PIN]},
    }


def step_figures(values: List[float]) -> Dict[str, Any]:
    """Seconds -> count, p50/p99/max in ms."""
    if not values:
        return {"count": 0}
    ms = sorted(v * 1000.0 for v in values)
    return {
        "count": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": ms[-1],
    }


def _raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _status_number(field: bytes) -> int:
    with open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _vmrss_mb() -> float:
    return _status_number(b"VmRSS:") / 1024.0


# =============================================================================================
# The confd child: the daemon, a step recorder, figures on request
# =============================================================================================


def confd_main(argv: List[str]) -> int:
    from gevent import monkey

    monkey.patch_all()  # as confd's entry point does, before the daemon's modules load
    import array
    import gc

    import gevent
    import greenlet
    from gevent import socket as gsocket

    from confd.cli import configure_logging
    from confd.config import load_config
    from confd.daemon import Daemon, _freeze_startup_objects
    from confd.store import Store
    from confd_tests.loadtools import LineReader

    cfg = load_config(argv[0], {})
    configure_logging(cfg.log.level)
    daemon = Daemon(cfg, store=Store.from_url(cfg.database.url))
    steps = array.array("d")
    daemon.entry.ctx.on_step = steps.append
    cpu_steps = _record_step_cpu()
    daemon.start()
    _freeze_startup_objects()
    say("PORTS", {"http": daemon.http_port, "entry": daemon.entry.port})

    def stats() -> Dict[str, Any]:
        gc.collect()
        alive = sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)
        entry = daemon.entry
        return {
            "rss_mb": _vmrss_mb(),
            "preempted": _status_number(b"nonvoluntary_ctxt_switches:"),
            "greenlets": alive,
            "active": entry.active,
            "refusing": entry.refusing,
            "sessions": len(entry._sessions),
            "admitting": entry.ctx.admissions.pending,
            "outcomes": dict(entry.outcomes),
            "dropped": entry.dropped,
        }

    reader = LineReader(0)
    try:
        while True:
            gsocket.wait_read(0)
            for line in reader.read():
                if line is None:
                    return 0
                if line == "STEPS":
                    figures = step_figures(list(steps))
                    figures["cpu"] = step_figures(list(cpu_steps))
                    say("STEPS", figures)
                    del steps[:]
                    del cpu_steps[:]
                elif line == "STATS":
                    say("STATS", stats())
    finally:
        gevent.spawn(daemon.stop).join(timeout=15)


def _record_step_cpu() -> Any:
    """The CPU time of each step too (bench instrumentation, not confd's): the main thread's
    CPU time when the step's completion arrived (the session's channel reads its clock right
    after each recv that brings data, and not again before the step ends) to the next sendmsg.
    Unlike the wall-clock figure, it leaves out the time the OS gave the core to others."""
    import array

    from confd.entry import session

    out = array.array("d")
    real_init, real_send = session.Channel.__init__, session.CallSession._send

    def init(self, sock, clock) -> None:
        def marked() -> float:
            self.cpu_mark = time.thread_time()
            return clock()

        real_init(self, sock, marked)
        self.cpu_mark = 0.0

    def send(self, data: bytes) -> None:
        if self._step_done is not None:
            out.append(time.thread_time() - self.ch.cpu_mark)
        real_send(self, data)

    session.Channel.__init__ = init
    session.CallSession._send = send
    return out


# =============================================================================================
# The entry simulator child: FreeSWITCH's calls connecting out to confd
# =============================================================================================


class EntrySim:
    """Waves of callers (all dialled in the same instant), looped waves, abandoned
    connections; answers on stdout."""

    def __init__(self) -> None:
        from confd.simulator.model import ConferenceModel
        from confd.simulator.outbound import OutboundSide
        from confd.simulator.server import FakeFreeSwitch

        self.model = ConferenceModel(hostname="entry-sim")
        self.fake = FakeFreeSwitch(self.model).start()
        self.side = OutboundSide(self.model, time_scale=TIME_SCALE)
        self.looping = False
        self.loop_result: Dict[str, Any] = {}
        self.loop_greenlet: Any = None

    def wave(self, spec: Dict[str, Any]) -> Dict[str, Any]:
        """Dial every caller of ``spec`` at once; wait until each one's entry ended."""
        import gevent

        address = ("127.0.0.1", int(spec["port"]))
        t0 = time.monotonic()
        calls = []
        for c in spec["callers"]:
            calls.append(
                (
                    c,
                    self.side.dial(
                        address,
                        variables={spec["account_variable"]: spec["account"]},
                        answers=[c["number"] + "#", c["pin"] + "#"],
                    ),
                )
            )
        deadline = time.monotonic() + WAVE_TIMEOUT
        while time.monotonic() < deadline:
            if all(call.exit_received or call.done.is_set() for _, call in calls):
                break
            gevent.sleep(0.01)
        seconds = time.monotonic() - t0
        joined = right = 0
        wrong: List[Any] = []
        roles: Dict[str, str] = {}
        for c, call in calls:
            roles[call.uuid] = c["role"]
            if call.member_id is None:
                wrong.append([call.uuid, "not joined", call.hangup_cause])
                continue
            joined += 1
            if call.flags == FLAGS[c["role"]] and call.vars.get("confd_role") == c["role"]:
                right += 1
            else:
                wrong.append([call.uuid, call.flags, call.vars.get("confd_role")])
        return {
            "dialled": len(calls),
            "joined": joined,
            "right_flags": right,
            "wrong": wrong[:5],
            "seconds": seconds,
            "roles": roles,
        }

    def clear(self) -> int:
        """Every caller hangs up; the calls are forgotten."""
        import gevent

        calls = list(self.side.calls)
        for call in calls:
            call.hang_up()
        with gevent.Timeout(WAVE_TIMEOUT, False):
            for call in calls:
                call.done.wait()
        self.side.calls[:] = [c for c in self.side.calls if not c.done.is_set()]
        return len(calls)

    def loop(self, spec: Dict[str, Any]) -> None:
        """A wave (dial all at once, wait, hang up all) every ``spec["every"]`` seconds (at
        once after the last one when it took longer), until ``stop``."""
        import gevent

        r = self.loop_result = {"waves": 0, "dialled": 0, "joined": 0, "right_flags": 0}
        while self.looping:
            started = time.monotonic()
            w = self.wave(spec)
            self.clear()
            r["waves"] += 1
            for key in ("dialled", "joined", "right_flags"):
                r[key] += w[key]
            rest = started + float(spec.get("every", 0)) - time.monotonic()
            if rest > 0 and self.looping:
                gevent.sleep(rest)

    def abandon(self, port: int, n: int) -> Dict[str, Any]:
        """``n`` connections at once: each takes confd's ``connect`` and closes."""
        import gevent
        from gevent import socket

        got: Dict[str, Any] = {"opened": 0, "connect": 0, "closed": 0, "errors": 0, "why": {}}

        def failed(exc: OSError) -> None:
            got["errors"] += 1
            why = type(exc).__name__ if exc.errno is None else errno.errorcode.get(exc.errno, "?")
            got["why"][why] = got["why"].get(why, 0) + 1

        def one() -> None:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError as exc:
                failed(exc)
                return
            got["opened"] += 1
            try:
                sock.settimeout(10)
                data = b""
                while b"\n\n" not in data:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"connect"):
                    got["connect"] += 1
                else:
                    got["closed"] += 1  # confd closed it unanswered (over max_calls)
            except OSError as exc:
                failed(exc)
            finally:
                sock.close()

        gevent.joinall([gevent.spawn(one) for _ in range(n)], timeout=60)
        return got


def sim_main(argv: List[str]) -> int:
    import gevent

    from confd_tests.loadtools import stdin_lines

    _raise_open_files()
    sim = EntrySim()
    say("PORT %d" % sim.fake.port)
    lines = stdin_lines()
    while True:
        try:
            line = lines.get_nowait()
        except Exception:  # noqa: BLE001 - queue.Empty: nothing from the parent yet
            gevent.sleep(0.005)
            continue
        if line is None:
            break
        word, _, rest = line.partition(" ")
        try:
            if word == "WAVE":
                say("WAVE", sim.wave(json.loads(rest)))
            elif word == "CLEAR":
                say("CLEARED %d" % sim.clear())
            elif word == "LOOP":
                sim.looping = True
                sim.loop_greenlet = gevent.spawn(sim.loop, json.loads(rest))
                say("LOOPING")
            elif word == "STOP":
                sim.looping = False
                if sim.loop_greenlet is not None:
                    sim.loop_greenlet.join(timeout=WAVE_TIMEOUT * 2)
                say("STOPPED", sim.loop_result)
            elif word == "ABANDON":
                spec = json.loads(rest)
                say("ABANDONED", sim.abandon(int(spec["port"]), int(spec["n"])))
        except Exception as exc:  # noqa: BLE001 - told to the parent, which reports it
            say("ERROR %s: %s" % (type(exc).__name__, exc))
    sim.fake.stop()
    return 0


# =============================================================================================
# Parent side
# =============================================================================================


def _talk_events(port: int) -> float:
    """Talking and mute events confd took (the feeder's; the entry simulator sends member
    joins and leaves, counted apart)."""
    from confd_tests.loadtools import parse_metrics

    m = parse_metrics(metrics_text(port, STEP_TIMEOUT))
    return sum(m.get('%s{action="%s"}' % (EVENTS_METRIC, a), 0.0) for a in TALK_ACTIONS)


class Bench:
    """Owns the processes of one run; ``close`` ends them."""

    def __init__(self, workdir: Path, s: Dict[str, Any]) -> None:
        self.workdir = workdir
        self.s = s
        self.children: List[Child] = []
        self.sent: Optional[List[float]] = None  # the feeder's last SENT (time, count)
        self.http = 0
        self.entry = 0
        self.token = ""
        self.account = ""
        self.rooms: List[str] = []
        self.rest_path = ""
        self.rest_conf = ""

    def _child(self, name: str, args: List[str], on_line=None) -> Child:
        child = Child(
            name,
            [sys.executable, "-m"] + args,
            self.workdir / (name + ".log"),
            REPO_ROOT,
            on_line=on_line,
        )
        self.children.append(child)
        return child

    def _on_feeder(self, word: str, rest: str) -> None:
        if word == "SENT":
            t, n = rest.split()
            self.sent = [float(t), float(n)]

    def start(self) -> None:
        import subprocess

        from confd_tests.bench.rest import _http, _wait

        s = self.s
        self.sim = self._child("sim", ["confd_tests.bench.entry", "sim"])
        sim_port = int(self.sim.wait_for("PORT", STEP_TIMEOUT))
        self.feeder = self._child(
            "feeder",
            ["confd_tests.bench.rest", "feeder", "--rate", str(s["rate"])]
            + ["--others", "20", "--cycle", "4000"],
            on_line=self._on_feeder,
        )
        feeder_port = int(self.feeder.wait_for("PORT", STEP_TIMEOUT))
        cfg = self.workdir / "confd.yml"
        cfg.write_text(
            json.dumps(  # JSON is YAML
                {
                    "http": {"host": "127.0.0.1", "port": 0},
                    "database": {"url": "sqlite:///%s" % (self.workdir / "confd.db")},
                    "freeswitch": {
                        "nodes": [
                            {"host": "127.0.0.1", "port": sim_port, "name": "entry-sim"},
                            {"host": "127.0.0.1", "port": feeder_port, "name": "feeder"},
                        ],
                        "heartbeat_timeout": 3600,  # neither sends HEARTBEAT
                    },
                    "entry": {"listen": "127.0.0.1:0"},
                    "log": {"level": "warning"},  # a line per call would be the load
                },
                indent=1,
            )
        )
        created = subprocess.run(
            [sys.executable, "-m", "confd", "accounts", "create", "--name", "bench"]
            + ["--config", str(cfg)],
            cwd=str(REPO_ROOT),
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
        )
        if created.returncode != 0:
            raise RuntimeError("confd accounts create: %s" % created.stderr.strip()[-300:])
        api_key = json.loads(created.stdout)["api_key"]
        self.confd = self._child("confd", ["confd_tests.bench.entry", "confd", str(cfg)])
        ports = json.loads(self.confd.wait_for("PORTS", STEP_TIMEOUT))
        self.http, self.entry = ports["http"], ports["entry"]

        def nodes_up() -> bool:
            status, body, _ = _http(self.http, "GET", "/v2/health")
            return status == 200 and all(n["connected"] for n in body["data"]["nodes"])

        _wait("confd connected to both nodes", nodes_up)
        status, body, _ = _http(self.http, "PUT", "/v2/api_auth", {"api_key": api_key})
        if status != 201:
            raise RuntimeError("PUT /v2/api_auth: HTTP %d %s" % (status, body))
        self.token, self.account = body["auth_token"], body["data"]["account_id"]
        confs = "/v2/accounts/%s/conferences" % self.account
        for i in range(s["rooms"]):
            status, body, _ = _http(self.http, "PUT", confs, room_body(i), self.token)
            if status != 201:
                raise RuntimeError("PUT conference: HTTP %d %s" % (status, body))
            self.rooms.append(body["data"]["id"])
        status, body, _ = _http(self.http, "PUT", confs, {"name": "rest"}, self.token)
        if status != 201:
            raise RuntimeError("PUT conference: HTTP %d %s" % (status, body))
        self.rest_conf = body["data"]["id"]
        self.rest_path = "%s/%s" % (confs, self.rest_conf)

    def go(self) -> None:
        """The second node starts its events (part 1 runs without them)."""
        from confd_tests.bench.rest import _wait

        self.feeder.say("GO %s:%d" % (self.rest_conf, REST_SIZE))
        self.feeder.wait_for("JOINED", STEP_TIMEOUT)
        _wait(
            "the REST conference's participants in confd",
            lambda: len(self.read_only(self.rest_path)["participants"]) == REST_SIZE,
        )

    def read_only(self, path: str) -> Dict[str, Any]:
        from confd_tests.bench.rest import _http

        status, body, _ = _http(self.http, "GET", path, token=self.token)
        if status != 200:
            raise RuntimeError("GET %s: HTTP %d" % (path, status))
        return body["data"]["_read_only"]

    def wave_spec(self) -> str:
        return json.dumps(
            {
                "every": WAVE_EVERY,
                "port": self.entry,
                "account": self.account,
                "account_variable": "ecallmgr_Account-ID",
                "callers": callers_plan(self.s["callers"], self.s["rooms"]),
            }
        )

    def wave(self) -> Dict[str, Any]:
        return json.loads(self.sim.ask("WAVE " + self.wave_spec(), "WAVE", WAVE_TIMEOUT + 30))

    def clear(self) -> None:
        self.sim.ask("CLEAR", "CLEARED", WAVE_TIMEOUT + 30)

    def steps(self) -> Dict[str, Any]:
        return json.loads(self.confd.ask("STEPS", "STEPS", STEP_TIMEOUT))

    def stats(self) -> Dict[str, Any]:
        return json.loads(self.confd.ask("STATS", "STATS", STEP_TIMEOUT))

    def confd_view(self, roles: Dict[str, str]) -> Dict[str, Any]:
        """confd's REST view of the entry rooms: every caller with its role's flags."""
        seen = right = 0
        for conf in self.rooms:
            for p in self.read_only("/v2/accounts/%s/conferences/%s" % (self.account, conf))[
                "participants"
            ]:
                role = roles.get(p["call_id"])
                if role is None:
                    continue
                seen += 1
                moderator = role == "moderator"
                # members join muted (speak false), moderators speaking
                if p["is_moderator"] == moderator and p["speak"] == moderator:
                    right += 1
        return {"seen": seen, "right": right}

    def case(self, busy: bool) -> Dict[str, Any]:
        """One side-by-side case: REST open loop and the feeder's events, entry idle or busy."""
        from confd_tests.bench.rest import _run_python

        s = self.s
        self.steps()  # reset
        if busy:
            self.sim.ask("LOOP " + self.wave_spec(), "LOOPING", STEP_TIMEOUT)
        ev0 = _talk_events(self.http)
        cpu0 = {c.name: proc_cpu(c.pid) or 0.0 for c in self.children}
        client0 = children_cpu()
        sent0 = list(self.sent) if self.sent else None
        t0 = time.monotonic()
        r = _run_python(
            self.http, self.rest_path, self.token, REST_CLIENTS, s["seconds"], s["paced_rps"]
        )
        wall = time.monotonic() - t0
        sent1 = list(self.sent) if self.sent else None
        r["events_per_s_taken"] = (_talk_events(self.http) - ev0) / wall
        if sent0 and sent1 and sent1[0] > sent0[0]:
            r["events_per_s_sent"] = (sent1[1] - sent0[1]) / (sent1[0] - sent0[0])
        for c in self.children:
            r["cpu_pct_" + c.name] = 100.0 * ((proc_cpu(c.pid) or 0.0) - cpu0[c.name]) / wall
        r["cpu_pct_client"] = 100.0 * (children_cpu() - client0) / wall
        if busy:
            r["entry"] = json.loads(self.sim.ask("STOP", "STOPPED", WAVE_TIMEOUT * 3))
            r["entry"]["callers_per_s"] = r["entry"]["dialled"] / wall
        r["steps"] = self.steps()
        return r

    def abandon_rounds(self) -> Dict[str, Any]:
        s = self.s
        base = self.settle()
        rounds = []
        for _ in range(s["rounds"]):
            got = json.loads(
                self.sim.ask(
                    "ABANDON " + json.dumps({"port": self.entry, "n": s["abandon"]}),
                    "ABANDONED",
                    STEP_TIMEOUT * 2,
                )
            )
            after = self.settle()
            rounds.append(dict(got, rss_mb=after["rss_mb"], greenlets=after["greenlets"]))
        return {"before": base, "rounds": rounds, "after": self.stats()}

    def settle(self) -> Dict[str, Any]:
        """confd's figures once no session of entry is left (or SETTLE_TIMEOUT passed)."""
        limit = time.monotonic() + SETTLE_TIMEOUT
        while True:
            st = self.stats()
            if (st["sessions"] == 0 and st["active"] == 0) or time.monotonic() > limit:
                return st
            time.sleep(0.2)

    def close(self) -> None:
        for child in reversed(self.children):
            child.stop()


def run(args: argparse.Namespace, out: TextIO) -> Dict[str, Any]:
    s = _settings(args)
    out.write(
        "confd caller entry benchmark: %d callers at once (number + PIN, %d rooms), "
        "%.0f s cases beside %.0f events/s and %.0f GET/s, %d x %d abandoned connections; "
        "%d core(s) shared by confd, the simulator, the feeder and the client\n"
        % (
            s["callers"],
            s["rooms"],
            s["seconds"],
            s["rate"],
            s["paced_rps"],
            s["rounds"],
            s["abandon"],
            os.cpu_count() or 0,
        )
    )
    out.flush()
    results: Dict[str, Any] = {"settings": dict(s), "loadavg_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="confd-bench-entry-") as tmp:
        bench = Bench(Path(tmp), s)
        try:
            bench.start()
            bench.wave()  # warm-up (not reported): code paths, connections, the allocator
            bench.clear()
            bench.steps()
            before = bench.stats()
            cpu0 = proc_cpu(bench.confd.pid) or 0.0
            wave = bench.wave()
            wave["cpu_ms_per_caller"] = (
                1000.0 * ((proc_cpu(bench.confd.pid) or 0.0) - cpu0) / max(1, wave["dialled"])
            )
            wave["confd_view"] = bench.confd_view(wave.pop("roles"))
            wave["steps"] = bench.steps()
            wave["preempted"] = bench.stats()["preempted"] - before["preempted"]
            results["wave"] = wave
            bench.clear()
            bench.go()
            results["idle"] = bench.case(busy=False)
            results["busy"] = bench.case(busy=True)
            bench.clear()
            results["abandon"] = bench.abandon_rounds()
            results["status"] = "ok"
        except (RuntimeError, OSError, ValueError, KeyError, ChildFailed) as exc:
            results["status"] = "failed: %s" % exc
            out.write("FAILED: %s\n" % exc)
        finally:
            bench.close()
            results["loadavg_after"] = os.getloadavg()[0]
    _summarise(results, s, out)
    return results


def _summarise(results: Dict[str, Any], s: Dict[str, Any], out: TextIO) -> None:
    wave = results.get("wave") or {}
    steps = wave.get("steps") or {}
    cpu = steps.get("cpu") or {}
    view = wave.get("confd_view") or {}
    out.write(
        "\n1. %d callers at once: %s joined, %s with their role's flags (FreeSWITCH's "
        "conference argument), %s seen right in confd's REST view; all ended their entry in "
        "%s s (no other load; confd was preempted by the OS %s times meanwhile)\n"
        % (
            s["callers"],
            _fmt(wave.get("joined")),
            _fmt(wave.get("right_flags")),
            _fmt(view.get("right")),
            _fmt(wave.get("seconds"), "{:.2f}"),
            _fmt(wave.get("preempted")),
        )
    )
    out.write(
        "   confd's own time per step (CHANNEL_EXECUTE_COMPLETE in -> next sendmsg out): "
        "%s steps, p50 %s ms, p99 %s ms, max %s ms\n"
        "   the same steps in CPU time (without the OS's preemptions): p50 %s ms, p99 %s ms, "
        "max %s ms; confd's CPU per caller entered: %s ms\n"
        % (
            _fmt(steps.get("count")),
            _fmt(steps.get("p50_ms"), "{:.3f}"),
            _fmt(steps.get("p99_ms"), "{:.3f}"),
            _fmt(steps.get("max_ms"), "{:.2f}"),
            _fmt(cpu.get("p50_ms"), "{:.3f}"),
            _fmt(cpu.get("p99_ms"), "{:.3f}"),
            _fmt(cpu.get("max_ms"), "{:.2f}"),
            _fmt(wave.get("cpu_ms_per_caller"), "{:.2f}"),
        )
    )
    rows = []
    for name in ("idle", "busy"):
        r = results.get(name)
        if not r:
            continue
        e = r.get("entry") or {}
        st = r.get("steps") or {}
        rows.append(
            [
                "entry idle" if name == "idle" else "entry busy",
                _fmt(r.get("events_per_s_sent")),
                _fmt(r.get("events_per_s_taken")),
                _fmt(r.get("rps")),
                _fmt(r.get("p50_ms"), "{:.2f}"),
                _fmt(r.get("p99_ms"), "{:.2f}"),
                _fmt(r.get("max_ms"), "{:.1f}"),
                _fmt(r.get("cpu_pct_confd")),
                _fmt(r.get("cpu_pct_sim")),
                _fmt(r.get("cpu_pct_feeder")),
                _fmt(r.get("cpu_pct_client")),
                _fmt(e.get("callers_per_s"), "{:.0f}") if e else "-",
                _fmt(st.get("p99_ms"), "{:.3f}") if e else "-",
                r.get("status", "-"),
            ]
        )
    out.write(
        "\n2. Beside intake and REST, %.0f s each (REST: open loop %.0f GET/s of a %d-participant "
        "conference, latency from each request's due time; busy: a wave of %d callers at once "
        "every %.0f s)\n" % (s["seconds"], s["paced_rps"], REST_SIZE, s["callers"], WAVE_EVERY)
    )
    out.write(
        table(
            [
                "case",
                "events/s sent",
                "events/s taken",
                "GET/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "CPU% confd",
                "CPU% sim",
                "CPU% feeder",
                "CPU% client",
                "callers/s",
                "step p99 ms",
                "status",
            ],
            rows,
            right=range(1, 13),
        )
        + "\n"
    )
    ab = results.get("abandon") or {}
    rows = []
    for i, r in enumerate(ab.get("rounds", []), 1):
        rows.append(
            [
                str(i),
                _fmt(r.get("opened")),
                _fmt(r.get("connect")),
                _fmt(r.get("closed")),
                _fmt(r.get("errors")) + (" %s" % r["why"] if r.get("why") else ""),
                _fmt(r.get("rss_mb"), "{:.1f}"),
                _fmt(r.get("greenlets")),
            ]
        )
    before = ab.get("before") or {}
    out.write(
        "\n3. %d connections opened and abandoned (connect taken, then closed), %d rounds; "
        "before: RSS %s MB, %s greenlets\n"
        % (
            s["abandon"],
            s["rounds"],
            _fmt(before.get("rss_mb"), "{:.1f}"),
            _fmt(before.get("greenlets")),
        )
    )
    out.write(
        table(
            ["round", "opened", "got connect", "closed", "failed", "RSS MB", "greenlets"],
            rows,
            right=range(6),
        )
        + "\n"
    )
    after = ab.get("after") or {}
    if after:
        out.write(
            "   after: %s calls in entry, %s sessions, outcomes %s\n"
            % (after.get("active"), after.get("sessions"), after.get("outcomes"))
        )
    out.write(
        "machine: 1-min load average %.2f before, %.2f after, on %d core(s)\n"
        % (results["loadavg_before"], results.get("loadavg_after", 0.0), os.cpu_count() or 0)
    )
    results["targets"] = _targets(results, s)
    rows = [
        [t["label"], t["target"], t["measured"], _verdict(t["pass"])]
        for t in results["targets"].values()
    ]
    out.write("\nTargets\n")
    out.write(table(["target", "goal", "measured", "verdict"], rows) + "\n")
    out.flush()


def _targets(results: Dict[str, Any], s: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    targets: Dict[str, Dict[str, Any]] = {}
    wave = results.get("wave") or {}
    n = s["callers"]
    if wave:
        view = wave.get("confd_view") or {}
        ok = wave["joined"] == n and wave["right_flags"] == n and view.get("right") == n
        measured = "%d joined, %d right flags, %d right in REST" % (
            wave["joined"],
            wave["right_flags"],
            view.get("right", 0),
        )
    else:
        ok, measured = None, "not run"
    targets["all_joined"] = {
        "label": "%d callers at once" % n,
        "target": "all joined, right flags",
        "measured": measured,
        "pass": ok,
    }
    steps = wave.get("steps") or {}
    p99 = steps.get("p99_ms")
    targets["step_p99"] = {
        "label": "confd's time per step, p99",
        "target": "< %.0f ms" % TARGET_STEP_P99_MS,
        "measured": "%.3f ms (%d steps; in CPU time %s ms)"
        % (p99, steps["count"], _fmt((steps.get("cpu") or {}).get("p99_ms"), "{:.3f}"))
        if p99 is not None
        else "-",
        "value": p99,
        "pass": p99 < TARGET_STEP_P99_MS if p99 is not None else None,
    }
    ab = results.get("abandon") or {}
    rounds = ab.get("rounds") or []
    if len(rounds) >= 3:
        plateau = max(r["rss_mb"] for r in rounds[:2])
        last = rounds[-1]["rss_mb"]
        slack = max(plateau * RSS_SLACK[0], RSS_SLACK[1])
        ok = last <= plateau + slack
        measured = "plateau %.1f MB, last %.1f MB" % (plateau, last)
    else:
        ok, measured = None, "not run"
    targets["rss"] = {
        "label": "RSS after abandoned connections",
        "target": "back to its plateau (+5%/2 MB)",
        "measured": measured,
        "pass": ok,
    }
    before = (ab.get("before") or {}).get("greenlets")
    after = ab.get("after") or {}
    if before is not None and rounds:
        ok = (
            rounds[-1]["greenlets"] <= before
            and after.get("sessions") == 0
            and after.get("active") == 0
        )
        measured = "%d before, %d after, %s sessions" % (
            before,
            rounds[-1]["greenlets"],
            after.get("sessions"),
        )
    else:
        ok, measured = None, "not run"
    targets["greenlets"] = {
        "label": "greenlets after abandoned connections",
        "target": "none left",
        "measured": measured,
        "pass": ok,
    }
    return targets


if __name__ == "__main__":
    _COMMANDS = {"sim": sim_main, "confd": confd_main}
    if len(sys.argv) > 1 and sys.argv[1] in _COMMANDS:
        sys.exit(_COMMANDS[sys.argv[1]](sys.argv[2:]))
    sys.stderr.write("usage: python -m confd_tests.bench entry [--quick] [options]\n")
    sys.exit(2)

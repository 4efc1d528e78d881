"""The soak's conductor: set up, load for N minutes, pause, verify, report, clean up.

Processes (all on loopback, each in its own session, all stopped on exit or Ctrl-C):

* confd: ``python -m confd run --config <temp>/confd.yml`` (SQLite in the temp directory);
* the fake FreeSWITCH nodes: ``--node-procs`` processes of ``confd_tests.soak nodes``;
* the websocket subscribers: ``--client-procs`` processes of ``confd_tests.soak clients``;
* the REST load: one ``confd_tests.soak rest`` process.

Rate control: the talking rate asked (``--talk-rate``) is a request.  The conductor starts at
a tenth of it and raises it every CONTROL_EVERY seconds while confd keeps up; it lowers it when
it does not: when confd has taken in a second's worth fewer events than the nodes produced, or
when the slowest websocket subscriber is a quarter of its queue bound behind what confd has
published (past the bound confd would drop it, by design: a slow client never slows intake).
Besides, a node whose queue to confd is long holds its steps (module ``nodes``).  So on a
machine too small for the request the soak still runs clean, at the rate it sustains, and
reports that rate; ``--fixed-rate`` turns the control off (the nodes' hold stays).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO, Tuple

from confd_tests.loadtools import (
    Child,
    ChildFailed,
    http_call,
    machine_busy,
    parse_metrics,
    proc_cpu,
    profile_top,
    self_cpu,
)
from confd_tests.soak import REPO_ROOT, checks

PASSWORD = "ClueCon"
ACCOUNT_NAME = "soak"
NODE_NAME = "fs%d"
STEP_TIMEOUT = 20.0  # bound of one set-up step
# After the pause, events still travelling (node queues, socket buffers, confd's subscriber
# queues) must arrive within this; on an overloaded machine the tail is seconds long.
DRAIN_TIMEOUT = 30.0
# The control lowers the rate when confd is this far behind the nodes (seconds of events, at
# least MIN_ESL_LAG events), or when the slowest websocket client is behind by this share of
# its queue bound (past the bound confd drops it).  A node's own hold (module nodes) needs no
# control: it only delays events, it loses none.
MAX_ESL_LAG_S = 1.0
MIN_ESL_LAG = 2000
MAX_WS_BEHIND = 0.25
SETTLE = 1.0  # the brief's "wait a second for the tail to drain"
HTTP_TIMEOUT = 10.0
CONTROL_EVERY = 0.5  # seconds between two looks of the rate control
RSS_EVERY = 2.0
PROGRESS_EVERY = 10.0
START_SHARE = 0.1  # the control starts at this share of the asked talking rate
RAISE, LOWER = 1.25, 0.75  # its multiplicative steps
MIN_RATE = 50.0
# Hard bound: the load's minutes plus this for set-up, pause, drain, comparison (the usual
# total is about 10 s); past it the soak stops where it is, cleans up and fails.
TIME_SLACK = 90.0
LOG_PORT_MARK = "HTTP API on "
OTHERS_WARNING = 25.0  # % of a core used by processes not ours that earns a warning

# Scale of the request (issue 5 item 5).
DEFAULTS = {
    "nodes": 10,
    "conferences": 200,
    "members": 10,
    "talk_rate": 5000.0,
    "churn_rate": 20.0,
    "mute_rate": 20.0,
    "clients": 50,
    "rest_rate": 200.0,
}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the load (10)")
    ap.add_argument("--nodes", type=int, default=DEFAULTS["nodes"])
    ap.add_argument("--conferences", type=int, default=DEFAULTS["conferences"])
    ap.add_argument("--members", type=int, default=DEFAULTS["members"], help="per conference")
    ap.add_argument(
        "--talk-rate",
        type=float,
        default=DEFAULTS["talk_rate"],
        help="start/stop-talking events per second, all nodes (5000)",
    )
    ap.add_argument(
        "--churn-rate",
        type=float,
        default=DEFAULTS["churn_rate"],
        help="joins + leaves per second, all nodes (20)",
    )
    ap.add_argument(
        "--mute-rate",
        type=float,
        default=DEFAULTS["mute_rate"],
        help="mute/unmute api commands per second, all nodes (20)",
    )
    ap.add_argument("--clients", type=int, default=DEFAULTS["clients"], help="websockets (50)")
    ap.add_argument("--rest-rate", type=float, default=DEFAULTS["rest_rate"], help="req/s (200)")
    ap.add_argument("--rest-connections", type=int, default=8)
    ap.add_argument("--node-procs", type=int, default=2, help="processes for the nodes (2)")
    ap.add_argument("--client-procs", type=int, default=5, help="processes for the clients (5)")
    ap.add_argument(
        "--subscriber-queue", type=int, default=5000, help="confd's events.subscriber_queue (5000)"
    )
    ap.add_argument(
        "--fixed-rate",
        action="store_true",
        help="no rate control: the nodes try the asked rates whatever happens",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="copy the work directory (logs) here at the end")
    ap.add_argument(
        "--py-spy",
        type=Path,
        metavar="FILE",
        help="sample confd with py-spy over the load (collapsed stacks to FILE)",
    )


class SoakFailed(Exception):
    """A set-up or verification step could not be done; ``str()`` says which and why."""


# --- small helpers -------------------------------------------------------------------------


def _http(
    port: int, method: str, path: str, body: Any = None, token: Optional[str] = None
) -> Tuple[int, Any]:
    return http_call(port, method, path, body, token, HTTP_TIMEOUT)


def metrics(port: int) -> Dict[str, float]:
    """``/metrics`` as ``{'name{labels}': value}``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return parse_metrics(text)


def metric_sum(m: Dict[str, float], name: str) -> float:
    """Sum of a metric over its labels (``name{...}`` and bare ``name``)."""
    return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))


def rss_mb(pid: int) -> Optional[float]:
    try:
        with open("/proc/%d/status" % pid, "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _wait(what: str, predicate, timeout: float, daemon: Optional[Child] = None) -> Any:
    limit = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while time.monotonic() < limit:
        if daemon is not None and daemon.proc.poll() is not None:
            raise SoakFailed("confd exited (%s): %s" % (daemon.proc.returncode, daemon.tail()))
        try:
            value = predicate()
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            value, last_exc = None, exc
        if value:
            return value
        time.sleep(0.05)
    raise SoakFailed(
        "%s: not within %.0f s%s" % (what, timeout, " (%s)" % last_exc if last_exc else "")
    )


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt()


class Overrun(Exception):
    """The soak passed its time bound (the minutes asked plus TIME_SLACK)."""


def _overrun(signum, frame) -> None:
    raise Overrun()


# --- the soak ------------------------------------------------------------------------------


@dataclass
class Soak:
    args: argparse.Namespace
    out: TextIO
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="confd-soak-")))
    children: List[Child] = field(default_factory=list)
    report: Dict[str, Any] = field(default_factory=dict)
    failures: List[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def child(self, name: str, argv: List[str], env: Optional[Dict[str, str]] = None) -> Child:
        c = Child(name, argv, self.workdir / (name + ".log"), REPO_ROOT, env)
        self.children.append(c)
        return c

    def fail(self, text: str) -> None:
        self.failures.append(text)

    # --- set-up ------------------------------------------------------------------------------

    def setup(self) -> None:
        a = self.args
        py = [sys.executable, "-m"]
        t0 = time.monotonic()
        names = [NODE_NAME % i for i in range(a.nodes)]
        procs = max(1, min(a.node_procs, a.nodes))
        self.node_groups = [names[i::procs] for i in range(procs)]
        self.node_procs = [
            self.child(
                "nodes-%d" % i,
                py
                + ["confd_tests.soak", "nodes", "--names", ",".join(group)]
                + ["--members", str(a.members), "--seed", str(a.seed + i)],
            )
            for i, group in enumerate(self.node_groups)
        ]
        db = self.workdir / "confd.db"
        cfg = {
            "http": {"host": "127.0.0.1", "port": 0},
            "database": {"url": "sqlite:///%s" % db},
            "log": {"level": "info"},
        }
        self.config = self.workdir / "confd.yml"
        self.config.write_text(json.dumps(cfg, indent=1))  # JSON is YAML
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONFD_")}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        self.env = env
        created = subprocess.run(
            py
            + ["confd", "accounts", "create", "--name", ACCOUNT_NAME, "--config", str(self.config)],
            cwd=str(REPO_ROOT),
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            env=env,
        )
        if created.returncode != 0:
            raise SoakFailed("confd accounts create: %s" % created.stderr.strip()[-300:])
        account = json.loads(created.stdout)
        self.account, api_key = account["id"], account["api_key"]
        self.conference_ids = self._documents(db)
        ports: Dict[str, int] = {}
        for proc, group in zip(self.node_procs, self.node_groups):
            ports.update(zip(group, json.loads(proc.wait_for("PORTS", STEP_TIMEOUT))))
        cfg["freeswitch"] = {
            "nodes": [
                {"host": "127.0.0.1", "port": ports[n], "password": PASSWORD, "name": n}
                for n in names
            ],
            # The fakes send no HEARTBEAT; a dead node shows as EOF on loopback anyway.
            "heartbeat_timeout": 3600,
        }
        cfg["events"] = {"subscriber_queue": a.subscriber_queue}
        self.config.write_text(json.dumps(cfg, indent=1))
        self.daemon = self.child("confd", py + ["confd", "run", "--config", str(self.config)], env)
        self.port = _wait("confd's HTTP port", self._log_port, STEP_TIMEOUT, self.daemon)

        def all_connected() -> bool:
            status, body = _http(self.port, "GET", "/v2/health")
            return status == 200 and all(n["connected"] for n in body["data"]["nodes"])

        _wait("confd connected to the %d nodes" % a.nodes, all_connected, STEP_TIMEOUT, self.daemon)
        status, body = _http(self.port, "PUT", "/v2/api_auth", {"data": {"api_key": api_key}})
        if status != 201:
            raise SoakFailed("PUT /v2/api_auth: HTTP %d %s" % (status, body))
        self.token = body["auth_token"]
        self.say(
            "  confd up on port %d, %d nodes connected (%.1f s)"
            % (self.port, a.nodes, time.monotonic() - t0)
        )
        self._populate()
        self.say(
            "  %d participants in %d conferences taken in (%.1f s)"
            % (self.population, len(self.conference_ids), time.monotonic() - t0)
        )
        self._clients()
        self._rest()
        self.setup_s = time.monotonic() - t0
        self.say(
            "  %d websocket clients subscribed, REST load ready (%.1f s)"
            % (a.clients, self.setup_s)
        )

    def _log_port(self) -> Optional[int]:
        text = self.daemon.log.read_text(errors="replace")
        at = text.find(LOG_PORT_MARK)
        if at < 0:
            return None
        rest = text[at + len(LOG_PORT_MARK) :].split(None, 1)[0]
        return int(rest.rsplit(":", 1)[1])

    def _documents(self, db: Path) -> List[str]:
        """The soak's conference documents, written before confd starts (its store's own
        code, so ids and validation are confd's); their ids are the FreeSWITCH names."""
        from confd.store import Store

        store = Store.from_url("sqlite:///%s" % db)
        try:
            return [
                store.conferences.create(self.account, {"name": "soak %d" % i}).id
                for i in range(self.args.conferences)
            ]
        finally:
            store.close()

    def _nodes_say(self, line: str) -> None:
        for p in self.node_procs:
            p.say(line)

    def _nodes_wait(self, word: str, timeout: float) -> List[Any]:
        return [json.loads(p.wait_for(word, timeout) or "null") for p in self.node_procs]

    def nodes_status(self, replies: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
        """The nodes' figures summed: from ``replies`` (exact: POPULATED, PAUSED) or else from
        their latest STATUS lines (up to a second old)."""
        total: Dict[str, Any] = {
            "emitted": 0,
            "done": {},
            "held": {},
            "backlog": 0,
            "slow_client_drops": 0,
            "members": 0,
            "reconnects": 0,
        }
        for s in replies if replies is not None else [p.status or {} for p in self.node_procs]:
            total["emitted"] += s.get("emitted", 0)
            for key in ("done", "held"):
                for k, v in s.get(key, {}).items():
                    total[key][k] = total[key].get(k, 0) + v
            total["backlog"] = max(total["backlog"], s.get("backlog", 0))
            total["slow_client_drops"] += s.get("slow_client_drops", 0)
            total["members"] += s.get("members", 0)
            # confd keeps two connections per node (events, commands): more accepted = reconnects
            total["reconnects"] += sum(max(0, n - 2) for n in s.get("accepted", []))
        return total

    def _populate(self) -> None:
        a = self.args
        names = [NODE_NAME % i for i in range(a.nodes)]
        plan: Dict[str, List[str]] = {n: [] for n in names}
        for i, cid in enumerate(self.conference_ids):
            plan[names[i % a.nodes]].append(cid)
        for p, group in zip(self.node_procs, self.node_groups):
            spec = {"account": self.account, "plan": {n: plan[n] for n in group}}
            p.say("POPULATE " + json.dumps(spec))
        populated = self._nodes_wait("POPULATED", STEP_TIMEOUT)
        self.nodes0 = self.nodes_status(populated)
        emitted = sum(s["emitted"] for s in populated)
        self.population = sum(s["members"] for s in populated)

        def taken_in() -> bool:
            m = metrics(self.port)
            return (
                metric_sum(m, "confd_esl_events_total") >= emitted
                and m.get("confd_live_participants") == self.population
            )

        _wait("confd taking in the %d joins" % self.population, taken_in, STEP_TIMEOUT, self.daemon)
        dump = self._dump("population")
        self.moderators: Dict[str, int] = {}
        for node in dump.values():
            for conf in node["json_list"]:
                for m in conf["members"]:
                    if m["flags"]["is_moderator"]:
                        self.moderators[conf["conference_name"]] = m["id"]

    def _dump(self, tag: str) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for i, p in enumerate(self.node_procs):
            path = self.workdir / ("dump-%s-%d.json" % (tag, i))
            p.say("DUMP %s" % path)
            p.wait_for("DUMPED", STEP_TIMEOUT)
            out.update(json.loads(path.read_text()))
        return out

    def _clients(self) -> None:
        a = self.args
        procs = max(1, min(a.client_procs, a.clients)) if a.clients else 0
        counts = [a.clients // procs + (1 if i < a.clients % procs else 0) for i in range(procs)]
        url = "ws://127.0.0.1:%d/v2/websocket" % self.port
        self.client_procs: List[Child] = []
        first = 0
        for i, n in enumerate(counts):
            self.client_procs.append(
                self.child(
                    "clients-%d" % i,
                    [sys.executable, "-m", "confd_tests.soak", "clients", "--url", url]
                    + ["--token", self.token, "--account", self.account]
                    + ["--first", str(first), "--count", str(n)],
                )
            )
            first += n
        for c in self.client_procs:
            c.wait_for("READY", STEP_TIMEOUT)

    def _rest(self) -> None:
        a = self.args
        plan = self.workdir / "rest-plan.json"
        plan.write_text(
            json.dumps(
                {
                    "port": self.port,
                    "token": self.token,
                    "account": self.account,
                    "conferences": self.conference_ids,
                    "moderators": self.moderators,
                }
            )
        )
        self.rest_proc: Optional[Child] = None
        if a.rest_rate > 0:
            self.rest_proc = self.child(
                "rest",
                [sys.executable, "-m", "confd_tests.soak", "rest", "--plan", str(plan)]
                + ["--rate", str(a.rest_rate), "--connections", str(a.rest_connections)]
                + ["--seed", str(a.seed)],
            )

    # --- the load ----------------------------------------------------------------------------

    def _received(self) -> List[int]:
        out: List[int] = []
        for c in self.client_procs:
            out.extend((c.status or {}).get("received", [0] * 0))
        return out

    def _ended(self) -> List[str]:
        out: List[str] = []
        for c in self.client_procs:
            out.extend(e for e in (c.status or {}).get("ended", []) if e)
        return out

    def _set_rate(self, talk: float) -> None:
        a = self.args
        procs = len(self.node_procs)
        rates = {"talk": talk / procs, "churn": a.churn_rate / procs, "mute": a.mute_rate / procs}
        self._nodes_say("RATE " + json.dumps(rates))

    def load(self) -> None:
        a = self.args
        seconds = a.minutes * 60.0
        m0 = metrics(self.port)
        self.events0 = metric_sum(m0, "confd_esl_events_total")
        self.published0 = metric_sum(m0, "confd_events_published_total")
        rate = a.talk_rate if a.fixed_rate else max(MIN_RATE, a.talk_rate * START_SHARE)
        self._set_rate(rate)
        pids = self._pids()
        cpu0 = {k: [proc_cpu(p) for p in v] for k, v in pids.items()}
        self_cpu0 = self_cpu()
        busy0 = machine_busy()
        spy = self._py_spy(seconds)
        if self.rest_proc is not None:
            self.rest_proc.wait_for("READY", STEP_TIMEOUT)
        self._nodes_say("RESUME")
        t0 = time.monotonic()
        self.t_load = t0
        self.rss: List[Tuple[float, float]] = []
        self.rates: List[Tuple[float, float]] = []  # (t, talking events/s achieved)
        next_rss = next_control = t0
        next_progress = t0 + PROGRESS_EVERY
        history: List[Tuple[float, float]] = []  # (t, published) for the lag estimate
        last_talk, last_t = self.nodes0["done"].get("talk", 0), t0
        ended_seen = 0
        while True:
            now = time.monotonic()
            if now - t0 >= seconds:
                break
            if self.daemon.proc.poll() is not None:
                raise SoakFailed(
                    "confd exited during the load (%s): %s"
                    % (self.daemon.proc.returncode, self.daemon.tail())
                )
            for c in self.children:
                if c is not self.daemon and c.proc.poll() is not None:
                    raise SoakFailed("%s exited during the load: %s" % (c.name, c.tail()))
            if now >= next_rss:
                mb = rss_mb(self.daemon.pid)
                if mb is not None:
                    self.rss.append((now - t0, mb))
                next_rss += RSS_EVERY
            if now >= next_control:
                next_control += CONTROL_EVERY
                m = self.last_metrics = metrics(self.port)
                published = metric_sum(m, "confd_events_published_total") - self.published0
                history.append((now, published))
                ns = self.nodes_status()
                talk = ns["done"].get("talk", 0)
                if now > last_t:
                    self.rates.append((now - t0, (talk - last_talk) / (now - last_t)))
                last_talk, last_t = talk, now
                # Events the nodes produced that confd has not taken in yet (both counts start
                # with the population; the nodes' STATUS may be a quarter of a second old).
                esl_lag = ns["emitted"] - metric_sum(m, "confd_esl_events_total")
                received = self._received()
                ended = self._ended()
                if len(ended) > ended_seen:
                    for e in ended[ended_seen:]:
                        self.say("  ! websocket client ended: %s" % e)
                    ended_seen = len(ended)
                # The slowest client against what was published a control period ago.
                behind = 0.0
                past = [p for t, p in history if t <= now - CONTROL_EVERY * 1.5]
                if past and received:
                    behind = past[-1] - min(received)
                if not a.fixed_rate:
                    if behind > a.subscriber_queue * MAX_WS_BEHIND or esl_lag > max(
                        rate * MAX_ESL_LAG_S, MIN_ESL_LAG
                    ):
                        rate = max(MIN_RATE, rate * LOWER)
                    elif rate < a.talk_rate:
                        rate = min(a.talk_rate, rate * RAISE)
                    self._set_rate(rate)
                history = history[-20:]
            if now >= next_progress:
                next_progress += PROGRESS_EVERY
                self._progress(now - t0, rate)
            time.sleep(0.05)
        self.load_s = time.monotonic() - t0
        cpu1 = {k: [proc_cpu(p) for p in v] for k, v in pids.items()}
        self.cpu = {
            k: sum((b or 0) - (x or 0) for x, b in zip(cpu0[k], cpu1[k])) / self.load_s * 100.0
            for k in pids
        }
        self.cpu["conductor"] = (self_cpu() - self_cpu0) / self.load_s * 100.0
        machine = (machine_busy() - busy0) / self.load_s * 100.0
        self.cpu["others"] = max(0.0, machine - sum(self.cpu.values()))
        self.cpu["machine"] = machine
        self.final_rate = rate
        if spy is not None:
            try:
                spy.wait(STEP_TIMEOUT)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(3)

    def _pids(self) -> Dict[str, List[int]]:
        out = {
            "confd": [self.daemon.pid],
            "nodes": [p.pid for p in self.node_procs],
            "clients": [c.pid for c in self.client_procs],
        }
        if self.rest_proc is not None:
            out["rest"] = [self.rest_proc.pid]
        return out

    def _progress(self, t: float, rate: float) -> None:
        m = getattr(self, "last_metrics", None) or metrics(self.port)
        recent = [r for x, r in self.rates if x >= t - PROGRESS_EVERY]
        rest = (self.rest_proc.status or {}) if self.rest_proc else {}
        self.say(
            "  t=%4.0fs  talking %5.0f/s (control %5.0f)  ESL events %9d  published %9d  "
            "ws min %9d  REST %6d (err %d)  RSS %.1f MB"
            % (
                t,
                sum(recent) / len(recent) if recent else 0.0,
                rate,
                metric_sum(m, "confd_esl_events_total") - self.events0,
                metric_sum(m, "confd_events_published_total") - self.published0,
                min(self._received() or [0]),
                rest.get("sent", 0),
                rest.get("errors", 0),
                self.rss[-1][1] if self.rss else 0.0,
            )
        )

    def _py_spy(self, seconds: float) -> Optional[subprocess.Popen]:
        if self.args.py_spy is None:
            return None
        exe = Path(sys.executable).with_name("py-spy")
        with open(self.workdir / "py-spy.log", "w") as log:
            return subprocess.Popen(
                [str(exe) if exe.exists() else "py-spy", "record", "--pid", str(self.daemon.pid)]
                + ["--rate", "100", "--duration", str(max(1, int(seconds))), "--format", "raw"]
                + ["--nonblocking", "--output", str(self.args.py_spy)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    # --- pause and verify --------------------------------------------------------------------

    def verify(self) -> None:
        t0 = time.monotonic()
        if self.rest_proc is not None:
            self.rest_result = json.loads(self.rest_proc.ask("STOP", "RESULT", STEP_TIMEOUT))
        else:
            self.rest_result = {}
        self._nodes_say("PAUSE")
        paused = self._nodes_wait("PAUSED", STEP_TIMEOUT)
        if not all(p.get("drained") for p in paused):
            self.fail("a node's queue to confd did not drain within %.0f s" % DRAIN_TIMEOUT)
        emitted = sum(p["emitted"] for p in paused)

        def esl_drained() -> bool:
            return metric_sum(metrics(self.port), "confd_esl_events_total") >= emitted

        try:
            _wait("confd taking in every event", esl_drained, DRAIN_TIMEOUT, self.daemon)
        except SoakFailed as exc:
            self.fail(str(exc))

        def ws_drained() -> bool:
            published = metric_sum(metrics(self.port), "confd_events_published_total")
            received = self._received()
            time.sleep(0.3)  # the clients report every 0.5 s
            return bool(received) and min(self._received()) >= published - self.published0

        try:
            _wait("websocket clients receiving every event", ws_drained, DRAIN_TIMEOUT)
        except SoakFailed:
            pass  # counted below as events not delivered
        time.sleep(SETTLE)
        self.final_metrics = metrics(self.port)
        self.nodes_end = self.nodes_status(paused)
        dump = self._dump("end")
        status, body = _http(self.port, "GET", "/v2/health")
        health = {n["name"]: n for n in (body.get("data") or {}).get("nodes", [])}
        confd_view: Dict[str, Optional[List[Dict[str, Any]]]] = {}
        for cid in self.conference_ids:
            path = "/v2/accounts/%s/conferences/%s" % (self.account, cid)
            st, doc = _http(self.port, "GET", path, token=self.token)
            if st != 200:
                self.fail("GET %s at the end: HTTP %d" % (path, st))
                confd_view[cid] = None
                continue
            confd_view[cid] = doc["data"].get("_read_only", {}).get("participants") or []
        self.drift = checks.drift(dump, confd_view, health)
        self.drift["participants_compared"] = sum(len(v or []) for v in confd_view.values())
        self.drift["node_participants"] = sum(
            len(c["members"]) for d in dump.values() for c in d["json_list"]
        )
        self.client_results = []
        for c in self.client_procs:
            self.client_results.append(json.loads(c.ask("STOP", "RESULT", STEP_TIMEOUT)))
        self.verify_s = time.monotonic() - t0

    def stop_confd(self) -> None:
        """SIGTERM confd (a clean stop is part of the soak) and read its log."""
        if self.daemon.proc.poll() is None:
            self.daemon.proc.send_signal(signal.SIGTERM)
        try:
            self.confd_exit = self.daemon.proc.wait(STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.confd_exit = None
            self.daemon.stop(eof_first=False)
        self.log = checks.scan_log(self.daemon.log.read_text(errors="replace").splitlines())

    def cleanup(self) -> None:
        for c in reversed(self.children):
            c.stop(eof_first=c is not getattr(self, "daemon", None))
        if self.args.keep is not None:
            shutil.copytree(self.workdir, self.args.keep, dirs_exist_ok=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


# --- the report ----------------------------------------------------------------------------


def summarise(s: Soak) -> Dict[str, Any]:
    """Every figure of the soak and its verdicts, JSON-able; failures go to ``s.failures``."""
    a = s.args
    r: Dict[str, Any] = {
        "soak": "confd",
        "minutes": a.minutes,
        "scale": {
            "nodes": a.nodes,
            "conferences": a.conferences,
            "members_per_conference": a.members,
            "participants": getattr(s, "population", None),
            "websocket_clients": a.clients,
            "talk_rate_asked": a.talk_rate,
            "churn_rate": a.churn_rate,
            "mute_rate": a.mute_rate,
            "rest_rate_asked": a.rest_rate,
            "subscriber_queue": a.subscriber_queue,
            "rate_control": not a.fixed_rate,
        },
        "setup_s": round(getattr(s, "setup_s", 0.0), 1),
    }
    errors: Dict[str, int] = {}
    if hasattr(s, "load_s"):
        m = getattr(s, "final_metrics", None) or getattr(s, "last_metrics", None) or {}
        ns = getattr(s, "nodes_end", s.nodes_status())
        n0 = s.nodes0
        events = metric_sum(m, "confd_esl_events_total") - s.events0
        published = metric_sum(m, "confd_events_published_total") - s.published0
        emitted = ns["emitted"] - n0["emitted"]
        talk = ns["done"].get("talk", 0) - n0["done"].get("talk", 0)
        rates = [x for _, x in s.rates]
        r["load_s"] = round(s.load_s, 1)
        r["events"] = {
            "talking_events": talk,
            "talking_per_s": talk / s.load_s,
            "talking_per_s_peak": max(rates) if rates else 0.0,
            "control_rate_end": s.final_rate,
            "joins": ns["done"].get("join", 0) - n0["done"].get("join", 0),
            "leaves": ns["done"].get("leave", 0) - n0["done"].get("leave", 0),
            "mutes": sum(ns["done"].get(k, 0) - n0["done"].get(k, 0) for k in ("mute", "unmute")),
            "held_steps": sum(ns["held"].values()) - sum(n0["held"].values()),
            "node_events": emitted,
            "confd_esl_events": events,
            "confd_esl_events_total": metric_sum(m, "confd_esl_events_total"),
            "confd_esl_events_per_s": events / s.load_s,
            "esl_lost": max(0, int(emitted - events)),
            "published": published,
            "participants_end": ns["members"],
        }
        errors["esl_events_lost"] = r["events"]["esl_lost"]
        errors["node_dropped_confd"] = ns["slow_client_drops"]
        errors["node_reconnects"] = ns["reconnects"]
        # Websocket.
        received = []
        ended = []
        invalid = []
        for res in getattr(s, "client_results", []):
            received.extend(res["received"])
            ended.extend(e for e in res["ended"] if e)
            invalid.extend(res["invalid"])
        lost = sum(max(0, int(published) - n) for n in received)
        extra = sum(max(0, n - int(published)) for n in received)
        closes = metric_sum(m, "confd_websocket_closes_total")
        drops = m.get('confd_queue_drops_total{queue="websocket"}', 0.0)
        r["websocket"] = {
            "clients": len(received),
            "delivered": sum(received),
            "delivered_per_s": sum(received) / s.load_s,
            "per_client_min": min(received) if received else 0,
            "per_client_expected": int(published),
            "lost": lost,
            "extra": extra,
            "ended": ended[:10],
            "invalid": invalid[:10],
            "confd_closes": closes,
            "confd_queue_drops": drops,
        }
        errors["websocket_lost_events"] = lost
        errors["websocket_extra_events"] = extra
        errors["websocket_ended"] = len(ended)
        errors["websocket_invalid_events"] = len(invalid)
        errors["websocket_closed_by_confd"] = int(closes)
        # REST.
        rr = getattr(s, "rest_result", {}) or {}
        by = rr.get("by_status", {})
        r["rest"] = {
            "sent": rr.get("sent", 0),
            "per_s": rr.get("sent", 0) / s.load_s,
            "unsent": rr.get("unsent", 0),
            "by_status": by,
            "errors": rr.get("errors", 0),
            "samples": rr.get("samples", []),
            "latency": rr.get("latency", {}),
            "5xx": sum(v for k, v in by.items() if k.startswith("5")),
            "4xx": sum(v for k, v in by.items() if k.startswith("4")),
        }
        errors["rest_errors"] = int(rr.get("errors", 0))
        r["rss"] = checks.plateau(s.rss)
        r["cpu_pct_of_one_core"] = {k: round(v, 1) for k, v in s.cpu.items()}
        r["cores"] = os.cpu_count()
    if a.py_spy is not None and Path(a.py_spy).exists():
        r["profile"] = profile_summary(Path(a.py_spy))
    if hasattr(s, "drift"):
        r["drift_detail"] = s.drift
    if hasattr(s, "log"):
        r["confd_log"] = s.log
        errors["confd_log_errors"] = s.log["errors"]
        r["confd_exit"] = s.confd_exit
        errors["confd_exit_not_0"] = 0 if s.confd_exit == 0 else 1
    errors["soak_failures"] = len(s.failures)
    r["error_counts"] = errors
    r["failures"] = s.failures
    r["errors"] = sum(errors.values())
    r["drift"] = s.drift["drift"] if hasattr(s, "drift") else None
    rss_ok = r.get("rss", {}).get("ok")
    r["ok"] = r["errors"] == 0 and r["drift"] == 0 and rss_ok is not False
    return r


def profile_summary(path: Path, n: int = 15) -> Dict[str, Any]:
    """py-spy's raw (collapsed) stacks -> the top functions by own and by inclusive samples,
    as percentages, functions named without line numbers."""
    total, own, incl = profile_top(path, n)

    def pct(items: List[Tuple[str, int]]) -> List[Tuple[str, float]]:
        return [(name, 100.0 * k / total) for name, k in items]

    return {"path": str(path), "samples": total, "self": pct(own), "inclusive": pct(incl)}


def _f(value: Any, spec: str = "{:,.0f}") -> str:
    return spec.format(value) if isinstance(value, (int, float)) else "-"


def print_summary(r: Dict[str, Any], out: TextIO) -> None:
    from confd_tests.bench import table

    sc = r["scale"]
    ev = r.get("events", {})
    ws = r.get("websocket", {})
    rest = r.get("rest", {})
    rss = r.get("rss", {})
    rows = [
        ["load", "%.1f min" % r["minutes"], "%s s" % _f(r.get("load_s"), "{:.1f}"), ""],
        [
            "nodes / conferences / participants",
            "%d / %d / %d"
            % (sc["nodes"], sc["conferences"], sc["conferences"] * sc["members_per_conference"]),
            "%s / %s / %s" % (sc["nodes"], sc["conferences"], _f(sc.get("participants"))),
            "",
        ],
        [
            "talking events/s",
            _f(sc["talk_rate_asked"]),
            _f(ev.get("talking_per_s")),
            "peak %s/s over %.1f s" % (_f(ev.get("talking_per_s_peak")), CONTROL_EVERY),
        ],
        [
            "joins / leaves / mutes",
            "%s/s, %s/s" % (_f(sc["churn_rate"]), _f(sc["mute_rate"])),
            "%s / %s / %s" % (_f(ev.get("joins")), _f(ev.get("leaves")), _f(ev.get("mutes"))),
            "participants at the end: %s" % _f(ev.get("participants_end")),
        ],
        [
            "ESL events processed (confd)",
            "",
            _f(ev.get("confd_esl_events")),
            "%s/s; nodes sent %s, lost %s"
            % (
                _f(ev.get("confd_esl_events_per_s")),
                _f(ev.get("node_events")),
                _f(ev.get("esl_lost")),
            ),
        ],
        ["events published", "", _f(ev.get("published")), ""],
        [
            "websocket clients",
            _f(sc["websocket_clients"]),
            _f(ws.get("clients")),
            "ended %d, closed by confd %s" % (len(ws.get("ended", [])), _f(ws.get("confd_closes"))),
        ],
        [
            "events delivered to websockets",
            "",
            _f(ws.get("delivered")),
            "%s/s; lost %s" % (_f(ws.get("delivered_per_s")), _f(ws.get("lost"))),
        ],
        [
            "REST requests",
            "%s/s" % _f(sc["rest_rate_asked"]),
            _f(rest.get("sent")),
            "%s/s; unsent %s; 4xx %s, 5xx %s, errors %s"
            % (
                _f(rest.get("per_s")),
                _f(rest.get("unsent")),
                _f(rest.get("4xx")),
                _f(rest.get("5xx")),
                _f(rest.get("errors")),
            ),
        ],
        [
            "confd RSS start / peak / end",
            "",
            "%s / %s / %s MB"
            % (
                _f(rss.get("start_mb"), "{:.1f}"),
                _f(rss.get("peak_mb"), "{:.1f}"),
                _f(rss.get("end_mb"), "{:.1f}"),
            ),
            "plateau: last third max %s vs middle %s MB: %s"
            % (
                _f(rss.get("last_third_max_mb"), "{:.1f}"),
                _f(rss.get("mid_third_max_mb"), "{:.1f}"),
                {True: "ok", False: "GROWING", None: "n/a"}[rss.get("ok")],
            ),
        ],
        [
            "confd log ERROR/tracebacks",
            "0",
            _f(r.get("confd_log", {}).get("errors")),
            "warnings %s" % _f(r.get("confd_log", {}).get("warnings")),
        ],
        [
            "drift (confd vs nodes)",
            "0",
            _f(r.get("drift")),
            "%s participants compared"
            % _f((r.get("drift_detail") or {}).get("participants_compared")),
        ],
        [
            "errors",
            "0",
            _f(r["errors"]),
            ", ".join("%s %d" % (k, v) for k, v in r["error_counts"].items() if v),
        ],
    ]
    out.write("\nSoak summary\n")
    out.write(table(["figure", "asked", "measured", "notes"], rows) + "\n")
    lat = rest.get("latency") or {}
    if lat:
        out.write("\nREST latency (ms)\n")
        out.write(
            table(
                ["request", "n", "p50", "p99", "max"],
                [
                    [
                        k,
                        _f(v["n"]),
                        _f(v["p50_ms"], "{:.1f}"),
                        _f(v["p99_ms"], "{:.1f}"),
                        _f(v["max_ms"], "{:.1f}"),
                    ]
                    for k, v in lat.items()
                ],
                right=(1, 2, 3, 4),
            )
            + "\n"
        )
    cpu = r.get("cpu_pct_of_one_core")
    if cpu:
        out.write(
            "\nCPU over the load, %% of one core (the machine has %d cores): %s\n"
            % (r.get("cores") or 0, ", ".join("%s %.0f%%" % kv for kv in cpu.items()))
        )
        if cpu.get("others", 0) > OTHERS_WARNING:
            out.write(
                "WARNING: other processes used %.0f%% of a core meanwhile: confd had less CPU "
                "than the machine has, the rates are pessimistic\n" % cpu["others"]
            )
    profile = r.get("profile")
    if profile:
        out.write(
            "\nWhere confd's time went (py-spy, %d samples, %s)\n"
            % (profile["samples"], profile["path"])
        )
        rows = []
        own, incl = profile["self"], profile["inclusive"]
        for i in range(max(len(own), len(incl))):
            a = own[i] if i < len(own) else ("", 0.0)
            b = incl[i] if i < len(incl) else ("", 0.0)
            rows.append(["%.1f%%" % a[1], a[0], "%.1f%%" % b[1], b[0]])
        out.write(table(["self", "function", "inclusive", "function"], rows, right=(0, 2)) + "\n")
    for title, lines in (
        ("Failures", r["failures"]),
        ("REST error samples", rest.get("samples", [])),
        ("Websocket connections ended", ws.get("ended", [])),
        ("Malformed events", ws.get("invalid", [])),
        ("Drift", (r.get("drift_detail") or {}).get("problems", [])),
        ("confd ERROR lines", r.get("confd_log", {}).get("error_lines", [])),
        ("confd WARNING lines", r.get("confd_log", {}).get("warning_lines", [])),
    ):
        if lines:
            out.write("\n%s:\n" % title)
            for line in lines:
                out.write("  %s\n" % line)
    out.write("\nverdict: %s\n" % ("PASS" if r["ok"] else "FAIL"))
    out.flush()


def run(args: argparse.Namespace, out: TextIO) -> int:
    s = Soak(args, out)
    previous = signal.signal(signal.SIGTERM, _interrupted)
    previous_alarm = signal.signal(signal.SIGALRM, _overrun)
    signal.setitimer(signal.ITIMER_REAL, args.minutes * 60.0 + TIME_SLACK)
    interrupted = False
    out.write(
        "confd soak: %d nodes, %d conferences x %d members, talking %.0f/s asked, %d websocket "
        "clients, REST %.0f/s, %.2f min (work dir %s)\n"
        % (
            args.nodes,
            args.conferences,
            args.members,
            args.talk_rate,
            args.clients,
            args.rest_rate,
            args.minutes,
            s.workdir,
        )
    )
    out.flush()
    try:
        try:
            s.setup()
            s.load()
            s.verify()
        except (SoakFailed, ChildFailed, OSError, http.client.HTTPException) as exc:
            s.fail("%s: %s" % (type(exc).__name__, exc))
        except KeyboardInterrupt:
            interrupted = True
            s.fail("interrupted")
        except Overrun:
            s.fail("the soak overran its time bound (%.0f s)" % (args.minutes * 60 + TIME_SLACK))
        except Exception as exc:  # noqa: BLE001 - a bug of the soak itself: report, clean up
            import traceback

            traceback.print_exc(file=out)
            s.fail("soak bug: %s: %s" % (type(exc).__name__, exc))
        finally:
            # What follows has bounded steps of its own; a late alarm must not cut it short.
            signal.setitimer(signal.ITIMER_REAL, 0)
        if hasattr(s, "daemon"):
            s.stop_confd()
        r = summarise(s)
    finally:
        try:
            s.cleanup()
        finally:
            signal.signal(signal.SIGALRM, previous_alarm)
            signal.signal(signal.SIGTERM, previous)
    print_summary(r, out)
    out.write(json.dumps(r, default=str) + "\n")
    out.flush()
    if interrupted:
        return 130
    return 0 if r["ok"] else 1

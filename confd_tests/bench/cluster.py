"""``python -m confd_tests.bench cluster``: several confd instances on one PostgreSQL and one
RabbitMQ (cluster.md, "Proof expected": the benchmark).

One ``confd_tests.cluster.harness.Cluster`` on loopback: the machine's PostgreSQL
(``CONFD_TEST_DATABASE_URL``, required) and RabbitMQ (``CONFD_TEST_AMQP_URL``), 3 confd
instances, 6 fake FreeSWITCH nodes in one process, 12 conferences of 20 participants.  It runs
in this order (the figures are printed in the order 1-4):

4. intake as instances are added: 1, then 2, then 3 instances share the same 6 nodes, which
   make a fixed rate of talking toggles.  Per instance over the window: the events it took in
   (``confd_esl_events_total`` of its /metrics), its CPU seconds (/proc/<pid>/stat) and CPU us
   per event, gross and net of its idle CPU (measured just before, with the load paused: the
   claims' rounds and the bus's polling cost the same with or without events);
1. GET of one 20-participant conference through its node's owner and through another
   instance: one sequential keep-alive ``http.client`` connection to each, blocks of requests
   alternating between the two so a busy moment of the machine falls on both alike;
2. actions: mute/unmute of that conference's moderator (alternating, so each one changes the
   state), through the owner and through another instance, in alternating blocks;
3. failover: SIGKILL of an owner, round after round (each instance in turn): from the kill
   until a surviving instance's /v2/health (each survivor polled every 20 ms on a keep-alive
   connection) shows every node of the dead one owned by a survivor, connected, with the
   node's own participant and conference counts (its ``json_list``, read just before the
   kill); then the killed instance is restarted and the nodes spread evenly again.

Parts 1-3 run with the nodes quiet.  The machine may be busy with other work: every part
prints how many cores the whole machine was busy and how much of that was this bench's own
processes (instances, nodes, this client), so figures from a busy machine read as such.
Speed goals are printed beside the figures; only a broken run gives a status other than ok.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

from confd_tests.bench import percentile, settings, table
from confd_tests.bench.entry import step_figures
from confd_tests.bench.intake import _fmt, _verdict
from confd_tests.loadtools import machine_busy, proc_cpu, self_cpu

DESCRIPTION = "cluster: GET/actions via owner vs not, failover, events/s as instances are added"

INSTANCES = 3
NODES = 6
CONFERENCES = 12
MEMBERS = 20  # participants of every conference, the measured one included
EVENTS_METRIC = "confd_esl_events_total"
REQUEST_TIMEOUT = 10.0
GET_BLOCK = 100  # requests to one instance before switching to the other
ACTION_BLOCK = 20  # even: each route gets as many mutes as unmutes
WARM = 20  # requests per route before measuring (not counted)
POLL_EVERY = 0.02  # seconds between two health polls during a failover
FAILOVER_LIMIT = 30.0  # a failover not done by then counts as failed
SETTLE_TIMEOUT = 120.0  # generous: two busy cores, three Python processes starting
AFTER_SETTLED = 1.0  # seconds after the spread settled before a window (resyncs finish)
WARM_LOAD = 1.0  # seconds of load before the intake window starts

# Goals printed beside the figures.
GOAL_GET_RATIO = 2.0  # non-owner GET p99 within this factor of the owner's
GOAL_GET_P99_MS = 15.0
GOAL_FAILOVER_P99_S = 3.0
GOAL_FLAT = 1.3  # net CPU us/event with 2 or 3 instances within this factor of 1 instance's

DEFAULTS = {
    "requests": 2000,
    "actions": 400,
    "kills": 20,
    "seconds": 20.0,
    "idle": 5.0,
    "talk": 500.0,
}
QUICK = {"requests": 100, "actions": 20, "kills": 2, "seconds": 2.0, "idle": 1.0, "talk": 200.0}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--events", type=int, help="talking toggles/s the nodes make in part 4 (500)")
    ap.add_argument("--quick", action="store_true", help="small numbers, for the smoke test")
    ap.add_argument("--requests", type=int, help="GETs per route, part 1 (2000)")
    ap.add_argument("--actions", type=int, help="mute/unmute actions per route, part 2 (400)")
    ap.add_argument("--kills", type=int, help="SIGKILL rounds, part 3 (20)")
    ap.add_argument("--seconds", type=float, help="intake window per instance count (20)")
    ap.add_argument("--idle", type=float, help="idle window before each intake window (5)")
    ap.add_argument("--claim-interval", type=float, default=1.0, help="cluster.claim_interval")
    ap.add_argument("--seed", type=int, default=1, help="seed of the nodes' callers")


def _settings(args: argparse.Namespace) -> Dict[str, Any]:
    s = settings(args, DEFAULTS, QUICK)
    if args.events:
        s["talk"] = float(args.events)
    s["requests"] = max(GET_BLOCK, int(s["requests"]) // GET_BLOCK * GET_BLOCK)
    s["actions"] = max(ACTION_BLOCK, int(s["actions"]) // ACTION_BLOCK * ACTION_BLOCK)
    s["claim_interval"] = args.claim_interval
    return s


class BenchBroken(Exception):
    """The run cannot go on (an instance did not answer as it must, a step timed out)."""


# =============================================================================================
# Pure helpers
# =============================================================================================


def events_taken(metrics: Dict[str, float]) -> float:
    """The sum of ``confd_esl_events_total`` over its labels (one per event action)."""
    return sum(v for k, v in metrics.items() if k.split("{", 1)[0] == EVENTS_METRIC)


def node_truth(dump: Dict[str, Dict[str, Any]]) -> Dict[str, Tuple[int, int]]:
    """node -> (conferences, participants) of the nodes' own ``json_list``."""
    return {
        name: (len(d["json_list"]), sum(len(c.get("members") or []) for c in d["json_list"]))
        for name, d in dump.items()
    }


def failover_state(
    data: Dict[str, Any], lost: List[str], survivors: List[str], truth: Dict[str, Tuple[int, int]]
) -> Tuple[bool, bool]:
    """(every lost node owned by a survivor, ... and connected with the node's own counts) in
    a /v2/health ``data``."""
    nodes = {n.get("name"): n for n in data.get("nodes") or []}
    owned = all((nodes.get(x) or {}).get("owner") in survivors for x in lost)
    done = owned and all(
        nodes[x].get("connected") is True
        and (nodes[x].get("conferences"), nodes[x].get("participants")) == truth[x]
        for x in lost
    )
    return owned, done


def spread_counts(owners: Dict[str, Optional[str]], names: List[str]) -> List[int]:
    return [sum(1 for o in owners.values() if o == name) for name in names]


# =============================================================================================
# HTTP: one keep-alive connection, every request timed
# =============================================================================================


class KeepAlive:
    """One sequential keep-alive connection to 127.0.0.1:``port``; made again after an error."""

    def __init__(self, port: int, token: Optional[str] = None) -> None:
        self.port = port
        self.token = token
        self.conn: Optional[http.client.HTTPConnection] = None

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def call(self, method: str, path: str, body: Any = None) -> Tuple[float, int, bytes]:
        """(seconds, status, raw body); raises OSError/HTTPException (connection dropped)."""
        if self.conn is None:
            self.conn = self._connect()
        headers = {}
        if self.token:
            headers["X-Auth-Token"] = self.token
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        t = time.perf_counter()
        try:
            self.conn.request(method, path, data, headers)
            resp = self.conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        return time.perf_counter() - t, resp.status, raw

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


Step = Callable[[KeepAlive, int], Tuple[float, Optional[str]]]


def alternate(
    routes: Dict[str, KeepAlive], step: Step, per_route: int, block: int
) -> Dict[str, Any]:
    """``per_route`` timed steps on each route, in alternating blocks of ``block``, after
    ``WARM`` untimed ones each.  ``step(client, i)`` -> (seconds, None or what went wrong); ``i``
    counts every step of every route (an action alternates with it)."""
    i = 0
    for client in routes.values():
        for _ in range(WARM):
            step(client, i)
            i += 1
    times: Dict[str, List[float]] = {r: [] for r in routes}
    errors: Dict[str, int] = {r: 0 for r in routes}
    first_error: Dict[str, Optional[str]] = {r: None for r in routes}
    for _ in range(per_route // block):
        for route, client in routes.items():
            for _ in range(block):
                try:
                    dt, wrong = step(client, i)
                except (OSError, http.client.HTTPException) as exc:
                    dt, wrong = 0.0, "%s: %s" % (type(exc).__name__, exc)
                i += 1
                if wrong is None:
                    times[route].append(dt)
                else:
                    errors[route] += 1
                    first_error[route] = first_error[route] or wrong
    out = {}
    for route in routes:
        out[route] = dict(step_figures(times[route]), errors=errors[route])
        if first_error[route]:
            out[route]["first_error"] = first_error[route]
    return out


# =============================================================================================
# The machine
# =============================================================================================


class Usage:
    """CPU of the machine and of this bench's processes between ``start()`` and ``stop()``.

    A process's CPU counts from ``start()`` (or from its own start, for one started since)
    to its last ``sample()`` while alive: call ``sample()`` just before killing one."""

    def __init__(self, pids: Callable[[], List[int]]) -> None:
        self._pids = pids
        self._first: Dict[int, float] = {}
        self._last: Dict[int, float] = {}

    def sample(self) -> None:
        for pid in self._pids():
            cpu = proc_cpu(pid)
            if cpu is not None:
                self._first.setdefault(pid, 0.0)
                self._last[pid] = cpu

    def start(self) -> None:
        self._t0, self._busy0, self._self0 = time.monotonic(), machine_busy(), self_cpu()
        self._first = {p: c for p in self._pids() if (c := proc_cpu(p)) is not None}
        self._last = dict(self._first)

    def stop(self) -> Dict[str, float]:
        self.sample()
        t1, busy1, self1 = time.monotonic(), machine_busy(), self_cpu()
        wall = max(t1 - self._t0, 1e-6)
        children = sum(self._last[p] - self._first[p] for p in self._last)
        busy = (busy1 - self._busy0) / wall
        ours = (self1 - self._self0 + children) / wall
        return {
            "busy_cores": busy,
            "bench_cores": ours,
            "other_cores": max(0.0, busy - ours),
            "loadavg_1m": os.getloadavg()[0],
        }


def machine_line(m: Optional[Dict[str, float]]) -> str:
    if not m:
        return "machine: -"
    return (
        "machine: %.2f of %d cores busy on average (this bench's processes %.2f, other work "
        "%.2f, PostgreSQL and RabbitMQ included); 1-min load average %.2f"
        % (
            m["busy_cores"],
            os.cpu_count() or 0,
            m["bench_cores"],
            m["other_cores"],
            m["loadavg_1m"],
        )
    )


# =============================================================================================
# The parts
# =============================================================================================


def wait_even(c: Any) -> Dict[str, str]:
    """Every node owned by a running instance and connected, every instance agreeing, and the
    spread even (no instance owns more than one node above another): the owners map."""

    def even() -> Optional[Dict[str, str]]:
        owners = c.settled()
        if owners is None:
            return None
        counts = spread_counts(owners, [c.names[k] for k in c.running()])
        return owners if max(counts) - min(counts) <= 1 else None

    return c.wait(even, SETTLE_TIMEOUT, "nodes owned, connected and evenly spread")


def pids(c: Any) -> List[int]:
    out = [c.nodes_pid]
    for k in c.running():
        try:
            out.append(c.pid(k))
        except AssertionError:
            pass
    return out


def intake_phase(
    c: Any, s: Dict[str, Any], out: TextIO, talk: float, control: bool = False
) -> Dict[str, Any]:
    """One window of part 4 with the instances running now, the nodes making ``talk``
    talking toggles/s."""
    running = c.running()
    owners = wait_even(c)
    time.sleep(AFTER_SETTLED)
    c.hold()
    # Idle: what an instance costs with no event (claims' rounds, the bus's polls).
    idle0 = {k: proc_cpu(c.pid(k)) or 0.0 for k in running}
    t0 = time.monotonic()
    time.sleep(s["idle"])
    idle_s = time.monotonic() - t0
    idle = {k: ((proc_cpu(c.pid(k)) or 0.0) - idle0[k]) / idle_s for k in running}
    c.load(talk=talk)
    time.sleep(WARM_LOAD)
    usage = Usage(lambda: pids(c))

    def snap() -> Tuple[float, Dict[int, Tuple[float, float]], Dict[str, Any]]:
        inst = {k: (events_taken(c.metrics(k)), proc_cpu(c.pid(k)) or 0.0) for k in running}
        return time.monotonic(), inst, c.nodes_status()

    usage.start()
    t0, first, nodes0 = snap()
    time.sleep(s["seconds"])
    t1, last, nodes1 = snap()
    machine = usage.stop()
    held = c.hold()
    wall = t1 - t0
    per = []
    for k in running:
        events = last[k][0] - first[k][0]
        cpu = last[k][1] - first[k][1]
        net = cpu - idle[k] * wall
        per.append(
            {
                "instance": c.names[k],
                "nodes": sum(1 for o in owners.values() if o == c.names[k]),
                "events": int(events),
                "events_per_s": events / wall,
                "cpu_s": cpu,
                "cpu_pct": 100.0 * cpu / wall,
                "idle_cpu_pct": 100.0 * idle[k],
                "us_per_event": 1e6 * cpu / events if events else None,
                "net_us_per_event": 1e6 * net / events if events else None,
            }
        )
    emitted = None
    if nodes0.get("t") and nodes1.get("t") and nodes1["t"] > nodes0["t"]:
        emitted = (nodes1["emitted"] - nodes0["emitted"]) / (nodes1["t"] - nodes0["t"])
    total = sum(p["events"] for p in per)
    phase = {
        "instances": len(running),
        "talk": talk,
        "control": control,
        "seconds": wall,
        "idle_seconds": idle_s,
        "per_instance": per,
        "total_events": total,
        "total_per_s": total / wall,
        "nodes_emitted_per_s": emitted,
        "nodes_held": (nodes1.get("held") or {}).get("talk", 0)
        - (nodes0.get("held") or {}).get("talk", 0),
        "drained_after": held.get("drained"),
        "machine": machine,
    }
    out.write(
        "  %s: %s events/s taken in all, %s\n"
        % (phase_label(phase), _fmt(phase["total_per_s"]), machine_line(machine))
    )
    out.flush()
    return phase


def part_intake(c: Any, s: Dict[str, Any], out: TextIO) -> Dict[str, Any]:
    phases = []
    for k in range(INSTANCES):
        c.start(k)
        phases.append(intake_phase(c, s, out, s["talk"]))
        if k == 0:
            # The control: one instance taking what each takes with all of them running, to
            # tell a cost of the cluster from a cost of taking fewer events per second.
            phases.append(intake_phase(c, s, out, s["talk"] / INSTANCES, control=True))
    return {"phases": phases}


def phase_label(phase: Dict[str, Any]) -> str:
    n = phase["instances"]
    return "%d instance%s%s" % (
        n,
        "" if n == 1 else "s",
        " at 1/%d rate" % INSTANCES if phase.get("control") else "",
    )


def owner_and_non_owner(
    c: Any, token: str, owner: int, other: int, step: Step, per_route: int, block: int
) -> Dict[str, Any]:
    """``alternate`` on two routes, instance ``owner`` and instance ``other`` (one keep-alive
    connection each), with the machine's usage over the whole run."""
    routes = {
        "owner": KeepAlive(c.port(owner), token),
        "non_owner": KeepAlive(c.port(other), token),
    }
    usage = Usage(lambda: pids(c))
    usage.start()
    try:
        r = alternate(routes, step, per_route, block)
    finally:
        for client in routes.values():
            client.close()
    r["machine"] = usage.stop()
    return r


def part_get(c: Any, s: Dict[str, Any], token: str, cid: str, owner: int, other: int):
    path = c.conference_path(cid)

    def step(client: KeepAlive, i: int) -> Tuple[float, Optional[str]]:
        dt, status, raw = client.call("GET", path)
        if status != 200:
            return dt, "HTTP %d %s" % (status, raw[:200].decode(errors="replace"))
        got = json.loads(raw)["data"].get("_read_only", {}).get("participants") or []
        if len(got) != MEMBERS:
            return dt, "%d participants instead of %d" % (len(got), MEMBERS)
        return dt, None

    return owner_and_non_owner(c, token, owner, other, step, s["requests"], GET_BLOCK)


def part_action(c: Any, s: Dict[str, Any], token: str, cid: str, owner: int, other: int):
    path = c.conference_path(cid, "/participants/%d" % c.moderators[cid])

    def step(client: KeepAlive, i: int) -> Tuple[float, Optional[str]]:
        action = "mute" if i % 2 == 0 else "unmute"
        dt, status, raw = client.call("PUT", path, {"data": {"action": action}})
        if status != 202:
            return dt, "%s: HTTP %d %s" % (action, status, raw[:200].decode(errors="replace"))
        return dt, None

    return owner_and_non_owner(c, token, owner, other, step, s["actions"], ACTION_BLOCK)


class HealthPoller(threading.Thread):
    """Polls one survivor's /v2/health every POLL_EVERY until ``done`` (or ``limit``); notes
    when a poll's answer first showed the lost nodes owned, and owned + resynced."""

    def __init__(
        self, port: int, check: Callable[[Dict[str, Any]], Tuple[bool, bool]], limit: float
    ) -> None:
        super().__init__(name="failover-poll-%d" % port, daemon=True)
        self.client = KeepAlive(port)
        self.check = check
        self.limit = limit
        self.done = threading.Event()
        self.owned_at: Optional[float] = None
        self.done_at: Optional[float] = None
        self.polls = 0
        self.last: Optional[Dict[str, Any]] = None

    def run(self) -> None:
        try:
            while not self.done.is_set() and time.monotonic() < self.limit:
                t = time.monotonic()
                try:
                    _, _, raw = self.client.call("GET", "/v2/health")
                    data = json.loads(raw).get("data") or {}
                except (OSError, http.client.HTTPException, ValueError):
                    data = None
                now = time.monotonic()
                if data is not None:
                    self.polls += 1
                    owned, done = self.check(data)
                    if owned and self.owned_at is None:
                        self.owned_at = now
                    if done:
                        self.done_at, self.last = now, data
                        return
                time.sleep(max(0.0, POLL_EVERY - (time.monotonic() - t)))
        finally:
            self.client.close()


def failover_round(c: Any, r: int, usage: Usage) -> Dict[str, Any]:
    owners = wait_even(c)
    victim = r % INSTANCES
    name = c.names[victim]
    lost = sorted(n for n, o in owners.items() if o == name)
    survivors = [k for k in c.running() if k != victim]
    survivor_names = [c.names[k] for k in survivors]
    truth = node_truth(c.dump())

    def check(data: Dict[str, Any]) -> Tuple[bool, bool]:
        return failover_state(data, lost, survivor_names, truth)

    usage.sample()  # the victim's CPU so far
    at = c.kill(victim)
    limit = at + FAILOVER_LIMIT
    pollers = [HealthPoller(c.port(k), check, limit) for k in survivors]
    for p in pollers:
        p.start()
    while time.monotonic() < limit and not any(p.done_at for p in pollers):
        time.sleep(POLL_EVERY / 2)
    for p in pollers:
        p.done.set()
    for p in pollers:
        p.join(REQUEST_TIMEOUT * 2)
    done = [p.done_at for p in pollers if p.done_at is not None]
    owned = [p.owned_at for p in pollers if p.owned_at is not None]
    result: Dict[str, Any] = {
        "round": r + 1,
        "killed": name,
        "nodes": lost,
        "owned_s": min(owned) - at if owned else None,
        "resynced_s": min(done) - at if done else None,
        "polls": sum(p.polls for p in pollers),
    }
    winner = next((p for p in pollers if p.done_at == min(done)), None) if done else None
    if winner is not None and winner.last is not None:
        result["taken_by"] = {
            n["name"]: n.get("owner") for n in winner.last.get("nodes", []) if n.get("name") in lost
        }
    c.restart(victim)
    return result


def part_failover(c: Any, s: Dict[str, Any], out: TextIO) -> Dict[str, Any]:
    usage = Usage(lambda: pids(c))
    usage.start()
    rounds = []
    for r in range(s["kills"]):
        rounds.append(failover_round(c, r, usage))
        x = rounds[-1]
        out.write(
            "  kill %d/%d: %s (%s) -> resynced elsewhere in %s s\n"
            % (
                r + 1,
                s["kills"],
                x["killed"],
                ",".join(x["nodes"]),
                _fmt(x["resynced_s"], "{:.3f}"),
            )
        )
        out.flush()
    wait_even(c)
    times = sorted(x["resynced_s"] for x in rounds if x["resynced_s"] is not None)
    owned = sorted(x["owned_s"] for x in rounds if x["owned_s"] is not None)
    result: Dict[str, Any] = {
        "rounds": rounds,
        "failed": sum(1 for x in rounds if x["resynced_s"] is None),
        "machine": usage.stop(),
    }
    if times:
        result.update(p50_s=percentile(times, 50), p99_s=percentile(times, 99), max_s=times[-1])
    if owned:
        result.update(owned_p50_s=percentile(owned, 50), owned_max_s=owned[-1])
    return result


# =============================================================================================
# The run
# =============================================================================================


def run(args: argparse.Namespace, out: TextIO) -> Dict[str, Any]:
    from confd_tests.cluster.harness import Cluster

    s = _settings(args)
    out.write(
        "confd cluster benchmark: %d instances, %d fake nodes, %d conferences of %d participants,\n"
        "real PostgreSQL and RabbitMQ on loopback, claim_interval %.1f s; %d CPU core(s) shared by "
        "everything\n"
        % (INSTANCES, NODES, CONFERENCES, MEMBERS, s["claim_interval"], os.cpu_count() or 0)
    )
    out.flush()
    results: Dict[str, Any] = {
        "settings": dict(s, cpus=os.cpu_count(), instances=INSTANCES, nodes=NODES),
        "loadavg_before": os.getloadavg()[0],
    }
    old_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    t_start = time.monotonic()
    try:
        with Cluster(
            instances=INSTANCES,
            nodes=NODES,
            conferences=CONFERENCES,
            members=MEMBERS,
            claim_interval=s["claim_interval"],
            start=False,
            seed=args.seed,
        ) as c:
            out.write(
                "4. intake, %.0f talking toggles/s from the nodes, %.0f s per window:\n"
                % (s["talk"], s["seconds"])
            )
            out.flush()
            results["intake"] = part_intake(c, s, out)
            owners = wait_even(c)
            token = c.token(0)
            cid = sorted(c.conferences)[0]
            node = c.conferences[cid]
            owner = c.index(owners[node])
            other = next(k for k in c.running() if k != owner)
            where = {
                "conference": cid,
                "node": node,
                "owner_instance": c.names[owner],
                "non_owner_instance": c.names[other],
            }
            out.write(
                "1. GET %s (node %s) via %s and %s ...\n"
                % (cid, node, where["owner_instance"], where["non_owner_instance"])
            )
            out.flush()
            results["get"] = dict(part_get(c, s, token, cid, owner, other), **where)
            out.write(
                "2. mute/unmute of its moderator via %s and %s ...\n"
                % (where["owner_instance"], where["non_owner_instance"])
            )
            out.flush()
            results["action"] = dict(part_action(c, s, token, cid, owner, other), **where)
            out.write("3. failover, %d SIGKILLs of an owner:\n" % s["kills"])
            out.flush()
            results["failover"] = part_failover(c, s, out)
        results["status"] = "ok"
    except KeyboardInterrupt:
        results["status"] = "failed: interrupted"
        out.write("FAILED: interrupted\n")
    except (
        AssertionError,
        BenchBroken,
        OSError,
        ValueError,
        KeyError,
        http.client.HTTPException,
    ) as exc:
        # ClusterFailed is an AssertionError; its text ends with the instances' log tails.
        results["status"] = "failed: %s: %s" % (type(exc).__name__, str(exc)[:4000])
        out.write("FAILED: %s: %s\n" % (type(exc).__name__, exc))
    finally:
        signal.signal(signal.SIGTERM, old_term)
    results["seconds"] = time.monotonic() - t_start
    results["loadavg_after"] = os.getloadavg()[0]
    _summarise(results, s, out)
    return results


# =============================================================================================
# The figures
# =============================================================================================


def _route_rows(r: Dict[str, Any]) -> List[List[str]]:
    rows = []
    for route, label in (("owner", "owner (%s)"), ("non_owner", "non-owner (%s)")):
        x = r.get(route) or {}
        rows.append(
            [
                label % r.get(route + "_instance", "?"),
                _fmt(x.get("count")),
                _fmt(x.get("p50_ms"), "{:.2f}"),
                _fmt(x.get("p99_ms"), "{:.2f}"),
                _fmt(x.get("max_ms"), "{:.1f}"),
                _fmt(x.get("errors")),
            ]
        )
    return rows


def _route_note(r: Dict[str, Any]) -> str:
    notes = [
        "%s: first error: %s" % (k, r[k]["first_error"])
        for k in ("owner", "non_owner")
        if (r.get(k) or {}).get("first_error")
    ]
    return "".join("  %s\n" % n for n in notes)


def _summarise(results: Dict[str, Any], s: Dict[str, Any], out: TextIO) -> None:
    headers = ["via", "requests", "p50 ms", "p99 ms", "max ms", "errors"]
    get = results.get("get")
    if get:
        out.write(
            "\n1. GET of a %d-participant conference (%s, node %s), sequential keep-alive client,\n"
            "   alternating blocks of %d; nodes quiet\n"
            % (MEMBERS, get["conference"], get["node"], GET_BLOCK)
        )
        out.write(table(headers, _route_rows(get), right=range(1, 6)) + "\n")
        out.write(_route_note(get))
        out.write(
            "goal: non-owner p99 within %.0fx of the owner's and under %.0f ms\n"
            % (GOAL_GET_RATIO, GOAL_GET_P99_MS)
        )
        out.write(machine_line(get.get("machine")) + "\n")
    action = results.get("action")
    if action:
        out.write(
            "\n2. PUT .../participants/<moderator> mute/unmute (alternating), answer 202 once the\n"
            "   node answered; alternating blocks of %d\n" % ACTION_BLOCK
        )
        out.write(
            table(["via", "actions"] + headers[2:], _route_rows(action), right=range(1, 6)) + "\n"
        )
        out.write(_route_note(action))
        out.write(machine_line(action.get("machine")) + "\n")
    fo = results.get("failover")
    if fo:
        out.write(
            "\n3. Failover: SIGKILL of an owner -> its nodes owned, connected and resynced (the\n"
            "   node's own participant counts) on a survivor, seen by polling /v2/health every\n"
            "   %.0f ms; the killed instance restarted and the spread settled between rounds\n"
            % (POLL_EVERY * 1000)
        )
        out.write(
            table(
                [
                    "kills",
                    "resynced p50 s",
                    "p99 s",
                    "max s",
                    "owned p50 s",
                    "owned max s",
                    "failed",
                ],
                [
                    [
                        str(len(fo["rounds"])),
                        _fmt(fo.get("p50_s"), "{:.3f}"),
                        _fmt(fo.get("p99_s"), "{:.3f}"),
                        _fmt(fo.get("max_s"), "{:.3f}"),
                        _fmt(fo.get("owned_p50_s"), "{:.3f}"),
                        _fmt(fo.get("owned_max_s"), "{:.3f}"),
                        str(fo["failed"]),
                    ]
                ],
                right=range(7),
            )
            + "\n"
        )
        out.write(
            "(owned: a survivor's health first named a survivor as the owner of every lost\n"
            " node; resynced: ... and connected with the node's counts.  claim_interval %.1f s\n"
            " bounds the wait for the next claim round.)\n" % s["claim_interval"]
        )
        out.write("goal: p99 < %.0f s\n" % GOAL_FAILOVER_P99_S)
        out.write(machine_line(fo.get("machine")) + "\n")
    intake = results.get("intake")
    if intake:
        out.write(
            "\n4. Intake per instance as instances are added: %d nodes, %.0f talking toggles/s\n"
            "   asked, %.0f s windows (idle CPU measured over %.0f s just before, load paused)\n"
            % (NODES, s["talk"], s["seconds"], s["idle"])
        )
        rows = []
        for ph in intake["phases"]:
            for p in ph["per_instance"]:
                rows.append(
                    [
                        phase_label(ph),
                        p["instance"],
                        str(p["nodes"]),
                        _fmt(p["events_per_s"]),
                        _fmt(p["cpu_s"], "{:.2f}"),
                        _fmt(p["cpu_pct"], "{:.1f}"),
                        _fmt(p["idle_cpu_pct"], "{:.1f}"),
                        _fmt(p["us_per_event"]),
                        _fmt(p["net_us_per_event"]),
                    ]
                )
        out.write(
            table(
                [
                    "run",
                    "instance",
                    "nodes",
                    "events/s",
                    "CPU s",
                    "CPU %",
                    "idle CPU %",
                    "us/event",
                    "net us/event",
                ],
                rows,
                right=(2, 3, 4, 5, 6, 7, 8),
            )
            + "\n"
        )
        rows = []
        for ph in intake["phases"]:
            m = ph["machine"]
            rows.append(
                [
                    phase_label(ph),
                    _fmt(ph["total_per_s"]),
                    _fmt(ph["nodes_emitted_per_s"]),
                    _fmt(ph["nodes_held"]),
                    _fmt(mean_net(ph)),
                    "%.2f" % m["busy_cores"],
                    "%.2f" % m["bench_cores"],
                    "%.2f" % m["other_cores"],
                    "%.2f" % m["loadavg_1m"],
                ]
            )
        out.write("\ncluster totals\n")
        out.write(
            table(
                [
                    "run",
                    "events/s taken",
                    "events/s made",
                    "steps held",
                    "mean net us/event",
                    "busy cores",
                    "bench cores",
                    "other cores",
                    "load 1m",
                ],
                rows,
                right=range(1, 9),
            )
            + "\n"
        )
        out.write(
            "(us/event: the instance's CPU over the window per event it took in; net: less its\n"
            " idle CPU rate over the same time.  events/s made: the nodes' own count; steps held:\n"
            " talking steps the nodes skipped because an instance read slower than they wrote.)\n"
        )
    results["goals"] = _goals(results)
    rows = [
        [g["label"], g["target"], g["measured"], _verdict(g["pass"])]
        for g in results["goals"].values()
    ]
    out.write("\nGoals\n")
    out.write(table(["goal", "target", "measured", "verdict"], rows) + "\n")
    out.write(
        "run: %.0f s, 1-min load average %.2f before, %.2f after; status %s\n"
        % (
            results["seconds"],
            results["loadavg_before"],
            results["loadavg_after"],
            results.get("status", "-").split("\n")[0][:200],
        )
    )
    out.flush()


def mean_net(phase: Dict[str, Any]) -> Optional[float]:
    """The instances' net CPU per event, weighted by their events."""
    events = sum(p["events"] for p in phase["per_instance"])
    if not events:
        return None
    net = sum((p["net_us_per_event"] or 0.0) * p["events"] for p in phase["per_instance"])
    return net / events


def _goals(results: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    goals: Dict[str, Dict[str, Any]] = {}
    get = results.get("get") or {}
    o, n = (get.get("owner") or {}).get("p99_ms"), (get.get("non_owner") or {}).get("p99_ms")
    goals["get_p99"] = {
        "label": "GET p99 via a non-owner",
        "target": "<= %.0fx owner's and < %.0f ms" % (GOAL_GET_RATIO, GOAL_GET_P99_MS),
        "measured": "%.2f ms vs owner %.2f ms (%.2fx)" % (n, o, n / o) if o and n else "-",
        "pass": (n <= GOAL_GET_RATIO * o and n < GOAL_GET_P99_MS) if o and n else None,
    }
    fo = results.get("failover") or {}
    p99 = fo.get("p99_s")
    goals["failover_p99"] = {
        "label": "failover after SIGKILL, p99",
        "target": "< %.0f s, every round resynced" % GOAL_FAILOVER_P99_S,
        "measured": "%.3f s over %d kills, %d failed" % (p99, len(fo["rounds"]), fo["failed"])
        if p99 is not None
        else "-",
        "pass": (p99 < GOAL_FAILOVER_P99_S and not fo["failed"]) if p99 is not None else None,
    }
    phases = (results.get("intake") or {}).get("phases") or []
    nets = [mean_net(ph) for ph in phases if not ph.get("control")]
    control = next((mean_net(ph) for ph in phases if ph.get("control")), None)
    if len(nets) == INSTANCES and all(x for x in nets):
        worst = max(x / nets[0] for x in nets[1:])
        measured = "net us/event " + " / ".join("%.0f" % x for x in nets) + " (worst %.2fx)" % worst
        ok: Optional[bool] = worst <= GOAL_FLAT
    else:
        measured, ok = "-", None
    goals["intake_flat"] = {
        "label": "per-instance cost per event, 1/2/3 instances",
        "target": "flat: 2 and 3 within %.1fx of 1" % GOAL_FLAT,
        "measured": measured,
        "pass": ok,
    }
    if control and len(nets) == INSTANCES and nets[-1]:
        ratio = nets[-1] / control
        measured, ok = "%.0f vs %.0f net us/event (%.2fx)" % (nets[-1], control, ratio), None
        ok = ratio <= GOAL_FLAT
    else:
        measured, ok = "-", None
    goals["intake_flat_same_rate"] = {
        "label": "... %d instances vs 1 at the same events/s each" % INSTANCES,
        "target": "within %.1fx" % GOAL_FLAT,
        "measured": measured,
        "pass": ok,
    }
    return goals

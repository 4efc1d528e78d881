"""``python -m confd_tests.bench intake``: how fast events get from the socket into live state.

One stream of realistic ``conference::maintenance`` frames (``feeder.build_stream``) is measured
four ways, each in its own process so CPU time and RSS are the engine's alone:

* ``parser``: ``FrameParser.feed`` over the bytes in 64 KiB pieces, in process (the ceiling);
* ``parser+parse_event``: the same plus ``parse_event`` on every frame;
* ``confd``: a real ``NodeSupervisor`` connected over loopback to the feeder (another process),
  from the first stream byte sent until ``node.events_in`` reaches the count;
* ``greenswitch``: greenswitch 0.0.19's ``InboundESL`` with a handler that counts events.

Then the api round trip of confd's command connection, and of greenswitch's ``send('api ...')``
on its one connection, while the feeder paces events at 5,000/s into the same client.

Each measured child runs ``python -m confd_tests.bench.intake child ENGINE ...`` and ends with a
``RESULT {json}`` line.  A native watch thread in the child samples VmRSS, notices the end of
the burst and enforces the deadline even when a greenlet never yields (greenswitch's reader
does not, while data is buffered), so every step is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

from confd_tests.bench import REPO_ROOT, percentile, settings, table

DESCRIPTION = "event intake: confd vs greenswitch vs framing alone, RSS, api latency under load"

FRAMING_ENGINES = ("parser", "parser+parse_event")
SOCKET_ENGINES = ("confd", "greenswitch")
ENGINE_LABELS = {
    "parser": "framing: FrameParser.feed only",
    "parser+parse_event": "framing: FrameParser.feed + parse_event",
    "confd": "confd: NodeSupervisor -> LiveState",
    "greenswitch": "greenswitch 0.0.19 InboundESL, counting",
}
PIECE = 64 * 1024  # the in-process framing measure feeds this much at a time, like one recv
WATCH_TICK = 0.005  # seconds between the watch thread's looks at the event count
RSS_EVERY = 4  # ... and one VmRSS sample every this many looks
API_CALL_TIMEOUT = 5.0
GRACE = 10.0  # seconds the watch thread waits for the main greenlet to report, then reports

# Targets printed next to the figures.
TARGET_RATIO = 2.0
TARGET_RATE = 20000.0
TARGET_RSS_MB = 100.0
TARGET_P99_MS = 10.0

DEFAULTS = {
    "events": 100000,
    "api_rate": 5000.0,
    "api_seconds": 10.0,
    "api_calls": 2000,
    "timeout": 60.0,
}
QUICK = {
    "events": 3000,
    "api_rate": 5000.0,
    "api_seconds": 1.0,
    "api_calls": 100,
    "timeout": 30.0,
}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--events", type=int, help="events in the burst (default 100000)")
    ap.add_argument("--quick", action="store_true", help="small numbers, for the smoke test")
    ap.add_argument("--seed", type=int, default=1, help="seed of the generated stream")
    ap.add_argument("--api-rate", type=float, help="events/s during the api measure (5000)")
    ap.add_argument("--api-seconds", type=float, help="length of the api measure (10)")
    ap.add_argument("--api-calls", type=int, help="api round trips per engine (2000)")
    ap.add_argument("--timeout", type=float, help="bound of one measured step, seconds (60)")
    ap.add_argument(
        "--rss-cap-mb", type=float, default=6144.0, help="abort a child whose RSS passes this"
    )
    ap.add_argument(
        "--engines",
        default="parser,parser+parse_event,confd,greenswitch",
        help="comma-separated subset of the engines to run",
    )


# =============================================================================================
# Child side: one engine, one process.
# =============================================================================================


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def _status_mb(field: bytes) -> float:
    with open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    return 0.0


def _vmrss_mb() -> float:
    return _status_mb(b"VmRSS:")


def _vmhwm_mb() -> float:
    """The kernel's peak RSS of this process image.  ``ru_maxrss`` is not used for the figure:
    Linux keeps it across execve, so a child reports at least its parent's size at fork."""
    return _status_mb(b"VmHWM:")


class _Reporter:
    """Writes the child's one RESULT line, once, from whichever thread gets there first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.written = threading.Event()

    def emit(self, result: Dict[str, Any]) -> None:
        with self._lock:
            if self.written.is_set():
                return
            # The parent reads this line from our stdout: it is the child's protocol.
            sys.stdout.write("RESULT " + json.dumps(result) + "\n")
            sys.stdout.flush()
            self.written.set()


class Watch(threading.Thread):
    """A native thread (not a greenlet): it runs even while the gevent hub is starved."""

    def __init__(
        self,
        count: Callable[[], int],
        target: int,
        deadline: float,
        rss_cap_mb: float,
        failed: Callable[[], Optional[str]] = lambda: None,
    ) -> None:
        super().__init__(daemon=True)
        self.count = count
        self.target = target
        self.deadline = deadline
        self.rss_cap_mb = rss_cap_mb
        self.failed = failed
        self.stop_flag = threading.Event()
        self.done = threading.Event()
        self.reason: Optional[str] = None
        self.t_end: Optional[float] = None
        self.cpu_end: Optional[float] = None
        self.seen = 0
        self.peak_rss_mb = _vmrss_mb()
        self.started = time.monotonic()

    def run(self) -> None:
        limit = self.started + self.deadline
        looks = 0
        while True:
            n = self.count()
            now = time.monotonic()
            if self.target and n >= self.target:
                self.t_end, self.cpu_end = now, _cpu()
                break
            looks += 1
            if looks % RSS_EVERY == 0:
                rss = _vmrss_mb()
                self.peak_rss_mb = max(self.peak_rss_mb, rss)
                if rss > self.rss_cap_mb:
                    self.reason = "aborted: RSS %.0f MB over the %.0f MB cap after %d events" % (
                        rss,
                        self.rss_cap_mb,
                        n,
                    )
                    break
            failure = self.failed()
            if failure:
                self.reason = "%s (after %d events)" % (failure, n)
                break
            if now > limit:
                self.reason = "timeout after %.0f s (%d events)" % (self.deadline, n)
                break
            if self.stop_flag.wait(WATCH_TICK):
                break
        self.seen = n
        self.t_end = self.t_end or now
        self.cpu_end = self.cpu_end or _cpu()
        self.peak_rss_mb = max(self.peak_rss_mb, _vmrss_mb())
        self.done.set()


def _wait_done(watch: Watch) -> None:
    import gevent

    while not watch.done.is_set():
        gevent.sleep(0.02)


def _burst_result(engine: str, watch: Watch, cpu0: float, t0: float, base_rss: float) -> dict:
    return {
        "engine": engine,
        "status": watch.reason or "ok",
        "events": watch.seen,
        "t_start": t0,
        "t_end": watch.t_end,
        "cpu_s": watch.cpu_end - cpu0,
        "peak_rss_mb": watch.peak_rss_mb,
        "hwm_mb": _vmhwm_mb(),
        "ru_maxrss_mb": _maxrss_mb(),
        "base_rss_mb": base_rss,
    }


def _fallback(reporter: _Reporter, watch: Watch, make: Callable[[], dict]) -> None:
    """If the main greenlet cannot report (its hub is starved), the watch side does, then
    ends the process."""

    def run() -> None:
        watch.done.wait()
        if not reporter.written.wait(GRACE):
            result = make()
            result["note"] = "reported by the watch thread: the main greenlet was starved"
            reporter.emit(result)
            os._exit(0)

    threading.Thread(target=run, daemon=True).start()


def _confd_node(port: int):
    from confd.conferences.commands import RELAXED_NAME_PATTERN, CommandBuilder
    from confd.conferences.state import LiveState
    from confd.esl.node import NodeSettings, NodeSupervisor
    from confd_tests.bench.feeder import PASSWORD

    node_settings = NodeSettings(
        name="bench",
        host="127.0.0.1",
        port=port,
        password=PASSWORD,
        command_timeout=API_CALL_TIMEOUT,
        heartbeat_timeout=120.0,
        reconnect_min=30.0,  # a lost connection is a failure here, not something to retry
    )
    builder = CommandBuilder(RELAXED_NAME_PATTERN)
    node = NodeSupervisor(node_settings, LiveState(), builder)
    return node, builder


def _confd_failed(node) -> Callable[[], Optional[str]]:
    def failed() -> Optional[str]:
        if node.connects and not node.connected:
            return "disconnected: %s" % node.error
        return None

    return failed


def _greenswitch_client(port: int):
    from greenswitch.esl import InboundESL

    from confd_tests.bench.feeder import PASSWORD

    client = InboundESL("127.0.0.1", port, PASSWORD, timeout=5)
    counter = [0]

    def count_event(event) -> None:
        counter[0] += 1

    # 0.0.19 dispatches a CUSTOM event by its Event-Subclass ('*' only when nothing matched).
    client.register_handle("conference::maintenance", count_event)
    return client, counter


def _greenswitch_failed(client) -> Callable[[], Optional[str]]:
    def failed() -> Optional[str]:
        for name in ("_receive_events_greenlet", "_process_events_greenlet"):
            g = getattr(client, name, None)
            if g is not None and g.dead and g.exception is not None:
                return "crashed: %s in %s" % (type(g.exception).__name__, name.strip("_"))
        return None

    return failed


def _greenswitch_start(client) -> None:
    import gevent

    with gevent.Timeout(API_CALL_TIMEOUT):
        client.connect()
        client.send("event plain CUSTOM conference::maintenance")
        client.send("api conference json_list")  # the feeder streams after this reply


def child_burst(engine: str, a: argparse.Namespace) -> None:
    reporter = _Reporter()
    base_rss = _vmrss_mb()
    if engine == "confd":
        node, _ = _confd_node(a.port)
        count, failed = (lambda: node.events_in), _confd_failed(node)
    else:
        client, counter = _greenswitch_client(a.port)
        count, failed = (lambda: counter[0]), _greenswitch_failed(client)
    cpu0, t0 = _cpu(), time.monotonic()
    watch = Watch(count, a.events, a.deadline, a.rss_cap_mb, failed)
    _fallback(reporter, watch, lambda: _burst_result(engine, watch, cpu0, t0, base_rss))
    watch.start()
    if engine == "confd":
        node.start()
    else:
        try:
            _greenswitch_start(client)
        except BaseException as exc:  # noqa: BLE001 - reported as the figure
            watch.reason = "failed to start: %s" % (type(exc).__name__,)
            watch.stop_flag.set()
    _wait_done(watch)
    result = _burst_result(engine, watch, cpu0, t0, base_rss)
    if engine == "confd":
        result["conferences"], result["members"] = node._state.counts("bench")
    reporter.emit(result)
    os._exit(0)


def child_api(engine: str, a: argparse.Namespace) -> None:
    import gevent

    reporter = _Reporter()
    if engine == "confd":
        from confd.esl.connection import EslError

        node, builder = _confd_node(a.port)
        count, failed = (lambda: node.events_in), _confd_failed(node)
        command = builder.json_list()

        def call() -> str:
            return node.api(command, timeout=API_CALL_TIMEOUT)

        errors: Tuple[type, ...] = (EslError, gevent.Timeout)
    else:
        client, counter = _greenswitch_client(a.port)
        count, failed = (lambda: counter[0]), _greenswitch_failed(client)

        def call() -> str:
            with gevent.Timeout(API_CALL_TIMEOUT):
                return client.send("api conference json_list").data

        errors = (Exception, gevent.Timeout)
    watch = Watch(count, 0, a.api_seconds * 3 + 30, a.rss_cap_mb, failed)
    latencies: List[float] = []
    status = {"status": "ok", "mismatched": 0}
    span = {"events": 0, "seconds": 0.0}

    def make() -> dict:
        return {
            "engine": engine,
            "status": watch.reason or status["status"],
            "latencies_ms": [x * 1000 for x in latencies],
            "mismatched": status["mismatched"],
            "events_during": span["events"] or count(),
            "seconds": span["seconds"] or (time.monotonic() - watch.started),
        }

    _fallback(reporter, watch, make)
    watch.start()
    try:
        if engine == "confd":
            node.start()
            with gevent.Timeout(API_CALL_TIMEOUT):
                while not node.connected:
                    gevent.sleep(0.005)
        else:
            _greenswitch_start(client)
        # Let the flow settle to its pace before measuring.
        gevent.sleep(min(0.5, a.api_seconds / 10))
        n0, t0 = count(), time.monotonic()
        interval = a.api_seconds / a.api_calls
        start = time.perf_counter()
        for i in range(a.api_calls):
            if watch.done.is_set():
                break
            t = time.perf_counter()
            try:
                reply = call()
            except errors as exc:
                status["status"] = "call %d failed: %s %s" % (i + 1, type(exc).__name__, exc)
                break
            latencies.append(time.perf_counter() - t)
            if reply.strip() != "[]":
                status["mismatched"] += 1
            delay = start + (i + 1) * interval - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
        span["events"], span["seconds"] = count() - n0, time.monotonic() - t0
    except BaseException as exc:  # noqa: BLE001 - reported as the figure
        status["status"] = "failed: %s %s" % (type(exc).__name__, exc)
    watch.stop_flag.set()
    _wait_done(watch)
    reporter.emit(make())
    os._exit(0)


def child_framing(engine: str, a: argparse.Namespace) -> None:
    from confd.esl import protocol as p
    from confd_tests.bench.feeder import load_stream

    data, ends = load_stream(a.stream)
    data = data[: ends[a.events - 1]]
    base_rss = _vmrss_mb()
    parse = engine == "parser+parse_event"
    parser = p.FrameParser()
    parse_event = p.parse_event
    n = 0
    cpu0, t0 = _cpu(), time.monotonic()
    for off in range(0, len(data), PIECE):
        frames = parser.feed(data[off : off + PIECE])
        if parse:
            for frame in frames:
                parse_event(frame)
        n += len(frames)
    t1, cpu1 = time.monotonic(), _cpu()
    _Reporter().emit(
        {
            "engine": engine,
            "status": "ok" if n == a.events else "parsed %d frames of %d" % (n, a.events),
            "events": n,
            "t_start": t0,
            "t_end": t1,
            "cpu_s": cpu1 - cpu0,
            "peak_rss_mb": _vmrss_mb(),
            "hwm_mb": _vmhwm_mb(),
            "ru_maxrss_mb": _maxrss_mb(),
            "base_rss_mb": base_rss,
        }
    )
    os._exit(0)


def child_main(argv: List[str]) -> int:
    import logging

    ap = argparse.ArgumentParser(prog="confd_tests.bench.intake child")
    ap.add_argument("engine", choices=FRAMING_ENGINES + SOCKET_ENGINES)
    ap.add_argument("--mode", choices=("burst", "api"), default="burst")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--stream", type=Path)
    ap.add_argument("--events", type=int, default=0)
    ap.add_argument("--deadline", type=float, default=60.0)
    ap.add_argument("--rss-cap-mb", type=float, default=6144.0)
    ap.add_argument("--api-seconds", type=float, default=10.0)
    ap.add_argument("--api-calls", type=int, default=2000)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if a.engine in FRAMING_ENGINES:
        child_framing(a.engine, a)
    elif a.mode == "burst":
        child_burst(a.engine, a)
    else:
        child_api(a.engine, a)
    return 0


# =============================================================================================
# Parent side: build the stream, start feeders and children, print the figures.
# =============================================================================================


class _Lines(threading.Thread):
    """Collects a child's stdout lines so the parent can wait for one with a timeout."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: queue.Queue[str] = queue.Queue()

    def run(self) -> None:
        for line in self.stream:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float) -> Optional[str]:
        limit = time.monotonic() + timeout
        while True:
            left = limit - time.monotonic()
            if left <= 0:
                return None
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return None
            if line.startswith(prefix):
                return line[len(prefix) :].strip()


def _python(module: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=str(REPO_ROOT),
        stdout=subprocess.PIPE,
        text=True,
        **kw,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _run_child(args: List[str], timeout: float, log: Path) -> Dict[str, Any]:
    with open(log, "w") as err:
        proc = _python("confd_tests.bench.intake", "child", *args, stderr=err)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return {"status": "timeout after %.0f s (child killed)" % timeout}
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = log.read_text().strip().splitlines()
    return {"status": "child exited %s: %s" % (proc.returncode, tail[-1] if tail else "")}


def _with_feeder(
    workdir: Path,
    stream: Path,
    feeder_args: List[str],
    child_args: List[str],
    timeout: float,
    tag: str,
) -> Dict[str, Any]:
    with open(workdir / ("feeder-%s.log" % tag), "w") as err:
        feeder = _python(
            "confd_tests.bench.feeder", "--stream", str(stream), *feeder_args, stderr=err
        )
    lines = _Lines(feeder.stdout)
    lines.start()
    try:
        port = lines.wait_for("PORT ", 60)
        if port is None:
            return {"status": "feeder did not start"}
        result = _run_child(
            child_args + ["--port", port], timeout, workdir / ("child-%s.log" % tag)
        )
        first = lines.wait_for("FIRST ", 1)
        if first is not None:
            result["t_first"] = float(first)
        return result
    finally:
        _stop(feeder)


def _finish_burst(r: Dict[str, Any], n: int) -> Dict[str, Any]:
    """Rates from the child's figures: first stream byte (feeder) -> last event counted."""
    out: Dict[str, Any] = {"status": r.get("status", "no result")}
    if r.get("status") != "ok":
        # A partial figure still says something (e.g. how far greenswitch got).
        if r.get("events"):
            out["events_done"] = r["events"]
        for key in ("peak_rss_mb", "hwm_mb"):
            if r.get(key):
                out[key] = round(r[key], 1)
        return out
    t_start = r.get("t_first", r.get("t_start"))
    wall = r["t_end"] - t_start
    out.update(
        events_per_s=n / wall if wall > 0 else 0.0,
        seconds=wall,
        cpu_s=r["cpu_s"],
        cpu_s_per_100k=r["cpu_s"] * 100000.0 / n,
        peak_rss_mb=round(r["peak_rss_mb"], 1),
        hwm_mb=round(r["hwm_mb"], 1),
        ru_maxrss_mb=round(r["ru_maxrss_mb"], 1),
        base_rss_mb=round(r["base_rss_mb"], 1),
    )
    for key in ("conferences", "members"):
        if key in r:
            out[key] = r[key]
    return out


def _finish_api(r: Dict[str, Any]) -> Dict[str, Any]:
    lat = sorted(r.get("latencies_ms") or [])
    out: Dict[str, Any] = {"status": r.get("status", "no result"), "calls": len(lat)}
    if lat:
        out.update(
            p50_ms=percentile(lat, 50),
            p99_ms=percentile(lat, 99),
            max_ms=lat[-1],
            mismatched=r.get("mismatched", 0),
        )
    if r.get("seconds"):
        out["events_per_s_during"] = r.get("events_during", 0) / r["seconds"]
    return out


def _fmt(value: Any, spec: str = "{:,.0f}") -> str:
    return spec.format(value) if isinstance(value, (int, float)) else "-"


def _verdict(ok: Optional[bool]) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def run(args: argparse.Namespace, out: TextIO) -> Dict[str, Any]:
    from confd_tests.bench.feeder import build_stream, save_stream

    s = settings(args, DEFAULTS, QUICK)
    n = int(s["events"])
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    api_count = int(s["api_rate"] * (s["api_seconds"] + 2))
    t = time.monotonic()
    stream = build_stream(max(n, api_count), seed=args.seed)
    built = time.monotonic() - t
    burst_bytes = stream.ends[n - 1]
    mix = ", ".join("%s %d" % kv for kv in sorted(stream.actions.items()))
    out.write(
        "confd intake benchmark: %d events, %.1f MB (%.0f B/event), seed %d, "
        "stream built in %.1f s\n" % (n, burst_bytes / 1e6, burst_bytes / n, args.seed, built)
    )
    out.write("stream (%d events in all): %s\n" % (stream.events, mix))
    out.flush()

    results: Dict[str, Any] = {"events": n, "stream_mb": burst_bytes / 1e6, "intake": {}, "api": {}}
    with tempfile.TemporaryDirectory(prefix="confd-bench-") as tmp:
        workdir = Path(tmp)
        path = workdir / "stream.bin"
        save_stream(stream, path)
        del stream.data
        bound = float(s["timeout"])
        common = [
            "--events",
            str(n),
            "--deadline",
            str(bound),
            "--rss-cap-mb",
            str(args.rss_cap_mb),
        ]
        for engine in engines:
            if engine in FRAMING_ENGINES:
                r = _run_child(
                    [engine, "--stream", str(path)] + common, bound + 30, workdir / "child.log"
                )
            else:
                r = _with_feeder(
                    workdir,
                    path,
                    ["--mode", "blast", "--count", str(n)],
                    [engine, "--mode", "burst"] + common,
                    bound + 30,
                    engine,
                )
            results["intake"][engine] = _finish_burst(r, n)
        api_child = [
            "--mode",
            "api",
            "--api-seconds",
            str(s["api_seconds"]),
            "--api-calls",
            str(s["api_calls"]),
            "--rss-cap-mb",
            str(args.rss_cap_mb),
        ]
        for engine in (e for e in engines if e in SOCKET_ENGINES):
            r = _with_feeder(
                workdir,
                path,
                ["--mode", "paced", "--rate", str(s["api_rate"]), "--count", str(api_count)],
                [engine] + api_child,
                s["api_seconds"] * 3 + 60,
                engine + "-api",
            )
            results["api"][engine] = _finish_api(r)

    _summarise(results, s, stream, out)
    return results


def _summarise(results: Dict[str, Any], s: Dict[str, Any], stream, out: TextIO) -> None:
    intake, api = results["intake"], results["api"]
    n = results["events"]
    rows = []
    for engine, r in intake.items():
        rows.append(
            [
                ENGINE_LABELS.get(engine, engine),
                _fmt(r.get("events_per_s")),
                _fmt(r.get("cpu_s_per_100k"), "{:.2f}"),
                r["status"],
            ]
        )
    out.write("\n1. Intake rate, same %d-event stream, each engine in its own process\n" % n)
    out.write(table(["engine", "events/s", "CPU s/100k", "status"], rows, right=(1, 2)) + "\n")
    out.write(
        "(socket engines: from the feeder's first stream byte to the last event counted, over\n"
        " loopback, feeder in its own process; CPU = getrusage(RUSAGE_SELF) of the client only;\n"
        " greenswitch subscribes with 'event plain': 0.0.19 crashes on 'event json')\n"
    )

    def rate(engine: str) -> Optional[float]:
        return intake.get(engine, {}).get("events_per_s")

    ratios: Dict[str, Optional[float]] = {}
    for key, a, b in (
        ("confd_vs_greenswitch", "confd", "greenswitch"),
        ("confd_vs_framing", "confd", "parser+parse_event"),
        ("confd_vs_parser_only", "confd", "parser"),
    ):
        ra, rb = rate(a), rate(b)
        ratios[key] = ra / rb if ra and rb else None
    results["ratios"] = ratios
    out.write(
        "ratios: confd/greenswitch %s   confd/framing(+parse_event) %s   confd/parser-only %s\n"
        % tuple(_fmt(ratios[k], "{:.2f}x") for k in ratios)
    )
    confd = intake.get("confd", {})
    if "members" in confd:
        out.write(
            "state check: confd holds %d conferences / %d members; the stream leaves %s / %s\n"
            % (
                confd["conferences"],
                confd["members"],
                "%d" % stream.conferences if n == stream.events else "-",
                "%d" % stream.members if n == stream.events else "-",
            )
        )

    rows = []
    for engine in SOCKET_ENGINES:
        if engine in intake:
            r = intake[engine]
            rows.append(
                [
                    ENGINE_LABELS[engine],
                    _fmt(r.get("base_rss_mb"), "{:.1f}"),
                    _fmt(r.get("peak_rss_mb"), "{:.1f}"),
                    _fmt(r.get("hwm_mb"), "{:.1f}"),
                    r["status"],
                ]
            )
    out.write("\n2. Memory during the %d-event burst (MB)\n" % n)
    out.write(
        table(
            ["engine", "RSS before", "peak VmRSS (sampled)", "VmHWM", "status"],
            rows,
            right=(1, 2, 3),
        )
        + "\n"
    )
    out.write(
        "(VmRSS sampled every %.0f ms; VmHWM is the kernel's peak for the child.  ru_maxrss is in\n"
        " the JSON only: Linux carries it over from the parent across fork/exec.)\n"
        % (WATCH_TICK * RSS_EVERY * 1000)
    )

    rows = []
    for engine, r in api.items():
        rows.append(
            [
                ENGINE_LABELS[engine],
                _fmt(r.get("calls")),
                _fmt(r.get("p50_ms"), "{:.2f}"),
                _fmt(r.get("p99_ms"), "{:.2f}"),
                _fmt(r.get("max_ms"), "{:.1f}"),
                _fmt(r.get("events_per_s_during")),
                r["status"],
            ]
        )
    out.write(
        "\n3. api round trip while events flow at %.0f/s for %.0f s into the same client\n"
        % (s["api_rate"], s["api_seconds"])
    )
    out.write(
        table(
            ["engine", "calls", "p50 ms", "p99 ms", "max ms", "events/s seen", "status"],
            rows,
            right=(1, 2, 3, 4, 5),
        )
        + "\n"
    )

    confd_rate = rate("confd")
    ratio = ratios["confd_vs_greenswitch"]
    gs_status = intake.get("greenswitch", {}).get("status")
    if ratio is None and confd_rate and gs_status and gs_status != "ok":
        ratio_ok: Optional[bool] = True  # greenswitch did not finish the burst at all
    else:
        ratio_ok = None if ratio is None else ratio >= TARGET_RATIO
    confd_ok = confd.get("status") == "ok"
    peak = confd.get("peak_rss_mb") if confd_ok else None
    p99 = api.get("confd", {}).get("p99_ms")
    targets = {
        "rate_vs_greenswitch": {
            "target": ">= %.0fx greenswitch" % TARGET_RATIO,
            "value": ratio if ratio is not None else gs_status,
            "pass": ratio_ok,
        },
        "rate": {
            "target": ">= %.0f events/s" % TARGET_RATE,
            "value": confd_rate,
            "pass": (confd_rate >= TARGET_RATE)
            if confd_rate is not None
            else (False if confd.get("status") else None),
        },
        "rss": {
            "target": "< %.0f MB through the burst" % TARGET_RSS_MB,
            "value": peak,
            "pass": None if peak is None else max(peak, confd["hwm_mb"]) < TARGET_RSS_MB,
        },
        "api_p99": {
            "target": "< %.0f ms during the flood" % TARGET_P99_MS,
            "value": p99,
            "pass": None if p99 is None else p99 < TARGET_P99_MS,
        },
    }
    results["targets"] = targets
    out.write("\nTargets (confd)\n")
    rows = []
    for key, label, spec in (
        ("rate_vs_greenswitch", "intake rate vs greenswitch", "{:.2f}x"),
        ("rate", "intake rate", "{:,.0f} events/s"),
        ("rss", "peak RSS during the burst", "{:.1f} MB"),
        ("api_p99", "api p99 during 5,000 events/s", "{:.2f} ms"),
    ):
        t = targets[key]
        value = t["value"]
        rows.append(
            [
                label,
                t["target"],
                value if isinstance(value, str) else _fmt(value, spec),
                _verdict(t["pass"]),
            ]
        )
    out.write(table(["target", "goal", "measured", "verdict"], rows) + "\n")
    out.flush()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        sys.exit(child_main(sys.argv[2:]))
    sys.stderr.write("usage: python -m confd_tests.bench intake [--events N] [--quick]\n")
    sys.exit(2)

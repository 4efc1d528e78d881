"""greenswitch's OutboundESLServer/OutboundSession against confd's own entry transport, on the
same hostile cases.  Each case runs in a child process (a case may hang or spin) with a hard
wall-clock limit, and prints one JSON line of figures:

    python -m confd_tests.entry.greenswitch_probe            # every case, both servers
    python -m confd_tests.entry.greenswitch_probe --case concurrency --impl greenswitch

Cases:
  concurrency  200 simulated callers at once (number + PIN each): joins, wall time, the
               slowest caller's entry, greenlets left after every call has ended
  hangup       the caller hangs up during the PIN prompt (with and without linger): how long
               the application waits, greenlets left
  closed       FreeSWITCH's side closes while a sendmsg waits for its reply (no notice)
  silent       a connection that never answers `connect`: greenlets still waiting after 5 s
  garbage      `connect` answered with bytes that are not ESL: greenlets still waiting after
               5 s, exceptions
  midframe     FreeSWITCH closes in the middle of an event body: CPU seconds burnt and event
               loop ticks missed in the next 3 s (a blocked loop stops every other call)
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import resource
import subprocess
import sys
import time
from typing import Dict, List, Optional

CASES = (
    "concurrency",
    "hangup",
    "hangup_nolinger",
    "closed",
    "silent",
    "garbage",
    "midframe",
)
IMPLS = ("greenswitch", "confd")
LIMIT = 40.0  # seconds a case may take before it is killed (and reported as hung)
ACCOUNT = "a" * 32
CONF = "7101"
PROMPT = "tone_stream://%(200,0,600)"
INVALID = "tone_stream://%(200,0,400)"


def greenlets_alive() -> int:
    import gevent

    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, gevent.Greenlet) and not o.dead)


# --- the two servers ----------------------------------------------------------------------------


def start_confd(model):
    from confd.entry import rules
    from confd.entry.directory import MemoryDirectory, Room
    from confd.entry.server import EntryService

    directory = MemoryDirectory()
    directory.add(ACCOUNT, CONF, {"conference_numbers": [CONF], "member": {"pins": ["1234"]}})

    def rooms(name):
        conf = model.conferences.get(name)
        if conf is None:
            return None
        return Room(conf.locked, frozenset(m.uuid for m in conf.members.values()))

    steps: List[float] = []
    svc = EntryService(
        listen="127.0.0.1:0",
        settings=rules.EntrySettings(default_account=ACCOUNT, name_pattern="[0-9]{4}"),
        directory=directory,
        rooms=rooms,
        on_step=steps.append,
    )
    svc.start()
    svc.probe_steps = steps
    return svc, svc.port


def start_greenswitch(model, linger: bool = True):
    """greenswitch's server with an application doing what confd's entry does."""
    import gevent
    from greenswitch.esl import OutboundESLServer

    from confd_tests.netutil import free_port

    port = free_port()
    finished: List[float] = []
    errors: List[str] = []

    class EntryApp:
        def __init__(self, session):
            self.session = session

        def run(self):
            s = self.session
            started = time.monotonic()
            try:
                s.myevents()
                if linger:
                    s.linger()
                s.call_command("answer", block=True, response_timeout=5)
                # greenswitch renders all 11 play_and_get_digits fields: a None becomes the
                # text "None" (transfer_on_fail "None" = transfer to extension None)
                number = s.play_and_get_digits(
                    1, 16, 1, 5000, "#", PROMPT, INVALID, "conf_num", r"\d+", 5000, "", True, 30
                )
                pin = s.play_and_get_digits(
                    1, 16, 1, 5000, "#", PROMPT, INVALID, "pin", r"\d+", 5000, "", True, 30
                )
                if number == CONF and pin == "1234":
                    s.call_command("set", "confd_role=member", block=True, response_timeout=5)
                    s.call_command("conference", CONF + "@default+flags{mute}")
                    gevent.sleep(0.05)
                    s.send("exit")
            except BaseException as exc:
                errors.append(type(exc).__name__)
                raise
            finally:
                finished.append(time.monotonic() - started)

    server = OutboundESLServer(
        bind_address="127.0.0.1", bind_port=port, application=EntryApp, max_connections=1000
    )
    gevent.spawn(server.listen)
    gevent.sleep(0.2)
    server.probe_finished = finished
    server.probe_errors = errors
    return server, port


# --- cases --------------------------------------------------------------------------------------


def run_case(case: str, impl: str) -> Dict[str, object]:
    import gevent
    from gevent import socket

    from confd.esl.protocol import CommandParser
    from confd.simulator.model import ConferenceModel
    from confd.simulator.outbound import HANGUP, OutboundSide

    logging.basicConfig(level=logging.CRITICAL)
    model = ConferenceModel()
    linger = case != "hangup_nolinger"
    if impl == "confd":
        server, port = start_confd(model)
    else:
        server, port = start_greenswitch(model, linger=linger)
    base = greenlets_alive()
    side = OutboundSide(model)
    out: Dict[str, object] = {"case": case, "impl": impl}
    address = ("127.0.0.1", port)

    if case == "concurrency":
        n = 200
        t0 = time.monotonic()
        calls = [side.dial(address, answers=[CONF + "#", "1234#"]) for _ in range(n)]
        deadline = t0 + 45
        while time.monotonic() < deadline and len(model.members(CONF)) < n:
            gevent.sleep(0.05)
        out["joined"] = len(model.members(CONF))
        out["seconds_to_all_joined"] = round(time.monotonic() - t0, 2)
        right = [
            m for m in model.members(CONF) if not m.can_speak and m.channel_vars.get("confd_role")
        ]
        out["joined_with_right_flags"] = len(right)
        for call in calls:
            call.hang_up()
        side.wait_all(20)
        gevent.sleep(1.0)
        if impl == "confd":
            steps = sorted(server.probe_steps)
            if steps:
                out["step_ms_p50"] = round(steps[len(steps) // 2] * 1000, 2)
                out["step_ms_p99"] = round(steps[int(len(steps) * 0.99)] * 1000, 2)
        out["greenlets_left"] = greenlets_alive() - base
    elif case in ("hangup", "hangup_nolinger"):
        call = side.dial(address, answers=[CONF + "#", HANGUP])
        t0 = time.monotonic()
        call.wait(30)
        if impl == "greenswitch":
            while time.monotonic() - t0 < 35 and not server.probe_finished:
                gevent.sleep(0.05)
            out["app_ended_after_s"] = (
                round(server.probe_finished[0], 2) if server.probe_finished else "never (35 s)"
            )
            out["app_errors"] = server.probe_errors
        else:
            while time.monotonic() - t0 < 35 and server.active:
                gevent.sleep(0.05)
            out["app_ended_after_s"] = round(time.monotonic() - t0, 2)
        out["socket_closed"] = call.done.is_set()
        gevent.sleep(0.5)
        out["greenlets_left"] = greenlets_alive() - base
    elif case == "closed":
        from confd_tests.entry.outbound_replay import Capture

        cap = Capture.load("a_member_pin")
        sock = socket.create_connection(address)
        parser = CommandParser()
        t0 = time.monotonic()
        waiting = True
        with gevent.Timeout(10, False):
            while waiting:
                for req in parser.feed(sock.recv(65536)):
                    if req.line == "connect":
                        first = cap.frames[0]
                        sock.sendall(cap.raw[first.start : first.end])
                    elif req.line in ("myevents", "linger"):
                        sock.sendall(b"Content-Type: command/reply\nReply-Text: +OK\n\n")
                    elif req.line == "sendmsg":
                        waiting = False
        drain(sock)
        sock.close()  # a FIN while the sendmsg waits for its reply
        gevent.sleep(5.0)
        if impl == "greenswitch":
            out["app_ended"] = bool(server.probe_finished)
            out["app_errors"] = server.probe_errors
        else:
            out["app_ended"] = server.active == 0
        out["greenlets_left"] = greenlets_alive() - base
        out["waited_s"] = round(time.monotonic() - t0, 1)
    elif case in ("silent", "garbage", "midframe"):
        sock = socket.create_connection(address)
        buf = b""
        with gevent.Timeout(5, False):
            while b"\n\n" not in buf:
                buf += sock.recv(100)
        if case == "garbage":
            sock.sendall(b"this is not ESL\nat all\n\n")
        elif case == "midframe":
            from confd_tests.entry.outbound_replay import Capture

            cap = Capture.load("a_member_pin")
            first = cap.frames[0]
            sock.sendall(cap.raw[first.start : first.end])  # a good connect reply
            gevent.sleep(0.2)
            drain(sock)  # read the server's commands: the close is then a FIN, not a reset
            sock.sendall(b"Content-Length: 2000\nContent-Type: text/event-plain\n\nEvent-Name: CH")
            sock.close()
        ticks = [0]

        def heartbeat():
            while True:
                gevent.sleep(0.01)
                ticks[0] += 1

        hb = gevent.spawn(heartbeat)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
        t0 = time.monotonic()
        gevent.sleep(3.0 if case == "midframe" else 6.0)
        wall = time.monotonic() - t0
        out["loop_ticks_per_s"] = round(ticks[0] / wall)  # ~100 when the loop is free
        out["cpu_s"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu0, 2)
        hb.kill()
        if case != "midframe":
            drain(sock)
            try:
                sock.settimeout(0.2)
                out["socket_closed_by_server"] = sock.recv(100) == b""
            except socket.timeout:
                out["socket_closed_by_server"] = False
            except OSError:
                out["socket_closed_by_server"] = True
        out["greenlets_left"] = greenlets_alive() - base
        if impl == "greenswitch":
            out["app_errors"] = server.probe_errors
    return out


def drain(sock) -> None:
    from gevent import socket

    sock.settimeout(0.05)
    try:
        while sock.recv(65536):
            pass
    except (socket.timeout, OSError):
        pass


def run_child(case: str, impl: str) -> Dict[str, object]:
    cmd = [sys.executable, "-m", "confd_tests.entry.greenswitch_probe", "--case", case]
    cmd += ["--impl", impl, "--child"]
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=LIMIT, check=False)
    except subprocess.TimeoutExpired:
        return {"case": case, "impl": impl, "result": "hung: killed after %d s" % LIMIT}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = done.stderr.strip().splitlines()[-3:]
        return {"case": case, "impl": impl, "result": "crashed", "stderr": tail}
    result = json.loads(lines[-1])
    result["child_wall_s"] = round(time.monotonic() - t0, 1)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--case", choices=CASES)
    ap.add_argument("--impl", choices=IMPLS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        result = run_case(args.case, args.impl)
        print(json.dumps(result), flush=True)
        return 0
    for case in [args.case] if args.case else CASES:
        for impl in [args.impl] if args.impl else IMPLS:
            print(json.dumps(run_child(case, impl)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

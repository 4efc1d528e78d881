"""Small helpers for tests that run ``confd run`` as a real process: a free port, and a JSON GET
that never stops this process's event loop (the in-process fake FreeSWITCH keeps serving)."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Callable, Tuple

import gevent

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> Tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url: str) -> Tuple[int, Any]:
    """``(status, JSON body)`` of a GET, made in a real thread: the in-process fake FreeSWITCH
    keeps serving meanwhile."""
    return gevent.get_hub().threadpool.spawn(_get, url).get(timeout=5)


def poll(url: str, until: Callable[[int, Any], bool], timeout: float = 15.0) -> Tuple[int, Any]:
    """Ask until ``until(status, body)``, sleeping cooperatively in between."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = get(url)
            if until(*last):
                return last
        except OSError:
            pass
        gevent.sleep(0.1)
    raise AssertionError("no answer matching in %.0fs; last: %r" % (timeout, last))


def serve_calls(calls: queue.Queue, stop: Any) -> None:
    """In a fake FreeSWITCH's own thread (its gevent hub): run each (fn, args, kwargs, future)
    that another thread put on ``calls``, handing the result or exception to its future, until
    ``stop`` is set."""
    while not stop.is_set():
        try:
            fn, args, kwargs, fut = calls.get_nowait()
        except queue.Empty:
            gevent.sleep(0.002)
            continue
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            fut.set_exception(exc)


def process_log(stderr: IO, path: Path) -> str:
    """What a process wrote to ``stderr`` (a file open at ``path``) so far."""
    if not stderr.closed:
        stderr.flush()
    return path.read_text()


def stop_process(proc: subprocess.Popen, stderr: IO, grace: float) -> None:
    """SIGTERM, up to ``grace`` seconds for a clean exit, then SIGKILL; closes ``stderr``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stderr.close()


def run_confd(*args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m confd ARGS`` to its end, without the caller's CONFD_* environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFD_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "confd", *args],
        cwd=str(cwd),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

"""The line protocol between the soak's parent and its child processes.

A child reads commands, one per line, on its stdin and writes answers and reports, one per line,
on its stdout (``WORD payload``; payloads are JSON or plain numbers).  Its stderr goes to a log
file in the soak's work directory.  A child ends when its stdin closes (the parent is gone),
and, on Linux, gets SIGTERM when the parent dies however it dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

STOP_WAIT = 3.0  # seconds a child gets to exit after its stdin closed / SIGTERM
REPORT = "STATUS"  # the periodic report word: kept as the latest, never queued


class ChildFailed(Exception):
    """A child did not answer in time, exited, or said ERROR; ``str()`` says which."""


# --- child side ------------------------------------------------------------------------------


def say(word: str, payload: Any = "") -> None:
    """One line to the parent (the child's protocol on stdout, not logging)."""
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    sys.stdout.write(("%s %s" % (word, text)).rstrip() + "\n")
    sys.stdout.flush()


# --- parent side -----------------------------------------------------------------------------


def die_with_parent() -> None:
    """In a child before exec: SIGTERM when the soak process dies, however it dies.  A new
    session too, so a Ctrl-C in the terminal reaches the soak only, which then stops the
    children in order (confd last to see load, first to be asked for its figures)."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the stdin EOF still ends our children
        pass


class Child:
    """A child process whose stdout lines a thread collects, so every wait has a timeout.

    ``STATUS`` lines are not queued: the latest one is kept in ``status`` (parsed JSON)."""

    def __init__(
        self,
        name: str,
        argv: List[str],
        log: Path,
        cwd: Path,
        env: Optional[Dict[str, str]] = None,
        on_line: Optional[Callable[[str, str], None]] = None,
    ) -> None:
        self.name = name
        self.log = log
        self.on_line = on_line
        with open(log, "w") as err:
            self.proc = subprocess.Popen(
                argv,
                cwd=str(cwd),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
                preexec_fn=die_with_parent,
            )
        self.status: Optional[Any] = None
        self.status_at = 0.0
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        threading.Thread(target=self._read, name="lines-" + name, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            word, _, rest = line.partition(" ")
            if word == REPORT:
                try:
                    self.status = json.loads(rest)
                    self.status_at = time.monotonic()
                except ValueError:
                    pass
                continue
            if self.on_line is not None:
                self.on_line(word, rest)
            self.lines.put(line)
        self.lines.put(None)

    def tail(self, n: int = 3) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(x[:300] for x in lines[-n:])

    def wait_for(self, word: str, timeout: float) -> str:
        """The payload of the next line starting with ``word``; ChildFailed after ``timeout``,
        on an ``ERROR`` line or when the child exits."""
        limit = time.monotonic() + timeout
        while True:
            left = limit - time.monotonic()
            if left <= 0:
                raise ChildFailed("%s: no %s within %.0f s" % (self.name, word, timeout))
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.lines.put(None)  # stays at end of input for the next wait
                code = self.proc.poll()
                raise ChildFailed("%s exited (%s): %s" % (self.name, code, self.tail()))
            got, _, rest = line.partition(" ")
            if got == "ERROR":
                raise ChildFailed("%s: %s" % (self.name, rest))
            if got == word:
                return rest

    def say(self, line: str) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass  # it is gone; the next wait_for says so

    def ask(self, line: str, word: str, timeout: float) -> str:
        self.say(line)
        return self.wait_for(word, timeout)

    def stop(self, wait: float = STOP_WAIT, eof_first: bool = True) -> Optional[int]:
        """Close its stdin, then SIGTERM, then SIGKILL: each step waits at most ``wait``
        (``eof_first=False``: SIGTERM at once, for a child that does not read its stdin)."""
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        steps = (None, self.proc.terminate, self.proc.kill)
        for step in steps if eof_first else steps[1:]:
            if step is not None and self.proc.poll() is None:
                try:
                    step()
                except OSError:
                    pass
            try:
                return self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.poll()

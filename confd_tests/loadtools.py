"""What the benchmarks and the soak share: the line protocol between a parent and its child
processes, CPU and memory readings from /proc, and a websocket client subscribed the confd way.

A child reads commands, one per line, on its stdin and writes answers and reports, one per line,
on its stdout (``WORD payload``; payloads are JSON or plain numbers).  Its stderr goes to a log
file in the parent's work directory.  A child ends when its stdin closes (the parent is gone),
and, on Linux, gets SIGTERM when the parent dies however it dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

_TICKS = os.sysconf("SC_CLK_TCK")


def stdin_lines() -> queue.Queue[Optional[str]]:
    """The parent's lines, read by a native thread; None at end of input (parent gone)."""
    lines: queue.Queue[Optional[str]] = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return lines


class LineReader:
    """The parent's lines for a child that waits in a selector instead of a thread: register
    ``fileno()`` for reading, then each ``read()`` gives the lines completed so far (stripped),
    and None once the parent closed its end."""

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._rest = b""

    def fileno(self) -> int:
        return self.fd

    def read(self) -> List[Optional[str]]:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        if not data:
            rest, self._rest = self._rest, b""
            return ([rest.decode().strip()] if rest.strip() else []) + [None]
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        out: List[Optional[str]] = [line.decode().strip() for line in lines]
        return out


def parse_metrics(text: str) -> Dict[str, float]:
    """Prometheus text as ``{'name{labels}': value}`` (the labels stay in the key)."""
    out: Dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


def http_call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    token: Optional[str] = None,
    timeout: float = 30.0,
) -> Tuple[int, Any]:
    """One request to confd on 127.0.0.1:``port``, ``body`` sent as JSON, ``token`` as
    X-Auth-Token -> (status, parsed JSON body, or its text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Auth-Token"] = token
    try:
        conn.request(method, path, json.dumps(body).encode() if body is not None else None, headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw.decode(errors="replace")


def metrics_text(port: int, timeout: float) -> str:
    """The text of confd's ``GET /metrics`` on 127.0.0.1; RuntimeError unless HTTP 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError("GET /metrics: HTTP %d" % resp.status)
    return text


def children_cpu() -> float:
    """CPU seconds of the child processes waited for (a client that runs to its end)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def proc_cpu(pid: int) -> Optional[float]:
    """utime + stime of a process, seconds (None once it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_busy() -> float:
    """CPU seconds the whole machine (all cores) spent busy since boot."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _TICKS


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def subscribe(url: str, token: str, account: str, request_id: str, timeout: float, **binding: Any):
    """A websocket-client connection subscribed with ``binding`` (``binding=...`` or
    ``bindings=[...]``); returns (websocket, its raw socket) for reading frames directly.
    websocket-client reads exactly one frame at a time, so nothing is left in its buffer."""
    import websocket

    ws = websocket.create_connection(url, timeout=timeout)
    data = {"account_id": account}
    data.update(binding)
    ws.send(
        json.dumps(
            {"action": "subscribe", "auth_token": token, "request_id": request_id, "data": data}
        )
    )
    answer = json.loads(ws.recv())
    if answer.get("status") != "success":
        raise RuntimeError("subscribe refused: %s" % answer)
    sock = ws.sock
    sock.settimeout(None)
    return ws, sock


# Websocket opcodes (RFC 6455 5.2) the load clients read or write.
OPCODE_TEXT, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = 0x1, 0x8, 0x9, 0xA


def pong_frame(payload: bytes) -> bytes:
    """A client's answer to a ping carrying ``payload`` (at most 125 bytes): a masked pong
    frame with the same payload (RFC 6455 5.5.3).  confd pings a silent client and closes it
    when no answer comes."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | OPCODE_PONG, 0x80 | len(payload)]) + mask + masked


def close_text(payload: bytes) -> str:
    """How a connection that a close frame with ``payload`` ended is reported:
    ``close frame <code> <reason>`` (code None when the frame carries none)."""
    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
    return "close frame %s %s" % (code, payload[2:].decode(errors="replace"))


class FrameReader:
    """Server-to-client websocket frames (RFC 6455: never masked) from a byte stream.

    ``feed(data)`` returns the complete messages as ``(opcode, payload)``; a fragmented
    message is returned once, whole, with its first frame's opcode."""

    def __init__(self) -> None:
        self._buf = b""
        self._parts: List[bytes] = []
        self._opcode = 0

    def feed(self, data: bytes) -> List[Tuple[int, bytes]]:
        buf = self._buf + data if self._buf else data
        out: List[Tuple[int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if b1 & 0x80:
                raise ValueError("a server frame must not be masked")
            if end - pos < head + n:
                break
            payload = buf[pos + head : pos + head + n]
            pos += head + n
            opcode, fin = b0 & 0x0F, b0 & 0x80
            if opcode >= 8:  # control frames come whole, even between fragments
                out.append((opcode, payload))
                continue
            if opcode != 0:
                self._opcode, self._parts = opcode, []
            if not fin:
                self._parts.append(payload)
                continue
            if self._parts:
                payload = b"".join(self._parts + [payload])
                self._parts = []
            out.append((self._opcode if opcode == 0 else opcode, payload))
        self._buf = buf[pos:]
        return out


# --- child processes --------------------------------------------------------------------------

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
    """In a child before exec: SIGTERM when the parent (a benchmark, the soak) dies, however
    it dies.  A new session too, so a Ctrl-C in the terminal reaches the parent only, which
    then stops the children in order."""
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

    def cpu(self) -> Optional[float]:
        """CPU seconds it has used so far (None once it is gone)."""
        return proc_cpu(self.proc.pid)

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


# --- profiles -----------------------------------------------------------------------------------

Ranked = List[Tuple[str, int]]


def profile_top(path: Path, n: int = 12) -> Tuple[int, Ranked, Ranked]:
    """py-spy's collapsed stacks -> (samples, top self, top inclusive), functions without
    line numbers: ``'name (file)'``."""
    import collections
    import re

    own: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for f in set(frames):
            incl[f] += int(count)
    return total, own.most_common(n), incl.most_common(n)

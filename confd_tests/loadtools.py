"""What the benchmarks and the soak share: the child processes' stdin protocol, CPU and
memory readings from /proc, and a websocket client subscribed the confd way."""

from __future__ import annotations

import json
import os
import queue
import resource
import sys
import threading
from typing import Any, List, Optional, Tuple

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

"""Replay mode of the fake FreeSWITCH: plays a real capture to confd over a real socket.

The capture's own replies answered the *recorder's* commands, not confd's, so they are not
played.  confd's commands (auth, the subscription, ``json_list``) are answered here with what
the capture holds for that point: the capture's auth and subscription replies, and ``[]`` for the
first ``json_list`` (every capture starts with FreeSWITCH holding no conference).  The event
frames and the final disconnect-notice are then sent byte for byte, cut at the real TCP
segmentation of ``.chunks`` (or at every byte), pausing at each point where the recorder got a
``conference json_list`` reply so a test can compare confd's state with it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple, TypeVar

import gevent
from gevent import socket
from gevent.event import Event
from gevent.server import StreamServer

from confd.esl import protocol as p

CAPTURES = Path(__file__).parent / "captures"
_LENGTH_RE = re.compile(rb"^Content-Length: (\d+)$", re.M)
T = TypeVar("T")
_SEND_RE = re.compile(r" SEND (b'.*'|b\".*\")$")
JSON_LIST_COMMANDS = ("api conference json_list", "api conference json_list compact")


@dataclass
class RawFrame:
    start: int
    end: int
    frame: p.Frame


@dataclass
class Checkpoint:
    """The recorder's ``json_list`` reply at ``offset`` in the raw stream."""

    offset: int
    command: str
    reply: str


@dataclass
class Capture:
    name: str
    raw: bytes
    chunks: List[Tuple[int, int]]
    sends: List[str]
    frames: List[RawFrame] = field(default_factory=list)

    @classmethod
    def load(cls, name: str) -> Capture:
        raw = (CAPTURES / (name + ".raw")).read_bytes()
        chunks = []
        for line in (CAPTURES / (name + ".chunks")).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4:
                chunks.append((int(parts[2]), int(parts[3])))
        sends = []
        for line in (CAPTURES / (name + ".cmds")).read_text().splitlines():
            m = _SEND_RE.search(line)
            if m:
                sends.append(ast.literal_eval(m.group(1)).decode("utf-8", "replace").strip())
        cap = cls(name, raw, chunks, sends)
        cap.frames = list(scan_frames(raw))
        return cap

    def replies(self) -> List[RawFrame]:
        return [f for f in self.frames if f.frame.content_type in p.REPLY_TYPES]

    def events(self) -> List[RawFrame]:
        return [f for f in self.frames if f.frame.content_type in p.EVENT_TYPES]

    def auth_reply(self) -> RawFrame:
        return self.replies()[0]

    def subscribe_reply(self) -> RawFrame:
        return self.replies()[1]

    def checkpoints(self) -> List[Checkpoint]:
        """Every reply to an all-conferences ``json_list``: replies pair with the recorder's
        sends in order (mod_event_socket answers one command at a time)."""
        out = []
        for send, reply in zip(self.sends, self.replies()):
            if send in JSON_LIST_COMMANDS:
                out.append(Checkpoint(reply.end, send, reply.frame.reply_text))
        return out

    def initial_json_list(self) -> Optional[RawFrame]:
        """The recorder's all-conferences json_list reply when it came before any event: the
        capture's answer for confd's own resync at that point."""
        events = self.events()
        first_event = events[0].start if events else len(self.raw)
        for send, reply in zip(self.sends, self.replies()):
            if send == "api conference json_list":
                return reply if reply.end <= first_event else None
        return None

    @property
    def ends_with_recorders_exit(self) -> bool:
        """The ``_after_restart`` captures end with the recorder's own ``exit``: its "+OK bye"
        and disconnect-notice answered the recorder, FreeSWITCH itself stayed up."""
        return bool(self.sends) and self.sends[-1] == "exit"

    def played(self) -> List[RawFrame]:
        """What the fake plays to confd: events and the closing disconnect-notice."""
        return [
            f
            for f in self.frames
            if f.frame.content_type in p.EVENT_TYPES
            or (f.frame.content_type == p.DISCONNECT_NOTICE and not self.ends_with_recorders_exit)
        ]

    def pieces(self, mode: str) -> List[Tuple[int, bytes]]:
        """The played bytes as (raw offset, piece) in send order, cut at the capture's recv
        boundaries (``chunks``), at every byte (``bytes``) or frame by frame (``frames``)."""
        cuts = {off for off, _ in self.chunks} | {off + n for off, n in self.chunks}
        out = []
        for f in self.played():
            if mode == "bytes":
                out.extend((i, self.raw[i : i + 1]) for i in range(f.start, f.end))
                continue
            bounds = [f.start]
            if mode == "chunks":
                bounds += sorted(c for c in cuts if f.start < c < f.end)
            bounds.append(f.end)
            out.extend((a, self.raw[a:b]) for a, b in zip(bounds, bounds[1:]))
        return out


def scan_frames(raw: bytes, make: Callable[[int, int, p.Frame], T] = RawFrame) -> Iterator[T]:
    """Frame boundaries of a capture (independent of the parser under test), each frame made
    by ``make(start, end, frame)`` (the outbound captures' RawFrame adds an event name)."""
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\n\n", pos)
        if end < 0:
            return
        head = raw[pos:end]
        m = _LENGTH_RE.search(head)
        stop = end + 2 + (int(m.group(1)) if m else 0)
        frame = p.FrameParser().feed(raw[pos:stop])[0]
        yield make(pos, stop, frame)
        pos = stop


class ReplayFreeSwitch:
    """Serves captures to confd: the first connection that subscribes to events gets
    ``captures[0]``, the next one ``captures[1]`` (e.g. ``s5_..._after_restart``), and so on;
    connections past the last capture get an empty FreeSWITCH (``json_list`` = ``[]``, no
    events).  Other connections (confd's command connection) are answered as FreeSWITCH answers
    commands about unknown channels.  After a capture that ends with the socket closing, the
    fake can refuse connections for ``down_for`` seconds, as a restarting FreeSWITCH does."""

    def __init__(
        self,
        captures,
        mode: str = "chunks",
        pause_at_checkpoints: bool = True,
        down_for: float = 0.0,
    ):
        self.captures = [captures] if isinstance(captures, Capture) else list(captures)
        self.capture = self.captures[0]
        self.mode = mode
        self.pause = pause_at_checkpoints
        self.down_for = down_for
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.commands: List[str] = []
        self.reached: Optional[Checkpoint] = None
        self.at_checkpoint = Event()
        self._go = Event()
        self.finished = Event()
        self.events_sent = 0
        self.streams = 0
        self.connections = 0
        self.accepting = True

    @property
    def port(self) -> int:
        return self.server.server_port

    def start(self) -> ReplayFreeSwitch:
        self.server.start()
        return self

    def stop(self) -> None:
        self.pause = False
        self._go.set()
        self.server.stop(timeout=1)

    def release(self) -> None:
        """Let the stream go on past the checkpoint it is paused at."""
        self.at_checkpoint.clear()
        self._go.set()

    def _capture_for_next_stream(self) -> Optional[Capture]:
        if self.streams < len(self.captures):
            return self.captures[self.streams]
        return None

    def _handle(self, sock: socket.socket, _addr) -> None:
        self.connections += 1
        cap = self._capture_for_next_stream() or self.captures[-1]
        parser = p.CommandParser()
        sock.sendall(cap.raw[cap.frames[0].start : cap.frames[0].end])  # auth/request
        subscribed = None
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return  # closed by the stream greenlet at the end of the capture
            if not data:
                return
            for cmd in parser.feed(data):
                line = cmd.line
                self.commands.append(line)
                if line.startswith("auth "):
                    reply = cap.auth_reply()
                    sock.sendall(cap.raw[reply.start : reply.end])
                elif line.startswith("event "):
                    reply = cap.subscribe_reply()
                    sock.sendall(cap.raw[reply.start : reply.end])
                    subscribed = self._capture_for_next_stream()
                    self.streams += 1
                elif line == "api conference json_list" and self.streams and subscribed is not None:
                    initial = subscribed.initial_json_list()
                    sock.sendall(
                        subscribed.raw[initial.start : initial.end]
                        if initial is not None
                        else p.encode_frame({"Content-Type": p.API_RESPONSE}, b"[]")
                    )
                    gevent.spawn(self._stream, sock, subscribed, initial is not None)
                    subscribed = None
                elif line.startswith("api "):
                    body = b"[]" if "json_list" in line else b"-ERR No such channel!\n"
                    sock.sendall(p.encode_frame({"Content-Type": p.API_RESPONSE}, body))
                else:
                    sock.sendall(
                        p.encode_frame(
                            {
                                "Content-Type": p.COMMAND_REPLY,
                                "Reply-Text": "-ERR command not found",
                            }
                        )
                    )

    def _stream(self, sock: socket.socket, cap: Capture, skip_first: bool) -> None:
        checkpoints = list(cap.checkpoints()) if self.pause else []
        if skip_first and checkpoints:
            checkpoints.pop(0)  # already answered confd's own json_list with it
        event_starts = {f.start for f in cap.events()}
        try:
            for offset, piece in cap.pieces(self.mode):
                while checkpoints and offset >= checkpoints[0].offset:
                    self._wait_at(checkpoints.pop(0))
                if offset in event_starts:
                    self.events_sent += 1
                sock.sendall(piece)
                gevent.sleep(0)
            for cp in checkpoints:
                self._wait_at(cp)
            if cap.ends_with_recorders_exit:
                self.finished.set()
                return  # FreeSWITCH stays up: the connection stays open
        except OSError:
            pass
        finally:
            if not cap.ends_with_recorders_exit:
                self._close_like_freeswitch(sock, cap)

    def _close_like_freeswitch(self, sock: socket.socket, cap: Capture) -> None:
        # The captures end where FreeSWITCH closed the socket (or died).
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        if self.down_for and cap is not self.captures[-1]:
            self._go_down(self.down_for)
        self.finished.set()

    def _go_down(self, seconds: float) -> None:
        """Refuse connections for a while (connect gets ECONNREFUSED), then listen again on the
        same port."""
        port = self.port
        self.accepting = False
        self.server.stop(timeout=0)
        gevent.sleep(seconds)
        self.server = StreamServer(("127.0.0.1", port), self._handle)
        self.server.start()
        self.accepting = True

    def _wait_at(self, cp: Checkpoint) -> None:
        if not self.pause:
            return
        self._go.clear()
        self.reached = cp
        self.at_checkpoint.set()
        self._go.wait()

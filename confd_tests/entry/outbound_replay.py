"""A fake FreeSWITCH that replays a real outbound capture to confd's entry listener.

FreeSWITCH connects out, so the replay connects to confd, waits for confd's commands and
answers each one with what real FreeSWITCH sent after the recorder's command *of the same
meaning*, byte for byte, cut at the recorded TCP segments (``.chunks``) or at every byte.

How confd's commands are compared with the recorder's (``meaning``):
  * ``connect``, ``myevents``, ``linger``, ``exit``: the verb;
  * ``sendmsg`` hang-up and the ``hangup`` application: ("hangup", cause), either form;
  * ``set``: (name, value), with the recorder's own variables mapped to confd's
    (``entry_role`` = ``confd_role``, ``entry_conf_num`` = ``confd_conference_id``);
  * ``play_and_get_digits``: timeout, terminator, prompt and invalid sound (the prompt says
    which question it is); min/max digits, tries, the variable and the regex are each side's
    own choices (confd asks one try at a time and judges the digits itself);
  * ``conference``: ``<name>@<profile>`` (the flags are the decision under test: each test
    asserts confd's exact argument separately);
  * any other application: (name, argument).
Event-lock and Event-UUID are left out; each matched recorder ``Event-UUID`` is rewritten to
confd's in every byte played afterwards (both 36 characters: lengths and segments stay).

A confd command is matched with the first recorder command of the same meaning at or after
the last one matched (so the recorder's own extra steps, e.g. its welcome tone, are skipped
and their frames never played).  A confd command the recorder never sent is answered by
synthesis, reported in ``transcript``: ``+OK`` and, for an application, CHANNEL_EXECUTE and
CHANNEL_EXECUTE_COMPLETE built from the capture's own events with the application, data and
UUID replaced (a ``conference`` gets no completion: the caller is then in the room); an
unmatched hang-up plays the capture's ending (its next CHANNEL_HANGUP up to the linger
notice).  ``in_room`` tells the test's live-room reader which calls a played or synthesized
``conference`` put into a room, as the parallel inbound connection's add-member would.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple
from urllib.parse import quote

import gevent
from gevent import socket

from confd.esl import protocol as p
from confd_tests import replay
from confd_tests.replay import scan_frames

CAPTURES = Path(__file__).parent.parent / "captures" / "outbound"
_SEND_RE = re.compile(r" SEND (b'.*'|b\".*\")$")
_RECV_RE = re.compile(r" # RECV frame#(\d+) @(\d+):")
ALIASES = {"entry_role": "confd_role", "entry_conf_num": "confd_conference_id"}


class RawFrame(replay.RawFrame):
    @property
    def event_name(self) -> str:
        if self.frame.content_type != p.EVENT_PLAIN:
            return ""
        return p.parse_event(self.frame).name


@dataclass
class Step:
    """One recorder command and the frames FreeSWITCH sent until the recorder's next one."""

    send: bytes
    request: p.CommandRequest
    frames: List[int]  # indexes into Capture.frames

    @property
    def event_uuid(self) -> Optional[str]:
        return _headers(self.request).get("event-uuid")


@dataclass
class Capture:
    name: str
    raw: bytes
    cuts: Set[int]
    frames: List[RawFrame]
    steps: List[Step]

    @classmethod
    def load(cls, name: str) -> Capture:
        raw = (CAPTURES / (name + ".raw")).read_bytes()
        cuts: Set[int] = set()
        for line in (CAPTURES / (name + ".chunks")).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 4:
                off, n = int(parts[2]), int(parts[3])
                cuts.update((off, off + n))
        frames = list(scan_frames(raw, RawFrame))
        by_start = {f.start: i for i, f in enumerate(frames)}
        steps: List[Step] = []
        for line in (CAPTURES / (name + ".cmds")).read_text().splitlines():
            sent = _SEND_RE.search(line)
            if sent:
                data = ast.literal_eval(sent.group(1))
                steps.append(Step(data, p.CommandParser().feed(data)[0], []))
                continue
            got = _RECV_RE.search(line)
            if got and steps:
                steps[-1].frames.append(by_start[int(got.group(2))])
        return cls(name, raw, cuts, frames, steps)

    def pieces(self, start: int, end: int, mode: str) -> List[Tuple[int, int]]:
        if mode == "bytes":
            return [(i, i + 1) for i in range(start, end)]
        bounds = [start] + sorted(x for x in self.cuts if start < x < end) + [end]
        return list(zip(bounds, bounds[1:]))

    def template(self, event_name: str) -> RawFrame:
        for f in self.frames:
            if f.event_name == event_name:
                return f
        raise LookupError(event_name)


def _headers(req: p.CommandRequest) -> Dict[str, str]:
    return {k.lower(): v for k, v in req.headers.items()}


def meaning(req: p.CommandRequest) -> tuple:
    if req.line != "sendmsg":
        return (req.line.split(" ")[0],)
    h = _headers(req)
    if h.get("call-command") == "hangup":
        return ("hangup", h.get("hangup-cause"))
    app, arg = h.get("execute-app-name"), h.get("execute-app-arg")
    if app == "hangup":
        return ("hangup", arg)
    if app == "set":
        name, _, value = (arg or "").partition("=")
        return ("set", ALIASES.get(name, name), value)
    if app == "play_and_get_digits":
        f = (arg or "").split(" ")
        return ("play_and_get_digits", f[3], f[4], f[5], f[6])
    if app == "conference":
        return ("conference", (arg or "").split("+")[0])
    return (app, arg)


def _event(template: bytes, name: str, fields: Dict[str, str]) -> bytes:
    """``template`` (a whole event-plain frame) renamed to ``name`` with ``fields`` replacing
    its Application* headers; a new Content-Length."""
    body = template.partition(b"\n\n")[2].decode()
    lines = [ln for ln in body.split("\n") if ln and not ln.startswith("Application")]
    lines = [("Event-Name: " + name) if ln.startswith("Event-Name: ") else ln for ln in lines]
    lines += ["%s: %s" % (k, quote(v, safe="")) for k, v in fields.items()]
    payload = ("\n".join(lines) + "\n\n").encode()
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(payload) + payload


def _reply(text: str) -> bytes:
    return p.encode_frame({"Content-Type": p.COMMAND_REPLY, "Reply-Text": text})


@dataclass
class Exchange:
    """One confd command and what answered it."""

    meaning: tuple
    raw: bytes
    matched: Optional[int]  # recorder step index, or None when synthesized
    how: str = ""


@dataclass
class OutboundReplay:
    capture: Capture
    address: Tuple[str, int]
    mode: str = "chunks"
    transcript: List[Exchange] = field(default_factory=list)
    in_room: Dict[str, Set[str]] = field(default_factory=dict)
    read_timeout: float = 10.0

    def __post_init__(self) -> None:
        self.uuids: Dict[bytes, bytes] = {}
        self.cursor = 0
        self.closed = False
        self.peer_gone = False
        self.sock: Optional[socket.socket] = None

    def rooms(self, conference: str):
        from confd.entry.directory import Room

        return Room(False, frozenset(self.in_room.get(conference, ())))

    def run(self) -> List[Exchange]:
        sock = socket.create_connection(self.address, timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        parser = p.CommandParser()
        try:
            while not self.closed:
                sock.settimeout(self.read_timeout)
                try:
                    data = sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                for req in parser.feed(data):
                    self._answer(req, data)
                    if self.closed:
                        break
        finally:
            self._close()
        return self.transcript

    @property
    def call_id(self) -> str:
        return _connect_uuid(self.capture)

    # --- answering -------------------------------------------------------------------------------

    def _answer(self, req: p.CommandRequest, data: bytes) -> None:
        want = meaning(req)
        steps = self.capture.steps
        found = next(
            (i for i in range(self.cursor, len(steps)) if meaning(steps[i].request) == want),
            None,
        )
        ex = Exchange(want, data, found)
        self.transcript.append(ex)
        if found is not None:
            step = steps[found]
            self.cursor = found + 1
            theirs, ours = step.event_uuid, _headers(req).get("event-uuid")
            if theirs and ours:
                self.uuids[theirs.encode()] = ours.encode()
            self._mark_join(step, req)
            ex.how = "played"
            self._play([self.capture.frames[i] for i in step.frames])
            return
        self._synthesize(req, want, ex)

    def _mark_join(self, step: Step, req: p.CommandRequest) -> None:
        """A played conference step whose completion carries a member id put the call in."""
        h = _headers(req)
        if h.get("execute-app-name") != "conference":
            return
        for i in step.frames:
            f = self.capture.frames[i]
            if f.event_name == "CHANNEL_EXECUTE_COMPLETE":
                ev = p.parse_event(f.frame)
                if ev.get("variable_conference_member_id"):
                    conf = (h.get("execute-app-arg") or "").split("@")[0]
                    self.in_room.setdefault(conf, set()).add(_connect_uuid(self.capture))

    def _synthesize(self, req: p.CommandRequest, want: tuple, ex: Exchange) -> None:
        h = _headers(req)
        verb = want[0]
        if req.line == "sendmsg" and verb == "hangup":
            ex.how = "ending"
            self._play(self._ending())
            return
        if req.line in ("myevents", "linger"):
            ex.how = "reply"
            self._send(
                _reply("+OK Events Enabled" if req.line == "myevents" else "+OK will linger")
            )
            return
        if req.line == "exit":
            ex.how = "bye"
            self._send(_reply("+OK bye"))
            self.closed = True
            return
        if req.line != "sendmsg":
            ex.how = "err"
            self._send(_reply("-ERR command not found"))
            return
        app, arg, uuid = (
            h.get("execute-app-name", ""),
            h.get("execute-app-arg", ""),
            h["event-uuid"],
        )
        fields = {"Application": app, "Application-Data": arg, "Application-UUID": uuid}
        execute = _event(self._template("CHANNEL_EXECUTE"), "CHANNEL_EXECUTE", fields)
        out = _reply("+OK") + execute
        if app == "conference":
            self.in_room.setdefault(arg.split("@")[0], set()).add(_connect_uuid(self.capture))
        else:
            done = dict(fields, **{"Application-Response": "_none_"})
            out += _event(
                self._template("CHANNEL_EXECUTE_COMPLETE"), "CHANNEL_EXECUTE_COMPLETE", done
            )
        ex.how = "synthesized"
        self._send(out)

    def _template(self, name: str) -> bytes:
        f = self.capture.template(name)
        return self.capture.raw[f.start : f.end]

    def _ending(self) -> List[RawFrame]:
        """The capture's next CHANNEL_HANGUP (in a step not played yet) up to its linger
        notice or the end."""
        later = [i for step in self.capture.steps[self.cursor :] for i in step.frames]
        frames = [self.capture.frames[i] for i in later]
        for k, f in enumerate(frames):
            if f.event_name == "CHANNEL_HANGUP":
                tail = frames[k:]
                for j, g in enumerate(tail):
                    if g.frame.content_type == p.DISCONNECT_NOTICE:
                        return tail[: j + 1]
                return tail
        return []

    # --- sending ---------------------------------------------------------------------------------

    def _play(self, frames: List[RawFrame]) -> None:
        raw = self.capture.raw
        for f in frames:
            data = raw[f.start : f.end]
            for theirs, ours in self.uuids.items():  # same length: the cuts stay valid
                data = data.replace(theirs, ours)
            for a, b in self.capture.pieces(f.start, f.end, self.mode):
                self._send(data[a - f.start : b - f.start])
            if f.frame.content_type == p.DISCONNECT_NOTICE and (
                f.frame.headers.get("Content-Disposition") == "disconnect"
            ):
                self.closed = True  # FreeSWITCH closes right after this notice
                return

    def _send(self, data: bytes) -> None:
        if self.sock is None or self.peer_gone:
            return
        try:
            self.sock.sendall(data)
        except OSError:
            self.peer_gone = True  # confd closed: still read (and record) what it sent
            return
        gevent.sleep(0)

    def _close(self) -> None:
        self.closed = True
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass


def _connect_uuid(cap: Capture) -> str:
    first = cap.frames[cap.steps[0].frames[0]].frame
    return first.headers["Unique-ID"]

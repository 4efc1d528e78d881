"""The benchmark's event stream and the fake FreeSWITCH that serves it.

``build_stream`` turns the real ``conference::maintenance`` frames of two captures into a long,
consistent stream: members join, talk, mute and leave 200 conferences of about 10 members each,
with ``Member-ID``, ``Unique-ID`` (and the headers that repeat it), ``Conference-Name``,
``Conference-Unique-ID`` and ``Event-Sequence`` rewritten in the plain header text and the
frame's ``Content-Length`` fixed.  Every other header is the capture's, so the frames have the
size and shape FreeSWITCH 1.10 sends (add-member ~2.4 KB, talking events alike).

``python -m confd_tests.bench.feeder --stream FILE`` serves it on 127.0.0.1 in its own process
(so its CPU never counts against the client being measured).  It answers ``auth``, ``event``
and ``api`` like mod_event_socket; on the first connection that subscribes, the reply to the
first ``api conference json_list`` (``[]``) is followed by the stream, blasted as fast as the
socket takes it (``--mode blast``) or paced at ``--rate`` events per second (``--mode paced``).
It writes ``PORT <n>``, then ``FIRST <monotonic>`` when the first stream byte is sent and
``DONE <monotonic> <events>`` after the last, one line each on stdout, for the parent.
``time.monotonic`` is CLOCK_MONOTONIC, which is one clock for every process of the machine.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from confd.esl import protocol as p

# Which capture holds the template frame of each action (the first frame with that Action).
TEMPLATE_SOURCES: Dict[str, str] = {
    "add-member": "s2_talking_plain",
    "start-talking": "s2_talking_plain",
    "stop-talking": "s2_talking_plain",
    "del-member": "s2_talking_plain",
    "mute-member": "s1_room1_plain",
    "unmute-member": "s1_room1_plain",
}
PASSWORD = "ClueCon"
BLAST_CHUNK = 64 * 1024  # frames are grouped into sends of about this size
PACE_TICK = 0.005  # seconds between paced sends

# Markers put in place of the template's values; none of them can occur in a plain event body
# (values there are URL-encoded, so a raw control byte never appears).
_CONF_NAME, _CONF_UUID, _CALL_UUID, _MEMBER_ID, _SEQUENCE = ("\x01%d\x01" % i for i in range(5))

# Population and mix.  Talking events dominate real conference traffic.
CONFERENCES = 200
MEMBERS_PER_CONFERENCE = 10
_MIX = (("talk", 70), ("mute", 20), ("leave", 10))


@dataclass
class Template:
    action: str
    text: str  # the plain event body with markers in place of the rewritten values


@dataclass
class Stream:
    data: bytes
    ends: List[int]  # end offset of every frame
    actions: Dict[str, int] = field(default_factory=dict)
    conferences: int = 0  # live at the end of the stream
    members: int = 0

    @property
    def events(self) -> int:
        return len(self.ends)


def _line_value(text: str, name: str) -> str:
    head = "\n" + name + ": "
    start = text.index(head) + len(head)
    return text[start : text.index("\n", start)]


def load_templates() -> Dict[str, Template]:
    # Imported here: the replay module pulls in gevent's server, which plain users of
    # build_stream (the in-process framing measure) do not need.
    from confd_tests.replay import Capture

    templates: Dict[str, Template] = {}
    captures = {name: Capture.load(name) for name in set(TEMPLATE_SOURCES.values())}
    for action, source in TEMPLATE_SOURCES.items():
        for raw in captures[source].events():
            text = raw.frame.body.decode()
            if _line_value("\n" + text, "Action") != action:
                continue
            text = "\n" + text  # so that the first header line is found like the others
            conf_name = _line_value(text, "Conference-Name")
            conf_uuid = _line_value(text, "Conference-Unique-ID")
            call_uuid = _line_value(text, "Unique-ID")
            member_id = _line_value(text, "Member-ID")
            sequence = _line_value(text, "Event-Sequence")
            text = text.replace(conf_uuid, _CONF_UUID).replace(call_uuid, _CALL_UUID)
            text = text.replace(
                "\nConference-Name: %s\n" % conf_name, "\nConference-Name: %s\n" % _CONF_NAME
            )
            text = text.replace("\nMember-ID: %s\n" % member_id, "\nMember-ID: %s\n" % _MEMBER_ID)
            text = text.replace(
                "\nEvent-Sequence: %s\n" % sequence, "\nEvent-Sequence: %s\n" % _SEQUENCE
            )
            templates[action] = Template(action, text[1:])
            break
        else:
            raise LookupError("no %s frame in %s" % (action, source))
    return templates


def _render(t: Template, conf: Tuple[str, str], call_uuid: str, member_id: int, seq: int) -> bytes:
    body = (
        t.text.replace(_CONF_NAME, conf[0])
        .replace(_CONF_UUID, conf[1])
        .replace(_CALL_UUID, call_uuid)
        .replace(_MEMBER_ID, str(member_id))
        .replace(_SEQUENCE, str(seq))
        .encode()
    )
    return b"Content-Length: %d\nContent-Type: %s\n\n%s" % (len(body), p.EVENT_PLAIN.encode(), body)


@dataclass
class _Member:
    member_id: int
    call_uuid: str
    talking: bool = False
    muted: bool = False


def build_stream(
    events: int,
    seed: int = 1,
    conferences: int = CONFERENCES,
    members: int = MEMBERS_PER_CONFERENCE,
    templates: Optional[Dict[str, Template]] = None,
) -> Stream:
    """``events`` frames in which every member event is about a member that joined before and
    has not left; conferences are filled to ``members`` first, then a leaver is replaced by a
    newcomer (with the next Member-ID, as FreeSWITCH numbers them) at the next pick."""
    templates = templates or load_templates()
    rng = random.Random(seed)
    confs = [
        (
            uuid.UUID(int=rng.getrandbits(128)).hex,
            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        )
        for _ in range(conferences)
    ]
    live: List[List[_Member]] = [[] for _ in confs]
    next_id = [1] * conferences
    kinds = [k for k, w in _MIX for _ in range(w)]
    out: List[bytes] = []
    ends: List[int] = []
    actions: Dict[str, int] = {}
    pos = 0
    seq = 1000
    for _ in range(events):
        ci = rng.randrange(conferences)
        room = live[ci]
        kind = "join" if len(room) < members else rng.choice(kinds)
        if kind == "join":
            m = _Member(next_id[ci], str(uuid.UUID(int=rng.getrandbits(128), version=4)))
            next_id[ci] += 1
            room.append(m)
            action = "add-member"
        else:
            m = room[rng.randrange(len(room))]
            if kind == "talk":
                m.talking = not m.talking
                action = "start-talking" if m.talking else "stop-talking"
            elif kind == "mute":
                m.muted = not m.muted
                action = "mute-member" if m.muted else "unmute-member"
            else:
                room.remove(m)
                action = "del-member"
        seq += 1
        frame = _render(templates[action], confs[ci], m.call_uuid, m.member_id, seq)
        out.append(frame)
        pos += len(frame)
        ends.append(pos)
        actions[action] = actions.get(action, 0) + 1
    return Stream(
        b"".join(out),
        ends,
        actions,
        conferences=sum(1 for room in live if room),
        members=sum(len(room) for room in live),
    )


def save_stream(stream: Stream, path: Path) -> None:
    path.write_bytes(stream.data)
    with open(str(path) + ".idx", "wb") as fh:
        array("Q", stream.ends).tofile(fh)


def load_stream(path: Path) -> Tuple[bytes, List[int]]:
    data = Path(path).read_bytes()
    ends = array("Q")
    idx = Path(str(path) + ".idx")
    with open(idx, "rb") as fh:
        ends.fromfile(fh, idx.stat().st_size // ends.itemsize)
    return data, list(ends)


def blast_chunks(ends: Sequence[int], size: int = BLAST_CHUNK) -> List[Tuple[int, int]]:
    """(start, end) byte ranges of about ``size`` bytes, cut at frame boundaries."""
    chunks = []
    start = 0
    for end in ends:
        if end - start >= size:
            chunks.append((start, end))
            start = end
    if ends and start < ends[-1]:
        chunks.append((start, ends[-1]))
    return chunks


# --- the server (runs in its own process; gevent is imported only there) ----------------------


def _say(line: str) -> None:
    # The parent reads these lines from our stdout: this is the feeder's protocol, not logging.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _reply(text: str) -> bytes:
    return p.encode_frame({"Content-Type": p.COMMAND_REPLY, "Reply-Text": text})


def _api_response(body: bytes) -> bytes:
    return p.encode_frame({"Content-Type": p.API_RESPONSE}, body)


def serve_esl(sock, on_subscribed_json_list) -> None:
    """Speak just enough mod_event_socket on ``sock`` for a confd node: auth, the subscription,
    ``json_list`` answered ``[]``, ``+OK`` to other api commands.  The first ``json_list`` on a
    subscribed connection calls ``on_subscribed_json_list(sock, lock)``, which starts the
    stream; whoever writes to ``sock`` takes ``lock`` so that frames never interleave."""
    from gevent import socket
    from gevent.lock import Semaphore

    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lock = Semaphore()

    def send(data: bytes) -> None:
        with lock:
            sock.sendall(data)

    parser = p.CommandParser()
    subscribed = False
    try:
        send(p.encode_frame({"Content-Type": p.AUTH_REQUEST}))
        while True:
            data = sock.recv(65536)
            if not data:
                return
            for cmd in parser.feed(data):
                line = cmd.line
                if line.startswith("auth "):
                    send(_reply("+OK accepted"))
                elif line.startswith("event "):
                    subscribed = True
                    send(_reply("+OK event listener enabled plain"))
                elif line.startswith("api "):
                    listing = "json_list" in line
                    send(_api_response(b"[]" if listing else b"+OK\n"))
                    if subscribed and listing:
                        on_subscribed_json_list(sock, lock)
                elif line == "exit":
                    send(_reply("+OK bye"))
                    return
                else:
                    send(_reply("-ERR command not found"))
    except OSError:
        return
    finally:
        sock.close()


class Feeder:
    def __init__(self, data: bytes, ends: List[int], mode: str, rate: float, count: int) -> None:
        self.data = memoryview(data)
        self.ends = ends[:count] if count else ends
        self.mode = mode
        self.rate = rate
        self.streamed = False

    def serve(self, port: int) -> None:
        from gevent.server import StreamServer

        server = StreamServer(("127.0.0.1", port), self._handle)
        server.start()
        _say("PORT %d" % server.server_port)
        server.serve_forever()

    def _handle(self, sock, _addr) -> None:
        def stream(sock, lock) -> None:
            if not self.streamed:
                self.streamed = True
                import gevent

                gevent.spawn(self._stream, sock, lock)

        serve_esl(sock, stream)

    def _stream(self, sock, lock) -> None:
        import gevent

        try:
            if self.mode == "blast":
                chunks = blast_chunks(self.ends)
                _say("FIRST %.6f" % time.monotonic())
                for a, b in chunks:
                    with lock:
                        sock.sendall(self.data[a:b])
                    gevent.sleep(0)  # let a waiting reply in between two chunks
            else:
                sent = 0
                total = len(self.ends)
                t0 = time.monotonic()
                _say("FIRST %.6f" % t0)
                while sent < total:
                    due = min(total, int((time.monotonic() - t0) * self.rate) + 1)
                    if due > sent:
                        a = self.ends[sent - 1] if sent else 0
                        with lock:
                            sock.sendall(self.data[a : self.ends[due - 1]])
                        sent = due
                    gevent.sleep(PACE_TICK)
            _say("DONE %.6f %d" % (time.monotonic(), len(self.ends)))
        except OSError as exc:
            _say("ERROR %s" % exc)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stream", required=True, type=Path)
    ap.add_argument("--mode", choices=("blast", "paced"), default="blast")
    ap.add_argument("--rate", type=float, default=5000.0, help="events/s in paced mode")
    ap.add_argument("--count", type=int, default=0, help="events to send (0: all)")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    data, ends = load_stream(args.stream)
    Feeder(data, ends, args.mode, args.rate, args.count).serve(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())

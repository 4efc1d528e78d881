"""ESL wire format: bytes <-> frames.  No sockets here.

A frame is a block of ``Name: value`` lines ended by an empty line, followed by exactly
``Content-Length`` bytes of body when that header is present.  Frame headers are plain ASCII;
the *body* of a ``text/event-plain`` frame is itself a header block whose values are
URL-encoded, one by one (never decode a whole frame: a decoded ``%0A`` would become a line
break and split a value).  ``text/event-json`` bodies are JSON objects of strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional
from urllib.parse import quote, unquote

# Content types FreeSWITCH sends (see confd_tests/captures/*.raw).
AUTH_REQUEST = "auth/request"
COMMAND_REPLY = "command/reply"
API_RESPONSE = "api/response"
EVENT_PLAIN = "text/event-plain"
EVENT_JSON = "text/event-json"
DISCONNECT_NOTICE = "text/disconnect-notice"
REPLY_TYPES = frozenset((COMMAND_REPLY, API_RESPONSE))
EVENT_TYPES = frozenset((EVENT_PLAIN, EVENT_JSON))

# Bounds: a header block larger than this is not ESL; a body larger than this is refused
# rather than buffered (the largest reply in the captures is ~1 MB, an echo of a 1 MB command).
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024


class ProtocolError(Exception):
    """The byte stream is not ESL; the connection must be dropped."""


@dataclass
class Frame:
    headers: Dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def reply_text(self) -> str:
        """What a reply says: ``Reply-Text`` of a command/reply, the body of an api/response."""
        if self.content_type == API_RESPONSE:
            return self.body.decode("utf-8", "replace")
        return self.headers.get("Reply-Text", "")


def _parse_header_block(block: bytes) -> Dict[str, str]:
    headers: Dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError("header line without a colon: %r" % line[:80])
        name = name.strip()
        # The first occurrence wins, as switch_event_get_header() does.
        if name not in headers:
            headers[name] = value.strip()
    return headers


def _content_length(headers: Mapping[str, str]) -> int:
    raw = headers.get("Content-Length")
    if raw is None:
        return 0
    if not raw.isdigit() or len(raw) > 9:
        raise ProtocolError("bad Content-Length: %r" % raw[:32])
    length = int(raw)
    if length > MAX_BODY_BYTES:
        raise ProtocolError("Content-Length %d over the %d byte bound" % (length, MAX_BODY_BYTES))
    return length


class FrameParser:
    """Incremental parser: feed it bytes as they arrive, in any segmentation."""

    def __init__(self, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self._buf = bytearray()
        self._max_header = max_header_bytes
        self._pending: Optional[Dict[str, str]] = None  # headers waiting for their body
        self._need = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> List[Frame]:
        self._buf += data
        return list(self._drain())

    def _drain(self) -> Iterator[Frame]:
        buf = self._buf
        while True:
            if self._pending is not None:
                if len(buf) < self._need:
                    return
                body = bytes(buf[: self._need])
                del buf[: self._need]
                headers, self._pending = self._pending, None
                yield Frame(headers, body)
                continue
            # Blank lines between frames carry nothing (FreeSWITCH never sends them, but a
            # peer that does must not desynchronise us).
            start = 0
            while start < len(buf) and buf[start] == 0x0A:
                start += 1
            if start:
                del buf[:start]
            end = buf.find(b"\n\n")
            if end < 0:
                if len(buf) > self._max_header:
                    raise ProtocolError("header block over %d bytes" % self._max_header)
                return
            if end > self._max_header:
                raise ProtocolError("header block over %d bytes" % self._max_header)
            headers = _parse_header_block(bytes(buf[:end]))
            del buf[: end + 2]
            length = _content_length(headers)
            if length:
                self._pending, self._need = headers, length
            else:
                yield Frame(headers)


class Event:
    """One FreeSWITCH event; header values are decoded only when asked for."""

    __slots__ = ("_raw", "_decoded", "_encoded", "body")

    def __init__(self, raw: Dict[str, str], encoded: bool, body: str = "") -> None:
        self._raw = raw
        self._encoded = encoded
        self._decoded: Dict[str, str] = {}
        self.body = body

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        if not self._encoded:
            return self._raw.get(name, default)
        try:
            return self._decoded[name]
        except KeyError:
            pass
        raw = self._raw.get(name)
        if raw is None:
            return default
        value = unquote(raw) if "%" in raw else raw
        self._decoded[name] = value
        return value

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._raw

    def names(self) -> List[str]:
        return list(self._raw)

    def with_prefix(self, prefix: str) -> Dict[str, str]:
        """Decoded values of every header whose name starts with ``prefix``."""
        return {n: self[n] for n in self._raw if n.startswith(prefix)}

    @property
    def name(self) -> str:
        return self.get("Event-Name", "") or ""

    @property
    def subclass(self) -> str:
        return self.get("Event-Subclass", "") or ""

    def as_dict(self) -> Dict[str, str]:
        return {n: self[n] for n in self._raw}


def parse_event(frame: Frame) -> Event:
    """Turn a ``text/event-plain`` or ``text/event-json`` frame into an Event."""
    ctype = frame.content_type
    if ctype == EVENT_PLAIN:
        head, sep, rest = frame.body.partition(b"\n\n")
        raw = _parse_header_block(head)
        body = ""
        if sep and "Content-Length" in raw:
            body = rest[: _content_length(raw)].decode("utf-8", "replace")
        return Event(raw, encoded=True, body=body)
    if ctype == EVENT_JSON:
        try:
            obj = json.loads(frame.body)
        except ValueError as exc:
            raise ProtocolError("event-json body is not JSON: %s" % exc) from None
        if not isinstance(obj, dict):
            raise ProtocolError("event-json body is not an object")
        body = obj.pop("_body", "")
        raw = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in obj.items()}
        return Event(raw, encoded=False, body=body if isinstance(body, str) else "")
    raise ProtocolError("not an event frame: %r" % ctype)


# --- encoding (used by the simulator and the tests' fake FreeSWITCH) -------------------------


def encode_frame(headers: Mapping[str, str], body: bytes = b"") -> bytes:
    """A frame as FreeSWITCH writes it: events start with Content-Length, replies and notices
    with Content-Type (compare an event and an api/response in s1_room1_plain.raw)."""
    lines = ["%s: %s" % (n, v) for n, v in headers.items() if n != "Content-Length"]
    if body:
        length = "Content-Length: %d" % len(body)
        if headers.get("Content-Type") in EVENT_TYPES:
            lines.insert(0, length)
        else:
            lines.insert(1, length)
    return ("\n".join(lines) + "\n\n").encode() + body


def encode_plain_event(headers: Mapping[str, str], body: str = "") -> bytes:
    """A whole ``text/event-plain`` frame with URL-encoded values, as mod_event_socket sends."""
    lines = ["%s: %s" % (n, quote(str(v), safe="")) for n, v in headers.items()]
    text = "\n".join(lines) + "\n"
    if body:
        data = body.encode()
        text += "Content-Length: %d\n\n" % len(data)
        payload = text.encode() + data
    else:
        payload = (text + "\n").encode()
    return encode_frame({"Content-Type": EVENT_PLAIN}, payload)


def encode_json_event(headers: Mapping[str, str], body: str = "") -> bytes:
    obj = dict(headers)
    if body:
        obj["_body"] = body
    return encode_frame(
        {"Content-Type": EVENT_JSON}, json.dumps(obj, separators=(",", ":")).encode()
    )


def encode_command(line: str) -> bytes:
    """A client command.  Refuses anything that could end the line early."""
    if any(c in line for c in "\r\n\x00"):
        raise ValueError("command text contains CR, LF or NUL")
    return line.encode() + b"\n\n"


@dataclass
class CommandRequest:
    """A command as a server (the simulator) reads it: first line plus extra header lines."""

    line: str
    headers: Dict[str, str] = field(default_factory=dict)


class CommandParser:
    """Server side: split the client's stream into commands (blocks ended by an empty line)."""

    def __init__(self, max_bytes: int = MAX_HEADER_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_bytes

    def feed(self, data: bytes) -> List[CommandRequest]:
        self._buf += data
        out = []
        while True:
            end = self._buf.find(b"\n\n")
            if end < 0:
                if len(self._buf) > self._max:
                    raise ProtocolError("command over %d bytes" % self._max)
                return out
            block = bytes(self._buf[:end]).decode("utf-8", "replace")
            del self._buf[: end + 2]
            lines = [ln.rstrip("\r") for ln in block.split("\n")]
            lines = [ln for ln in lines if ln]
            if not lines:
                continue
            headers = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                headers[k.strip()] = v.strip()
            out.append(CommandRequest(lines[0], headers))

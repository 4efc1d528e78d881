"""ESL wire format: bytes <-> frames.  No sockets here.

A frame is a block of ``Name: value`` lines ended by an empty line, followed by exactly
``Content-Length`` bytes of body when that header is present.  Frame headers are plain ASCII;
the *body* of a ``text/event-plain`` frame is itself a header block whose values are
URL-encoded, one by one (never decode a whole frame: a decoded ``%0A`` would become a line
break and split a value).  ``text/event-json`` bodies are JSON objects of strings.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional
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


_DIGITS = re.compile(r"[0-9]{1,9}")


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
    if not _DIGITS.fullmatch(raw):  # ASCII only: str.isdigit() takes "²" and "١٢"
        raise ProtocolError("bad Content-Length: %r" % raw[:32])
    length = int(raw)
    if length > MAX_BODY_BYTES:
        raise ProtocolError("Content-Length %d over the %d byte bound" % (length, MAX_BODY_BYTES))
    return length


class FrameParser:
    """Incremental parser: feed it bytes as they arrive, in any segmentation.

    Unparsed bytes are copied once per feed, not once per frame; a body that arrives in many
    pieces is collected as a list and joined once it is complete (no quadratic copying)."""

    def __init__(self, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self._buf = b""
        self._max_header = max_header_bytes
        self._pending: Optional[Dict[str, str]] = None  # headers waiting for their body
        self._need = 0
        self._parts: List[bytes] = []  # pieces of a body still incomplete
        self._have = 0

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._have

    def feed(self, data: bytes) -> List[Frame]:
        if self._pending is not None and self._have + len(data) < self._need:
            self._parts.append(bytes(data))
            self._have += len(data)
            return []
        if self._parts:
            buf = b"".join(self._parts) + data
            self._parts, self._have = [], 0
        else:
            buf = self._buf + data if self._buf else bytes(data)
        frames: List[Frame] = []
        pos, end_all = 0, len(buf)
        try:
            while True:
                if self._pending is not None:
                    if end_all - pos < self._need:
                        break
                    stop = pos + self._need
                    frames.append(Frame(self._pending, buf[pos:stop]))
                    self._pending, pos = None, stop
                    continue
                # Blank lines between frames carry nothing (FreeSWITCH never sends them, but a
                # peer that does must not desynchronise us).
                while pos < end_all and buf[pos] == 0x0A:
                    pos += 1
                end = buf.find(b"\n\n", pos)
                if end < 0:
                    if end_all - pos > self._max_header:
                        raise ProtocolError("header block over %d bytes" % self._max_header)
                    break
                if end - pos > self._max_header:
                    raise ProtocolError("header block over %d bytes" % self._max_header)
                headers = _parse_header_block(buf[pos:end])
                pos = end + 2
                length = _content_length(headers)
                if length:
                    self._pending, self._need = headers, length
                else:
                    frames.append(Frame(headers))
        finally:
            rest = buf[pos:] if pos < end_all else b""
            if self._pending is not None and rest:
                self._parts, self._have, self._buf = [rest], len(rest), b""
            else:
                self._buf = rest
        return frames


# The same encoded values come again and again (subclass, host names, caller ids).
_unquote = functools.lru_cache(maxsize=4096)(unquote)
_HEADER_LINE = re.compile(r"^([^:\n]+): ?([^\n]*)$", re.M)


def _trie_pattern(words: List[str]) -> str:
    """A regex alternation of ``words`` factored by common prefixes: at each line of an event
    the engine then tests a few first characters instead of every name (about 40% faster
    than a flat alternation on a 90-line event)."""
    if "" in words:
        rest = [w for w in words if w]
        return "(?:%s)?" % _trie_pattern(rest) if rest else ""
    groups: Dict[str, List[str]] = {}
    for w in words:
        groups.setdefault(w[0], []).append(w[1:])
    alternatives = [re.escape(c) + _trie_pattern(tails) for c, tails in sorted(groups.items())]
    return alternatives[0] if len(alternatives) == 1 else "(?:%s)" % "|".join(alternatives)


class HeaderSet:
    """A fixed set of header names to pick from an event in one pass."""

    def __init__(self, names) -> None:
        self.names = tuple(names)
        if not self.names or any(not n or "\n" in n or ": " in n for n in self.names):
            raise ValueError("header names must be non-empty, without line breaks or ': '")
        self.regex = re.compile(r"\n(" + _trie_pattern(sorted(set(self.names))) + r"): ([^\n]*)")


class Event:
    """One FreeSWITCH event; header values are found and decoded only when asked for.

    A plain event's header block is kept as text and searched per header: an event carries
    ~80 headers of which confd reads ~20, and FreeSWITCH URL-encodes every value, so a value
    never contains a line break and ``"\nName: "`` finds exactly its line.  The first
    occurrence wins, as ``switch_event_get_header()`` does (floor-change and
    energy-level-member repeat headers: s1_room1_plain.raw)."""

    __slots__ = ("_text", "_map", "body", "_picked")

    def __init__(
        self, text: Optional[str] = None, mapping: Optional[Dict[str, str]] = None, body: str = ""
    ) -> None:
        self._text = text  # "\n" + header block + "\n" (plain events)
        self._map = mapping  # decoded values (json events)
        self.body = body
        self._picked: Optional[tuple] = None

    def pick(self, wanted: HeaderSet) -> Dict[str, str]:
        """The decoded values of the ``wanted`` headers present, in one regex pass over the
        block (cheaper than one search per header when most of them are read)."""
        if self._map is not None:
            m = self._map
            return {n: m[n] for n in wanted.names if n in m}
        picked = self._picked
        if picked is not None and picked[0] is wanted:
            return picked[1]
        pairs = wanted.regex.findall(self._text)
        pairs.reverse()  # the first occurrence wins
        values = dict(pairs)
        for k, v in values.items():
            if "%" in v:
                values[k] = _unquote(v)
        self._picked = (wanted, values)
        return values

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        if self._map is not None:
            return self._map.get(name, default)
        text = self._text
        key = "\n" + name + ": "
        i = text.find(key)
        if i < 0:
            return default  # FreeSWITCH writes an empty value as "Name: " (s1: "New-ID: ")
        i += len(key)
        raw = text[i : text.find("\n", i)]
        return _unquote(raw) if "%" in raw else raw

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def _pairs(self) -> List[tuple]:
        return [(k.strip(), v.strip()) for k, v in _HEADER_LINE.findall(self._text or "")]

    def names(self) -> List[str]:
        if self._map is not None:
            return list(self._map)
        seen: Dict[str, None] = {}
        for k, _ in self._pairs():
            seen.setdefault(k, None)
        return list(seen)

    def with_prefix(self, prefix: str) -> Dict[str, str]:
        """Decoded values of every header whose name starts with ``prefix`` (first wins)."""
        if self._map is not None:
            return {n: v for n, v in self._map.items() if n.startswith(prefix)}
        out: Dict[str, str] = {}
        if "\n" + prefix not in self._text:  # the common case: nothing to scan
            return out
        for k, v in self._pairs():
            if k.startswith(prefix) and k not in out:
                out[k] = _unquote(v) if "%" in v else v
        return out

    @property
    def name(self) -> str:
        return self.get("Event-Name", "") or ""

    @property
    def subclass(self) -> str:
        return self.get("Event-Subclass", "") or ""

    def as_dict(self) -> Dict[str, str]:
        return {n: self[n] for n in self.names()}


def parse_event(frame: Frame) -> Event:
    """Turn a ``text/event-plain`` or ``text/event-json`` frame into an Event."""
    ctype = frame.content_type
    if ctype == EVENT_PLAIN:
        head, sep, rest = frame.body.partition(b"\n\n")
        text = "\n" + head.decode("utf-8", "replace") + "\n"
        event = Event(text=text)
        body = ""
        if sep and rest:
            length = event.get("Content-Length")
            if length is not None:
                body = rest[: _content_length({"Content-Length": length})].decode(
                    "utf-8", "replace"
                )
        event.body = body
        return event
    if ctype == EVENT_JSON:
        try:
            obj = json.loads(frame.body)
        except ValueError as exc:
            raise ProtocolError("event-json body is not JSON: %s" % exc) from None
        if not isinstance(obj, dict):
            raise ProtocolError("event-json body is not an object")
        body = obj.pop("_body", "")
        raw = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in obj.items()}
        return Event(mapping=raw, body=body if isinstance(body, str) else "")
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

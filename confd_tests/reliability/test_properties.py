"""Property tests: the ESL parser on any segmentation and any bytes, the live state against a
reference model written here as plain dicts, and the command builder under any operator
pattern and selector (complements the value properties of conferences/test_commands.py)."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from unittest import mock

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from confd.conferences import events as ev
from confd.conferences.commands import (
    CONFERENCE_ACTIONS,
    MEMBER_ACTIONS,
    RELAXED_NAME_PATTERN,
    SELECTOR_FOR,
    SELECTORS,
    Command,
    CommandBuilder,
    InvalidCommand,
)
from confd.conferences.state import REASON_NODE_LOST, REASON_RESYNC, LiveState
from confd.esl import protocol as p

CAPTURES = Path(__file__).resolve().parent.parent / "captures"
CAPTURE_NAMES = sorted(f.stem for f in CAPTURES.glob("*.raw"))
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _raw(name: str, _cache: Dict[str, bytes] = {}) -> bytes:  # noqa: B006 - a read-only cache
    if name not in _cache:
        _cache[name] = (CAPTURES / (name + ".raw")).read_bytes()
    return _cache[name]


def _frames(frames: List[p.Frame]) -> List[Tuple[Dict[str, str], bytes]]:
    return [(f.headers, f.body) for f in frames]


def _segments(data: bytes, cuts: List[int]) -> List[bytes]:
    bounds = sorted({0, len(data), *(c for c in cuts if 0 < c < len(data))})
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


# --- the parser: any segmentation of real traffic -----------------------------------------------


@SETTINGS
@given(
    name=st.sampled_from(CAPTURE_NAMES),
    cuts=st.lists(st.floats(min_value=0, max_value=1), max_size=80),
    window=st.tuples(st.floats(min_value=0, max_value=1), st.integers(0, 300)),
)
def test_same_frames_whatever_the_cuts(name: str, cuts: List[float], window) -> None:
    raw = _raw(name)
    whole = p.FrameParser().feed(raw)
    assert whole, name
    # random cut points anywhere, plus every byte inside one window (a byte-by-byte stretch)
    points = [int(c * len(raw)) for c in cuts]
    start = int(window[0] * len(raw))
    points += range(start, min(len(raw), start + window[1]))
    parser = p.FrameParser()
    got: List[p.Frame] = []
    for piece in _segments(raw, points):
        got += parser.feed(piece)
    assert _frames(got) == _frames(whole)
    assert parser.buffered == 0
    # and every event frame still reads as the same event
    for a, b in zip(got, whole):
        if a.content_type in p.EVENT_TYPES:
            assert p.parse_event(a).as_dict() == p.parse_event(b).as_dict()


# --- the parser: any bytes -------------------------------------------------------------------

SMALL_HEADER = 256
SMALL_BODY = 512


def _real_fragments() -> List[bytes]:
    raw = _raw("s1_room1_plain")
    return [raw[i : i + n] for i, n in ((0, 40), (100, 200), (5000, 333), (20000, 90))]


_BLOCKS = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"\n",
            b"\n\n",
            b":",
            b"Content-Length: ",
            b"Content-Type: text/event-plain\n",
            b"Content-Type: text/event-json\n",
            b"Content-Type: api/response\n",
            b"Content-Type: text/disconnect-notice\n",
            b"Content-Length: 10\n\n",
            b"Content-Length: 999999999\n\n",
            b"Content-Length: -1\n\n",
            "Content-Length: ²\n\n".encode(),  # isdigit() but not an int() literal
            "Content-Length: ١٢\n\n".encode(),  # Arabic-Indic digits
            b"Content-Length: 0x10\n\n",
            b"\r\n\r\n",
            b"\x00" * 8,
            b"{}",
            b'{"Event-Name": 5}',
            b"[1, 2]",
            b"a" * 300,
        ]
        + _real_fragments()
    ),
    st.integers(0, 2000).map(lambda n: b"Content-Length: %d\n\n" % n),
)


@SETTINGS
@given(
    blocks=st.lists(_BLOCKS, max_size=30),
    cuts=st.lists(st.integers(0, 4000), max_size=20),
)
@example(blocks=["Content-Length: ²\n\n".encode()], cuts=[])
@example(
    blocks=[b"Content-Type: text/event-plain\nContent-Length: 9\n\n", b"A: %zz\n\n\n"], cuts=[]
)
def test_any_bytes_give_frames_or_a_protocol_error(blocks: List[bytes], cuts: List[int]) -> None:
    data = b"".join(blocks)
    parser = p.FrameParser(max_header_bytes=SMALL_HEADER)
    t0 = time.monotonic()
    with mock.patch.object(p, "MAX_BODY_BYTES", SMALL_BODY):
        try:
            for piece in _segments(data, cuts):
                for frame in parser.feed(piece):
                    length = frame.headers.get("Content-Length")
                    assert len(frame.body) == (int(length) if length is not None else 0)
                    if frame.content_type in p.EVENT_TYPES:
                        event = p.parse_event(frame)  # ProtocolError is the only way out
                        event.as_dict()
                # bounded memory: never more than one header block plus one body waiting
                assert parser.buffered <= SMALL_HEADER + SMALL_BODY
        except p.ProtocolError:
            pass  # the connection would be dropped: that is the contract
    assert time.monotonic() - t0 < 2.0  # never loops


# --- intake: any header values ------------------------------------------------------------------

_VALUE = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["²", "١٢", "7", "-1", "none", "true", "", " 3", "1e3", "99999999999999999999"]
    ),
)
_HEADER_NAMES = (
    "Member-ID",
    "New-ID",
    "Event-Date-Timestamp",
    "Energy-Level",
    "Current-Energy",
    "Hear",
    "Speak",
    "Conference-Name",
    "Unique-ID",
    "Member-Type",
)


@SETTINGS
@given(
    action=st.sampled_from(
        [ev.ADD_MEMBER, ev.MUTE_MEMBER, ev.DEL_MEMBER, ev.FLOOR_CHANGE, ev.CONFERENCE_CREATE]
    ),
    values=st.fixed_dictionaries({n: _VALUE for n in _HEADER_NAMES}),
    fmt=st.sampled_from(["plain", "json"]),
)
@example(action=ev.FLOOR_CHANGE, values={"New-ID": "²"}, fmt="plain")
@example(action=ev.CONFERENCE_CREATE, values={"Event-Date-Timestamp": "²"}, fmt="plain")
@example(action=ev.ADD_MEMBER, values={"Event-Date-Timestamp": "9" * 400}, fmt="plain")
def test_any_header_values_never_break_intake(action: str, values: Dict[str, str], fmt: str):
    """FreeSWITCH values reach translate() URL-decoded: whatever they hold, intake goes on
    (a crash in the reader greenlet would drop the node and be reported as an EOF)."""
    headers = {
        "Event-Name": "CUSTOM",
        "Event-Subclass": ev.SUBCLASS,
        "Conference-Unique-ID": "u1",
        "Action": action,
        **values,
    }
    data = (p.encode_json_event if fmt == "json" else p.encode_plain_event)(headers)
    (frame,) = p.FrameParser().feed(data)
    change = ev.translate(p.parse_event(frame))
    if change is not None:
        LiveState().apply("fs1", change)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # includes inf and nan: Python's json reads Infinity and NaN
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_MEMBER = st.fixed_dictionaries(
    {"id": st.one_of(st.integers(-3, 5), _JSON), "uuid": _JSON},
    optional={"energy": _JSON, "join_time": _JSON, "flags": _JSON, "type": _JSON},
)
_LISTED = st.fixed_dictionaries(
    {"conference_uuid": st.one_of(st.just("u1"), _JSON)},
    optional={
        "conference_name": _JSON,
        "run_time": _JSON,
        "locked": _JSON,
        "members": st.one_of(st.lists(_MEMBER, max_size=3), _JSON),
    },
)


@SETTINGS
@given(listing=st.one_of(st.lists(_LISTED, max_size=3), _JSON))
@example(listing=[{"conference_uuid": "u1", "members": [{"id": 1, "uuid": "c", "energy": 1e400}]}])
@example(listing=[{"conference_uuid": "u1", "run_time": 1e400}])
def test_any_json_list_reply_gives_a_usable_snapshot(listing) -> None:
    """Whatever a json_list reply holds, the resync gets a snapshot with finite times (the API
    renders them as Gregorian seconds with int(), which fails on inf and nan)."""
    snapshot = ev.snapshot_from_json_list(json.dumps(listing), "fs1", 1_700_000_000.0)
    state = LiveState()
    state.apply("fs1", snapshot)
    for conf in state.conferences("fs1"):
        assert math.isfinite(conf.start_time)
        for q in conf.participants.values():
            assert q.participant_id > 0
            q.to_api(1_700_000_000.0)


# --- the live state against a reference model -----------------------------------------------------

NODES = ("fs1", "fs2")
# Names that test the per-value URL decoding of plain events; two nodes may host the same name.
CONF_NAMES = ("alpha", "a b%2F", "über", "x:y")


class World:
    """One FreeSWITCH process as plain dicts, and what confd should show of it."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.confs: Dict[str, dict] = {}  # name -> {"uuid", "locked", "floor", "members"}
        self.next_id = 1  # member ids per process, from 1 after a restart
        self.uuids = 0
        self.visible = True  # connected: confd sees the events

    def new_uuid(self, kind: str) -> str:
        self.uuids += 1
        return "%s-%s-%d" % (self.node, kind, self.uuids)

    def expected(self) -> Dict[str, tuple]:
        if not self.visible:
            return {}
        out = {}
        for name, c in self.confs.items():
            members = {
                mid: (
                    m["uuid"],
                    m["hear"],
                    m["speak"],
                    m["moderator"],
                    m["talking"],
                    c["floor"] == mid,
                )
                for mid, m in c["members"].items()
            }
            out[c["uuid"]] = (name, c["locked"], members)
        return out

    def members(self) -> List[Tuple[str, int]]:
        return sorted((name, mid) for name, c in self.confs.items() for mid in c["members"])

    def json_list(self) -> str:
        return json.dumps(
            [
                {
                    "conference_name": name,
                    "conference_uuid": c["uuid"],
                    "run_time": 3,
                    "locked": c["locked"],
                    "members": [
                        {
                            "type": "caller",
                            "id": mid,
                            "uuid": m["uuid"],
                            "caller_id_name": "Outbound Call",
                            "caller_id_number": str(mid),
                            "join_time": 2,
                            "energy": 100,
                            "flags": {
                                "can_hear": m["hear"],
                                "can_speak": m["speak"],
                                "talking": m["talking"],
                                "has_floor": c["floor"] == mid,
                                "is_moderator": m["moderator"],
                            },
                        }
                        for mid, m in c["members"].items()
                    ],
                }
                for name, c in self.confs.items()
            ]
        )


def _conf_headers(name: str, conf: dict, action: str) -> Dict[str, str]:
    return {
        "Event-Name": "CUSTOM",
        "Event-Subclass": ev.SUBCLASS,
        "Event-Date-Timestamp": "1700000000000000",
        "Conference-Name": name,
        "Conference-Unique-ID": conf["uuid"],
        "Conference-Profile-Name": "default",
        "Action": action,
    }


def _member_headers(name: str, conf: dict, mid: int, action: str) -> Dict[str, str]:
    m = conf["members"][mid]

    def b(v: bool) -> str:
        return "true" if v else "false"

    h = _conf_headers(name, conf, action)
    h.update(
        {
            "Unique-ID": m["uuid"],
            "Member-ID": str(mid),
            "Member-Type": "moderator" if m["moderator"] else "member",
            "Hear": b(m["hear"]),
            "Speak": b(m["speak"]),
            "Talking": b(m["talking"]),
            "Floor": b(conf["floor"] == mid),
            "Caller-Caller-ID-Name": "Outbound Call",
            "Caller-Orig-Caller-ID-Name": "caller %d" % mid,
            "Energy-Level": "100",
        }
    )
    return h


class Harness:
    def __init__(self) -> None:
        self.state = LiveState()
        self.worlds = {n: World(n) for n in NODES}
        self.parser = {n: p.FrameParser() for n in NODES}

    def deliver(self, node: str, headers: Dict[str, str], fmt: str) -> None:
        """Through the wire format and the real parser, as the node supervisor takes it."""
        if not self.worlds[node].visible:
            return  # confd is not connected: the event is lost to it
        data = (p.encode_json_event if fmt == "json" else p.encode_plain_event)(headers)
        (frame,) = self.parser[node].feed(data)
        change = ev.translate(p.parse_event(frame))
        if change is not None:
            self.state.apply(node, change)

    def actual(self, node: str) -> Dict[str, tuple]:
        out = {}
        for conf in self.state.conferences(node):
            members = {
                q.participant_id: (q.call_id, q.hear, q.speak, q.is_moderator, q.talking, q.floor)
                for q in conf.participants.values()
            }
            out[conf.uuid] = (conf.name, conf.is_locked, members)
        return out

    def check(self) -> None:
        for node in NODES:
            assert self.actual(node) == self.worlds[node].expected(), node
            assert self.state.counts(node) == (
                len(self.worlds[node].expected()),
                sum(len(v[2]) for v in self.worlds[node].expected().values()),
            )
        for name in CONF_NAMES:
            want = {
                (n, w.confs[name]["uuid"])
                for n, w in self.worlds.items()
                if w.visible and name in w.confs
            }
            assert {(c.node, c.uuid) for c in self.state.find(name)} == want, name

    # --- the operations (what FreeSWITCH does, and the events it sends) ---

    def join(self, node, ci, moderator, muted, deaf, missed_create, fmt) -> None:
        w = self.worlds[node]
        name = CONF_NAMES[ci % len(CONF_NAMES)]
        conf = w.confs.get(name)
        if conf is not None and conf["locked"]:
            return  # a locked conference refuses the caller, no event at all
        if conf is None:
            conf = {"uuid": w.new_uuid("conf"), "locked": False, "floor": None, "members": {}}
            w.confs[name] = conf
            if not missed_create:
                self.deliver(node, _conf_headers(name, conf, ev.CONFERENCE_CREATE), fmt)
        mid = w.next_id
        w.next_id += 1
        conf["members"][mid] = {
            "uuid": w.new_uuid("call"),
            "moderator": moderator,
            "speak": not muted,
            "hear": not deaf,
            "talking": False,
        }
        self.deliver(node, _member_headers(name, conf, mid, ev.ADD_MEMBER), fmt)

    def _pick(self, node, idx) -> Optional[Tuple[str, dict, int]]:
        members = self.worlds[node].members()
        if not members:
            return None
        name, mid = members[idx % len(members)]
        return name, self.worlds[node].confs[name], mid

    def leave(self, node, idx, fmt) -> None:
        picked = self._pick(node, idx)
        if picked is None:
            return
        name, conf, mid = picked
        headers = _member_headers(name, conf, mid, ev.DEL_MEMBER)
        del conf["members"][mid]
        if conf["floor"] == mid:
            conf["floor"] = None
        self.deliver(node, headers, fmt)
        if not conf["members"]:
            del self.worlds[node].confs[name]
            self.deliver(node, _conf_headers(name, conf, ev.CONFERENCE_DESTROY), fmt)

    def flag(self, node, idx, action, fmt) -> None:
        picked = self._pick(node, idx)
        if picked is None:
            return
        name, conf, mid = picked
        m = conf["members"][mid]
        if action == ev.MUTE_MEMBER:
            m["speak"], m["talking"] = False, False  # FreeSWITCH sends no stop-talking
        elif action == ev.UNMUTE_MEMBER:
            m["speak"] = True
        else:
            m["hear"] = action == ev.UNDEAF_MEMBER
        self.deliver(node, _member_headers(name, conf, mid, action), fmt)

    def talk(self, node, idx, talking, fmt) -> None:
        picked = self._pick(node, idx)
        if picked is None:
            return
        name, conf, mid = picked
        m = conf["members"][mid]
        if m["talking"] == talking or (talking and not m["speak"]):
            return
        m["talking"] = talking
        action = ev.START_TALKING if talking else ev.STOP_TALKING
        self.deliver(node, _member_headers(name, conf, mid, action), fmt)

    def lock(self, node, ci, locked, fmt) -> None:
        name = CONF_NAMES[ci % len(CONF_NAMES)]
        conf = self.worlds[node].confs.get(name)
        if conf is None:
            return
        conf["locked"] = locked
        self.deliver(node, _conf_headers(name, conf, ev.LOCK if locked else ev.UNLOCK), fmt)

    def floor(self, node, idx, nobody, fmt) -> None:
        picked = self._pick(node, idx)
        if picked is None:
            return
        name, conf, mid = picked
        old = conf["floor"]
        conf["floor"] = None if nobody else mid
        headers = _conf_headers(name, conf, ev.FLOOR_CHANGE)
        headers["Old-ID"] = "none" if old is None else str(old)
        headers["New-ID"] = "none" if conf["floor"] is None else str(conf["floor"])
        self.deliver(node, headers, fmt)

    def destroy(self, node, ci, fmt) -> None:
        name = CONF_NAMES[ci % len(CONF_NAMES)]
        conf = self.worlds[node].confs.pop(name, None)
        if conf is not None:  # ended with members still in it (endconf): no del-member first
            self.deliver(node, _conf_headers(name, conf, ev.CONFERENCE_DESTROY), fmt)

    def lose(self, node, restart) -> None:
        w = self.worlds[node]
        known = w.expected()
        updates = self.state.drop_node(node)
        # events.md, lifecycle step 5: every participant leaves, then its conference ends, each
        # with reason node_lost
        assert all(u.reason == REASON_NODE_LOST for u in updates)
        assert sorted(
            (u.conference.uuid, u.participant.participant_id) for u in updates if u.participant
        ) == sorted((uuid, mid) for uuid, (_, _, members) in known.items() for mid in members)
        ends = [u.conference.uuid for u in updates if u.event == ev.CONFERENCE_DESTROY]
        assert sorted(ends) == sorted(known)
        for i, u in enumerate(updates):
            if u.event == ev.CONFERENCE_DESTROY:
                assert all(v.conference.uuid != u.conference.uuid for v in updates[i + 1 :])
        w.visible = False
        self.parser[node] = p.FrameParser()
        if restart:  # FreeSWITCH restarted: nothing survives, ids from 1 again
            w.confs, w.next_id = {}, 1

    def resync(self, node) -> None:
        w = self.worlds[node]
        before = self.actual(node)
        snapshot = ev.snapshot_from_json_list(w.json_list(), node, 1_700_000_100.0)
        updates = self.state.apply(node, snapshot)
        w.visible = True
        after = w.expected()
        # events.md, lifecycle step 6: what confd learns or forgets, and only that, is published
        # with reason resync, each conference created before its participants join
        assert all(u.reason == REASON_RESYNC for u in updates)
        creates = [u.conference.uuid for u in updates if u.event == ev.CONFERENCE_CREATE]
        assert sorted(creates) == sorted(set(after) - set(before))
        ends = [u.conference.uuid for u in updates if u.event == ev.CONFERENCE_DESTROY]
        assert sorted(ends) == sorted(set(before) - set(after))

        def calls(view):
            return {(u, m, v[0]) for u, (_, _, ms) in view.items() for m, v in ms.items()}

        joins = {
            (u.conference.uuid, u.participant.participant_id, u.participant.call_id)
            for u in updates
            if u.event == ev.ADD_MEMBER
        }
        leaves = {
            (u.conference.uuid, u.participant.participant_id, u.participant.call_id)
            for u in updates
            if u.event == ev.DEL_MEMBER
        }
        # a member id known under another conference uuid is a different participant
        assert joins == calls(after) - calls(before)
        assert leaves == calls(before) - calls(after)
        created = set()
        for u in updates:
            if u.event == ev.CONFERENCE_CREATE:
                created.add(u.conference.uuid)
            elif u.event == ev.ADD_MEMBER and u.conference.uuid in creates:
                assert u.conference.uuid in created


_NODE = st.sampled_from(NODES)
_FMT = st.sampled_from(["plain", "json"])
_IDX = st.integers(0, 50)
_RARE = st.sampled_from([False, False, False, False, True])
_ARGS = {
    "join": st.tuples(_NODE, _IDX, _RARE, _RARE, _RARE, _RARE, _FMT),
    "leave": st.tuples(_NODE, _IDX, _FMT),
    "flag": st.tuples(
        _NODE,
        _IDX,
        st.sampled_from([ev.MUTE_MEMBER, ev.UNMUTE_MEMBER, ev.DEAF_MEMBER, ev.UNDEAF_MEMBER]),
        _FMT,
    ),
    "talk": st.tuples(_NODE, _IDX, st.booleans(), _FMT),
    "lock": st.tuples(_NODE, _IDX, st.booleans(), _FMT),
    "floor": st.tuples(_NODE, _IDX, _RARE, _FMT),
    "destroy": st.tuples(_NODE, _IDX, _FMT),
    "lose": st.tuples(_NODE, st.booleans()),
    "resync": st.tuples(_NODE),
}
# Weighted so that conferences fill up before they are torn down.
_KINDS = (
    ["join"] * 5
    + ["leave"] * 2
    + ["flag"] * 3
    + ["talk"] * 3
    + ["lock", "floor", "floor", "destroy", "lose", "resync", "resync"]
)
_OPS = st.sampled_from(_KINDS).flatmap(lambda kind: _ARGS[kind].map(lambda args: (kind, *args)))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_OPS, min_size=30, max_size=100))
def test_live_state_equals_the_reference_model(ops) -> None:
    h = Harness()
    for op in ops:
        getattr(h, op[0])(*op[1:])
        h.check()


# --- the command builder: any operator pattern, any selector --------------------------------------

_PIECES = st.sampled_from(
    [
        r"[a-z]",
        r"[0-9a-f]",
        r"\w",
        r"\S",
        r".",
        r"[^/]",
        r"\s",
        r"[ -~]",
        r"room",
        r"-",
        r"\d",
        r"[\n\r\x00]",
        r"[^a]",
    ]
)
_QUANT = st.sampled_from(["", "+", "*", "?", "{1,8}", "{32}"])
_FLAGS = st.sampled_from(["", "(?i)", "(?s)", "(?m)", "(?a)", "(?s)(?i)"])
_PATTERNS = st.one_of(
    st.builds(
        lambda flags, parts: flags + "".join(a + q for a, q in parts),
        _FLAGS,
        st.lists(st.tuples(_PIECES, _QUANT), min_size=1, max_size=4),
    ),
    st.builds(lambda flags, a, b: "%s(?:%s|%s)+" % (flags, a, b), _FLAGS, _PIECES, _PIECES),
    st.sampled_from([r"[0-9a-f]{32}", RELAXED_NAME_PATTERN, r"(?s).*", r".*\Z", r"[\s\S]+"]),
)
_ANY_TEXT = st.text(
    alphabet=st.characters() | st.sampled_from(list("\r\n\x00\t  az09_")), max_size=30
)
_SELECTORS = st.one_of(
    _ANY_TEXT,
    st.sampled_from(
        list(SELECTORS)
        + [
            "ALL",
            "All",
            "last",
            "non_moderator\n",
            "all\n\napi status",
            "all ",
            " all",
            "1",
            "caller_id_number=6102",
        ]
    ),
)


_VALID_ACTIONS = st.sampled_from(MEMBER_ACTIONS + CONFERENCE_ACTIONS)


def _assert_one_command(cmd: Command, tokens: List[str]) -> None:
    line = cmd.line()
    assert not any(c in line for c in "\r\n\x00")
    assert line.split(" ") == ["api", *tokens]
    assert all(t and t.isascii() and t.isprintable() for t in tokens)
    # what FreeSWITCH would read: exactly one command, the same line, no extra header lines
    (request,) = p.CommandParser().feed(p.encode_command(line))
    assert request.line == line and request.headers == {}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pattern=_PATTERNS,
    data=st.data(),
    action=st.one_of(*[_VALID_ACTIONS] * 3, _ANY_TEXT),
    selector=st.one_of(st.sampled_from(SELECTORS), _SELECTORS),
    member_id=st.one_of(
        st.integers(-5, 2**32), st.from_regex(r"[0-9]{1,11}", fullmatch=True), _ANY_TEXT
    ),
)
def test_builder_emits_one_clean_command_for_any_pattern(
    pattern, data, action, selector, member_id
):
    try:
        builder = CommandBuilder(pattern)
    except ValueError:
        return  # not a regular expression: a configuration error, refused up front
    name = data.draw(
        st.one_of(st.from_regex(re.compile(pattern), fullmatch=True), _ANY_TEXT), label="name"
    )
    builds = {
        "selector": (
            lambda: builder.selector(name, action, selector),
            lambda: ["conference", name, action, selector],
        ),
        "everyone": (
            lambda: builder.everyone(name, action),
            lambda: ["conference", name, action, SELECTOR_FOR[action]],
        ),
        "member": (
            lambda: builder.member(name, action, member_id),
            lambda: ["conference", name, action, str(int(member_id))],
        ),
        "conference": (
            lambda: builder.conference_action(name, action),
            lambda: ["conference", name, action],
        ),
        "json_list": (lambda: builder.json_list(name), lambda: ["conference", name, "json_list"]),
    }
    built: Dict[str, Command] = {}
    for kind, (build, tokens) in builds.items():
        try:
            built[kind] = build()
        except InvalidCommand:
            continue
        _assert_one_command(built[kind], tokens())
    if built:
        # whatever the operator allowed, a name also obeys the relaxed rule
        assert re.fullmatch(RELAXED_NAME_PATTERN, name) and re.fullmatch(pattern, name)
    if "selector" in built:
        assert selector in SELECTORS and action in MEMBER_ACTIONS
    if "member" in built:
        assert 1 <= int(built["member"].target) <= 2**31 - 1
    if "conference" in built:
        assert action in CONFERENCE_ACTIONS

"""The ESL parser against every frame of every real capture, in every segmentation."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from confd.esl import protocol as p
from confd_tests.replay import CAPTURES, Capture

ALL = sorted(f.stem for f in CAPTURES.glob("*.raw"))


def test_the_captures_are_here():
    assert "s1_room1_plain" in ALL and "s6_bad_input" in ALL and len(ALL) == 13


@pytest.mark.parametrize("name", ALL)
def test_every_frame_parses_whole_and_in_real_segments(name):
    cap = Capture.load(name)
    whole = p.FrameParser().feed(cap.raw)
    assert len(whole) == len(cap.frames) > 0
    parser = p.FrameParser()
    segmented = []
    for off, n in cap.chunks:
        segmented += parser.feed(cap.raw[off : off + n])
    assert [(f.headers, f.body) for f in segmented] == [(f.headers, f.body) for f in whole]
    assert parser.buffered == 0
    for frame in whole:
        assert frame.content_type in {
            p.AUTH_REQUEST,
            p.COMMAND_REPLY,
            p.API_RESPONSE,
            p.EVENT_PLAIN,
            p.EVENT_JSON,
            p.DISCONNECT_NOTICE,
        }
        if frame.content_type in p.EVENT_TYPES:
            event = p.parse_event(frame)
            assert event.get("Event-Name") == "CUSTOM"
            assert event.get("Event-Subclass") == "conference::maintenance"
            assert event.get("Action")


@pytest.mark.parametrize(
    "name",
    [n for n in ALL if n != "s6_bad_input"],  # 1 MB: byte-at-a-time below on a slice
)
def test_every_frame_parses_fed_one_byte_at_a_time(name):
    cap = Capture.load(name)
    parser = p.FrameParser()
    frames = []
    for i in range(len(cap.raw)):
        frames += parser.feed(cap.raw[i : i + 1])
    assert [(f.headers, f.body) for f in frames] == [
        (f.frame.headers, f.frame.body) for f in cap.frames
    ]


def test_large_capture_byte_at_a_time_around_the_megabyte_reply():
    cap = Capture.load("s6_bad_input")
    # the frames around the 1 MB "-ERR Conference BBBB..." reply, fed byte by byte
    big = max(cap.frames, key=lambda f: f.end - f.start)
    start = cap.frames[cap.frames.index(big) - 2].start
    parser = p.FrameParser()
    frames = []
    for i in range(start, big.end):
        frames += parser.feed(cap.raw[i : i + 1])
    assert frames[-1].body == big.frame.body
    assert frames[-1].body.startswith(b"-ERR Conference BBBB")


def test_plain_and_json_captures_carry_the_same_events():
    plain = [p.parse_event(f.frame) for f in Capture.load("s1_room1_plain").events()]
    js = [p.parse_event(f.frame) for f in Capture.load("s1_room1_json").events()]
    assert [e["Action"] for e in plain] == [e["Action"] for e in js]
    # the json run followed the plain one in the same FreeSWITCH: member ids go on counting
    first = [int(e["Member-ID"]) for e in plain if e.get("Member-ID")][0]
    first_js = [int(e["Member-ID"]) for e in js if e.get("Member-ID")][0]
    for a, b in zip(plain, js):
        if a.get("Member-ID"):
            assert int(a["Member-ID"]) - first == int(b["Member-ID"]) - first_js
    keys = [
        "Member-Type",
        "Speak",
        "Hear",
        "Talking",
        "Caller-Orig-Caller-ID-Name",
        "FreeSWITCH-IPv6",
        "Conference-Name",
        "Energy-Level",
    ]
    for a, b in zip(plain, js):
        assert [a.get(k) for k in keys] == [b.get(k) for k in keys]


def test_values_are_decoded_one_by_one():
    cap = Capture.load("s1_room1_plain")
    event = p.parse_event(cap.events()[1].frame)
    assert event["FreeSWITCH-IPv6"] == "fd00::2"
    assert event["Caller-Caller-ID-Name"] == "Outbound Call"
    assert event["Event-Subclass"] == "conference::maintenance"


def test_an_encoded_newline_stays_inside_its_value():
    frame = p.FrameParser().feed(
        p.encode_plain_event({"Event-Name": "CUSTOM", "X": "a\nb: c", "Action": "lock"})
    )[0]
    event = p.parse_event(frame)
    assert event["X"] == "a\nb: c"
    assert event["Action"] == "lock"
    assert "b" not in event


def test_first_header_wins_like_freeswitch():
    # energy-level-member repeats Energy-Level after Action (s1_room1_plain.raw)
    frame = p.FrameParser().feed(
        p.encode_frame({"Content-Type": p.EVENT_PLAIN}, b"A: 1\nB: 2\nA: 3\n\n")
    )[0]
    assert p.parse_event(frame)["A"] == "1"


def test_json_event_body_and_non_string_values():
    body = json.dumps({"Event-Name": "CUSTOM", "N": 5, "_body": "hello"}).encode()
    event = p.parse_event(p.Frame({"Content-Type": p.EVENT_JSON}, body))
    assert event["N"] == "5" and event.body == "hello"


@pytest.mark.parametrize(
    "data",
    [
        b"Content-Type: api/response\nContent-Length: -1\n\n",
        b"Content-Type: api/response\nContent-Length: 12abc\n\n",
        b"Content-Type: api/response\nContent-Length: 999999999999\n\n",
        b"this is not a header\n\n",
        b"A" * (p.MAX_HEADER_BYTES + 10),
    ],
)
def test_garbage_is_refused_not_buffered(data):
    with pytest.raises(p.ProtocolError):
        p.FrameParser().feed(data)


def test_bad_json_event_is_a_protocol_error():
    with pytest.raises(p.ProtocolError):
        p.parse_event(p.Frame({"Content-Type": p.EVENT_JSON}, b"{not json"))
    with pytest.raises(p.ProtocolError):
        p.parse_event(p.Frame({"Content-Type": p.EVENT_JSON}, b"[1, 2]"))


@pytest.mark.parametrize("line", ["api status\n\napi version", "a\rb", "a\x00b", "x\n"])
def test_encode_command_refuses_line_breaks(line):
    with pytest.raises(ValueError):
        p.encode_command(line)


def test_command_parser_splits_commands_and_headers():
    parser = p.CommandParser()
    got = parser.feed(b"auth ClueCon\n\napi status\nX-Extra: 1\n\n\n\napi ver")
    assert [(c.line, c.headers) for c in got] == [
        ("auth ClueCon", {}),
        ("api status", {"X-Extra": "1"}),
    ]
    assert [c.line for c in parser.feed(b"sion\n\n")] == ["api version"]


# --- picking headers -------------------------------------------------------------------------

_NAME = st.text(alphabet="ABCDEMNUacdeimnu-_", min_size=1, max_size=8)


@given(
    names=st.lists(_NAME, min_size=1, max_size=12, unique=True),
    lines=st.lists(
        st.tuples(_NAME, st.text(alphabet="ab%20:", max_size=6)), min_size=0, max_size=30
    ),
)
def test_pick_finds_what_get_finds(names, lines):
    """The prefix-factored regex of HeaderSet picks exactly the first value of each wanted
    header, names that are prefixes of one another included (Member-ID, Member-ID-Extra)."""
    # Prefixes of the wanted names appear as headers too, to tempt a wrong match.
    text = "\n" + "\n".join("%s: %s" % (n, v) for n, v in lines) + "\n"
    event = p.Event(text=text)
    wanted = p.HeaderSet(names)
    expected = {n: event.get(n) for n in names if event.get(n) is not None}
    assert event.pick(wanted) == expected


def test_header_set_refuses_names_that_cannot_be_headers():
    for bad in ([], [""], ["a\nb"], ["a: b"]):
        with pytest.raises(ValueError):
            p.HeaderSet(bad)

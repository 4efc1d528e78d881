"""The simulator's outbound side checked against the real captures before it is trusted:
its connect reply and its channel events parse exactly like FreeSWITCH's, applications pair
with their Event-UUID, pipelined messages run in the captured order, digits typed outside a
prompt are lost, and a hang-up mid-prompt leaves what the real one leaves."""

import uuid as uuidlib

import gevent
import pytest
from gevent.queue import Queue
from gevent.server import StreamServer

from confd.entry import messages as m
from confd.esl import protocol as p
from confd.simulator.model import ConferenceModel
from confd.simulator.outbound import OutboundSide, encode_header_block, sound_seconds
from confd_tests.entry.outbound_replay import Capture


class Driver:
    """confd's side, by hand: accepts the simulated call, sends commands, reads frames."""

    def __init__(self):
        self.conns = Queue()
        self.server = StreamServer(("127.0.0.1", 0), lambda s, a: self._keep(s))
        self.server.start()
        self.sock = None
        self.parser = p.FrameParser()
        self.frames = []

    def _keep(self, sock):
        done = gevent.event.Event()
        self.conns.put((sock, done))
        done.wait()

    @property
    def address(self):
        return ("127.0.0.1", self.server.server_port)

    def accept(self):
        self.sock, self._done = self.conns.get(timeout=5)

    def send(self, data: bytes):
        self.sock.sendall(data)

    def frame(self, timeout=5.0) -> p.Frame:
        with gevent.Timeout(timeout):
            while not self.frames:
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError
                self.frames.extend(self.parser.feed(data))
        return self.frames.pop(0)

    def until(self, predicate, timeout=5.0):
        seen = []
        while True:
            f = self.frame(timeout)
            seen.append(f)
            if predicate(f):
                return seen

    def execute(self, app, arg=None, lock=True):
        uid = str(uuidlib.uuid4())
        self.send(m.execute(app, arg, uid, lock=lock))
        return uid

    def close(self):
        self._done.set()
        self.server.stop(timeout=1)


def name_of(f: p.Frame) -> str:
    if f.content_type == p.EVENT_PLAIN:
        return p.parse_event(f.frame if hasattr(f, "frame") else f).name
    return f.content_type


def complete_for(uid):
    return lambda f: (
        f.content_type == p.EVENT_PLAIN
        and p.parse_event(f).name == "CHANNEL_EXECUTE_COMPLETE"
        and p.parse_event(f).get("Application-UUID") == uid
    )


@pytest.fixture
def call_setup():
    made = []

    def make(**kw):
        driver = Driver()
        side = OutboundSide(ConferenceModel(hostname="sim"))
        call = side.dial(driver.address, **kw)
        driver.accept()
        made.append((driver, call))
        return driver, side, call

    yield make
    for driver, call in made:
        call.hang_up()
        driver.close()


def connect(driver, linger=True):
    driver.send(b"connect\n\n")
    reply = driver.frame()
    driver.send(b"myevents\n\n")
    assert driver.frame().reply_text == "+OK Events Enabled"
    if linger:
        driver.send(b"linger\n\n")
        assert driver.frame().reply_text == "+OK will linger"
    return reply


def non_variable_names(names):
    return [n for n in names if not n.startswith("variable_")]


# --- the wire format ----------------------------------------------------------------------------


def test_the_encoder_rebuilds_the_real_connect_reply_byte_for_byte():
    cap = Capture.load("a_member_pin")
    first = cap.frames[0]
    decoded = m.connect_headers(first.frame)
    assert encode_header_block(list(decoded.items())) == cap.raw[first.start : first.end]


@pytest.mark.parametrize("mode,socket_mode", [("async", "async"), ("static", "static")])
def test_connect_reply_parses_like_the_real_one(call_setup, mode, socket_mode):
    driver, side, call = call_setup(mode=mode, variables={"ecallmgr_Account-ID": "a" * 32})
    reply = connect(driver)
    real = Capture.load("a_member_pin" if mode == "async" else "f_sync_member").frames[0].frame
    assert "Content-Length" not in reply.headers and reply.body == b""
    assert non_variable_names(reply.headers) == non_variable_names(real.headers)
    ours, theirs = m.connect_headers(reply), m.connect_headers(real)
    assert m.is_connect_reply(ours) and m.is_connect_reply(theirs)
    for key in ("Content-Type", "Reply-Text", "Control", "Socket-Mode", "Call-Direction"):
        assert ours[key] == theirs[key]
    assert ours["Unique-ID"] == call.uuid
    assert ours["variable_ecallmgr_Account-ID"] == "a" * 32  # origination variables reach it
    assert reply.headers["Reply-Text"] == "%2BOK%0A"  # encoded as FreeSWITCH does


def test_execute_complete_parses_like_the_real_one_and_pairs_by_event_uuid(call_setup):
    driver, side, call = call_setup()
    connect(driver)
    uid = driver.execute("answer")
    frames = driver.until(complete_for(uid))
    assert [p.parse_event(f).name for f in frames if f.content_type == p.EVENT_PLAIN] == [
        "CHANNEL_EXECUTE",
        "CHANNEL_ANSWER",
        "CHANNEL_EXECUTE_COMPLETE",
    ]
    assert frames[0].reply_text == "+OK"
    uid = driver.execute("set", "entry_role=member")
    ours = p.parse_event(driver.until(complete_for(uid))[-1])
    cap = Capture.load("a_member_pin")
    theirs = next(
        p.parse_event(f.frame)
        for f in cap.frames
        if f.event_name == "CHANNEL_EXECUTE_COMPLETE"
        and p.parse_event(f.frame).get("Application") == "set"
    )
    assert non_variable_names(ours.names()) == non_variable_names(theirs.names())
    for key in ("Application", "Application-Data", "Application-Response", "Answer-State"):
        assert ours.get(key) == theirs.get(key)
    assert ours.get("Application-UUID") == uid
    assert ours.get("variable_entry_role") == "member"


def test_dtmf_event_parses_like_the_real_one(call_setup):
    driver, side, call = call_setup()
    connect(driver)
    call.type("7")
    ours = p.parse_event(driver.until(lambda f: f.content_type == p.EVENT_PLAIN)[-1])
    theirs = next(
        p.parse_event(f.frame)
        for f in Capture.load("a_member_pin").frames
        if f.event_name == "DTMF"
    )
    assert (
        ours.names()[-3:] == theirs.names()[-3:] == ["DTMF-Digit", "DTMF-Duration", "DTMF-Source"]
    )
    assert ours.get("DTMF-Digit") == "7"


# --- behaviour ----------------------------------------------------------------------------------


def pagd(var, regex=r"\d+", tries=1):
    return (
        f"1 16 {tries} 5000 # tone_stream://%(200,0,800) tone_stream://%(200,0,400) {var} {regex}"
    )


def test_digits_typed_while_no_prompt_runs_are_lost(call_setup):
    driver, side, call = call_setup(answers=[None])
    connect(driver)
    driver.until(complete_for(driver.execute("answer")))
    call.type("1234#")  # before the prompt
    uid = driver.execute("play_and_get_digits", pagd("pin"))
    done = p.parse_event(driver.until(complete_for(uid))[-1])
    assert done.get("variable_pin") is None
    assert call.lost_digits == "1234#"


def test_answers_are_typed_at_the_prompt_and_the_regex_decides(call_setup):
    driver, side, call = call_setup(answers=["1234#", "3333#"])
    connect(driver)
    uid = driver.execute("play_and_get_digits", pagd("pin"))
    done = p.parse_event(driver.until(complete_for(uid))[-1])
    assert done.get("variable_pin") == "1234"
    assert done.get("variable_read_terminator_used") == "#"
    # c2: a failed regex leaves <var>_invalid and read_result "success", no <var>
    uid = driver.execute("play_and_get_digits", pagd("pin", "^(1234|5678)$"))
    done = p.parse_event(driver.until(complete_for(uid))[-1])
    assert done.get("variable_pin") is None
    assert done.get("variable_pin_invalid") == "3333"
    assert done.get("variable_read_result") == "success"


@pytest.mark.parametrize(
    "capture,lock", [("g1_pipelined_nolock", False), ("g2_pipelined_event_lock", True)]
)
def test_pipelined_messages_run_in_the_captured_order(call_setup, capture, lock):
    driver, side, call = call_setup(answers=["7109#"], time_scale=0.05)
    connect(driver)
    driver.until(complete_for(driver.execute("answer")))
    uids = [
        driver.execute("playback", "tone_stream://%(1000,0,440)", lock=lock),
        driver.execute("playback", "tone_stream://%(1000,0,620)", lock=lock),
        driver.execute("play_and_get_digits", pagd("conf_num"), lock=lock),
    ]
    frames = driver.until(complete_for(uids[0]) if not lock else complete_for(uids[2]), timeout=10)
    order = []
    for f in frames:
        if f.content_type != p.EVENT_PLAIN:
            continue
        ev = p.parse_event(f)
        if ev.name in ("CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE"):
            n = uids.index(ev.get("Application-UUID")) + 1
            order.append(("start" if ev.name == "CHANNEL_EXECUTE" else "done", n))
    cap = Capture.load(capture)
    note = [ln for ln in (cap_path(capture)).read_text().splitlines() if "order of" in ln][0]
    expected = note.split(": ", 2)[-1].split(": ", 1)[-1]
    assert ", ".join("%s #%d" % x for x in order) == expected
    assert cap.frames  # the capture the order comes from


def cap_path(name):
    from confd_tests.entry.outbound_replay import CAPTURES

    return CAPTURES / (name + ".cmds")


def test_hangup_mid_prompt_leaves_partial_digits_then_lingers(call_setup):
    def type_then_hang_up(call):
        call.type("12")
        call.hang_up()

    driver, side, call = call_setup(answers=[type_then_hang_up])
    connect(driver)
    uid = driver.execute("play_and_get_digits", pagd("pin"))
    frames = driver.until(lambda f: f.content_type == p.DISCONNECT_NOTICE)
    names = [name_of(f) for f in frames]
    assert names.index("CHANNEL_HANGUP") < names.index("CHANNEL_EXECUTE_COMPLETE")
    assert names[-2:] == ["CHANNEL_HANGUP_COMPLETE", p.DISCONNECT_NOTICE]
    done = p.parse_event(next(f for f in frames if complete_for(uid)(f)))
    assert done.get("variable_pin") == "12" and done.get("Answer-State") == "hangup"
    assert frames[-1].headers["Content-Disposition"] == "linger"
    # d_hangup_mid_pagd: the same order of these events on the real socket
    real = [
        f.event_name or f.frame.content_type
        for f in Capture.load("d_hangup_mid_pagd").frames
        if f.event_name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE")
        or f.frame.content_type == p.DISCONNECT_NOTICE
    ]
    assert real[:3] == ["CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", p.DISCONNECT_NOTICE]
    driver.send(b"exit\n\n")
    assert driver.frame().reply_text == "+OK bye"
    assert driver.frame().headers["Content-Disposition"] == "disconnect"
    assert call.wait(5)


def test_without_linger_freeswitch_says_goodbye_and_closes(call_setup):
    driver, side, call = call_setup()
    connect(driver, linger=False)
    call.hang_up()
    frames = driver.until(lambda f: f.content_type == p.DISCONNECT_NOTICE)
    assert frames[-1].headers["Content-Disposition"] == "disconnect"
    with pytest.raises(EOFError):
        driver.frame()
    assert call.wait(5)


def test_locked_room_returns_at_once_and_the_call_stays_up(call_setup):
    driver, side, call = call_setup()
    side.model.join("7106", caller_id_number="1")
    side.model.api("conference 7106 lock")
    connect(driver)
    uid = driver.execute("conference", "7106@default+flags{mute}")
    done = p.parse_event(driver.until(complete_for(uid))[-1])
    assert done.get("variable_conference_member_id") is None
    assert done.get("Answer-State") != "hangup" and not call.down
    driver.until(complete_for(driver.execute("set", "conference_enforce_security=false")))
    driver.execute("conference", "7106@default+flags{mute}")
    gevent.sleep(0.05)
    member = side.model.member_by_uuid(call.uuid)
    assert member is not None and not member.can_speak


def test_conference_max_members_from_the_first_caller(call_setup):
    driver, side, call = call_setup()
    connect(driver)
    driver.until(complete_for(driver.execute("set", "conference_max_members=1")))
    driver.execute("conference", "room@default")
    gevent.sleep(0.05)
    assert side.model.member_by_uuid(call.uuid) is not None
    driver2 = Driver()
    call2 = side.dial(driver2.address)
    driver2.accept()
    try:
        connect(driver2)
        uid = driver2.execute("conference", "room@default")
        done = p.parse_event(driver2.until(complete_for(uid))[-1])
        assert done.get("variable_conference_member_id") is None  # refused: full
        assert len(side.model.members("room")) == 1
    finally:
        call2.hang_up()
        driver2.close()


def test_kick_ends_the_conference_application(call_setup):
    driver, side, call = call_setup()
    connect(driver)
    uid = driver.execute("conference", "room@default+flags{moderator}")
    gevent.sleep(0.05)
    member = side.model.member_by_uuid(call.uuid)
    assert member.moderator
    side.model.api("conference room kick %d" % member.id)
    done = p.parse_event(driver.until(complete_for(uid))[-1])
    assert done.get("variable_conference_member_id") == str(member.id)
    assert not call.down  # the park loop holds the call again


def test_sound_lengths():
    assert sound_seconds("tone_stream://%(300,100,440);%(300,0,480)") == pytest.approx(0.7)
    assert sound_seconds("tone_stream://L=2;%(100,100,440)") == pytest.approx(0.4)
    assert sound_seconds("silence_stream://250") == pytest.approx(0.25)
    assert sound_seconds("/x.wav") == 1.0

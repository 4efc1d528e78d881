"""ConferenceModel against real FreeSWITCH: the s1/s2 scripts replayed, compared with captures."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import List, Optional, Tuple
from urllib.parse import unquote

import pytest

from confd.esl.protocol import API_RESPONSE, EVENT_TYPES, FrameParser, parse_event
from confd.simulator.model import ConferenceModel, cjson_print, fs_member_id

CAPTURES = Path(__file__).resolve().parent.parent / "captures"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_LINE_RE = re.compile(r"^(\S+Z) \+\S+ SEND (b'.*'|b\".*\")$")

# Headers whose values differ between any two runs (ids, clocks) or between the lab and the model
# by design (the lab's channels were mod_loopback/null channels).
VOLATILE = {
    "Core-UUID",
    "Unique-ID",
    "Channel-Call-UUID",
    "Caller-Unique-ID",
    "Conference-Unique-ID",
    "Event-Date-Local",
    "Event-Date-GMT",
    "Event-Date-Timestamp",
    "Event-Sequence",
    "Caller-Source",
    "Caller-Profile-Created-Time",
    "Caller-Channel-Created-Time",
    "Caller-Channel-Answered-Time",
    "Current-Energy",  # the lab's floor holders read 1 from line noise
    "Caller-Callee-ID-Name",
    "Caller-Callee-ID-Number",
    "Caller-Destination-Number",
    "seconds",
    "milliseconds",
    "samples",
}


def _ignored_name(name: str) -> bool:
    # The lab's channels had no channel variables; the model adds one header per variable.
    return name.startswith("variable_") or name == "Channel-Presence-ID"


def event_pairs(frame) -> List[Tuple[str, str]]:
    """All header (name, decoded value) pairs of an event frame, repeats included."""
    if frame.content_type == "text/event-plain":
        head = frame.body.split(b"\n\n", 1)[0].decode()
        out = []
        for line in head.split("\n"):
            name, _, value = line.partition(": ")
            out.append((name, unquote(value)))
        return out
    ev = parse_event(frame)
    return [(n, ev[n]) for n in ev.names()]


@dataclass
class Script:
    """A capture: what was sent (with UTC times), the api replies and the events received."""

    sends: List[Tuple[float, str]]
    api_replies: List[str]
    events: List[List[Tuple[str, str]]]


def load(name: str) -> Script:
    sends = []
    for line in (CAPTURES / (name + ".cmds")).read_text().splitlines():
        m = _LINE_RE.match(line)
        if m:
            when = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ")
            epoch = when.replace(tzinfo=UTC).timestamp()
            for cmd in ast.literal_eval(m.group(2)).decode().split("\n\n"):
                if cmd:
                    sends.append((epoch, cmd))
    replies, events = [], []
    for frame in FrameParser().feed((CAPTURES / (name + ".raw")).read_bytes()):
        if frame.content_type == API_RESPONSE:
            replies.append(frame.body.decode())
        elif frame.content_type in EVENT_TYPES:
            events.append(event_pairs(frame))
    return Script(sends, replies, events)


class Clock:
    def __init__(self, now: float = 1795612808.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_model(clock: Optional[Clock] = None) -> Tuple[ConferenceModel, List[List[Tuple[str, str]]]]:
    events: List[List[Tuple[str, str]]] = []
    model = ConferenceModel(
        hostname="vm", clock=clock or Clock(), emit=events.append, ipv4="192.0.2.2", ipv6="fd00::2"
    )
    return model, events


def actions(events) -> List[Optional[str]]:
    return [dict(e).get("Action") for e in events]


def norm(text: str) -> str:
    return UUID_RE.sub("<uuid>", text)


def replay(name: str):
    """Run a capture's commands against the model, on the capture's own clock."""
    script = load(name)
    clock = Clock(script.sends[0][0])
    model, events = new_model(clock)
    pairs = []  # (command, captured reply, model reply)
    replies = iter(script.api_replies)
    for when, cmd in script.sends:
        clock.now = when
        if cmd.startswith("api "):
            pairs.append((cmd, next(replies), model.api(cmd[4:])))
        elif cmd.startswith("bgapi originate"):
            line = cmd[len("bgapi ") :]
            loop = re.match(r"originate \{([^}]*)\}loopback/join_(\w+)/\S+ &park\(\)$", line)
            if loop:
                # The lab's dialplan extension join_<room> ran conference() on the inbound leg,
                # which a lock refuses (s1 Frank).
                cvars = dict(kv.split("=", 1) for kv in loop.group(1).split(","))
                model.join(
                    loop.group(2),
                    caller_id_name=cvars["origination_caller_id_name"],
                    caller_id_number=cvars["origination_caller_id_number"],
                    direction="inbound",
                    channel_name="loopback/join_%s-b" % loop.group(2),
                )
            else:
                assert model.api(line).startswith("+OK ")
    return script, model, events, pairs


@pytest.fixture(scope="module")
def s1():
    return replay("s1_room1_plain")


def test_s1_actions_equal_the_capture(s1):
    script, _model, events, _ = s1
    assert actions(events) == actions(script.events)


def test_s1_header_names_and_order_equal_the_capture(s1):
    script, _model, events, _ = s1
    for real, sim in zip(script.events, events):
        real_names = [n for n, _ in real if not _ignored_name(n)]
        sim_names = [n for n, _ in sim if not _ignored_name(n)]
        assert sim_names == real_names, dict(real).get("Action")


def test_s1_header_values_equal_the_capture(s1):
    script, _model, events, _ = s1
    for real, sim in zip(script.events, events):
        real_v = [(n, v) for n, v in real if n not in VOLATILE and not _ignored_name(n)]
        sim_v = [(n, v) for n, v in sim if n not in VOLATILE and not _ignored_name(n)]
        assert sim_v == real_v


def test_s1_api_replies_equal_the_capture(s1):
    _script, _model, _events, pairs = s1
    for cmd, real, sim in pairs:
        assert norm(sim) == norm(real), cmd


def test_s1_json_capture_has_the_same_actions(s1):
    # The JSON subscription of the same script: same events, so the model matches it too.
    json_script = load("s1_room1_json")
    _script, _model, events, _ = s1
    assert actions(events) == actions(json_script.events)
    for real, sim in zip(json_script.events, events):
        # A JSON object holds each header once (floor-change repeats the Conference-* block).
        sim_names = list(dict.fromkeys(n for n, _ in sim if not _ignored_name(n)))
        assert sim_names == [n for n, _ in real]


def _first(script: Script, action: str) -> List[Tuple[str, str]]:
    return next(e for e in script.events if dict(e).get("Action") == action)


def _names(event) -> List[str]:
    # s2's talkers were loopback legs, which went through a dialplan (Caller-Dialplan); the
    # model's default callers are originated legs without one.
    return [n for n, _ in event if not _ignored_name(n) and n != "Caller-Dialplan"]


def test_talking_floor_and_mute_follow_s2():
    s2 = load("s2_talking_plain")
    model, events = new_model()
    silent = model.join("room2", caller_id_name="Silent", caller_id_number="2001")
    toner = model.join("room2", caller_id_name="Toner", caller_id_number="2002")
    del events[:]
    assert model.set_talking(toner, True, energy=6563)
    # s2: the talker takes the floor right after start-talking.
    assert actions(events) == ["start-talking", "floor-change"]
    start, floor = dict(events[0]), dict(events[1])
    assert start["Talking"] == "true" and start["Current-Energy"] == "6563"
    assert (floor["Old-ID"], floor["New-ID"]) == (str(silent), str(toner))
    assert _names(events[0]) == _names(_first(s2, "start-talking"))
    assert _names(events[1]) == _names(s2.events[5])  # floor-change from 11 to 12
    del events[:]
    assert model.set_talking(toner, False)
    assert actions(events) == ["stop-talking"]
    assert _names(events[0]) == _names(_first(s2, "stop-talking"))
    assert dict(events[0])["Talking"] == "false"
    del events[:]
    assert model.api("conference room2 energy %d 5000" % toner) == "Energy %d = 5000\n" % toner
    assert _names(events[0]) == _names(_first(s2, "energy-level-member"))
    assert events[0][-1] == ("Energy-Level", "5000")
    # Muting a talker: mute-member says Talking false, and no stop-talking is sent.
    model.set_talking(toner, True)
    del events[:]
    assert model.api("conference room2 mute %d" % toner) == "+OK mute %d\n" % toner
    assert actions(events) == ["mute-member"]
    assert (dict(events[0])["Speak"], dict(events[0])["Talking"]) == ("false", "false")
    assert not model.set_talking(toner, True)  # a muted member cannot talk
    assert actions(events) == ["mute-member"]


def test_join_flags_show_only_in_add_member():
    model, events = new_model()
    model.join("r", caller_id_number="1")
    del events[:]
    model.join("r", caller_id_number="2", muted=True, deaf=True, moderator=True)
    assert actions(events) == ["add-member", "play-file-done"]
    add = dict(events[0])
    assert (add["Speak"], add["Hear"], add["Member-Type"]) == ("false", "false", "moderator")


def test_locked_conference_refuses_silently():
    model, events = new_model()
    model.join("r", caller_id_number="1")
    model.api("conference r lock")
    del events[:]
    assert model.join("r", caller_id_number="2") is None
    assert events == []
    # An originated leg still gets in (s1 Dave), as the model's ignore_lock says.
    assert model.join("r", caller_id_number="3", ignore_lock=True) == 2


def test_leave_moves_floor_and_destroys_after_last():
    model, events = new_model()
    a = model.join("r", caller_id_number="1")
    b = model.join("r", caller_id_number="2")
    c = model.join("r", caller_id_number="3")
    del events[:]
    model.leave(a)
    assert actions(events) == ["floor-change", "del-member", "floor-change", "play-file-done"]
    assert (dict(events[0])["Old-ID"], dict(events[0])["New-ID"]) == ("none", "none")
    assert dict(events[2])["New-ID"] == str(c)  # the newest member (s1 kick 1, hup last)
    assert dict(events[1])["Conference-Size"] == "2"
    del events[:]
    model.leave(b)
    model.leave(c)
    assert actions(events) == [
        "del-member",
        "play-file-done",
        "floor-change",
        "del-member",
        "conference-destroy",
    ]
    assert model.conferences == {}
    assert model.api("conference json_list") == "[]"


def test_endconf_member_ends_the_conference():
    model, events = new_model()
    model.join("roomB", caller_id_number="4011")
    model.join("roomB", caller_id_number="4012")
    fay = model.join("roomB", caller_id_number="4013", moderator=True, endconf=True)
    assert json.loads(model.api("conference roomB json_list compact"))[0]["members"][0]["flags"][
        "end_conference"
    ]
    del events[:]
    assert model.api("conference roomB hup last") == "+OK hup %d\n" % fay
    acts = actions(events)
    assert acts[0] == "hup-member" and acts[-1] == "conference-destroy"
    assert acts.count("del-member") == 3 and acts.count("hup-member") == 1
    assert "roomB" not in model.conferences


def test_member_ids_are_global_and_restart_resets_them():
    model, _ = new_model()
    assert model.join("a", caller_id_number="1") == 1
    assert model.join("b", caller_id_number="2") == 2
    assert model.join("a", caller_id_number="3") == 3
    old_core = model.core_uuid
    model.restart()
    assert model.core_uuid != old_core
    assert model.conferences == {}
    assert model.api("conference json_list") == "[]"
    assert model.api("conference list") == "+OK No active conferences.\n"
    assert model.join("a", caller_id_number="1") == 1


def test_json_list_keys_equal_the_capture():
    s4 = load("s4_two_conferences_lists")
    real = json.loads(next(r for r in s4.api_replies if r.startswith('[{"')))
    model, _ = new_model()
    model.join("roomA", caller_id_name="Ann", caller_id_number="4001")
    model.join("roomB", caller_id_name="Dan", caller_id_number="4011")
    sim = json.loads(model.api("conference json_list compact"))
    assert [c["conference_name"] for c in sim] == ["roomA", "roomB"]  # creation order, as s4
    assert list(sim[0]) == list(real[0])
    assert list(sim[0]["members"][0]) == list(real[0]["members"][0])
    assert list(sim[0]["members"][0]["flags"]) == list(real[0]["members"][0]["flags"])
    # The pretty form is the same data in cJSON_Print layout.
    assert json.loads(model.api("conference json_list")) == sim
    assert model.api("conference json_list") == cjson_print(sim)


def test_join_time_and_run_time_count_whole_seconds():
    clock = Clock(1000.9)
    model, _ = new_model(clock)
    model.join("r", caller_id_number="1")
    clock.now = 1002.1  # 1.2 s later, but two epoch seconds
    conf = json.loads(model.api("conference r json_list"))[0]
    assert conf["run_time"] == 2 and conf["members"][0]["join_time"] == 2


@pytest.mark.parametrize(
    "text,expected",
    [("7abc", 7), ("-1", 4294967295), ("4294967297", 1), ("9" * 100, 4294967295), ("abc", 0)],
)
def test_member_ids_parse_like_atoi(text, expected):
    assert fs_member_id(text) == expected


def test_selector_quirks_from_s6():
    model, _ = new_model()
    for n in ("6101", "6102", "6103"):
        model.join("room6", caller_id_number=n)
    api = model.api
    assert api("conference room6 mute 1abc") == "+OK mute 1\n"
    assert api("conference room6 mute -1") == "-ERR Non-Existant ID 4294967295\n"
    assert api("conference room6 unmute 4294967297") == "+OK unmute 1\n"
    assert api("conference room6 mute 0") == "mute <[member_id|all]|last|non_moderator> [<quiet>]"
    assert api("conference room6 unmute 1;hup all") == "+OK unmute 1\n"
    assert api("conference room6 deaf caller_id_number=6102") == "+OK deaf 2\n"
    assert api("conference room6 kick 2 3") == "+OK kicked 2\n"
    assert api("conference room6 mute ALL") == "+OK mute 3\n+OK mute 1\n"
    assert api("conference room6 unmute All") == "+OK unmute 3\n+OK unmute 1\n"
    assert api("conference room6 hup") == "hup <[member_id|all|last|non_moderator]>"


def test_other_api_commands():
    model, _ = new_model()
    member = model.join(
        "r",
        caller_id_name="Alice",
        caller_id_number="1001",
        channel_vars={"ecallmgr_Account-ID": "acc1"},
        uuid="6b1e9c2a-0000-4000-8000-000000000001",
    )
    assert model.api("version") == "FreeSWITCH Version 1.11.3-dev~64bit ( 64bit)\n"
    assert model.api("frobnicate now") == "-ERR frobnicate Command not found!\n"
    assert model.api("") == "-ERR  Command not found!\n"
    assert model.api("status").startswith("UP 0 years, 0 days, 0 hours, 0 minutes, ")
    assert "1 session(s) since startup\n" in model.api("status")
    dump = json.loads(model.api("uuid_dump 6b1e9c2a-0000-4000-8000-000000000001 json"))
    assert dump["Unique-ID"] == "6b1e9c2a-0000-4000-8000-000000000001"
    assert dump["variable_ecallmgr_Account-ID"] == "acc1"
    assert dump["Caller-Orig-Caller-ID-Name"] == "Alice"
    assert dump["variable_conference_member_id"] == str(member)
    assert model.api("uuid_dump nope json") == "-ERR No such channel!\n"


def test_channel_vars_and_presence_headers():
    model, events = new_model()
    model.join(
        "r",
        caller_id_number="1",
        channel_vars={"ecallmgr_Account-ID": "acc1", "presence_id": "1@example.com"},
    )
    add = events[1]
    names = [n for n, _ in add]
    assert names.index("Channel-Presence-ID") == names.index("Channel-HIT-Dialplan") + 1
    assert (
        names.index("variable_ecallmgr_Account-ID") == names.index("Caller-Privacy-Hide-Number") + 1
    )
    assert names.index("variable_presence_id") + 1 == names.index("Video")
    assert dict(add)["variable_ecallmgr_Account-ID"] == "acc1"


def test_plain_event_size_is_close_to_the_real_one():
    from confd.esl.protocol import encode_plain_event

    model, events = new_model()
    model.join("room1", caller_id_name="Alice", caller_id_number="1001")

    class Pairs:
        def __init__(self, pairs):
            self.pairs = pairs

        def items(self):
            return self.pairs

    frame = encode_plain_event(Pairs(events[1]))
    body = FrameParser().feed(frame)[0].body
    assert abs(len(body) - 2354) < 120  # s1 Alice's add-member body: 2354 bytes


def test_heartbeat_event():
    clock = Clock(5000.0)
    model, events = new_model(clock)
    model.join("r", caller_id_number="1")
    clock.now = 5061.5
    hb = dict(model.heartbeat())
    assert events[-1] == list(hb.items())
    assert hb["Event-Name"] == "HEARTBEAT" and "Event-Subclass" not in hb
    assert hb["Session-Count"] == "1"
    assert hb["Up-Time"].startswith("0 years, 0 days, 0 hours, 1 minute, 1 second, 500 ")


def test_activity_keeps_conferences_busy_and_bounded():
    import random

    from confd.simulator.activity import run_activity

    model, events = new_model()
    seen_max = {}

    def watch(_pairs):
        for name, conf in model.conferences.items():
            seen_max[name] = max(seen_max.get(name, 0), len(conf.members))

    model.add_listener(watch)
    steps = run_activity(
        model,
        ["demo1", "demo2"],
        rng=random.Random(7),
        interval=0,
        account_id="acc42",
        max_steps=400,
    )
    assert steps == 400
    acts = set(actions(events))
    assert {"add-member", "del-member", "start-talking", "stop-talking", "mute-member"} <= acts
    assert {"unmute-member", "floor-change", "conference-create"} <= acts
    assert set(seen_max) == {"demo1", "demo2"}
    assert max(seen_max.values()) <= 6
    adds = [dict(e) for e in events if dict(e).get("Action") == "add-member"]
    assert all(a["variable_ecallmgr_Account-ID"] == "acc42" for a in adds)


def test_activity_stops_on_its_event():
    import random

    from gevent.event import Event

    from confd.simulator.activity import run_activity

    model, _ = new_model()
    stop = Event()
    stop.set()
    assert run_activity(model, ["r"], rng=random.Random(1), stop_event=stop) == 0

"""Real FreeSWITCH traffic replayed over a real socket into a node supervisor: the live state
must equal what FreeSWITCH's own json_list said at each point the capture asked for it."""

import json

import gevent
import pytest

from confd_tests.conftest import wait_until
from confd_tests.replay import Capture, ReplayFreeSwitch

REPLAY_DEADLINE = 120.0  # seconds for the stream to reach its next checkpoint or its end


def expected_from_json_list(text):
    out = {}
    for conf in json.loads(text):
        members = {}
        for m in conf["members"]:
            f = m["flags"]
            members[m["id"]] = (m["uuid"], f["can_hear"], f["can_speak"], f["is_moderator"])
        out[conf["conference_uuid"]] = (conf["conference_name"], conf["locked"], members)
    return out


def actual(state, node="fs1"):
    out = {}
    for conf in state.conferences(node):
        members = {
            p.participant_id: (p.call_id, p.hear, p.speak, p.is_moderator)
            for p in conf.participants.values()
        }
        out[conf.uuid] = (conf.name, conf.is_locked, members)
    return out


def replay_and_check(make_node, names, mode, fmt):
    caps = [Capture.load(n) for n in names]
    fake = ReplayFreeSwitch(caps, mode=mode).start()
    try:
        node = make_node(fake.port, event_format=fmt, reconnect_min=30)
        checked = 0
        while True:
            # Generous: "bytes" mode sends a capture byte by byte (10-18 s here on a loaded
            # machine); the wait ends as soon as the stream gets there.
            gevent.wait([fake.at_checkpoint, fake.finished], count=1, timeout=REPLAY_DEADLINE)
            if fake.at_checkpoint.is_set():
                wait_until(lambda: node.events_in == fake.events_sent, what="events applied")
                assert actual(node.state) == expected_from_json_list(fake.reached.reply)
                checked += 1
                fake.release()
                continue
            assert fake.finished.is_set()
            break
        return node, fake, checked
    finally:
        fake.stop()


@pytest.mark.parametrize("mode", ["chunks", "frames", "bytes"])
@pytest.mark.parametrize("name,fmt", [("s1_room1_plain", "plain"), ("s1_room1_json", "json")])
def test_s1_state_equals_every_json_list(make_node, name, fmt, mode):
    node, fake, checked = replay_and_check(make_node, [name], mode, fmt)
    # s1 asks json_list four times; the first (no conference yet) answered confd's resync
    assert checked == 3
    assert fake.commands[:2] == [
        "auth ClueCon",
        "event %s HEARTBEAT CUSTOM conference::maintenance" % fmt,
    ]
    assert fake.commands.count("api conference json_list") == 1
    # every event taken, in order; the conference-destroy at the end emptied the node, and the
    # recorder's own "exit" (its disconnect-notice is not FreeSWITCH going away) was not played
    wait_until(lambda: node.events_in == len(Capture.load(name).events()), what="all events")
    assert node.state.conferences("fs1") == []
    assert node.connected


def test_s4_two_conferences(make_node):
    node, fake, checked = replay_and_check(
        make_node, ["s4_two_conferences_lists"], "chunks", "plain"
    )
    assert checked == 4


def test_plain_and_json_give_the_same_state(make_node):
    """Same script, two formats: the state after each event must match, ids aside (the json
    run followed the plain one in the same FreeSWITCH process, so ids and uuids differ)."""
    from confd.conferences.events import translate
    from confd.conferences.state import LiveState
    from confd.esl.protocol import parse_event

    def states(name):
        state, out = LiveState(), []
        for f in Capture.load(name).events():
            change = translate(parse_event(f.frame))
            if change is not None:
                state.apply("fs1", change)
            out.append(
                sorted(
                    (
                        p.caller_id_name,
                        p.hear,
                        p.speak,
                        p.talking,
                        p.is_moderator,
                        p.floor,
                        p.energy_level,
                        c.is_locked,
                    )
                    for c in state.conferences()
                    for p in c.participants.values()
                )
            )
        return out

    plain, js = states("s1_room1_plain"), states("s1_room1_json")
    assert len(plain) == len(js) == 62
    assert plain == js


def test_s2_talking_and_energy(make_node):
    from confd.conferences.events import translate
    from confd.conferences.state import LiveState
    from confd.esl.protocol import parse_event

    state = LiveState()
    seen = []
    for f in Capture.load("s2_talking_plain").events():
        event = parse_event(f.frame)
        change = translate(event)
        if change is None:
            continue
        state.apply("fs1", change)
        if event["Action"] in (
            "start-talking",
            "stop-talking",
            "mute-member",
            "unmute-member",
            "energy-level-member",
        ):
            (conf,) = state.conferences()
            p = conf.participants[int(event["Member-ID"])]
            seen.append((event["Action"], p.talking, p.speak, p.energy_level))
            assert p.talking == (event["Talking"] == "true")
            assert p.current_energy == int(event["Current-Energy"])
    actions = [s[0] for s in seen]
    assert actions.count("start-talking") == 8 and actions.count("stop-talking") == 7
    assert all(t for a, t, _, _ in seen if a == "start-talking")
    assert not any(t for a, t, _, _ in seen if a == "stop-talking")
    # FreeSWITCH clears talking on mute and sends no stop-talking (events.md): the mute-member
    # event's headers are what keeps `talking` right.
    mute = [s for s in seen if s[0] == "mute-member"][0]
    assert mute[1] is False and mute[2] is False
    levels = {s[3] for s in seen if s[0] == "energy-level-member"}
    assert len(levels) >= 1 and levels != {100}
    assert state.conferences() == []  # hup all ended the conference


@pytest.mark.parametrize(
    "name",
    ["s5_fs_stop_sigterm", "s5_fs_stop_sigkill", "s5_fs_stop_api_shutdown"],
)
def test_s5_node_stop_drops_state_reconnects_with_backoff_and_resyncs_empty(
    make_node, name, caplog
):
    caps = [Capture.load(name), Capture.load(name + "_after_restart")]
    fake = ReplayFreeSwitch(caps, mode="chunks", pause_at_checkpoints=True, down_for=0.6)
    fake.start()
    published = []
    try:
        node = make_node(fake.port, reconnect_min=0.05, reconnect_max=0.2, publish=published.extend)
        # the recorder's json_list (compact) while room5 had its three members
        assert fake.at_checkpoint.wait(10)
        wait_until(lambda: node.events_in == fake.events_sent, what="events applied")
        (conf,) = node.state.conferences("fs1")
        assert conf.name == "room5" and len(conf.participants) == 3
        call_ids = {p.call_id for p in conf.participants.values()}
        first_attempts = node.attempts
        fake.release()
        wait_until(lambda: not node.connected, what="node loss")
        # at once: nothing of the node remains
        assert node.state.conferences("fs1") == []
        gone = {u.participant.call_id for u in published if u.event == "del-member"}
        assert gone == call_ids  # every participant leaves, by its own event or by the loss
        wait_until(lambda: node.connected, timeout=10, what="reconnect")
        # refused while "restarting": several attempts, with backoff, one log line
        assert node.attempts - first_attempts >= 3
        assert node.connects == 2
        assert node.state.conferences("fs1") == []
        assert fake.commands.count("api conference json_list") == 2
        lines = [r for r in caplog.records if "disconnected" in r.getMessage()]
        assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]
    finally:
        fake.stop()


def test_sigkill_is_a_bare_eof_and_still_drops_everything(make_node):
    cap = Capture.load("s5_fs_stop_sigkill")
    assert cap.frames[-1].frame.content_type != "text/disconnect-notice"
    fake = ReplayFreeSwitch([cap], pause_at_checkpoints=False).start()
    try:
        node = make_node(fake.port, reconnect_min=30)
        assert fake.finished.wait(10)
        wait_until(lambda: not node.connected and node.connects == 1, what="loss")
        assert "EOF" in node.error
        assert node.state.conferences() == []
    finally:
        fake.stop()

"""The node supervisor against the stateful simulator: resync, channel data, restarts,
and actions as exact commands."""

import json

from confd.conferences.commands import CommandBuilder
from confd.conferences.control import CommandRejected, ConferenceControl
from confd.simulator.model import ConferenceModel
from confd.simulator.server import FakeFreeSwitch
from confd_tests.conftest import wait_until

ROOM = "0123456789abcdef0123456789abcdef"
ACCOUNT = "a" * 32


def sim_state(fake):
    out = {}
    for conf in json.loads(fake.model.api("conference json_list")):
        members = {
            m["id"]: (
                m["uuid"],
                m["flags"]["can_hear"],
                m["flags"]["can_speak"],
                m["flags"]["is_moderator"],
            )
            for m in conf["members"]
        }
        out[conf["conference_uuid"]] = (conf["conference_name"], conf["locked"], members)
    return out


def node_state(state, node):
    out = {}
    for conf in state.conferences(node):
        out[conf.uuid] = (
            conf.name,
            conf.is_locked,
            {
                p.participant_id: (p.call_id, p.hear, p.speak, p.is_moderator)
                for p in conf.participants.values()
            },
        )
    return out


def test_resync_then_channel_data_from_uuid_dump(make_node):
    fake = FakeFreeSwitch(ConferenceModel(hostname="fsA")).start()
    try:
        fake.model.join(
            ROOM,
            caller_id_name="Alice",
            caller_id_number="1001",
            channel_vars={"ecallmgr_Account-ID": ACCOUNT},
            direction="inbound",
        )
        fake.model.join(ROOM, caller_id_name="Bob", caller_id_number="1002", moderator=True)
        node = make_node(fake.port)
        wait_until(lambda: node.connected)
        assert node_state(node.state, "fs1") == sim_state(fake)
        (conf,) = node.state.conferences("fs1")
        alice = next(p for p in conf.participants.values() if p.caller_id_number == "1001")
        # json_list has no channel variables: they come from uuid_dump, off the intake path
        wait_until(lambda: alice.custom_channel_vars == {"account_id": ACCOUNT})
        assert alice.caller_id_name == "Alice" and alice.switch_hostname == "fsA"
        dumps = [line for _, line in fake.commands if line.startswith("api uuid_dump")]
        assert len(dumps) == 2
    finally:
        fake.stop()


def test_live_events_keep_state_equal_to_the_model(make_node):
    fake = FakeFreeSwitch(ConferenceModel()).start()
    try:
        node = make_node(fake.port)
        wait_until(lambda: node.connected)
        ids = [fake.model.join(ROOM, caller_id_name="C%d" % i) for i in range(5)]
        fake.model.set_talking(ids[0], True)
        fake.model.api("conference %s mute %d" % (ROOM, ids[1]))
        fake.model.api("conference %s lock" % ROOM)
        fake.model.leave(ids[2])
        wait_until(lambda: node_state(node.state, "fs1") == sim_state(fake))
        (conf,) = node.state.conferences("fs1")
        assert conf.is_locked and conf.participants[ids[0]].talking
    finally:
        fake.stop()


def test_restart_drops_state_and_member_ids_start_again(make_node):
    fake = FakeFreeSwitch(ConferenceModel()).start()
    try:
        node = make_node(fake.port)
        wait_until(lambda: node.connected)
        fake.model.join(ROOM, caller_id_name="A")
        fake.model.join(ROOM, caller_id_name="B")
        wait_until(lambda: node.state.counts("fs1") == (1, 2))
        fake.restart()
        wait_until(lambda: node.connects == 2, timeout=5)
        assert node.state.counts("fs1") == (0, 0)
        assert fake.model.join(ROOM, caller_id_name="C") == 1  # ids restart at 1
        wait_until(lambda: node_state(node.state, "fs1") == sim_state(fake))
    finally:
        fake.stop()


def test_actions_reach_the_node_as_exact_commands(make_node):
    fake = FakeFreeSwitch(ConferenceModel()).start()
    try:
        node = make_node(fake.port, pattern="[0-9a-f]{32}")
        wait_until(lambda: node.connected)
        a = fake.model.join(ROOM, caller_id_name="A")
        fake.model.join(ROOM, caller_id_name="M", moderator=True)
        wait_until(lambda: node.state.counts("fs1") == (1, 2))
        control = ConferenceControl(node.state, [node])
        builder = CommandBuilder()
        conf = control.live(ROOM)
        reply = control.send(conf, builder.everyone(ROOM, "mute"))
        assert reply == "Skipping moderator (member id 2).\n+OK mute %d\n" % a
        sent = [line for _, line in fake.commands]
        assert ("api conference %s mute non_moderator" % ROOM) in sent
        wait_until(lambda: conf.participants[a].speak is False)
        assert control.send(conf, builder.lock(ROOM)) == "+OK %s locked\n" % ROOM
        wait_until(lambda: conf.is_locked)
        try:
            control.send(conf, builder.member(ROOM, "kick", 999))
        except CommandRejected as exc:
            assert exc.reply.startswith("-ERR")
        else:
            raise AssertionError("kick of an unknown member accepted")
    finally:
        fake.stop()

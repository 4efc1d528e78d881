"""What events mean across a restart (events.md, connection lifecycle steps 4-7), against the
stateful fake FreeSWITCH on the real wire protocol, through the event hub to a sink (the AMQP
publisher and the websocket fan-out are sinks of the same hub and send ``Published.body()``):

- a command past its deadline (one slow ``uuid_dump``) fails that command and costs only the
  command connection: the event connection, the live state and the events published stay;
- losing the node publishes ``del-member`` per participant and ``conference-destroy`` per
  conference with ``"reason": "node_lost"``;
- the resync publishes ``conference-create`` / ``add-member`` with ``"reason": "resync"``,
  carrying the channel variables (``uuid_dump``) a consumer needs to tell whose call it is;
- events of what really happened on FreeSWITCH carry no reason;
- confd's own stop publishes nothing.
"""

from __future__ import annotations

import json
from typing import List, Set

import pytest

import confd
from confd.conferences.commands import RELAXED_NAME_PATTERN, CommandBuilder
from confd.conferences.control import ConferenceControl, FocusUnavailable
from confd.conferences.state import LiveState
from confd.config import config_from_dict
from confd.daemon import Daemon
from confd.esl.node import NodeSettings, NodeSupervisor
from confd.events.hub import EventHub
from confd.events.shape import Published
from confd.simulator.model import ConferenceModel
from confd.simulator.server import FakeFreeSwitch
from confd.store import Store
from confd_tests.conftest import wait_until
from confd_tests.contract import OPTIONAL_EVENT_KEY

ROOMS = ("0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210")
ACCOUNT = "a" * 32
ACCOUNT_VAR = "ecallmgr_Account-ID"
COMMAND_TIMEOUT = 0.5
# Generous: these bound waits for things that do happen, never a claim about speed.
EVENTUALLY = 10.0


class SlowFreeSwitch(FakeFreeSwitch):
    """A FreeSWITCH where chosen commands are slow once: the connection that received one
    answers nothing more (mod_event_socket runs one command at a time per connection), as with a
    ``uuid_dump`` of a channel stuck in a media operation."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.slow_once: Set[str] = set()  # command lines (without "api ")
        self.stuck: Set[int] = set()  # connection indexes

    def _command(self, conn, request) -> None:
        line = request.line
        if conn.index in self.stuck:
            self.commands.append((conn.index, line))
            return
        if line.startswith("api ") and line[4:] in self.slow_once:
            self.slow_once.discard(line[4:])
            self.stuck.add(conn.index)
            self.commands.append((conn.index, line))
            return
        super()._command(conn, request)


class Watched:
    """A node supervisor, its state, the hub it publishes to and what reached the hub's sink."""

    def __init__(self, fake: FakeFreeSwitch, **settings) -> None:
        self.state = LiveState()
        self.hub = EventHub(node_name="confd-test", app_version=confd.__version__, state=self.state)
        self.got: List[Published] = []
        self.hub.add_sink(self.got.append)
        self.transitions: List[bool] = []
        settings.setdefault("command_timeout", COMMAND_TIMEOUT)
        self.node = NodeSupervisor(
            NodeSettings(
                name="fs1",
                host="127.0.0.1",
                port=fake.port,
                password="ClueCon",
                reconnect_min=0.05,
                reconnect_max=0.2,
                heartbeat_timeout=30.0,
                **settings,
            ),
            self.state,
            CommandBuilder(RELAXED_NAME_PATTERN),
            publish=self.hub.publish,
            wants_updates=self.hub.has_consumers,
            on_status=lambda node: self.transitions.append(node.connected),
        )
        self.control = ConferenceControl(self.state, [self.node])

    def events(self) -> List[tuple]:
        """(event, call id or "conference", reason) of every event published so far."""
        return [(p.name, p.call_id, p.data.get(OPTIONAL_EVENT_KEY)) for p in self.got]


@pytest.fixture
def fake():
    f = SlowFreeSwitch(ConferenceModel(hostname="fsA")).start()
    yield f
    f.stop()


@pytest.fixture
def watched(fake):
    made: List[Watched] = []

    def make(**settings) -> Watched:
        w = Watched(fake, **settings)
        made.append(w)
        w.node.start()
        return w

    yield make
    for w in made:
        w.node.stop(timeout=1)


def populate(model) -> List[str]:
    """Two conferences, three calls with an Account-ID (which json_list does not carry)."""
    for i, room in enumerate((ROOMS[0], ROOMS[0], ROOMS[1])):
        model.join(room, caller_id_name="C%d" % i, channel_vars={ACCOUNT_VAR: ACCOUNT})
    return sorted(m.uuid for m in model.members())


def members_with_account(w: Watched) -> Set[str]:
    return {
        p.call_id
        for conf in w.state.conferences("fs1")
        for p in conf.participants.values()
        if p.custom_channel_vars.get("account_id") == ACCOUNT
    }


def test_a_slow_uuid_dump_costs_only_the_command_connection(fake, watched):
    calls = populate(fake.model)
    fake.slow_once.add("uuid_dump %s json" % calls[1])
    w = watched()
    # The dump past its deadline closed the command connection; it was made again and the
    # dumps it took with it were tried again: every participant gets its channel data.
    wait_until(lambda: fake.stuck, timeout=EVENTUALLY, what="the slow dump")
    wait_until(lambda: members_with_account(w) == set(calls), timeout=EVENTUALLY, what="data")
    subscriptions = [line for _, line in fake.commands if line.startswith("event ")]
    assert len(subscriptions) == 1  # one event connection throughout
    assert w.node.connects == 1 and w.transitions == [True]
    assert w.node.command_reconnects >= 1
    assert w.state.counts("fs1") == (2, 3)
    names = [name for name, _, _ in w.events()]
    assert "del-member" not in names and "conference-destroy" not in names

    # A command of the API past its deadline: that command fails (503 to its caller), the
    # node's conferences stay, and the next command goes on a new command connection.
    conf = w.control.live(ROOMS[0])
    fake.slow_once.add("conference %s lock" % ROOMS[0])
    published = len(w.got)
    with pytest.raises(FocusUnavailable) as failed:
        w.control.send(conf, _lock(ROOMS[0]))
    assert "no reply within" in str(failed.value) and failed.value.focus == "fs1"
    assert w.node.connected and w.state.counts("fs1") == (2, 3)
    wait_until(lambda: w.node.command_reconnects >= 2, timeout=EVENTUALLY, what="reconnect")
    assert w.control.send(conf, _lock(ROOMS[0])).startswith("+OK")
    wait_until(lambda: w.state.find(ROOMS[0])[0].is_locked, timeout=EVENTUALLY, what="locked")
    assert w.node.connects == 1 and w.transitions == [True]
    assert [name for name, _, _ in w.events()[published:]] == ["lock"]


def _lock(room: str):
    return CommandBuilder(RELAXED_NAME_PATTERN).lock(room)


def test_node_loss_and_resync_are_published_with_their_reason(fake, watched):
    calls = populate(fake.model)
    w = watched()
    wait_until(lambda: w.node.connected, timeout=EVENTUALLY, what="connected")
    # confd learned the node: every conference and participant, reason resync, each conference
    # before its participants, and with the channel data (account) json_list does not have.
    wait_until(lambda: len(w.got) == 5, timeout=EVENTUALLY, what="resync events")
    first = w.events()
    assert (
        sorted(e for e in first if e[0] == "conference-create")
        == [("conference-create", "conference", "resync")] * 2
    )
    assert sorted(e for e in first if e[0] == "add-member") == [
        ("add-member", c, "resync") for c in calls
    ]
    for pub in w.got:
        if pub.name == "add-member":
            created = [p for p in w.got[: w.got.index(pub)] if p.name == "conference-create"]
            assert pub.conference_id in {p.conference_id for p in created}
            assert pub.data["custom_channel_vars"] == {"account_id": ACCOUNT}
            assert pub.data["caller_id_name"].startswith("C")

    # FreeSWITCH restarts: every participant leaves and every conference ends, reason node_lost.
    del w.got[:]
    fake.refuse(True)
    fake.restart(notice=None)
    wait_until(lambda: not w.node.connected, timeout=EVENTUALLY, what="node lost")
    lost = w.events()
    assert sorted(e for e in lost if e[0] == "del-member") == [
        ("del-member", c, "node_lost") for c in calls
    ]
    assert [e for e in lost if e[0] != "del-member"] == [
        ("conference-destroy", "conference", "node_lost")
    ] * 2
    for pub in w.got:  # each conference's participants leave before it ends
        if pub.name == "conference-destroy":
            later = w.got[w.got.index(pub) + 1 :]
            assert pub.conference_id not in {p.conference_id for p in later}
            assert (pub.data["members"], pub.data["admins"]) == (0, 0)
    # the bytes a sink sends (AMQP body, websocket frame data) carry the reason
    assert {json.loads(p.body())["reason"] for p in w.got} == {"node_lost"}

    # Back with new calls: the resync publishes them; then real events carry no reason.
    del w.got[:]
    new_calls = populate(fake.model)
    fake.refuse(False)
    wait_until(lambda: w.node.connected, timeout=EVENTUALLY, what="reconnected")
    wait_until(lambda: len(w.got) == 5, timeout=EVENTUALLY, what="resync events")
    assert sorted(e for e in w.events() if e[0] == "add-member") == [
        ("add-member", c, "resync") for c in new_calls
    ]
    assert [p.data["custom_channel_vars"] for p in w.got if p.name == "add-member"] == [
        {"account_id": ACCOUNT}
    ] * 3
    del w.got[:]
    member = fake.model.join(ROOMS[1], caller_id_name="Late")
    fake.model.api("conference %s mute %d" % (ROOMS[1], member))
    fake.model.leave(member)
    wait_until(lambda: len(w.got) == 3, timeout=EVENTUALLY, what="real events")
    assert [(name, reason) for name, _, reason in w.events()] == [
        ("add-member", None),
        ("mute-member", None),
        ("del-member", None),
    ]
    assert not any(OPTIONAL_EVENT_KEY in json.loads(p.body()) for p in w.got)


def test_confd_stopping_a_node_publishes_nothing(fake, watched):
    populate(fake.model)
    w = watched()
    wait_until(lambda: w.node.connected, timeout=EVENTUALLY, what="connected")
    assert w.state.counts("fs1") == (2, 3)
    del w.got[:]
    w.node.stop(timeout=1)
    assert w.got == []
    assert not w.node.connected


def test_the_daemon_stop_publishes_nothing_to_any_sink(fake, tmp_path):
    """The whole stop (websocket, HTTP, nodes, AMQP): nobody left, so nothing is published."""
    populate(fake.model)
    cfg = config_from_dict(
        {
            "http": {"host": "127.0.0.1", "port": 0},
            "database": {"url": f"sqlite:///{tmp_path}/confd.db"},
            "freeswitch": {"nodes": [{"host": "127.0.0.1", "port": fake.port, "name": "fs1"}]},
        }
    )
    daemon = Daemon(cfg, instance_name="confd-test", store=Store.from_url(cfg.database.url))
    got: List[Published] = []
    daemon.hub.add_sink(got.append)
    daemon.start()
    try:
        wait_until(lambda: daemon.nodes[0].connected, timeout=EVENTUALLY, what="connected")
        assert daemon.state.counts("fs1") == (2, 3)
    finally:
        del got[:]
        daemon.stop()
    assert got == []

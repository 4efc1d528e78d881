"""confd.cluster.control in this process, with fakes for the claims, the bus and the nodes:
``ClusterControl`` ("read this conference", "send this command to its focus" across
instances) and ``Responder`` (what an owner answers the others)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import orjson
import pytest

from confd.cluster import names, wire
from confd.cluster.bus import BusUnavailable, NoAnswer
from confd.cluster.control import ClusterControl, Responder
from confd.conferences import events as ev
from confd.conferences.commands import RELAXED_NAME_PATTERN, Command, CommandBuilder
from confd.conferences.control import (
    CommandRejected,
    ConferenceControl,
    FocusUnavailable,
    MemberChanged,
)
from confd.conferences.model import Conference, Participant
from confd.conferences.state import LiveState
from confd.esl.connection import EslError

ME = "a"
UUID1 = "11111111-1111-4111-8111-111111111111"
UUID2 = "22222222-2222-4222-8222-222222222222"
BUILDER = CommandBuilder(RELAXED_NAME_PATTERN)


class FakeSlot:
    """A configured node as OwnedNodes has it: owned here (a supervisor) or not."""

    def __init__(self, name: str, owned: bool = False, connected: bool = True) -> None:
        self.name = name
        self.owned = owned
        self._connected = connected
        self.sent: List[Command] = []
        self.reply = "+OK done"

    @property
    def connected(self) -> bool:
        return self.owned and self._connected

    def api(self, command: Command, timeout: Optional[float] = None) -> str:
        if not self.connected:
            raise EslError("not connected")
        self.sent.append(command)
        return self.reply

    def status(self) -> Dict[str, Any]:
        return {"name": self.name, "connected": self.connected}


class FakeNodes:
    def __init__(self, slots: List[FakeSlot]) -> None:
        self.slots = {s.name: s for s in slots}

    def __iter__(self):
        return iter(self.slots.values())


class FakeClaims:
    def __init__(self, owners: Dict[str, str]) -> None:
        self.owners = dict(owners)
        self.mine = {n for n, o in owners.items() if o == ME}

    def owner(self, node: str) -> Optional[str]:
        return self.owners.get(node)


class FakeBus:
    """Answers gather() with ``replies`` (by instance) and request() with ``answer`` (or
    raises ``error``); records what was asked."""

    def __init__(self) -> None:
        self.replies: Dict[str, Dict[str, Any]] = {}
        self.answer: Dict[str, Any] = {}
        self.error: Optional[Exception] = None
        self.gathered: List[tuple] = []
        self.requested: List[tuple] = []

    def gather(self, body, expect, timeout):
        self.gathered.append((body, set(expect), timeout))
        if self.error is not None:
            raise self.error
        return {k: v for k, v in self.replies.items() if k in expect}

    def request(self, route, body, timeout):
        self.requested.append((route, body, timeout))
        if self.error is not None:
            raise self.error
        return self.answer


def member(pid: int, call: str, conf: str = "room1", uuid: str = UUID1) -> Participant:
    return Participant(participant_id=pid, call_id=call, conference_name=conf, conference_uuid=uuid)


def conference(name="room1", uuid=UUID1, node="fs1", members=(), start=1700000000.0):
    conf = Conference(name=name, uuid=uuid, node=node, profile="default", start_time=start)
    for p in members:
        conf.participants[p.participant_id] = p
    return conf


def put(state: LiveState, node: str, *confs: Conference) -> None:
    state.apply(node, ev.Snapshot(conferences=list(confs)))


class Setup:
    """This instance ``a`` owning fs1; ``b`` owning fs2; fs3 owned by nobody (a failover)."""

    def __init__(self, owners=None, fs1_connected=True) -> None:
        owners = owners if owners is not None else {"fs1": ME, "fs2": "b"}
        self.slots = [
            FakeSlot("fs1", owned=owners.get("fs1") == ME, connected=fs1_connected),
            FakeSlot("fs2", owned=owners.get("fs2") == ME),
            FakeSlot("fs3", owned=owners.get("fs3") == ME),
        ]
        self.nodes = FakeNodes(self.slots)
        self.claims = FakeClaims(owners)
        self.bus = FakeBus()
        self.state = LiveState()
        self.commands: List[tuple] = []
        self.local = ConferenceControl(self.state, self.slots)
        self.control = ClusterControl(
            self.local,
            instance=ME,
            state=self.state,
            claims=self.claims,
            bus=self.bus,
            nodes=self.nodes,
            request_timeout=0.5,
            command_timeout=2.0,
            on_command=lambda action, result: self.commands.append((action, result)),
        )
        self.responder = Responder(
            instance=ME,
            state=self.state,
            claims=self.claims,
            nodes=self.nodes,
            local=self.local,
            builder=BUILDER,
        )

    def b_says(self, *confs: Conference, nodes=None, owned=("fs2",)) -> None:
        self.bus.replies["b"] = wire.reply(
            "b",
            list(owned),
            nodes=nodes if nodes is not None else {n: True for n in owned},
            conferences=[wire.conference_to_wire(c) for c in confs],
        )


# --- reads ----------------------------------------------------------------------------------


def test_a_conference_on_a_node_owned_here_is_read_here_without_asking():
    s = Setup()
    put(s.state, "fs1", conference())
    s.b_says()
    assert s.control.live("room1").node == "fs1"
    assert s.bus.gathered == []  # the owner's read costs nobody else anything


def test_a_conference_not_here_is_asked_of_every_other_owner():
    s = Setup()
    s.b_says()
    assert s.control.live("room1") is None
    body, expect, timeout = s.bus.gathered[0]
    assert body == {"kind": "find", "name": "room1", "from": ME}
    assert expect == {"b"} and timeout == 0.5


def test_a_conference_on_another_owner_node_comes_from_its_answer():
    s = Setup()
    remote = conference(node="fs2", members=[member(3, "call-3")])
    s.b_says(remote)
    assert s.control.live("room1") == remote


def test_the_oldest_instance_wins_when_two_other_nodes_host_one_name():
    s = Setup(owners={"fs1": ME, "fs2": "b", "fs3": "b"})
    s.b_says(
        conference(uuid=UUID1, node="fs3", start=1700000100.0),
        conference(uuid=UUID2, node="fs2", start=1700000000.0),
        owned=("fs2", "fs3"),
    )
    assert s.control.live("room1").uuid == UUID2


def test_a_name_on_two_nodes_reads_as_the_owners_own_on_the_owner():
    s = Setup()
    put(s.state, "fs1", conference(uuid=UUID1, start=1700000100.0))
    s.b_says(conference(uuid=UUID2, node="fs2", start=1700000000.0))
    assert s.control.live("room1").uuid == UUID1


def test_an_owner_that_did_not_answer_makes_the_read_focus_unavailable_naming_its_node():
    s = Setup()  # b says nothing
    with pytest.raises(FocusUnavailable) as info:
        s.control.live("room1")
    assert info.value.focus == "fs2"
    with pytest.raises(FocusUnavailable) as info:
        s.control.conferences()
    assert info.value.focus == "fs2"


def test_a_lost_bus_reads_as_owners_not_answering():
    s = Setup()
    s.bus.error = BusUnavailable("no broker")
    with pytest.raises(FocusUnavailable) as info:
        s.control.live("room1")
    assert info.value.focus == "fs2"


def test_every_silent_owner_node_is_named():
    s = Setup(owners={"fs1": ME, "fs2": "b", "fs3": "c"})
    with pytest.raises(FocusUnavailable) as info:
        s.control.conferences()
    assert set(info.value.focus.split(", ")) == {"fs2", "fs3"}


def test_a_node_nobody_owns_reads_as_not_running_and_is_not_asked():
    s = Setup(owners={"fs1": ME})  # fs2 and fs3: a failover under way
    assert s.control.live("room1") is None
    assert s.control.conferences() == []
    assert s.bus.gathered == [], "nobody to ask"
    assert set(s.control.disconnected_nodes()) == {"fs2", "fs3"}
    assert not s.control.every_node_connected()


def test_conferences_are_this_instance_and_the_owners():
    s = Setup()
    here = conference(name="r1")
    there = conference(name="r2", uuid=UUID2, node="fs2")
    put(s.state, "fs1", here)
    s.b_says(there)
    got = s.control.conferences()
    assert sorted(c.name for c in got) == ["r1", "r2"]
    assert s.bus.gathered[0][0] == {"kind": "list", "from": ME}


def test_a_snapshot_asks_once_and_serves_every_row():
    s = Setup()
    put(s.state, "fs1", conference(name="r1"))
    s.b_says(conference(node="fs2"), conference(name="r2", uuid=UUID2, node="fs2"))
    view = s.control.snapshot()
    assert view.live("room1").node == "fs2" and view.live("r1").node == "fs1"
    assert view.live("nope") is None
    assert sorted(c.name for c in view.conferences()) == ["r1", "r2", "room1"]
    assert len(s.bus.gathered) == 1, "asked again for a row"


def test_a_snapshot_with_a_silent_owner_is_focus_unavailable():
    s = Setup()
    with pytest.raises(FocusUnavailable) as info:
        s.control.snapshot()
    assert info.value.focus == "fs2"


def test_a_bad_answer_is_ignored_not_raised():
    s = Setup()
    s.bus.replies["b"] = wire.reply("b", ["fs2"], conferences=[{"name": "x"}])
    assert s.control.live("room1") is None


def test_disconnected_nodes():
    s = Setup(fs1_connected=False)
    assert s.control.disconnected_nodes() == ["fs1", "fs3"]
    # What b last said of its node counts: fs2 down there.
    s.b_says(nodes={"fs2": False})
    s.control.conferences()
    assert s.control.disconnected_nodes() == ["fs1", "fs2", "fs3"]
    # b answered without fs2 (it is moving): not connected anywhere for now.
    s.b_says(nodes={"fs2": True})
    s.control.conferences()
    assert "fs2" not in s.control.disconnected_nodes()
    s.b_says(owned=())
    s.control.conferences()
    assert "fs2" in s.control.disconnected_nodes()


# --- commands -------------------------------------------------------------------------------


def test_a_command_on_a_node_owned_here_is_sent_here():
    s = Setup()
    conf = conference()
    put(s.state, "fs1", conf)
    cmd = BUILDER.lock("room1")
    assert s.control.send(conf, cmd) == "+OK done"
    assert s.slots[0].sent == [cmd] and s.bus.requested == []


def test_a_command_on_another_owner_node_goes_to_that_owner():
    s = Setup()
    conf = conference(node="fs2", members=[member(7, "call-7")])
    s.bus.answer = {"instance": "b", "owned": ["fs2"], "outcome": "ok", "reply": "+OK mute 7"}
    cmd = BUILDER.member("room1", "mute", 7)
    assert s.control.send(conf, cmd, conf.participants[7]) == "+OK mute 7"
    route, body, timeout = s.bus.requested[0]
    assert route == names.instance_route("b")
    assert body == dict(
        wire.command_request("fs2", conf, "mute", "7", conf.participants[7]), **{"from": ME}
    )
    assert timeout == pytest.approx(2.5)  # request_timeout + command_timeout
    assert s.commands == [("mute", "ok")]


def test_a_rejected_command_is_command_rejected():
    s = Setup()
    s.bus.answer = {"outcome": "rejected", "reply": "-ERR Conference room1 not found"}
    with pytest.raises(CommandRejected) as info:
        s.control.send(conference(node="fs2"), BUILDER.lock("room1"))
    assert info.value.reply == "-ERR Conference room1 not found"
    assert s.commands == [("lock", "rejected")]


def test_a_stale_member_is_member_changed_with_the_call_now():
    s = Setup()
    conf = conference(node="fs2", members=[member(7, "call-7")])
    now = member(7, "call-other")
    s.bus.answer = {"outcome": "stale", "now": wire.participant_to_wire(now)}
    with pytest.raises(MemberChanged) as info:
        s.control.send(conf, BUILDER.member("room1", "kick", 7), conf.participants[7])
    assert info.value.now == now and info.value.member.call_id == "call-7"
    s.bus.answer = {"outcome": "stale", "now": None}
    with pytest.raises(MemberChanged) as info:
        s.control.send(conf, BUILDER.member("room1", "kick", 7), conf.participants[7])
    assert info.value.now is None


@pytest.mark.parametrize(
    "answer",
    [
        {"outcome": "unavailable", "error": "node fs2 not owned here"},
        {"outcome": "invalid", "error": "bad member"},
        {"outcome": "stale"},  # stale without a member: nothing to say it changed
        {"outcome": "what"},
        {},
    ],
)
def test_other_outcomes_are_focus_unavailable_naming_the_node(answer):
    s = Setup()
    with pytest.raises(FocusUnavailable) as info:
        s.bus.answer = answer
        s.control.send(conference(node="fs2"), BUILDER.lock("room1"))
    assert info.value.focus == "fs2"


@pytest.mark.parametrize("error", [NoAnswer("no answer within 2.50s"), BusUnavailable("gone")])
def test_an_owner_that_does_not_answer_is_focus_unavailable_naming_the_node(error):
    s = Setup()
    s.bus.error = error
    with pytest.raises(FocusUnavailable) as info:
        s.control.send(conference(node="fs2"), BUILDER.lock("room1"))
    assert info.value.focus == "fs2"
    assert s.commands == [("lock", "unavailable")]


def test_a_command_on_a_node_nobody_owns_is_focus_unavailable_without_asking():
    s = Setup()
    with pytest.raises(FocusUnavailable) as info:
        s.control.send(conference(node="fs3"), BUILDER.lock("room1"))
    assert info.value.focus == "fs3" and s.bus.requested == []


def test_a_node_this_instance_owns_on_paper_but_not_yet_in_hand_is_not_asked_of_itself():
    s = Setup(owners={"fs1": ME, "fs2": "b", "fs3": ME})
    s.slots[2].owned = False  # fs3: claimed, its supervisor not made yet (or just stopped)
    with pytest.raises(FocusUnavailable):
        s.control.send(conference(node="fs3"), BUILDER.lock("room1"))
    assert s.bus.requested == []


# --- Responder ------------------------------------------------------------------------------


def command(s: Setup, **fields) -> Dict[str, Any]:
    body = {
        "kind": "command",
        "node": "fs1",
        "conference": "room1",
        "uuid": UUID1,
        "action": "mute",
        "target": "7",
        "member": {"participant_id": 7, "call_id": "call-7"},
        "from": "b",
    }
    body.update(fields)
    return s.responder.handle(body)


def live_here(s: Setup) -> Conference:
    conf = conference(members=[member(7, "call-7"), member(8, "call-8")])
    put(s.state, "fs1", conf)
    return conf


def test_the_responder_sends_the_command_it_builds_itself():
    s = Setup()
    live_here(s)
    answer = command(s)
    assert answer["outcome"] == "ok" and answer["reply"] == "+OK done"
    assert answer["instance"] == ME and answer["owned"] == ["fs1"]
    assert s.slots[0].sent == [BUILDER.member("room1", "mute", 7)]
    assert s.slots[0].sent[0].text == "conference room1 mute 7"


@pytest.mark.parametrize(
    "fields, text",
    [
        ({"action": "lock", "target": None, "member": None}, "conference room1 lock"),
        ({"action": "kick", "target": "all", "member": None}, "conference room1 kick all"),
        (
            {"action": "mute", "target": "non_moderator", "member": None},
            "conference room1 mute non_moderator",
        ),
    ],
)
def test_the_responder_builds_conference_and_selector_commands(fields, text):
    s = Setup()
    live_here(s)
    assert command(s, **fields)["outcome"] == "ok"
    assert [c.text for c in s.slots[0].sent] == [text]


@pytest.mark.parametrize(
    "fields",
    [
        {"action": "system"},
        {"action": None},
        {"action": ["mute"]},
        {"action": "lock", "target": "7"},
        {"action": "kick", "target": None},
        {"conference": "room1\n\napi system echo pwned"},
        {"conference": "room1 kick all"},
        {"conference": "json_list"},
        {"conference": None},
        {"target": "7abc"},
        {"target": "ALL", "member": None},
        {"target": "-1", "member": None},
        {"target": "0"},
        {"target": "4294967297"},
        {"target": "7 8"},
        {"target": "caller_id_number=6102", "member": None},
        {"target": 7},
        {"target": "last", "member": None},
        {"member": {"participant_id": "x", "call_id": "call-7"}},
        {"member": {"call_id": "call-7"}},
    ],
)
def test_the_responder_refuses_parts_it_would_not_build(fields):
    s = Setup()
    live_here(s)
    answer = command(s, **fields)
    assert answer["outcome"] == "invalid", answer
    assert s.slots[0].sent == [], "nothing reached FreeSWITCH"


def test_the_responder_refuses_a_node_it_does_not_own():
    s = Setup()
    live_here(s)
    put(s.state, "fs2", conference(uuid=UUID2, node="fs2"))
    for node in ("fs2", "fs3", "nope", None, ["fs1"]):
        answer = command(s, node=node, uuid=UUID2)
        assert answer["outcome"] == "unavailable", (node, answer)
    assert all(slot.sent == [] for slot in s.slots)


def test_the_responder_says_stale_when_the_member_is_another_call_now():
    s = Setup()
    live_here(s)
    answer = command(s, member={"participant_id": 7, "call_id": "call-old"})
    assert answer["outcome"] == "stale"
    assert wire.participant_from_wire(answer["now"]).call_id == "call-7"
    answer = command(s, target="9", member={"participant_id": 9, "call_id": "call-9"})
    assert answer == dict(answer, outcome="stale", now=None)
    # Another instance of the conference (a restart since): nothing sent either.
    answer = command(s, uuid=UUID2)
    assert answer["outcome"] == "stale"
    assert s.slots[0].sent == []


def test_the_responder_passes_freeswitch_refusal_and_loss_on():
    s = Setup()
    live_here(s)
    s.slots[0].reply = "-ERR Non-Existant ID 7"
    assert command(s) == dict(command(s), outcome="rejected", reply="-ERR Non-Existant ID 7")
    s.slots[0]._connected = False
    assert command(s)["outcome"] == "unavailable"


def test_the_responder_says_unavailable_for_a_conference_not_live_on_its_node():
    s = Setup()
    answer = command(s, action="lock", target=None, member=None)
    assert answer["outcome"] == "unavailable"


def test_the_responder_reads_only_its_own_nodes():
    s = Setup()
    here = live_here(s)
    put(s.state, "fs2", conference(uuid=UUID2, node="fs2"))  # left over: not owned here
    found = s.responder.handle({"kind": "find", "name": "room1", "from": "b"})
    assert found["instance"] == ME and found["owned"] == ["fs1"]
    assert found["nodes"] == {"fs1": True}
    assert wire.conferences_from_wire(found["conferences"]) == [here]
    listed = s.responder.handle({"kind": "list", "from": "b"})
    assert wire.conferences_from_wire(listed["conferences"]) == [here]
    status = s.responder.handle({"kind": "status", "from": "b"})
    assert status["status"] == [{"name": "fs1", "connected": True}]
    assert s.responder.handle({"kind": "find", "name": 5})["conferences"] == []


def test_the_responder_answers_an_unknown_request_with_an_error():
    s = Setup()
    answer = s.responder.handle({"kind": "reboot"})
    assert answer["error"] and answer["instance"] == ME


# --- both sides together --------------------------------------------------------------------


class LoopBus:
    """Requests to the other instances' Responders, through JSON as on the wire."""

    def __init__(self, me: str, responders: Dict[str, Responder]) -> None:
        self.me = me
        self.responders = responders

    @staticmethod
    def _through_json(value):
        return orjson.loads(orjson.dumps(value))

    def gather(self, body, expect, timeout):
        return {
            name: self._through_json(r.handle(self._through_json(body)))
            for name, r in self.responders.items()
            if name != self.me
        }

    def request(self, route, body, timeout):
        for name, r in self.responders.items():
            if names.instance_route(name) == route:
                return self._through_json(r.handle(self._through_json(body)))
        raise NoAnswer("no instance took it (%s)" % route)


def two_instances():
    """``a`` owns fs1 (room1 live there with members 7 and 8); ``b`` owns fs2."""
    a = Setup(owners={"fs1": ME, "fs2": "b"})
    b_owners = {"fs1": ME, "fs2": "b"}
    b = Setup(owners={})
    b.claims.owners = b_owners
    b.slots[1].owned = True
    b.control.instance = b.responder.instance = "b"
    responders = {ME: a.responder, "b": b.responder}
    a.control._bus = LoopBus(ME, responders)
    b.control._bus = LoopBus("b", responders)
    conf = live_here(a)
    return a, b, conf


def test_an_action_through_a_non_owner_reaches_the_owner_node():
    a, b, conf = two_instances()
    seen = b.control.live("room1")
    assert seen == conf
    reply = b.control.send(seen, BUILDER.member("room1", "mute", 7), seen.participants[7])
    assert reply == "+OK done"
    assert [c.text for c in a.slots[0].sent] == ["conference room1 mute 7"]
    assert b.slots[0].sent == [] and b.slots[1].sent == []


def test_a_stale_member_through_a_non_owner_is_member_changed():
    a, b, conf = two_instances()
    seen = b.control.live("room1")
    put(a.state, "fs1", conference(members=[member(7, "call-new")]))
    with pytest.raises(MemberChanged) as info:
        b.control.send(seen, BUILDER.member("room1", "kick", 7), seen.participants[7])
    assert info.value.now.call_id == "call-new"
    assert a.slots[0].sent == []


def test_every_instance_reads_the_same():
    a, b, conf = two_instances()
    put(b.state, "fs2", conference(name="r2", uuid=UUID2, node="fs2"))
    key = lambda c: (c.node, c.uuid)  # noqa: E731
    assert sorted(a.control.conferences(), key=key) == sorted(b.control.conferences(), key=key)
    assert a.control.live("r2") == b.control.live("r2")
    assert a.control.live("room1") == b.control.live("room1") == conf

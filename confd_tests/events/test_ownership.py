"""Who owns a conference, for events: the one rule (confd.conferences.ownership) as the hub
applies it at each event, and the fan-out holding a new conference's conference-level events
until its owner is known."""

import random

import gevent
import pytest
from gevent.event import Event

import confd
from confd.conferences import events as ev
from confd.conferences import ownership
from confd.conferences.state import LiveState
from confd.events import fanout as fanout_module
from confd.events.fanout import OWNER_WAIT, Fanout
from confd.events.hub import CLAIM_RECHECK, EventHub
from confd.events.ownership import PENDING, OwnershipResolver
from confd.metrics import Metrics
from confd.simulator.model import ConferenceModel
from confd.simulator.server import FakeFreeSwitch
from confd_tests.conftest import wait_until
from confd_tests.events.test_fanout import Member, RecordingSocket
from confd_tests.events.test_shape import CONF, UUID, participant

A, B, C = "a" * 32, "b" * 32, "c" * 32
ALL = "conference.event.*.*"


def member(mid, account=None, action="add-member"):
    vars_ = {"account_id": account} if account else {}
    return ev.MemberEvent(
        action,
        participant(participant_id=mid, call_id="call-%d" % mid, custom_channel_vars=vars_),
        "default",
        1.0,
    )


def created():
    return ev.ConferenceCreated(CONF, UUID, "default", 1.0)


def lock(locked=True):
    return ev.LockChanged(CONF, UUID, locked)


class Setup:
    """LiveState -> EventHub -> Fanout, a clock of our own, a document lookup we control."""

    def __init__(self, docs=None, lookup=None, addressable=lambda name: True, listen=True):
        self.now = [1000.0]
        self.state = LiveState()
        self.metrics = Metrics()
        self.hub = EventHub(
            node_name="confd-1",
            app_version=confd.__version__,
            state=self.state,
            clock=lambda: self.now[0],
        )
        self.docs = docs if docs is not None else {}
        self.resolver = OwnershipResolver(
            lookup or (lambda ids: {i: self.docs[i] for i in ids if i in self.docs}),
            addressable=addressable,
        )
        self.fanout = Fanout(self.resolver, metrics=self.metrics, clock=lambda: self.now[0])
        self.hub.add_sink(self.fanout.offer, active=self.fanout.active)
        self.published = []
        if listen:
            self.hub.add_sink(self.published.append)

    def member(self, bindings=(ALL,), account=A, sees_all=False):
        m = Member(RecordingSocket(), list(bindings), account=account, sees_all=sees_all)
        self.fanout.join(m)
        return m

    def apply(self, change, node="fs1"):
        self.hub.publish(self.state.apply(node, change))

    def live(self):
        found = self.state.find(CONF)
        return found[0] if found else None


def got(m):
    """(event, call id or None) of every frame the member was written, in order."""
    gevent.sleep(0)  # the writers run
    return [(msg["name"], msg["data"].get("call_id")) for msg in m.outbox.sock.messages()]


# --- the hub: the member part at each event ---------------------------------------------------


def test_every_event_of_a_conference_with_two_accounts_is_the_lowest_members():
    """Not each event's own member's variable, not the last member seen: the earliest caller
    still there decides, for its own events, the others' and the conference-level ones."""
    s = Setup()
    s.apply(created())
    s.apply(member(4, B))
    s.apply(member(2, A))  # a lower member id (resync order): it decides now
    s.apply(member(6, B, action="mute-member"))  # a member not seen before: taken as a join
    s.apply(lock())
    s.apply(member(2, A, action="del-member"))  # still present at its own leave
    s.apply(lock(False))
    s.apply(member(4, B, action="del-member"))
    s.apply(member(6, B, action="del-member"))
    s.apply(ev.ConferenceDestroyed(CONF, UUID))  # an empty conference: its last claimant's
    hints = [(p.name, p.account_hint) for p in s.published]
    assert hints == [
        ("conference-create", None),
        ("add-member", B),
        ("add-member", A),
        ("mute-member", A),
        ("lock", A),
        ("del-member", A),
        ("unlock", B),
        ("del-member", B),
        ("del-member", B),
        ("conference-destroy", B),
    ]
    # Only the conference-create came before any member said whose the conference is.
    assert [p.name for p in s.published if p.owner_pending] == ["conference-create"]


@pytest.mark.parametrize("seed", range(30))
def test_the_hub_agrees_with_the_rule_over_the_live_conference(seed):
    """Random joins, leaves, member events and variables arriving without an event (uuid_dump
    after a resync): at every event the hub's account is the rule applied to the live
    conference as it was then (a leaving member included), as REST computes it; a change that
    no event shows counts within CLAIM_RECHECK."""
    rnd = random.Random(seed)
    s = Setup()
    s.apply(created())
    present = {}  # member id -> account or None
    next_id = 1
    for _ in range(60):
        op = rnd.choice(["join", "join", "leave", "event", "silent", "lock"])
        before = [p for p in (s.live().participants.values() if s.live() else [])]
        expected = ownership.claimed_account(before)
        if op == "join" or not present:
            mid = next_id if rnd.random() < 0.8 else max(1, next_id - rnd.randint(1, 5))
            if mid in present:
                continue
            next_id = max(next_id, mid + 1)
            present[mid] = rnd.choice([None, A, B, C])
            s.apply(member(mid, present[mid]))
            expected = ownership.claimed_account(s.live().participants.values())
        elif op == "leave":
            mid = rnd.choice(sorted(present))
            del present[mid]
            s.apply(member(mid, None, action="del-member"))
        elif op == "event":
            mid = rnd.choice(sorted(present))
            flags = ev.MemberFlags("mute-member", UUID, mid, {"speak": False}, lambda: None)
            s.apply(flags)
        elif op == "silent":
            mid = rnd.choice(sorted(present))
            present[mid] = rnd.choice([None, A, B, C])
            vars_ = {"account_id": present[mid]} if present[mid] else {}
            s.apply(ev.ChannelData("call-%d" % mid, "fs", "n", "1", vars_, None))
            s.now[0] += CLAIM_RECHECK  # the bound on what no event shows
            continue
        else:
            s.apply(lock(rnd.random() < 0.5))
        pub = s.published[-1]
        if pub.owner_pending or (op == "lock" and not before):
            continue
        assert pub.account_hint == expected, (seed, op, pub.name)


def test_without_consumers_nothing_is_worked_out_and_nothing_goes_stale():
    s = Setup(listen=False)  # nobody listens (the fan-out has no subscription)
    s.apply(created())
    s.apply(member(1, A))
    assert s.hub._members == {}
    s.hub.add_sink(s.published.append)
    s.apply(member(2, B))
    s.apply(lock())
    assert [(p.name, p.account_hint) for p in s.published] == [("add-member", A), ("lock", A)]


# --- the fan-out: holding conference-level events until the owner is known --------------------


def test_conference_create_waits_for_the_first_member_then_comes_first():
    s = Setup()
    mine, other, admin = s.member(account=A), s.member(account=B), s.member(sees_all=True)
    s.apply(created())
    s.fanout.dispatch()
    assert got(mine) == [] and got(other) == []  # nobody knows yet whose it is
    assert got(admin) == [("conference-create", None)]  # admins see every conference at once
    s.apply(lock())
    s.fanout.dispatch()
    s.apply(member(1, A))
    s.fanout.dispatch()
    assert got(mine) == [("conference-create", None), ("lock", None), ("add-member", "call-1")]
    assert got(other) == []
    assert got(admin) == [("conference-create", None), ("lock", None), ("add-member", "call-1")]
    assert s.fanout._held == {}


def test_create_then_member_back_to_back_with_a_slow_ownership_lookup():
    """The issue's case, deterministically: the fake FreeSWITCH sends conference-create and
    add-member back to back; the document lookup is slow, and the member's event arrives while
    the dispatcher waits for it."""
    lookup_called, lookup_may_answer = Event(), Event()

    def slow_lookup(ids):
        lookup_called.set()
        lookup_may_answer.wait()  # the database takes its time
        return {}

    s = Setup(lookup=slow_lookup)
    mine, other = s.member(account=A), s.member(account=B)
    dispatcher = s.fanout.start()
    try:
        s.apply(created())  # the dispatcher wakes and asks the database...
        assert lookup_called.wait(5)
        s.apply(member(1, A))  # ...while the member's event comes in
        lookup_may_answer.set()
        for _ in range(100):
            if len(got(mine)) == 2:
                break
            gevent.sleep(0.01)
        assert got(mine) == [("conference-create", None), ("add-member", "call-1")]
        assert got(other) == []
    finally:
        dispatcher.kill()


def test_through_the_simulator_and_a_node_supervisor(make_node):
    """The same, end to end in one process: the simulated FreeSWITCH sends conference-create
    and add-member back to back over ESL, the node supervisor takes them in, and the document
    lookup the dispatcher makes for the new conference does not answer before the add-member
    has been published."""
    fake = FakeFreeSwitch(ConferenceModel(hostname="fs1", sounds=False)).start()
    member_published, lookup_called = Event(), Event()

    def slow_lookup(ids):
        lookup_called.set()
        member_published.wait(10)
        return {}

    s = Setup(lookup=slow_lookup)
    s.hub.add_sink(lambda pub: pub.name == "add-member" and member_published.set())
    mine, other = s.member(account=A), s.member(account=B)
    dispatcher = s.fanout.start()
    try:
        node = make_node(fake.port, state=s.state, publish=s.hub.publish)
        wait_until(lambda: node.connected, what="the node connected")
        fake.model.join(CONF, caller_id_name="Ann", channel_vars={"ecallmgr_Account-ID": A})
        wait_until(lambda: len(got(mine)) == 2, timeout=10, what="both events")
        assert lookup_called.is_set()
        assert [name for name, _ in got(mine)] == ["conference-create", "add-member"]
        assert got(other) == []
    finally:
        dispatcher.kill()
        fake.stop()


@pytest.mark.parametrize("rounds", [1, 2])
def test_a_document_found_meanwhile_decides_and_releases_in_order(rounds):
    s = Setup()
    mine, other = s.member(account=A), s.member(account=B)
    s.apply(created())
    if rounds == 2:
        s.fanout.dispatch()  # held: no document, no member yet
    s.docs[CONF] = B  # a document appears (the cache is refreshed)...
    s.resolver.forget(CONF)
    s.apply(member(1, A))  # ...and wins over the member's variable
    s.fanout.dispatch()
    assert got(other) == [("conference-create", None), ("add-member", "call-1")]
    assert got(mine) == [] and s.fanout._held == {}


def test_a_conference_nobody_joins_within_the_wait_is_nobodys():
    s = Setup()
    mine, admin = s.member(account=A), s.member(sees_all=True)
    s.apply(created())
    s.fanout.dispatch()
    s.now[0] += OWNER_WAIT
    s.apply(member(1, A))  # too late for the create: it was nobody's meanwhile
    s.fanout.dispatch()
    assert got(mine) == [("add-member", "call-1")]
    assert got(admin) == [("conference-create", None), ("add-member", "call-1")]
    assert s.fanout._held == {} and s.fanout._held_count == 0


def test_a_conference_destroyed_before_any_member_goes_to_nobody_at_once():
    s = Setup()
    mine = s.member(account=A)
    s.apply(created())
    s.apply(ev.ConferenceDestroyed(CONF, UUID))
    s.fanout.dispatch()
    assert got(mine) == [] and s.fanout._held == {}


def test_held_events_are_bounded_and_counted(monkeypatch):
    monkeypatch.setattr(fanout_module, "MAX_HELD", 3)
    s = Setup()
    mine = s.member(account=A)
    for i in range(5):
        name, uuid = "%032x" % i, "u%d" % i
        s.apply(ev.ConferenceCreated(name, uuid, "default", 1.0))
    s.fanout.dispatch()
    assert s.fanout._held_count == 3 and list(s.fanout._held) == ["%032x" % i for i in (2, 3, 4)]
    assert 'confd_queue_drops_total{queue="websocket_unowned"} 2.0' in (
        s.metrics.render()[0].decode()
    )
    assert got(mine) == []


def test_nothing_is_held_without_a_subscription_that_needs_an_owner():
    s = Setup()
    admin = s.member(sees_all=True)
    s.apply(created())
    s.fanout.dispatch()
    assert got(admin) == [("conference-create", None)] and s.fanout._held == {}


def test_a_name_confd_does_not_manage_is_nobodys():
    lookups = []
    s = Setup(lookup=lambda ids: lookups.append(ids) or {}, addressable=lambda n: n != CONF)
    mine, admin = s.member(account=A), s.member(sees_all=True)
    s.apply(created())
    s.apply(member(1, A))
    s.fanout.dispatch()
    assert got(mine) == [] and len(got(admin)) == 2
    assert lookups == []  # never asked the database about it
    assert s.resolver.owner(CONF, A, pending=True) is None
    assert s.resolver.owner("other", None, pending=True) is PENDING


def test_conference_level_bindings_of_every_conference():
    s = Setup()
    every = s.member(["conference.event.*.conference"], account=A)
    calls = s.member(["conference.event.*.call-1"], account=A)
    s.apply(created())
    s.apply(member(1, A))
    s.apply(member(2, A))
    s.apply(lock())
    s.fanout.dispatch()
    assert got(every) == [("conference-create", None), ("lock", None)]
    assert got(calls) == [("add-member", "call-1")]

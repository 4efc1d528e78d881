"""The cluster's proof (cluster.md, "Proof expected"): three real confd instances over six
simulated FreeSWITCH nodes, the machine's real PostgreSQL and RabbitMQ, through the
``Cluster`` harness.

* spread and equality: two nodes per instance, the same /v2/health owners and instances on
  every instance, the same GETs on every instance answered alike;
* an action through a non-owner reaches the node, and its event reaches a websocket client of
  the third instance;
* SIGKILL of an owner: its nodes move, reads meanwhile are never stale, no drift after, and it
  comes back into an even spread;
* a rolling SIGTERM restart of all three under node events, REST load and websocket clients:
  only documented answers, no event lost for a connected client (against a plain AMQP consumer
  of the exchange ``conference``), no drift at the end;
* RabbitMQ cut for 10 s and one instance's PostgreSQL cut: what each instance answers meanwhile,
  and the recovery by itself.

The machine has two busy cores: every wait is generous and nothing here asserts a duration or
a count that depends on timing (measured times are printed: ``pytest -s``).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import pytest

from confd.cluster.names import EVENTS_EXCHANGE
from confd.events.amqp import EXCHANGE_TYPE, connection_params
from confd_tests.cluster.harness import Cluster, ClusterFailed, Subscriber
from confd_tests.soak import checks

WAIT = 60.0  # generous: two busy cores, five Python processes
ALL = "conference.event.*.*"  # the websocket clients' binding, and the reference consumer's
MARGIN = 1.0  # seconds left out at each end of a client's subscribed window
PER_RESPONSE = ("request_id", "timestamp", "node")  # envelope keys that differ per answer
TICKING = ("duration",)  # seconds since something: moves between two reads
RESTARTS = 3  # the rolling restart: each instance once
TRAFFIC = 4.0  # seconds of load with every instance up, before each stop
FOCUS_UNAVAILABLE = "focus_unavailable"
SERVICE_UNAVAILABLE = "service_unavailable"


# --- helpers ---------------------------------------------------------------------------------


def wait_until(predicate, what: str, timeout: float = WAIT):
    """Poll ``predicate`` until it is truthy (its value is returned); AssertionError after
    ``timeout``.  Connection errors count as "not yet"."""
    limit = time.monotonic() + timeout
    last: Optional[BaseException] = None
    while True:
        try:
            value = predicate()
        except (OSError, http.client.HTTPException, ClusterFailed, KeyError) as exc:
            value, last = None, exc
        if value:
            return value
        if time.monotonic() > limit:
            raise AssertionError("not within %.0f s: %s (last error: %r)" % (timeout, what, last))
        time.sleep(0.1)


def soft_wait(predicate, timeout: float = 30.0) -> bool:
    """Give ``predicate`` up to ``timeout`` to become true, without failing: what it waits for
    is asserted later, with the details."""
    limit = time.monotonic() + timeout
    while time.monotonic() < limit:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def scrub(value: Any) -> Any:
    """``value`` without what differs between two answers of the same state: the per-response
    envelope keys and the ticking durations."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in TICKING}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def answer(status: int, body: Any) -> Tuple[int, Any]:
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in PER_RESPONSE}
    return status, scrub(body)


def reads(c: Cluster, k: int, token: str) -> Dict[str, Tuple[int, Any]]:
    """Every GET a dashboard makes, through instance ``k``: the list, each conference (its
    ``_read_only``), each conference's participants; path -> (status, scrubbed body)."""
    paths = ["/v2/accounts/%s/conferences" % c.account]
    for cid in sorted(c.conferences):
        paths += [c.conference_path(cid), c.conference_path(cid, "/participants")]
    return {p: answer(*c.http(k, "GET", p, token=token)) for p in paths}


def assert_reads_equal(c: Cluster, ks: List[int], token: str) -> Dict[str, Tuple[int, Any]]:
    """The same GETs through each instance of ``ks`` give equal 200 answers."""
    first = reads(c, ks[0], token)
    for path, (status, body) in first.items():
        assert status == 200, (c.names[ks[0]], path, status, body)
    for k in ks[1:]:
        other = reads(c, k, token)
        for path in first:
            assert other[path] == first[path], "GET %s: %s and %s differ\n%s\n%s" % (
                path,
                c.names[ks[0]],
                c.names[k],
                json.dumps(first[path], sort_keys=True)[:1500],
                json.dumps(other[path], sort_keys=True)[:1500],
            )
    return first


def no_drift(c: Cluster, k: int, token: str) -> None:
    """Instance ``k``'s view of every conference equals the nodes' own (after ``hold()``)."""
    result: Dict[str, Any] = {}

    def exact() -> bool:
        result.update(c.drift(k, token))
        return result["drift"] == 0

    try:
        c.wait(exact, WAIT, "no drift via %s" % c.names[k])
    except ClusterFailed as exc:
        raise AssertionError("drift via %s: %s\n%s" % (c.names[k], result, exc)) from None


def spread(owners: Dict[str, Optional[str]]) -> Counter:
    return Counter(o for o in owners.values() if o is not None)


def evenly_settled(c: Cluster) -> Optional[Dict[str, str]]:
    """``settled()`` with every running instance owning the same number of nodes (+-0: six
    nodes over three instances is two each, over two three each)."""
    owners = c.settled()
    if owners is None:
        return None
    counts = spread(owners)
    running = [c.names[k] for k in c.running()]
    share = len(c.node_names) // len(running)
    if any(counts.get(n, 0) != share for n in running):
        return None
    return owners


def truth(dump: Dict[str, Dict[str, Any]], cid: str) -> Tuple[str, Dict[int, Any]]:
    """(the node hosting conference ``cid``, its members as ``checks`` compares them)."""
    for node, d in dump.items():
        for conf in d["json_list"]:
            if conf["conference_name"] == cid:
                return node, checks.model_members(conf)
    raise AssertionError("conference %s on no node" % cid)


def member(dump: Dict[str, Dict[str, Any]], cid: str, pid: int) -> Dict[str, Any]:
    for d in dump.values():
        for conf in d["json_list"]:
            if conf["conference_name"] == cid:
                for m in conf["members"]:
                    if int(m["id"]) == pid:
                        return m
    raise AssertionError("member %d of %s on no node" % (pid, cid))


def locked(dump: Dict[str, Dict[str, Any]], cid: str) -> bool:
    for d in dump.values():
        for conf in d["json_list"]:
            if conf["conference_name"] == cid:
                return bool(conf["locked"])
    raise AssertionError("conference %s on no node" % cid)


def conferences_on(c: Cluster, nodes: Set[str]) -> List[str]:
    return sorted(cid for cid, node in c.conferences.items() if node in nodes)


def is_focus_unavailable(status: int, body: Any, node: Optional[str] = None) -> bool:
    """A 503 ``focus_unavailable`` (naming ``node`` among its focus, when given)."""
    if status != 503 or not isinstance(body, dict) or body.get("message") != FOCUS_UNAVAILABLE:
        return False
    if node is None:
        return True
    focus = (body.get("data") or {}).get("focus") or ""
    return node in [f.strip() for f in str(focus).split(",")]


def event_of(ev: Dict[str, Any]) -> Tuple[str, str, str]:
    d = ev.get("data") or {}
    return d.get("event"), d.get("conference_id"), str(d.get("participant_id"))


def msg_ids(sub: Subscriber) -> List[str]:
    return [(e.get("data") or {}).get("msg_id") for e in sub.events()]


class Reference(threading.Thread):
    """A plain AMQP consumer of the exchange ``conference`` (py-amqp, straight to the broker),
    bound with ``binding``: every event as the owners published it, each once.  ``events()``:
    ``(msg_id, conference_id, at)`` in arrival order, for the conferences in ``conferences``
    only (other test runs may share the broker)."""

    def __init__(self, url: str, binding: str, conferences: Set[str]) -> None:
        import amqp

        super().__init__(name="reference-consumer", daemon=True)
        self.conferences = conferences
        self._lock = threading.Lock()
        self._events: List[Tuple[str, str, float]] = []
        self._halt = threading.Event()
        self.error: Optional[BaseException] = None
        self.conn = amqp.Connection(connect_timeout=10, **connection_params(url))
        self.conn.connect()
        ch = self.conn.channel()
        ch.exchange_declare(EVENTS_EXCHANGE, EXCHANGE_TYPE, durable=True, auto_delete=False)
        queue, _, _ = ch.queue_declare("", exclusive=True, auto_delete=True)
        ch.queue_bind(queue, EVENTS_EXCHANGE, binding)
        ch.basic_consume(queue, callback=self._take, no_ack=True)
        self.start()

    def _take(self, msg: Any) -> None:
        raw = msg.body if isinstance(msg.body, (bytes, str)) else bytes(msg.body)
        body = json.loads(raw)
        headers = msg.properties.get("application_headers") or {}
        cid = body.get("conference_id")
        if cid not in self.conferences:
            return
        with self._lock:
            self._events.append((body["msg_id"], cid, float(headers["x-confd-at"])))

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                try:
                    self.conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def events(self) -> List[Tuple[str, str, float]]:
        with self._lock:
            return list(self._events)

    def close(self) -> None:
        self._halt.set()
        self.join(10)
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass


class Session:
    """One websocket client's subscribed life on one instance: from ``start`` (the subscribe
    reply) to ``end`` (its instance about to stop, or the test's end), Unix seconds."""

    def __init__(self, c: Cluster, k: int, token: str) -> None:
        self.k = k
        self.name = c.names[k]
        self.sub = c.subscribe(k, ALL, token=token)
        self.start = time.time()
        self.end: Optional[float] = None

    def expected(self, reference: List[Tuple[str, str, float]], end: float) -> List[str]:
        lo, hi = self.start + MARGIN, end - MARGIN
        return [m for m, _, at in reference if lo <= at <= hi]

    def missing(self, reference: List[Tuple[str, str, float]], end: float) -> List[str]:
        got = set(msg_ids(self.sub))
        return [m for m in self.expected(reference, end) if m not in got]


# --- 1 and 2: one settled cluster ------------------------------------------------------------


@pytest.fixture(scope="module")
def steady() -> Iterator[Cluster]:
    with Cluster(instances=3, nodes=6, conferences=12, members=3) as c:
        c.wait_settled()
        yield c


@pytest.mark.timeout(300)
def test_nodes_spread_and_every_instance_answers_alike(steady: Cluster) -> None:
    c = steady
    owners = wait_until(lambda: evenly_settled(c), "two nodes per instance")
    assert spread(owners) == {n: 2 for n in c.names}, owners
    instances_seen = []
    for k in range(3):
        status, body = c.health(k)
        assert status == 200, body
        data = body["data"]
        assert [n["name"] for n in data["nodes"]] == c.node_names, data["nodes"]
        assert {n["name"]: n["owner"] for n in data["nodes"]} == owners
        assert all(n["connected"] for n in data["nodes"]), data["nodes"]
        live = data["instances"]
        assert [i["name"] for i in live] == c.names, live
        for i in live:
            assert i["nodes"] == sorted(n for n, o in owners.items() if o == i["name"]), live
            assert time.strptime(i["since"], "%Y-%m-%dT%H:%M:%SZ"), i
        instances_seen.append(live)
    assert instances_seen[0] == instances_seen[1] == instances_seen[2]

    token = c.token(0)
    first = assert_reads_equal(c, [0, 1, 2], token)
    # And what they all say is what the nodes say.
    dump = c.dump()
    for cid, node in c.conferences.items():
        status, body = first[c.conference_path(cid)]
        ro = body["data"]["_read_only"]
        assert ro["focus"] == node and (ro["members"], ro["admins"]) == (2, 1), ro
        assert checks.confd_members(ro["participants"]) == truth(dump, cid)[1]
    for k in range(3):
        no_drift(c, k, token)


@pytest.mark.timeout(300)
def test_an_action_through_a_non_owner_reaches_the_node(steady: Cluster) -> None:
    c = steady
    owners = c.wait_settled()
    node = "fs0"
    a = c.index(owners[node])
    b, cc = [k for k in range(3) if k != a]
    cid = conferences_on(c, {node})[0]
    token = c.token(b)
    dump = c.dump()
    pid = next(
        int(m["id"])
        for conf in dump[node]["json_list"]
        if conf["conference_name"] == cid
        for m in conf["members"]
        if not m["flags"]["is_moderator"] and m["flags"]["can_speak"]
    )
    sub = c.subscribe(cc, "conference.event.%s.*" % cid, token=token)
    path = c.conference_path(cid, "/participants/%d" % pid)

    for action, event, speaks in (
        ("mute", "mute-member", False),
        ("unmute", "unmute-member", True),
    ):
        status, body = c.http(b, "PUT", path, {"data": {"action": action}}, token=token)
        assert status == 202, body
        assert body["data"]["action"] == action, body
        assert body["data"]["command"].startswith("conference %s %s" % (cid, action)), body
        assert body["data"]["reply"].startswith("+OK"), body  # FreeSWITCH's own answer
        assert member(c.dump(), cid, pid)["flags"]["can_speak"] is speaks
        sub.wait_for(
            lambda evs, e=event: any(event_of(x) == (e, cid, str(pid)) for x in evs),
            WAIT,
            "%s of %s/%d on %s" % (event, cid, pid, c.names[cc]),
        )
        # Every instance reads it alike, the owner included.
        for k in range(3):
            status, got = c.http(k, "GET", path, token=token)
            assert status == 200 and got["data"]["speak"] is speaks, (c.names[k], got)

    conf_path = c.conference_path(cid)
    for action, is_locked in (("lock", True), ("unlock", False)):
        status, body = c.http(b, "PUT", conf_path, {"data": {"action": action}}, token=token)
        assert status == 202, body
        assert body["data"]["reply"].startswith("+OK"), body
        assert locked(c.dump(), cid) is is_locked
        sub.wait_for(
            lambda evs, e=action: any(event_of(x)[:2] == (e, cid) for x in evs),
            WAIT,
            "%s of %s on %s" % (action, cid, c.names[cc]),
        )
        wait_until(
            lambda v=is_locked: all(
                c.http(k, "GET", conf_path, token=token)[1]["data"]["_read_only"]["is_locked"] is v
                for k in range(3)
            ),
            "every instance reads %s locked=%s" % (cid, is_locked),
        )
    sub.close()
    assert c.wait_settled() == owners


# --- 3: SIGKILL of an owner ------------------------------------------------------------------


class Readers(threading.Thread):
    """GETs of ``cids`` (and the list) through ``ks`` until stopped; every answer kept as
    (instance, path, status, body)."""

    def __init__(self, c: Cluster, ks: List[int], cids: List[str], token: str) -> None:
        super().__init__(name="readers", daemon=True)
        self.c, self.ks, self.cids, self.token = c, ks, cids, token
        self.answers: List[Tuple[int, str, int, Any]] = []
        self.errors: List[str] = []
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        paths = [self.c.conference_path(cid) for cid in self.cids]
        paths.append("/v2/accounts/%s/conferences" % self.c.account)
        while not self._halt.is_set():
            for k in self.ks:
                for p in paths:
                    try:
                        status, body = self.c.http(k, "GET", p, token=self.token)
                    except (OSError, http.client.HTTPException) as exc:
                        self.errors.append("%s %s: %r" % (self.c.names[k], p, exc))
                        continue
                    self.answers.append((k, p, status, body))

    def stop(self) -> None:
        self._halt.set()
        self.join(WAIT)


@pytest.mark.timeout(300)
def test_sigkill_of_an_owner_moves_its_nodes_and_reads_are_never_stale() -> None:
    with Cluster(instances=3, nodes=6, conferences=12, members=3) as c:
        owners = wait_until(lambda: evenly_settled(c), "two nodes per instance")
        victim = c.index(owners["fs0"])
        survivors = [k for k in range(3) if k != victim]
        lost = {n for n, o in owners.items() if o == c.names[victim]}
        cids = conferences_on(c, lost)
        token = c.token(survivors[0])
        dump = c.dump()  # no load: the nodes' truth does not change during the failover
        want = {cid: truth(dump, cid)[1] for cid in cids}

        readers = Readers(c, survivors, cids, token)
        at = c.kill(victim)

        def moved() -> bool:
            for k in survivors:
                nodes = c.health(k)[1]["data"]["nodes"]
                for n in nodes:
                    if n["name"] in lost and (
                        n["owner"] not in {c.names[s] for s in survivors} or not n["connected"]
                    ):
                        return False
            return True

        c.wait(moved, WAIT, "the killed owner's nodes owned and connected again")
        failover = time.monotonic() - at
        owners_after = c.wait_settled()
        time.sleep(1.0)  # a few more reads after the move
        readers.stop()
        print("\nfailover after SIGKILL of %s: %.2f s" % (c.names[victim], failover))

        assert not readers.errors, readers.errors[:5]
        assert set(owners_after.values()) == {c.names[k] for k in survivors}
        assert spread(owners_after) == {c.names[k]: 3 for k in survivors}
        kinds: Counter = Counter()
        for k, path, status, body in readers.answers:
            where = "%s GET %s" % (c.names[k], path)
            if is_focus_unavailable(status, body):
                focus = {f.strip() for f in str(body["data"]["focus"]).split(",")}
                assert focus & lost, (where, body)  # naming the killed owner's nodes
                kinds["503"] += 1
                continue
            assert status == 200, (where, status, body)
            if path.endswith("/conferences"):
                rows = {r["id"]: r for r in body["data"]}
                for cid in cids:
                    counts = (rows[cid]["members"], rows[cid]["admins"])
                    assert counts in ((0, 0), (2, 1)), (where, cid, rows[cid])
                continue
            cid = path.rsplit("/", 1)[1]
            ro = body["data"]["_read_only"]
            got = checks.confd_members(ro.get("participants") or [])
            if not got:
                kinds["not running"] += 1
                assert (ro["members"], ro["admins"]) == (0, 0), (where, ro)
            else:
                kinds["live"] += 1
                assert got == want[cid], (where, got, want[cid])
                assert ro["focus"] == c.conferences[cid], (where, ro)
        print("reads of its conferences meanwhile: %s" % dict(kinds))

        c.hold()
        for k in survivors:
            no_drift(c, k, token)
        assert_reads_equal(c, survivors, token)

        c.restart(victim)
        owners_back = wait_until(lambda: evenly_settled(c), "two nodes per instance again")
        assert spread(owners_back) == {n: 2 for n in c.names}
        for k in range(3):
            no_drift(c, k, token)
        assert_reads_equal(c, [0, 1, 2], token)


# --- 4: rolling SIGTERM restart --------------------------------------------------------------


class RestLoad(threading.Thread):
    """GETs and actions against the instances marked up, each answer checked: 200/201/202, or
    503 ``focus_unavailable`` (a conference moving).  ``down(k)`` waits for the requests in
    flight on ``k`` to finish, so none is sent to an instance the test is stopping."""

    def __init__(self, c: Cluster, token: str, seed: int = 7) -> None:
        super().__init__(name="rest-load", daemon=True)
        self.c, self.token = c, token
        self.rng = random.Random(seed)
        self._cond = threading.Condition()
        self._up: Set[int] = set(c.running())
        self._busy: Counter = Counter()
        self._halt = threading.Event()
        self.counts: Counter = Counter()
        self.bad: List[str] = []
        self.start()

    def down(self, k: int) -> None:
        with self._cond:
            self._up.discard(k)
            assert self._cond.wait_for(lambda: self._busy[k] == 0, WAIT), "requests stuck"

    def up(self, k: int) -> None:
        with self._cond:
            self._up.add(k)

    def _request(self) -> Tuple[str, str, Any]:
        c, rng = self.c, self.rng
        cid = rng.choice(sorted(c.conferences))
        kind = rng.choice(("list", "get", "participants", "mute", "lock"))
        if kind == "list":
            return "GET", "/v2/accounts/%s/conferences" % c.account, None
        if kind == "get":
            return "GET", c.conference_path(cid), None
        if kind == "participants":
            return "GET", c.conference_path(cid, "/participants"), None
        if kind == "mute":
            path = c.conference_path(cid, "/participants/%d" % c.moderators[cid])
            return "PUT", path, {"data": {"action": rng.choice(("mute", "unmute"))}}
        return "PUT", c.conference_path(cid), {"data": {"action": rng.choice(("lock", "unlock"))}}

    def run(self) -> None:
        while not self._halt.is_set():
            with self._cond:
                up = sorted(self._up)
                if not up:
                    k = None
                else:
                    k = self.rng.choice(up)
                    self._busy[k] += 1
            if k is None:
                time.sleep(0.05)
                continue
            method, path, body = self._request()
            try:
                status, got = self.c.http(k, method, path, body, token=self.token)
            except (OSError, http.client.HTTPException) as exc:
                status, got = -1, repr(exc)
            finally:
                with self._cond:
                    self._busy[k] -= 1
                    self._cond.notify_all()
            if status in (200, 201, 202):
                self.counts[status] += 1
            elif is_focus_unavailable(status, got):
                self.counts["503 focus_unavailable"] += 1
            else:
                self.counts["bad"] += 1
                self.bad.append(
                    "%s %s %s: %s %s" % (self.c.names[k], method, path, status, str(got)[:400])
                )
            time.sleep(0.02)

    def stop(self) -> None:
        self._halt.set()
        self.join(WAIT)


def check_sessions(
    sessions: List[Session], reference: List[Tuple[str, str, float]]
) -> Tuple[List[str], Dict[str, int]]:
    """Every reference event inside each session's window reached it once, in the reference's
    order per conference; (the problems, the number of events checked per session)."""
    problems: List[str] = []
    checked: Dict[str, int] = {}
    conference_of = {m: cid for m, cid, _ in reference}
    for n, s in enumerate(sessions):
        assert s.end is not None
        label = "client %d on %s [%.1f, %.1f]" % (n, s.name, s.start, s.end)
        want = s.expected(reference, s.end)
        checked[label] = len(want)
        got = msg_ids(s.sub)
        dupes = [m for m, x in Counter(got).items() if x > 1]
        if dupes:
            problems.append(
                "%s: %d events received twice, e.g. %s" % (label, len(dupes), dupes[:3])
            )
        have = set(got)
        missing = [m for m in want if m not in have]
        if missing:
            detail = [(m, conference_of[m], at) for m, _, at in reference if m in set(missing)]
            problems.append(
                "%s: %d of %d events missing, e.g. %s"
                % (label, len(missing), len(want), detail[:3])
            )
        wanted = set(want)
        for cid in sorted({conference_of[m] for m in want}):
            ref_order = [m for m in want if conference_of[m] == cid]
            got_order = [m for m in got if m in wanted and conference_of[m] == cid]
            present = set(got_order)
            if [m for m in ref_order if m in present] != list(dict.fromkeys(got_order)):
                problems.append("%s: events of %s in another order than published" % (label, cid))
    return problems, checked


@pytest.mark.timeout(420)
def test_rolling_sigterm_restart_loses_no_event_and_answers_only_documented_errors() -> None:
    with Cluster(instances=3, nodes=6, conferences=12, members=3) as c:
        wait_until(lambda: evenly_settled(c), "two nodes per instance")
        token = c.token(0)
        reference = Reference(c.amqp_url, ALL, set(c.conferences))
        sessions: List[Session] = [Session(c, k, token) for k in range(3)]
        c.load(talk=8.0, churn=0.5, mute=2.0)
        rest = RestLoad(c, token)
        codes = []
        try:
            time.sleep(TRAFFIC)  # some traffic before the first stop
            for k in range(RESTARTS):
                current = next(s for s in sessions if s.k == k and s.end is None)
                # Let its client catch up with what happened so far (not asserted here: a
                # loss shows in the final check), then take the instance out of the load.
                mark = time.time()
                soft_wait(lambda s=current, t=mark: not s.missing(reference.events(), t))
                rest.down(k)
                current.end = time.time()
                started = time.monotonic()
                codes.append(c.term(k))
                wait_until(lambda s=current: s.sub.ended is not None, "client on i%d ended" % k)
                assert current.sub.ended.startswith("close frame 1001"), current.sub.ended
                c.restart(k)
                wait_until(lambda: evenly_settled(c), "two nodes per instance after i%d" % k)
                wait_until(lambda k=k: c.health(k)[0] == 200, "i%d healthy" % k)
                print(
                    "\n%s restarted and settled in %.1f s"
                    % (c.names[k], time.monotonic() - started)
                )
                rest.up(k)
                sessions.append(Session(c, k, token))
                time.sleep(TRAFFIC)  # traffic with everyone up before the next stop
            # The others' clients never noticed anything.
            for s in sessions:
                if s.end is None:
                    assert s.sub.ended is None, (s.name, s.sub.ended)
        finally:
            rest.stop()
        c.hold()
        mark = time.time()
        soft_wait(
            lambda: all(not s.missing(reference.events(), mark) for s in sessions if s.end is None)
        )
        for s in sessions:
            if s.end is None:
                assert s.sub.ended is None, (s.name, s.sub.ended)
                s.end = time.time()
                s.sub.close()
        reference.close()
        assert reference.error is None, reference.error

        print("REST answers: %s" % dict(rest.counts))
        assert codes == [0] * RESTARTS
        assert not rest.bad, "%d undocumented answers:\n%s" % (
            len(rest.bad),
            "\n".join(rest.bad[:10]),
        )
        assert rest.counts[200] and rest.counts[202], rest.counts
        events = reference.events()
        problems, checked = check_sessions(sessions, events)
        print("reference events: %d; checked per client: %s" % (len(events), checked))
        assert not problems, "\n".join(problems)
        assert sum(checked.values()) > 0, checked  # not a vacuous check
        for k in range(3):
            no_drift(c, k, token)
        assert_reads_equal(c, [0, 1, 2], token)


# --- 5: RabbitMQ cut for 10 s ----------------------------------------------------------------


def _subscribe_raw(c: Cluster, k: int, token: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """A subscribe on a fresh websocket of instance ``k``, then a ping on the same socket:
    (the subscribe's answer, the ping's answer)."""
    import websocket

    ws = websocket.create_connection("ws://127.0.0.1:%d/v2/websocket" % c.port(k), timeout=WAIT)
    try:
        data = {"account_id": c.account, "binding": ALL}
        ws.send(
            json.dumps(
                {"action": "subscribe", "auth_token": token, "request_id": "s", "data": data}
            )
        )
        sub = json.loads(ws.recv())
        ws.send(json.dumps({"action": "ping", "request_id": "p"}))
        pong = json.loads(ws.recv())
        return sub, pong
    finally:
        ws.close()


@pytest.mark.timeout(300)
def test_rabbitmq_cut_answers_as_documented_and_recovers_by_itself() -> None:
    with Cluster(instances=3, nodes=6, conferences=12, members=3, amqp_proxy=True) as c:
        owners = wait_until(lambda: evenly_settled(c), "two nodes per instance")
        token = c.token(0)
        subs = [c.subscribe(k, ALL, token=token) for k in range(3)]
        assert c.amqp_proxy is not None
        c.amqp_proxy.cut()
        cut_at = time.monotonic()

        def bus_lost(k: int) -> bool:
            status, body = c.health(k)
            return (
                status == 503
                and body.get("message") == SERVICE_UNAVAILABLE
                and "event bus" in body["data"].get("unready", "")
            )

        for k in range(3):
            wait_until(lambda k=k: bus_lost(k), "i%d: health 503 naming the event bus" % k)
        for k, sub in enumerate(subs):
            wait_until(lambda s=sub: s.ended is not None, "i%d's client closed" % k)
            assert sub.ended.startswith("close frame 1013"), sub.ended
            notices = [m for m in sub.messages() if m.get("action") == "error"]
            assert notices and "subscribe again" in notices[-1]["data"]["errors"][0], notices

        dump = c.dump()
        for k in range(3):
            me = c.names[k]
            mine = sorted(n for n, o in owners.items() if o == me)
            others = sorted(n for n, o in owners.items() if o != me)
            status, body = c.health(k)
            assert status == 503 and bus_lost(k), body
            seen = {n["name"]: n for n in body["data"]["nodes"]}
            assert {n: x["owner"] for n, x in seen.items()} == owners, body["data"]["nodes"]
            assert all(seen[n]["connected"] for n in mine), body["data"]["nodes"]
            # Its own node's conference: live data, read and commanded here.
            cid = conferences_on(c, {mine[0]})[0]
            status, body = c.http(k, "GET", c.conference_path(cid), token=token)
            assert status == 200, (me, body)
            ro = body["data"]["_read_only"]
            assert checks.confd_members(ro["participants"]) == truth(dump, cid)[1], (me, ro)
            mod = c.conference_path(cid, "/participants/%d" % c.moderators[cid])
            status, body = c.http(k, "PUT", mod, {"data": {"action": "unmute"}}, token=token)
            assert status == 202, (me, body)
            # Another instance's: 503 naming its node, for a read and for an action.
            node = others[0]
            cid = conferences_on(c, {node})[0]
            status, body = c.http(k, "GET", c.conference_path(cid), token=token)
            assert is_focus_unavailable(status, body, node), (me, status, body)
            mod = c.conference_path(cid, "/participants/%d" % c.moderators[cid])
            status, body = c.http(k, "PUT", mod, {"data": {"action": "unmute"}}, token=token)
            assert is_focus_unavailable(status, body, node), (me, status, body)
            # The list cannot be complete: 503 too, never a partial list.
            status, body = c.http(k, "GET", "/v2/accounts/%s/conferences" % c.account, token=token)
            assert is_focus_unavailable(status, body), (me, status, body)
            # A new subscribe: an error answer; the socket and the instance go on.
            sub_answer, pong = _subscribe_raw(c, k, token)
            assert sub_answer.get("status") == "error", (me, sub_answer)
            assert pong.get("status") == "success", (me, pong)
        # Ownership does not move for a broker outage.
        while time.monotonic() - cut_at < 10.0:
            for k in range(3):
                assert c.owners(k) == owners
            time.sleep(0.5)
        c.amqp_proxy.restore()

        for k in range(3):
            wait_until(lambda k=k: c.health(k)[0] == 200, "i%d: health 200 again" % k)
        assert c.wait_settled() == owners
        fresh = [c.subscribe(k, ALL, token=token) for k in range(3)]
        c.load(talk=10.0)
        for k, sub in enumerate(fresh):
            theirs = {cid for cid, n in c.conferences.items() if owners[n] != c.names[k]}
            sub.wait_for(
                lambda evs, t=theirs: any(event_of(e)[1] in t for e in evs),
                WAIT,
                "events of the other instances' nodes on i%d" % k,
            )
        c.hold()
        for k in range(3):
            no_drift(c, k, token)
        assert_reads_equal(c, [0, 1, 2], token)


# --- 6: one instance's PostgreSQL cut --------------------------------------------------------


@pytest.mark.timeout(300)
def test_one_instances_database_cut_moves_its_nodes_and_it_comes_back() -> None:
    with Cluster(instances=3, nodes=6, conferences=12, members=3, pg_proxies=True) as c:
        wait_until(lambda: evenly_settled(c), "two nodes per instance")
        token = c.token(1)
        victim, others = 0, [1, 2]
        other_names = {c.names[k] for k in others}
        c.pg_proxy(victim).cut()

        def moved() -> Optional[Dict[str, str]]:
            seen = None
            for k in others:
                status, body = c.health(k)
                data = body["data"]
                if status != 200 or {i["name"] for i in data["instances"]} != other_names:
                    return None
                owners = {n["name"]: n["owner"] for n in data["nodes"]}
                if set(owners.values()) != other_names:
                    return None
                if not all(n["connected"] for n in data["nodes"]):
                    return None
                if seen is not None and owners != seen:
                    return None
                seen = owners
            return seen

        owners = wait_until(moved, "the cut instance's nodes owned by the others")
        assert spread(owners) == {n: 3 for n in other_names}, owners
        status, body = c.health(victim)
        assert status == 503 and body.get("message") == SERVICE_UNAVAILABLE, body
        assert "database session" in body["data"]["unready"], body["data"]

        # The others answer everything: reads alike, an action across them, no drift.
        assert_reads_equal(c, others, token)
        node = next(n for n, o in owners.items() if o == c.names[2])
        cid = conferences_on(c, {node})[0]
        mod = c.conference_path(cid, "/participants/%d" % c.moderators[cid])
        for action in ("mute", "unmute"):
            status, body = c.http(1, "PUT", mod, {"data": {"action": action}}, token=token)
            assert status == 202 and body["data"]["reply"].startswith("+OK"), body
        for k in others:
            no_drift(c, k, token)

        c.pg_proxy(victim).restore()
        back = wait_until(lambda: evenly_settled(c), "two nodes per instance again")
        assert spread(back) == {n: 2 for n in c.names}
        for k in range(3):
            assert [i["name"] for i in c.live_instances(k)] == c.names
        for k in range(3):
            no_drift(c, k, token)
        assert_reads_equal(c, [0, 1, 2], token)

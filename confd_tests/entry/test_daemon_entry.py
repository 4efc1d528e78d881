"""Caller entry wired into the daemon: off until entry.listen is set, a simulated FreeSWITCH
call enters through the daemon's listener and joins, and /v2/health, /metrics and the REST
view show it; a taken address stops the start before anything runs; the stop ends entry
first, within the daemon's one budget."""

from __future__ import annotations

import time
from typing import Any, Dict, List

import gevent
import pytest
from gevent import socket as gsocket

from confd.config import config_from_dict
from confd.daemon import Daemon
from confd.entry import constants as c
from confd.simulator.model import ConferenceModel
from confd.simulator.outbound import OutboundSide
from confd.simulator.server import FakeFreeSwitch
from confd.store import Store
from confd_tests.conftest import wait_until
from confd_tests.http.client import ApiClient
from confd_tests.loadtools import parse_metrics

TIMEOUT = 15.0  # generous: two cores shared with other test runs


def make_daemon(tmp_path: Any, entry: Dict[str, Any]) -> Daemon:
    fake = FakeFreeSwitch(ConferenceModel(hostname="fs1")).start()
    cfg = config_from_dict(
        {
            "http": {"host": "127.0.0.1", "port": 0},
            "database": {"url": "sqlite:///%s/confd.db" % tmp_path},
            "freeswitch": {
                "nodes": [{"host": "127.0.0.1", "port": fake.port, "name": "fs1"}],
                "reconnect_min": 0.05,
                "reconnect_max": 0.2,
            },
            "entry": entry,
        }
    )
    daemon = Daemon(cfg, instance_name="confd-test", store=Store.from_url(cfg.database.url))
    daemon.fake = fake  # type: ignore[attr-defined]
    return daemon


@pytest.fixture
def live(tmp_path):
    daemons: List[Daemon] = []

    def start(**entry: Any) -> Daemon:
        daemon = make_daemon(tmp_path, entry)
        daemons.append(daemon)
        daemon.start()
        wait_until(lambda: daemon.nodes[0].connected, timeout=TIMEOUT, what="node connected")
        return daemon

    yield start
    for daemon in daemons:
        for call in getattr(daemon, "side", OutboundSide(ConferenceModel())).calls:
            call.hang_up()
        daemon.stop()
        daemon.fake.stop()  # type: ignore[attr-defined]


def metrics(daemon: Daemon) -> Dict[str, float]:
    return parse_metrics(daemon.metrics.render()[0].decode())


def test_entry_is_off_without_listen(live):
    daemon = live()
    assert not daemon.entry.enabled and daemon.entry.port is None
    reply = ApiClient(daemon.http_port).get("/v2/health", token=None)
    assert reply.status == 200 and "entry" not in reply.body["data"]
    assert metrics(daemon)["confd_entry_active"] == 0.0


def test_a_simulated_call_enters_joins_and_shows_in_health_metrics_and_rest(live):
    daemon = live(listen="127.0.0.1:0")
    account, api_key = daemon.store.accounts.create_account("entry")
    conf = daemon.store.conferences.create(
        account["id"],
        {"name": "standup", "conference_numbers": ["7100"], "member": {"pins": ["1234"]}},
    ).id
    side = OutboundSide(daemon.fake.model)  # type: ignore[attr-defined]
    daemon.side = side  # type: ignore[attr-defined]
    address = ("127.0.0.1", daemon.entry.port)
    variables = {"ecallmgr_Account-ID": account["id"]}
    before = metrics(daemon)
    # Every outcome is shown from 0 before the first call.
    for outcome in c.OUTCOMES:
        assert before['confd_entry_calls_total{outcome="%s"}' % outcome] == 0.0

    joined = side.dial(address, variables=variables, answers=["7100#", "1234#"])
    # A second caller who never types: held at the number prompt (long digit timeout).
    waiting = side.dial(address, variables=variables, answers=[], time_scale=10.0)

    def in_room() -> bool:
        return any(conf_.by_call_id(joined.uuid) for conf_ in daemon.state.find(conf))

    wait_until(in_room, timeout=TIMEOUT, what="the caller in the live state")
    wait_until(lambda: daemon.entry.active == 1, timeout=TIMEOUT, what="one call left in entry")

    health = ApiClient(daemon.http_port).get("/v2/health", token=None)
    assert health.status == 200
    entry = health.body["data"]["entry"]
    assert entry["listen"] == "127.0.0.1:%d" % daemon.entry.port
    assert entry["active"] == 1 and entry["max_calls"] == 500
    m = metrics(daemon)
    assert m["confd_entry_active"] == 1.0
    assert m['confd_entry_calls_total{outcome="joined"}'] == 1.0

    token = ApiClient(daemon.http_port).put("/v2/api_auth", {"api_key": api_key}, token=None)
    api = ApiClient(daemon.http_port, token.body["auth_token"])
    view = api.get("/v2/accounts/%s/conferences/%s" % (account["id"], conf))
    assert view.status == 200, view
    (participant,) = view.body["data"]["_read_only"]["participants"]
    assert participant["call_id"] == joined.uuid and participant["speak"] is False
    assert joined.flags == ["mute"] and joined.vars["confd_role"] == "member"

    waiting.hang_up()
    wait_until(lambda: daemon.entry.active == 0, timeout=TIMEOUT, what="entry empty")
    wait_until(
        lambda: metrics(daemon).get('confd_entry_calls_total{outcome="hangup"}') == 1.0,
        timeout=TIMEOUT,
        what="the hangup counted",
    )
    assert metrics(daemon)["confd_entry_active"] == 0.0
    assert (
        ApiClient(daemon.http_port).get("/v2/health", token=None).body["data"]["entry"]["active"]
        == 0
    )


def test_a_taken_entry_address_stops_the_start_before_anything_runs(tmp_path):
    taken = gsocket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    daemon = make_daemon(tmp_path, {"listen": "127.0.0.1:%d" % taken.getsockname()[1]})
    try:
        with pytest.raises(OSError) as info:
            daemon.start()
        assert "entry.listen 127.0.0.1:%d" % taken.getsockname()[1] in str(info.value)
        assert daemon.server is None  # HTTP never started
        assert not any(node.connected for node in daemon.nodes)
    finally:
        taken.close()
        daemon.store.close()
        daemon.fake.stop()  # type: ignore[attr-defined]


def test_the_stop_ends_entry_first_within_the_budget(tmp_path):
    """Entry is asked first, while the nodes still feed the live state, and a stop of entry
    that never returns still leaves the nodes stopped and the store closed within the
    daemon's budget."""
    daemon = make_daemon(tmp_path, {"listen": "127.0.0.1:0"})
    daemon.start()
    asked: List[Any] = []
    closed: List[bool] = []
    real_close = daemon.store.close
    try:
        wait_until(lambda: daemon.nodes[0].connected, timeout=TIMEOUT, what="node connected")

        def hang(timeout: float) -> None:
            asked.append((timeout, [n.connected for n in daemon.nodes], daemon.server))
            gevent.sleep(3600)

        daemon.entry.stop = hang  # type: ignore[method-assign]
        daemon.store.close = lambda: closed.append(True) or real_close()  # type: ignore
        budget = 2.0
        t0 = time.monotonic()
        with gevent.Timeout(budget + 20, AssertionError("the stop passed its budget")):
            daemon.stop(budget=budget)
        assert time.monotonic() - t0 < budget + 5  # generous: a busy machine
        ((timeout, connected, server),) = asked
        assert connected == [True] and server is not None  # before HTTP and the nodes
        assert 0 < timeout < budget  # its share of the one budget, not a timeout of its own
        assert closed == [True]
        assert not any(node.connected for node in daemon.nodes)
    finally:
        type(daemon.entry).stop(daemon.entry, timeout=1.0)
        daemon.fake.stop()  # type: ignore[attr-defined]


def test_a_call_in_entry_is_ended_by_the_stop(tmp_path):
    daemon = make_daemon(tmp_path, {"listen": "127.0.0.1:0"})
    daemon.start()
    try:
        wait_until(lambda: daemon.nodes[0].connected, timeout=TIMEOUT, what="node connected")
        account, _ = daemon.store.accounts.create_account("entry")
        side = OutboundSide(daemon.fake.model)  # type: ignore[attr-defined]
        call = side.dial(
            ("127.0.0.1", daemon.entry.port),
            variables={"ecallmgr_Account-ID": account["id"]},
            answers=[],
            time_scale=10.0,
        )
        wait_until(lambda: daemon.entry.active == 1, timeout=TIMEOUT, what="the call in entry")
        daemon.stop()
        assert call.wait(TIMEOUT)  # the socket closed: FreeSWITCH's dialplan hangs up
        assert call.down and call.hung_up_by == "dialplan"
        assert daemon.entry.active == 0
        assert daemon.entry.outcomes == {c.OUTCOME_ERROR: 1}  # "confd stopping", logged once
    finally:
        daemon.fake.stop()  # type: ignore[attr-defined]

"""Websocket delivery under a burst, end to end: ``confd run`` and the fake FreeSWITCH (see
test_websocket.py), a node of 1,500 participants lost and resynced (issue 10's case; 5,000
through the hub: test_fanout.py)."""

from __future__ import annotations

import threading
import urllib.request
from collections import Counter

import pytest
import websocket

from confd_tests.events.conftest import wait_for
from confd_tests.events.test_websocket import ALL, client, setup  # noqa: F401 - a fixture

PARTICIPANTS = 1500  # over the default subscriber_queue (1,000)
CONFERENCES = 10
DEADLINE = 120.0  # seconds for the whole burst to arrive, generous for a busy machine


def read_all(c, until, out, errors):
    """A client reading as fast as it can (a thread), until ``until(events)`` holds."""
    try:
        while not until(out):
            kind, *rest = c.frame(timeout=DEADLINE)
            if kind != "text":
                errors.append((kind, rest))
                return
            if rest[0].get("action") == "event":
                out.append(rest[0])
            else:
                errors.append(rest[0])
                return
    except (websocket.WebSocketException, OSError) as exc:
        errors.append(repr(exc))


# The resync dumps each participant's channel (uuid_dump, a few at a time): most of the time
# here, and over a minute on a machine with no core to spare.
@pytest.mark.timeout(300)
def test_a_node_of_1500_lost_and_resynced_reaches_every_reader(setup, fake_fs):  # noqa: F811
    """Losing a node publishes a del-member per participant at once, and its resync an
    add-member per participant at once: 1,500 events in one go, more than the default
    subscriber_queue.  Every client that reads keeps its connection and gets every event, in
    order; a client watching another conference gets nothing and stays connected."""
    s = setup()
    confs = [
        s["confd"].store.conferences.create(s["a"], {"name": "c%d" % i}).id
        for i in range(CONFERENCES)
    ]

    def populate():
        model = fake_fs.fake.model
        for i in range(PARTICIPANTS):
            model.join(confs[i % CONFERENCES], caller_id_name="p%d" % i, caller_id_number="1")

    fake_fs.call(populate)

    def participants():
        return sum(n.get("participants") or 0 for n in s["confd"].health()[1]["data"]["nodes"])

    wait_for(lambda: participants() == PARTICIPANTS, 60, "confd to see every participant")

    admin = client(s)  # every conference
    admin.subscribe(s["admin_token"], s["admin"])
    account = client(s)  # its account's: all of them
    account.subscribe(s["a_token"], s["a"])
    one = client(s)  # one conference of the account
    one.subscribe(s["a_token"], s["a"], "conference.event.%s.*" % confs[0])
    unrelated = client(s)  # account b's conference: nothing happens there
    unrelated.subscribe(s["b_token"], s["b"], "conference.event.%s.*" % s["b_conf"])
    for c in (admin, account, one, unrelated):
        assert c.sync() == []

    def resynced(share):
        def until(events):
            return Counter(e["name"] for e in events)["add-member"] >= share

        return until

    readers = [
        (admin, PARTICIPANTS),
        (account, PARTICIPANTS),
        (one, PARTICIPANTS // CONFERENCES),
    ]
    got = [[] for _ in readers]
    errors = [[] for _ in readers]
    threads = [
        threading.Thread(target=read_all, args=(c, resynced(n), got[i], errors[i]), daemon=True)
        for i, (c, n) in enumerate(readers)
    ]
    for t in threads:
        t.start()
    fake_fs.call(lambda: fake_fs.fake.drop_all())  # the node is lost; confd reconnects
    for t in threads:
        t.join(DEADLINE)
    assert errors == [[], [], []]
    metrics = urllib.request.urlopen(s["confd"].base + "/metrics", timeout=5).read().decode()
    assert 'queue="websocket"' not in metrics and "confd_websocket_closes_total{" not in metrics
    for c, events in zip((admin, account, one), got):
        events += c.sync()  # anything after the last add-member (none expected)
    all_events, account_events, one_events = got

    # Every participant left (node lost), then came back (resync), each once, in that order.
    def calls(events, name):
        return [e["data"]["call_id"] for e in events if e["name"] == name]

    left, back = calls(all_events, "del-member"), calls(all_events, "add-member")
    assert len(left) == len(set(left)) == PARTICIPANTS and set(back) == set(left)
    assert len(back) == PARTICIPANTS
    last_leave = max(i for i, e in enumerate(all_events) if e["name"] == "del-member")
    first_join = min(i for i, e in enumerate(all_events) if e["name"] == "add-member")
    assert last_leave < first_join
    # The account's subscriber saw exactly the same events in the same order; the one
    # conference's subscriber exactly that conference's part of them.
    ids = [e["data"]["msg_id"] for e in all_events]
    assert [e["data"]["msg_id"] for e in account_events] == ids
    assert [e["data"]["msg_id"] for e in one_events] == [
        e["data"]["msg_id"] for e in all_events if e["data"]["conference_id"] == confs[0]
    ]
    # The other account's client: nothing, and still connected.
    assert unrelated.sync() == []
    assert unrelated.request("ping")["status"] == "success"
    for c in (admin, account, one):
        assert c.request("ping")["status"] == "success"

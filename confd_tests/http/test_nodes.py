"""Two FreeSWITCH nodes holding different conferences: each action reaches only the node that
hosts its conference, and one node going down leaves the other's conferences usable."""

from __future__ import annotations

import pytest

from confd_tests.conftest import wait_until
from confd_tests.http.test_auth import assert_error


@pytest.fixture
def two(make_harness, tmp_path):
    h = make_harness(f"sqlite:///{tmp_path}/confd.db", nodes=("fs1", "fs2"))
    acme = h.account()
    c1, c2 = h.conference(acme, name="one"), h.conference(acme, name="two")
    m1 = h.join("fs1", c1, name="Uno")
    m2 = h.join("fs2", c2, name="Dos")
    return h, acme, c1, c2, m1, m2


def test_each_action_reaches_only_its_node(two):
    h, acme, c1, c2, m1, m2 = two
    for conf, member, node in ((c1, m1, "fs1"), (c2, m2, "fs2")):
        doc = acme.api.get(acme.path(f"/conferences/{conf}")).data
        assert doc["focus"] == node and doc["_read_only"]["focus"] == node
        (p,) = doc["_read_only"]["participants"]
        assert p["switch_hostname"] == node and p["participant_id"] == member
    assert (
        acme.api.put(acme.path(f"/conferences/{c2}/participants/{m2}"), {"action": "mute"}).status
        == 202
    )
    assert acme.api.put(acme.path(f"/conferences/{c1}"), {"action": "lock"}).status == 202
    assert h.control_sent("fs1") == [f"api conference {c1} lock"]
    assert h.control_sent("fs2") == [f"api conference {c2} mute {m2}"]
    h.wait_participant(c2, m2, speak=False)
    wait_until(lambda: h.live(c1).is_locked, what="c1 locked")
    assert h.live(c1).participants[m1].speak is True
    assert h.live(c2).is_locked is False


def test_one_node_down_leaves_the_other_usable(two):
    h, acme, c1, c2, m1, m2 = two
    h.take_down("fs1")
    wait_until(lambda: h.live(c1) is None, what="fs1's conferences dropped")
    # fs2's conference: read and act as usual.
    doc = acme.api.get(acme.path(f"/conferences/{c2}")).data
    assert doc["_read_only"]["members"] == 1 and doc["focus"] == "fs2"
    got = acme.api.put(acme.path(f"/conferences/{c2}/participants/{m2}"), {"action": "deaf"})
    assert got.status == 202 and got.data["reply"] == f"+OK deaf {m2}"
    h.wait_participant(c2, m2, hear=False)
    # fs1's conference may be live on the node we cannot see: 503 focus_unavailable.
    for rest, action in (("", "lock"), ("/participants", "mute"), (f"/participants/{m1}", "kick")):
        reply = acme.api.put(acme.path(f"/conferences/{c1}{rest}"), {"action": action})
        assert assert_error(reply, 503, "focus_unavailable") == {"focus": "fs1"}
    # Reads of it still work, showing it as not running.
    doc = acme.api.get(acme.path(f"/conferences/{c1}")).data
    assert doc["_read_only"]["members"] == 0 and doc["_read_only"]["focus"] is None
    rows = {r["id"]: r for r in acme.api.get(acme.path("/conferences")).data}
    assert rows[c1]["members"] == 0 and rows[c2]["members"] == 1
    assert h.control_sent("fs1") == []
    # The node comes back (a restarted FreeSWITCH: nothing live); not running is 409 again.
    h.fakes["fs1"].model.restart()
    h.fakes["fs1"].refuse(False)
    h.wait_connected("fs1")
    assert_error(
        acme.api.put(acme.path(f"/conferences/{c1}"), {"action": "lock"}),
        409,
        "conference_not_running",
    )
    health = h.anon.get("/v2/health", token=None)
    assert health.status == 200
    assert [n["connected"] for n in health.data["nodes"]] == [True, True]

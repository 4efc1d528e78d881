"""``confd demo`` with caller entry: simulated callers dial the demo documents' numbers, some
with the right PIN, some wrong, and a newcomer sees them in the log, the REST view, the
websocket and /metrics (the demo as a process, as ``test_demo_database`` runs it)."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Dict, Set

import pytest

from confd.simulator.callers import demo_script
from confd_tests.loadtools import parse_metrics, subscribe
from confd_tests.simulator.test_demo_database import Demo

DEADLINE = 90.0  # seconds; the script's first six callers take about 12 s on a quiet machine
JOINED = re.compile(r"entry: call=(\S+) account=(\S+) conference=(\S+) role=(\S+) outcome=joined")


def get(base: str, path: str, token: str = "") -> dict:
    req = urllib.request.Request(base + path, headers={"X-Auth-Token": token} if token else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def metrics(base: str) -> Dict[str, float]:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        return parse_metrics(resp.read().decode())


@pytest.fixture
def demo(tmp_path: Path):
    started = Demo(tmp_path, "--port", "0", "--database", "sqlite:///%s/d.db" % tmp_path)
    yield started
    if started.proc.poll() is None:
        started.proc.kill()
        started.proc.wait()


def test_demo_callers_enter_with_numbers_and_pins(demo):
    printed = demo.wait_ready()
    base = re.search(r"HTTP API on (http://127\.0\.0\.1:\d+)", demo.text)[1]
    assert re.search(r"Caller entry on 127\.0\.0\.1:\d+", demo.text), demo.text
    assert "PIN 1234" in demo.text
    req = urllib.request.Request(
        base + "/v2/api_auth",
        data=json.dumps({"data": {"api_key": printed["api_key"]}}).encode(),
        method="PUT",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        token = json.loads(resp.read())["auth_token"]
    account = printed["id"]
    ws_url = base.replace("http://", "ws://") + "/v2/websocket"
    ws, _ = subscribe(ws_url, token, account, "1", 10, binding="conference.event.*.*")
    ws.settimeout(1.0)

    added: Set[str] = set()  # call ids of add-member events on the websocket
    seen_in_rest: Set[str] = set()
    deadline = time.monotonic() + DEADLINE
    wanted = ("joined", "bad_pin", "bad_number")
    while time.monotonic() < deadline:
        try:
            message = json.loads(ws.recv())
        except Exception:  # noqa: BLE001 - a receive timeout: look at the rest
            message = {}
        event = message.get("data", message)
        if isinstance(event, dict) and event.get("event") == "add-member":
            added.add(event.get("call_id"))
        joined = {m[1]: m for m in JOINED.finditer(demo.log())}
        for conf in {m[3] for m in joined.values()}:
            view = get(base, "/v2/accounts/%s/conferences/%s" % (account, conf), token)
            for p in view["data"]["_read_only"]["participants"]:
                if p["call_id"] in joined:
                    seen_in_rest.add(p["call_id"])
        m = metrics(base)
        counts = {o: m.get('confd_entry_calls_total{outcome="%s"}' % o, 0) for o in wanted}
        roles = {j[4] for j in joined.values()}
        if (
            counts["joined"] >= 2
            and counts["bad_pin"] >= 1
            and counts["bad_number"] >= 1
            and roles == {"member", "moderator"}
            and seen_in_rest & added
        ):
            break
    ws.close()
    log = demo.log()
    assert counts["joined"] >= 2 and counts["bad_pin"] >= 1 and counts["bad_number"] >= 1, (
        counts,
        log[-3000:],
    )
    assert roles == {"member", "moderator"}, log[-3000:]
    # One caller the log says joined was in the REST view and on the websocket.
    assert seen_in_rest & added, (seen_in_rest, added)
    for caller in demo_script("7100", "7101", "1234", "9999")[:3]:
        assert "demo: " in log and caller.says in log
    assert demo.stop() == 0, log[-3000:]
    assert "Traceback" not in demo.stderr_path.read_text()


def test_an_older_demo_database_gets_the_pins(tmp_path):
    """A demo database made before entry (documents without PINs) is taken again with the
    same documents, now asking the PINs the callers type."""
    from confd.simulator.demo import DEMO_ACCOUNT, prepare_account
    from confd.store import Store

    store = Store.from_url("sqlite:///%s/old.db" % tmp_path)
    try:
        account, _ = store.accounts.create_account(DEMO_ACCOUNT)
        old = store.conferences.create(
            account["id"],
            {"name": "Daily standup", "conference_numbers": ["7100"], "member": {}},
        ).id
        again, _, ids = prepare_account(store)
        assert again["id"] == account["id"] and ids[0] == old
        body = store.conferences.get(account["id"], old).body
        assert body["member"]["pins"] == ["1234"] and body["moderator"]["pins"] == ["9999"]
        assert store.conferences.get(account["id"], ids[1]).body["conference_numbers"] == ["7101"]
    finally:
        store.close()

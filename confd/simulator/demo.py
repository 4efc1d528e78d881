"""``confd demo``: the daemon against a built-in simulated FreeSWITCH node.

A newcomer with no FreeSWITCH sees the API and the events work: a demo account, two
conference documents, callers joining, talking, being muted and leaving.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import signal
import sys
from typing import List, Optional, TextIO

import gevent
from gevent.event import Event

from confd.config import Config, NodeConfig
from confd.daemon import Daemon
from confd.simulator.activity import run_activity
from confd.simulator.model import ConferenceModel
from confd.simulator.server import FakeFreeSwitch
from confd.store import Store

log = logging.getLogger(__name__)

DEMO_ACCOUNT = "demo"
DEMO_CONFERENCES = ("Daily standup", "Support bridge")


def demo_config(cfg: Config, fs_port: int, http_port: Optional[int]) -> Config:
    """The configuration, pointed at the simulator (and at ``--port`` when given)."""
    node = NodeConfig(host="127.0.0.1", port=fs_port, password="ClueCon", name="sim")
    fs = dataclasses.replace(cfg.freeswitch, nodes=(node,))
    http = cfg.http if http_port is None else dataclasses.replace(cfg.http, port=http_port)
    return dataclasses.replace(cfg, freeswitch=fs, http=http)


def prepare_account(store: Store) -> tuple:
    """A fresh demo account with two conference documents; returns (account, key, ids)."""
    account, api_key = store.accounts.create_account(DEMO_ACCOUNT)
    ids: List[str] = []
    for i, name in enumerate(DEMO_CONFERENCES):
        doc = store.conferences.create(
            account["id"],
            {"name": name, "conference_numbers": [str(7100 + i)], "member": {"join_muted": False}},
        )
        ids.append(doc.id)
    return account, api_key, ids


def instructions(base: str, account_id: str, api_key: str, conference_id: str) -> str:
    ws = base.replace("http://", "ws://") + "/v2/websocket"
    return f"""
confd demo is running: HTTP API on {base}, one simulated FreeSWITCH node "sim".
Demo account {account_id}, api key {api_key}

Get a token:
  TOKEN=$(curl -s -X PUT {base}/v2/api_auth -d '{{"data": {{"api_key": "{api_key}"}}}}' \\
          | python3 -c 'import json,sys; print(json.load(sys.stdin)["auth_token"])')
List the conferences (with who is in them right now):
  curl -s -H "X-Auth-Token: $TOKEN" {base}/v2/accounts/{account_id}/conferences
Participants of one:
  curl -s -H "X-Auth-Token: $TOKEN" \\
       {base}/v2/accounts/{account_id}/conferences/{conference_id}/participants
Mute everyone but the moderators:
  curl -s -X PUT -H "X-Auth-Token: $TOKEN" -d '{{"data": {{"action": "mute"}}}}' \\
       {base}/v2/accounts/{account_id}/conferences/{conference_id}/participants
Watch the events (pip install websocket-client):
  python3 -c 'import json, websocket; ws = websocket.create_connection("{ws}");
ws.send(json.dumps({{"action": "subscribe", "auth_token": "'$TOKEN'", "request_id": "1",
  "data": {{"account_id": "{account_id}", "binding": "conference.event.*.*"}}}}))
while True: print(ws.recv())'
Health: curl -s {base}/v2/health      Stop: Ctrl-C
"""


def run_demo(
    cfg: Config,
    port: Optional[int] = None,
    *,
    out: TextIO = sys.stdout,
    seed: Optional[int] = None,
    interval: float = 1.0,
) -> int:
    fake = FakeFreeSwitch(ConferenceModel(hostname="sim")).start()
    cfg = demo_config(cfg, fake.port, port)
    try:
        daemon = Daemon(cfg)
    except Exception as exc:  # the database cannot be opened
        log.error("cannot start: %s", exc)
        fake.stop()
        return 1
    account, api_key, ids = prepare_account(daemon.store)
    stop = Event()
    handlers = [
        gevent.signal_handler(signal.SIGTERM, stop.set),
        gevent.signal_handler(signal.SIGINT, stop.set),
    ]
    try:
        daemon.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        fake.stop()
        return 1
    base = "http://%s:%d" % (cfg.http.host, daemon.http_port)
    out.write(instructions(base, account["id"], api_key, ids[0]))
    out.flush()
    activity = gevent.spawn(
        run_activity,
        fake.model,
        ids,
        rng=random.Random(seed),
        account_id=account["id"],
        interval=interval,
        stop_event=stop,
    )
    try:
        gevent.wait([stop, daemon.stopped_event], count=1)
    finally:
        stop.set()
        activity.kill()
        daemon.stop()
        fake.stop()
        for h in handlers:
            h.cancel()
    return daemon.exit_code

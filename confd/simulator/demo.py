"""``confd demo``: the daemon against a built-in simulated FreeSWITCH node.

A newcomer with no FreeSWITCH sees the API and the events work: a demo account, two
conference documents, callers joining, talking, being muted and leaving.  Caller entry is on
(on a loopback port of its own): simulated callers dial the documents' numbers, some with the
right PIN, some with a wrong one (``confd.simulator.callers``), and the log, the REST view and
the websocket show them entering or refused.

The demo never touches what the daemon serves: it keeps its account in a database of its own
(the command line opens ``cli.DEMO_DATABASE_URL`` unless ``--database`` names another) and
publishes to no AMQP broker, so running it on a production host adds no api key to the
production database and no simulated caller reaches the production event consumers.  It
binds its HTTP port before it writes anything, and each start takes the demo account (and
its documents) of the last one again, with a new api key (only a hash of the old one is
stored, so it cannot be printed again).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import signal
import sys
from typing import Dict, List, Optional, TextIO, Tuple

import gevent
from gevent.event import Event

from confd.config import Config, NodeConfig, config_to_dict
from confd.daemon import EXIT_CANNOT_START, Daemon
from confd.simulator.activity import run_activity
from confd.simulator.callers import demo_script, run_callers
from confd.simulator.model import ConferenceModel
from confd.simulator.outbound import OutboundSide
from confd.simulator.server import FakeFreeSwitch
from confd.store import Store, StoreError

log = logging.getLogger(__name__)

# Distinctive, so that a database given with --database is unlikely to hold a real account
# of that name (its api key is replaced at every start).
DEMO_ACCOUNT = "confd-demo"
DEMO_CONFERENCES = ("Daily standup", "Support bridge")
DEMO_FIRST_NUMBER = 7100
# Caller entry: the first conference asks a PIN (member or moderator), the second none.
DEMO_MEMBER_PIN = "1234"
DEMO_MODERATOR_PIN = "9999"
# The demo's entry listener: loopback, any free port (never the configured entry.listen,
# which on a production host is where FreeSWITCH connects).
DEMO_ENTRY_LISTEN = "127.0.0.1:0"


def demo_body(i: int, name: str) -> Dict:
    """The document of demo conference ``i``."""
    body: Dict = {
        "name": name,
        "conference_numbers": [str(DEMO_FIRST_NUMBER + i)],
        "member": {"join_muted": False},
    }
    if i == 0:
        body["member"]["pins"] = [DEMO_MEMBER_PIN]
        body["moderator"] = {"pins": [DEMO_MODERATOR_PIN]}
    return body


def demo_config(cfg: Config, fs_port: int, http_port: Optional[int]) -> Config:
    """The configuration, pointed at the simulator (and at ``--port`` when given), with no
    AMQP broker: the simulated callers' events stay in this process; caller entry on, on a
    loopback port of its own, for the demo account's callers only (no default account)."""
    node = NodeConfig(host="127.0.0.1", port=fs_port, password="ClueCon", name="sim")
    fs = dataclasses.replace(cfg.freeswitch, nodes=(node,))
    http = cfg.http if http_port is None else dataclasses.replace(cfg.http, port=http_port)
    events = dataclasses.replace(cfg.events, amqp_url=None)
    entry = dataclasses.replace(cfg.entry, listen=DEMO_ENTRY_LISTEN, default_account=None)
    return dataclasses.replace(cfg, freeswitch=fs, http=http, events=events, entry=entry)


def prepare_account(store: Store) -> Tuple[Dict, str, List[str]]:
    """The demo account with its two conference documents, made on the first start and
    taken again on the next ones (their bodies made the current demo's again: an older
    demo's documents had no PINs); returns (account, a new api key, document ids)."""
    mine = [a for a in store.accounts.list_accounts() if a["name"] == DEMO_ACCOUNT]
    if mine:
        account = mine[0]  # the oldest, should an earlier version have made more
        api_key = store.accounts.rotate_key(account["id"])
        docs, _ = store.conferences.list(account["id"])
    else:
        account, api_key = store.accounts.create_account(DEMO_ACCOUNT)
        docs = []
    by_name = {doc.data.get("name"): doc for doc in docs}
    ids: List[str] = []
    for i, name in enumerate(DEMO_CONFERENCES):
        body = demo_body(i, name)
        doc = by_name.get(name)
        if doc is None:
            ids.append(store.conferences.create(account["id"], body).id)
            continue
        if doc.body != body:
            store.conferences.replace(account["id"], doc.id, body)
        ids.append(doc.id)
    return account, api_key, ids


def instructions(
    base: str,
    account_id: str,
    api_key: str,
    conference_id: str,
    database: str = "",
    entry: str = "",
) -> str:
    ws = base.replace("http://", "ws://") + "/v2/websocket"
    pin_room, open_room = (str(DEMO_FIRST_NUMBER + i) for i in range(2))
    pins = f"PIN {DEMO_MEMBER_PIN}: member, {DEMO_MODERATOR_PIN}: moderator"
    return f"""
confd demo is running: HTTP API on {base}, one simulated FreeSWITCH node "sim".
Demo account {account_id}, api key {api_key}
(kept in {database or "the demo's database"}; the next start takes it again, with a new key)
Operator console: {base}/console/ (sign in with the api key above)
Caller entry on {entry or "a loopback port"}: simulated callers dial {pin_room}
("{DEMO_CONFERENCES[0]}", {pins}) and {open_room} ("{DEMO_CONFERENCES[1]}", no PIN),
some with wrong PINs or numbers: the "demo:" and "entry: call=..." lines of the log show them
enter or be refused; the participants below show who got in.

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
    store: Store,
    port: Optional[int] = None,
    *,
    out: TextIO = sys.stdout,
    seed: Optional[int] = None,
    interval: float = 1.0,
) -> int:
    """Serve the demo on ``store`` (the demo's database, opened by the caller, closed here)
    until SIGINT/SIGTERM; returns the exit status."""
    fake = FakeFreeSwitch(ConferenceModel(hostname="sim")).start()
    cfg = demo_config(cfg, fake.port, port)
    daemon = Daemon(cfg, store=store)
    try:
        daemon.start()  # binds the HTTP port: nothing is written before it is ours
    except OSError as exc:
        log.error("cannot start: %s", exc)
        store.close()
        fake.stop()
        return EXIT_CANNOT_START
    stop = Event()
    handlers = [
        gevent.signal_handler(signal.SIGTERM, stop.set),
        gevent.signal_handler(signal.SIGINT, stop.set),
    ]
    activity: Optional[gevent.Greenlet] = None
    callers: Optional[gevent.Greenlet] = None
    try:
        try:
            account, api_key, ids = prepare_account(store)
        except StoreError as exc:
            log.error("cannot start: the demo account: %s", exc)
            return EXIT_CANNOT_START
        base = "http://%s:%d" % (cfg.http.host, daemon.http_port)
        shown = config_to_dict(cfg)["database"]["url"]  # a password masked
        entry = "127.0.0.1:%d" % daemon.entry.port
        out.write(instructions(base, account["id"], api_key, ids[0], shown, entry))
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
        callers = gevent.spawn(
            run_callers,
            OutboundSide(fake.model),
            ("127.0.0.1", daemon.entry.port),
            demo_script(
                str(DEMO_FIRST_NUMBER),
                str(DEMO_FIRST_NUMBER + 1),
                DEMO_MEMBER_PIN,
                DEMO_MODERATOR_PIN,
            ),
            account_variable=cfg.events.channel_var_prefix + "Account-ID",
            account_id=account["id"],
            rng=random.Random(seed),
            stop_event=stop,
        )
        gevent.wait([stop, daemon.stopped_event], count=1)
        return daemon.exit_code
    finally:
        stop.set()
        if activity is not None:
            activity.kill()
        if callers is not None:
            callers.join(timeout=5)  # it hangs its calls up once stop is set
            callers.kill()
        daemon.stop()  # closes the store too
        fake.stop()
        for h in handlers:
            h.cancel()

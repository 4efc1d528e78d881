"""The API through a real HTTP server: the whole ``Daemon`` (WSGIServer on 127.0.0.1, port 0,
node supervisors, store) runs in this process's greenlets against stateful fake FreeSWITCH
nodes (``confd.simulator``) on loopback, and the tests talk HTTP to it with a client on a gevent
socket (``client.py``). Nothing is monkey-patched; every wait is cooperative.

Storage-backed tests take ``database_url`` (confd_tests/conftest.py): SQLite, plus PostgreSQL
when ``CONFD_TEST_DATABASE_URL`` is set (a fresh schema per test, dropped afterwards).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import gevent
import pytest

from confd.config import config_from_dict
from confd.daemon import Daemon
from confd.simulator.model import ConferenceModel
from confd.simulator.server import FakeFreeSwitch
from confd.store import Store
from confd_tests.conftest import wait_until
from confd_tests.http.client import ApiClient
from confd_tests.http.serverutil import start_live

INSTANCE = "confd-test"
ACCOUNT_VAR = "ecallmgr_Account-ID"  # the default channel_var_prefix + Account-ID

# (rule, method) -> statuses seen by every test of the session, for the OpenAPI check.
Observed = Dict[Tuple[str, str], Set[int]]


@pytest.fixture(scope="session")
def observed_statuses() -> Observed:
    return defaultdict(set)


class ShiftedClock:
    """Real time plus an offset the test can move forward (token expiry without sleeping)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Account:
    id: str
    name: str
    api_key: str
    token: str
    api: ApiClient

    def path(self, rest: str = "") -> str:
        return f"/v2/accounts/{self.id}{rest}"


class Harness:
    def __init__(self, db_url: str, observed: Observed) -> None:
        self.db_url = db_url
        self.observed = observed
        self.clock = ShiftedClock()
        self.fakes: Dict[str, FakeFreeSwitch] = {}
        self.daemon: Optional[Daemon] = None
        self.token_ttl = 3600
        self.anon = ApiClient(0)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, nodes: Tuple[str, ...] = ("fs1",), token_ttl: int = 3600) -> Harness:
        for name in nodes:
            self.fakes[name] = FakeFreeSwitch(ConferenceModel(hostname=name)).start()
        self.token_ttl = token_ttl
        self._start_daemon()
        self.wait_connected(*nodes)
        return self

    def _start_daemon(self) -> None:
        cfg = config_from_dict(
            {
                "http": {"host": "127.0.0.1", "port": 0},
                "database": {"url": self.db_url},
                "freeswitch": {
                    "nodes": [
                        {"host": "127.0.0.1", "port": fake.port, "name": name}
                        for name, fake in self.fakes.items()
                    ],
                    "reconnect_min": 0.05,
                    "reconnect_max": 0.2,
                    "command_timeout": 2.0,
                },
                "auth": {"token_ttl": self.token_ttl},
            }
        )
        store = Store.from_url(self.db_url, clock=self.clock)
        self.daemon = Daemon(cfg, instance_name=INSTANCE, store=store)
        observe = self.daemon.ctx.observe_request

        def record(rule: str, method: str, status: int) -> None:
            self.observed[(rule, method)].add(status)
            observe(rule, method, status)

        self.daemon.ctx.observe_request = record
        self.daemon.start()
        self.anon = ApiClient(self.daemon.http_port)

    def restart_daemon(self) -> None:
        assert self.daemon is not None
        self.daemon.stop()
        self._start_daemon()
        self.wait_connected(*self.fakes)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        for fake in self.fakes.values():
            fake.stop()

    def node(self, name: str) -> Any:
        assert self.daemon is not None
        return next(n for n in self.daemon.nodes if n.name == name)

    def wait_connected(self, *names: str) -> None:
        wait_until(lambda: all(self.node(n).connected for n in names), what="nodes connected")

    def take_down(self, name: str) -> None:
        """The node's FreeSWITCH goes away and stays away (connects are refused)."""
        self.fakes[name].refuse(True)
        self.fakes[name].drop_all(notice=None)
        wait_until(lambda: not self.node(name).connected, what=f"{name} down")

    # --- accounts --------------------------------------------------------------------------

    def account(self, name: str = "acme", admin: bool = False) -> Account:
        assert self.daemon is not None
        acc, key = self.daemon.store.accounts.create_account(name, admin=admin)
        reply = self.anon.put("/v2/api_auth", {"api_key": key}, token=None)
        assert reply.status == 201, reply
        token = reply.body["auth_token"]
        return Account(acc["id"], name, key, token, ApiClient(self.daemon.http_port, token))

    def conference(self, account: Account, **doc: Any) -> str:
        reply = account.api.put(account.path("/conferences"), doc or {"name": "room"})
        assert reply.status == 201, reply
        return reply.data["id"]

    # --- live calls ------------------------------------------------------------------------

    def live(self, conference: str) -> Any:
        assert self.daemon is not None
        return self.daemon.control.live(conference)

    def join(
        self,
        node: str,
        conference: str,
        *,
        account: Optional[str] = None,
        moderator: bool = False,
        name: str = "caller",
        number: str = "1000",
        muted: bool = False,
    ) -> int:
        """A call joins on ``node``; returns its member id once confd sees it."""
        channel_vars = {ACCOUNT_VAR: account} if account else {}
        member_id = self.fakes[node].model.join(
            conference,
            caller_id_name=name,
            caller_id_number=number,
            moderator=moderator,
            muted=muted,
            channel_vars=channel_vars,
        )
        assert member_id is not None, "join refused (locked?)"
        self.wait_participant(conference, member_id)
        return member_id

    def wait_participant(self, conference: str, member_id: int, **fields: Any) -> Any:
        """Wait until confd's live state shows the member (with these field values)."""

        def ok() -> bool:
            conf = self.live(conference)
            p = conf.participants.get(member_id) if conf is not None else None
            return p is not None and all(getattr(p, k) == v for k, v in fields.items())

        wait_until(ok, what=f"member {member_id} of {conference} with {fields}")
        return self.live(conference).participants[member_id]

    def control_sent(self, node: Optional[str] = None) -> List[str]:
        """Conference commands a fake received, reads (``json_list``) left out."""
        return [
            line
            for name, fake in self.fakes.items()
            if node is None or name == node
            for _conn, line in fake.commands
            if line.startswith("api conference ") and not line.endswith(" json_list")
        ]

    def any_sent_since(self, marks: Dict[str, int]) -> List[str]:
        """Every line any fake received after ``marks`` (from ``marks()``) that is not a read."""
        new = []
        for name, fake in self.fakes.items():
            for _conn, line in fake.commands[marks[name] :]:
                if not (line.endswith(" json_list") or line.startswith("api uuid_dump ")):
                    new.append(line)
        return new

    def marks(self) -> Dict[str, int]:
        return {name: len(fake.commands) for name, fake in self.fakes.items()}


@pytest.fixture
def make_harness(observed_statuses: Observed) -> Iterator[Any]:
    made: List[Harness] = []

    def make(db_url: str, nodes: Tuple[str, ...] = ("fs1",), token_ttl: int = 3600) -> Harness:
        h = Harness(db_url, observed_statuses)
        made.append(h)
        return h.start(nodes, token_ttl)

    yield make
    for h in made:
        h.stop()
    gevent.sleep(0)


@pytest.fixture
def harness(make_harness: Any, tmp_path) -> Harness:
    """One node ``fs1``, SQLite."""
    return make_harness(f"sqlite:///{tmp_path}/confd.db")


@pytest.fixture
def stored(make_harness: Any, database_url: str) -> Harness:
    """One node ``fs1`` on every database backend."""
    return make_harness(database_url)


@pytest.fixture
def live(tmp_path) -> Iterator[Any]:
    """``live(**http)``: a whole confd server on a real socket (serverutil.start_live), each
    one stopped at the end of the test."""
    made = []

    def make(**http: Any) -> Any:
        made.append(start_live(tmp_path, **http))
        return made[-1]

    yield make
    for one in made:
        one.stop()


def hexid(n: int) -> str:
    """A well-formed conference id no document has."""
    return f"{n:032x}"

"""``Cluster``: several real confd instances on one PostgreSQL and one RabbitMQ, for the
cluster tests and the cluster benchmark.

What one ``with Cluster(...) as c:`` runs (all on loopback, all stopped and removed on exit,
also when the block fails):

* one child process of fake FreeSWITCH nodes (``python -m confd_tests.soak nodes``), nodes
  ``fs0 .. fs{N-1}``, populated with conferences of one account (the ids of its conference
  documents, spread round-robin over the nodes, ``members`` callers each, the first a
  moderator), driven at rates the test sets (``load``/``hold``);
* a fresh PostgreSQL schema in the database of ``CONFD_TEST_DATABASE_URL`` (required), with the
  account (``python -m confd accounts create``) and the conference documents (confd's own
  store code, as the soak writes them);
* M confd instances ``i0 .. i{M-1}``, each ``python -m confd run --config <its config>``: HTTP on
  127.0.0.1 port 0 (the port read from its log), the same node list, the schema's URL, and a
  ``cluster`` section (instance name, ``CONFD_TEST_AMQP_URL`` or the local broker, a cluster
  name unique to this run so that runs never share queues or locks, ``claim_interval``,
  ``request_timeout``);
* optionally a ``FaultProxy`` per instance in front of PostgreSQL (``pg_proxies=True``: the
  instance's database URL goes through its own proxy, so one instance can lose the database
  alone) and one shared ``FaultProxy`` in front of RabbitMQ (``amqp_proxy=True``).

The test process is not monkey-patched: plain threads and blocking sockets here.  A child
process gets SIGTERM when the thread that started it ends (``PR_SET_PDEATHSIG`` follows the
forking thread), so start instances from the test's main thread or from one that outlives them.

Failures raise ``ClusterFailed`` (an AssertionError, so pytest shows it as a failed
assertion) with the tail of every instance's log in the message.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import quote, urlsplit, urlunsplit

from confd_tests.cluster.proxy import FaultProxy
from confd_tests.loadtools import (
    OPCODE_CLOSE,
    OPCODE_PING,
    OPCODE_TEXT,
    Child,
    ChildFailed,
    FrameReader,
    close_text,
    http_call,
    metrics_text,
    parse_metrics,
    pong_frame,
    subscribe,
)
from confd_tests.soak import REPO_ROOT, checks

log = logging.getLogger(__name__)

PG_URL_ENV = "CONFD_TEST_DATABASE_URL"
AMQP_URL_ENV = "CONFD_TEST_AMQP_URL"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
PASSWORD = "ClueCon"  # the fake nodes' ESL password
NODE_NAME = "fs%d"
INSTANCE_NAME = "i%d"
ACCOUNT_NAME = "cluster"
LOG_PORT_MARK = "HTTP API on "  # confd/daemon.py: "confd <version>: HTTP API on host:port"
# Generous bounds: the machine has two busy cores and each instance is a whole Python process.
STEP_TIMEOUT = 60.0  # one set-up step: a child's first report, an instance's HTTP port
WAIT_TIMEOUT = 60.0  # Cluster.wait's default
TERM_TIMEOUT = 60.0  # an instance's exit after SIGTERM (it hands its nodes over first)
STOP_WAIT = 10.0  # clean-up: seconds an instance gets after SIGTERM before SIGKILL
HTTP_TIMEOUT = 30.0
POLL = 0.1  # seconds between two looks of Cluster.wait
TAIL_LINES = 12
DROP_LOCK_TIMEOUT = "30s"  # DROP SCHEMA waits at most this for a lock


class ClusterFailed(AssertionError):
    """A step of the harness failed; the message says which, with the instances' log tails."""


# --- URLs --------------------------------------------------------------------------------------


def _with_netloc_port(url: str, host: str, port: int) -> str:
    """``url`` with its host:port replaced (user, password, path and query kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = "%s@%s:%d" % (userinfo, host, port) if userinfo else "%s:%d" % (host, port)
    return urlunsplit(parts._replace(netloc=netloc))


def schema_url(base: str, schema: str, via_port: Optional[int] = None) -> str:
    """The PostgreSQL URL ``base`` with libpq's ``options`` setting search_path to ``schema``,
    and, given ``via_port``, going to 127.0.0.1:``via_port`` (a proxy) instead of its host."""
    url = base if via_port is None else _with_netloc_port(base, "127.0.0.1", via_port)
    sep = "&" if urlsplit(url).query else "?"
    return url + sep + "options=" + quote("-csearch_path=%s" % schema, safe="")


def amqp_via(url: str, port: int) -> str:
    """The AMQP URL going to 127.0.0.1:``port`` (a proxy) instead of its host."""
    return _with_netloc_port(url, "127.0.0.1", port)


def host_port(url: str, default_port: int) -> Tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` updated by ``extra``, section by section (a nested dict merges, a value
    replaces)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# --- websocket ---------------------------------------------------------------------------------


class Subscriber(threading.Thread):
    """A websocket client subscribed through one instance, collecting what it receives.

    ``events()``: the event messages (``action == "event"``) in arrival order; ``messages()``:
    every text message.  ``ended``: why the connection ended when confd or the network ended
    it (None while open, and after ``close()``)."""

    def __init__(
        self,
        port: int,
        token: str,
        account: str,
        binding: Any = "conference.event.*.*",
        timeout: float = STEP_TIMEOUT,
    ) -> None:
        super().__init__(name="ws-subscriber-%d" % port, daemon=True)
        self.port = port
        self._lock = threading.Lock()
        self._messages: List[Dict[str, Any]] = []
        self.arrivals: List[float] = []  # time.monotonic() of each message
        self.ended: Optional[str] = None
        self._closing = False
        bindings = {"bindings": binding} if isinstance(binding, list) else {"binding": binding}
        self._ws, self._sock = subscribe(
            "ws://127.0.0.1:%d/v2/websocket" % port,
            token,
            account,
            "cluster-test-%s" % secrets.token_hex(3),
            timeout,
            **bindings,
        )
        self.start()

    def run(self) -> None:
        frames = FrameReader()
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    self.ended = "EOF"
                    return
                for opcode, payload in frames.feed(data):
                    if opcode == OPCODE_TEXT:
                        msg = json.loads(payload)
                        with self._lock:
                            self._messages.append(msg)
                            self.arrivals.append(time.monotonic())
                    elif opcode == OPCODE_PING:
                        self._sock.sendall(pong_frame(payload))
                    elif opcode == OPCODE_CLOSE:
                        self.ended = close_text(payload)
                        return
        except (OSError, ValueError) as exc:
            self.ended = "%s: %s" % (type(exc).__name__, exc)
        finally:
            if self._closing:
                self.ended = None

    def messages(self) -> List[Dict[str, Any]]:
        with self._lock:
            return list(self._messages)

    def events(self) -> List[Dict[str, Any]]:
        return [m for m in self.messages() if m.get("action") == "event"]

    def wait_for(
        self,
        predicate: Callable[[List[Dict[str, Any]]], Any],
        timeout: float = WAIT_TIMEOUT,
        what: str = "events",
    ) -> Any:
        """Until ``predicate(events())`` is true (its value is returned); ClusterFailed when
        the connection ends first or after ``timeout``."""
        limit = time.monotonic() + timeout
        while True:
            got = predicate(self.events())
            if got:
                return got
            if self.ended is not None:
                raise ClusterFailed(
                    "websocket on port %d ended (%s) before %s" % (self.port, self.ended, what)
                )
            if time.monotonic() > limit:
                raise ClusterFailed(
                    "websocket on port %d: no %s within %.0f s (%d events received)"
                    % (self.port, what, timeout, len(self.events()))
                )
            time.sleep(POLL)

    def close(self) -> None:
        self._closing = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.join(STEP_TIMEOUT)
        self._sock.close()


# --- the cluster -------------------------------------------------------------------------------


class Instance:
    """One confd instance of the cluster: its config, its process (when started), its logs."""

    def __init__(self, k: int, name: str, config: Path, pg_proxy: Optional[FaultProxy]) -> None:
        self.k = k
        self.name = name
        self.config = config
        self.pg_proxy = pg_proxy
        self.child: Optional[Child] = None
        self.port: Optional[int] = None
        self.logs: List[Path] = []
        self.running = False  # started and not yet killed/terminated by the harness

    @property
    def log(self) -> Optional[Path]:
        return self.logs[-1] if self.logs else None

    def exited(self) -> Optional[int]:
        return None if self.child is None else self.child.proc.poll()


class Cluster:
    """M confd instances over N fake FreeSWITCH nodes, one PostgreSQL schema, one broker.

    ``with Cluster(instances=3, nodes=6) as c:`` sets everything up and starts every instance
    (``start=False``: none; start them with ``c.start(k)``); the block's end stops and removes
    everything.  Instance ``k`` (0-based) is named ``"i<k>"`` (``c.names[k]``).

    Reads for the tests: ``account``, ``api_key``, ``conferences`` (conference id -> the node
    hosting it), ``moderators`` (conference id -> its moderator's member id), ``node_names``,
    ``names``, ``cluster_name``, ``database_url`` (the schema, direct), ``amqp_url`` (direct),
    ``pg_proxy(k)``, ``amqp_proxy``, ``workdir``."""

    def __init__(
        self,
        instances: int = 3,
        nodes: int = 6,
        conferences: int = 12,
        members: int = 3,
        *,
        pg_proxies: bool = False,
        amqp_proxy: bool = False,
        claim_interval: float = 1.0,
        request_timeout: float = 0.5,
        config: Optional[Dict[str, Any]] = None,
        start: bool = True,
        keep: Optional[Path] = None,
        seed: int = 1,
    ) -> None:
        base = os.environ.get(PG_URL_ENV)
        if not base:
            raise ClusterFailed(
                "%s is not set: the cluster tests need a PostgreSQL database (e.g. "
                "postgresql://postgres@127.0.0.1:5432/test)" % PG_URL_ENV
            )
        self.pg_base = base
        self.amqp_url = os.environ.get(AMQP_URL_ENV) or DEFAULT_AMQP_URL
        self.n_instances = instances
        self.n_nodes = nodes
        self.n_conferences = conferences
        self.members = members
        self.use_pg_proxies = pg_proxies
        self.use_amqp_proxy = amqp_proxy
        self.claim_interval = claim_interval
        self.request_timeout = request_timeout
        self.extra_config = config or {}
        self.start_all = start
        self.keep = keep
        self.seed = seed
        self.cluster_name = "ct" + secrets.token_hex(4)
        self.schema = "confd_cluster_" + secrets.token_hex(6)
        self.database_url = schema_url(base, self.schema)
        self.names = [INSTANCE_NAME % k for k in range(instances)]
        self.node_names = [NODE_NAME % i for i in range(nodes)]
        self.instances: List[Instance] = []
        self.amqp_proxy: Optional[FaultProxy] = None
        self.conferences: Dict[str, str] = {}
        self.moderators: Dict[str, int] = {}
        self.account = ""
        self.api_key = ""
        self.workdir = Path(tempfile.mkdtemp(prefix="confd-cluster-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONFD_")}
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + ([self.env["PYTHONPATH"]] if self.env.get("PYTHONPATH") else [])
        )
        self._nodes: Optional[Child] = None
        self._schema_made = False
        self._subscribers: List[Subscriber] = []
        self._dumps = 0
        self._lock = threading.Lock()

    # --- context -------------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.setup()
        except BaseException:
            self.close(failed=True)
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(failed=exc_type is not None)

    # --- set-up --------------------------------------------------------------------------------

    def setup(self) -> None:
        """Schema, proxies, nodes, configs, account, documents, population; then every
        instance unless ``start=False``."""
        self._create_schema()
        pg_host, pg_port = host_port(self.pg_base, 5432)
        if self.use_amqp_proxy:
            self.amqp_proxy = FaultProxy(*host_port(self.amqp_url, 5672), name="amqp-proxy")
        for k, name in enumerate(self.names):
            proxy = (
                FaultProxy(pg_host, pg_port, name="pg-proxy-" + name)
                if (self.use_pg_proxies)
                else None
            )
            self.instances.append(Instance(k, name, self.workdir / (name + ".yml"), proxy))
        self._nodes = Child(
            "nodes",
            [sys.executable, "-m", "confd_tests.soak", "nodes"]
            + ["--names", ",".join(self.node_names)]
            + ["--members", str(self.members), "--seed", str(self.seed)],
            self.workdir / "nodes.log",
            REPO_ROOT,
            self.env,
        )
        ports = json.loads(self._nodes.wait_for("PORTS", STEP_TIMEOUT))
        self.node_ports = dict(zip(self.node_names, ports))
        for inst in self.instances:
            inst.config.write_text(json.dumps(self.instance_config(inst.k), indent=1))
        self._create_account()
        self._create_documents()
        self._populate()
        if self.start_all:
            for k in range(self.n_instances):
                self.start(k)

    def instance_config(self, k: int) -> Dict[str, Any]:
        """Instance ``k``'s config (written as JSON, which is YAML, to ``<workdir>/i<k>.yml``)."""
        inst = self.instances[k]
        db = self.database_url
        if inst.pg_proxy is not None:
            db = schema_url(self.pg_base, self.schema, via_port=inst.pg_proxy.port)
        amqp = self.amqp_url
        if self.amqp_proxy is not None:
            amqp = amqp_via(self.amqp_url, self.amqp_proxy.port)
        cfg = {
            "http": {"host": "127.0.0.1", "port": 0},
            "database": {"url": db},
            "log": {"level": "info"},
            "freeswitch": {
                "nodes": [
                    {
                        "host": "127.0.0.1",
                        "port": self.node_ports[n],
                        "password": PASSWORD,
                        "name": n,
                    }
                    for n in self.node_names
                ],
                # The fakes send no HEARTBEAT; a dead node shows as EOF on loopback anyway.
                "heartbeat_timeout": 3600,
            },
            "cluster": {
                "instance": inst.name,
                "amqp_url": amqp,
                "name": self.cluster_name,
                "claim_interval": self.claim_interval,
                "request_timeout": self.request_timeout,
            },
        }
        return _merge(cfg, self.extra_config)

    def _create_schema(self) -> None:
        import psycopg2

        admin = psycopg2.connect(self.pg_base)
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                cur.execute("CREATE SCHEMA %s" % self.schema)
            self._schema_made = True
        finally:
            admin.close()

    def _drop_schema(self) -> None:
        import psycopg2

        admin = psycopg2.connect(self.pg_base)
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                cur.execute("SET lock_timeout = '%s'" % DROP_LOCK_TIMEOUT)
                cur.execute("DROP SCHEMA IF EXISTS %s CASCADE" % self.schema)
            self._schema_made = False
        finally:
            admin.close()

    def _create_account(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "confd", "accounts", "create", "--name", ACCOUNT_NAME]
            + ["--config", str(self.instances[0].config)],
            cwd=str(REPO_ROOT),
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            env=self.env,
        )
        if done.returncode != 0:
            raise ClusterFailed("confd accounts create: %s" % done.stderr.strip()[-500:])
        account = json.loads(done.stdout)
        self.account, self.api_key = account["id"], account["api_key"]

    def _create_documents(self) -> None:
        """The account's conference documents (confd's own store code, so ids and validation
        are confd's); their ids are the conference names on the nodes."""
        from confd.store import Store

        store = Store.from_url(self.database_url)
        try:
            for i in range(self.n_conferences):
                doc = store.conferences.create(self.account, {"name": "cluster %d" % i})
                self.conferences[doc.id] = self.node_names[i % self.n_nodes]
        finally:
            store.close()

    def _populate(self) -> None:
        assert self._nodes is not None
        plan: Dict[str, List[str]] = {n: [] for n in self.node_names}
        for cid, node in self.conferences.items():
            plan[node].append(cid)
        self._nodes.say("POPULATE " + json.dumps({"account": self.account, "plan": plan}))
        self._nodes.wait_for("POPULATED", STEP_TIMEOUT)
        for node in self.dump().values():
            for conf in node["json_list"]:
                for m in conf["members"]:
                    if m["flags"]["is_moderator"]:
                        self.moderators[conf["conference_name"]] = int(m["id"])

    # --- instances -----------------------------------------------------------------------------

    def start(self, k: int) -> int:
        """Start instance ``k`` (not running) and wait for its HTTP port, which it returns.

        Ownership is not waited for: see ``wait_settled``."""
        inst = self.instances[k]
        if inst.running and inst.exited() is None:
            raise ClusterFailed("%s is already running" % inst.name)
        n = len(inst.logs)
        log_path = self.workdir / ("%s.log" % inst.name if n == 0 else "%s.%d.log" % (inst.name, n))
        inst.logs.append(log_path)
        inst.port = None
        inst.child = Child(
            inst.name,
            [sys.executable, "-m", "confd", "run", "--config", str(inst.config)],
            log_path,
            REPO_ROOT,
            self.env,
        )
        inst.running = True
        limit = time.monotonic() + STEP_TIMEOUT
        while True:
            port = self._log_port(log_path)
            if port is not None:
                inst.port = port
                return port
            code = inst.exited()
            if code is not None:
                inst.running = False
                raise self.failure("%s exited (%s) before serving HTTP" % (inst.name, code))
            if time.monotonic() > limit:
                raise self.failure("%s: no HTTP port within %.0f s" % (inst.name, STEP_TIMEOUT))
            time.sleep(POLL)

    @staticmethod
    def _log_port(path: Path) -> Optional[int]:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return None
        at = text.find(LOG_PORT_MARK)
        if at < 0:
            return None
        rest = text[at + len(LOG_PORT_MARK) :].split(None, 1)
        if not rest or ":" not in rest[0]:
            return None  # the line is still being written
        return int(rest[0].rsplit(":", 1)[1])

    def kill(self, k: int) -> float:
        """SIGKILL instance ``k`` and reap it; returns ``time.monotonic()`` of the signal."""
        inst = self._running(k)
        assert inst.child is not None
        inst.running = False
        at = time.monotonic()
        try:
            inst.child.proc.kill()
        except OSError:
            pass
        inst.child.proc.wait(STEP_TIMEOUT)
        inst.child.stop(wait=1.0)  # its stdin and pipes
        return at

    def term(self, k: int, timeout: float = TERM_TIMEOUT) -> int:
        """SIGTERM instance ``k`` and wait for it to exit; returns its exit code (ClusterFailed,
        after a SIGKILL, when it does not exit within ``timeout``)."""
        inst = self._running(k)
        assert inst.child is not None
        inst.running = False
        inst.child.proc.send_signal(signal.SIGTERM)
        try:
            code = inst.child.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            inst.child.proc.kill()
            inst.child.proc.wait(STEP_TIMEOUT)
            raise self.failure(
                "%s did not exit within %.0f s of SIGTERM" % (inst.name, timeout)
            ) from None
        inst.child.stop(wait=1.0)
        return code

    def restart(self, k: int) -> int:
        """Start instance ``k`` again with the same config (a new HTTP port, returned); one
        still running is terminated first (``term``)."""
        inst = self.instances[k]
        if inst.running and inst.exited() is None:
            self.term(k)
        inst.running = False
        return self.start(k)

    def _running(self, k: int) -> Instance:
        inst = self.instances[k]
        if not inst.running or inst.child is None:
            raise ClusterFailed("%s is not running (start it first)" % inst.name)
        return inst

    def running(self) -> List[int]:
        """The indexes of the instances started and not killed or terminated since."""
        return [inst.k for inst in self.instances if inst.running]

    def port(self, k: int) -> int:
        inst = self._running(k)
        assert inst.port is not None
        return inst.port

    def pid(self, k: int) -> int:
        inst = self._running(k)
        assert inst.child is not None
        return inst.child.pid

    def log_path(self, k: int) -> Optional[Path]:
        """Instance ``k``'s current (latest) log file; ``instances[k].logs`` has every start's."""
        return self.instances[k].log

    def index(self, name: str) -> int:
        """The index ``k`` of the instance called ``name`` (an owner in ``owners()``)."""
        return self.names.index(name)

    @property
    def nodes_pid(self) -> int:
        """The process id of the fake nodes' process."""
        assert self._nodes is not None
        return self._nodes.pid

    def pg_proxy(self, k: int) -> FaultProxy:
        proxy = self.instances[k].pg_proxy
        if proxy is None:
            raise ClusterFailed("no PostgreSQL proxy: make the Cluster with pg_proxies=True")
        return proxy

    # --- HTTP ----------------------------------------------------------------------------------

    def http(
        self,
        k: int,
        method: str,
        path: str,
        body: Any = None,
        token: Optional[str] = None,
        timeout: float = HTTP_TIMEOUT,
    ) -> Tuple[int, Any]:
        """One request to instance ``k`` -> (status, JSON body)."""
        return http_call(self.port(k), method, path, body, token, timeout)

    def token(self, k: int = 0) -> str:
        """A fresh auth token for the account, from ``PUT /v2/api_auth`` on instance ``k``."""
        status, body = self.http(k, "PUT", "/v2/api_auth", {"data": {"api_key": self.api_key}})
        if status != 201:
            raise self.failure("PUT /v2/api_auth on %s: HTTP %d %s" % (self.names[k], status, body))
        return body["auth_token"]

    def conference_path(self, cid: str, rest: str = "") -> str:
        """``/v2/accounts/<account>/conferences/<cid><rest>``."""
        return "/v2/accounts/%s/conferences/%s%s" % (self.account, cid, rest)

    def health(self, k: int) -> Tuple[int, Dict[str, Any]]:
        """``GET /v2/health`` on instance ``k`` -> (status, body); 503 when no node is
        connected there, with the same ``data``."""
        return self.http(k, "GET", "/v2/health")

    def metrics(self, k: int) -> Dict[str, float]:
        """Instance ``k``'s ``/metrics`` as ``{'name{labels}': value}``."""
        return parse_metrics(metrics_text(self.port(k), HTTP_TIMEOUT))

    def _health_data(self, k: Optional[int]) -> Dict[str, Any]:
        order = [k] if k is not None else self.running()
        last: Any = None
        for i in order:
            try:
                status, body = self.health(i)
            except (OSError, http.client.HTTPException) as exc:
                last = exc
                continue
            if isinstance(body, dict) and isinstance(body.get("data"), dict):
                return body["data"]
            last = "HTTP %d %r" % (status, body)
        raise ClusterFailed("no instance answered /v2/health (%s)" % last)

    def owners(self, k: Optional[int] = None) -> Dict[str, Optional[str]]:
        """{node name: its owner's instance name or None} from instance ``k``'s /v2/health
        (default: the first running instance that answers)."""
        return {n["name"]: n.get("owner") for n in self._health_data(k)["nodes"]}

    def live_instances(self, k: Optional[int] = None) -> List[Dict[str, Any]]:
        """``data.instances`` of /v2/health: ``[{"name", "since", "nodes"}]``."""
        return list(self._health_data(k).get("instances", []))

    def settled(self) -> Optional[Dict[str, str]]:
        """The owners map when every running instance's /v2/health shows the same owners,
        every node owned by a running instance and connected, and ``data.instances`` naming
        exactly the running instances; None otherwise."""
        running = {self.names[k] for k in self.running()}
        seen: Optional[Dict[str, str]] = None
        for k in self.running():
            data = self._health_data(k)
            owners = {}
            for n in data["nodes"]:
                if n.get("owner") not in running or not n.get("connected"):
                    return None
                owners[n["name"]] = n["owner"]
            if set(owners) != set(self.node_names):
                return None
            if {i["name"] for i in data.get("instances", [])} != running:
                return None
            if seen is not None and owners != seen:
                return None
            seen = owners
        return seen

    def wait_settled(self, timeout: float = WAIT_TIMEOUT) -> Dict[str, str]:
        """Wait for ``settled()``; returns the owners map."""
        return self.wait(self.settled, timeout, "every node owned by a running instance")

    # --- waiting and failing -------------------------------------------------------------------

    def wait(
        self,
        predicate: Callable[[], Any],
        timeout: float = WAIT_TIMEOUT,
        what: str = "condition",
        alive: bool = True,
    ) -> Any:
        """Poll ``predicate()`` until it is truthy and return its value.  An exception of a
        connection, HTTP or a missing key counts as "not yet" (the last one is reported).
        With ``alive``, an instance the harness started that exited by itself, or the nodes
        process gone, fails at once."""
        limit = time.monotonic() + timeout
        last: Optional[BaseException] = None
        while True:
            if alive:
                self.check_alive()
            try:
                value = predicate()
            except (OSError, http.client.HTTPException, ValueError, KeyError, ClusterFailed) as e:
                value, last = None, e
            if value:
                return value
            if time.monotonic() > limit:
                raise self.failure(
                    "%s: not within %.0f s%s"
                    % (
                        what,
                        timeout,
                        " (last: %s: %s)" % (type(last).__name__, last) if last else "",
                    )
                )
            time.sleep(POLL)

    def check_alive(self) -> None:
        """ClusterFailed when a running instance or the nodes process has exited."""
        for inst in self.instances:
            code = inst.exited() if inst.running else None
            if code is not None:
                inst.running = False
                raise self.failure("%s exited by itself (%s)" % (inst.name, code))
        if self._nodes is not None and self._nodes.proc.poll() is not None:
            raise self.failure("the nodes process exited (%s)" % self._nodes.proc.returncode)

    def tails(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of every instance's current log and of the nodes' log."""
        out = []
        paths = [(inst.name, inst.log) for inst in self.instances if inst.log is not None]
        if self._nodes is not None:
            paths.append(("nodes", self._nodes.log))
        for name, path in paths:
            try:
                text = path.read_text(errors="replace").rstrip().splitlines()[-lines:]
            except OSError:
                text = ["(no log)"]
            out.append("--- %s (%s):\n%s" % (name, path.name, "\n".join(x[:400] for x in text)))
        return "\n".join(out)

    def failure(self, text: str) -> ClusterFailed:
        """A ClusterFailed saying ``text``, then every log's tail."""
        return ClusterFailed("%s\n%s" % (text, self.tails()))

    # --- the nodes -----------------------------------------------------------------------------

    def dump(self) -> Dict[str, Dict[str, Any]]:
        """The nodes' own truth: node name -> {"hostname", "emitted", "json_list"} (FreeSWITCH's
        ``conference json_list`` of that node)."""
        assert self._nodes is not None
        with self._lock:
            self._dumps += 1
            path = self.workdir / ("dump-%d.json" % self._dumps)
        self._nodes.say("DUMP %s" % path)
        try:
            self._nodes.wait_for("DUMPED", STEP_TIMEOUT)
        except ChildFailed as exc:
            raise self.failure("nodes DUMP: %s" % exc) from None
        data = json.loads(path.read_text())
        path.unlink()
        return data

    def load(self, talk: float = 0.0, churn: float = 0.0, mute: float = 0.0) -> None:
        """Drive the nodes: talking toggles, joins/leaves and mutes per second (all nodes)."""
        assert self._nodes is not None
        self._nodes.say("RATE " + json.dumps({"talk": talk, "churn": churn, "mute": mute}))
        self._nodes.say("RESUME")

    def hold(self) -> Dict[str, Any]:
        """Stop driving the nodes and wait until their queues to confd are empty; returns the
        nodes' figures (``emitted``, ``done``, ``members``, ``drained`` ...)."""
        assert self._nodes is not None
        try:
            return json.loads(self._nodes.ask("PAUSE", "PAUSED", STEP_TIMEOUT))
        except ChildFailed as exc:
            raise self.failure("nodes PAUSE: %s" % exc) from None

    def nodes_status(self) -> Dict[str, Any]:
        """The nodes' latest periodic figures (at most a quarter of a second old)."""
        assert self._nodes is not None
        return dict(self._nodes.status or {})

    def drift(self, k: int, token: Optional[str] = None) -> Dict[str, Any]:
        """The nodes' ``json_list`` against every conference as read through instance ``k``
        (``GET`` of each document, its ``_read_only.participants``) and its /v2/health counts:
        ``{"drift": <differences>, "problems": [<first ones>]}`` (soak.checks.drift).  Hold
        the load first for an exact answer."""
        token = token or self.token(k)
        dump = self.dump()
        status, body = self.health(k)
        health = {n["name"]: n for n in (body.get("data") or {}).get("nodes", [])}
        view: Dict[str, Optional[List[Dict[str, Any]]]] = {}
        for cid in self.conferences:
            st, doc = self.http(k, "GET", self.conference_path(cid), token=token)
            if st != 200:
                raise self.failure("GET %s on %s: HTTP %d %s" % (cid, self.names[k], st, doc))
            view[cid] = doc["data"].get("_read_only", {}).get("participants") or []
        return checks.drift(dump, view, health)

    # --- websocket -----------------------------------------------------------------------------

    def subscribe(
        self, k: int, binding: Any = "conference.event.*.*", token: Optional[str] = None
    ) -> Subscriber:
        """A websocket client on instance ``k``, subscribed with ``binding`` (a string, or a
        list for ``bindings``) for the account, collecting events in a thread; closed with the
        cluster."""
        sub = Subscriber(self.port(k), token or self.token(k), self.account, binding)
        self._subscribers.append(sub)
        return sub

    # --- clean-up ------------------------------------------------------------------------------

    def close(self, failed: bool = False) -> None:
        """Stop and remove everything (websockets, instances, nodes, proxies, the schema, the
        work directory unless ``keep``); safe to call twice and after a failed set-up."""
        errors: List[str] = []

        def step(what: str, fn: Callable[[], Any]) -> None:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - every step runs; reported together
                errors.append("%s: %s: %s" % (what, type(exc).__name__, exc))

        for sub in self._subscribers:
            step("websocket", sub.close)
        self._subscribers = []
        # SIGTERM to every instance first, so that they stop side by side (each hands its
        # nodes over before it exits; waiting for one after the other would add up).
        children = [inst.child for inst in self.instances if inst.child is not None]
        for child in children:
            if child.proc.poll() is None:
                step(child.name, child.proc.terminate)
        for child in children:
            step(child.name, lambda c=child: c.stop(wait=STOP_WAIT, eof_first=False))
        for inst in self.instances:
            inst.running = False
        if self._nodes is not None:
            step("nodes", self._nodes.stop)
        proxies = [inst.pg_proxy for inst in self.instances] + [self.amqp_proxy]
        for proxy in proxies:
            if proxy is not None:
                step(proxy.name, proxy.close)
        if self._schema_made:
            step("drop schema %s" % self.schema, self._drop_schema)
        if self.keep is not None:
            step("keep", lambda: shutil.copytree(self.workdir, self.keep, dirs_exist_ok=True))
        shutil.rmtree(self.workdir, ignore_errors=True)
        if errors and not failed:
            raise ClusterFailed("cleaning up the cluster: " + "; ".join(errors))
        for e in errors:
            log.warning("cleaning up the cluster: %s", e)

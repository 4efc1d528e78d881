"""Wiring and lifecycle: build the parts, start them in order, stop them in reverse.

gevent's monkey-patching happens in the entry point (``cli.main``) before this is imported.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
import time
from typing import Any, Callable, List, Optional, Tuple

import gevent
from gevent.event import Event

import confd
from confd import console
from confd.conferences import ownership
from confd.conferences.commands import CommandBuilder
from confd.conferences.control import ConferenceControl
from confd.conferences.state import LiveState, Update
from confd.config import Config
from confd.entry import constants as entry_constants
from confd.entry.directory import StoreDirectory, live_rooms
from confd.entry.server import from_config as entry_from_config
from confd.esl.node import NodeSettings, NodeSupervisor
from confd.events.amqp import AmqpPublisher
from confd.events.hub import EventHub
from confd.events.ownership import OwnershipResolver, store_lookup
from confd.events.websocket import WebsocketHandler, WebsocketMiddleware
from confd.http.app import ApiContext, create_app
from confd.http.responses import Identity
from confd.http.server import ApiServer, Limits, raise_fd_limit
from confd.metrics import Metrics
from confd.store import Store

log = logging.getLogger(__name__)

# The stop budget: every stop step takes its time from one deadline, so that the worst case
# (requests and websockets that do not finish, nodes that do not answer, a broker that does not
# confirm) still ends before systemd's TimeoutStopSec (15 s, systemd/confd.service) kills confd.
STOP_BUDGET = 11.0
ENTRY_STOP = 1.0  # calls in entry (caller entry on): half to finish, half to be ended
HTTP_DRAIN = 5.0  # in-flight requests finish (and websockets answer their close) within this
NODES_STOP = 2.5  # every node closes its connections, all at once
AMQP_STOP = 2.5  # at least this is kept for the AMQP publisher to send what it holds


class Deadline:
    """One budget shared by the stop's steps, each taking its share of what is left."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.at = clock() + seconds

    def left(self) -> float:
        return max(0.0, self.at - self.clock())

    def share(self, wanted: float, keep: float = 0.0) -> float:
        """``wanted`` seconds, keeping ``keep`` seconds of the budget for later steps; when
        what is left cannot give both, its part in proportion."""
        left = self.left()
        if wanted + keep <= left:
            return wanted
        return left * wanted / (wanted + keep) if wanted + keep > 0 else 0.0


def run_within(steps: List[Tuple[str, Callable[[], None]]], seconds: float) -> List[str]:
    """Run ``steps`` side by side and wait for them ``seconds`` at most; the names of those
    still running then (they are left behind, and logged: confd exits anyway)."""
    greenlets = []
    for name, step in steps:
        g = gevent.spawn(step)
        g.name = "stop-" + name
        greenlets.append((name, g))
    gevent.joinall([g for _, g in greenlets], timeout=seconds)
    late = []
    for name, g in greenlets:
        if not g.dead:
            late.append(name)
            log.warning("stop: %s did not finish within %.1fs, left behind", name, seconds)
            g.kill(block=False)
        elif g.exception is not None:
            log.error("stop: %s failed: %r", name, g.exception)
    return late


def node_settings(cfg: Config) -> List[NodeSettings]:
    fs = cfg.freeswitch
    return [
        NodeSettings(
            name=n.name,
            host=n.host,
            port=n.port,
            password=n.password,
            reconnect_min=fs.reconnect_min,
            reconnect_max=fs.reconnect_max,
            command_timeout=fs.command_timeout,
            heartbeat_timeout=fs.heartbeat_timeout,
            event_format=fs.event_format,
            channel_var_prefix=cfg.events.channel_var_prefix,
            resync_concurrency=fs.resync_concurrency,
        )
        for n in fs.nodes
    ]


class Daemon:
    def __init__(
        self, cfg: Config, *, instance_name: Optional[str] = None, store: Optional[Store] = None
    ) -> None:
        self.cfg = cfg
        self.instance_name = instance_name or cfg.cluster.instance or socket.gethostname()
        self.store = store if store is not None else Store.from_url(cfg.database.url)
        self.metrics = Metrics()
        self.state = LiveState()
        self.hub = EventHub(
            node_name=self.instance_name,
            app_version=confd.__version__,
            publish_filter=cfg.events.publish_participant_event,
            state=self.state,
            metrics=self.metrics,
        )
        self.builder = CommandBuilder(cfg.freeswitch.conference_name_pattern)
        # Several instances (cluster.md): only with a cluster section; without one, nothing
        # of confd.cluster is imported and this stays the single process it always was.
        self.cluster: Any = None
        if cfg.cluster.enabled:
            from confd.cluster.service import Cluster

            self.cluster = Cluster(
                cfg,
                settings=node_settings(cfg),
                state=self.state,
                builder=self.builder,
                make_supervisor=self._supervisor,
                on_crash=self._crashed,
                on_command=self.metrics.command,
            )
        amqp_url = cfg.cluster.amqp_url if self.cluster is not None else cfg.events.amqp_url
        self.amqp: Optional[AmqpPublisher] = None
        if amqp_url:
            self.amqp = AmqpPublisher(
                amqp_url,
                buffer=cfg.events.amqp_buffer,
                metrics=self.metrics,
                heartbeat=cfg.events.amqp_heartbeat,
                headers=self.cluster.publish_headers if self.cluster is not None else None,
            )
            if self.cluster is not None:
                self.hub.add_sink(self.cluster.stamp)  # when it happened, before it queues
            self.hub.add_sink(self.amqp.offer)
        if self.cluster is not None:
            self.nodes: List[Any] = list(self.cluster.nodes)  # claimed and released as it goes
        else:
            self.nodes = [self._supervisor(settings) for settings in node_settings(cfg)]
        self.metrics.track_live(lambda: [self.state.counts(n.name) for n in self.nodes])
        if self.cluster is not None:
            self.metrics.track_cluster(self.cluster.figures)
        for node in self.nodes:
            self.metrics.track_queue("esl_pending:" + node.name, lambda n=node: n.pending_commands)
            self.metrics.track_queue("resync_backlog:" + node.name, lambda n=node: n.resync_backlog)
        # Caller entry (entry.md): FreeSWITCH's outbound socket connections; off until
        # entry.listen is set.  It reads the store and the live state, never the other way.
        self.entry = entry_from_config(
            cfg.entry,
            channel_var_prefix=cfg.events.channel_var_prefix,
            name_pattern=cfg.freeswitch.conference_name_pattern,
            directory=StoreDirectory(self.store),
            rooms=self.cluster.rooms if self.cluster is not None else live_rooms(self.state),
            on_outcome=self.metrics.entry_outcome,
        )
        if self.entry.enabled:
            self.metrics.track_entry(lambda: self.entry.active, entry_constants.OUTCOMES)
        if self.cluster is not None:
            self.control: Any = self.cluster.control
            health: Callable[[], List[dict]] = self.cluster.health_nodes
        else:
            self.control = ConferenceControl(
                self.state, self.nodes, on_command=self.metrics.command
            )
            health = lambda: [n.status() for n in self.nodes]  # noqa: E731
        self.ctx = ApiContext(
            version=confd.__version__,
            node_name=self.instance_name,
            health=health,
            unready=self.cluster.unready if self.cluster is not None else (lambda: None),
            health_extra=self._health_extra,
            observe_request=self.metrics.request,
            metrics_text=self.metrics.render,
            store=self.store,
            control=self.control,
            builder=self.builder,
            token_ttl=cfg.auth.token_ttl,
            channel_var_prefix=cfg.events.channel_var_prefix,
        )
        self.app = create_app(
            self.ctx, blueprints=[console.blueprint()], cors_origins=cfg.http.cors_origins
        )  # /console/: the operator console, a page over the public API (console.md)
        # /v2/websocket is answered by this middleware; everything else goes to the Flask app.
        managed = ownership.name_check(self.builder.check_name)  # names confd manages
        self.websocket = WebsocketMiddleware(
            self.app,
            hub=self.hub,
            store=self.store,
            resolver=OwnershipResolver(store_lookup(self.store), addressable=managed),
            queue_bound=cfg.events.subscriber_queue,
            metrics=self.metrics,
            flush_interval=cfg.events.websocket_batch_ms / 1000.0,
            ping_interval=float(cfg.events.websocket_ping_s),
            subscribe_deadline=float(cfg.events.websocket_subscribe_s),
            is_conference_id=managed,
            bindings=self.cluster.bindings if self.cluster is not None else None,
        )
        if self.cluster is not None:
            self.cluster.deliver_to(self.websocket.fanout.offer, lambda: self.websocket.sessions)
        self.server: Optional[ApiServer] = None
        self._stopped = Event()
        self._failed: Optional[str] = None
        self._greenlets: List[gevent.Greenlet] = []

    def _supervisor(self, settings: NodeSettings) -> NodeSupervisor:
        return NodeSupervisor(
            settings,
            self.state,
            self.builder,
            publish=self._publish,
            wants_updates=self.hub.has_consumers,
            on_event_taken=self.metrics.event,
            on_status=lambda node: self.metrics.node_state(node.name, node.connected),
        )

    def _health_extra(self) -> dict:
        extra = {}
        if self.cluster is not None:
            extra.update(self.cluster.health_extra())
        if self.amqp is not None:
            extra["amqp"] = self.amqp.status()
        if self.entry.enabled:
            extra["entry"] = self.entry.status()
        return extra

    def _publish(self, updates: List[Update]) -> None:
        """Hook for the event hub: called on the intake path, must never block."""
        self.hub.publish(updates)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        # entry.listen is bound before anything starts: a taken address stops confd here.
        self.entry.bind()
        try:
            self._start()
        except BaseException:
            self.entry.stop(timeout=0)
            raise

    def _start(self) -> None:
        http = self.cfg.http
        limits = Limits(
            header_timeout=http.header_timeout,
            keepalive_timeout=http.keepalive_timeout,
            max_connections=http.max_connections,
            max_websockets=http.max_websockets,
            access_log=http.access_log,
        )
        fds, needed = raise_fd_limit(limits.fds_needed)
        if fds < needed:
            log.warning(
                "the open-files limit (%d) is below what http.max_connections and"
                " http.max_websockets need (%d): raise LimitNOFILE",
                fds,
                needed,
            )
        self.server = ApiServer(
            (http.host, http.port),
            self.websocket,
            limits=limits,
            identity=Identity(self.instance_name, confd.__version__),
            on_limit=self.metrics.http_limit,
            observe=self.metrics.request,
            handler_class=WebsocketHandler,
        )
        self.connections = self.server.connections
        self.metrics.track_queue("http_connections", lambda: self.connections.http)
        self.server.start()
        log.info("confd %s: HTTP API on %s:%d", confd.__version__, http.host, self.http_port)
        if self.amqp is not None:
            self.amqp.start()
        fanout = self.websocket.start()
        fanout.link_exception(self._crashed)
        self._greenlets.append(fanout)
        self.metrics.track_queue("websocket_fanout", lambda: self.websocket.fanout.waiting)
        if self.cluster is not None:
            for g in self.cluster.start():  # claims nodes as its share allows
                g.link_exception(self._crashed)
                self._greenlets.append(g)
        else:
            for node in self.nodes:
                g = node.start()
                g.link_exception(self._crashed)
                self._greenlets.append(g)
        # Calls are taken once the nodes are connecting: an entering caller's room is read
        # from the live state they feed.
        self.entry.start()

    @property
    def http_port(self) -> int:
        assert self.server is not None
        return self.server.server_port

    def _crashed(self, greenlet: gevent.Greenlet) -> None:
        log.error("greenlet %s crashed: %r", greenlet.name, greenlet.exception)
        self._failed = "greenlet %s crashed" % greenlet.name
        self._stopped.set()

    def request_stop(self, signum: Optional[int] = None) -> None:
        if signum is not None:
            log.info("signal %d: stopping", signum)
        self._stopped.set()

    def stop(self, budget: float = STOP_BUDGET) -> None:
        """Reverse order, within one budget: caller entry first (it reads the live state and
        the store: calls still in entry are ended, joined callers stay in their rooms); stop
        accepting and close idle connections, let in-flight requests finish (their commands
        need the nodes) and websockets close; then close every node at once; then let AMQP
        send what it holds."""
        deadline = Deadline(budget)
        amqp_keep = AMQP_STOP if self.amqp is not None else 0.0
        if self.entry.enabled:
            entry = deadline.share(ENTRY_STOP, keep=HTTP_DRAIN + NODES_STOP + amqp_keep)
            run_within([("entry", lambda: self.entry.stop(timeout=entry / 2))], entry)
        self.websocket.stop()
        if self.server is not None:
            self.server.stop_gracefully(deadline.share(HTTP_DRAIN, keep=NODES_STOP + amqp_keep))
        nodes = deadline.share(NODES_STOP, keep=amqp_keep)
        if self.cluster is not None:
            # Rolling restart (cluster.md item 6): the nodes are handed over (connections
            # closed, then their locks released) for the others to claim; this instance keeps
            # answering the others' requests until its bus stops.
            cluster = self.cluster
            run_within([("cluster hand-over", lambda: cluster.hand_over(nodes / 2))], nodes)
        else:
            run_within(
                [("node " + n.name, lambda n=n: n.stop(timeout=nodes / 2)) for n in self.nodes],
                nodes,
            )
        if self.amqp is not None:
            amqp, left = self.amqp, deadline.left()
            run_within([("AMQP publisher", lambda: amqp.stop(timeout=left / 2))], left)
        if self.cluster is not None:
            cluster, left = self.cluster, max(0.5, deadline.left())
            run_within([("cluster", lambda: cluster.stop(left / 2))], left)
        self.store.close()
        log.info("confd stopped")

    @property
    def stopped_event(self) -> Event:
        """Set when a signal asks the daemon to stop or a part of it crashed."""
        return self._stopped

    @property
    def exit_code(self) -> int:
        return 1 if self._failed else 0

    def wait(self) -> int:
        self._stopped.wait()
        return self.exit_code


def _freeze_startup_objects() -> None:
    """Exempt what start-up allocated (modules, the Flask app, configuration: most of the
    process's objects) from the cyclic garbage collector.  A full collection walks every
    tracked object; on the event loop that was a 20-30 ms pause every few seconds under
    5,000 events/s, all of it spent on objects that live as long as the process."""
    gc.collect()
    gc.freeze()


# The exit status when the config names a database or an address that cannot be used: the
# command line's status for a config error too (operations.md: "exits 2 with a clear message").
EXIT_CANNOT_START = 2


def run_daemon(cfg: Config, store: Optional[Store] = None) -> int:
    """Run until a signal; ``store``: the database, when the caller has opened it already."""
    try:
        daemon = Daemon(cfg, store=store)
    except Exception as exc:  # the database cannot be opened, or is newer than this code
        log.error("cannot start: %s", exc)
        return EXIT_CANNOT_START
    handlers = [
        gevent.signal_handler(signal.SIGTERM, daemon.request_stop, signal.SIGTERM),
        gevent.signal_handler(signal.SIGINT, daemon.request_stop, signal.SIGINT),
    ]
    try:
        daemon.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CANNOT_START
    _freeze_startup_objects()
    try:
        code = daemon.wait()
    finally:
        daemon.stop()
        for h in handlers:
            h.cancel()
    return code

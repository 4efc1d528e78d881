"""Wiring and lifecycle: build the parts, start them in order, stop them in reverse.

gevent's monkey-patching happens in the entry point (``cli.main``) before this is imported.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
from typing import List, Optional

import gevent
from gevent.event import Event
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

import confd
from confd.conferences.commands import CommandBuilder
from confd.conferences.control import ConferenceControl
from confd.conferences.state import LiveState, Update
from confd.config import Config
from confd.esl.node import NodeSettings, NodeSupervisor
from confd.events.amqp import AmqpPublisher
from confd.events.hub import EventHub
from confd.events.ownership import OwnershipResolver, store_lookup
from confd.events.websocket import WebsocketHandler, WebsocketMiddleware
from confd.http.app import ApiContext, create_app
from confd.metrics import Metrics
from confd.store import Store

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
# HTTP and websocket connections served at once; past it, new connections wait in the
# listen backlog instead of each getting a greenlet (and its memory).
MAX_CONNECTIONS = 1000


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
        self.instance_name = instance_name or socket.gethostname()
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
        self.amqp: Optional[AmqpPublisher] = None
        if cfg.events.amqp_url:
            self.amqp = AmqpPublisher(
                cfg.events.amqp_url, buffer=cfg.events.amqp_buffer, metrics=self.metrics
            )
            self.hub.add_sink(self.amqp.offer)
        self.builder = CommandBuilder(cfg.freeswitch.conference_name_pattern)
        self.nodes = [
            NodeSupervisor(
                settings,
                self.state,
                self.builder,
                publish=self._publish,
                wants_updates=self.hub.has_consumers,
                on_event_taken=self.metrics.event,
                on_status=lambda node: self.metrics.node_state(node.name, node.connected),
            )
            for settings in node_settings(cfg)
        ]
        self.metrics.track_live(lambda: [self.state.counts(n.name) for n in self.nodes])
        for node in self.nodes:
            self.metrics.track_queue("esl_pending:" + node.name, lambda n=node: n.pending_commands)
            self.metrics.track_queue("resync_backlog:" + node.name, lambda n=node: n.resync_backlog)
        self.control = ConferenceControl(self.state, self.nodes, on_command=self.metrics.command)
        self.ctx = ApiContext(
            version=confd.__version__,
            node_name=self.instance_name,
            health=lambda: [n.status() for n in self.nodes],
            health_extra=self._health_extra,
            observe_request=self.metrics.request,
            metrics_text=self.metrics.render,
            store=self.store,
            control=self.control,
            builder=self.builder,
            token_ttl=cfg.auth.token_ttl,
            channel_var_prefix=cfg.events.channel_var_prefix,
        )
        self.app = create_app(self.ctx)
        # /v2/websocket is answered by this middleware; everything else goes to the Flask app.
        self.websocket = WebsocketMiddleware(
            self.app,
            hub=self.hub,
            store=self.store,
            resolver=OwnershipResolver(store_lookup(self.store)),
            queue_bound=cfg.events.subscriber_queue,
            metrics=self.metrics,
            flush_interval=cfg.events.websocket_batch_ms / 1000.0,
            ping_interval=float(cfg.events.websocket_ping_s),
        )
        self.server: Optional[WSGIServer] = None
        self._stopped = Event()
        self._failed: Optional[str] = None
        self._greenlets: List[gevent.Greenlet] = []

    def _health_extra(self) -> dict:
        return {"amqp": self.amqp.status()} if self.amqp is not None else {}

    def _publish(self, updates: List[Update]) -> None:
        """Hook for the event hub: called on the intake path, must never block."""
        self.hub.publish(updates)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self, max_connections: int = MAX_CONNECTIONS) -> None:
        http = self.cfg.http
        self.connections = Pool(max_connections)
        self.metrics.track_queue("http_connections", lambda: len(self.connections))
        self.server = WSGIServer(
            (http.host, http.port),
            self.websocket,
            handler_class=WebsocketHandler,
            spawn=self.connections,
            log=None,
            error_log=log,
        )
        self.server.start()
        log.info("confd %s: HTTP API on %s:%d", confd.__version__, http.host, self.http_port)
        if self.amqp is not None:
            self.amqp.start()
        fanout = self.websocket.start()
        fanout.link_exception(self._crashed)
        self._greenlets.append(fanout)
        self.metrics.track_queue("websocket_fanout", lambda: self.websocket.fanout.waiting)
        for node in self.nodes:
            g = node.start()
            g.link_exception(self._crashed)
            self._greenlets.append(g)

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

    def stop(self) -> None:
        """Reverse order: stop accepting requests (finishing in-flight ones), then close ESL."""
        self.websocket.stop()
        if self.server is not None:
            self.server.stop(timeout=STOP_TIMEOUT)
        for node in reversed(self.nodes):
            node.stop(timeout=STOP_TIMEOUT / 2)
        if self.amqp is not None:
            self.amqp.stop(timeout=STOP_TIMEOUT / 2)
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


def run_daemon(cfg: Config) -> int:
    try:
        daemon = Daemon(cfg)
    except Exception as exc:  # the database cannot be opened, or is newer than this code
        log.error("cannot start: %s", exc)
        return 1
    handlers = [
        gevent.signal_handler(signal.SIGTERM, daemon.request_stop, signal.SIGTERM),
        gevent.signal_handler(signal.SIGINT, daemon.request_stop, signal.SIGINT),
    ]
    try:
        daemon.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    _freeze_startup_objects()
    try:
        code = daemon.wait()
    finally:
        daemon.stop()
        for h in handlers:
            h.cancel()
    return code

"""Prometheus metrics, in a registry per daemon (no module-level state)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MAX_ACTION_LABELS = 256
OTHER_LABEL = "other"
# The request methods labelled as themselves; any other word a client sends counts as "other"
# without taking one of the MAX_ACTION_LABELS label sets (made-up methods would use them all
# up, and real 405s and 500s would then be counted as "other").
HTTP_METHODS = frozenset(("GET", "PUT", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS"))


class Tally:
    """A counter with one label, kept as plain integers and rendered at scrape time: for the
    paths taken per ESL event, where a prometheus_client child's lock and call chain cost
    several percent of a core at 5,000 events/s.  confd runs on one thread (gevent), so a
    dict update is enough.  Past MAX_ACTION_LABELS distinct values, new ones count under
    "other" (a bound on cardinality whatever a node sends)."""

    def __init__(self, name: str, documentation: str, label: str, registry: Any) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.counts: Dict[str, int] = {}
        registry.register(self)

    def inc(self, value: str) -> None:
        counts = self.counts
        if value in counts:
            counts[value] += 1
        elif len(counts) < MAX_ACTION_LABELS:
            counts[value] = 1
        else:
            counts[OTHER_LABEL] = counts.get(OTHER_LABEL, 0) + 1

    def describe(self) -> List[CounterMetricFamily]:
        return [CounterMetricFamily(self.name, self.documentation, labels=[self.label])]

    def collect(self) -> List[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, n in list(self.counts.items()):
            family.add_metric([value], n)
        return [family]


class ClusterFigures:
    """A cluster member's figures (cluster.md: metrics per instance), read at scrape time
    from ``figures()``: gauges and counters by name, each with its help text."""

    GAUGES = {
        "confd_cluster_live": "1 while this instance holds its database session (is live)",
        "confd_cluster_bus_connected": "1 while this instance is connected to RabbitMQ",
        "confd_cluster_nodes_owned": "FreeSWITCH nodes this instance owns now",
        "confd_cluster_instances": "Live instances of the cluster, as this one sees them",
        "confd_cluster_bindings": "Websocket binding patterns this instance's queue is bound to",
    }
    COUNTERS = {
        "confd_cluster_requests": "Requests this instance sent to the others",
        "confd_cluster_request_timeouts": "Requests of this instance that were not answered",
        "confd_cluster_events_received": "Events received from the other instances' nodes",
        "confd_cluster_session_losses": "Times this instance lost its database session",
    }

    def __init__(self, figures: Callable[[], Dict[str, float]], registry: Any) -> None:
        self.figures = figures
        registry.register(self)

    def describe(self) -> List[Any]:
        return self.collect()

    def collect(self) -> List[Any]:
        values = self.figures()
        out: List[Any] = []
        for name, text in self.GAUGES.items():
            out.append(GaugeMetricFamily(name, text, value=float(values.get(name, 0))))
        for name, text in self.COUNTERS.items():
            out.append(CounterMetricFamily(name, text, value=float(values.get(name, 0))))
        return out


class Metrics:
    def __init__(self) -> None:
        self._children: Dict[tuple, Any] = {}
        self._label_sets: Dict[int, int] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events_in = Tally("confd_esl_events", "ESL events taken in, by Action", "action", r)
        self.commands = Counter(
            "confd_commands",
            "Commands sent to FreeSWITCH, by action and result",
            ["action", "result"],
            registry=r,
        )
        self.node_connected = Gauge(
            "confd_node_connected", "1 when the node's connections are up", ["node"], registry=r
        )
        self.node_connects = Counter(
            "confd_node_state_changes",
            "Node connection state changes",
            ["node", "state"],
            registry=r,
        )
        self.http_requests = Counter(
            "confd_http_requests",
            "API requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_limit_hits = Counter(
            "confd_http_limit_hits",
            "HTTP connections that reached a bound or a deadline, by which (confd.http.server)",
            ["limit"],
            registry=r,
        )
        self.live_conferences = Gauge(
            "confd_live_conferences", "Live conferences, all nodes", registry=r
        )
        self.live_participants = Gauge(
            "confd_live_participants", "Live participants, all nodes", registry=r
        )
        self.queue_drops = Counter(
            "confd_queue_drops",
            "Items dropped because a bounded queue was full",
            ["queue"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "confd_queue_depth", "Items waiting in a bounded queue", ["queue"], registry=r
        )
        self.events_published = Tally(
            "confd_events_published",
            "Events published to websocket subscribers and AMQP, by event",
            "event",
            r,
        )
        self.websocket_clients = Gauge(
            "confd_websocket_clients", "Open websocket connections", registry=r
        )
        self.websocket_closes = Counter(
            "confd_websocket_closes",
            "Websocket connections closed by confd, by close code",
            ["code"],
            registry=r,
        )
        self.amqp_published = Counter(
            "confd_amqp_published", "Events confirmed by the AMQP broker", registry=r
        )
        self.amqp_connected = Gauge(
            "confd_amqp_connected", "1 when the AMQP publisher is connected", registry=r
        )
        self.entry_calls = Counter(
            "confd_entry_calls",
            "Calls that ended their entry (number, PIN, join), by outcome (entry.md)",
            ["outcome"],
            registry=r,
        )
        self.entry_active = Gauge(
            "confd_entry_active", "Calls in entry now (between connect and join)", registry=r
        )

    def track_live(self, counts: Callable[[], Iterable[Tuple[int, int]]]) -> None:
        """Live gauges are computed at scrape time from the state, never on the intake path."""

        def conferences() -> float:
            return float(sum(c for c, _ in counts()))

        def participants() -> float:
            return float(sum(p for _, p in counts()))

        self.live_conferences.set_function(conferences)
        self.live_participants.set_function(participants)

    def track_cluster(self, figures: Callable[[], Dict[str, float]]) -> None:
        ClusterFigures(figures, self.registry)

    def track_queue(self, queue: str, depth: Callable[[], int]) -> None:
        """A bounded queue's depth, read at scrape time."""
        self.queue_depth.labels(queue).set_function(lambda: float(depth()))

    def track_entry(self, active: Callable[[], int], outcomes: Iterable[str]) -> None:
        """Caller entry: its gauge read at scrape time, and every outcome shown from 0 (a
        rate() over a label that appears late misses its first calls).  Outcomes are confd's
        own words, a fixed set: no cardinality bound needed."""
        self.entry_active.set_function(lambda: float(active()))
        for outcome in outcomes:
            self.entry_calls.labels(outcome)

    def entry_outcome(self, outcome: str) -> None:
        self.entry_calls.labels(outcome).inc()

    def drop(self, queue: str, n: int = 1) -> None:
        self.queue_drops.labels(queue).inc(n)

    def _child(self, metric: Any, *labels: str) -> Any:
        """A labelled child, kept: the label lookup is not free, and events and requests call
        this once each.  Past MAX_ACTION_LABELS distinct label sets per metric, new ones count
        under "other" (a bound on cardinality whatever a node or a client sends)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            seen = self._label_sets.setdefault(id(metric), 0)
            if seen >= MAX_ACTION_LABELS:
                labels = tuple("other" for _ in labels)
                key = (id(metric), labels)
                child = self._children.get(key)
            if child is None:
                self._label_sets[id(metric)] = seen + 1
                child = self._children[key] = metric.labels(*labels)
        return child

    def event(self, action: str) -> None:
        self.events_in.inc(action or "unknown")

    def command(self, action: str, result: str) -> None:
        self.commands.labels(action, result).inc()

    def node_state(self, node: str, connected: bool) -> None:
        self.node_connected.labels(node).set(1 if connected else 0)
        self.node_connects.labels(node, "up" if connected else "down").inc()

    def event_published(self, event: str) -> None:
        self.events_published.inc(event)

    def websocket_closed(self, code: int) -> None:
        self.websocket_closes.labels(str(code)).inc()

    def request(self, route: str, method: str, status: int) -> None:
        method = method if method in HTTP_METHODS else OTHER_LABEL
        self._child(self.http_requests, route, method, str(status)).inc()

    def http_limit(self, limit: str) -> None:
        self.http_limit_hits.labels(limit).inc()

    def render(self) -> tuple:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

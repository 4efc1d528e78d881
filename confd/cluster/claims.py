"""Node ownership: PostgreSQL advisory locks held on this instance's own database session
(cluster.md, "One owner per node").

One greenlet owns one psycopg2 connection (``application_name`` ``confd:<instance>``), apart
from the store's pool: a lock lives exactly as long as this session.  The greenlet:

* takes the instance's own lock (one live instance per name), then every ``claim_interval``
  reads who holds what (``pg_locks`` joined with ``pg_stat_activity``: one query), claims
  unowned nodes up to its share and hands one over when the spread is uneven (``spread``);
* between rounds it waits on the session's socket, so a session the database or the network
  closes is seen at once, not at the next round;
* a round that fails or does not finish within ``hold`` seconds (a silent network) counts as
  the session lost: every owned node's connections are dropped at once, then the session is
  made again with backoff.  The server ends a session idle for ``idle_session_timeout``
  (set to more than ``hold``), so a lock outlives a silent owner by seconds, never for ever,
  and never while the owner still thinks it holds it.
"""

from __future__ import annotations

import datetime
import logging
import random
import time
from typing import Any, Callable, Dict, List, Optional, Set

import gevent
from gevent.event import Event
from gevent.socket import wait_read

from confd.backoff import backoff_delay
from confd.cluster import names, spread

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5  # seconds, libpq connect_timeout
RECONNECT_MIN = 0.5
RECONNECT_MAX = 5.0

LOCKS_QUERY = """
SELECT l.classid::bigint, l.objid::bigint, a.application_name,
       extract(epoch FROM a.backend_start)::float8
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def hold_for(interval: float) -> float:
    """Seconds a round may take before the session counts as lost."""
    return 2 * interval + 1.0


def idle_limit(interval: float) -> float:
    """The server's idle_session_timeout: longer than a round's hold plus a round's wait, so
    the server never ends a session its owner still believes in."""
    return 2 * hold_for(interval) + interval


def iso(ts: float) -> str:
    return (
        datetime.datetime.fromtimestamp(ts, datetime.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


class SessionLost(Exception):
    pass


class Claims:
    def __init__(
        self,
        dsn: str,
        *,
        cluster: str,
        instance: str,
        nodes: List[str],
        interval: float,
        on_claimed: Callable[[str], None],
        on_released: Callable[[str], None],
        connect: Optional[Callable[..., Any]] = None,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.dsn = "postgresql" + dsn[dsn.index(":") :]
        self.cluster = cluster
        self.instance = instance
        self.nodes = list(nodes)
        self.interval = interval
        self.hold = hold_for(interval)
        self._on_claimed = on_claimed
        self._on_released = on_released
        self._connect_fn = connect
        self._rng = rng or random.Random()
        self._node_keys = {n: names.lock_key(cluster, n) for n in self.nodes}
        self._by_parts = {names.lock_parts(k): n for n, k in self._node_keys.items()}
        self._conn: Any = None
        self._greenlet: Optional[gevent.Greenlet] = None
        self._stopping = Event()
        self._claiming = True
        self._claim_after = 0.0
        self._opened = False
        # What the last round saw (read by health and by the request routing).
        self.mine: Set[str] = set()
        self.owners: Dict[str, str] = {}  # node -> instance
        self.instances: Dict[str, float] = {}  # instance -> since (Unix seconds)
        self.live = False
        self.since = time.time()
        self.error: Optional[str] = "not connected yet"
        self.rounds = 0
        self.losses = 0

    # --- public ----------------------------------------------------------------------------

    def start(self) -> gevent.Greenlet:
        self._greenlet = gevent.spawn(self._run)
        self._greenlet.name = "cluster-claims"
        return self._greenlet

    def owner(self, node: str) -> Optional[str]:
        if node in self.mine:
            return self.instance
        return self.owners.get(node)

    def hand_over(self, timeout: float = 1.0) -> None:
        """Stop claiming and give every owned node up: its connections closed first, then the
        session ended, which releases its locks at once, so the other instances claim them (a
        rolling restart's first step).  The session is this greenlet's alone, so the loop is
        ended first rather than queried from here."""
        self._claiming = False
        self._stopping.set()
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=timeout)
        for node in sorted(self.mine):
            self._drop(node)
        self._unlock_all()
        self._close()
        self._set_live(False, "handed over: stopping")

    def stop(self, timeout: float = 1.0) -> None:
        """The same as ``hand_over`` (a second call finds nothing left to do)."""
        if self._conn is not None or self.mine or not self._stopping.is_set():
            self.hand_over(timeout)

    def status(self) -> Dict[str, Any]:
        return {
            "live": self.live,
            "since": iso(self.since),
            "error": self.error,
        }

    def live_instances(self) -> List[Dict[str, Any]]:
        """cluster.md's ``data.instances``: every live instance, its since and its nodes."""
        out = []
        for name in sorted(self.instances):
            owned = (
                self.mine
                if name == self.instance
                else {n for n, o in self.owners.items() if o == name}
            )
            out.append({"name": name, "since": iso(self.instances[name]), "nodes": sorted(owned)})
        return out

    # --- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            self._opened = False
            try:
                self._session()
            except SessionLost as exc:
                self._lost(str(exc))
            except Exception as exc:  # noqa: BLE001 - psycopg2.Error, OSError, gevent.Timeout
                self._lost("%s: %s" % (type(exc).__name__, str(exc).strip() or "no detail"))
            else:
                attempt = 0
            if self._stopping.is_set():
                break
            if self._opened:
                attempt = 0  # that session was live: this loss starts the backoff again
            delay = backoff_delay(attempt, RECONNECT_MIN, RECONNECT_MAX, self._rng)
            attempt += 1
            self._stopping.wait(delay)

    def _session(self) -> None:
        self._open()
        while not self._stopping.is_set():
            with gevent.Timeout(self.hold, SessionLost("round took over %.1fs" % self.hold)):
                self._round()
            self._wait()

    def _open(self) -> None:
        with gevent.Timeout(self.hold + CONNECT_TIMEOUT, SessionLost("connect timed out")):
            if self._connect_fn is not None:
                conn = self._connect_fn()
            else:
                import psycopg2

                conn = psycopg2.connect(
                    self.dsn,
                    application_name=names.application_name(self.instance),
                    connect_timeout=CONNECT_TIMEOUT,
                )
            conn.autocommit = True
            self._conn = conn
            with conn.cursor() as cur:
                try:
                    cur.execute(
                        "SET idle_session_timeout = %s",
                        ("%dms" % (idle_limit(self.interval) * 1000),),
                    )
                except Exception as exc:  # noqa: BLE001 - PostgreSQL before 14: no such setting
                    log.warning("cluster: idle_session_timeout not set: %s", exc)
                cur.execute(
                    "SELECT pg_try_advisory_lock(%s)",
                    (names.instance_key(self.cluster, self.instance),),
                )
                (taken,) = cur.fetchone()
        if not taken:
            raise SessionLost(
                "another live instance is named %r (cluster %r): waiting for it to end"
                % (self.instance, self.cluster)
            )
        self._opened = True
        self._set_live(True, None)
        # Instances started together see each other before anyone claims: one round's wait
        # instead of one taking every node and handing most of them over again.
        self._claim_after = time.monotonic() + (self.interval if self.rounds == 0 else 0.0)
        log.info("cluster: instance %s live (cluster %s)", self.instance, self.cluster)

    def _round(self) -> None:
        with self._conn.cursor() as cur:
            cur.execute(LOCKS_QUERY)
            rows = cur.fetchall()
        owners: Dict[str, str] = {}
        instances: Dict[str, float] = {}
        for classid, objid, application, since in rows:
            instance = names.instance_of(application or "")
            if not instance:
                continue
            parts = (int(classid), int(objid))
            node = self._by_parts.get(parts)
            if node is not None:
                owners[node] = instance
            elif parts == names.lock_parts(names.instance_key(self.cluster, instance)):
                instances[instance] = float(since)
        self.rounds += 1
        self.owners = owners
        self.instances = instances
        lost = {n for n in self.mine if owners.get(n) != self.instance}
        for node in sorted(lost):  # cannot happen while the session holds: say so loudly
            log.error("cluster: node %s: lock not held any more, dropping it", node)
            self._drop(node)
        if not self._claiming or time.monotonic() < self._claim_after:
            return
        p = spread.plan(self.instance, self.nodes, owners, instances)
        fair = spread.share(len(self.nodes), len(set(instances) | {self.instance}))
        for node in p.claim:
            if len(self.mine) >= fair or not self._claiming:
                break
            with self._conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (self._node_keys[node],))
                (taken,) = cur.fetchone()
            if taken:
                self.mine.add(node)
                self.owners[node] = self.instance
                log.info("cluster: node %s claimed by %s", node, self.instance)
                self._on_claimed(node)
        if p.release is not None:
            log.info("cluster: handing node %s over (spread uneven)", p.release)
            self._release(p.release)

    def _wait(self) -> None:
        """Sleep until the next round, waking at once if the session's socket has something
        to say (most likely: it was closed)."""
        try:
            wait_read(self._conn.fileno(), timeout=self.interval)
        except TimeoutError:  # gevent's socket.timeout: nothing came, the next round is due
            return
        except OSError as exc:
            raise SessionLost("session socket: %s" % exc) from None
        # Readable between queries: a notice, or the end of the session.  A query tells which.
        with gevent.Timeout(self.hold, SessionLost("check took over %.1fs" % self.hold)):
            with self._conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
        self._stopping.wait(self.interval / 4)

    # --- losing and releasing ----------------------------------------------------------------

    def _release(self, node: str) -> None:
        """A clean handover: connections closed, then the lock released."""
        self._drop(node)
        if self._conn is None:
            return
        try:
            with gevent.Timeout(self.hold):
                with self._conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (self._node_keys[node],))
        except BaseException as exc:  # noqa: BLE001 - the session's end releases it anyway
            if isinstance(exc, gevent.GreenletExit):
                raise
            log.warning(
                "cluster: node %s: unlock failed (%s); the session's end frees it", node, exc
            )
        self.owners.pop(node, None)

    def _drop(self, node: str) -> None:
        if node in self.mine:
            self.mine.discard(node)
            try:
                self._on_released(node)
            except Exception:  # noqa: BLE001
                log.exception("cluster: node %s: release failed", node)

    def _lost(self, why: str) -> None:
        was_live = self.live
        owned = sorted(self.mine)
        # At once, before anything else: another instance may hold these locks any moment now.
        for node in owned:
            self._drop(node)
        self._close()
        self.owners = {}
        self.instances = {}
        if was_live or why != self.error:
            if was_live:
                self.losses += 1
            log.error(
                "cluster: database session lost (%s)%s",
                why,
                ": dropped nodes " + ", ".join(owned) if owned else "",
            )
        self._set_live(False, why)

    def _unlock_all(self) -> None:
        """Release every lock now rather than when the server notices the session's end (a
        moment later).  Best effort: a session left mid-query is simply closed."""
        if self._conn is None:
            return
        try:
            with gevent.Timeout(min(1.0, self.hold)):
                with self._conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock_all()")
        except BaseException as exc:  # noqa: BLE001 - closing the session frees them anyway
            if isinstance(exc, gevent.GreenletExit):
                raise
            log.debug("cluster: unlock_all: %s", exc)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def _set_live(self, live: bool, error: Optional[str]) -> None:
        if live != self.live:
            self.since = time.time()
        self.live, self.error = live, error

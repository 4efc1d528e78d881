"""A TCP forwarder whose faults the cluster tests control: ``FaultProxy``.

The cluster's promises are about what happens when PostgreSQL or RabbitMQ goes away from one
instance, or from all of them, and comes back (cluster.md: "broker and database faults, through
proxies the tests cut and pause, never by stopping the machine's services").  So an instance's
``database.url`` or ``cluster.amqp_url`` points at one of these proxies, and a test:

* ``cut()`` -- every connection through the proxy ends at once, on both sides (each side sees
  the other close), and new connections are accepted and closed straight away, as a host whose
  service is down would, until ``restore()``;
* ``pause()`` -- connections stay open but no byte moves in either direction (a network that
  went silent, the case timeouts and heartbeats exist for); a connection accepted meanwhile is
  not connected onwards.  ``resume()``: what was held flows, in order.

Plain threads and blocking sockets (the test process is not monkey-patched): one accept thread,
and per connection one thread per direction, so that a side that stops reading never blocks
the other direction.  A direction reads a chunk, then waits while the proxy is paused, then
writes it: a byte sent after ``pause()`` returned is never forwarded before ``resume()``.
``close()`` ends every thread and closes every socket before it returns.
"""

from __future__ import annotations

import itertools
import logging
import selectors
import socket
import threading
from typing import List, Optional, Set

log = logging.getLogger(__name__)

CHUNK = 65536
CONNECT_TIMEOUT = 5.0  # seconds to reach the target for one accepted connection
JOIN_TIMEOUT = 10.0  # seconds cut()/close() wait for a connection's threads to end

_ids = itertools.count(1)


def _shut(sock: Optional[socket.socket], how: int = socket.SHUT_RDWR) -> None:
    """shutdown() without caring whether the peer already went: it wakes a thread blocked in
    recv() on ``sock`` without releasing the descriptor under it (close() would)."""
    if sock is None:
        return
    try:
        sock.shutdown(how)
    except OSError:
        pass


class _Link:
    """One client connection and its connection to the target."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, number: int) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: Optional[socket.socket] = None
        self.dead = False  # set by kill(): the link ends, whatever its threads are doing
        self.name = "%s-c%d" % (proxy.name, number)
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._back: Optional[threading.Thread] = None

    def kill(self) -> None:
        """Both sides closed now (called with the proxy's condition held)."""
        self.dead = True
        _shut(self.client)
        _shut(self.upstream)

    def join(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _run(self) -> None:
        try:
            if self._connect():
                assert self.upstream is not None
                self._back = threading.Thread(
                    target=self._pump,
                    args=(self.upstream, self.client),
                    name=self.name + "-back",
                    daemon=True,
                )
                self._back.start()
                self._pump(self.client, self.upstream)
                self._back.join()
        finally:
            for sock in (self.client, self.upstream):
                if sock is not None:
                    sock.close()
            self.proxy._forget(self)

    def _connect(self) -> bool:
        """Reach the target once the proxy is not paused; False when the link must end."""
        proxy = self.proxy
        with proxy._cond:
            while proxy._paused and not self.dead:
                proxy._cond.wait()
            if self.dead:
                return False
        try:
            upstream = socket.create_connection(proxy.target, timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            log.info("%s: cannot reach %s:%d: %s", self.name, *proxy.target, exc)
            return False
        upstream.settimeout(None)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with proxy._cond:
            self.upstream = upstream
            if self.dead:  # killed while connecting: kill() did not see this socket
                _shut(upstream)
                return False
        return True

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy src -> dst until EOF (then half-close dst) or an error (then end both)."""
        proxy = self.proxy
        while True:
            try:
                data = src.recv(CHUNK)
            except OSError:
                data = None
            with proxy._cond:
                while proxy._paused and not self.dead:
                    proxy._cond.wait()
                if self.dead:
                    return
            if data is None:
                with proxy._cond:
                    self.kill()
                return
            if not data:
                _shut(dst, socket.SHUT_WR)  # the peer's FIN, passed on in order
                return
            try:
                dst.sendall(data)
            except OSError:
                with proxy._cond:
                    self.kill()
                return


class FaultProxy:
    """Forward 127.0.0.1:``port`` (ephemeral) to ``target_host:target_port``, with faults.

    Thread-safe; every method returns once the fault is in place.  ``accepted`` counts the
    connections accepted (refused ones too), ``refused`` those closed at once while cut."""

    def __init__(self, target_host: str, target_port: int, name: str = "") -> None:
        self.target = (target_host, target_port)
        self.name = name or "proxy%d" % next(_ids)
        self._cond = threading.Condition()
        self._paused = False
        self._cut = False
        self._closed = False
        self._links: Set[_Link] = set()
        self.accepted = 0
        self.refused = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._acceptor = threading.Thread(target=self._accept, name=self.name, daemon=True)
        self._acceptor.start()

    def __repr__(self) -> str:
        return "<FaultProxy %s 127.0.0.1:%d -> %s:%d%s%s>" % (
            self.name,
            self.port,
            self.target[0],
            self.target[1],
            " cut" if self._cut else "",
            " paused" if self._paused else "",
        )

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connections(self) -> int:
        """Connections open through the proxy now."""
        with self._cond:
            return len(self._links)

    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def is_paused(self) -> bool:
        return self._paused

    def threads(self) -> List[threading.Thread]:
        """This proxy's threads that are still alive (none after close())."""
        prefix = self.name
        return [
            t
            for t in threading.enumerate()
            if t.is_alive() and (t.name == prefix or t.name.startswith(prefix + "-c"))
        ]

    # --- faults ---------------------------------------------------------------------------

    def cut(self) -> None:
        """Close every current connection on both sides, and refuse new ones (accept, then
        close) until restore()."""
        with self._cond:
            self._cut = True
            links = list(self._links)
            for link in links:
                link.kill()
            self._cond.notify_all()  # paused threads of those links end too
        self._join(links)
        log.info("%s: cut (%d connections closed)", self.name, len(links))

    def restore(self) -> None:
        """Accept and forward new connections again (after cut())."""
        with self._cond:
            self._cut = False
        log.info("%s: restored", self.name)

    def pause(self) -> None:
        """Forward nothing, either way, until resume(); connections stay open."""
        with self._cond:
            self._paused = True
        log.info("%s: paused", self.name)

    def resume(self) -> None:
        """Forward again: what was held flows first, in order."""
        with self._cond:
            self._paused = False
            self._cond.notify_all()
        log.info("%s: resumed", self.name)

    def close(self) -> None:
        """Stop listening, end every connection; no thread or socket of the proxy is left."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            links = list(self._links)
            for link in links:
                link.kill()
            self._cond.notify_all()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._acceptor.join(JOIN_TIMEOUT)
        self._join(links)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    # --- threads --------------------------------------------------------------------------

    def _join(self, links: List[_Link]) -> None:
        stuck = [link.name for link in links if not link.join(JOIN_TIMEOUT)]
        if stuck:
            raise RuntimeError("%s: threads did not end: %s" % (self.name, ", ".join(stuck)))

    def _forget(self, link: _Link) -> None:
        with self._cond:
            self._links.discard(link)

    def _accept(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while True:
                ready = [key.fileobj for key, _ in sel.select()]
                if self._wake_r in ready or self._closed:
                    return
                try:
                    client, _ = self._listener.accept()
                except OSError:
                    continue
                client.settimeout(None)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self._cond:
                    self.accepted += 1
                    if self._cut or self._closed:
                        self.refused += 1
                        _shut(client)
                        client.close()
                        continue
                    link = _Link(self, client, self.accepted)
                    self._links.add(link)
                    link.thread.start()
        finally:
            sel.close()

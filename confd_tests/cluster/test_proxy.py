"""``FaultProxy`` against a tiny threaded echo server: it forwards, and its faults are what the
cluster tests take them for (cut ends both sides and refuses, pause holds bytes that resume
delivers in order, close leaves no thread and no socket behind)."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Callable, Iterator, List

import pytest

from confd_tests.cluster.proxy import FaultProxy

WAIT = 20.0  # generous: the machine has two busy cores


def wait_until(predicate: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    limit = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > limit:
            raise AssertionError("not within %.0f s: %s" % (timeout, what))
        time.sleep(0.02)


class EchoServer:
    """Echoes every byte back and closes when its peer does; counts connections, bytes, and
    connections its peer ended."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.received = 0
        self.ended = 0  # connections whose peer closed (EOF or reset)
        self.conns: List[socket.socket] = []
        self.lock = threading.Lock()
        self.threads: List[threading.Thread] = []
        self.closing = False
        t = threading.Thread(target=self._accept, name="echo", daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.conns.append(conn)
            t = threading.Thread(target=self._echo, args=(conn,), name="echo-conn", daemon=True)
            t.start()
            self.threads.append(t)

    def _echo(self, conn: socket.socket) -> None:
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                with self.lock:
                    self.received += len(data)
                conn.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                if not self.closing:
                    self.ended += 1
                self.conns.remove(conn)
            conn.close()

    def close(self) -> None:
        with self.lock:
            self.closing = True
            socks = [self.listener] + self.conns
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(WAIT)
        self.listener.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    p = FaultProxy("127.0.0.1", echo.port)
    yield p
    p.close()


def connect(p: FaultProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", p.port), timeout=WAIT)


def read_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = sock.recv(n - len(out))
        if not data:
            raise AssertionError("EOF after %d of %d bytes" % (len(out), n))
        out += data
    return out


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the peer has closed: EOF or a reset (waits up to the socket's timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_forwards_both_ways_intact(proxy: FaultProxy, echo: EchoServer) -> None:
    payload = os.urandom(1 << 20)
    with connect(proxy) as a, connect(proxy) as b:
        # Sent from another thread: the echo comes back while we are still sending.
        sender = threading.Thread(target=a.sendall, args=(payload,))
        sender.start()
        assert read_exactly(a, len(payload)) == payload
        sender.join(WAIT)
        b.sendall(b"ping")
        assert read_exactly(b, 4) == b"ping"
        assert proxy.connections == 2
    assert echo.accepted == 2
    wait_until(lambda: proxy.connections == 0, "the proxy ending closed connections")


def test_half_close_passes_on_and_the_answer_still_comes_back(proxy: FaultProxy) -> None:
    with connect(proxy) as s:
        s.sendall(b"last words")
        s.shutdown(socket.SHUT_WR)
        assert read_exactly(s, 10) == b"last words"
        assert closed_by_peer(s)  # the echo server saw our FIN and closed in turn


def test_cut_closes_both_sides_and_refuses_until_restore(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    clients = [connect(proxy) for _ in range(3)]
    for c in clients:
        c.sendall(b"x")
        assert read_exactly(c, 1) == b"x"
    proxy.cut()
    assert proxy.is_cut
    assert proxy.connections == 0
    for c in clients:
        assert closed_by_peer(c), "the client side was not closed"
    wait_until(lambda: echo.ended == 3, "the server side of every connection closed")

    # While cut: accepted, then closed at once; nothing reaches the server.
    with connect(proxy) as refused:
        assert closed_by_peer(refused)
    assert proxy.refused == 1
    assert echo.accepted == 3

    proxy.restore()
    assert not proxy.is_cut
    with connect(proxy) as again:
        again.sendall(b"back")
        assert read_exactly(again, 4) == b"back"
    assert echo.accepted == 4
    for c in clients:
        c.close()


def test_pause_holds_bytes_and_resume_delivers_them_in_order(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    with connect(proxy) as s:
        s.sendall(b"before ")
        assert read_exactly(s, 7) == b"before "
        proxy.pause()
        assert proxy.is_paused
        chunks = [b"%03d;" % i for i in range(50)]
        for chunk in chunks:
            s.sendall(chunk)
        late = connect(proxy)  # accepted meanwhile, but not connected onwards
        late.sendall(b"late")
        s.settimeout(1.0)
        with pytest.raises(socket.timeout):
            s.recv(1)
        assert echo.received == 7, "bytes reached the server through a paused proxy"
        assert echo.accepted == 1
        assert proxy.connections == 2  # both kept open

        proxy.resume()
        s.settimeout(WAIT)
        want = b"".join(chunks)
        assert read_exactly(s, len(want)) == want
        late.settimeout(WAIT)
        assert read_exactly(late, 4) == b"late"
        assert echo.accepted == 2
        late.close()


def test_cut_while_paused_ends_the_held_connections(proxy: FaultProxy, echo: EchoServer) -> None:
    with connect(proxy) as s:
        s.sendall(b"a")
        assert read_exactly(s, 1) == b"a"
        proxy.pause()
        s.sendall(b"held")
        proxy.cut()
        assert closed_by_peer(s)
        wait_until(lambda: echo.ended == 1, "the server side closed")
        assert echo.received == 1
    proxy.resume()
    proxy.restore()
    with connect(proxy) as again:
        again.sendall(b"ok")
        assert read_exactly(again, 2) == b"ok"


def test_unreachable_target_closes_the_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as spare:
        port = spare.getsockname()[1]
    with FaultProxy("127.0.0.1", port) as p, connect(p) as s:  # nothing listens there now
        assert closed_by_peer(s)
        wait_until(lambda: p.connections == 0, "the failed link forgotten")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_close_leaves_no_thread_and_no_socket(echo: EchoServer) -> None:
    before_threads = set(threading.enumerate())
    before_fds = _fds()
    p = FaultProxy("127.0.0.1", echo.port)
    clients = [connect(p) for _ in range(4)]
    for c in clients:
        c.sendall(b"y")
        assert read_exactly(c, 1) == b"y"
    p.pause()
    clients[0].sendall(b"held")
    p.close()
    assert p.threads() == []
    assert set(threading.enumerate()) - before_threads == set()
    for c in clients:
        assert closed_by_peer(c)
        c.close()
    # The echo server closes its ends when it sees the proxy's: then every descriptor is back.
    wait_until(lambda: _fds() == before_fds, "the descriptors of before (%d)" % before_fds)
    p.close()  # a second close is harmless

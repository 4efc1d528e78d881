"""The daemon's own bounds: served connections (``http.max_connections``)."""

import gevent
from gevent import socket

from confd.config import config_from_dict
from confd.daemon import Daemon
from confd.store import Store


def bounded_daemon(tmp_path, **http):
    cfg = config_from_dict(
        {
            "http": {"host": "127.0.0.1", "port": 0, **http},
            "freeswitch": {"nodes": [{"host": "127.0.0.1", "port": 1}], "reconnect_min": 5},
        }
    )
    daemon = Daemon(cfg, store=Store.from_url("sqlite:///%s/confd.db" % tmp_path))
    daemon.start()
    return daemon


def metric(daemon, line):
    return line in daemon.metrics.render()[0].decode()


def test_busy_connections_are_bounded(tmp_path):
    """Two requests whose bodies are still coming hold both places: a third connection waits
    in the listen backlog until one of them is answered."""
    daemon = bounded_daemon(tmp_path, max_connections=2, header_timeout=60)
    try:
        port = daemon.http_port
        busy = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        for s in busy:
            s.sendall(b"PUT /v2/api_auth HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{")
        gevent.sleep(0.2)
        assert daemon.connections.busy == 2
        assert metric(daemon, 'confd_queue_depth{queue="http_connections"} 2.0')
        third = socket.create_connection(("127.0.0.1", port))
        third.sendall(b"GET /v2/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with gevent.Timeout(0.5, False):
            data = third.recv(100)
            raise AssertionError("served past the bound: %r" % data)
        busy[0].sendall(b'"data": {"a": 1}}   ')  # the body is complete: answered
        with gevent.Timeout(5):
            assert busy[0].recv(100).startswith(b"HTTP/1.1 400")
            # Its connection now waits for a next request: a place the third one takes.
            data = third.recv(100)
        assert data.startswith(b"HTTP/1.1 503")  # health: the node is not connected
        assert metric(daemon, 'confd_http_limit_hits_total{limit="all_busy"}')
        for s in busy + [third]:
            s.close()
    finally:
        daemon.stop()


def test_connections_waiting_for_a_request_make_room(tmp_path):
    """At the bound, the connection that has waited the longest for its request is closed so
    that a new one is served: silent connections cannot lock clients out."""
    daemon = bounded_daemon(tmp_path, max_connections=2)
    try:
        port = daemon.http_port
        idle = []
        for _ in range(2):
            idle.append(socket.create_connection(("127.0.0.1", port)))
            idle[-1].sendall(b"GET /v2/health HTTP/1.1\r\nHost: x\r\n")  # never finished
            gevent.sleep(0.05)
        third = socket.create_connection(("127.0.0.1", port))
        third.sendall(b"GET /v2/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with gevent.Timeout(5):
            assert third.recv(100).startswith(b"HTTP/1.1 503")
            assert idle[0].recv(100) == b""  # the oldest was closed, unanswered
        idle[1].settimeout(0.2)
        try:
            idle[1].recv(100)
            raise AssertionError("the newer waiting connection was closed too")
        except socket.timeout:
            pass
        assert metric(daemon, 'confd_http_limit_hits_total{limit="max_connections"} 1.0')
        for s in idle + [third]:
            s.close()
    finally:
        daemon.stop()

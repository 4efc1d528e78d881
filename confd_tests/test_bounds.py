"""The daemon's own bounds: served connections."""

import gevent
from gevent import socket

from confd.config import config_from_dict
from confd.daemon import Daemon
from confd.store import Store


def test_http_connections_are_bounded(tmp_path):
    cfg = config_from_dict(
        {
            "http": {"host": "127.0.0.1", "port": 0},
            "freeswitch": {"nodes": [{"host": "127.0.0.1", "port": 1}], "reconnect_min": 5},
        }
    )
    daemon = Daemon(cfg, store=Store.from_url("sqlite:///%s/confd.db" % tmp_path))
    daemon.start(max_connections=2)
    try:
        port = daemon.http_port
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        for s in idle:
            s.sendall(b"GET /v2/health HTTP/1.1\r\nHost: x\r\n")  # never finished
        gevent.sleep(0.2)
        assert len(daemon.connections) == 2
        metrics = daemon.metrics.render()[0].decode()
        assert 'confd_queue_depth{queue="http_connections"} 2.0' in metrics
        third = socket.create_connection(("127.0.0.1", port))
        third.sendall(b"GET /v2/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with gevent.Timeout(0.5, False):
            data = third.recv(100)
            raise AssertionError("served past the bound: %r" % data)
        idle[0].close()  # a place frees up: the waiting connection is served
        with gevent.Timeout(5):
            data = third.recv(100)
        assert data.startswith(b"HTTP/1.1 503")  # health: the node is not connected
        third.close()
        idle[1].close()
    finally:
        daemon.stop()

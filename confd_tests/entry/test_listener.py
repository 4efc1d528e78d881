"""The entry listener's queue of connections not accepted yet: a burst of max_calls calls (and
the ones to refuse) waits there for confd, instead of losing its handshake and waiting for
Linux to resend it (1 s, 3 s, ...) -- what the benchmark's 200 callers at once and 1,000
abandoned connections met with gevent's default queue of 128."""

import gevent
from gevent import socket

from confd.entry import rules
from confd.entry.directory import MemoryDirectory
from confd.entry.server import EntryService
from confd.entry.session import Timeouts
from confd.esl import protocol as p

SHORT = Timeouts(connect=0.5, command=0.5, sound=0.5, join=0.5, hangup=0.5, exit=0.5)
BURST = 300  # more than gevent's default backlog (128)


def test_a_burst_of_max_calls_connections_waits_for_confd_in_the_listen_queue():
    svc = EntryService(
        listen="127.0.0.1:0",
        settings=rules.EntrySettings(),
        directory=MemoryDirectory(),
        rooms=lambda conf: None,
        max_calls=BURST,
        timeouts=SHORT,
    )
    svc.bind()  # listening, not accepting yet: every connection waits in the kernel's queue
    socks = []
    try:

        def connect() -> None:
            sock = socket.socket()
            socks.append(sock)
            sock.settimeout(5.0)  # a lost handshake is resent after 1 s and 3 s: still lost
            sock.connect(("127.0.0.1", svc.port))

        attempts = [gevent.spawn(connect) for _ in range(BURST)]
        gevent.joinall(attempts, timeout=60)
        failed = [g.exception for g in attempts if not g.successful()]
        assert failed == [], "%d of %d handshakes lost: %r" % (len(failed), BURST, failed[:3])
        svc.start()
        heard = []

        def hear(sock) -> None:
            parser = p.CommandParser()
            sock.settimeout(30)
            while not parser.feed(sock.recv(4096)):
                pass
            heard.append(True)

        gevent.joinall([gevent.spawn(hear, s) for s in socks], timeout=60)
        assert len(heard) == BURST  # each one reached confd and heard `connect`
    finally:
        for sock in socks:
            sock.close()
        svc.stop(timeout=2)

"""A FreeSWITCH side that misbehaves: garbage, a connection that never answers `connect`, one
that closes mid-sendmsg or stalls, too much data, more calls than max_calls, and 1,000
connections opened and abandoned.  Every session ends by itself, is counted and logged once,
and nothing is left waiting."""

import gc

import gevent
import pytest
from gevent import socket

from confd.entry import constants as c
from confd.entry import rules
from confd.entry.directory import MemoryDirectory, Room
from confd.entry.server import EntryService
from confd.entry.session import Timeouts
from confd.esl import protocol as p
from confd.simulator.model import ConferenceModel
from confd.simulator.outbound import OutboundSide
from confd_tests.entry.outbound_replay import Capture
from confd_tests.entry.world import wait_until

ACCOUNT = "a" * 32
SHORT = Timeouts(connect=0.3, command=0.3, sound=0.3, join=0.3, hangup=0.3, exit=0.3)


@pytest.fixture
def service():
    made = []

    def make(**kw):
        directory = MemoryDirectory()
        directory.add(ACCOUNT, "7101", {"member": {"numbers": ["7101"]}})
        outcomes = []
        kw.setdefault("timeouts", SHORT)
        svc = EntryService(
            listen="127.0.0.1:0",
            settings=rules.EntrySettings(default_account=ACCOUNT, name_pattern="[0-9]{4}"),
            directory=directory,
            rooms=lambda conf: Room(),
            on_outcome=outcomes.append,
            **kw,
        )
        svc.start()
        svc.test_outcomes = outcomes
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.stop(timeout=1)


def dial(svc) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", svc.port), timeout=5)
    return sock


def read_command(sock, parser, timeout=5.0):
    with gevent.Timeout(timeout):
        while True:
            got = parser.feed(sock.recv(65536))
            if got:
                return got


def connect_reply():
    cap = Capture.load("a_member_pin")
    f = cap.frames[0]
    return cap.raw[f.start : f.end]


def settle(svc, n):
    wait_until(lambda: len(svc.test_outcomes) >= n and svc.active == 0, 10, "the sessions' end")
    assert not svc._sessions


def closed_by_confd(sock, timeout=5.0) -> bool:
    with gevent.Timeout(timeout, False):
        while True:
            try:
                if not sock.recv(65536):
                    return True
            except OSError:
                return True
    return False


def test_garbage_instead_of_the_connect_reply(service):
    svc = service()
    sock = dial(svc)
    parser = p.CommandParser()
    assert read_command(sock, parser)[0].line == "connect"
    sock.sendall(b"this is not ESL\nat all\n\n")
    settle(svc, 1)
    assert svc.test_outcomes == [c.OUTCOME_ERROR]
    assert closed_by_confd(sock)


def test_a_connection_that_never_answers_connect_is_dropped(service):
    svc = service()
    sock = dial(svc)
    assert read_command(sock, p.CommandParser())[0].line == "connect"
    settle(svc, 1)  # the connect deadline (0.3 s here)
    assert svc.test_outcomes == [c.OUTCOME_ERROR]
    assert closed_by_confd(sock)


def opened(sock):
    """Play FreeSWITCH through confd's opening (connect, myevents, linger); the parser of
    what confd sends next."""
    parser = p.CommandParser()
    read_command(sock, parser)
    sock.sendall(connect_reply())
    for reply in (b"+OK Events Enabled", b"+OK will linger"):
        read_command(sock, parser)
        sock.sendall(b"Content-Type: command/reply\nReply-Text: " + reply + b"\n\n")
    return parser


def test_closed_mid_sendmsg(service):
    svc = service()
    sock = dial(svc)
    parser = opened(sock)
    assert read_command(sock, parser)[0].line == "sendmsg"
    sock.sendall(b"Content-Type: command/reply\nReply-Te")  # half a reply, then gone
    sock.close()
    settle(svc, 1)
    assert svc.test_outcomes == [c.OUTCOME_HANGUP]


def test_a_stalled_application_is_dropped_after_its_deadline(service):
    svc = service()
    sock = dial(svc)
    parser = opened(sock)
    read_command(sock, parser)  # answer
    sock.sendall(b"Content-Type: command/reply\nReply-Text: +OK\n\n")  # ...and nothing more
    settle(svc, 1)
    assert svc.test_outcomes == [c.OUTCOME_ERROR]
    assert closed_by_confd(sock)


def test_too_much_data_is_refused_not_buffered(service):
    svc = service()
    sock = dial(svc)
    read_command(sock, p.CommandParser())
    sock.sendall(b"Content-Length: 9000000\nContent-Type: text/event-plain\n\n")
    try:
        for _ in range(40):
            sock.sendall(b"x" * 16384)
    except OSError:
        pass  # confd closed it
    settle(svc, 1)
    assert svc.test_outcomes == [c.OUTCOME_ERROR]


def test_max_calls_one_more_hears_goodbye_then_overflow_is_closed(service):
    svc = service(max_calls=2, overflow=1, timeouts=Timeouts())
    side = OutboundSide(ConferenceModel(), time_scale=10.0)  # nobody types: long prompts
    waiting = [side.dial(("127.0.0.1", svc.port), answers=[]) for _ in range(2)]
    wait_until(lambda: svc.active == 2)
    # the overflow slot taken by a connection that never answers
    hog = dial(svc)
    read_command(hog, p.CommandParser())
    wait_until(lambda: svc.refusing == 1)
    dropped = dial(svc)
    assert closed_by_confd(dropped)  # closed unanswered: no slot left
    assert svc.dropped == 1
    hog.close()
    wait_until(lambda: svc.refusing == 0)
    busy = side.dial(("127.0.0.1", svc.port), answers=[])
    assert busy.wait(10)
    assert busy.heard == [rules.Sounds().goodbye]
    assert busy.hangup_cause == c.CAUSE_CONGESTION
    assert svc.test_outcomes.count(c.OUTCOME_BUSY) == 1
    assert all(not call.down for call in waiting)  # the two in entry are untouched
    for call in waiting:
        call.hang_up()
    wait_until(lambda: svc.active == 0)


def test_a_thousand_connections_opened_and_abandoned(service):
    svc = service()

    def greenlets():
        return sum(1 for o in gc.get_objects() if isinstance(o, gevent.Greenlet) and not o.dead)

    before = greenlets()
    total = 0
    for _ in range(10):
        socks = [dial(svc) for _i in range(100)]
        for i, s in enumerate(socks):
            if i % 2:
                s.close()  # abandoned at once
        gevent.sleep(0.01)
        for s in socks:
            s.close()  # the others after confd sent connect
        total += 100
        wait_until(lambda n=total: len(svc.test_outcomes) == n and svc.active == 0, 30)
    assert not svc._sessions
    assert set(svc.test_outcomes) <= {c.OUTCOME_HANGUP, c.OUTCOME_ERROR}
    gc.collect()
    assert greenlets() <= before
    # and the service still serves a real call
    side = OutboundSide(ConferenceModel())
    call = side.dial(("127.0.0.1", svc.port), answers=["7101#"])
    wait_until(lambda: len(svc.test_outcomes) == total + 1, 10)
    assert svc.test_outcomes[-1] == c.OUTCOME_JOINED
    call.hang_up()

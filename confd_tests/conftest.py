"""Shared fixtures: an in-process node supervisor against a fake FreeSWITCH."""

import logging

import gevent
import pytest

from confd.conferences.commands import RELAXED_NAME_PATTERN, CommandBuilder
from confd.conferences.state import LiveState
from confd.esl.node import NodeSettings, NodeSupervisor


def wait_until(predicate, timeout=5.0, interval=0.005, what="condition"):
    """Cooperative wait (the fakes and the supervisor run in this process's greenlets)."""
    with gevent.Timeout(timeout, AssertionError("timed out waiting for %s" % what)):
        while not predicate():
            gevent.sleep(interval)


@pytest.fixture
def make_node():
    nodes = []

    def make(port, name="fs1", state=None, pattern=RELAXED_NAME_PATTERN, publish=None, **kw):
        settings = NodeSettings(
            name=name,
            host="127.0.0.1",
            port=port,
            password=kw.pop("password", "ClueCon"),
            reconnect_min=kw.pop("reconnect_min", 0.05),
            reconnect_max=kw.pop("reconnect_max", 0.4),
            command_timeout=kw.pop("command_timeout", 2.0),
            heartbeat_timeout=kw.pop("heartbeat_timeout", 30.0),
            **kw,
        )
        node = NodeSupervisor(
            settings,
            state if state is not None else LiveState(),
            CommandBuilder(pattern),
            publish=publish or (lambda updates: None),
        )
        node.state = node._state  # tests read it
        nodes.append(node)
        node.start()
        return node

    yield make
    for node in nodes:
        node.stop(timeout=1)


@pytest.fixture(autouse=True)
def _quiet_gevent_logs(caplog):
    caplog.set_level(logging.INFO, logger="confd")
    yield

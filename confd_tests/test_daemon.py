"""``confd run`` as a real process, against a fake FreeSWITCH on loopback."""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import gevent
import pytest

from confd_tests.netutil import free_port, poll
from confd_tests.replay import Capture, ReplayFreeSwitch

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0  # seconds; a start takes ~1 s, far longer on a busy machine


@pytest.fixture
def daemon(tmp_path):
    procs = []

    def start(fs_port, extra_env=None):
        port = free_port()
        env = dict(os.environ)
        env.pop("CONFD_CONFIG", None)
        env.update(
            CONFD_HTTP_PORT=str(port),
            CONFD_FREESWITCH="127.0.0.1:%d:ClueCon" % fs_port,
            PYTHONPATH=str(ROOT),
        )
        env.update(extra_env or {})
        proc = subprocess.Popen(
            [sys.executable, "-m", "confd", "run"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc, "http://127.0.0.1:%d" % port

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_no_freeswitch_health_503_and_quiet_retries(daemon):
    proc, base = daemon(free_port())
    status, body = poll(
        base + "/v2/health",
        lambda s, b: s == 503 and "refused" in (b["data"]["nodes"][0]["error"] or ""),
        timeout=START_TIMEOUT,
    )
    (node,) = body["data"]["nodes"]
    assert body["status"] == "error"
    assert node["connected"] is False and "refused" in node["error"]
    assert (node["conferences"], node["participants"]) == (0, 0)
    gevent.sleep(2.0)  # several retries at 0.5 s, 1 s, ... with jitter
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    lines = [ln for ln in err.splitlines() if "confd.esl.node" in ln]
    assert len(lines) == 1, err  # one line per state change, not one per retry
    assert "not connected" in lines[0]
    assert "Traceback" not in err


def test_connected_node_health_200_then_clean_sigterm(daemon):
    cap = Capture.load("s5_fs_stop_sigterm_after_restart")
    fake = ReplayFreeSwitch([cap], pause_at_checkpoints=False).start()
    try:
        proc, base = daemon(fake.port)
        status, body = poll(base + "/v2/health", lambda s, b: s == 200, timeout=START_TIMEOUT)
        (node,) = body["data"]["nodes"]
        assert node["connected"] is True and node["error"] is None
        assert node["name"] == "127.0.0.1:%d" % fake.port and node["port"] == fake.port
        assert body["status"] == "success" and body["data"]["nodes"][0]["since"].endswith("Z")
        assert fake.commands[:2] == [
            "auth ClueCon",
            "event plain HEARTBEAT CUSTOM conference::maintenance",
        ]
        assert "api conference json_list" in fake.commands
        metrics = urllib.request.urlopen(base + "/metrics", timeout=2).read().decode()
        assert 'confd_node_connected{node="127.0.0.1:%d"} 1.0' % fake.port in metrics
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        while proc.poll() is None and time.monotonic() - t0 < 10:
            gevent.sleep(0.05)
        assert proc.returncode == 0
        assert time.monotonic() - t0 < 5
    finally:
        fake.stop()


def test_bad_config_exits_2_naming_the_key(daemon, tmp_path):
    cfg = tmp_path / "bad.yml"
    cfg.write_text("http:\n  prot: 1\n")
    proc, _ = daemon(free_port(), {"CONFD_CONFIG": str(cfg)})
    _, err = proc.communicate(timeout=START_TIMEOUT)
    assert proc.returncode == 2
    assert "http.prot" in err

"""``confd demo``: the daemon against the built-in simulated node, as a newcomer runs it."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_starts_prints_instructions_and_shows_live_callers(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("CONFD_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "confd", "demo", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = None
        deadline = time.monotonic() + 90  # a start takes ~2 s, far longer on a busy machine
        lines = []
        while base is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:  # it ended
                break
            lines.append(line)
            m = re.search(r"HTTP API on (http://127\.0\.0\.1:\d+)", line)
            if m:
                base = m.group(1)
        if base is None:
            proc.kill()
        assert base, "".join(lines) + proc.stderr.read()
        text = "".join(lines)
        for _ in range(40):  # until the last line of the instructions
            text += proc.stdout.readline()
            if "Stop: Ctrl-C" in text:
                break
        key = re.search(r"api key ([0-9a-f]{64})", text)
        assert key, text
        assert "/v2/api_auth" in text and "/v2/websocket" in text
        body = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base + "/v2/health", timeout=2) as resp:
                    body = json.loads(resp.read())
            except urllib.error.HTTPError as exc:  # 503 until the node is connected
                body = json.loads(exc.read())
            (node,) = body["data"]["nodes"]
            if node["connected"] and node["participants"] > 0:
                break
            time.sleep(0.2)
        assert node["name"] == "sim" and node["connected"] and node["participants"] > 0, body
        assert (tmp_path / "confd-demo" / "demo.db").exists()  # the demo's own database
        assert not (tmp_path / "confd-data").exists()  # not the daemon's
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0
    assert "Traceback" not in proc.stderr.read()

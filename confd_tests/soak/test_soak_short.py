"""The soak's short form, for CI, and its verdicts on their own.

``test_short_soak`` runs ``python -m confd_tests.soak --minutes 0.5`` at the full scale (10 nodes,
200 conferences, 2,000 participants, 50 websocket clients, REST 200/s; it sets up in about 2 s
on a 2-core machine) and checks its JSON summary: no error, no drift.  The rates it reaches are
printed by the soak, not asserted: they depend on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from confd_tests.soak import REPO_ROOT, checks

SHORT_MINUTES = 0.5
# 30 s of load + set-up (about 2 s, at most 20 per step) + pause, drain and comparison.
SHORT_TIMEOUT = 240


@pytest.mark.timeout(SHORT_TIMEOUT + 30)
def test_short_soak():
    proc = subprocess.run(
        [sys.executable, "-m", "confd_tests.soak", "--minutes", str(SHORT_MINUTES)],
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=SHORT_TIMEOUT,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-2000:]
    summary = json.loads(lines[-1])
    report = "\n".join(lines[-60:-1]) + "\n" + proc.stderr[-2000:]
    assert summary["errors"] == 0, report
    assert summary["drift"] == 0, report
    assert summary["scale"]["participants"] == 2000
    assert summary["websocket"]["clients"] == 50
    assert summary["events"]["confd_esl_events"] > 0
    assert summary["websocket"]["delivered"] > 0
    assert proc.returncode == 0, report


# --- the verdicts --------------------------------------------------------------------------------


def test_plateau_flat_after_warm_up_is_ok():
    samples = [(t, 50.0 + min(t, 10) * 1.0) for t in range(0, 31, 2)]  # grows 10 MB, then flat
    r = checks.plateau(samples)
    assert r["ok"] is True
    assert (r["start_mb"], r["peak_mb"], r["end_mb"]) == (50.0, 60.0, 60.0)


def test_plateau_steady_growth_fails():
    samples = [(t, 50.0 + t * 1.0) for t in range(0, 61, 2)]  # 1 MB/s, never levels off
    r = checks.plateau(samples)
    assert r["ok"] is False
    assert r["growth_mb"] > r["allowed_mb"]


def test_plateau_needs_samples_in_two_thirds():
    assert checks.plateau([])["ok"] is None
    assert checks.plateau([(0.0, 50.0)])["ok"] is None


def test_scan_log_counts_errors_tracebacks_and_warnings():
    lines = [
        "2026-01-01 10:00:00,000 INFO confd.daemon: confd 1.0: HTTP API on 127.0.0.1:8000",
        "2026-01-01 10:00:01,000 WARNING confd.events.hub: event subscriber x dropped",
        "2026-01-01 10:00:02,000 ERROR confd.daemon: greenlet crashed",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "2026-01-01 10:00:03,000 INFO confd.http: an ERROR word inside a message is no error",
    ]
    r = checks.scan_log(lines)
    assert (r["errors"], r["warnings"]) == (2, 1)
    assert r["error_lines"][0].endswith("greenlet crashed")


def _member(mid, uuid, speak=True, talking=False, moderator=False, floor=False):
    return {
        "id": mid,
        "uuid": uuid,
        "energy": 100,
        "flags": {
            "can_speak": speak,
            "can_hear": True,
            "talking": talking,
            "has_floor": floor,
            "is_moderator": moderator,
        },
    }


def _participant(mid, uuid, speak=True, talking=False, moderator=False, floor=False, host="h1"):
    return {
        "participant_id": mid,
        "call_id": uuid,
        "speak": speak,
        "hear": True,
        "talking": talking,
        "floor": floor,
        "is_moderator": moderator,
        "energy_level": 100,
        "switch_hostname": host,
    }


def _dump(*members):
    return {
        "fs0": {
            "hostname": "h1",
            "json_list": [{"conference_name": "c1", "members": list(members)}],
        }
    }


HEALTH = {"fs0": {"connected": True, "conferences": 1, "participants": 2}}


def test_drift_none_when_confd_matches_the_node():
    dump = _dump(_member(1, "u1", moderator=True, floor=True), _member(2, "u2", talking=True))
    view = {
        "c1": [_participant(2, "u2", talking=True), _participant(1, "u1", True, False, True, True)]
    }
    assert checks.drift(dump, view, HEALTH) == {"drift": 0, "problems": []}


def test_drift_counts_each_difference():
    dump = _dump(_member(1, "u1", moderator=True), _member(2, "u2", speak=False))
    view = {
        "c1": [
            _participant(1, "u1", moderator=True, host="other"),  # wrong switch
            _participant(2, "u2", speak=True),  # confd missed a mute
            _participant(3, "u3"),  # gone from the node
        ]
    }
    health = {"fs0": {"connected": True, "conferences": 1, "participants": 3}}
    r = checks.drift(dump, view, health)
    text = "\n".join(r["problems"])
    assert r["drift"] == 4, text
    assert "c1/2: speak model=False confd=True" in text
    assert "c1/3: in confd, gone from node fs0" in text
    assert "switch_hostname" in text
    assert "node fs0: confd counts 1 conferences / 3 participants, the node 1 / 2" in text


def test_drift_conference_not_running_in_confd():
    r = checks.drift(
        _dump(_member(1, "u1")), {"c1": None}, {"fs0": dict(HEALTH["fs0"], participants=1)}
    )
    assert r["drift"] == 1
    assert "not running in confd" in r["problems"][0]

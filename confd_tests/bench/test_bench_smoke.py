"""The intake benchmark runs end to end and reports its figures (never how fast they are)."""

import json
import subprocess
import sys

from confd_tests.bench import REPO_ROOT, percentile, table

POSITIVE_BURST_KEYS = ("events_per_s", "cpu_s_per_100k", "peak_rss_mb", "hwm_mb")


def _positive(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def test_intake_quick_run_reports_every_figure():
    proc = subprocess.run(
        [sys.executable, "-m", "confd_tests.bench", "intake", "--quick"],
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["bench"] == "intake"
    assert result["events"] > 0

    intake = result["intake"]
    for engine in ("parser", "parser+parse_event", "confd"):
        assert intake[engine]["status"] == "ok", intake[engine]
        for key in POSITIVE_BURST_KEYS:
            assert _positive(intake[engine][key]), (engine, key, intake[engine])
    # confd took every event into live state: members are there at the end.
    assert intake["confd"]["conferences"] > 0 and intake["confd"]["members"] > 0
    # greenswitch may legitimately fail; then its status says how, instead of a number.
    gs = intake["greenswitch"]
    if gs["status"] == "ok":
        assert _positive(gs["events_per_s"]) and _positive(gs["peak_rss_mb"])
    else:
        assert gs["status"]

    confd_api = result["api"]["confd"]
    assert confd_api["status"] == "ok", confd_api
    assert confd_api["calls"] > 0
    assert confd_api["mismatched"] == 0
    for key in ("p50_ms", "p99_ms", "events_per_s_during"):
        assert _positive(confd_api[key]), (key, confd_api)
    assert confd_api["p99_ms"] >= confd_api["p50_ms"]
    assert "greenswitch" in result["api"]

    assert _positive(result["ratios"]["confd_vs_framing"])
    assert set(result["targets"]) == {"rate_vs_greenswitch", "rate", "rss", "api_p99"}
    for target in result["targets"].values():
        assert target["pass"] in (True, False, None)
    # The human-readable figures come before the JSON line.
    text = proc.stdout
    assert "events/s" in text and ("PASS" in text or "MISS" in text)


def test_unknown_subcommand_prints_usage_and_fails():
    proc = subprocess.run(
        [sys.executable, "-m", "confd_tests.bench", "nope"],
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "intake" in proc.stderr


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0


def test_table_aligns_columns():
    text = table(["a", "num"], [["long name", "1"], ["x", "1,000"]], right=(1,))
    lines = text.splitlines()
    assert lines[0] == "a            num"
    assert lines[2] == "long name      1"
    assert lines[3] == "x          1,000"

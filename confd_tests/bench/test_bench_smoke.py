"""The benchmarks run end to end and report their figures (never how fast they are)."""

import json
import socket
import subprocess
import sys

from confd_tests.bench import REPO_ROOT, percentile, table
from confd_tests.bench.ws import latency_figures
from confd_tests.loadtools import FrameReader

POSITIVE_BURST_KEYS = ("events_per_s", "cpu_s_per_100k", "peak_rss_mb", "hwm_mb")


def _positive(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _quick_run(bench, *options, timeout):
    """``python -m confd_tests.bench BENCH --quick OPTIONS`` to its end: (the finished process,
    the JSON result on its last line), after asserting it succeeded and is that bench's."""
    proc = subprocess.run(
        [sys.executable, "-m", "confd_tests.bench", bench, "--quick", *options],
        cwd=str(REPO_ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bench"] == bench
    return proc, result


def test_intake_quick_run_reports_every_figure():
    proc, result = _quick_run("intake", timeout=150)
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


# --- rest ---------------------------------------------------------------------------------------

WRK_SAMPLE = """Running 1s test @ http://127.0.0.1:18089/nonexistent
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.89ms    1.91ms   8.55ms   83.52%
    Req/Sec     1.36k   585.07     2.22k    70.00%
  Latency Distribution
     50%  755.00us
     75%    2.79ms
     90%    4.84ms
     99%    8.03ms
  1348 requests in 1.00s, 684.71KB read
  Non-2xx or 3xx responses: 48
Requests/sec:   1346.65
Transfer/sec:    684.03KB
"""


def test_rest_reads_wrk_figures_and_counts_failed_answers():
    from confd_tests.bench.rest import parse_wrk

    r = parse_wrk(WRK_SAMPLE)
    assert r["p50_ms"] == 0.755 and r["p99_ms"] == 8.03 and r["max_ms"] == 8.55
    assert r["rps"] == 1346.65 and r["seconds"] == 1.0
    assert r["errors"] == 48 and r["requests"] == 1300  # a non-2xx answer is not a served GET
    assert r["status"] == "errors"


def test_rest_event_cycle_pairs_every_toggle_so_it_can_repeat():
    import random

    from confd_tests.bench.rest import MEASURED_SHARE, make_rooms, talk_cycle

    rng = random.Random(3)
    rooms = make_rooms([("a" * 32, 20), ("b" * 32, 1000)], 50, rng)
    assert [len(r.members) for r in rooms[:3]] == [20, 1000, 10]
    cycle = talk_cycle(rooms, 2, 4000, rng)
    assert len(cycle) == 4000
    talking, muted = set(), set()
    for ri, mi, action in cycle:
        flags = talking if action.endswith("talking") else muted
        starts = action in ("start-talking", "mute-member")
        assert ((ri, mi) in flags) != starts, (ri, mi, action)  # consistent with the state
        (flags.add if starts else flags.discard)((ri, mi))
    assert not talking and not muted  # one turn leaves every member as it found it
    for measured in (0, 1):
        share = sum(1 for ri, _, _ in cycle if ri == measured) / len(cycle)
        assert abs(share - MEASURED_SHARE) < 0.03


def test_rest_quick_run_reports_every_figure():
    _rest_quick_run("auto")  # wrk when it is installed


def test_rest_quick_run_with_the_python_client():
    _rest_quick_run("python")  # the fallback load generator


def _rest_quick_run(client):
    proc, result = _quick_run("rest", "--client", client, timeout=240)
    assert result["status"] == "ok", result["status"]
    # The measured conferences held their members through the flow of events.
    assert result["participants"] == {"20": 20, "1000": 1000}
    if client == "python":
        assert result["settings"]["client"] == "python"
    for size in ("20", "1000"):
        for clients in ("1", "10", "50"):
            r = result["cases"][size][clients]
            # A failed or timed-out GET is counted and shown, not hidden (status "errors").
            assert r["status"] in ("ok", "errors") and r["errors"] >= 0, (size, clients, r)
            assert r["requests"] > 0 and _positive(r["rps"]), (size, clients, r)
            assert 0 < r["p50_ms"] <= r["p99_ms"], r
            assert _positive(r["events_per_s_confd"]), r
    paced = result["paced"]
    assert paced["status"] in ("ok", "errors") and paced["requests"] > 0
    assert paced["offered_rps"] > 0 and paced["unsent"] >= 0
    assert result["response_kb"]["1000"] > result["response_kb"]["20"] > 0
    assert {"small_open_loop", "large_p99_1", "large_p99_50"} <= set(result["targets"])
    for target in result["targets"].values():
        assert target["pass"] in (True, False, None)
    assert "req/s" in proc.stdout and ("PASS" in proc.stdout or "MISS" in proc.stdout)


def test_entry_quick_run_reports_every_figure():
    proc, result = _quick_run("entry", timeout=300)
    assert result["status"] == "ok", result["status"]
    n = result["settings"]["callers"]
    wave = result["wave"]
    # Every caller joined with its role's flags, as FreeSWITCH and confd's REST view show.
    assert wave["joined"] == wave["right_flags"] == n, wave
    assert wave["confd_view"] == {"seen": n, "right": n}, wave
    steps = wave["steps"]
    assert steps["count"] >= 5 * n and 0 < steps["p50_ms"] <= steps["p99_ms"], steps
    for case in ("idle", "busy"):
        r = result[case]
        assert r["status"] in ("ok", "errors") and r["requests"] > 0, (case, r)
        assert 0 < r["p50_ms"] <= r["p99_ms"], (case, r)
        assert _positive(r["events_per_s_taken"]) and _positive(r["cpu_pct_confd"]), (case, r)
    busy = result["busy"]["entry"]
    assert busy["waves"] >= 1 and busy["joined"] == busy["right_flags"] == busy["dialled"]
    abandon = result["abandon"]
    assert len(abandon["rounds"]) == result["settings"]["rounds"]
    for r in abandon["rounds"]:
        assert r["opened"] == result["settings"]["abandon"] and _positive(r["rss_mb"]), r
    # Every session of the abandoned connections ended.
    assert abandon["after"]["active"] == abandon["after"]["sessions"] == 0
    assert set(result["targets"]) == {"all_joined", "step_p99", "rss", "greenlets"}
    for target in result["targets"].values():
        assert target["pass"] in (True, False, None)
    assert result["targets"]["all_joined"]["pass"] is True
    assert "time per step" in proc.stdout and ("PASS" in proc.stdout or "MISS" in proc.stdout)


def _broker_listening(host="127.0.0.1", port=5672):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def test_ws_quick_run_reports_latencies_and_bookkeeping():
    proc, result = _quick_run("ws", timeout=150)
    runs = result["websocket"]
    assert [(r["clients"], r["mode"], r["rate"]) for r in runs] == [
        (1, "all", 1000),
        (50, "all", 1000),
    ]
    for r in runs:
        assert not r["status"].startswith("failed"), r
        assert r["sent"] > 0
        # Every client subscribed to everything: each must get every event sent.
        assert r["expected"] == r["sent"] * r["clients"]
        assert 0 < r["delivered"] <= r["expected"]
        assert r["lost"] == r["expected"] - r["delivered"]
        assert _positive(r["p50_ms"]), r
        if r["p99_ms"] is not None:
            assert r["p99_ms"] >= r["p50_ms"]
        assert _positive(r["cpu_pct"]["confd"]) and _positive(r["cpu_pct"]["clients"])
    assert runs[1]["consumer_procs"] > 1  # 50 clients are spread over processes

    (amqp,) = result["amqp"]
    if _broker_listening():
        assert not amqp["status"].startswith("failed"), amqp
        assert amqp["expected"] == amqp["sent"] > 0
        assert 0 < amqp["delivered"] <= amqp["expected"]
        assert _positive(amqp["p50_ms"])
    else:
        assert "broker unreachable" in amqp["status"], amqp

    # --quick has no 5,000 events/s, 50-client run: the target is not judged.
    assert result["targets"]["ws_p99"]["pass"] is None
    text = proc.stdout
    assert "p99 ms" in text and "n/a" in text


def _server_frame(opcode, payload, fin=True):
    n = len(payload)
    if n < 126:
        head = bytes([0x80 * fin | opcode, n])
    elif n < 65536:
        head = bytes([0x80 * fin | opcode, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 * fin | opcode, 127]) + n.to_bytes(8, "big")
    return head + payload


def test_frame_reader_splits_frames_across_reads_and_joins_fragments():
    small, medium, large = b"x" * 5, b"m" * 300, b"L" * 70000
    data = (
        _server_frame(1, small)
        + _server_frame(1, medium)
        + _server_frame(1, large)
        + _server_frame(1, b"ab", fin=False)
        + _server_frame(9, b"ping")  # a control frame between fragments
        + _server_frame(0, b"cd")
        + _server_frame(8, (1013).to_bytes(2, "big") + b"too slow")
    )
    reader = FrameReader()
    got = []
    for i in range(0, len(data), 7):  # every header and payload cut somewhere
        got.extend(reader.feed(data[i : i + 7]))
    assert got == [
        (1, small),
        (1, medium),
        (1, large),
        (9, b"ping"),
        (1, b"abcd"),
        (8, (1013).to_bytes(2, "big") + b"too slow"),
    ]
    assert reader.feed(b"") == []


def test_frame_reader_refuses_masked_frames():
    reader = FrameReader()
    try:
        reader.feed(bytes([0x81, 0x80 | 1]) + b"\x00\x00\x00\x00a")
    except ValueError:
        return
    raise AssertionError("a masked server frame was accepted")


def test_latency_figures_count_undelivered_events_as_latest():
    delivered = [float(v) for v in range(1, 99)]  # 98 delivered, 2 lost
    figures = latency_figures(delivered, lost=2)
    assert figures["p50_ms"] == 50.0
    assert figures["p90_ms"] == 90.0
    assert figures["p99_ms"] is None and figures["max_ms"] is None
    everything = latency_figures([1.0, 2.0, 3.0, 4.0], lost=0)
    assert everything == {"p50_ms": 2.0, "p90_ms": 4.0, "p99_ms": 4.0, "max_ms": 4.0}
    assert latency_figures([], lost=0) == {}


# --- the websocket clients' frame scanner ----------------------------------------------------

STAMP0 = 1_700_000_000_000_000  # microseconds since 1970: 2023-11-14


def _event_text(data, name="start-talking"):
    """An event as confd frames it for a websocket client."""
    from confd.events.fanout import event_frame_text
    from confd.events.shape import Published

    pub = Published(name, "c" * 32, "m" * 36, "conference.event.%s.%s" % ("c" * 32, "m" * 36), data)
    return event_frame_text("conference.event.*.*", pub).decode("utf-8")


def _member_data(energy, pad=0):
    """A participant event's data; ``energy=...`` leaves current_energy out."""
    data = {"custom_channel_vars": {"pad": "p" * pad}, "energy_level": 100}
    if energy is not ...:
        data["current_energy"] = energy
    data.update(talking=True, speak=True, hear=True)
    return data


def _ws_stream():
    """Server frames from wsproto's encoder, as confd would send them: (the bytes, the offset
    just after the close frame, [(offset just after the frame that completes a stamped event,
    its stamp)]).  Its notice says "too slow", its close code is 1013."""
    from wsproto.frame_protocol import FrameProtocol

    from confd.events.websocket import notice

    fp = FrameProtocol(client=False, extensions=[])
    data = bytearray()
    stamped = []

    def stamped_event(stamp, pad=0):
        data.extend(fp.send_data(_event_text(_member_data(stamp, pad)), fin=True))
        stamped.append((len(data), stamp))

    stamped_event(STAMP0 + 1000)  # about 400 bytes: 16-bit length
    data.extend(fp.send_data(_event_text({"current_energy": 0}, name="x"), fin=True))  # 7-bit
    stamped_event(STAMP0 + 2000, pad=1200)  # the size of a real one
    data.extend(fp.send_data(_event_text(_member_data(...)), fin=True))  # no stamp at all
    data.extend(fp.send_data(_event_text(_member_data(STAMP0 // 10)), fin=True))  # 15 digits
    data.extend(fp.send_data(_event_text(_member_data(str(STAMP0))), fin=True))  # a string
    for energy in (STAMP0 / 1000 + 0.25, STAMP0 + 0.5):  # floats: of 16 characters, 16 digits
        data.extend(fp.send_data(_event_text(_member_data(energy)), fin=True))
    data.extend(fp.send_data(json.dumps({"action": "reply", "status": "success"}), fin=True))
    stamped_event(STAMP0 + 3000, pad=70000)  # 64-bit length
    # A fragmented event, a ping between its fragments: joined, decoded, counted when whole.
    text = _event_text(_member_data(STAMP0 + 4000))
    data.extend(fp.send_data(text[:50], fin=False))
    data.extend(fp.send_data(text[50:300], fin=False))
    data.extend(fp.ping(b"ping"))
    data.extend(fp.send_data(text[300:], fin=True))
    stamped.append((len(data), STAMP0 + 4000))
    data.extend(fp.send_data(notice("too slow", ["conference.event.*.*"]), fin=True))
    stamped_event(STAMP0 + 5000)
    data.extend(fp.close(1013, "too slow"))
    end = len(data)
    data.extend(fp.send_data(_event_text(_member_data(STAMP0 + 6000)), fin=True))  # after close
    return bytes(data), end, stamped


def _scan(pieces):
    """Feed (bytes, t_ns) pieces until the scanner says the connection ended: (the scanner,
    the index of the piece that ended it or None)."""
    from confd_tests.bench.ws import EventScanner

    scanner = EventScanner()
    for i, (piece, t_ns) in enumerate(pieces):
        if not scanner.feed(piece, t_ns):
            return scanner, i
    return scanner, None


def _expected_ms(stamped, cut, t1_ns, t2_ns):
    return [((t1_ns if end <= cut else t2_ns) // 1000 - stamp) / 1000.0 for end, stamp in stamped]


def _check(scanner, ended, stamped, expected_ms):
    assert ended is not None  # the close frame ended the connection
    assert scanner.close_code == 1013
    assert scanner.notice == "too slow"
    assert list(scanner.latencies) == expected_ms
    assert scanner.received == len(stamped) == 5
    # stamp 0, none, 15 digits, a string, 2 floats; not the reply, nothing after the close
    assert scanner.other == 6
    assert scanner.pings == [b"ping"]  # to be answered by the client (pong_frame)


def test_event_scanner_counts_frames_cut_at_every_byte():
    data, close_end, stamped = _ws_stream()
    t1, t2 = (STAMP0 + 9000) * 1000 + 123, (STAMP0 + 17000) * 1000 + 456
    # The big frame's payload: a cut deep inside it is like its neighbours, so only every 997th.
    big_end = stamped[2][0]
    big_start = big_end - 70100
    for cut in range(len(data) + 1):
        if big_start + 200 < cut < big_end - 200 and cut % 997:
            continue
        scanner, ended = _scan([(data[:cut], t1), (data[cut:], t2)])
        _check(scanner, ended, stamped, _expected_ms(stamped, cut, t1, t2))
        assert ended == (0 if cut >= close_end else 1)


def test_event_scanner_takes_one_byte_at_a_time():
    data, close_end, stamped = _ws_stream()
    # Byte i is received at microsecond T + i: an event's latency tells which byte ended it.
    t_us = STAMP0 + 10000
    scanner, ended = _scan((data[i : i + 1], (t_us + i) * 1000) for i in range(len(data)))
    _check(scanner, ended, stamped, [(t_us + end - 1 - stamp) / 1000.0 for end, stamp in stamped])
    assert ended == close_end - 1  # the close frame's last byte ended it


def test_event_scanner_grows_for_a_frame_bigger_than_its_buffer():
    from wsproto.frame_protocol import FrameProtocol

    from confd_tests.bench.ws import READ_CHUNK

    fp = FrameProtocol(client=False, extensions=[])
    text = _event_text(_member_data(STAMP0, pad=3 * READ_CHUNK))
    data = bytes(fp.send_data(text, fin=True) + fp.send_data(text, fin=True))
    scanner, ended = _scan([(data, (STAMP0 + 2500) * 1000)])
    assert ended is None and scanner.received == 2 and list(scanner.latencies) == [2.5, 2.5]
    assert scanner.fill == 0 and scanner.other == 0


def test_event_scanner_refuses_masked_frames():
    from confd_tests.bench.ws import EventScanner

    try:
        EventScanner().feed(bytes([0x81, 0x80 | 1]) + b"\x00\x00\x00\x00a", 0)
    except ValueError:
        return
    raise AssertionError("a masked server frame was accepted")


def test_line_reader_gives_whole_lines_then_none():
    import os

    from confd_tests.loadtools import LineReader

    r, w = os.pipe()
    try:
        lines = LineReader(r)
        assert lines.read() == []  # nothing yet: no blocking
        os.write(w, b"EXPECT [1, 2]\nST")
        assert lines.read() == ["EXPECT [1, 2]"]
        os.write(w, b"OP\nlast")
        os.close(w)
        w = -1
        assert lines.read() == ["STOP"]
        assert lines.read() == ["last", None]
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_profile_top_counts_own_and_inclusive_samples_without_line_numbers(tmp_path):
    from confd_tests.loadtools import profile_top

    stacks = tmp_path / "confd.txt"
    stacks.write_text(
        "run (a.py:10);dispatch (f.py:20);send (f.py:30) 6\n"
        "run (a.py:11);dispatch (f.py:21) 3\n"
        "run (a.py:10);parse (p.py:5) 1\n"
        "garbage line\n"
    )
    total, own, incl = profile_top(stacks, n=2)
    assert total == 10
    assert own == [("send (f.py)", 6), ("dispatch (f.py)", 3)]
    assert incl == [("run (a.py)", 10), ("dispatch (f.py)", 9)]


def test_pong_frame_is_a_masked_pong_with_the_pings_payload():
    from wsproto.frame_protocol import FrameProtocol, Opcode

    from confd_tests.loadtools import pong_frame

    server = FrameProtocol(client=False, extensions=[])
    server.receive_bytes(pong_frame(b"confd"))
    (frame,) = list(server.received_frames())  # wsproto refuses an unmasked client frame
    assert frame.opcode == Opcode.PONG and frame.payload == b"confd"


# --- cluster ------------------------------------------------------------------------------------


def test_cluster_quick_run_reports_every_figure():
    """Needs the machine's PostgreSQL (CONFD_TEST_DATABASE_URL) and RabbitMQ, as the cluster
    tests do; the subprocess inherits them."""
    import os

    assert os.environ.get("CONFD_TEST_DATABASE_URL"), "CONFD_TEST_DATABASE_URL must be set"
    proc, result = _quick_run("cluster", timeout=600)
    assert result["status"] == "ok", result["status"]
    s = result["settings"]
    # Any instance answers anything: every GET and every action answered right on both routes.
    for part, count in (("get", s["requests"]), ("action", s["actions"])):
        r = result[part]
        assert r["owner_instance"] != r["non_owner_instance"], r
        for route in ("owner", "non_owner"):
            x = r[route]
            assert x["errors"] == 0 and x["count"] == count, (part, route, x)
            assert 0 < x["p50_ms"] <= x["p99_ms"] <= x["max_ms"], (part, route, x)
    # Every kill ended with the dead owner's nodes resynced on a survivor.
    fo = result["failover"]
    assert len(fo["rounds"]) == s["kills"] and fo["failed"] == 0, fo
    for r in fo["rounds"]:
        assert r["nodes"] and 0 < r["owned_s"] <= r["resynced_s"], r
        assert set(r["taken_by"]) == set(r["nodes"]) and r["killed"] not in r["taken_by"].values()
    # 1, 2, 3 instances shared the nodes: each owned some and took events in.
    phases = result["intake"]["phases"]
    # ... and one instance again at a third of the rate: the control at equal events/s each.
    assert [(p["instances"], p["control"]) for p in phases] == [
        (1, False),
        (1, True),
        (2, False),
        (3, False),
    ]
    for p in phases:
        assert sum(x["nodes"] for x in p["per_instance"]) == s["nodes"], p
        assert all(x["nodes"] > 0 and x["events"] > 0 for x in p["per_instance"]), p
        assert p["total_events"] == sum(x["events"] for x in p["per_instance"]) > 0
    assert set(result["goals"]) == {
        "get_p99",
        "failover_p99",
        "intake_flat",
        "intake_flat_same_rate",
    }
    for goal in result["goals"].values():
        assert goal["pass"] in (True, False, None)
    text = proc.stdout
    assert "p99 ms" in text and "us/event" in text and "machine:" in text

"""The soak's verdicts, as pure functions of what was measured (unit-tested on their own)."""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

# RSS plateau: the peak of the last third of the run may pass the peak of the middle third by
# at most this much (the first third is warm-up: buffers, caches and the allocator settle).
PLATEAU_ABS_MB = 10.0
PLATEAU_REL = 0.10

# confd's log format (confd/cli.py LOG_FORMAT): "<asctime> <LEVEL> <logger>: <message>".
_LEVEL_RE = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
MAX_LINES = 10


def plateau(samples: Sequence[Tuple[float, float]]) -> Dict[str, Any]:
    """RSS figures and the plateau verdict from ``(seconds since start, MB)`` samples.

    ``ok`` is None when there are too few samples to split the run in thirds."""
    if not samples:
        return {"samples": 0, "ok": None}
    t0, t1 = samples[0][0], samples[-1][0]
    span = max(t1 - t0, 1e-9)
    mid = [mb for t, mb in samples if span / 3 <= t - t0 < 2 * span / 3]
    last = [mb for t, mb in samples if t - t0 >= 2 * span / 3]
    out: Dict[str, Any] = {
        "samples": len(samples),
        "start_mb": samples[0][1],
        "peak_mb": max(mb for _, mb in samples),
        "end_mb": samples[-1][1],
        "mid_third_max_mb": max(mid) if mid else None,
        "last_third_max_mb": max(last) if last else None,
        "ok": None,
    }
    if mid and last:
        growth = max(last) - max(mid)
        allowed = max(PLATEAU_ABS_MB, PLATEAU_REL * max(mid))
        out.update(growth_mb=growth, allowed_mb=allowed, ok=growth <= allowed)
    return out


def scan_log(lines: Iterable[str]) -> Dict[str, Any]:
    """Error lines (level ERROR or CRITICAL, or a traceback) and warning lines of confd's log."""
    errors: List[str] = []
    warnings: List[str] = []
    n_err = n_warn = 0
    for line in lines:
        m = _LEVEL_RE.match(line)
        level = m.group(1) if m else None
        if level in ("ERROR", "CRITICAL") or line.startswith("Traceback"):
            n_err += 1
            if len(errors) < MAX_LINES:
                errors.append(line.rstrip()[:300])
        elif level == "WARNING":
            n_warn += 1
            if len(warnings) < MAX_LINES:
                warnings.append(line.rstrip()[:300])
    return {"errors": n_err, "error_lines": errors, "warnings": n_warn, "warning_lines": warnings}


# --- drift ------------------------------------------------------------------------------------

Member = Tuple[int, str, bool, bool, bool, bool, bool, int]
MEMBER_FIELDS = (
    "participant_id",
    "call_id",
    "speak",
    "hear",
    "talking",
    "floor",
    "is_moderator",
    "energy_level",
)


def model_members(conference: Dict[str, Any]) -> Dict[int, Member]:
    """One conference of a node's ``json_list`` as comparable tuples, by member id."""
    out: Dict[int, Member] = {}
    for m in conference.get("members", []):
        f = m["flags"]
        out[int(m["id"])] = (
            int(m["id"]),
            m["uuid"],
            bool(f["can_speak"]),
            bool(f["can_hear"]),
            bool(f["talking"]),
            bool(f["has_floor"]),
            bool(f["is_moderator"]),
            int(m["energy"]),
        )
    return out


def confd_members(participants: Iterable[Dict[str, Any]]) -> Dict[int, Member]:
    """confd's participants (api.md's participant objects) as the same tuples."""
    out: Dict[int, Member] = {}
    for p in participants:
        key = int(p["participant_id"])
        out[key] = (
            key,
            p["call_id"],
            bool(p["speak"]),
            bool(p["hear"]),
            bool(p["talking"]),
            bool(p["floor"]),
            bool(p["is_moderator"]),
            int(p["energy_level"]),
        )
    return out


def _diff_member(a: Member, b: Member) -> str:
    return ", ".join(
        "%s model=%r confd=%r" % (name, x, y) for name, x, y in zip(MEMBER_FIELDS, a, b) if x != y
    )


def drift(
    dump: Dict[str, Dict[str, Any]],
    conferences: Dict[str, Optional[List[Dict[str, Any]]]],
    health: Dict[str, Dict[str, Any]],
) -> Dict[str, Any]:
    """Differences between the nodes' models and confd's view.

    ``dump``: node name -> {"hostname", "json_list"} (the nodes' own state);
    ``conferences``: conference id -> confd's participants of it (None: confd does not know it
    as running); ``health``: node name -> /v2/health's entry for it.  Every difference is one
    unit of drift: a conference missing or extra, a participant missing, extra or with a field
    that differs, a node whose counts differ, a participant on the wrong switch."""
    problems: List[str] = []
    seen = set()
    for node, d in sorted(dump.items()):
        confs = d["json_list"]
        want_participants = sum(len(c.get("members", [])) for c in confs)
        h = health.get(node)
        if h is None:
            problems.append("node %s: not in /v2/health" % node)
        else:
            if not h.get("connected"):
                problems.append("node %s: not connected" % node)
            got = (h.get("conferences"), h.get("participants"))
            if got != (len(confs), want_participants):
                problems.append(
                    "node %s: confd counts %d conferences / %d participants, the node %d / %d"
                    % (node, got[0] or 0, got[1] or 0, len(confs), want_participants)
                )
        for conf in confs:
            name = conf["conference_name"]
            seen.add(name)
            if name not in conferences:
                continue  # not one of the soak's documents: the node counts above cover it
            got_list = conferences[name]
            if got_list is None:
                problems.append("conference %s (node %s): not running in confd" % (name, node))
                continue
            want = model_members(conf)
            got_members = confd_members(got_list)
            for mid in sorted(set(want) | set(got_members)):
                if mid not in got_members:
                    problems.append("%s/%d: missing in confd" % (name, mid))
                elif mid not in want:
                    problems.append("%s/%d: in confd, gone from node %s" % (name, mid, node))
                elif want[mid] != got_members[mid]:
                    problems.append(
                        "%s/%d: %s" % (name, mid, _diff_member(want[mid], got_members[mid]))
                    )
            hostnames = {p.get("switch_hostname") for p in got_list}
            if hostnames - {d["hostname"]}:
                problems.append(
                    "conference %s: switch_hostname %s, node %s is %s"
                    % (name, sorted(hostnames), node, d["hostname"])
                )
    for name, got_list in sorted(conferences.items()):
        if name not in seen and got_list:
            problems.append("conference %s: running in confd, on no node" % name)
    return {"drift": len(problems), "problems": problems[:MAX_LINES]}

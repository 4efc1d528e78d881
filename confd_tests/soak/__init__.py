"""Load and soak: ``python -m confd_tests.soak --minutes 10``.

Ten fake FreeSWITCH nodes (``FakeFreeSwitch`` around the stateful ``ConferenceModel``, in
processes of their own) host 2,000 participants in 200 conferences whose names are the ids of
conference documents of the soak account; they send start/stop-talking at up to 5,000 events
per second in all, plus a trickle of joins, leaves and mutes.  A real confd (``python -m confd
run``, temp config and SQLite) takes it all in; 50 websocket clients subscribed with
``conference.event.*.*`` count what they get, and a REST load of 200 requests per second reads
lists, conferences and participants and mutes/unmutes.  After N minutes the load pauses, the
tail drains, and confd's view is compared, participant by participant, with every node's own
``json_list``.

Modules: ``run`` (the conductor and the report), ``nodes``, ``clients``, ``restload`` (the child
processes), ``checks`` (pure verdicts: RSS plateau, log scan, drift), ``proto`` (the parent/child
line protocol).  Exit status 0 only when there was no error, no drift and RSS plateaued; the last
line of the output is the JSON summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]


def table(headers: Sequence[str], rows: List[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Plain aligned text: columns in ``right`` are right-aligned (numbers)."""
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)

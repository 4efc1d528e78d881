"""Benchmarks: ``python -m confd_tests.bench SUBCOMMAND``.

Each subcommand lives in its own module, listed in ``SUBCOMMANDS``, and provides:

* ``DESCRIPTION`` (one line),
* ``add_arguments(parser)``, which must accept ``--events N`` and ``--quick`` (``all`` passes
  those two on to every subcommand),
* ``run(args, out) -> dict``: measures, writes its figures as plain aligned text to ``out`` and
  returns them as JSON-able values; ``__main__`` prints them as the final JSON line.

Speed goals live in the printed figures only; the smoke tests check that a run completes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]

# name -> module; ``rest`` and ``ws`` are added here by their authors.
SUBCOMMANDS: Dict[str, str] = {
    "intake": "confd_tests.bench.intake",
    "rest": "confd_tests.bench.rest",
    "ws": "confd_tests.bench.ws",
    "entry": "confd_tests.bench.entry",
}


def settings(args: Any, defaults: Mapping[str, Any], quick: Mapping[str, Any]) -> Dict[str, Any]:
    """A benchmark's settings: ``quick`` or ``defaults`` (``--quick``), each overridden by
    the command-line option of the same name when it is given."""
    base = dict(quick if args.quick else defaults)
    for key in base:
        value = getattr(args, key, None)
        if value is not None:
            base[key] = value
    return base


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, -(-len(sorted_values) * pct // 100))  # ceil(n * pct / 100)
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


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

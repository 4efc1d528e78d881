"""``python -m confd_tests.bench {intake,...,cluster,all} [--events N] [--quick]``.

Figures go to stdout as aligned text; the last line is one JSON object with the same figures,
for machines (``{"bench": NAME, ...}``; for ``all``: ``{"bench": "all", "results": {...}}``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import List, Optional

from confd_tests.bench import SUBCOMMANDS

# Run by name only, not by ``all``: it needs PostgreSQL and RabbitMQ and takes minutes.
BY_NAME_ONLY = {"cluster": "confd_tests.bench.cluster"}


def _parser(name: str, module) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m confd_tests.bench %s" % name)
    module.add_arguments(ap)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = dict(SUBCOMMANDS, **BY_NAME_ONLY)
    names = list(commands) + ["all"]
    if not argv or argv[0] not in names:
        sys.stderr.write(
            "usage: python -m confd_tests.bench {%s} [--events N] [--quick] [options]\n"
            % ",".join(names)
        )
        for name, path in commands.items():
            sys.stderr.write("  %-8s %s\n" % (name, importlib.import_module(path).DESCRIPTION))
        return 2
    name, rest = argv[0], argv[1:]
    out = sys.stdout
    if name != "all":
        module = importlib.import_module(commands[name])
        results = module.run(_parser(name, module).parse_args(rest), out)
        out.write(json.dumps({"bench": name, **results}) + "\n")
        return 0
    common = argparse.ArgumentParser(prog="python -m confd_tests.bench all")
    common.add_argument("--events", type=int)
    common.add_argument("--quick", action="store_true")
    opts = common.parse_args(rest)
    passed = (["--quick"] if opts.quick else []) + (
        ["--events", str(opts.events)] if opts.events else []
    )
    combined = {}
    for sub, path in SUBCOMMANDS.items():
        module = importlib.import_module(path)
        out.write("=== %s ===\n" % sub)
        combined[sub] = module.run(_parser(sub, module).parse_args(passed), out)
        out.write("\n")
    out.write(json.dumps({"bench": "all", "results": combined}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

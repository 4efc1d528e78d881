"""``python -m confd_tests.soak [--minutes N] [options]`` runs the soak (see ``run``);
``python -m confd_tests.soak {nodes,clients,rest} ...`` are its child processes."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

CHILDREN = {
    "nodes": "confd_tests.soak.nodes",
    "clients": "confd_tests.soak.clients",
    "rest": "confd_tests.soak.restload",
}


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in CHILDREN:
        return importlib.import_module(CHILDREN[argv[0]]).main(argv[1:])
    from confd_tests.soak import run

    ap = argparse.ArgumentParser(prog="python -m confd_tests.soak", description=run.__doc__)
    run.add_arguments(ap)
    args = ap.parse_args(argv)
    return run.run(args, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())

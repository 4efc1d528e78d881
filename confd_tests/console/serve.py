"""``python -m confd_tests.console.serve run``: the ``confd`` command line with the operator
console's blueprint handed to the app factory, for as long as ``confd.daemon`` does not wire
it itself (then this adds nothing and is plain ``confd run``)."""

from __future__ import annotations

import sys

from gevent import monkey

monkey.patch_all()  # first, as confd.cli.main does for `run`

import confd.http.app as app_module  # noqa: E402
from confd import console  # noqa: E402
from confd.cli import main  # noqa: E402

_create_app = app_module.create_app


def create_app(ctx, blueprints=None, cors_origins=()):  # type: ignore[no-untyped-def]
    blueprints = list(blueprints or [])
    if not any(getattr(bp, "name", None) == "console" for bp in blueprints):
        blueprints.append(console.blueprint())
    return _create_app(ctx, blueprints, cors_origins)


app_module.create_app = create_app

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

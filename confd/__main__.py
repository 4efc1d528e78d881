"""``python -m confd``: the same as the ``confd`` console script."""

from confd.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

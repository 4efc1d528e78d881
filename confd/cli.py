"""The ``confd`` command line: ``run`` (default), ``check-config``, ``demo``, ``accounts``.

Each subcommand is registered by one ``_register_*`` function listed in ``_REGISTRARS``; it adds
its subparser (``_add_command`` gives it ``--config``) and names its handler.  A handler is
``handler(args, cfg) -> exit status`` and receives the loaded, validated config.  A command
group with its own sub-subcommands (``accounts create|list|rotate-key``) registers the same
way: a nested ``add_subparsers()`` on its parser and ``_add_command`` for each leaf.

This module imports nothing heavy at import time: gevent must monkey-patch the standard
library before the daemon's modules are imported, and that happens in ``main()`` for the
commands that run the daemon (``run``, ``demo``) only.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Callable, Dict, Optional, Sequence, TextIO

from confd import __version__

if TYPE_CHECKING:  # pragma: no cover - typing only
    import logging

    from confd.config import Config

PROG = "confd"
EXIT_OK = 0
EXIT_CONFIG_ERROR = 2  # also argparse's status for a usage error
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

DEFAULT_COMMAND = "run"
# Commands that run the gevent daemon and so need the standard library monkey-patched.
GEVENT_COMMANDS = frozenset(("run", "demo"))

Handler = Callable[[argparse.Namespace, "Config"], int]


# ---------------------------------------------------------------------------------------------
# Handlers


def _log_start(args: argparse.Namespace) -> None:
    import logging

    logging.getLogger(__name__).info(
        "confd %s: %s, config from %s",
        __version__,
        args.command or DEFAULT_COMMAND,
        args.config_path or "built-in defaults",
    )


def _cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    configure_logging(cfg.log.level)
    _log_start(args)
    from confd.daemon import run_daemon

    return run_daemon(cfg)


def _cmd_check_config(args: argparse.Namespace, cfg: Config) -> int:
    import yaml

    from confd.config import config_to_dict

    source = args.config_path or "built-in defaults"
    sys.stdout.write(f"# confd {__version__}: effective configuration from {source}\n")
    sys.stdout.write("# (environment overrides applied, secrets masked)\n")
    sys.stdout.write(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace, cfg: Config) -> int:
    configure_logging(cfg.log.level)
    _log_start(args)
    from confd.simulator.demo import run_demo

    return run_demo(cfg, port=args.port)


# --- accounts (operations.md: create and list print JSON, rotate-key the new key) ---------------

EXIT_ACCOUNTS_ERROR = 1  # unknown account, database unreachable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from confd.store import Store


def _open_store(cfg: Config) -> Store:
    from confd.store import Store

    return Store.from_url(cfg.database.url)


def _print_json(value: object) -> None:
    import json

    sys.stdout.write(json.dumps(value) + "\n")


def _accounts_command(run: Callable[[argparse.Namespace, Store], object]) -> Handler:
    """Wrap an accounts action: open the store, print its JSON, map store errors to exits."""

    def handler(args: argparse.Namespace, cfg: Config) -> int:
        from confd.store import NotFound, StoreError

        try:
            store = _open_store(cfg)
        except (StoreError, ValueError) as exc:
            sys.stderr.write(f"{PROG}: cannot open the database: {exc}\n")
            return EXIT_ACCOUNTS_ERROR
        try:
            result = run(args, store)
            if isinstance(result, str):
                sys.stdout.write(result + "\n")  # rotate-key: the bare new key
            else:
                _print_json(result)
        except NotFound as exc:
            sys.stderr.write(f"{PROG}: no such account: {exc.cause}\n")
            return EXIT_ACCOUNTS_ERROR
        except ValueError as exc:
            sys.stderr.write(f"{PROG}: {exc}\n")
            return EXIT_CONFIG_ERROR
        except StoreError as exc:
            sys.stderr.write(f"{PROG}: {exc}\n")
            return EXIT_ACCOUNTS_ERROR
        finally:
            store.close()
        return EXIT_OK

    return handler


def _accounts_create(args: argparse.Namespace, store: Store) -> object:
    account, api_key = store.accounts.create_account(args.name, admin=args.admin)
    return {
        "id": account["id"],
        "name": account["name"],
        "api_key": api_key,
        "admin": account["admin"],
    }


def _accounts_list(args: argparse.Namespace, store: Store) -> object:
    return store.accounts.list_accounts()


def _accounts_rotate_key(args: argparse.Namespace, store: Store) -> object:
    # operations.md: "prints a new api key" -- the key alone, so a script can take it as is.
    return store.accounts.rotate_key(args.account_id)


# ---------------------------------------------------------------------------------------------
# Parser


def add_config_option(parser: argparse.ArgumentParser, top_level: bool = False) -> None:
    """``--config PATH``.  On subcommands the default is SUPPRESS so that a ``--config`` given
    before the subcommand is not overwritten by the subcommand's default."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None if top_level else argparse.SUPPRESS,
        help="config file (default: $CONFD_CONFIG, else /etc/confd/confd.yml if it exists, "
        "else built-in defaults)",
    )


def _add_command(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    handler: Handler,
    help_text: str,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    add_config_option(parser)
    parser.set_defaults(handler=handler)
    return parser


def _register_run(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _add_command(subparsers, "run", _cmd_run, "run the daemon in the foreground (the default)")


def _register_check_config(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    _add_command(
        subparsers,
        "check-config",
        _cmd_check_config,
        "validate the config and print the effective config (secrets masked)",
    )


def _register_demo(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = _add_command(
        subparsers,
        "demo",
        _cmd_demo,
        "run the daemon against a built-in simulated FreeSWITCH node",
    )
    parser.add_argument("--port", type=int, default=None, metavar="N", help="HTTP port")


def _register_accounts(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = subparsers.add_parser(
        "accounts",
        help="manage API accounts (create, list, rotate-key)",
        description="Manage API accounts in the database named by the config's database.url.",
    )
    add_config_option(group)
    leaves = group.add_subparsers(dest="accounts_command", metavar="SUBCOMMAND")
    create = _add_command(
        leaves,
        "create",
        _accounts_command(_accounts_create),
        "create an account; prints its id and api key (shown only this once) as JSON",
    )
    create.add_argument("--name", required=True, help="account name")
    create.add_argument("--admin", action="store_true", help="its tokens work for every account")
    _add_command(
        leaves, "list", _accounts_command(_accounts_list), "print the accounts as JSON (no keys)"
    )
    rotate = _add_command(
        leaves,
        "rotate-key",
        _accounts_command(_accounts_rotate_key),
        "give the account a new api key (printed as JSON); the old key and its tokens stop working",
    )
    rotate.add_argument("account_id", metavar="ACCOUNT_ID")


_REGISTRARS: Sequence[Callable[[argparse._SubParsersAction], None]] = (  # type: ignore[type-arg]
    _register_run,
    _register_check_config,
    _register_demo,
    _register_accounts,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="REST and websocket control of live FreeSWITCH conferences."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    add_config_option(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _REGISTRARS:
        register(subparsers)
    return parser


# ---------------------------------------------------------------------------------------------
# Entry point


def configure_logging(
    level: str, stream: Optional[TextIO] = None, root: Optional[logging.Logger] = None
) -> logging.Handler:
    """Log to stderr (systemd's journal picks it up) at ``level``; returns the handler."""
    import logging

    root = root if root is not None else logging.getLogger()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


# The handler of a command given without its subparser (plain ``confd`` = ``confd run``).
_HANDLERS_BY_NAME: Dict[str, Handler] = {DEFAULT_COMMAND: _cmd_run}


def _patch_gevent() -> None:
    from gevent import monkey

    monkey.patch_all()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG_ERROR
    command = args.command or DEFAULT_COMMAND
    if command in GEVENT_COMMANDS:
        # Before anything imports the daemon's modules (sockets, threads, queues).
        _patch_gevent()
    handler: Optional[Handler] = getattr(args, "handler", None) or _HANDLERS_BY_NAME.get(command)
    if handler is None:  # a command group given without one of its subcommands
        parser.print_usage(sys.stderr)
        sys.stderr.write(f"{PROG}: {command}: a subcommand is required\n")
        return EXIT_CONFIG_ERROR

    from confd.config import ConfigError, load_config, resolve_config_path

    try:
        args.config_path = resolve_config_path(args.config, os.environ)
        cfg = load_config(args.config_path, os.environ)
    except ConfigError as exc:
        where = f"{exc.source}: " if exc.source and exc.source != exc.key else ""
        sys.stderr.write(f"{PROG}: {where}{exc}\n")
        return EXIT_CONFIG_ERROR
    return handler(args, cfg)

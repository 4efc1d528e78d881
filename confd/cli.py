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
    from confd.store import Store

PROG = "confd"
EXIT_OK = 0
# A config error, a usage error (argparse's status too), and a database or an address named by
# the config (or an option) that cannot be used: the operator has something to fix.
EXIT_CONFIG_ERROR = 2
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

DEFAULT_COMMAND = "run"
# Commands that run the gevent daemon and so need the standard library monkey-patched.
GEVENT_COMMANDS = frozenset(("run", "demo"))

Handler = Callable[[argparse.Namespace, "Config"], int]


class CannotStart(Exception):
    """What the config (or an option) names cannot be used, e.g. the database cannot be
    opened: ``main`` prints the message and exits EXIT_CONFIG_ERROR, without a traceback."""


def _one_line(exc: BaseException) -> str:
    """An exception as one line of text (libpq's messages span several)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _open_store(cfg: Config) -> Store:
    """The config's database, opened and with its schema in place, or ``CannotStart``."""
    from confd.config import config_to_dict
    from confd.store import Store

    try:
        return Store.from_url(cfg.database.url)
    except Exception as exc:  # noqa: BLE001 - whatever the reason, the operator must act
        shown = config_to_dict(cfg)["database"]["url"]  # its password masked
        raise CannotStart(f"cannot open the database {shown}: {_one_line(exc)}") from None


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
    store = _open_store(cfg)
    from confd.daemon import run_daemon

    return run_daemon(cfg, store=store)


def _cmd_check_config(args: argparse.Namespace, cfg: Config) -> int:
    import yaml

    from confd.config import config_to_dict

    source = args.config_path or "built-in defaults"
    sys.stdout.write(f"# confd {__version__}: effective configuration from {source}\n")
    sys.stdout.write("# (environment overrides applied, secrets masked)\n")
    sys.stdout.write(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace, cfg: Config) -> int:
    import dataclasses

    from confd.config import ConfigError, DatabaseConfig

    configure_logging(cfg.log.level)
    _log_start(args)
    from confd.simulator.demo import run_demo

    # The demo's own database unless --database names one: never the configured one, which
    # on a production host is the daemon's (a demo account there is a live api key).
    url = args.database if args.database is not None else DEMO_DATABASE_URL
    try:
        database = DatabaseConfig(url=url)
    except ConfigError as exc:
        raise ConfigError("--database", exc.reason) from None
    cfg = dataclasses.replace(cfg, database=database)
    return run_demo(cfg, _open_store(cfg), port=args.port)


# --- accounts (operations.md: create and list print JSON, rotate-key the new key) ---------------

EXIT_NO_SUCH_ACCOUNT = 1


def _print_json(value: object) -> None:
    import json

    sys.stdout.write(json.dumps(value) + "\n")


def _accounts_command(run: Callable[[argparse.Namespace, Store], object]) -> Handler:
    """Wrap an accounts action: open the store, print its JSON, map store errors to exits."""

    def handler(args: argparse.Namespace, cfg: Config) -> int:
        from confd.store import NotFound, StoreError

        store = _open_store(cfg)
        try:
            result = run(args, store)
            if isinstance(result, str):
                sys.stdout.write(result + "\n")  # rotate-key: the bare new key
            else:
                _print_json(result)
        except NotFound as exc:
            sys.stderr.write(f"{PROG}: no such account: {exc.cause}\n")
            return EXIT_NO_SUCH_ACCOUNT
        except ValueError as exc:
            sys.stderr.write(f"{PROG}: {exc}\n")
            return EXIT_CONFIG_ERROR
        except StoreError as exc:  # opened, then unusable: read-only, locked, gone
            sys.stderr.write(f"{PROG}: the database: {_one_line(exc)}\n")
            return EXIT_CONFIG_ERROR
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


# ``confd demo``'s own database, relative to the working directory as the daemon's default.
DEMO_DATABASE_URL = "sqlite:///confd-demo/demo.db"


def _port_number(text: str) -> int:
    """``--port``: a TCP port, 0 for any free one (argparse reports the error, exit 2)."""
    value = int(text) if text.isdigit() and len(text) <= 5 else -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {text!r}")
    return value


def _register_demo(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = _add_command(
        subparsers,
        "demo",
        _cmd_demo,
        "run the daemon against a built-in simulated FreeSWITCH node",
    )
    parser.add_argument("--port", type=_port_number, default=None, metavar="N", help="HTTP port")
    parser.add_argument(
        "--database",
        metavar="URL",
        default=None,
        help="database for the demo account (default: %s, never the configured one)"
        % DEMO_DATABASE_URL,
    )


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
        return handler(args, cfg)
    except ConfigError as exc:  # the file, the environment, or an option such as --database
        where = f"{exc.source}: " if exc.source and exc.source != exc.key else ""
        sys.stderr.write(f"{PROG}: {where}{exc}\n")
        return EXIT_CONFIG_ERROR
    except CannotStart as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return EXIT_CONFIG_ERROR

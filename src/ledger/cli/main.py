"""The `ledger` command: the top parser and `main`. Each command group declares its commands in a module of its
own (`add_commands`); with api/app.py, this package is where things are wired together."""

from __future__ import annotations

import argparse
import getpass
import importlib.metadata
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

import psycopg
from eventsourcing.persistence import PersistenceError

from ledger.aggregates.errors import LedgerError
from ledger.cli import (
    accounts,
    audit,
    bulk,
    db,
    finance,
    imports,
    keys,
    orders,
    privacy,
    projections,
    serve,
    sync,
)
from ledger.cli.common import (
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Handler,
    SettingsHandler,
    UsageError,
    open_ledger,
    print_json,
)
from ledger.cli.examples import example_of
from ledger.config import ConfigError, Settings
from ledger.eventstore.database import DatabaseUnavailableError
from ledger.eventstore.migrations import MigrationError


class Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are raised (UsageError), so `main` reports them, as JSON under --json."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def common_options(*, defaults: bool) -> argparse.ArgumentParser:
    """`--json` and `--actor`, on the top parser (with their defaults) and on every subcommand (without: given
    after the subcommand they win, left out there the value given before it, or the default, stands)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=False if defaults else argparse.SUPPRESS,
        help="print JSON instead of text (errors too: on standard output, with the exit code)",
    )
    common.add_argument(
        "--actor",
        default=f"cli:{_user()}" if defaults else argparse.SUPPRESS,
        help="who is acting, recorded on every event (default: cli:<your user name>)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ledger",
        description="Event-sourced order ledger for multi-marketplace sellers. "
        "Without a command: start (or reach) the database and show its status.",
        epilog=example_of("ledger"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common_options(defaults=True)],
    )
    parser.add_argument(
        "--version", action="version", version=f"ledger {_version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = common_options(defaults=False)

    def command(parent: Any, name: str, handler: Handler | None, help_text: str) -> argparse.ArgumentParser:
        prog = f"{parent._prog_prefix} {name}"  # argparse keeps the command path only there
        p: argparse.ArgumentParser = parent.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=example_of(prog),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )
        if handler is not None:
            p.set_defaults(handler=handler)
        return p

    # In the order `ledger --help` lists them.
    for group in (
        serve,
        projections,
        db,
        accounts,
        keys,
        imports,
        orders,
        audit,
        privacy,
        finance,
        bulk,
        sync,
    ):
        group.add_commands(sub, command)
    # The sandbox marketplaces: a development tool outside the product's import graph, loaded here only.
    from ledger_sandbox import cli as sandbox_cli  # noqa: PLC0415

    sandbox_cli.add_command(
        sub,
        epilog=example_of("ledger sandbox"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("ledger")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    argv = sys.argv[1:] if argv is None else list(argv)
    as_json = "--json" in argv  # known before parsing, so that a usage error is JSON too
    try:
        args = build_parser().parse_args(argv)
        as_json = args.json
        return _run(args, out)
    except LedgerError as e:
        return _fail(out, as_json, EXIT_FAILED, e.code, e.message)
    except UsageError as e:
        return _fail(out, as_json, EXIT_USAGE, "usage", str(e))
    except ConfigError as e:
        return _fail(out, as_json, EXIT_UNAVAILABLE, "configuration", str(e))
    except (DatabaseUnavailableError, MigrationError) as e:
        return _fail(out, as_json, EXIT_UNAVAILABLE, "database-unavailable", str(e))
    except (PersistenceError, psycopg.OperationalError) as e:
        return _fail(
            out, as_json, EXIT_UNAVAILABLE, "database-unavailable", f"the database is unavailable: {e}"
        )
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader (e.g. `| head`) went away: nothing left to say
        sys.stderr.close()
        return 0


def _run(args: argparse.Namespace, out: TextIO) -> int:
    settings = Settings.from_env()
    settings_handler: SettingsHandler | None = getattr(args, "settings_handler", None)
    if settings_handler is not None:
        return int(settings_handler(args, settings, out))
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        return db.cmd_status(args, settings, out)
    with open_ledger(settings) as app:
        return handler(args, app, out)


def _fail(out: TextIO, as_json: bool, exit_code: int, code: str, message: str) -> int:
    """Report an error: one line on standard error, or under --json an object on standard output."""
    if as_json:
        print_json({"error": {"code": code, "message": message}, "exit_code": exit_code}, out)
    else:
        print(
            f"ledger: {code}: {message}" if exit_code == EXIT_FAILED else f"ledger: {message}",
            file=sys.stderr,
        )
    return exit_code

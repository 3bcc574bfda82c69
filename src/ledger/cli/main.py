"""The `ledger` command: the top parser and `main`. Each command group declares its commands in a module of its
own (`add_commands`); with api/app.py, this package is where things are wired together."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from typing import Any, TextIO

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
)
from ledger.config import ConfigError, Settings
from ledger.eventstore.database import DatabaseUnavailableError
from ledger.eventstore.migrations import MigrationError


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    common.add_argument("--actor", default=f"cli:{_user()}", help="who is acting (recorded on every event)")

    parser = argparse.ArgumentParser(
        prog="ledger",
        description="Event-sourced order ledger for multi-marketplace sellers. "
        "Without a command: start (or reach) the database and show its status.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(parent: Any, name: str, handler: Handler | None, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=help_text, parents=[common]
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

    sandbox_cli.add_command(sub)
    return parser


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        settings_handler: SettingsHandler | None = getattr(args, "settings_handler", None)
        if settings_handler is not None:
            return int(settings_handler(args, settings, out))
        handler: Handler | None = getattr(args, "handler", None)
        if handler is None:
            return db.cmd_status(args, settings, out)
        with open_ledger(settings) as app:
            return handler(args, app, out)
    except LedgerError as e:
        print(f"ledger: {e.code}: {e.message}", file=sys.stderr)
        return EXIT_FAILED
    except UsageError as e:
        print(f"ledger: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, DatabaseUnavailableError, MigrationError) as e:
        print(f"ledger: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (PersistenceError, psycopg.OperationalError) as e:
        print(f"ledger: the database is unavailable: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader (e.g. `| head`) went away: nothing left to say
        sys.stderr.close()
        return 0

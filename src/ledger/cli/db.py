"""`ledger` without a command, and `ledger db status`: where the ledger keeps its data, and what to do next."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from ledger.application.ledger import Ledger
from ledger.cli.common import Command, print_json
from ledger.config import Settings
from ledger.eventstore.database import check_connection, open_database


def cmd_status(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """The default action: where the ledger keeps its data, and what to do next."""
    with open_database(settings) as target:
        Ledger(env=target.eventsourcing_env()).close()  # creates the tables on a first run
        info = check_connection(target)
    if args.json:
        print_json(info, out)
        return 0
    where = (
        "embedded PostgreSQL in " + str(settings.embedded_pgdata)
        if not settings.database_url
        else "configured server"
    )
    out.write(
        f"ledger is ready: {where}\n"
        f"  server   {info.version.split(' on ')[0]} at {info.url}\n"
        f"  schema   {info.schema} (events table {info.events_table}: "
        f"{'present' if info.has_events_table else 'missing'})\n\n"
        "Next steps:\n"
        "  ledger accounts add --seller SELLER --marketplace amazon --name main\n"
        "  ledger import orders.json\n"
        "  ledger orders show ORDER_ID\n"
        "  ledger --help\n"
    )
    return 0


def add_commands(sub: Any, command: Command) -> None:
    """`db status`."""
    db = command(sub, "db", None, "the PostgreSQL the ledger uses")
    db_sub = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    command(db_sub, "status", None, "where the data lives, server version, tables").set_defaults(
        settings_handler=cmd_status
    )

"""`ledger` without a command, `ledger db status` and `ledger db migrate`: where the ledger keeps its data, the
schema's version, and what to do next."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

import msgspec

from ledger.application.ledger import Ledger
from ledger.cli.common import Command, print_json
from ledger.config import Settings
from ledger.eventstore import migrations
from ledger.eventstore.database import ServerInfo, check_connection, open_database


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
        f"ledger is ready: {where}\n{_server_lines(info)}\n"
        "Next steps:\n"
        "  ledger accounts add --seller SELLER --marketplace amazon --name main\n"
        "  ledger import orders.json\n"
        "  ledger orders show ORDER_ID\n"
        "  ledger --help\n"
    )
    return 0


def cmd_db_status(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """The server, the schema, its version and the migrations pending (applies none)."""
    with open_database(settings, migrate=False) as target:
        info = check_connection(target)
        state = migrations.status(target.conninfo(), target.schema)
    if args.json:
        print_json({**msgspec.to_builtins(info), **_version(state)}, out)
        return 0
    out.write(f"{_server_lines(info)}  version  {state.version}{_pending(state)}\n")
    for migration in state.pending:
        out.write(f"  pending  {migration.version:04d} {migration.name}\n")
    if state.changed:
        versions = ", ".join(f"{v:04d}" for v in state.changed)
        out.write(f"  changed  {versions}: applied, but not the files this version ships\n")
    return 0


def cmd_db_migrate(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Apply the pending migrations (every process does at start; this says what it did)."""
    with open_database(settings, migrate=False) as target:
        applied = migrations.migrate(target.conninfo(), target.schema)
        state = migrations.status(target.conninfo(), target.schema)
    if args.json:
        print_json({"applied": [_migration(m) for m in applied], **_version(state)}, out)
        return 0
    for migration in applied:
        out.write(f"applied {migration.version:04d} {migration.name}\n")
    done = "" if applied else " (nothing to apply)"
    out.write(f"schema {state.schema}: version {state.version}{_pending(state)}{done}\n")
    return 0


def add_commands(sub: Any, command: Command) -> None:
    """`db status` and `db migrate`."""
    db = command(sub, "db", None, "the PostgreSQL the ledger uses")
    db_sub = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    command(db_sub, "status", None, "where the data lives, server version, schema version").set_defaults(
        settings_handler=cmd_db_status
    )
    command(db_sub, "migrate", None, "apply the pending schema migrations").set_defaults(
        settings_handler=cmd_db_migrate
    )


def _server_lines(info: ServerInfo) -> str:
    return (
        f"  server   {info.version.split(' on ')[0]} at {info.url}\n"
        f"  schema   {info.schema} (events table {info.events_table}: "
        f"{'present' if info.has_events_table else 'missing'})\n"
    )


def _pending(state: migrations.Status) -> str:
    return f", {len(state.pending)} pending" if state.pending else ""


def _version(state: migrations.Status) -> dict[str, Any]:
    return {
        "schema_version": state.version,
        "applied_migrations": [
            {"version": a.version, "name": a.name, "applied_at": a.applied_at.isoformat()}
            for a in state.applied
        ],
        "pending_migrations": [_migration(m) for m in state.pending],
        "changed_migrations": list(state.changed),
    }


def _migration(migration: migrations.Migration) -> dict[str, Any]:
    return {"version": migration.version, "name": migration.name}

"""`ledger projections status|rebuild`: the read models and their progress."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from ledger.application.ledger import Ledger
from ledger.cli.common import Command, UsageError, print_json
from ledger.cli.progress import progress
from ledger.config import Settings
from ledger.eventstore.database import connect, open_database
from ledger.projections.base import rebuild, status
from ledger.projections.registry import all_projections, projection_named


def cmd_projections_status(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    with open_database(settings) as target, connect(target) as conn:
        rows = status(conn, all_projections())
    if args.json:
        print_json([{**vars(r), "lag": r.lag} for r in rows], out)
        return 0
    out.write("projection   generation  position      head       lag  worker\n")
    for r in rows:
        worker = "active" if r.active_worker else "none"
        out.write(
            f"{r.name:<12} {r.generation or '-':>10} {r.position:>9} {r.head:>9} {r.lag:>9}  {worker}\n"
        )
    return 0


def cmd_projections_rebuild(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    try:
        projection = projection_named(args.name)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    label = f"rebuild {projection.name}"
    with (
        open_database(settings) as target,
        progress(label, None, unit="events", out=out, tty=sys.stderr) as bar,
    ):
        app = Ledger(env=target.eventsourcing_env())
        try:
            generation, position = rebuild(
                projection, lambda: connect(target), app.recorder, app.mapper, progress=bar.update
            )
        finally:
            app.close()
    out.write(f"{projection.name}: generation {generation} is live at position {position}\n")
    return 0


def add_commands(sub: Any, command: Command) -> None:
    """`projections status|rebuild`."""
    projections = command(sub, "projections", None, "the read models and their progress")
    proj_sub = projections.add_subparsers(dest="projections_command", metavar="COMMAND", required=True)
    command(proj_sub, "status", None, "position, head of the log and lag of each projection").set_defaults(
        settings_handler=cmd_projections_status
    )
    rebuild_parser = command(
        proj_sub, "rebuild", None, "rebuild a projection from the start, then swap it in"
    )
    rebuild_parser.set_defaults(settings_handler=cmd_projections_rebuild)
    rebuild_parser.add_argument("name", help="all_sales, outbound, refunds or inventory")

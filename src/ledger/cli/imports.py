"""`ledger import`: orders from a JSON file in the API's import shape, or from the marketplaces (a round with
`--once`, or rounds on the schedule until SIGINT/SIGTERM)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import msgspec

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.values import Source
from ledger.api.bodies.schemas import decode_orders
from ledger.application.commands import ImportItem, ImportOrders
from ledger.application.ledger import Ledger
from ledger.cli.common import (
    EXIT_FAILED,
    Command,
    UsageError,
    context,
    open_ledger,
    print_json,
    relay,
    stop_on_signals,
    uuid_arg,
)
from ledger.cli.progress import progress
from ledger.config import Settings
from ledger.eventstore.database import connect, open_database
from ledger.integrations.importer import AccountReport, Importer
from ledger.integrations.marketplaces import SyncSettings

IMPORT_BATCH = 500  # orders per `Ledger.import_orders` call (its new orders are saved in one transaction)
SHOWN_ORDERS = 20  # new orders listed by `ledger import --once` in text


def cmd_import(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """`ledger import FILE` imports a file; without FILE, a round of marketplace imports (--once), or rounds
    on the schedule until SIGINT/SIGTERM."""
    if args.file is not None:
        if args.once or args.account:
            raise UsageError("--once and --account are for marketplace imports: drop them, or FILE")
        with open_ledger(settings) as app:
            return import_file(args, app, out)
    sync = SyncSettings.from_env()
    with open_database(settings) as target:
        app = Ledger(env=target.eventsourcing_env())
        try:
            importer = Importer(app, lambda: connect(target), sync)
            if not args.once:
                relay(stop_on_signals(), importer.stop)
                out.write(f"ledger: importing every {sync.import_interval:g}s; Ctrl-C stops\n")
                out.flush()
                importer.run()
                return 0
            reports = importer.run_round(args.account)
        finally:
            app.close()
    if args.json:
        print_json([asdict(r) for r in reports], out)
    else:
        for report in reports:
            out.write(_report_line(report))
        if not reports:
            out.write("no marketplace accounts to import from\n")
    return EXIT_FAILED if any(r.error or r.refused for r in reports) else 0


def _report_line(r: AccountReport) -> str:
    head = f"{r.marketplace} account {r.account_id}: "
    body = (
        f"{r.orders} orders in {r.pages} pages ({r.created} new, {r.updated} updated), {r.facts} facts, "
        f"{r.acknowledged} acknowledged"
    )
    shown = r.new_orders[:SHOWN_ORDERS]
    new = "".join(f"\n  new {x['order_id']} ({x['marketplace_order_id']})" for x in shown)
    if len(r.new_orders) > len(shown):
        new += f"\n  ... and {len(r.new_orders) - len(shown)} more (--json lists them all)"
    refused = "".join(
        f"\n  refused {x['marketplace_order_id']}: {x['code']}: {x['message']}" for x in r.refused
    )
    error = f"\n  stopped: {r.error} (the cursor stays where it was)" if r.error else ""
    return head + body + new + refused + error + "\n"


def import_file(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    """Import orders from a JSON file in the API's import shape; one line of report per order."""
    try:
        data = Path(args.file).read_bytes() if args.file != "-" else sys.stdin.buffer.read()
    except OSError as e:
        raise UsageError(f"cannot read {args.file}: {e.strerror}") from None
    try:
        orders = decode_orders(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise UsageError(f"{args.file} is not a valid order file: {e}") from None
    ctx = context(args, Source.IMPORT)
    report: list[dict[str, Any]] = []
    with progress("import", len(orders), unit="orders", out=sys.stderr, tty=sys.stderr) as bar:
        for start in range(0, len(orders), IMPORT_BATCH):
            batch = orders[start : start + IMPORT_BATCH]
            items: list[ImportItem | LedgerError] = []
            for order in batch:
                try:
                    items.append(ImportItem(order.account_id, order.to_domain()))
                except LedgerError as e:
                    items.append(e)
            for offset, (order, result) in enumerate(
                zip(batch, app.execute(ImportOrders(ctx=ctx, items=items, seller=args.seller)), strict=True)
            ):
                row: dict[str, Any] = {
                    "index": start + offset,
                    "marketplace_order_id": order.marketplace_order_id,
                }
                if isinstance(result, LedgerError):
                    row["error"] = {"code": result.code, "message": result.message}
                else:
                    row |= {"order_id": result.order_id, "created": result.created, "events": result.events}
                report.append(row)
                bar.advance()
    failed = sum(1 for row in report if "error" in row)
    if args.json:
        print_json(report, out)
    else:
        for row in report:
            out.write(_import_line(row))
        out.write(f"{len(orders) - failed} imported or unchanged, {failed} failed\n")
    return EXIT_FAILED if failed else 0


def _import_line(row: dict[str, Any]) -> str:
    head = f"[{row['index']}] {row['marketplace_order_id']}"
    if "error" in row:
        return f"{head}: error {row['error']['code']}: {row['error']['message']}\n"
    if row["created"]:
        return f"{head}: created {row['order_id']}\n"
    if row["events"]:
        return f"{head}: updated {row['order_id']} ({', '.join(row['events'])})\n"
    return f"{head}: unchanged {row['order_id']}\n"


def add_commands(sub: Any, command: Command) -> None:
    """`import [FILE]`."""
    imp = command(sub, "import", None, "import orders from a JSON file in the API's import shape")
    imp.set_defaults(settings_handler=cmd_import)
    imp.add_argument("file", nargs="?", help="path to the JSON file, or - for standard input")
    imp.add_argument("--seller", help="refuse accounts of any other seller")
    imp.add_argument(
        "--once", action="store_true", help="without FILE: one round over the accounts, then exit"
    )
    imp.add_argument("--account", type=uuid_arg, help="without FILE: only this account")

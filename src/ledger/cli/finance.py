"""`ledger finance ...`: refunds, settlement reconciliation and exposure from the command line.

The same read models and the same reconciliation as `/v1/finance`, for one `--seller`; `--format json` prints
the API's bodies, so a script can move between the two. A reconciliation run here is stored like one made over
HTTP, with the CLI's `--actor` as who ran it and `cli` as its source.
"""

# The API's bodies (and with them Litestar) load only inside the commands that print them, so every other
# `ledger` command starts as fast as before.
# ruff: noqa: PLC0415
from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import psycopg

from ledger.aggregates.times import InvalidTimeError, parse_day
from ledger.aggregates.values import Marketplace, RefundReason
from ledger.application import csv_export
from ledger.application.ledger import Ledger
from ledger.cli.common import (
    READ_MODELS_MISSING,
    Command,
    ReadModelMissingError,
    print_json,
    reading,
    uuid_arg,
)
from ledger.config import Settings
from ledger.eventstore.database import connect, open_database
from ledger.finance.reconcile import Reconciliations, Upload, check_account
from ledger.finance.settlements import PARSERS, SettlementFormatError
from ledger.projections.exposure import ExposureView
from ledger.projections.refunds import RefundEntry, RefundsView, snapshot

if TYPE_CHECKING:
    from ledger.api.bodies.finance import ReconciliationOut

EXIT_ROWS_FAILED = 1  # the report had rows that could not be read (each is listed)
PAGE = 500


def _format(args: argparse.Namespace) -> str:
    return "json" if args.json else str(args.format)


def _day(text: str) -> date:
    try:
        return parse_day(text, "day")
    except InvalidTimeError as e:
        raise argparse.ArgumentTypeError(e.message) from None


# -------------------------------------------------------------------------------------------- refunds


def cmd_refunds(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Every matching refund (all pages) and the totals per currency; csv: the refunds only."""
    filters: dict[str, Any] = {
        "date_from": args.date_from,
        "date_to": args.date_to,
        "marketplace": args.marketplace,
        "currency": args.currency,
        "reason": args.reason,
        "account_id": args.account,
    }
    from ledger.api.bodies.finance import CSV_COLUMNS, FinanceRefundOut, RefundTotalsOut, csv_row

    view = RefundsView()
    entries: list[RefundEntry] = []
    with reading(settings) as conn, snapshot(conn):
        totals = view.totals(conn, args.seller, **filters)
        cursor = None
        while True:
            page = view.list_refunds(conn, args.seller, limit=PAGE, cursor=cursor, **filters)
            entries += page.items
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    form = _format(args)
    if form == "csv":
        out.write(csv_export.rows(CSV_COLUMNS, (csv_row(e) for e in entries), newline="\n"))
    elif form == "json":
        print_json(
            {
                "items": [FinanceRefundOut.of(e) for e in entries],
                "totals": [RefundTotalsOut.of(t) for t in totals],
            },
            out,
        )
    else:
        for e in entries:
            out.write(
                f"{e.refunded_at.isoformat()}  {e.marketplace:<8} {e.marketplace_order_id:<20}"
                f" {e.reason:<18} {e.total:>12} {e.currency}  {e.refund_id}\n"
            )
        if not entries:
            out.write("no refunds\n")
        for t in totals:
            out.write(
                f"total {t.currency}: {t.refunds} refunds, items {t.item_amount}, tax {t.tax_amount},"
                f" shipping {t.shipping_amount}, total {t.total}\n"
            )
    return 0


# -------------------------------------------------------------------------------------- reconciliation


def cmd_reconcile(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Reconcile a report file; exit 1 when some of its rows could not be read (they are listed)."""
    from ledger.api.bodies.finance import ReconciliationOut

    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SettlementFormatError(f"cannot read {args.file}: {e.strerror}", "file") from None
    upload = Upload(
        seller=args.seller,
        marketplace=args.marketplace,
        data=data,
        file_name=path.name,
        actor=args.actor,
        source="cli",
        account_id=args.account,
    )
    with open_database(settings) as target:
        ledger = Ledger(env=target.eventsourcing_env())
        try:
            check_account(ledger, args.seller, args.marketplace, args.account)
        finally:
            ledger.close()
        with connect(target, autocommit=True) as conn:
            try:
                details = Reconciliations().run(conn, upload, datetime.now(UTC))
            except psycopg.errors.UndefinedTable:
                raise ReadModelMissingError(READ_MODELS_MISSING) from None
    body = ReconciliationOut.of_details(details)
    if _format(args) == "json":
        print_json(body, out)
    else:
        _write_reconciliation(body, out)
    return EXIT_ROWS_FAILED if details.bad_rows else 0


def cmd_reconciliation(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from ledger.api.bodies.finance import ReconciliationOut

    with reading(settings) as conn:
        details = Reconciliations().get(conn, args.seller, args.reconciliation_id)
    body = ReconciliationOut.of_details(details)
    if _format(args) == "json":
        print_json(body, out)
    else:
        _write_reconciliation(body, out)
    return 0


def cmd_reconciliations(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from ledger.api.bodies.finance import ReconciliationSummaryOut

    with reading(settings) as conn:
        page = Reconciliations().list(conn, args.seller, args.marketplace, limit=args.limit)
    runs = [ReconciliationSummaryOut.of(r) for r in page.items]
    if _format(args) == "json":
        print_json(runs, out)
        return 0
    if not runs:
        out.write("no reconciliations\n")
    for r in runs:
        out.write(
            f"{r.reconciliation_id}  {r.created_at.isoformat()}  {r.marketplace:<7} {r.file.name}"
            f"  matched {r.matched}, differs {r.amount_differs}, missing in marketplace"
            f" {r.missing_in_marketplace}, missing in ledger {r.missing_in_ledger}, bad rows {r.bad_rows}\n"
        )
    return 0


def _write_reconciliation(r: ReconciliationOut, out: TextIO) -> None:
    out.write(
        f"reconciliation {r.reconciliation_id} by {r.created_by} ({r.source}) at {r.created_at.isoformat()}\n"
        f"  file {r.file.name}, {r.file.size} bytes, sha256 {r.file.sha256}\n"
        f"  {r.marketplace} {r.format}, settlement {r.settlement_id or '-'}, {r.currency},"
        f" {r.period_start.isoformat()} to {r.period_end.isoformat()}\n"
        f"  {r.rows} rows: matched {r.matched}, amount_differs {r.amount_differs}, missing_in_marketplace"
        f" {r.missing_in_marketplace}, missing_in_ledger {r.missing_in_ledger}, ignored {r.ignored_rows},"
        f" bad {r.bad_rows}\n"
    )
    for i in r.items:
        if i.outcome == "matched":
            continue
        lines = ",".join(map(str, i.report_lines)) or "-"
        out.write(
            f"  {i.outcome:<22} {i.kind:<6} {i.marketplace_order_id:<20} ledger {i.ledger_amount or '-'}"
            f" marketplace {i.marketplace_amount or '-'} {i.currency} (lines {lines})\n"
        )
    for b in r.bad_row_details:
        out.write(f"  bad row line {b.line}: {b.message}\n")
    for t in r.totals:
        out.write(
            f"  total {t.kind} {t.currency}: ledger {t.ledger_amount}, marketplace {t.marketplace_amount},"
            f" difference {t.difference}\n"
        )


# ------------------------------------------------------------------------------------------- exposure


def cmd_exposure(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from ledger.api.bodies.finance import ExposureEntryOut

    with reading(settings) as conn:
        entries = ExposureView().exposure(conn, args.seller, args.marketplace, args.account)
    items = [ExposureEntryOut.of(e) for e in entries]
    if _format(args) == "json":
        print_json({"items": items}, out)
        return 0
    if not items:
        out.write("no exposure: every shipment is confirmed by its marketplace\n")
    for e in items:
        out.write(
            f"{e.marketplace:<8} {e.currency}  {e.value:>14}  {e.shipments} shipments, {e.units} units,"
            f" oldest shipped {e.oldest_shipped_at.isoformat()}\n"
        )
    return 0


def add_commands(sub: Any, command: Command) -> None:
    """`finance refunds|reconcile|reconciliation|reconciliations|exposure`."""
    marketplaces = [m.value for m in Marketplace]
    finance = command(sub, "finance", None, "refunds, settlement reconciliation and payment exposure")
    fin_sub = finance.add_subparsers(dest="finance_command", metavar="COMMAND", required=True)

    refunds = command(fin_sub, "refunds", None, "refunds with totals per currency (every matching refund)")
    refunds.set_defaults(settings_handler=cmd_refunds)
    refunds.add_argument("--seller", required=True, help="whose refunds")
    refunds.add_argument("--from", dest="date_from", type=_day, help="first UTC day (YYYY-MM-DD)")
    refunds.add_argument("--to", dest="date_to", type=_day, help="last UTC day, included")
    refunds.add_argument("--marketplace", choices=marketplaces, help="only this marketplace's refunds")
    refunds.add_argument("--currency", help="ISO 4217 code")
    refunds.add_argument(
        "--reason", choices=[r.value for r in RefundReason], help="only refunds for this reason"
    )
    refunds.add_argument("--account", type=uuid_arg, help="one marketplace account's refunds")
    refunds.add_argument(
        "--format", choices=["text", "json", "csv"], default="text", help="output (default text)"
    )

    rec = command(
        fin_sub, "reconcile", None, "match a settlement report against the ledger; the run is stored"
    )
    rec.set_defaults(settings_handler=cmd_reconcile)
    rec.add_argument(
        "file", help="the report: Amazon flat-file settlement V2 (TSV) or eBay transaction report"
    )
    rec.add_argument("--seller", required=True, help="whose report it is")
    rec.add_argument(
        "--marketplace", required=True, choices=sorted(PARSERS), help="the marketplace that sent the report"
    )
    rec.add_argument("--account", type=uuid_arg, help="match only this account's orders")
    rec.add_argument("--format", choices=["text", "json"], default="text", help="output (default text)")

    show = command(fin_sub, "reconciliation", None, "one stored reconciliation run, in full")
    show.set_defaults(settings_handler=cmd_reconciliation)
    show.add_argument("reconciliation_id", type=uuid_arg, help="the run's id (see `finance reconciliations`)")
    show.add_argument("--seller", required=True, help="whose run it is")
    show.add_argument("--format", choices=["text", "json"], default="text", help="output (default text)")

    runs = command(fin_sub, "reconciliations", None, "the stored reconciliation runs, newest first")
    runs.set_defaults(settings_handler=cmd_reconciliations)
    runs.add_argument("--seller", required=True, help="whose runs")
    runs.add_argument("--marketplace", choices=marketplaces, help="only this marketplace's runs")
    runs.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50)")
    runs.add_argument("--format", choices=["text", "json"], default="text", help="output (default text)")

    exposure = command(
        fin_sub, "exposure", None, "value shipped but not yet confirmed, per marketplace and currency"
    )
    exposure.set_defaults(settings_handler=cmd_exposure)
    exposure.add_argument("--seller", required=True, help="whose exposure")
    exposure.add_argument("--marketplace", choices=marketplaces, help="only this marketplace")
    exposure.add_argument("--account", type=uuid_arg, help="only this account")
    exposure.add_argument("--format", choices=["text", "json"], default="text", help="output (default text)")

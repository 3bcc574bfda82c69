"""`ledger ship-file FILE`: record the shipments of a bulk CSV file (the format of `POST /v1/shipments/bulk`).

Prints one line per row (or the JSON report with --json) and exits 1 when any row was rejected, so a script
can tell; progress goes to stderr (a bar on a terminal, plain lines otherwise).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from ledger.aggregates.values import Source
from ledger.application.bulk_shipping import BulkShipper
from ledger.application.ledger import Ledger
from ledger.application.shipments_csv import NotCsvError, RowResult, parse
from ledger.cli.common import EXIT_FAILED, Command, UsageError, print_json
from ledger.cli.progress import progress


def cmd_ship_file(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    try:
        data = Path(args.file).read_bytes() if args.file != "-" else sys.stdin.buffer.read()
    except OSError as e:
        raise UsageError(f"cannot read {args.file}: {e.strerror}") from None
    try:
        parsed = parse(data)
    except NotCsvError as e:
        raise UsageError(f"{args.file}: {e}") from None
    shipper = BulkShipper(app, actor=args.actor, seller=args.seller, source=Source.BULK)
    with progress("ship-file", len(parsed.rows), unit="rows", out=sys.stderr, tty=sys.stderr) as bar:
        report = shipper.run(parsed, progress=bar.advance)
    if args.json:
        rows = [_row_json(r) for r in report.rows]
        body = {"rows": rows, "accepted": report.accepted, "rejected": report.rejected}
        print_json(body, out)
    else:
        for r in report.rows:
            out.write(_row_line(r))
        out.write(f"{report.accepted} row(s) accepted, {report.rejected} rejected\n")
    return EXIT_FAILED if report.rejected else 0


def _row_json(r: RowResult) -> dict[str, Any]:
    row: dict[str, Any] = {"row": r.row, "status": r.status}
    for name in ("reason", "code"):
        if getattr(r, name):
            row[name] = getattr(r, name)
    for name in ("order_id", "shipment_id", "version"):
        if getattr(r, name) is not None:
            row[name] = str(getattr(r, name)) if name != "version" else r.version
    if r.replayed:
        row["replayed"] = True
    return row


def _row_line(r: RowResult) -> str:
    order = r.fields.get("marketplace_order_id") or r.fields.get("order_id", "")
    head = f"row {r.row}: {order} line {r.fields.get('line_id', '')}"
    if not r.accepted:
        return f"{head}: rejected: {r.reason}\n"
    note = f" ({r.reason})" if r.reason else ""
    return f"{head}: accepted, shipment {r.shipment_id} (order version {r.version}){note}\n"


def add_commands(sub: Any, command: Command) -> None:
    """`ship-file`."""
    p = command(
        sub, "ship-file", cmd_ship_file, "record the shipments of a CSV file (one shipment line a row)"
    )
    p.add_argument(
        "file", help="the CSV file, or - for standard input (template: GET /shipments/template.csv)"
    )
    p.add_argument(
        "--seller", help="the seller whose orders the file names (needed for marketplace_order_id rows)"
    )

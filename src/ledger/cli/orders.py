"""`ledger orders ...`: read an order (`show`, `history`) and change it (`ship`, `cancel`, `refund`, disputes,
`restock`)."""

from __future__ import annotations

import argparse
from decimal import Decimal
from typing import Any, TextIO

from ledger.aggregates import values
from ledger.aggregates.errors import InvalidAmountError, InvalidQuantityError
from ledger.aggregates.values import (
    CancelReason,
    Carrier,
    DisputeOutcome,
    LineQuantity,
    RefundReason,
    RefundRequestLine,
    parse_quantity,
)
from ledger.application.commands import (
    Cancel,
    CloseDispute,
    OpenDispute,
    OrderCommand,
    Refund,
    Restock,
    Ship,
    fingerprinted,
)
from ledger.application.ledger import Ledger
from ledger.application.queries import CommandResult, HistoryEntry, OrderDetails
from ledger.cli.common import Command, Handler, context, print_json, time_arg, uuid_arg, yes_no

# ------------------------------------------------------------------------------------- reading


def cmd_orders_show(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    if args.version is not None or args.as_of is not None:
        order = app.order_as_of(args.order_id, version=args.version, at=args.as_of)
    else:
        order = app.get_order(args.order_id)
    if args.json:
        print_json(order, out)
    else:
        _write_order(order, out)
    return 0


def cmd_orders_history(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    history = app.order_history(args.order_id)
    if args.json:
        print_json(history, out)
        return 0
    for entry in history:
        _write_history_entry(entry, out)
    return 0


def _write_order(o: OrderDetails, out: TextIO) -> None:
    flags = [o.status, f"payment {o.payment_status}", "open" if o.open else "closed"]
    flags += ["third party managed"] if o.third_party_managed else []
    flags += [f"dispute {o.dispute_status}"] if o.dispute_status else []
    out.write(
        f"order {o.order_id}  {o.marketplace} {o.marketplace_order_id}  version {o.version}\n"
        f"  {', '.join(flags)}\n"
        f"  purchased {o.purchased_at.isoformat()} by {o.buyer.name} <{o.buyer.email}>\n"
        f"  total {o.total} {o.currency}, refunded {o.refunded_total} {o.currency}\n"
        "  line        sku                 qty  shipped  cancelled  refunded  restocked\n"
    )
    for line in o.lines:
        out.write(
            f"  {line.line_id:<11} {line.sku:<18} {line.quantity:>4} {line.shipped:>8} {line.cancelled:>10}"
            f" {line.refunded_quantity:>9} {line.restocked:>10}\n"
        )
    for s in o.shipments:
        out.write(
            f"  shipment {s.shipment_id}: {s.carrier} {s.tracking_number}{' (confirmed)' if s.confirmed else ''}\n"
        )
    for d in o.disputes:
        out.write(f"  dispute {d.dispute_id}: {d.kind}, {d.outcome or 'open'}\n")


def _write_history_entry(e: HistoryEntry, out: TextIO) -> None:
    when = e.recorded_at.isoformat()
    why = f" reason={e.reason}" if e.reason else ""
    out.write(f"v{e.version:<3} {when}  {e.type:<24} by {e.actor} via {e.source}{why}\n")
    out.write(f"     hash {e.hash} prev {e.prev_hash[:16]}...\n")


# ------------------------------------------------------------------------------------ changing


def parse_line(text: str) -> LineQuantity:
    line_id, sep, quantity = text.rpartition(":")
    if not sep or not line_id:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LINE_ID:QUANTITY")
    try:
        return LineQuantity(line_id, parse_quantity(quantity, "quantity"))
    except InvalidQuantityError:
        raise argparse.ArgumentTypeError(f"{text!r}: quantity must be a whole number") from None


def parse_amount(text: str) -> Decimal:
    """An amount as the API reads one (values.parse_amount)."""
    try:
        return values.parse_amount(text, "amount")
    except InvalidAmountError as e:
        raise argparse.ArgumentTypeError(e.message) from None


def _execute(app: Ledger, cmd: OrderCommand) -> CommandResult:
    """Run the command, fingerprinted: under an --idempotency-key, another command or other arguments are
    refused (idempotency-key-reused) instead of replaying the first."""
    return app.execute(fingerprinted(cmd))


def _report(result: Any, args: argparse.Namespace, out: TextIO) -> int:
    if args.json:
        print_json(result, out)
        return 0
    replay = " (replayed: nothing new recorded)" if result.replayed else ""
    ids = "".join(f" {k}={v}" for k, v in result.ids.items())
    out.write(f"{result.order_id} version {result.version}: {', '.join(result.events)}{ids}{replay}\n")
    return 0


def cmd_ship(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    result = _execute(
        app,
        Ship(
            ctx=context(args),
            order_id=args.order_id,
            carrier=Carrier(args.carrier),
            tracking_number=args.tracking_number,
            shipping_class=args.shipping_class,
            shipped_at=args.shipped_at,
            lines=tuple(args.line) if args.line else None,
            expected_version=args.expected_version,
        ),
    )
    return _report(result, args, out)


def cmd_cancel(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    result = _execute(
        app,
        Cancel(
            ctx=context(args),
            order_id=args.order_id,
            reason=CancelReason(args.reason),
            lines=tuple(args.line) if args.line else None,
            restock_in_ledger=args.restock_in_ledger,
            expected_version=args.expected_version,
        ),
    )
    return _report(result, args, out)


def cmd_refund(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    lines = tuple(RefundRequestLine(item.line_id, item.quantity) for item in args.line) if args.line else None
    result = _execute(
        app,
        Refund(
            ctx=context(args),
            order_id=args.order_id,
            reason=RefundReason(args.reason),
            lines=lines,
            shipping_amount=args.shipping_amount,
            tax_amount=args.tax_amount,
            expected_version=args.expected_version,
        ),
    )
    return _report(result, args, out)


def cmd_dispute_open(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    result = _execute(
        app,
        OpenDispute(
            ctx=context(args),
            order_id=args.order_id,
            reason=args.reason,
            marketplace_dispute_id=args.marketplace_dispute_id,
        ),
    )
    return _report(result, args, out)


def cmd_dispute_close(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    result = _execute(
        app,
        CloseDispute(
            ctx=context(args),
            order_id=args.order_id,
            dispute_id=args.dispute_id,
            outcome=DisputeOutcome(args.outcome),
        ),
    )
    return _report(result, args, out)


def cmd_restock(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    result = _execute(app, Restock(ctx=context(args), order_id=args.order_id, lines=tuple(args.line)))
    return _report(result, args, out)


# -------------------------------------------------------------------------------------- parser


def add_commands(sub: Any, command: Command) -> None:
    """`orders show|history|ship|cancel|refund|open-dispute|close-dispute|restock`."""
    orders = command(sub, "orders", None, "read and change orders")
    ord_sub = orders.add_subparsers(dest="orders_command", metavar="COMMAND", required=True)
    show = command(ord_sub, "show", cmd_orders_show, "an order's current (or past) state")
    show.add_argument("order_id", type=uuid_arg)
    show.add_argument("--version", type=int, help="the order as it stood at this version")
    show.add_argument(
        "--as-of", type=time_arg, help="the order as it stood at this time (ISO 8601 with zone)"
    )
    hist = command(ord_sub, "history", cmd_orders_history, "every event of an order, with its hash chain")
    hist.add_argument("order_id", type=uuid_arg)

    def order_command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = command(ord_sub, name, handler, help_text)
        p.add_argument("order_id", type=uuid_arg)
        p.add_argument(
            "--idempotency-key",
            help="the seller's key: the same command with the same arguments again replays the first result;"
            " another command or other arguments under it are refused",
        )
        p.add_argument("--expected-version", type=int, help="refuse if the order is not at this version")
        return p

    ship = order_command("ship", cmd_ship, "record a shipment")
    ship.add_argument("--carrier", required=True, choices=[c.value for c in Carrier])
    ship.add_argument("--tracking-number", required=True)
    ship.add_argument("--shipping-class", default="")
    ship.add_argument("--shipped-at", type=time_arg, help="default: now")
    ship.add_argument(
        "--line", type=parse_line, action="append", help="LINE_ID:QUANTITY (default: all unshipped)"
    )
    cancel = order_command("cancel", cmd_cancel, "cancel unshipped units")
    cancel.add_argument("--reason", required=True, choices=[r.value for r in CancelReason])
    cancel.add_argument(
        "--line", type=parse_line, action="append", help="LINE_ID:QUANTITY (default: all unshipped)"
    )
    cancel.add_argument(
        "--restock-in-ledger", type=yes_no, metavar="yes|no", help="default: the account's setting"
    )
    refund = order_command("refund", cmd_refund, "refund shipped units or amounts")
    refund.add_argument("--reason", required=True, choices=[r.value for r in RefundReason])
    refund.add_argument(
        "--line",
        type=parse_line,
        action="append",
        help="LINE_ID:QUANTITY (default: only the amounts given, or with none everything refundable)",
    )
    refund.add_argument("--shipping-amount", type=parse_amount, default=Decimal(0))
    refund.add_argument("--tax-amount", type=parse_amount, default=Decimal(0))
    dopen = order_command("open-dispute", cmd_dispute_open, "record a buyer's dispute")
    dopen.add_argument("--reason", required=True)
    dopen.add_argument("--marketplace-dispute-id")
    dclose = order_command("close-dispute", cmd_dispute_close, "close a dispute with its outcome")
    dclose.add_argument("dispute_id", type=uuid_arg)
    dclose.add_argument("--outcome", required=True, choices=[o.value for o in DisputeOutcome])
    restock = order_command("restock", cmd_restock, "put cancelled or returned units back in stock")
    restock.add_argument("--line", type=parse_line, action="append", required=True, help="LINE_ID:QUANTITY")

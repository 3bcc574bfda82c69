"""`ledger orders ...`: list orders (`list`, All Sales), read one (`show`, `history`) and change it (`ship`,
`cancel`, `refund`, disputes, `restock`). An order is named by the ledger's id, or by the marketplace's order id
with `--account` (or `--seller` and `--marketplace`)."""

from __future__ import annotations

import argparse
import unicodedata
from decimal import Decimal
from typing import Any, TextIO
from uuid import UUID

from ledger.aggregates import values
from ledger.aggregates.errors import InvalidAmountError, InvalidCarrierError, InvalidQuantityError
from ledger.aggregates.order import Order
from ledger.aggregates.tracking import parse_carrier
from ledger.aggregates.values import (
    CancelReason,
    Carrier,
    DisputeOutcome,
    LineQuantity,
    Marketplace,
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
from ledger.cli.common import (
    Command,
    Handler,
    UsageError,
    context,
    print_json,
    reading,
    time_arg,
    uuid_arg,
    yes_no,
)
from ledger.config import Settings
from ledger.projections.all_sales_view import (
    DEFAULT_LIMIT,
    DEFAULT_SORT,
    SORTS,
    STATUSES,
    AllSalesView,
    InvalidCursorError,
    InvalidFilterError,
    SalesFilter,
)

# ------------------------------------------------------------------------------------- reading


def order_id_of(args: argparse.Namespace, app: Ledger) -> UUID:
    """The ledger's id of the order `args.order` names: the id itself, or a marketplace order id of the account
    `--account` (or of `--seller` on `--marketplace`), whose ledger id is derived as the import derives it."""
    if args.account is None and args.seller is None and args.marketplace is None:
        try:
            return UUID(args.order)
        except ValueError:
            raise UsageError(
                f"{args.order!r} is not a ledger order id (a UUID); for a marketplace order id add"
                " --account ACCOUNT_ID, or --seller and --marketplace"
            ) from None
    if args.account is not None:
        if args.seller is not None or args.marketplace is not None:
            raise UsageError("name the order's account with --account, or with --seller and --marketplace")
        account = app.get_account(args.account)
        seller, marketplace = account.seller, account.marketplace
    elif args.seller is None or args.marketplace is None:
        raise UsageError("--seller and --marketplace go together (or use --account)")
    else:
        seller, marketplace = args.seller, args.marketplace
    return Order.create_id(seller, marketplace, unicodedata.normalize("NFC", args.order.strip()))


def cmd_orders_list(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """All Sales: one page of orders with its filters, as a table or JSON (with the next page's cursor)."""
    try:
        filters = SalesFilter(
            account_id=args.account,
            marketplace=args.marketplace,
            status=args.status,
            open=args.open,
            dispute="open" if args.dispute_open else None,
            sku=args.sku,
            q=args.q,
            purchased_from=args.purchased_from,
            purchased_to=args.purchased_to,
            updated_since=args.updated_since,
        )
        with reading(settings) as conn:
            page = AllSalesView().list_orders(
                conn, args.seller, filters, limit=args.limit, cursor=args.cursor, sort=args.sort
            )
    except (InvalidFilterError, InvalidCursorError) as e:
        raise UsageError(str(e)) from None
    if args.json:
        print_json({"items": page.items, "next_cursor": page.next_cursor}, out)
        return 0
    out.write(
        f"{'order id':<36}  {'marketplace':<11} {'marketplace order':<22} {'purchased':<20}"
        f" {'status':<19} {'total':>12}  buyer\n"
    )
    for o in page.items:
        out.write(
            f"{o.order_id!s:<36}  {o.marketplace:<11} {o.marketplace_order_id:<22.22}"
            f" {o.purchased_at:%Y-%m-%d %H:%M:%S}  {o.status:<19} {o.total:>8} {o.currency}  {o.buyer_name}\n"
        )
    if page.next_cursor is not None:
        out.write(f"more: --cursor {page.next_cursor}\n")
    return 0


def cmd_orders_show(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    order_id = order_id_of(args, app)
    if args.version is not None or args.as_of is not None:
        order = app.order_as_of(order_id, version=args.version, at=args.as_of)
    else:
        order = app.get_order(order_id)
    if args.json:
        print_json(order, out)
    else:
        _write_order(order, out)
    return 0


def cmd_orders_history(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    history = app.order_history(order_id_of(args, app))
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
            order_id=order_id_of(args, app),
            carrier=args.carrier,
            carrier_name=args.carrier_name,
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
            order_id=order_id_of(args, app),
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
            order_id=order_id_of(args, app),
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
            order_id=order_id_of(args, app),
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
            order_id=order_id_of(args, app),
            dispute_id=args.dispute_id,
            outcome=DisputeOutcome(args.outcome),
        ),
    )
    return _report(result, args, out)


def cmd_restock(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    result = _execute(
        app, Restock(ctx=context(args), order_id=order_id_of(args, app), lines=tuple(args.line))
    )
    return _report(result, args, out)


# -------------------------------------------------------------------------------------- parser


def carrier_arg(text: str) -> Carrier:
    try:
        return parse_carrier(text)
    except InvalidCarrierError as e:
        raise argparse.ArgumentTypeError(e.message) from None


def _add_list(ord_sub: Any, command: Command) -> None:
    lst = command(
        ord_sub, "list", None, "All Sales: a seller's orders, filtered and sorted, a page at a time"
    )
    lst.set_defaults(settings_handler=cmd_orders_list)
    lst.add_argument("--seller", required=True, help="whose orders")
    lst.add_argument("--account", type=uuid_arg, help="only this marketplace account's orders")
    lst.add_argument(
        "--marketplace", choices=[m.value for m in Marketplace], help="only this marketplace's orders"
    )
    lst.add_argument("--status", choices=STATUSES, help="only orders under this tab")
    lst.add_argument("--open", type=yes_no, metavar="yes|no", help="only open (or only closed) orders")
    lst.add_argument("--dispute-open", action="store_true", help="only orders with an open dispute")
    lst.add_argument("--sku", help="only orders with a line of this SKU")
    lst.add_argument("--q", help="the exact marketplace order id or buyer email, or a part of the buyer name")
    lst.add_argument("--purchased-from", type=time_arg, help="purchased at or after (ISO 8601 with zone)")
    lst.add_argument("--purchased-to", type=time_arg, help="purchased before (ISO 8601 with zone)")
    lst.add_argument("--updated-since", type=time_arg, help="changed at or after (ISO 8601 with zone)")
    lst.add_argument(
        "--sort", choices=SORTS, default=DEFAULT_SORT, help=f"order of the list (default {DEFAULT_SORT})"
    )
    lst.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"orders a page (default {DEFAULT_LIMIT})"
    )
    lst.add_argument("--cursor", help="the page after the one that printed this cursor (same --sort)")


def add_commands(sub: Any, command: Command) -> None:
    """`orders list|show|history|ship|cancel|refund|open-dispute|close-dispute|restock`."""
    orders = command(sub, "orders", None, "list, read and change orders")
    ord_sub = orders.add_subparsers(dest="orders_command", metavar="COMMAND", required=True)
    marketplaces = [m.value for m in Marketplace]

    _add_list(ord_sub, command)

    def order_parser(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = command(ord_sub, name, handler, help_text)
        p.add_argument(
            "order", metavar="ORDER", help="the ledger's order id, or the marketplace's with --account"
        )
        p.add_argument("--account", type=uuid_arg, help="ORDER is a marketplace order id of this account")
        p.add_argument("--seller", help="ORDER is a marketplace order id of this seller (with --marketplace)")
        p.add_argument("--marketplace", choices=marketplaces, help="the marketplace of ORDER (with --seller)")
        return p

    show = order_parser("show", cmd_orders_show, "an order's current (or past) state")
    show.add_argument("--version", type=int, help="the order as it stood at this version")
    show.add_argument(
        "--as-of", type=time_arg, help="the order as it stood at this time (ISO 8601 with zone)"
    )
    order_parser("history", cmd_orders_history, "every event of an order, with its hash chain")

    def order_command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = order_parser(name, handler, help_text)
        p.add_argument(
            "--idempotency-key",
            help="the seller's key: the same command with the same arguments again replays the first result;"
            " another command or other arguments under it are refused",
        )
        p.add_argument("--expected-version", type=int, help="refuse if the order is not at this version")
        return p

    line_help = "LINE_ID:QUANTITY, repeatable"
    ship = order_command("ship", cmd_ship, "record a shipment")
    ship.add_argument(
        "--carrier",
        required=True,
        type=carrier_arg,
        help=f"{', '.join(c.value for c in Carrier)}, or a marketplace's spelling (UPS, FedEx, Royal Mail...)",
    )
    ship.add_argument("--carrier-name", default="", help="the carrier's name (needed with --carrier other)")
    ship.add_argument("--tracking-number", required=True, help="the carrier's tracking number")
    ship.add_argument("--shipping-class", default="", help="the service, e.g. Ground (default: none)")
    ship.add_argument("--shipped-at", type=time_arg, help="when it left (ISO 8601 with zone; default: now)")
    ship.add_argument(
        "--line", type=parse_line, action="append", help=f"{line_help} (default: all unshipped)"
    )
    cancel = order_command("cancel", cmd_cancel, "cancel unshipped units")
    cancel.add_argument("--reason", required=True, choices=[r.value for r in CancelReason], help="why")
    cancel.add_argument(
        "--line", type=parse_line, action="append", help=f"{line_help} (default: all unshipped)"
    )
    cancel.add_argument(
        "--restock-in-ledger", type=yes_no, metavar="yes|no", help="default: the account's setting"
    )
    refund = order_command("refund", cmd_refund, "refund shipped units or amounts")
    refund.add_argument("--reason", required=True, choices=[r.value for r in RefundReason], help="why")
    refund.add_argument(
        "--line",
        type=parse_line,
        action="append",
        help=f"{line_help} (default: only the amounts given, or with none everything refundable)",
    )
    refund.add_argument(
        "--shipping-amount", type=parse_amount, default=Decimal(0), help="shipping to refund (default 0)"
    )
    refund.add_argument(
        "--tax-amount", type=parse_amount, default=Decimal(0), help="tax to refund (default 0)"
    )
    dopen = order_command("open-dispute", cmd_dispute_open, "record a buyer's dispute")
    dopen.add_argument("--reason", required=True, help="what the buyer says, in words")
    dopen.add_argument("--marketplace-dispute-id", help="the marketplace's id of the dispute, if it has one")
    dclose = order_command("close-dispute", cmd_dispute_close, "close a dispute with its outcome")
    dclose.add_argument("dispute_id", type=uuid_arg, help="the dispute's id (see `ledger orders show`)")
    dclose.add_argument(
        "--outcome", required=True, choices=[o.value for o in DisputeOutcome], help="how it ended"
    )
    restock = order_command("restock", cmd_restock, "put cancelled or returned units back in stock")
    restock.add_argument("--line", type=parse_line, action="append", required=True, help=line_help)

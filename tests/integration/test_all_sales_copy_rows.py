"""All Sales stores the same column values whether a batch COPYs its new rows (binary orders, text lines) or
upserts them one by one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from order_scenarios import catch_up

from ledger.aggregates.order import Order
from ledger.aggregates.values import (
    Buyer,
    Carrier,
    Context,
    ImportedOrder,
    LineQuantity,
    Marketplace,
    OrderLine,
    PaymentStatus,
    RefundReason,
)
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget, connect
from ledger.projections import all_sales, base
from ledger.projections.all_sales import AllSalesProjection

CTX = Context(actor="tester")
NOW = datetime(2026, 11, 20, 12, 0, 0, 123456, tzinfo=UTC)
ORDERS = all_sales.FEW_ROWS + 16  # enough for a COPY in one batch


def _orders(app: Ledger) -> None:
    accounts = [
        app.register_account(CTX, seller="copy-rows", marketplace=marketplace, name="main")
        for marketplace in (Marketplace.WALMART, Marketplace.EBAY, Marketplace.AMAZON)
    ]
    orders = []
    for i in range(ORDERS):
        account = accounts[i % 3]
        order = Order.import_order(
            CTX,
            seller="copy-rows",
            account_id=account.account_id,
            marketplace=Marketplace(account.marketplace),
            order=ImportedOrder(
                f"C-{i}",
                NOW.astimezone(timezone(timedelta(hours=5, minutes=30))) - timedelta(minutes=i),
                "EUR" if i % 5 == 0 else "USD",
                PaymentStatus.PENDING if i % 9 == 3 else PaymentStatus.PAID,
                Buyer(f"Bü\\yer {i} \\N", f"b{i}@example.com"),
                (
                    OrderLine("1", f"SKU\\{i}", 2, Decimal("19.90"), Decimal("1.60"), title="a \\ title"),
                    OrderLine("2", "SKU-2", 3, Decimal("5"), Decimal("0.00"), Decimal("2.5"), title=r"\t\n"),
                ),
                ship_by=None if i % 2 else NOW + timedelta(days=2),
            ),
            third_party_managed=i % 7 == 0,
        )
        if i % 3:
            order.ship(CTX, carrier=Carrier.FEDEX, tracking_number="123456789012", shipped_at=NOW, now=NOW,
                       lines=(LineQuantity("1", 1),))  # fmt: skip
        if i % 3 == 1 and i % 2 == 0:  # eBay: refunds shipped and unshipped units
            order.refund(CTX, reason=RefundReason.DAMAGED, lines=None)
        if i % 6 == 1:
            order.open_dispute(CTX, reason="not \\ received")
        orders.append(order)
    app.save(*orders)


def _stored(target: PostgresTarget) -> tuple[list[str], list[str]]:
    """Every column of every row as PostgreSQL writes it out (numeric scale, jsonb, timestamptz in UTC)."""
    with connect(target) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        orders = conn.execute("SELECT o::text FROM all_sales_orders o ORDER BY order_id").fetchall()
        lines = conn.execute("SELECT l::text FROM all_sales_lines l ORDER BY order_id, line_id").fetchall()
    return [r[0] for r in orders], [r[0] for r in lines]


def test_copied_rows_equal_upserted_rows(own_target: PostgresTarget) -> None:
    """A rebuild's COPY (one batch of every order) stores each column exactly as one-event upserts did."""
    app = Ledger(env=own_target.eventsourcing_env())
    try:
        _orders(app)
        catch_up(AllSalesProjection(), lambda: connect(own_target), app, 1)
        upserted = _stored(own_target)
        base.rebuild(AllSalesProjection(), lambda: connect(own_target), app.recorder, app.mapper)
        copied = _stored(own_target)
    finally:
        app.close()
    assert len(upserted[0]) == ORDERS
    assert len(upserted[1]) == 2 * ORDERS
    assert copied == upserted
    assert any("\\\\" in row for row in copied[0])  # the backslashes reached the table

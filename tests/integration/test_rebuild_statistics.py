"""A rebuild hands over a generation whose tables have planner statistics, before it serves a query."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from ledger.aggregates.order import Order
from ledger.aggregates.values import Buyer, Context, ImportedOrder, Marketplace, OrderLine, PaymentStatus
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget, connect
from ledger.projections import base
from ledger.projections.all_sales import AllSalesProjection

CTX = Context(actor="tester")


def _rebuilt(own_target: PostgresTarget, count: int) -> int:
    """Import `count` orders and rebuild All Sales over them; the new generation."""
    app = Ledger(env=own_target.eventsourcing_env())
    try:
        account = app.register_account(CTX, seller="s", marketplace=Marketplace.JET, name="main")
        orders = [
            Order.import_order(
                CTX,
                seller="s",
                account_id=account.account_id,
                marketplace=Marketplace.JET,
                order=ImportedOrder(
                    f"A-{i}",
                    datetime(2026, 11, 1, tzinfo=UTC),
                    "USD",
                    PaymentStatus.PAID,
                    Buyer(f"Name {i % 7}", f"b{i}@example.com"),
                    (OrderLine("1", "SKU", 1, Decimal("1.00")),),
                ),
                third_party_managed=False,
            )
            for i in range(count)
        ]
        app.save(*orders)
        generation, _ = base.rebuild(
            AllSalesProjection(), lambda: connect(own_target), app.recorder, app.mapper
        )
    finally:
        app.close()
    return generation


def test_rebuild_analyzes_the_new_generation(own_target: PostgresTarget) -> None:
    """Every table of the rebuilt generation is analyzed, including the buyer-name search's expression index."""
    generation = _rebuilt(own_target, 50)
    tables = base.Tables(generation)
    with connect(own_target) as conn:
        for name in AllSalesProjection.tables:
            row = conn.execute(
                "SELECT last_analyze FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
                (own_target.schema, tables.name(name)),
            ).fetchone()
            assert row is not None
            assert row[0] is not None, f"{tables.name(name)} was not analyzed"
        stats = conn.execute(
            "SELECT count(*) FROM pg_stats WHERE schemaname = %s AND tablename = %s",
            (own_target.schema, f"all_sales_g{generation}_ix_name"),
        ).fetchone()
        assert stats is not None
        assert stats[0] > 0, "no statistics for the buyer-name expression index"


def test_json_columns_have_no_statistics_and_others_do(own_target: PostgresTarget) -> None:
    """The orders' JSON columns (only ever returned) are left out of ANALYZE; the other columns are analyzed."""
    generation = _rebuilt(own_target, 1)
    orders = base.Tables(generation).name("all_sales_orders")
    with connect(own_target) as conn:
        analyzed = {
            str(row[0])
            for row in conn.execute(
                "SELECT attname FROM pg_stats WHERE schemaname = %s AND tablename = %s",
                (own_target.schema, orders),
            ).fetchall()
        }
    assert analyzed.isdisjoint({"sync", "pending"})
    assert {"seller", "purchased_at", "tab", "total", "buyer_email"} <= analyzed

"""All Sales equals the fold of each order's events, for random command sequences and any batch size."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from order_scenarios import OrderSpec, Scenario, catch_up, new_seller, order_specs, steps

from ledger.aggregates.order import Order
from ledger.application.ledger import Ledger
from ledger.projections import base
from ledger.projections.all_sales import AllSalesProjection

SUMMARY = (
    "order_id, status, open, dispute_status, open_disputes, units, shipped_units, cancelled_units, total,"
    " refunded_total, version, payment_status, third_party_managed, tab, buyer_cancel_requested, attention,"
    " sync_state"
)
LINES = (
    "order_id, line_id, sku, quantity, shipped, cancelled, pending_cancel, refunded_quantity, refunded_unshipped,"
    " refunded_item, refunded_tax, refunded_shipping, restocked"
)


def _expected(
    app: Ledger, order_ids: list[Any]
) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]], Counter[str]]:
    """Rows, lines and tab counts as the Order aggregates themselves derive them."""
    summaries, lines, tabs = set(), set(), Counter[str]()
    for order_id in order_ids:
        o: Order = app.repository.get(order_id)
        s = o.state
        tab = "third_party_managed" if o.third_party_managed else s.status.value
        summaries.add(
            (o.id, s.status.value, s.is_open, s.dispute_status, s.open_disputes, s.units, s.shipped_units,
             s.cancelled_units, s.total, s.refunded_total, o.version, o.payment_status.value,
             o.third_party_managed, tab, o.buyer_cancel_requested, o.attention, o.sync_state)
        )  # fmt: skip
        lines.update(
            (o.id, li.line.line_id, li.line.sku, li.ordered, li.shipped, li.cancelled, li.pending_cancel,
             li.refunded_quantity, li.refunded_unshipped, li.refunded_item, li.refunded_tax,
             li.refunded_shipping, li.restocked)
            for li in o.lines.values()
        )  # fmt: skip
        tabs[tab] += 1
        if s.open_disputes:
            tabs["disputes_open"] += 1
    return summaries, lines, tabs


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=order_specs, commands=steps, batch_size=st.integers(1, 9))
def test_all_sales_is_the_fold_of_each_orders_events(
    app: Ledger, connect: base.Connect, specs: list[OrderSpec], commands: list[Any], batch_size: int
) -> None:
    """Stored columns (attention and sync state too), lines and tab counts equal each Order aggregate's derived
    state, at any batch size."""
    shop = Scenario(app, new_seller("all-sales-fold"))
    order_ids = shop.run(specs, commands)
    catch_up(AllSalesProjection(), connect, app, batch_size)
    summaries, lines, tabs = _expected(app, order_ids)
    with connect() as conn:
        rows = conn.execute(
            f"SELECT {SUMMARY} FROM all_sales_orders WHERE seller = %s", (shop.seller,)
        ).fetchall()
        line_rows = conn.execute(
            f"SELECT {LINES} FROM all_sales_lines WHERE seller = %s", (shop.seller,)
        ).fetchall()
        counts = conn.execute(
            "SELECT tab, sum(orders) FROM all_sales_counts WHERE seller = %s GROUP BY tab", (shop.seller,)
        ).fetchall()
    assert set(rows) == summaries
    assert len(rows) == len(order_ids)
    assert set(line_rows) == lines
    assert {tab: n for tab, n in counts if n} == dict(tabs)

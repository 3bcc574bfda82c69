"""All Sales equals the fold of each order's events, for random command sequences and any batch size."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from order_scenarios import OrderSpec, Scenario, catch_up, new_seller, order_specs, steps

from ledger.application.ledger import Ledger
from ledger.projections import base
from ledger.projections.all_sales import AllSalesProjection

SUMMARY = (
    "order_id, status, open, units, shipped_units, cancelled_units, total, refunded_total, version,"
    " dispute_status, payment_status, third_party_managed, tab"
)
LINES = "order_id, line_id, sku, quantity, shipped, cancelled, refunded_quantity, restocked"


def _expected(
    app: Ledger, order_ids: list[Any]
) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]], Counter[str]]:
    summaries, lines, tabs = set(), set(), Counter[str]()
    for order_id in order_ids:
        o = app.get_order(order_id)
        tab = "third_party_managed" if o.third_party_managed else o.status
        summaries.add(
            (o.order_id, o.status, o.open, o.units, o.shipped_units, o.cancelled_units, o.total, o.refunded_total,
             o.version, o.dispute_status, o.payment_status, o.third_party_managed, tab)
        )  # fmt: skip
        lines.update(
            (
                o.order_id,
                li.line_id,
                li.sku,
                li.quantity,
                li.shipped,
                li.cancelled,
                li.refunded_quantity,
                li.restocked,
            )
            for li in o.lines
        )
        tabs[tab] += 1
        if o.dispute_status == "open":
            tabs["disputes_open"] += 1
    return summaries, lines, tabs


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=order_specs, commands=steps, batch_size=st.integers(1, 9))
def test_all_sales_is_the_fold_of_each_orders_events(
    app: Ledger, connect: base.Connect, specs: list[OrderSpec], commands: list[Any], batch_size: int
) -> None:
    """Rows, lines and tab counts equal each order's own state, whatever the batch boundaries."""
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

"""Finance's refunds on real PostgreSQL: each refund with its lines, totals per currency, daily totals per UTC
day, filters and pages, all agreeing with the orders' own events."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from order_scenarios import (
    UPS_TRACKING,
    OrderSpec,
    Scenario,
    catch_up,
    new_seller,
    order_specs,
    steps,
)
from psycopg.rows import TupleRow

from ledger.aggregates.order import Order
from ledger.aggregates.values import (
    Carrier,
    Marketplace,
    RefundReason,
    RefundRequestLine,
    Source,
)
from ledger.application.ledger import Ledger
from ledger.projections import base
from ledger.projections.refunds import (
    InvalidCursorError,
    InvalidFilterError,
    RefundEntry,
    RefundLineEntry,
    RefundsDay,
    RefundsProjection,
    RefundsView,
    RefundTotals,
)

PROJECTION = RefundsProjection()
VIEW = RefundsView()
ZERO = Decimal(0)


@pytest.fixture
def shop(app: Ledger) -> Scenario:
    return Scenario(app, new_seller("refunds"))


def spec(marketplace: Marketplace, **changes: Any) -> OrderSpec:
    """A paid order of two lines (3 and 1 units) in USD, bought three hours ago, on a managed account."""
    return replace(OrderSpec(marketplace, True, False, True, "USD", (3, 1), False, Source.IMPORT), **changes)


def shipped(shop: Scenario, marketplace: Marketplace = Marketplace.WALMART, **changes: Any) -> UUID:
    order_id = shop.place(spec(marketplace, **changes)).order_id
    shop.app.ship(shop.ctx(), order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    return order_id


def refund(
    shop: Scenario,
    order_id: UUID,
    effective_at: datetime | None = None,
    reason: RefundReason = RefundReason.DAMAGED,
    **kwargs: Any,
) -> UUID:
    kwargs.setdefault("lines", (RefundRequestLine("L1", 1),))
    result = shop.app.refund(shop.ctx(effective_at=effective_at), order_id, reason=reason, **kwargs)
    return result.ids["refund_id"]


def all_refunds(conn: psycopg.Connection[TupleRow], seller: str, **filters: Any) -> list[RefundEntry]:
    """Every page of the listing, in order."""
    entries: list[RefundEntry] = []
    cursor = None
    while True:
        page = VIEW.list_refunds(conn, seller, limit=3, cursor=cursor, **filters)
        entries += page.items
        if page.next_cursor is None:
            return entries
        cursor = page.next_cursor


def project(shop: Scenario, connect: base.Connect, batch_size: int = 500) -> None:
    catch_up(PROJECTION, connect, shop.app, batch_size)


# ---------------------------------------------------------------------------------------- refunds


def test_a_refund_is_listed_with_its_lines_and_amounts(shop: Scenario, connect: base.Connect) -> None:
    """Amounts by component and line (Decimal, never float), the reason, who and through what, when."""
    order_id = shipped(shop)
    refund_id = refund(
        shop,
        order_id,
        lines=(RefundRequestLine("L1", 2), RefundRequestLine("L2", 1)),
        shipping_amount=Decimal("1.50"),
    )
    project(shop, connect)
    [event] = [e for e in shop.app.events.get(order_id) if isinstance(e, Order.Refunded)]

    with connect() as conn:
        [entry] = VIEW.list_refunds(conn, shop.seller).items

    by_line = {line.line_id: line for line in event.lines}
    assert entry.lines == (
        RefundLineEntry("L1", "SKU-1", 2, Decimal("25.00"), by_line["L1"].tax_amount, Decimal("1.50")),
        RefundLineEntry("L2", "SKU-2", 1, Decimal("12.50"), by_line["L2"].tax_amount, ZERO),
    )
    assert (entry.refund_id, entry.order_id, entry.marketplace, entry.marketplace_order_id) == (
        refund_id,
        order_id,
        "walmart",
        "MO-1",
    )
    assert (entry.currency, entry.reason, entry.actor, entry.source) == ("USD", "damaged", "tester", "api")
    assert entry.refunded_at == event.timestamp
    assert entry.item_amount == Decimal("37.50")
    assert entry.shipping_amount == Decimal("1.50")
    assert entry.tax_amount == sum(line.tax_amount for line in event.lines)
    assert entry.total == event.total == sum(line.total for line in entry.lines)
    assert all(isinstance(amount, Decimal) for amount in (entry.item_amount, entry.tax_amount, entry.total))


def test_a_refund_counts_on_the_utc_day_it_took_effect(shop: Scenario, connect: base.Connect) -> None:
    """A refund effective at 03:30 in UTC+5 on May 2 belongs to May 1 (UTC), in the list and the days."""
    order_id = shipped(shop)
    refund(shop, order_id, datetime(2024, 5, 2, 3, 30, tzinfo=timezone(timedelta(hours=5))))
    refund(shop, order_id, datetime(2024, 5, 2, 0, 0, tzinfo=UTC))
    project(shop, connect)

    with connect() as conn:
        first = VIEW.list_refunds(conn, shop.seller, date_from=date(2024, 5, 1), date_to=date(2024, 5, 1))
        second = VIEW.list_refunds(conn, shop.seller, date_from=date(2024, 5, 2))
        days = VIEW.daily(conn, shop.seller)

    assert [e.refunded_at for e in first.items] == [datetime(2024, 5, 1, 22, 30, tzinfo=UTC)]
    assert [e.refunded_at for e in second.items] == [datetime(2024, 5, 2, tzinfo=UTC)]
    assert [(d.day, d.refunds) for d in days] == [(date(2024, 5, 1), 1), (date(2024, 5, 2), 1)]


def test_totals_are_per_currency_and_never_mixed(shop: Scenario, connect: base.Connect) -> None:
    """Refunds in USD and JPY total separately, each in its own currency."""
    dollars = shipped(shop)
    yen = shipped(shop, Marketplace.RAKUTEN, currency="JPY")
    for order_id in (dollars, dollars, yen):
        refund(shop, order_id)
    project(shop, connect)

    with connect() as conn:
        totals = VIEW.totals(conn, shop.seller)

    usd_tax = shop.app.get_order(dollars).refunded_total - Decimal("25.00")
    jpy_tax = shop.app.get_order(yen).refunded_total - Decimal("1200")
    assert totals == [
        RefundTotals("JPY", 1, Decimal("1200"), jpy_tax, ZERO, Decimal("1200") + jpy_tax),
        RefundTotals("USD", 2, Decimal("25.00"), usd_tax, ZERO, Decimal("25.00") + usd_tax),
    ]


def test_filters_and_pages(shop: Scenario, connect: base.Connect) -> None:
    """Each filter narrows the list; pages list every refund once, newest first; bad values are refused."""
    walmart, ebay = shipped(shop, quantities=(5, 1)), shipped(shop, Marketplace.EBAY, currency="EUR")
    made = [
        refund(shop, walmart, datetime(2024, 5, 1, 9, tzinfo=UTC)),
        refund(shop, ebay, datetime(2024, 5, 2, 9, tzinfo=UTC), RefundReason.GOODWILL),
        refund(shop, walmart, datetime(2024, 5, 3, 9, tzinfo=UTC), RefundReason.NOT_AS_DESCRIBED),
        refund(shop, ebay, datetime(2024, 5, 3, 10, tzinfo=UTC)),
        refund(shop, walmart, datetime(2024, 5, 4, 9, tzinfo=UTC), RefundReason.GOODWILL),
        refund(shop, ebay, datetime(2024, 5, 5, 9, tzinfo=UTC), lines=None, shipping_amount=Decimal("1.00")),
        refund(shop, walmart, None),
    ]
    other = Scenario(shop.app, new_seller("refunds-other"))
    refund(other, shipped(other))
    project(shop, connect)

    with connect() as conn:
        listed = all_refunds(conn, shop.seller)
        ids = {
            name: [e.refund_id for e in all_refunds(conn, shop.seller, **filters)]
            for name, filters in {
                "ebay": {"marketplace": "ebay"},
                "eur": {"currency": "EUR"},
                "goodwill": {"reason": "goodwill"},
                "may 3 to 4": {"date_from": date(2024, 5, 3), "date_to": date(2024, 5, 4)},
                "until may 1": {"date_to": date(2024, 5, 1)},
                "walmart goodwill": {"marketplace": "walmart", "reason": "goodwill"},
            }.items()
        }
        with pytest.raises(InvalidCursorError):
            VIEW.list_refunds(conn, shop.seller, cursor="not-a-cursor")
        for bad in (
            {"limit": 0},
            {"limit": 501},
            {"marketplace": "etsy"},
            {"date_from": date(2024, 5, 2), "date_to": date(2024, 5, 1)},
        ):
            with pytest.raises(InvalidFilterError):
                VIEW.list_refunds(conn, shop.seller, **bad)

    assert [e.refund_id for e in listed] == [made[6], made[5], made[4], made[3], made[2], made[1], made[0]]
    assert ids == {
        "ebay": [made[5], made[3], made[1]],
        "eur": [made[5], made[3], made[1]],
        "goodwill": [made[4], made[1]],
        "may 3 to 4": [made[4], made[3], made[2]],
        "until may 1": [made[0]],
        "walmart goodwill": [made[4]],
    }


# ------------------------------------------------------------------------------------- property


def expected_refunds(events: list[Any]) -> list[tuple[Any, ...]]:
    """One order's refunds straight from its events."""
    imported = events[0]
    skus = {line.line_id: line.sku for line in imported.lines}
    return [
        (
            event.refund_id,
            imported.originator_id,
            imported.marketplace,
            imported.currency,
            event.reason,
            event.source,
            event.effective_at or event.timestamp,
            sum((line.item_amount for line in event.lines), ZERO),
            sum((line.tax_amount for line in event.lines), ZERO),
            sum((line.shipping_amount for line in event.lines), ZERO),
            event.total,
            tuple(
                RefundLineEntry(
                    line.line_id,
                    skus[line.line_id],
                    line.quantity,
                    line.item_amount,
                    line.tax_amount,
                    line.shipping_amount,
                )
                for line in sorted(event.lines, key=lambda line: line.line_id)
            ),
        )
        for event in events
        if isinstance(event, Order.Refunded)
    ]


def summed(entries: list[RefundEntry], key: Any) -> dict[Any, tuple[Any, ...]]:
    sums: dict[Any, list[Any]] = defaultdict(lambda: [0, ZERO, ZERO, ZERO, ZERO])
    for e in entries:
        row = sums[key(e)]
        row[0] += 1
        for index, amount in enumerate((e.item_amount, e.tax_amount, e.shipping_amount, e.total), start=1):
            row[index] += amount
    return {k: tuple(v) for k, v in sums.items()}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    specs=order_specs,
    commands=steps,
    batch_size=st.integers(1, 8),
    reason=st.sampled_from([None, *RefundReason]),
)
def test_refunds_are_the_fold_of_each_orders_events(
    app: Ledger,
    connect: base.Connect,
    specs: list[OrderSpec],
    commands: list[Any],
    batch_size: int,
    reason: RefundReason | None,
) -> None:
    """Random commands, any batch size: refunds are the orders' events; day and currency totals re-derive."""
    shop = Scenario(app, new_seller("refunds-fold"))
    order_ids = shop.run(specs, commands)
    project(shop, connect, batch_size)

    with connect() as conn:
        listed = all_refunds(conn, shop.seller)
        days = VIEW.daily(conn, shop.seller)
        totals = VIEW.totals(conn, shop.seller)
        by_reason = all_refunds(conn, shop.seller, reason=reason)
        totals_by_reason = VIEW.totals(conn, shop.seller, reason=reason)

    expected = [r for order_id in order_ids for r in expected_refunds(list(app.events.get(order_id)))]
    actual = [
        (
            e.refund_id,
            e.order_id,
            e.marketplace,
            e.currency,
            e.reason,
            e.source,
            e.refunded_at,
            e.item_amount,
            e.tax_amount,
            e.shipping_amount,
            e.total,
            e.lines,
        )
        for e in listed
    ]
    assert sorted(actual) == sorted(expected)
    assert [(e.refunded_at, e.refund_id) for e in listed] == sorted(
        ((e.refunded_at, e.refund_id) for e in listed), reverse=True
    )
    assert {
        (d.day, d.marketplace, d.currency): (
            d.refunds,
            d.item_amount,
            d.tax_amount,
            d.shipping_amount,
            d.total,
        )
        for d in days
    } == summed(listed, lambda e: (e.refunded_at.astimezone(UTC).date(), e.marketplace, e.currency))
    assert all(d.total == d.item_amount + d.tax_amount + d.shipping_amount for d in days)
    assert {
        t.currency: (t.refunds, t.item_amount, t.tax_amount, t.shipping_amount, t.total) for t in totals
    } == summed(listed, lambda e: e.currency)
    assert by_reason == [e for e in listed if reason is None or e.reason == reason]
    assert {
        t.currency: (t.refunds, t.item_amount, t.tax_amount, t.shipping_amount, t.total)
        for t in totals_by_reason
    } == summed(by_reason, lambda e: e.currency)


def test_rebuild_gives_the_same_refunds_and_days(shop: Scenario, connect: base.Connect) -> None:
    """Rebuilt from the log in one go, the read model equals the one kept up batch by batch."""
    order_id = shipped(shop, quantities=(3, 2))
    for effective_at in (None, datetime(2024, 5, 1, 23, 59, tzinfo=UTC), datetime(2024, 5, 2, tzinfo=UTC)):
        refund(shop, order_id, effective_at)
    project(shop, connect, batch_size=1)

    def snapshot() -> tuple[list[RefundEntry], list[RefundsDay], list[RefundTotals]]:
        with connect() as conn:
            return (
                all_refunds(conn, shop.seller),
                VIEW.daily(conn, shop.seller),
                VIEW.totals(conn, shop.seller),
            )

    before = snapshot()
    base.rebuild(PROJECTION, connect, shop.app.recorder, shop.app.mapper)

    assert snapshot() == before
    assert len(before[0]) == 3

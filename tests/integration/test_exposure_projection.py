"""Payment exposure on real PostgreSQL: the value shipped but not confirmed by the marketplace, per marketplace
and currency, agreeing with a fold of the orders' own events, exactly once in any batch size and after a rebuild."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from order_scenarios import UPS_TRACKING, OrderSpec, Scenario, catch_up, new_seller, order_specs, steps

from ledger.aggregates.lines import quantize
from ledger.aggregates.order import Order
from ledger.aggregates.values import Carrier, LineQuantity, Marketplace, Source, SyncAction
from ledger.application.ledger import Ledger
from ledger.projections import base
from ledger.projections.exposure import ExposureEntry, ExposureProjection, ExposureView

PROJECTION = ExposureProjection()
VIEW = ExposureView()
ZERO = Decimal(0)


@pytest.fixture
def shop(app: Ledger) -> Scenario:
    return Scenario(app, new_seller("exposure"))


def spec(marketplace: Marketplace = Marketplace.AMAZON, **changes: Any) -> OrderSpec:
    """A paid order of two lines (3 and 1 units) in USD on a managed account."""
    return replace(OrderSpec(marketplace, True, False, True, "USD", (3, 1), False, Source.IMPORT), **changes)


def ship(shop: Scenario, order_id: UUID, *lines: LineQuantity, at: datetime | None = None) -> UUID:
    result = shop.app.ship(
        shop.ctx(),
        order_id,
        carrier=Carrier.UPS,
        tracking_number=UPS_TRACKING,
        lines=lines or None,
        shipped_at=at,
    )
    return result.ids["shipment_id"]


def acknowledge(shop: Scenario, order_id: UUID, shipment_id: UUID) -> None:
    shop.app.record_sync_outcome(
        shop.ctx(Source.MARKETPLACE),
        order_id,
        action=SyncAction.SHIP,
        reference=str(shipment_id),
        accepted=True,
    )


def project(shop: Scenario, connect: base.Connect, batch_size: int = 500) -> None:
    catch_up(PROJECTION, connect, shop.app, batch_size)


def exposure(connect: base.Connect, seller: str, **filters: Any) -> list[ExposureEntry]:
    with connect() as conn:
        return VIEW.exposure(conn, seller, **filters)


def test_a_shipment_is_worth_its_units_and_their_share_of_tax_and_shipping(
    shop: Scenario, connect: base.Connect
) -> None:
    """One of three units: price plus a third of the tax (rounded); the last units take what rounding left."""
    order_id = shop.place(spec()).order_id  # L1: 3 x 12.50, tax 1.05, shipping 3.00; L2: 1 x 12.50, tax 1.05
    first_at = shop.now - timedelta(hours=2)
    first = ship(shop, order_id, LineQuantity("L1", 1), at=first_at)
    project(shop, connect)

    [entry] = exposure(connect, shop.seller)
    assert entry == ExposureEntry(
        "amazon", "USD", 1, 1, Decimal("12.50") + quantize(Decimal("4.05") / 3, "USD"), first_at
    )
    assert entry.value == Decimal("13.85")

    ship(shop, order_id)  # the rest: L1's two units and L2
    project(shop, connect)

    [entry] = exposure(connect, shop.seller)
    order = shop.app.get_order(order_id)
    assert (entry.shipments, entry.units) == (2, 4)
    assert entry.value == order.total  # a fully shipped order is worth exactly its total
    assert entry.oldest_shipped_at == first_at
    acknowledge(shop, order_id, first)
    project(shop, connect)

    [entry] = exposure(connect, shop.seller)
    assert (entry.shipments, entry.units, entry.value) == (1, 3, order.total - Decimal("13.85"))
    assert entry.oldest_shipped_at > first_at


def test_confirmed_and_third_party_managed_shipments_are_not_exposure(
    shop: Scenario, connect: base.Connect
) -> None:
    """Per marketplace and currency; an acknowledged shipment leaves; Third Party Managed orders never count."""
    amazon = shop.place(spec()).order_id
    ebay = shop.place(spec(Marketplace.EBAY, currency="EUR")).order_id
    managed_elsewhere = shop.place(spec(fulfillment_managed=False)).order_id
    confirmed = shop.place(spec()).order_id
    for order_id in (amazon, ebay, managed_elsewhere):
        ship(shop, order_id)
    acknowledge(shop, confirmed, ship(shop, confirmed))
    other = Scenario(shop.app, new_seller("exposure-other"))
    ship(other, other.place(spec()).order_id)
    project(shop, connect)

    entries = exposure(connect, shop.seller)
    assert [(e.marketplace, e.currency, e.shipments, e.value) for e in entries] == [
        ("amazon", "USD", 1, shop.app.get_order(amazon).total),
        ("ebay", "EUR", 1, shop.app.get_order(ebay).total),
    ]
    assert [e.marketplace for e in exposure(connect, shop.seller, marketplace="ebay")] == ["ebay"]
    account = shop.app.get_order(amazon).account_id
    assert [e.marketplace for e in exposure(connect, shop.seller, account_id=account)] == ["amazon"]


def test_an_acknowledgement_in_the_same_batch_as_its_shipment(shop: Scenario, connect: base.Connect) -> None:
    """Shipped and acknowledged within one batch: never exposure; a second acknowledgement changes nothing."""
    order_id = shop.place(spec()).order_id
    shipment = ship(shop, order_id)
    acknowledge(shop, order_id, shipment)
    project(shop, connect, batch_size=500)
    assert exposure(connect, shop.seller) == []
    with connect() as conn:
        row = conn.execute(
            "SELECT confirmed, confirmed_at FROM exposure_shipments WHERE shipment_id = %s", (shipment,)
        ).fetchone()
    assert row is not None
    assert row[0] is True
    assert row[1] is not None


@pytest.mark.parametrize("batch_size", [1, 500], ids=["later-batch", "same-batch"])
def test_a_voided_shipment_is_no_exposure(shop: Scenario, connect: base.Connect, batch_size: int) -> None:
    """A voided shipment never shipped after all: nothing is owed for it, whether the void comes in the
    shipment's batch or a later one."""
    order_id = shop.place(spec()).order_id
    shipment = ship(shop, order_id)
    if batch_size == 1:
        project(shop, connect)
        assert exposure(connect, shop.seller) != []
    shop.app.void_shipment(shop.ctx(), order_id, shipment_id=shipment, reason="wrong parcel")
    project(shop, connect, batch_size=batch_size)
    assert exposure(connect, shop.seller) == []


# ------------------------------------------------------------------------------------- property


def expected_shipments(events: list[Any]) -> list[tuple[Any, ...]]:
    """(marketplace, currency, third party managed, shipped_at, units, value, confirmed) of each shipment."""
    imported = events[0]
    currency = imported.currency
    lines = {line.line_id: [line, 0, ZERO] for line in imported.lines}  # line, shipped, extras shipped
    shipped: dict[UUID, list[Any]] = {}
    for event in events:
        if isinstance(event, Order.Shipped):
            value = ZERO
            for item in event.lines:
                state = lines[item.line_id]
                line, extras = state[0], state[0].tax + state[0].shipping
                if state[1] + item.quantity >= line.quantity:
                    share = extras - state[2]
                else:
                    share = quantize(extras * item.quantity / line.quantity, currency)
                state[1] += item.quantity
                state[2] += share
                value += line.unit_price * item.quantity + share
            units = sum(item.quantity for item in event.lines)
            shipped[event.shipment_id] = [event.shipped_at, units, value, False]
        elif isinstance(event, Order.MarketplaceAcknowledged) and event.action == SyncAction.SHIP:
            shipped[UUID(event.reference)][3] = True
    return [
        (imported.marketplace, currency, imported.third_party_managed, *values) for values in shipped.values()
    ]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=order_specs, commands=steps, batch_size=st.integers(1, 8))
def test_exposure_is_the_fold_of_each_orders_events(
    app: Ledger, connect: base.Connect, specs: list[OrderSpec], commands: list[Any], batch_size: int
) -> None:
    """Random commands and answers, any batch size: exposure per marketplace and currency re-derives from events."""
    shop = Scenario(app, new_seller("exposure-fold"))
    order_ids = shop.run(specs, commands)
    project(shop, connect, batch_size)

    expected: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, 0, ZERO, None])
    for order_id in order_ids:
        for (
            marketplace,
            currency,
            managed_elsewhere,
            shipped_at,
            units,
            value,
            confirmed,
        ) in expected_shipments(list(app.events.get(order_id))):
            if confirmed or managed_elsewhere:
                continue
            entry = expected[(marketplace, currency)]
            entry[0] += 1
            entry[1] += units
            entry[2] += value
            entry[3] = shipped_at if entry[3] is None else min(entry[3], shipped_at)

    actual = {
        (e.marketplace, e.currency): [e.shipments, e.units, e.value, e.oldest_shipped_at]
        for e in exposure(connect, shop.seller)
    }
    assert actual == dict(expected)


def test_rebuild_gives_the_same_exposure(shop: Scenario, connect: base.Connect) -> None:
    """Rebuilt from the log in one go, the exposure equals the one kept up batch by batch."""
    first = shop.place(spec(quantities=(3, 2))).order_id
    second = shop.place(spec(Marketplace.WALMART)).order_id
    shipment = ship(shop, first, LineQuantity("L1", 2))
    ship(shop, first)
    ship(shop, second, LineQuantity("L2", 1))
    acknowledge(shop, first, shipment)
    project(shop, connect, batch_size=1)
    before = exposure(connect, shop.seller)

    base.rebuild(PROJECTION, connect, shop.app.recorder, shop.app.mapper)

    assert exposure(connect, shop.seller) == before
    assert len(before) == 2

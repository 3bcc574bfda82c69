"""Restocked inventory on real PostgreSQL: quantity per seller and SKU, and the restocks that made it."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from uuid import UUID

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

from ledger.aggregates.order import Order
from ledger.aggregates.values import (
    CancelReason,
    Carrier,
    LineQuantity,
    Marketplace,
    RefundReason,
    RefundRequestLine,
    Source,
)
from ledger.application.ledger import Ledger
from ledger.eventstore import database
from ledger.eventstore.database import PostgresTarget
from ledger.projections import base
from ledger.projections.inventory import InventoryProjection, InventoryView, RestockEntry

PROJECTION = InventoryProjection()
VIEW = InventoryView()


@pytest.fixture
def shop(app: Ledger) -> Scenario:
    return Scenario(app, new_seller("inventory"))


def spec(marketplace: Marketplace, **changes: Any) -> OrderSpec:
    """A paid order of two lines (3 and 2 units) in USD, bought three hours ago, on a managed account."""
    return replace(OrderSpec(marketplace, True, False, True, "USD", (3, 2), False, Source.IMPORT), **changes)


def levels(shop: Scenario, connect: base.Connect, batch_size: int = 500) -> dict[str, int]:
    catch_up(PROJECTION, connect, shop.app, batch_size)
    with connect() as conn:
        return {level.sku: level.quantity for level in VIEW.levels(conn, shop.seller)}


def cancel(shop: Scenario, order_id: UUID, line_id: str, quantity: int, restock: bool | None = None) -> UUID:
    result = shop.app.cancel(
        shop.ctx(),
        order_id,
        reason=CancelReason.OUT_OF_STOCK,
        lines=(LineQuantity(line_id, quantity),),
        restock_in_ledger=restock,
    )
    return result.ids["cancellation_id"]


def test_a_cancellation_restocked_in_the_ledger_counts_for_its_sku(
    shop: Scenario, connect: base.Connect
) -> None:
    """Cancelled units put back by the account's setting are stock, with the cancellation as their cause."""
    order_id = shop.place(spec(Marketplace.WALMART, restock_in_ledger=True)).order_id
    cancellation_id = cancel(shop, order_id, "L2", 2)

    assert levels(shop, connect) == {"SKU-2": 2}
    with connect() as conn:
        [entry] = VIEW.restocks(conn, shop.seller, "SKU-2")
    [event] = [e for e in shop.app.events.get(order_id) if isinstance(e, Order.Restocked)]
    assert entry == RestockEntry(
        restock_id=event.restock_id,
        order_id=order_id,
        account_id=shop.accounts[Marketplace.WALMART, True, True],
        marketplace="walmart",
        sku="SKU-2",
        line_id="L2",
        quantity=2,
        cause_id=cancellation_id,
        restocked_at=event.timestamp,
        position=entry.position,
    )


def test_units_not_restocked_are_not_stock(shop: Scenario, connect: base.Connect) -> None:
    """A cancellation without restocking in the ledger, or restocked by the marketplace itself, adds nothing."""
    walmart = shop.place(spec(Marketplace.WALMART)).order_id
    amazon = shop.place(spec(Marketplace.AMAZON)).order_id
    cancel(shop, walmart, "L1", 1)
    cancel(shop, amazon, "L1", 1)

    assert levels(shop, connect) == {}


def test_returned_units_restocked_by_hand_add_up_across_orders(shop: Scenario, connect: base.Connect) -> None:
    """Restocks of returns and of cancellations, over several orders, sum per SKU; the entries list each one."""
    first = shop.place(spec(Marketplace.JET)).order_id
    second = shop.place(spec(Marketplace.RAKUTEN)).order_id
    shop.app.ship(shop.ctx(), first, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    shop.app.refund(
        shop.ctx(), first, reason=RefundReason.CUSTOMER_RETURN, lines=(RefundRequestLine("L1", 2),)
    )
    shop.app.restock(shop.ctx(), first, lines=(LineQuantity("L1", 2),))
    cancel(shop, second, "L1", 1, restock=True)
    cancel(shop, second, "L2", 1)
    shop.app.restock(shop.ctx(Source.WEB), second, lines=(LineQuantity("L2", 1),))

    assert levels(shop, connect) == {"SKU-1": 3, "SKU-2": 1}
    with connect() as conn:
        entries = VIEW.restocks(conn, shop.seller, "SKU-1")
        assert VIEW.levels(conn, shop.seller, "SKU-2")[0].quantity == 1
        assert VIEW.levels(conn, shop.seller, "SKU-9") == []
    assert [(e.order_id, e.quantity, e.cause_id is None) for e in entries] == [
        (first, 2, True),
        (second, 1, False),
    ]


def test_stock_is_kept_per_seller(app: Ledger, connect: base.Connect) -> None:
    """Two sellers restocking the same SKU each see only their own quantity and entries."""
    shops = [Scenario(app, new_seller("inventory-a")), Scenario(app, new_seller("inventory-b"))]
    for quantity, shop in enumerate(shops, start=1):
        order_id = shop.place(spec(Marketplace.WALMART, restock_in_ledger=True)).order_id
        cancel(shop, order_id, "L1", quantity)

    assert [levels(shop, connect) for shop in shops] == [{"SKU-1": 1}, {"SKU-1": 2}]
    with connect() as conn:
        assert [len(VIEW.restocks(conn, shop.seller, "SKU-1")) for shop in shops] == [1, 1]


@pytest.fixture
def own_shop(own_target: PostgresTarget) -> Iterator[Scenario]:
    """A seller in a schema of the test's own: a worker there follows this test's log, not the session's."""
    ledger = Ledger(env=own_target.eventsourcing_env())
    yield Scenario(ledger, new_seller("inventory"))
    ledger.close()


def test_worker_and_rebuild_agree(own_shop: Scenario, own_target: PostgresTarget) -> None:
    """A live worker's levels equal those a rebuild makes from the whole log."""
    shop, connect = own_shop, lambda: database.connect(own_target)
    order_id = shop.place(spec(Marketplace.WALMART)).order_id
    worker = base.ProjectionWorker(PROJECTION, connect, shop.app.recorder, shop.app.mapper)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert worker.is_active.wait(10)
        cancel(shop, order_id, "L1", 2)
        shop.app.restock(shop.ctx(), order_id, lines=(LineQuantity("L1", 1),))
        last = shop.app.restock(shop.ctx(), order_id, lines=(LineQuantity("L1", 1),)).notification_id
        with connect() as conn:
            assert base.wait_for(conn, PROJECTION.name, last or 0, 10)
            live = VIEW.levels(conn, shop.seller), VIEW.restocks(conn, shop.seller, "SKU-1")
    finally:
        worker.stop()
        thread.join(10)

    base.rebuild(PROJECTION, connect, shop.app.recorder, shop.app.mapper)

    with connect() as conn:
        assert (VIEW.levels(conn, shop.seller), VIEW.restocks(conn, shop.seller, "SKU-1")) == live
    assert [level.quantity for level in live[0]] == [2]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=order_specs, commands=steps, batch_size=st.integers(1, 8))
def test_levels_are_the_fold_of_each_orders_events(
    app: Ledger, connect: base.Connect, specs: list[OrderSpec], commands: list[Any], batch_size: int
) -> None:
    """Random commands, any batch size: each SKU's level and entries are the restocks in the orders' events."""
    shop = Scenario(app, new_seller("inventory-fold"))
    order_ids = shop.run(specs, commands)
    expected: Counter[str] = Counter()
    entries: dict[str, list[tuple[UUID, str, int]]] = {}
    for order_id in order_ids:
        events = list(app.events.get(order_id))
        skus = {line.line_id: line.sku for line in events[0].lines}
        for event in events:
            if isinstance(event, Order.Restocked):
                for line in event.lines:
                    expected[skus[line.line_id]] += line.quantity
                    entries.setdefault(skus[line.line_id], []).append(
                        (event.restock_id, line.line_id, line.quantity)
                    )

    assert levels(shop, connect, batch_size) == dict(expected)
    with connect() as conn:
        for sku, made in entries.items():
            listed = VIEW.restocks(conn, shop.seller, sku)
            assert sorted((e.restock_id, e.line_id, e.quantity) for e in listed) == sorted(made)
            assert [e.position for e in listed] == sorted(e.position for e in listed)

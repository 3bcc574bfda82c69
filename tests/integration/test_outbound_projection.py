"""The outbound sync queue on real PostgreSQL: which changes are queued, in what order, with what payload, how
the marketplace's answers settle them, and that a rebuild never re-sends what was sent."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
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
    rows,
    steps,
)

from ledger.aggregates.order import Order
from ledger.aggregates.values import (
    CancelReason,
    Carrier,
    DisputeOutcome,
    LineQuantity,
    Marketplace,
    RefundReason,
    RefundRequestLine,
    Requester,
    Source,
    SyncAction,
)
from ledger.application.ledger import Ledger
from ledger.integrations.outbound import OutboundProjection, item_id
from ledger.integrations.outbox import InvalidFilterError, OutboundItem, OutboundView
from ledger.projections import base

PROJECTION = OutboundProjection()
VIEW = OutboundView()


@pytest.fixture
def shop(app: Ledger) -> Scenario:
    return Scenario(app, new_seller("outbound"))


def spec(marketplace: Marketplace, **changes: Any) -> OrderSpec:
    """A paid order of two lines (2 and 1 units) in USD, bought three hours ago, on a managed account."""
    return replace(OrderSpec(marketplace, True, False, True, "USD", (2, 1), False, Source.IMPORT), **changes)


def queue(connect: base.Connect, app: Ledger, seller: str, batch_size: int = 500) -> list[OutboundItem]:
    """The seller's queue once the projection has caught up, oldest first."""
    catch_up(PROJECTION, connect, app, batch_size)
    with connect() as conn:
        return VIEW.list_items(conn, seller, limit=500)


def ship(shop: Scenario, order_id: UUID, source: Source = Source.API, **kwargs: Any) -> UUID:
    result = shop.app.ship(
        shop.ctx(source), order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING, **kwargs
    )
    return result.ids["shipment_id"]


def answer(shop: Scenario, order_id: UUID, action: SyncAction, reference: object, **kwargs: Any) -> None:
    """The dispatcher records what the marketplace said."""
    kwargs.setdefault("accepted", True)
    shop.app.record_sync_outcome(
        shop.ctx(Source.SYSTEM), order_id, action=action, reference=str(reference), **kwargs
    )


def dispatcher_sets(connect: base.Connect, item: UUID, **values: Any) -> None:
    """What the dispatcher does as it works: change an item directly, through the view, stamping updated_at."""
    assignments = ", ".join(f"{column} = %s" for column in values)
    with connect() as conn:
        conn.execute(
            f"UPDATE outbound_items SET {assignments}, updated_at = now() WHERE id = %s",
            (*values.values(), item),
        )


# ---------------------------------------------------------------------------------- what is queued


def test_changes_of_the_seller_are_queued_in_log_order(shop: Scenario, connect: base.Connect) -> None:
    """A Walmart order is acknowledged, then its shipment, cancellation and refund follow as 1, 2, 3, 4."""
    order_id = shop.place(spec(Marketplace.WALMART)).order_id
    shipment_id = ship(shop, order_id, lines=(LineQuantity("L1", 1),))
    cancellation_id = shop.app.cancel(
        shop.ctx(), order_id, reason=CancelReason.OUT_OF_STOCK, lines=(LineQuantity("L2", 1),)
    ).ids["cancellation_id"]
    refund_id = shop.app.refund(
        shop.ctx(), order_id, reason=RefundReason.DAMAGED, lines=(RefundRequestLine("L1", 1),)
    ).ids["refund_id"]

    items = queue(connect, shop.app, shop.seller)

    assert [(i.action, i.reference, i.sequence) for i in items] == [
        ("acknowledge", str(order_id), 1),
        ("ship", str(shipment_id), 2),
        ("cancel", str(cancellation_id), 3),
        ("refund", str(refund_id), 4),
    ]
    for item in items:
        assert item.id == item_id(order_id, item.action, item.reference)
        assert item.idempotency_key == str(item.id)
        assert (item.order_id, item.marketplace, item.state, item.attempts) == (
            order_id,
            "walmart",
            "pending",
            0,
        )
        assert item.next_attempt_at == item.created_at
        assert item.payload["marketplace_order_id"] == "MO-1"
    assert [i.position for i in items] == sorted(i.position for i in items)


def test_payloads_carry_what_the_marketplace_request_needs(shop: Scenario, connect: base.Connect) -> None:
    """Ship: carrier, tracking, lines with SKUs; cancel: canonical reason; refund: amounts as decimal strings."""
    order_id = shop.place(spec(Marketplace.AMAZON)).order_id
    shipped_at = shop.now - timedelta(minutes=5)
    ship(shop, order_id, lines=(LineQuantity("L1", 2),), shipping_class="Expedited", shipped_at=shipped_at)
    shop.app.cancel(shop.ctx(), order_id, reason=CancelReason.PRICING_ERROR)
    shipment = next(iter(shop.app.get_order(order_id).shipments))
    answer(shop, order_id, SyncAction.SHIP, shipment.shipment_id)  # Amazon refunds only charged units
    shop.app.refund(
        shop.ctx(), order_id, reason=RefundReason.CUSTOMER_RETURN, lines=(RefundRequestLine("L1", 1),)
    )
    [refund] = shop.app.get_order(order_id).refunds

    ship_item, cancel_item, refund_item = queue(connect, shop.app, shop.seller)

    assert ship_item.payload == {
        "marketplace_order_id": "MO-1",
        "shipment_id": str(shipment.shipment_id),
        "carrier": "ups",
        "tracking_number": UPS_TRACKING,
        "shipping_class": "Expedited",
        "shipped_at": shipped_at.isoformat(),
        "lines": [{"line_id": "L1", "sku": "SKU-1", "quantity": 2}],
    }
    assert cancel_item.payload["reason"] == "pricing_error"
    assert cancel_item.payload["requested_by"] == "seller"
    assert cancel_item.payload["lines"] == [{"line_id": "L2", "sku": "SKU-2", "quantity": 1}]
    assert cancel_item.payload["restock"] is False  # Amazon restocks by itself and takes no choice
    [line] = refund.lines
    assert refund_item.payload == {
        "marketplace_order_id": "MO-1",
        "refund_id": str(refund.refund_id),
        "reason": "customer_return",
        "currency": "USD",
        "item_amount": "12.50",
        "tax_amount": str(line.tax_amount),
        "shipping_amount": "0",
        "total": str(refund.total),
        "lines": [
            {
                "line_id": "L1",
                "sku": "SKU-1",
                "quantity": 1,
                "item_amount": "12.50",
                "tax_amount": str(line.tax_amount),
                "shipping_amount": "0",
                "total": str(line.total),
            }
        ],
    }


def test_rakuten_cancellation_asks_the_marketplace_to_restock(shop: Scenario, connect: base.Connect) -> None:
    """Rakuten takes a restock choice: its policy restocks on the marketplace, so the flag is true."""
    order_id = shop.place(spec(Marketplace.RAKUTEN)).order_id
    shop.app.cancel(shop.ctx(), order_id, reason=CancelReason.OUT_OF_STOCK)

    [item] = queue(connect, shop.app, shop.seller)

    assert (item.action, item.payload["restock"]) == ("cancel", True)


def test_third_party_managed_orders_are_never_queued(shop: Scenario, connect: base.Connect) -> None:
    """Orders a third party fulfils make no item at all, not even Walmart's acknowledgement."""
    order_id = shop.place(spec(Marketplace.WALMART, fulfillment_managed=False)).order_id
    ship(shop, order_id, lines=(LineQuantity("L1", 1),))
    shop.app.cancel(shop.ctx(), order_id, reason=CancelReason.OUT_OF_STOCK)
    shop.app.refund(shop.ctx(), order_id, reason=RefundReason.DAMAGED)

    assert queue(connect, shop.app, shop.seller) == []


def test_facts_from_the_marketplace_are_not_sent_back(shop: Scenario, connect: base.Connect) -> None:
    """Shipments, cancellations, refunds and dispute closings the marketplace reported make no item."""
    order_id = shop.place(spec(Marketplace.AMAZON)).order_id
    shipment_id = ship(shop, order_id, Source.MARKETPLACE, lines=(LineQuantity("L1", 1),))
    answer(shop, order_id, SyncAction.SHIP, shipment_id)
    shop.app.refund(shop.ctx(Source.MARKETPLACE), order_id, reason=RefundReason.NOT_RECEIVED)
    shop.app.cancel(
        shop.ctx(Source.MARKETPLACE),
        order_id,
        reason=CancelReason.BUYER_CANCELLED,
        lines=(LineQuantity("L2", 1),),
    )
    dispute_id = shop.app.open_dispute(shop.ctx(Source.MARKETPLACE), order_id, reason="late").ids[
        "dispute_id"
    ]
    shop.app.close_dispute(
        shop.ctx(Source.MARKETPLACE), order_id, dispute_id=dispute_id, outcome=DisputeOutcome.REJECTED
    )
    assert queue(connect, shop.app, shop.seller) == []

    ship(shop, order_id)

    assert [i.action for i in queue(connect, shop.app, shop.seller)] == ["ship"]


def test_a_cancellation_the_marketplace_made_is_not_requested(shop: Scenario, connect: base.Connect) -> None:
    """A cancellation requested by the marketplace, even when an operator records it, makes no item."""
    order_id = shop.place(spec(Marketplace.WALMART)).order_id
    shop.app.cancel(
        shop.ctx(), order_id, reason=CancelReason.FRAUD_SUSPECTED, requested_by=Requester.MARKETPLACE
    )

    assert [i.action for i in queue(connect, shop.app, shop.seller)] == ["acknowledge"]


def test_ebay_cancellation_of_a_paid_order_is_requested_once(shop: Scenario, connect: base.Connect) -> None:
    """The dispute it opens is the cancel request; the cancellation that follows acceptance makes no item."""
    order_id = shop.place(spec(Marketplace.EBAY)).order_id
    dispute_id = shop.app.cancel(shop.ctx(), order_id, reason=CancelReason.OUT_OF_STOCK).ids["dispute_id"]
    shop.app.close_dispute(
        shop.ctx(Source.MARKETPLACE), order_id, dispute_id=dispute_id, outcome=DisputeOutcome.ACCEPTED
    )
    assert shop.app.get_order(order_id).cancelled_units == 3

    [item] = queue(connect, shop.app, shop.seller)

    assert (item.action, item.reference) == ("cancel", str(dispute_id))
    assert item.payload["dispute_id"] == str(dispute_id)
    assert item.payload["cancellation_id"] is None
    assert item.payload["reason"] == "out_of_stock"
    assert [line["quantity"] for line in item.payload["lines"]] == [2, 1]


def test_only_dispute_closings_the_marketplace_has_a_call_for_are_sent(
    shop: Scenario, connect: base.Connect
) -> None:
    """eBay takes the acceptance of a buyer's payment dispute; withdrawing an eBay cancellation request, and
    any closing on Amazon (no call closes an A-to-z claim), are never queued and show `not_sent: no_call`."""
    order_id = shop.place(spec(Marketplace.EBAY)).order_id
    cancel_dispute = shop.app.cancel(shop.ctx(), order_id, reason=CancelReason.OUT_OF_STOCK).ids["dispute_id"]
    shop.app.close_dispute(shop.ctx(), order_id, dispute_id=cancel_dispute, outcome=DisputeOutcome.WITHDRAWN)
    claim = shop.app.open_dispute(
        shop.ctx(Source.MARKETPLACE), order_id, reason="not received", marketplace_dispute_id="EB-9"
    ).ids["dispute_id"]
    shop.app.close_dispute(shop.ctx(), order_id, dispute_id=claim, outcome=DisputeOutcome.ACCEPTED)
    amazon_id = shop.place(spec(Marketplace.AMAZON)).order_id
    a_to_z = shop.app.open_dispute(
        shop.ctx(Source.MARKETPLACE), amazon_id, reason="not received", marketplace_dispute_id="AZ-1"
    ).ids["dispute_id"]
    shop.app.close_dispute(shop.ctx(), amazon_id, dispute_id=a_to_z, outcome=DisputeOutcome.ACCEPTED)

    items = queue(connect, shop.app, shop.seller)

    assert [(i.action, i.reference) for i in items] == [
        ("cancel", str(cancel_dispute)),
        ("close_dispute", str(claim)),
    ]
    assert items[1].payload == {
        "marketplace_order_id": "MO-1",
        "dispute_id": str(claim),
        "kind": "claim",
        "marketplace_dispute_id": "EB-9",
        "outcome": "accepted",
    }
    ebay_sync = {(e.action, e.reference): (e.state, e.reason) for e in shop.app.get_order(order_id).sync}
    assert ebay_sync[("close_dispute", str(cancel_dispute))] == ("not_sent", "no_call")
    assert ebay_sync[("close_dispute", str(claim))] == ("pending", None)
    [amazon_entry] = shop.app.get_order(amazon_id).sync
    assert (amazon_entry.action, amazon_entry.state, amazon_entry.reason) == (
        "close_dispute",
        "not_sent",
        "no_call",
    )


def test_claims_and_restocks_are_not_queued(shop: Scenario, connect: base.Connect) -> None:
    """A claim starts at the marketplace, and no marketplace takes a restock message."""
    order_id = shop.place(spec(Marketplace.AMAZON)).order_id
    shop.app.open_dispute(shop.ctx(), order_id, reason="damaged in transit")
    shop.app.cancel(
        shop.ctx(Source.MARKETPLACE),
        order_id,
        reason=CancelReason.OUT_OF_STOCK,
        lines=(LineQuantity("L2", 1),),
    )
    shop.app.restock(shop.ctx(), order_id, lines=(LineQuantity("L2", 1),))

    assert queue(connect, shop.app, shop.seller) == []


def test_walmart_orders_are_acknowledged_however_they_arrive(shop: Scenario, connect: base.Connect) -> None:
    """The acknowledgement answers Walmart's own message, so even an order it pushed in is acknowledged."""
    walmart = shop.place(spec(Marketplace.WALMART, source=Source.MARKETPLACE, paid=False)).order_id
    shop.place(spec(Marketplace.JET))

    [item] = queue(connect, shop.app, shop.seller)

    assert (item.order_id, item.action, item.reference) == (walmart, "acknowledge", str(walmart))
    assert item.payload["lines"] == [
        {"line_id": "L1", "sku": "SKU-1", "quantity": 2},
        {"line_id": "L2", "sku": "SKU-2", "quantity": 1},
    ]


# ------------------------------------------------------------------------------------- answers


def test_answers_settle_their_items(shop: Scenario, connect: base.Connect) -> None:
    """Accepted: succeeded with the marketplace's reference; permanently rejected: dead; transiently: failed."""
    order_id = shop.place(spec(Marketplace.WALMART, quantities=(3, 1))).order_id
    first = ship(shop, order_id, lines=(LineQuantity("L1", 1),))
    second = ship(shop, order_id, lines=(LineQuantity("L1", 1),))
    cancellation = shop.app.cancel(
        shop.ctx(), order_id, reason=CancelReason.OUT_OF_STOCK, lines=(LineQuantity("L2", 1),)
    ).ids["cancellation_id"]
    before = queue(connect, shop.app, shop.seller)  # the answers below arrive in later batches
    answer(shop, order_id, SyncAction.ACKNOWLEDGE, order_id, marketplace_reference="WM-ACK")
    answer(shop, order_id, SyncAction.SHIP, first, marketplace_reference="WM-1")
    reject = {"accepted": False, "error_code": "E42", "message": "bad tracking number"}
    answer(shop, order_id, SyncAction.SHIP, second, permanent=True, **reject)
    answer(shop, order_id, SyncAction.CANCEL, cancellation, permanent=False, **reject)

    after = queue(connect, shop.app, shop.seller)

    assert [i.state for i in before] == ["pending"] * 4
    assert [(i.action, i.state, i.marketplace_reference, i.last_error) for i in after] == [
        ("acknowledge", "succeeded", "WM-ACK", None),
        ("ship", "succeeded", "WM-1", None),
        ("ship", "dead", None, "E42: bad tracking number"),
        ("cancel", "failed", None, "E42: bad tracking number"),
    ]
    assert all(i.attempts == 0 for i in after)  # attempts are the dispatcher's count

    answer(shop, order_id, SyncAction.CANCEL, cancellation)
    answer(shop, order_id, SyncAction.SHIP, first, permanent=True, **reject)

    settled = {i.reference: i.state for i in queue(connect, shop.app, shop.seller)}
    assert (settled[str(cancellation)], settled[str(first)]) == ("succeeded", "succeeded")


def test_an_answer_about_a_cancellation_dispute_settles_the_cancel_request(
    shop: Scenario, connect: base.Connect
) -> None:
    """The order takes answers about a dispute as open_dispute; that settles the cancel item it made."""
    order_id = shop.place(spec(Marketplace.EBAY)).order_id
    dispute_id = shop.app.cancel(shop.ctx(), order_id, reason=CancelReason.OUT_OF_STOCK).ids["dispute_id"]
    answer(shop, order_id, SyncAction.OPEN_DISPUTE, dispute_id, marketplace_reference="EB-CANCEL-1")

    [item] = queue(connect, shop.app, shop.seller)

    assert (item.action, item.state, item.marketplace_reference) == ("cancel", "succeeded", "EB-CANCEL-1")


def test_a_rejection_never_undoes_a_later_retry(shop: Scenario, connect: base.Connect) -> None:
    """An operator retried a dead item before the projection saw the rejection: the retry stands."""
    order_id = shop.place(spec(Marketplace.JET)).order_id
    shipment_id = ship(shop, order_id)
    [item] = queue(connect, shop.app, shop.seller)
    answer(
        shop,
        order_id,
        SyncAction.SHIP,
        shipment_id,
        accepted=False,
        error_code="E1",
        message="x",
        permanent=True,
    )
    dispatcher_sets(connect, item.id, state="pending", attempts=3, last_error=None)

    [after] = queue(connect, shop.app, shop.seller)

    assert (after.state, after.attempts, after.last_error) == ("pending", 3, None)


def test_an_acceptance_never_undoes_a_later_replay(shop: Scenario, connect: base.Connect) -> None:
    """An operator replayed an item after its acceptance was recorded, before the projection saw it: the item
    is sent again (the marketplace dedupes it), not marked succeeded by the older answer."""
    order_id = shop.place(spec(Marketplace.JET)).order_id
    shipment_id = ship(shop, order_id)
    [item] = queue(connect, shop.app, shop.seller)
    answer(shop, order_id, SyncAction.SHIP, shipment_id, accepted=True, marketplace_reference="JET-1")
    dispatcher_sets(connect, item.id, state="pending", attempts=1)

    [after] = queue(connect, shop.app, shop.seller)

    assert (after.state, after.attempts) == ("pending", 1)  # the dispatcher sends it again, and marks it


# ------------------------------------------------------------------------------------- rebuilds


def rebuild(app: Ledger, connect: base.Connect) -> int:
    generation, _ = base.rebuild(PROJECTION, connect, app.recorder, app.mapper)
    return generation


def test_rebuild_keeps_what_the_dispatcher_did(shop: Scenario, connect: base.Connect) -> None:
    """Items the dispatcher took, finished or failed keep their state, attempts and keys across a rebuild."""
    order_id = shop.place(spec(Marketplace.WALMART, quantities=(3, 3))).order_id
    for _ in range(3):
        ship(shop, order_id, lines=(LineQuantity("L1", 1),))
    ack, taken, done, failed = queue(connect, shop.app, shop.seller)
    retry_at = datetime(2030, 1, 1, tzinfo=UTC)
    dispatcher_sets(connect, taken.id, state="in_flight", attempts=1)
    dispatcher_sets(connect, done.id, state="succeeded", attempts=1, marketplace_reference="WM-7")
    dispatcher_sets(
        connect, failed.id, state="failed", attempts=2, next_attempt_at=retry_at, last_error="timeout"
    )
    with connect() as conn:
        before = VIEW.list_items(conn, shop.seller)

    rebuild(shop.app, connect)

    with connect() as conn:
        after = VIEW.list_items(conn, shop.seller)
    assert after == before
    assert [(i.state, i.attempts) for i in after] == [
        ("pending", 0),
        ("in_flight", 1),
        ("succeeded", 1),
        ("failed", 2),
    ]
    assert (after[2].marketplace_reference, after[3].next_attempt_at, after[3].last_error) == (
        "WM-7",
        retry_at,
        "timeout",
    )
    assert ack.idempotency_key == after[0].idempotency_key


def test_rebuild_takes_answers_recorded_after_the_dispatchers_last_change(
    shop: Scenario, connect: base.Connect
) -> None:
    """The old generation had not seen the answers yet: the rebuilt one settles the items all the same."""
    order_id = shop.place(spec(Marketplace.JET, quantities=(3,))).order_id
    shipments = [ship(shop, order_id, lines=(LineQuantity("L1", 1),)) for _ in range(3)]
    accepted, rejected, retried = queue(connect, shop.app, shop.seller)
    for item in (accepted, rejected, retried):
        dispatcher_sets(connect, item.id, state="in_flight", attempts=1)
    answer(shop, order_id, SyncAction.SHIP, shipments[0], marketplace_reference="JET-1")
    no = {"accepted": False, "error_code": "E9", "message": "closed order", "permanent": True}
    answer(shop, order_id, SyncAction.SHIP, shipments[1], **no)
    answer(shop, order_id, SyncAction.SHIP, shipments[2], **no)
    dispatcher_sets(
        connect, retried.id, state="pending", attempts=1
    )  # an operator's retry after the rejection

    rebuild(shop.app, connect)

    with connect() as conn:
        states = [(i.state, i.last_error) for i in VIEW.list_items(conn, shop.seller)]
    assert states == [("succeeded", None), ("dead", "E9: closed order"), ("pending", None)]


def test_worker_queues_changes_as_they_happen(shop: Scenario, connect: base.Connect) -> None:
    """A live worker queues a new shipment and settles it when the marketplace's acceptance is recorded."""
    order_id = shop.place(spec(Marketplace.AMAZON)).order_id
    worker = base.ProjectionWorker(PROJECTION, connect, shop.app.recorder, shop.app.mapper)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert worker.is_active.wait(10)
        result = shop.app.ship(shop.ctx(), order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
        with connect() as conn:
            assert base.wait_for(conn, PROJECTION.name, result.notification_id or 0, 10)
            [item] = VIEW.list_items(conn, shop.seller)
        assert (item.action, item.state) == ("ship", "pending")

        answered = shop.app.record_sync_outcome(
            shop.ctx(Source.SYSTEM), order_id, action=SyncAction.SHIP, reference=item.reference, accepted=True
        )
        with connect() as conn:
            assert base.wait_for(conn, PROJECTION.name, answered.notification_id or 0, 10)
            got = VIEW.get_item(conn, shop.seller, item.id)
        assert got is not None
        assert got.state == "succeeded"
    finally:
        worker.stop()
        thread.join(10)


# ----------------------------------------------------------------------------------------- reads


def test_view_filters_pages_and_keeps_to_its_seller(app: Ledger, connect: base.Connect) -> None:
    """Filters narrow the list, pages cover it once in log order, and another seller's items stay unseen."""
    shop, other = Scenario(app, new_seller("outbound-view")), Scenario(app, new_seller("outbound-other"))
    walmart = shop.place(spec(Marketplace.WALMART, quantities=(3,))).order_id
    jet = shop.place(spec(Marketplace.JET, quantities=(3,))).order_id
    for order_id in (walmart, jet, walmart, jet):
        ship(shop, order_id, lines=(LineQuantity("L1", 1),))
    foreign = other.place(spec(Marketplace.WALMART)).order_id
    everything = queue(connect, app, shop.seller)
    dispatcher_sets(connect, everything[1].id, state="dead", attempts=5)

    with connect() as conn:
        items = VIEW.list_items(conn, shop.seller)
        pages, after = [], None
        while page := VIEW.list_items(conn, shop.seller, limit=2, after_id=after):
            pages.append(page)
            after = page[-1].id
        assert [i.id for i in VIEW.list_items(conn, shop.seller, order_id=jet)] == [
            i.id for i in items if i.order_id == jet
        ]
        assert {i.marketplace for i in VIEW.list_items(conn, shop.seller, marketplace="jet")} == {"jet"}
        assert [i.id for i in VIEW.list_items(conn, shop.seller, state="dead")] == [items[1].id]
        assert (
            VIEW.list_items(conn, shop.seller, state="pending", marketplace="walmart", limit=1)[0] == items[0]
        )
        assert VIEW.list_items(conn, shop.seller, order_id=foreign) == []
        assert VIEW.get_item(conn, shop.seller, items[0].id) == items[0]
        [foreign_item] = VIEW.list_items(conn, other.seller)
        assert VIEW.get_item(conn, shop.seller, foreign_item.id) is None
        assert VIEW.list_items(conn, shop.seller, after_id=foreign_item.id) == []
        for bad in ({"state": "lost"}, {"marketplace": "etsy"}, {"limit": 0}, {"limit": 501}):
            with pytest.raises(InvalidFilterError):
                VIEW.list_items(conn, shop.seller, **bad)
    assert len(items) == 5
    assert [i.id for page in pages for i in page] == [i.id for i in items]
    assert [len(page) for page in pages] == [2, 2, 1]


# ------------------------------------------------------------------------------------- property


def expected_queue(events: list[Any]) -> list[tuple[str, str, str]]:
    """One order's queue by the rules, straight from its events: (action, reference, state) in order."""
    imported = events[0]
    if imported.third_party_managed:
        return []
    states: dict[tuple[str, str], str] = {}
    kinds: dict[str, str] = {}  # dispute id -> kind
    if imported.marketplace == "walmart":
        states["acknowledge", str(imported.originator_id)] = "pending"
    for event in events[1:]:
        if isinstance(event, Order.MarketplaceAcknowledged | Order.MarketplaceRejected):
            keys = [(event.action, event.reference)]
            if event.action == "open_dispute":
                keys.append(("cancel", event.reference))
            for key in keys:
                if states.get(key, "succeeded") == "succeeded":
                    continue
                if isinstance(event, Order.MarketplaceAcknowledged):
                    states[key] = "succeeded"
                elif event.permanent:
                    states[key] = "dead"
                elif states[key] in ("pending", "failed"):
                    states[key] = "failed"
            continue
        if isinstance(event, Order.DisputeOpened):
            kinds[str(event.dispute_id)] = event.kind
        if event.source == "marketplace":
            continue
        if isinstance(event, Order.Shipped):
            states["ship", str(event.shipment_id)] = "pending"
        elif (
            isinstance(event, Order.Cancelled)
            and not event.dispute_id
            and event.requested_by != "marketplace"
        ):
            states["cancel", str(event.cancellation_id)] = "pending"
        elif isinstance(event, Order.DisputeOpened) and event.kind == "cancellation":
            states["cancel", str(event.dispute_id)] = "pending"
        elif isinstance(event, Order.Refunded):
            states["refund", str(event.refund_id)] = "pending"
        elif (
            isinstance(event, Order.DisputeClosed)
            and imported.marketplace == "ebay"  # the one dispute call any marketplace has
            and kinds.get(str(event.dispute_id)) == "claim"
            and event.outcome == "accepted"
        ):
            states["close_dispute", str(event.dispute_id)] = "pending"
    return [(action, reference, state) for (action, reference), state in states.items()]


def event_at(app: Ledger, position: int) -> Any:
    [notification] = app.recorder.select_notifications(start=position, limit=1)
    return app.mapper.to_domain_event(notification)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=order_specs, commands=steps, batch_size=st.integers(1, 8))
def test_queue_is_the_fold_of_each_orders_events(
    app: Ledger, connect: base.Connect, specs: list[OrderSpec], commands: list[Any], batch_size: int
) -> None:
    """Random commands, any batch size: each order's queue is its events' fold, 1..n, no TPM or marketplace facts."""
    shop = Scenario(app, new_seller("outbound-fold"))
    order_ids = shop.run(specs, commands)
    items = queue(connect, app, shop.seller, batch_size)

    for order_id in order_ids:
        events = list(app.events.get(order_id))
        mine = [i for i in items if i.order_id == order_id]
        assert [(i.action, i.reference, i.state) for i in mine] == expected_queue(events)
        assert [i.sequence for i in mine] == list(range(1, len(mine) + 1))
        assert [i.position for i in mine] == sorted(i.position for i in mine)
    for item in items:
        made_by = event_at(app, item.position)
        assert made_by.originator_id == item.order_id
        assert not next(iter(app.events.get(item.order_id))).third_party_managed
        assert made_by.source != "marketplace" or item.action == "acknowledge"
        assert item.idempotency_key == str(item_id(item.order_id, item.action, item.reference))
    assert len(rows(connect, "SELECT 1 FROM outbound_items WHERE seller = %s", shop.seller)) == len(items)


def test_a_voided_shipment_withdraws_its_queued_confirmation(shop: Scenario, connect: base.Connect) -> None:
    """Voiding a shipment whose confirmation is still queued withdraws that item (resolved, saying why): it
    is never sent, nothing waits for it; the shipment that replaces it is queued as usual."""
    order_id = shop.place(spec(Marketplace.AMAZON)).order_id
    first = ship(shop, order_id)
    queue(connect, shop.app, shop.seller)  # queued before the void
    shop.app.void_shipment(shop.ctx(), order_id, shipment_id=first, reason="wrong tracking number")
    second = ship(shop, order_id)

    items = queue(connect, shop.app, shop.seller)

    assert [(i.reference, i.state) for i in items] == [(str(first), "resolved"), (str(second), "pending")]
    assert items[0].last_error == "withdrawn: the shipment was voided (wrong tracking number)"

"""The marketplace's word on what it owns: its cancellations recorded with attention, and voiding shipments."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ledger.aggregates.errors import (
    RefundBeforeChargeError,
    ShipmentAcknowledgedError,
    ShipmentNotFoundError,
    ShipmentVoidedError,
)
from ledger.aggregates.policies import ORDER_CANCELED
from ledger.aggregates.values import (
    CancelReason,
    Marketplace,
    RefundReason,
    Requester,
    Source,
    SyncAction,
)

CANCELED = "Order 111-1 is canceled"


def refuse_as_canceled(shop, order_id, shipment_id):
    """The dispatcher records Amazon's refusal of the confirmation: the order is cancelled there."""
    return shop.ledger.record_sync_outcome(
        shop.ctx, order_id, action=SyncAction.SHIP, reference=str(shipment_id), accepted=False,
        error_code=ORDER_CANCELED, message=CANCELED, permanent=True,
    )  # fmt: skip


def marketplace_cancels(shop, order_id):
    """An import reports that the marketplace cancelled the whole order."""
    ctx = replace(shop.ctx, source=Source.MARKETPLACE)
    return shop.ledger.cancel(
        ctx, order_id, reason=CancelReason.BUYER_CANCELLED, requested_by=Requester.MARKETPLACE
    )


def test_a_shipment_refused_because_the_order_is_canceled_records_the_marketplaces_word(shop):
    """The buyer cancelled on Amazon while the seller shipped: the refusal records the cancellation on the
    order (attention), and the seller can still act: void, refund or restock."""
    order_id = shop.order(Marketplace.AMAZON)
    shipment_id = shop.ship(order_id).ids["shipment_id"]

    result = refuse_as_canceled(shop, order_id, shipment_id)

    assert result.events == ("MarketplaceRejected", "MarketplaceCancelled")
    actions = shop.details(order_id).actions
    assert actions.void == (shipment_id,)  # the way out: void the refused shipment
    assert (actions.ship, actions.cancel) == (False, False)
    details = shop.details(order_id)
    assert details.attention
    assert {(i.line_id, i.quantity) for i in details.marketplace_cancelled} == {("A", 2), ("B", 3)}
    [entry] = details.sync
    assert (entry.state, entry.error_code) == ("dead", ORDER_CANCELED)


def test_voiding_the_refused_shipment_cancels_the_order_as_the_marketplace_did(shop):
    """Voiding unships the units; what the marketplace cancelled is cancelled now, and attention clears."""
    order_id = shop.order(Marketplace.AMAZON)
    shipment_id = shop.ship(order_id).ids["shipment_id"]
    refuse_as_canceled(shop, order_id, shipment_id)

    result = shop.ledger.void_shipment(shop.ctx, order_id, shipment_id=shipment_id, reason="buyer cancelled")

    assert result.events == ("ShipmentVoided", "Cancelled")
    details = shop.details(order_id)
    assert (details.status, details.open, details.shipped_units, details.cancelled_units) == (
        "canceled", False, 0, 5,
    )  # fmt: skip
    assert not details.attention
    assert details.shipments[0].voided
    assert {(e.action, e.state, e.reason) for e in details.sync} == {
        ("ship", "not_sent", "voided"),  # refused, then voided: nothing is left to send
        ("cancel", "not_sent", "from_marketplace"),
    }


def test_an_import_reporting_shipped_units_cancelled_needs_attention_not_a_refusal(shop):
    """The race seen from the import: the marketplace reports cancelled what the ledger shipped and it never
    acknowledged; the ledger records that (no 409), and refunding resolves it."""
    order_id = shop.order(Marketplace.WALMART)
    shop.ship(order_id, {"A": 2})

    result = marketplace_cancels(shop, order_id)

    assert result.events == ("Cancelled", "MarketplaceCancelled")
    details = shop.details(order_id)
    assert details.attention
    assert details.cancelled_units == 3
    shop.refund(order_id, reason=RefundReason.OTHER)
    assert not shop.details(order_id).attention


def test_a_repeated_report_records_nothing_twice(shop):
    """The same cancellation reported again (next import) records nothing new."""
    order_id = shop.order(Marketplace.AMAZON)
    shipment_id = shop.ship(order_id).ids["shipment_id"]
    refuse_as_canceled(shop, order_id, shipment_id)
    version = shop.version(order_id)

    with pytest.raises(Exception, match="already"):
        marketplace_cancels(shop, order_id)

    assert shop.version(order_id) == version


def test_a_refusal_after_the_import_recorded_the_cancellation_is_recorded_without_a_second_one(shop):
    """The buyer cancels on Amazon, the import records it (the unacknowledged shipment's units disputed), then
    Amazon refuses the confirmation: the refusal is still recorded (it was a 409 the dispatcher could not
    record, so the order's history lost the answer), and nothing is cancelled twice."""
    order_id = shop.order(Marketplace.AMAZON)
    shipment_id = shop.ship(order_id, {"A": 2}).ids["shipment_id"]
    marketplace_cancels(shop, order_id)
    before = shop.details(order_id)
    assert {(i.line_id, i.quantity) for i in before.marketplace_cancelled} == {("A", 2)}

    result = refuse_as_canceled(shop, order_id, shipment_id)

    assert result.events == ("MarketplaceRejected",)
    details = shop.details(order_id)
    assert (details.cancelled_units, details.marketplace_cancelled) == (
        before.cancelled_units, before.marketplace_cancelled,
    )  # fmt: skip
    assert details.attention
    assert shop.details(order_id).actions.void == (shipment_id,)


def test_an_import_cancelling_a_line_partly_shipped_keeps_the_shipped_units_reported(shop):
    """The marketplace cancels the whole order while one unit of line A is shipped (not acknowledged) and one
    is open: the open one is cancelled, and the shipped one stays reported with attention (the cancellation of
    the open unit used to erase the report, leaving the ledger shipped and the marketplace cancelled)."""
    order_id = shop.order(Marketplace.AMAZON)
    shop.ship(order_id, {"A": 1})

    result = marketplace_cancels(shop, order_id)

    assert result.events == ("Cancelled", "MarketplaceCancelled")
    details = shop.details(order_id)
    assert details.attention
    assert {(i.line_id, i.quantity) for i in details.marketplace_cancelled} == {("A", 1)}
    assert details.cancelled_units == 4


def test_an_acknowledged_shipment_cannot_be_voided(shop):
    """Once the marketplace acknowledged a shipment, voiding is 409 shipment-acknowledged."""
    order_id = shop.order(Marketplace.AMAZON)
    shipment_id = shop.ship(order_id).ids["shipment_id"]
    shop.acknowledge(order_id, shipment_id)

    with pytest.raises(ShipmentAcknowledgedError) as refused:
        shop.ledger.void_shipment(shop.ctx, order_id, shipment_id=shipment_id, reason="wrong parcel")

    assert refused.value.code == "shipment-acknowledged"
    assert shop.details(order_id).shipped_units == 5


def test_an_unacknowledged_shipment_is_voided_and_its_units_ship_again(shop):
    """A pending shipment (wrong tracking number) is voided: its units can ship again; twice is refused."""
    order_id = shop.order(Marketplace.EBAY)
    shipment_id = shop.ship(order_id, {"A": 1}).ids["shipment_id"]

    shop.ledger.void_shipment(shop.ctx, order_id, shipment_id=shipment_id, reason="wrong tracking number")

    assert shop.line(order_id, "A").shippable == 2
    assert [(e.state, e.reason) for e in shop.details(order_id).sync] == [("not_sent", "voided")]
    with pytest.raises(ShipmentVoidedError):
        shop.ledger.void_shipment(shop.ctx, order_id, shipment_id=shipment_id, reason="again")
    with pytest.raises(ShipmentNotFoundError):
        shop.ledger.void_shipment(shop.ctx, order_id, shipment_id=order_id, reason="no such shipment")
    shop.ship(order_id)
    assert shop.details(order_id).status == "shipped"


def test_an_amazon_shipment_never_acknowledged_leaves_void_then_cancel(shop):
    """Case 7: Amazon refused the confirmation for good (not a cancellation): a refund is refused with what to
    do next, and voiding then cancelling gets the order out; a Third Party Managed order refunds at once."""
    order_id = shop.order(Marketplace.AMAZON)
    shipment_id = shop.ship(order_id).ids["shipment_id"]
    shop.ledger.record_sync_outcome(
        shop.ctx, order_id, action=SyncAction.SHIP, reference=str(shipment_id), accepted=False,
        error_code="InvalidInput", message="bad carrier", permanent=True,
    )  # fmt: skip

    with pytest.raises(RefundBeforeChargeError, match="void the shipment"):
        shop.refund(order_id, reason=RefundReason.OTHER)
    assert shop.details(order_id).attention  # a change refused for good

    shop.ledger.void_shipment(shop.ctx, order_id, shipment_id=shipment_id, reason="refused by Amazon")
    shop.cancel(order_id, reason=CancelReason.OUT_OF_STOCK)
    details = shop.details(order_id)
    assert (details.status, details.attention) == ("canceled", False)

    managed_elsewhere = shop.order(Marketplace.AMAZON, fulfillment_managed=False)
    shop.ship(managed_elsewhere)
    assert shop.refund(managed_elsewhere, reason=RefundReason.OTHER).events == ("Refunded",)

"""Disputes (eBay's cancellation flow and buyers' claims) and restocking into the ledger's stock."""

from __future__ import annotations

import pytest

from ledger.aggregates.errors import (
    DisputeAlreadyClosedError,
    DisputeNotFoundError,
    InvalidQuantityError,
    NothingToCancelError,
    OverRestockError,
    ReasonRequiredError,
    ShipDuringCancellationDisputeError,
    UnknownLineError,
)
from ledger.aggregates.values import (
    CancelReason,
    DisputeKind,
    DisputeOutcome,
    LineQuantity,
    Marketplace,
    OrderStatus,
    RefundRequestLine,
)

ALL = list(Marketplace)
NOT_ACCEPTED = [DisputeOutcome.REJECTED, DisputeOutcome.WITHDRAWN]


def close(shop, order_id, dispute_id, outcome):
    return shop.ledger.close_dispute(shop.ctx, order_id, dispute_id=dispute_id, outcome=outcome)


# ------------------------------------------------------------------------ eBay cancellation flow


@pytest.mark.parametrize("lines", [None, {"A": 2, "B": 3}], ids=["implied", "named"])
def test_ebay_paid_cancellation_opens_a_cancellation_dispute(shop, lines):
    """On eBay, the seller's cancellation of a paid order opens a cancellation dispute and cancels nothing."""
    order_id = shop.order(Marketplace.EBAY)

    result = shop.cancel(order_id, lines, reason=CancelReason.OUT_OF_STOCK)

    details = shop.details(order_id)
    assert result.events == ("DisputeOpened",)
    (dispute,) = details.disputes
    assert dispute.dispute_id == result.ids["dispute_id"]
    assert dispute.kind == DisputeKind.CANCELLATION.value
    assert dispute.is_open
    assert dispute.reason == CancelReason.OUT_OF_STOCK.value
    expected = {"A": 2, "B": 3}
    assert {item.line_id: item.quantity for item in dispute.lines} == expected
    assert details.cancelled_units == 0
    assert details.cancellations == ()
    assert details.open
    assert details.dispute_status == "open"
    assert {line.line_id: line.pending_cancel for line in details.lines if line.pending_cancel} == expected


@pytest.mark.parametrize("lines", [None, {"A": 1}, {"B": 1}], ids=["all", "held-line", "other-line"])
def test_ebay_order_ships_nothing_during_a_cancellation_dispute(shop, lines):
    """While a cancellation dispute is open, no unit of the order ships, not even units outside it."""
    order_id = shop.order(Marketplace.EBAY)
    shop.cancel(order_id)

    with pytest.raises(ShipDuringCancellationDisputeError):
        shop.ship(order_id, lines)

    assert shop.details(order_id).shipped_units == 0


def test_units_held_by_a_cancellation_dispute_cannot_be_cancelled_again(shop):
    """Units already held by a cancellation dispute are not cancellable a second time."""
    order_id = shop.order(Marketplace.EBAY)
    shop.cancel(order_id)

    with pytest.raises(NothingToCancelError):
        shop.cancel(order_id)


@pytest.mark.parametrize("restock", [False, True])
def test_accepted_cancellation_dispute_cancels_its_units(shop, restock):
    """Closing an eBay cancellation dispute as accepted cancels its units (and restocks them when asked)."""
    order_id = shop.order(Marketplace.EBAY)
    dispute_id = shop.cancel(order_id, restock_in_ledger=restock).ids["dispute_id"]

    result = close(shop, order_id, dispute_id, DisputeOutcome.ACCEPTED)

    expected = ("DisputeClosed", "Cancelled", "Restocked") if restock else ("DisputeClosed", "Cancelled")
    assert result.events == expected
    details = shop.details(order_id)
    (cancellation,) = details.cancellations
    assert cancellation.dispute_id == dispute_id
    assert cancellation.lines == (LineQuantity("A", 2), LineQuantity("B", 3))
    assert cancellation.reason == CancelReason.OUT_OF_STOCK.value
    assert cancellation.restocked_on_marketplace is False
    assert details.disputes[0].outcome == DisputeOutcome.ACCEPTED.value
    line = shop.line(order_id, "A")
    assert (line.cancelled, line.pending_cancel, line.restocked) == (2, 0, 2 if restock else 0)
    assert details.dispute_status == "closed"
    assert details.status == OrderStatus.CANCELED


@pytest.mark.parametrize("account_restocks", [False, True])
def test_cancellation_dispute_restocks_by_the_account_default(shop, account_restocks):
    """Without an explicit choice, an accepted eBay cancellation restocks as the account says."""
    order_id = shop.order(Marketplace.EBAY, restock_in_ledger=account_restocks)
    dispute_id = shop.cancel(order_id).ids["dispute_id"]

    result = close(shop, order_id, dispute_id, DisputeOutcome.ACCEPTED)

    assert ("Restocked" in result.events) is account_restocks


def test_accepted_whole_cancellation_dispute_closes_the_order(shop):
    """When the whole order's cancellation is accepted, the order is canceled and closed."""
    order_id = shop.order(Marketplace.EBAY)
    dispute_id = shop.cancel(order_id).ids["dispute_id"]
    assert shop.details(order_id).open

    close(shop, order_id, dispute_id, DisputeOutcome.ACCEPTED)

    details = shop.details(order_id)
    assert details.status == OrderStatus.CANCELED
    assert not details.open


def test_accepted_cancellation_of_what_is_left_closes_a_partly_shipped_order(shop):
    """eBay cancels what is left of a partly shipped order; once accepted, the order is shipped and closed."""
    order_id = shop.order(Marketplace.EBAY)
    shop.ship(order_id, {"B": 3})
    dispute_id = shop.cancel(order_id).ids["dispute_id"]
    close(shop, order_id, dispute_id, DisputeOutcome.ACCEPTED)

    details = shop.details(order_id)
    assert details.cancelled_units == 2
    assert details.status == OrderStatus.SHIPPED
    assert not details.open


@pytest.mark.parametrize("outcome", NOT_ACCEPTED)
def test_rejected_or_withdrawn_cancellation_makes_units_shippable_again(shop, outcome):
    """A cancellation dispute that closes rejected or withdrawn cancels nothing; its units ship again."""
    order_id = shop.order(Marketplace.EBAY, restock_in_ledger=True)
    dispute_id = shop.cancel(order_id).ids["dispute_id"]

    result = close(shop, order_id, dispute_id, outcome)

    assert result.events == ("DisputeClosed",)
    details = shop.details(order_id)
    assert details.cancellations == ()
    assert [line.pending_cancel for line in details.lines] == [0, 0]
    assert details.open
    shop.ship(order_id)
    details = shop.details(order_id)
    assert details.shipped_units == details.units
    assert not details.open


def test_open_cancellation_dispute_keeps_a_partly_shipped_order_open(shop):
    """While a cancellation dispute is open the order stays open, even if its other units were shipped."""
    order_id = shop.order(Marketplace.EBAY)
    shop.ship(order_id, {"B": 3})
    dispute_id = shop.cancel(order_id).ids["dispute_id"]

    assert shop.details(order_id).open
    close(shop, order_id, dispute_id, DisputeOutcome.ACCEPTED)
    assert not shop.details(order_id).open


# ------------------------------------------------------------------------------------------ claims


@pytest.mark.parametrize("marketplace", ALL)
def test_claim_keeps_a_shipped_order_open_until_it_closes(shop, marketplace):
    """A buyer's claim opens a dispute; the order is open until the claim closes."""
    order_id = shop.shipped_order(marketplace)
    assert not shop.details(order_id).open

    result = shop.ledger.open_dispute(
        shop.ctx, order_id, reason="item not received", marketplace_dispute_id="C-1"
    )

    details = shop.details(order_id)
    (dispute,) = details.disputes
    assert result.events == ("DisputeOpened",)
    assert (dispute.kind, dispute.reason, dispute.marketplace_dispute_id) == (
        DisputeKind.CLAIM.value,
        "item not received",
        "C-1",
    )
    assert details.open
    assert details.dispute_status == "open"

    close(shop, order_id, dispute.dispute_id, DisputeOutcome.REJECTED)
    details = shop.details(order_id)
    assert not details.open
    assert details.dispute_status == "closed"


def test_opening_the_same_marketplace_dispute_twice_is_a_no_op(shop):
    """A claim with a marketplace dispute id already recorded records nothing the second time."""
    order_id = shop.shipped_order(Marketplace.WALMART)
    first = shop.ledger.open_dispute(shop.ctx, order_id, reason="damaged", marketplace_dispute_id="D-9")

    again = shop.ledger.open_dispute(shop.ctx, order_id, reason="damaged again", marketplace_dispute_id="D-9")

    assert again.events == ()
    assert again.version == first.version
    assert shop.version(order_id) == first.version
    assert len(shop.details(order_id).disputes) == 1


def test_different_marketplace_disputes_are_separate(shop):
    """Claims with different marketplace dispute ids are recorded as separate disputes."""
    order_id = shop.shipped_order(Marketplace.RAKUTEN)

    shop.ledger.open_dispute(shop.ctx, order_id, reason="damaged", marketplace_dispute_id="D-1")
    shop.ledger.open_dispute(shop.ctx, order_id, reason="late", marketplace_dispute_id="D-2")

    assert [d.marketplace_dispute_id for d in shop.details(order_id).disputes] == ["D-1", "D-2"]


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501])
def test_claim_needs_a_reason(shop, reason):
    """A dispute needs a reason of at most 500 characters."""
    order_id = shop.shipped_order(Marketplace.JET)

    with pytest.raises(ReasonRequiredError) as caught:
        shop.ledger.open_dispute(shop.ctx, order_id, reason=reason)

    assert caught.value.field == "reason"
    assert shop.details(order_id).disputes == ()


def test_closing_an_unknown_dispute_is_refused(shop):
    """Closing a dispute the order does not have raises DisputeNotFoundError."""
    order_id = shop.shipped_order(Marketplace.AMAZON)

    with pytest.raises(DisputeNotFoundError):
        close(shop, order_id, order_id, DisputeOutcome.ACCEPTED)


@pytest.mark.parametrize("outcome", list(DisputeOutcome))
def test_closing_a_closed_dispute_is_refused(shop, outcome):
    """A dispute closes once; closing it again raises DisputeAlreadyClosedError and records nothing."""
    order_id = shop.shipped_order(Marketplace.EBAY)
    dispute_id = shop.ledger.open_dispute(shop.ctx, order_id, reason="late").ids["dispute_id"]
    close(shop, order_id, dispute_id, DisputeOutcome.WITHDRAWN)
    version = shop.version(order_id)

    with pytest.raises(DisputeAlreadyClosedError):
        close(shop, order_id, dispute_id, outcome)

    assert shop.version(order_id) == version


def test_accepted_claim_cancels_nothing(shop):
    """Only a cancellation dispute cancels units when accepted; an accepted claim does not."""
    order_id = shop.order(Marketplace.EBAY)
    dispute_id = shop.ledger.open_dispute(shop.ctx, order_id, reason="wrong size").ids["dispute_id"]

    result = close(shop, order_id, dispute_id, DisputeOutcome.ACCEPTED)

    assert result.events == ("DisputeClosed",)
    assert shop.details(order_id).cancelled_units == 0


def test_claim_does_not_stop_shipping(shop):
    """An open claim (not a cancellation) does not hold the order's shipment."""
    order_id = shop.order(Marketplace.EBAY)
    shop.ledger.open_dispute(shop.ctx, order_id, reason="asks about delivery")

    shop.ship(order_id)

    details = shop.details(order_id)
    assert details.shipped_units == details.units
    assert details.open  # the claim is still open


# ---------------------------------------------------------------------------------------- restock


@pytest.mark.parametrize("marketplace", [Marketplace.AMAZON, Marketplace.WALMART, Marketplace.RAKUTEN])
def test_cancelled_units_can_be_restocked_once(shop, marketplace):
    """Cancelled units can be put back into stock, but not more of them than were cancelled."""
    order_id = shop.order(marketplace)
    shop.cancel(order_id, {"A": 2}, restock_in_ledger=False)

    result = shop.restock(order_id, {"A": 1})
    shop.restock(order_id, {"A": 1})

    assert result.events == ("Restocked",)
    assert shop.line(order_id, "A").restocked == 2
    with pytest.raises(OverRestockError):
        shop.restock(order_id, {"A": 1})


def test_restocking_more_than_was_cancelled_is_refused(shop):
    """A restock above the cancelled units of a line is refused and records nothing."""
    order_id = shop.order(Marketplace.WALMART)
    shop.cancel(order_id, {"B": 1})

    with pytest.raises(OverRestockError):
        shop.restock(order_id, {"B": 2})

    assert shop.line(order_id, "B").restocked == 0


def test_units_restocked_with_the_cancellation_cannot_be_restocked_again(shop):
    """Units the cancellation already put back into stock count against what is left to restock."""
    order_id = shop.order(Marketplace.WALMART)
    shop.cancel(order_id, {"A": 2}, restock_in_ledger=True)

    with pytest.raises(OverRestockError):
        shop.restock(order_id, {"A": 1})


@pytest.mark.parametrize("marketplace", ALL)
def test_returned_units_can_be_restocked(shop, marketplace):
    """Units refunded after shipping (returned) can be restocked, up to the refunded quantity."""
    order_id = shop.shipped_order(marketplace)
    shop.refund(order_id, lines=(RefundRequestLine("B", 2),))

    shop.restock(order_id, {"B": 2})

    assert shop.line(order_id, "B").restocked == 2
    with pytest.raises(OverRestockError):
        shop.restock(order_id, {"B": 1})


@pytest.mark.parametrize("shipped", [False, True], ids=["unshipped", "shipped"])
def test_units_neither_cancelled_nor_returned_cannot_be_restocked(shop, shipped):
    """Units still open or shipped and kept by the buyer cannot be restocked."""
    order_id = shop.order(Marketplace.WALMART)
    if shipped:
        shop.ship(order_id)

    with pytest.raises(OverRestockError):
        shop.restock(order_id, {"A": 1})


def test_money_only_refund_returns_no_units_to_restock(shop):
    """A refund of money alone returns no units, so nothing becomes restockable."""
    order_id = shop.shipped_order(Marketplace.WALMART)
    shop.refund(order_id, lines=(RefundRequestLine("A", 0, shop.line(order_id, "A").unit_price),))

    with pytest.raises(OverRestockError):
        shop.restock(order_id, {"A": 1})


@pytest.mark.parametrize(
    ("lines", "error"),
    [({}, InvalidQuantityError), ({"Z": 1}, UnknownLineError), ({"A": 0}, InvalidQuantityError)],
    ids=["no-lines", "unknown-line", "zero-quantity"],
)
def test_invalid_restock_lines_are_refused(shop, lines, error):
    """A restock names known lines with positive quantities."""
    order_id = shop.order(Marketplace.WALMART)
    shop.cancel(order_id)

    with pytest.raises(error):
        shop.restock(order_id, lines)

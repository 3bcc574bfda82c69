"""Cancellation: what may be cancelled, by whom, and what each marketplace does with it."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from ledger.aggregates.errors import (
    CancelAfterShipmentError,
    InvalidQuantityError,
    NothingToCancelError,
    PartialCancellationError,
    UnknownLineError,
)
from ledger.aggregates.values import (
    CancelReason,
    Context,
    DisputeOutcome,
    LineQuantity,
    Marketplace,
    OrderStatus,
    RefundRequestLine,
    Requester,
)

ALL = list(Marketplace)
PARTIAL = [m for m in Marketplace if m not in (Marketplace.JET, Marketplace.EBAY)]
# Cancelling what is left once some units shipped: every marketplace but Jet.
AFTER_SHIPMENT = [m for m in Marketplace if m is not Marketplace.JET]
# A seller's cancellation of a paid eBay order opens a dispute instead: these cancel at once.
CANCEL_AT_ONCE = [(m, True) for m in Marketplace if m is not Marketplace.EBAY] + [(Marketplace.EBAY, False)]
CANCEL_AT_ONCE_IDS = [f"{m.value}-{'paid' if paid else 'unpaid'}" for m, paid in CANCEL_AT_ONCE]
RESTOCKS_ON_MARKETPLACE = {Marketplace.AMAZON, Marketplace.RAKUTEN}


@pytest.mark.parametrize(("marketplace", "paid"), CANCEL_AT_ONCE, ids=CANCEL_AT_ONCE_IDS)
def test_cancel_without_lines_cancels_the_whole_order(shop, marketplace, paid):
    """Cancelling with no lines cancels every unit; the order is canceled and closed."""
    order_id = shop.order(marketplace, paid=paid)

    result = shop.cancel(order_id)

    details = shop.details(order_id)
    assert result.events == ("Cancelled",)
    assert details.cancelled_units == details.units
    assert details.status == OrderStatus.CANCELED
    assert not details.open
    (cancellation,) = details.cancellations
    assert cancellation.cancellation_id == result.ids["cancellation_id"]
    assert cancellation.lines == tuple(LineQuantity(line.line_id, line.quantity) for line in details.lines)


@pytest.mark.parametrize("reason", list(CancelReason))
def test_cancellation_records_its_reason_and_requester(shop, reason):
    """The cancellation and its event keep the reason given and who asked."""
    order_id = shop.order(Marketplace.WALMART)

    shop.cancel(order_id, reason=reason)

    (cancellation,) = shop.details(order_id).cancellations
    assert cancellation.reason == reason.value
    assert cancellation.requested_by == Requester.SELLER.value
    assert shop.ledger.order_history(order_id)[-1].reason == reason.value


def test_cancel_requires_a_reason(shop):
    """The application's cancel command cannot be called without a reason."""
    order_id = shop.order(Marketplace.WALMART)

    with pytest.raises(TypeError):
        shop.ledger.cancel(shop.ctx, order_id)  # type: ignore[call-arg]

    assert shop.details(order_id).cancelled_units == 0


@pytest.mark.parametrize(
    ("marketplace", "paid"),
    [c for c in CANCEL_AT_ONCE if c[0] in PARTIAL],
    ids=[i for i in CANCEL_AT_ONCE_IDS if not i.startswith(("jet", "ebay"))],
)
def test_partial_cancellation_leaves_the_rest_shippable(shop, marketplace, paid):
    """Cancelling some units leaves the others to ship; once they ship the order is shipped and closed."""
    order_id = shop.order(marketplace, paid=paid)
    shop.cancel(order_id, {"A": 1})
    details = shop.details(order_id)
    assert details.status == OrderStatus.UNSHIPPED
    assert details.open
    assert shop.line(order_id, "A").cancelled == 1
    if not paid:
        shop.ledger.record_payment(shop.ctx, order_id)

    result = shop.ship(order_id)

    shipment = shop.details(order_id).shipments[0]
    assert shipment.shipment_id == result.ids["shipment_id"]
    assert shipment.lines == (LineQuantity("A", 1), LineQuantity("B", 3))
    assert shop.details(order_id).status == OrderStatus.SHIPPED
    assert not shop.details(order_id).open


@pytest.mark.parametrize("marketplace", ALL)
def test_shipped_order_cannot_be_cancelled(shop, marketplace):
    """Once every unit shipped, a cancellation is refused: shipped units can only be refunded."""
    order_id = shop.order(marketplace)
    shop.ship(order_id)
    version = shop.version(order_id)

    with pytest.raises(CancelAfterShipmentError):
        shop.cancel(order_id)
    with pytest.raises(CancelAfterShipmentError):
        shop.cancel(order_id, {"A": 1})

    assert shop.version(order_id) == version


@pytest.mark.parametrize("marketplace", PARTIAL)
def test_only_unshipped_units_of_a_line_can_be_cancelled(shop, marketplace):
    """On a partly shipped line, cancelling more than the unshipped units is refused; the rest cancels."""
    order_id = shop.order(marketplace)
    shop.ship(order_id, {"A": 1})

    with pytest.raises(CancelAfterShipmentError):
        shop.cancel(order_id, {"A": 2})
    shop.cancel(order_id, {"A": 1})

    line = shop.line(order_id, "A")
    assert (line.shipped, line.cancelled) == (1, 1)


def test_cancelling_more_than_ordered_on_an_unshipped_line_is_refused(shop):
    """A line cannot cancel more units than it has."""
    order_id = shop.order(Marketplace.WALMART)

    with pytest.raises(NothingToCancelError):
        shop.cancel(order_id, {"A": 3})

    assert shop.details(order_id).cancelled_units == 0


def test_cancelled_units_cannot_be_cancelled_again(shop):
    """A fully cancelled order has nothing left to cancel."""
    order_id = shop.order(Marketplace.RAKUTEN)
    shop.cancel(order_id)

    with pytest.raises(NothingToCancelError):
        shop.cancel(order_id)
    with pytest.raises(NothingToCancelError):
        shop.cancel(order_id, {"A": 1})


@pytest.mark.parametrize(
    ("lines", "error", "field"),
    [
        ((LineQuantity("Z", 1),), UnknownLineError, "lines[0].line_id"),
        ((LineQuantity("A", 1), LineQuantity("A", 1)), InvalidQuantityError, "lines[1].line_id"),
        ((LineQuantity("A", 0),), InvalidQuantityError, "lines[0].quantity"),
    ],
    ids=["unknown-line", "duplicate-line", "zero-quantity"],
)
def test_invalid_cancellation_lines_are_refused(shop, lines, error, field):
    """Unknown lines, a line listed twice and zero quantities are refused, naming the field."""
    order_id = shop.order(Marketplace.AMAZON)

    with pytest.raises(error) as caught:
        shop.ledger.cancel(shop.ctx, order_id, reason=CancelReason.OTHER, lines=lines)

    assert caught.value.field == field
    assert shop.details(order_id).cancelled_units == 0


# ------------------------------------------------------------------------------------------ Jet


@pytest.mark.parametrize("lines", [{"A": 1}, {"A": 2}, {"A": 2, "B": 2}], ids=["unit", "line", "most"])
def test_jet_refuses_partial_cancellation(shop, lines):
    """Jet cancels whole orders only: cancelling some of its units is refused."""
    order_id = shop.order(Marketplace.JET)

    with pytest.raises(PartialCancellationError):
        shop.cancel(order_id, lines)

    assert shop.details(order_id).cancelled_units == 0


def test_jet_cancels_the_whole_order_when_every_unit_is_named(shop):
    """Naming every unit of a Jet order is a whole-order cancellation, which Jet allows."""
    order_id = shop.order(Marketplace.JET)

    shop.cancel(order_id, {"A": 2, "B": 3})

    assert shop.details(order_id).status == OrderStatus.CANCELED


@pytest.mark.parametrize("lines", [None, {"B": 3}], ids=["rest", "line"])
def test_jet_refuses_cancellation_after_a_partial_shipment(shop, lines):
    """Once part of a Jet order shipped, what is left cannot be cancelled (it would be partial)."""
    order_id = shop.order(Marketplace.JET)
    shop.ship(order_id, {"A": 2})

    with pytest.raises(PartialCancellationError):
        shop.cancel(order_id, lines)

    assert shop.details(order_id).cancelled_units == 0


@pytest.mark.parametrize("marketplace", AFTER_SHIPMENT)
def test_other_marketplaces_cancel_the_rest_after_a_partial_shipment(shop, marketplace):
    """Outside Jet, what is left after a partial shipment can be cancelled, which closes the order."""
    order_id = shop.order(marketplace)
    shop.ship(order_id, {"A": 2})

    result = shop.cancel(order_id)
    if marketplace is Marketplace.EBAY:  # paid eBay order: the cancellation takes effect when accepted
        shop.ledger.close_dispute(
            shop.ctx, order_id, dispute_id=result.ids["dispute_id"], outcome=DisputeOutcome.ACCEPTED
        )

    details = shop.details(order_id)
    assert details.cancelled_units == 3
    assert details.status == OrderStatus.SHIPPED
    assert not details.open


# ----------------------------------------------------------------------------------------- eBay


@pytest.mark.parametrize("paid", [True, False], ids=["paid", "unpaid"])
@pytest.mark.parametrize("lines", [{"A": 1}, {"A": 2}, {"A": 2, "B": 2}], ids=["unit", "line", "most"])
def test_ebay_refuses_partial_cancellation_and_names_the_ways_it_takes(shop, lines, paid):
    """eBay's cancellation names only the order, so cancelling some unshipped units is refused (a 409 that
    says to cancel the whole order or refund), and nothing is recorded."""
    order_id = shop.order(Marketplace.EBAY, paid=paid)
    version = shop.version(order_id)

    with pytest.raises(PartialCancellationError, match="cancel the whole order or refund"):
        shop.cancel(order_id, lines)

    assert shop.version(order_id) == version
    assert shop.details(order_id).actions.whole_order_only


def test_ebay_refund_of_unshipped_units_is_the_partial_way(shop):
    """On a paid eBay order, refunding some unshipped units is what eBay takes instead: they never ship."""
    order_id = shop.order(Marketplace.EBAY)

    shop.refund(order_id, lines=(RefundRequestLine("A", 1),))

    assert shop.details(order_id).shipments == ()
    assert shop.line(order_id, "A").shippable == 1


# ------------------------------------------------------------------------------------ restocking


@pytest.mark.parametrize(("marketplace", "paid"), CANCEL_AT_ONCE, ids=CANCEL_AT_ONCE_IDS)
def test_restocked_on_marketplace_depends_on_the_marketplace(shop, marketplace, paid):
    """Amazon and Rakuten put cancelled units back into their own stock; the others do not."""
    order_id = shop.order(marketplace, paid=paid)

    shop.cancel(order_id)

    (cancellation,) = shop.details(order_id).cancellations
    assert cancellation.restocked_on_marketplace is (marketplace in RESTOCKS_ON_MARKETPLACE)
    cancelled = next(e for e in shop.events(order_id) if type(e).__name__ == "Cancelled")
    assert cancelled.restocked_on_marketplace is (marketplace in RESTOCKS_ON_MARKETPLACE)


@pytest.mark.parametrize(("marketplace", "paid"), CANCEL_AT_ONCE, ids=CANCEL_AT_ONCE_IDS)
@pytest.mark.parametrize("account_restocks", [False, True], ids=["account-no", "account-yes"])
@pytest.mark.parametrize("explicit", [None, False, True], ids=["default", "explicit-no", "explicit-yes"])
def test_ledger_restocks_only_when_asked(shop, marketplace, paid, account_restocks, explicit):
    """Restocked follows the cancellation only when restock_in_ledger is set, defaulting to the account's."""
    order_id = shop.order(marketplace, paid=paid, restock_in_ledger=account_restocks)
    restock = account_restocks if explicit is None else explicit

    result = shop.cancel(order_id, restock_in_ledger=explicit)

    details = shop.details(order_id)
    assert result.events == (("Cancelled", "Restocked") if restock else ("Cancelled",))
    assert [line.restocked for line in details.lines] == [
        line.quantity if restock else 0 for line in details.lines
    ]
    if restock:
        restocked = shop.events(order_id)[-1]
        assert restocked.cause_id == result.ids["cancellation_id"]
        assert tuple(restocked.lines) == details.cancellations[0].lines


# ----------------------------------------------------------------------------- buyer cancellations


@pytest.mark.parametrize("after", [timedelta(0), timedelta(minutes=10), timedelta(minutes=30)])
def test_amazon_buyer_cancellation_within_30_minutes_applies_at_once(shop, after):
    """An Amazon buyer's cancellation asked for within 30 minutes of purchase cancels at once."""
    order_id = shop.order(Marketplace.AMAZON)
    ctx = dataclasses.replace(shop.ctx, effective_at=shop.purchased_at + after)

    result = shop.cancel(order_id, requested_by=Requester.BUYER, reason=CancelReason.BUYER_CANCELLED, ctx=ctx)

    details = shop.details(order_id)
    assert result.events == ("Cancelled",)
    assert details.status == OrderStatus.CANCELED
    assert details.cancellations[0].requested_by == Requester.BUYER.value


@pytest.mark.parametrize("after", [timedelta(minutes=30, seconds=1), timedelta(hours=2), timedelta(days=3)])
def test_amazon_buyer_cancellation_after_30_minutes_is_a_request(shop, after):
    """Later, an Amazon buyer's cancellation is only a request: nothing is cancelled, the units still ship."""
    order_id = shop.order(Marketplace.AMAZON)
    ctx = dataclasses.replace(shop.ctx, effective_at=shop.purchased_at + after)

    result = shop.cancel(order_id, {"A": 1}, requested_by=Requester.BUYER, ctx=ctx)

    details = shop.details(order_id)
    assert result.events == ("CancellationRequested",)
    assert details.cancelled_units == 0
    assert details.cancellations == ()
    assert details.open
    assert shop.line(order_id, "A").requested_cancel == 1
    shop.ship(order_id)
    assert shop.details(order_id).status == OrderStatus.SHIPPED


@pytest.mark.parametrize(
    ("now_after", "applies"), [(timedelta(minutes=5), True), (timedelta(hours=1), False)]
)
def test_amazon_buyer_cancellation_without_a_time_uses_now(shop, now_after, applies):
    """Without the buyer's own time, the window is measured to the application's clock."""
    order_id = shop.order(Marketplace.AMAZON)
    shop.clock.now = shop.purchased_at + now_after

    result = shop.cancel(order_id, requested_by=Requester.BUYER)

    assert result.events == (("Cancelled",) if applies else ("CancellationRequested",))


@pytest.mark.parametrize("marketplace", [m for m in Marketplace if m is not Marketplace.AMAZON])
@pytest.mark.parametrize("paid", [True, False], ids=["paid", "unpaid"])
def test_buyer_cancellation_elsewhere_is_always_a_request(shop, marketplace, paid):
    """Outside Amazon, a buyer's cancellation is a request, however soon after the purchase."""
    order_id = shop.order(marketplace, paid=paid)
    ctx = dataclasses.replace(shop.ctx, effective_at=shop.purchased_at + timedelta(minutes=1))

    result = shop.cancel(order_id, requested_by=Requester.BUYER, ctx=ctx)

    details = shop.details(order_id)
    assert result.events == ("CancellationRequested",)
    assert details.cancelled_units == 0
    assert details.disputes == ()
    assert [line.requested_cancel for line in details.lines] == [line.quantity for line in details.lines]


@pytest.mark.parametrize("after", [timedelta(hours=1), timedelta(days=20)])
def test_amazon_seller_may_cancel_until_shipped(shop, after):
    """The seller's own cancellation of an Amazon order applies at once, however long after the purchase."""
    order_id = shop.order(Marketplace.AMAZON)
    shop.clock.now = shop.purchased_at + after
    ctx = dataclasses.replace(shop.ctx, effective_at=shop.clock.now)

    result = shop.cancel(order_id, ctx=ctx)

    assert result.events == ("Cancelled",)
    assert shop.details(order_id).status == OrderStatus.CANCELED


def test_seller_answers_a_buyer_request_by_cancelling(shop):
    """A buyer's request, then the seller's cancellation: the units are cancelled and no longer requested."""
    order_id = shop.order(Marketplace.WALMART)
    shop.cancel(order_id, {"B": 3}, requested_by=Requester.BUYER)

    shop.cancel(order_id, {"B": 3})

    line = shop.line(order_id, "B")
    assert (line.cancelled, line.requested_cancel) == (3, 0)


def test_ebay_unpaid_seller_cancellation_cancels_at_once(shop):
    """On eBay, the seller's cancellation of an unpaid order cancels at once, with no dispute."""
    order_id = shop.order(Marketplace.EBAY, paid=False)

    result = shop.cancel(order_id, reason=CancelReason.BUYER_UNPAID)

    details = shop.details(order_id)
    assert result.events == ("Cancelled",)
    assert details.disputes == ()
    assert details.status == OrderStatus.CANCELED
    assert not details.open


@pytest.mark.parametrize("marketplace", [m for m in Marketplace if m is not Marketplace.EBAY])
def test_paid_seller_cancellation_outside_ebay_opens_no_dispute(shop, marketplace):
    """Only eBay turns a paid order's cancellation into a dispute; elsewhere it cancels at once."""
    order_id = shop.order(marketplace)

    shop.cancel(order_id)

    details = shop.details(order_id)
    assert details.disputes == ()
    assert details.status == OrderStatus.CANCELED


def test_cancellation_context_is_recorded(shop):
    """The cancellation's actor, source and effective time are kept with the event."""
    order_id = shop.order(Marketplace.RAKUTEN)
    ctx = Context(actor="ops@example.com", source=shop.ctx.source, effective_at=shop.clock.now)

    shop.cancel(order_id, ctx=ctx)

    entry = shop.ledger.order_history(order_id)[-1]
    assert (entry.type, entry.actor, entry.effective_at) == ("Cancelled", "ops@example.com", shop.clock.now)
    assert shop.details(order_id).cancellations[0].cancelled_at == shop.clock.now

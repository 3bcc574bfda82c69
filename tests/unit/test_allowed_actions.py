"""What an order allows right now (`rules.allowed_actions`, carried by OrderDetails for the web page)."""

from __future__ import annotations

from ledger.aggregates.rules import AllowedActions
from ledger.aggregates.values import CancelReason, DisputeOutcome, Marketplace


def actions(shop, order_id) -> AllowedActions:
    return shop.details(order_id).actions


def test_an_unpaid_order_may_be_cancelled_but_not_shipped_or_refunded(shop):
    """Unpaid: nothing ships and nothing is refunded; the unshipped units may be cancelled."""
    got = actions(shop, shop.order(Marketplace.WALMART, paid=False))
    assert (got.ship, got.cancel, got.refund, got.cancel_opens_dispute) == (False, True, False, False)


def test_a_paid_unshipped_ebay_order_offers_cancel_as_a_dispute_or_a_refund(shop):
    """eBay, paid, unshipped: both ways are offered, and cancelling opens a dispute; while that dispute is
    open nothing ships."""
    order_id = shop.order(Marketplace.EBAY)
    got = actions(shop, order_id)
    assert (got.ship, got.cancel, got.refund, got.cancel_opens_dispute) == (True, True, True, True)
    shop.cancel(order_id, reason=CancelReason.OUT_OF_STOCK)
    assert not actions(shop, order_id).ship


def test_jet_cancels_whole_orders_only_and_not_after_a_shipment(shop):
    """Jet: cancellation is of the whole order, so none is offered once anything shipped; refunds are."""
    order_id = shop.order(Marketplace.JET)
    assert actions(shop, order_id).whole_order_only
    assert actions(shop, order_id).cancel
    shop.ship(order_id, {"A": 1})
    got = actions(shop, order_id)
    assert (got.cancel, got.refund) == (False, True)


def test_a_fully_shipped_order_offers_only_refunds(shop):
    """Everything shipped: neither ship nor cancel, only refund."""
    got = actions(shop, shop.shipped_order(Marketplace.WALMART))
    assert (got.ship, got.cancel, got.refund) == (False, False, True)


def test_an_open_dispute_offers_closing_it_and_a_cancellation_offers_restock(shop):
    """An open eBay cancellation dispute may be closed; once closed (accepted) its cancelled units may be
    restocked, and once restocked no restock is offered."""
    order_id = shop.order(Marketplace.EBAY)
    assert not actions(shop, order_id).close_dispute
    dispute_id = shop.cancel(order_id).ids["dispute_id"]
    got = actions(shop, order_id)
    assert (got.close_dispute, got.restock, got.ship) == (True, False, False)
    shop.ledger.close_dispute(shop.ctx, order_id, dispute_id=dispute_id, outcome=DisputeOutcome.ACCEPTED)
    got = actions(shop, order_id)
    assert (got.close_dispute, got.restock) == (False, True)
    lines = shop.details(order_id).lines
    shop.restock(order_id, {line.line_id: line.restockable for line in lines if line.restockable})
    assert not actions(shop, order_id).restock

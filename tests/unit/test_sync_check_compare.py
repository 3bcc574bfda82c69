"""`sync check`'s comparison of the ledger's order with the marketplace's (integrations/sync_check.compare)."""

from __future__ import annotations

from ledger.aggregates.values import Marketplace
from ledger.integrations.base import RemoteState
from ledger.integrations.sync_check import compare


def remote(details, status: str, *, shipped: int = 0) -> RemoteState:
    return RemoteState(
        marketplace_order_id=details.marketplace_order_id,
        status=status,
        shipped={line.line_id: shipped for line in details.lines},
        cancelled={},
        refunded_total=str(details.refunded_total),
    )


def test_an_ebay_order_refunded_whole_before_shipment_is_no_difference(shop):
    """eBay keeps a paid order refunded before it ships unshipped (NOT_STARTED); the ledger calls it
    canceled. The same units and refunds on both sides: no divergence (it was one every check, forever)."""
    order_id = shop.order(Marketplace.EBAY)
    shop.refund(order_id)
    details = shop.details(order_id)
    assert details.status == "canceled"

    assert compare(details, remote(details, "unshipped")) == []


def test_an_ebay_order_partly_shipped_and_the_rest_refunded_is_no_difference(shop):
    """One unit shipped, the rest refunded before shipment: the ledger's order is shipped, eBay's IN_PROGRESS
    (partially shipped), as its units say."""
    order_id = shop.order(Marketplace.EBAY)
    shop.ship(order_id, {"A": 1})
    shop.refund(order_id)
    details = shop.details(order_id)
    assert details.status == "shipped"
    theirs = remote(details, "partially_shipped")
    theirs = RemoteState(
        theirs.marketplace_order_id, theirs.status, {"A": 1, "B": 0}, {}, theirs.refunded_total
    )

    assert compare(details, theirs) == []


def test_a_status_the_refunds_do_not_explain_is_still_a_difference(shop):
    """Nothing refunded: an order the ledger shows shipped and the marketplace unshipped differs."""
    order_id = shop.order(Marketplace.EBAY)
    shop.ship(order_id)
    details = shop.details(order_id)

    found = compare(details, remote(details, "unshipped"))

    assert ("status", "shipped", "unshipped") in found

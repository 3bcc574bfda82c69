"""What each marketplace allows, and what follows from a change. Pure data and pure functions.

The `Order` aggregate asks its marketplace's policy; nothing else in the domain branches on a marketplace name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ledger.aggregates.values import Marketplace


@dataclass(frozen=True)
class MarketplacePolicy:
    marketplace: Marketplace
    # eBay: cancelling a paid order goes through the marketplace's cancellation flow, which the ledger
    # records as a dispute; the cancellation takes effect only when that dispute closes accepted.
    cancel_paid_opens_dispute: bool = False
    # eBay: a paid order may be refunded before it ships (the refunded units then never ship).
    refund_paid_unshipped: bool = False
    # Amazon, Rakuten: the marketplace puts cancelled units back into its own stock by itself.
    cancellation_restocks_on_marketplace: bool = False
    # Amazon: a buyer's cancellation inside this window after purchase applies at once; later ones (and every
    # buyer cancellation elsewhere) are requests the seller answers by cancelling or shipping.
    buyer_cancel_window: timedelta | None = None
    # Jet: only a whole order can be cancelled, never some of its units.
    partial_cancellation: bool = True
    # Amazon: the buyer is charged (and the seller paid) only when the shipment confirmation reaches the
    # marketplace, so nothing can be refunded before that confirmation is acknowledged.
    charges_on_shipment_confirmation: bool = False

    def buyer_cancellation_applies_at_once(self, purchased_at: datetime, requested_at: datetime) -> bool:
        """Whether a buyer's cancellation is a fact the ledger records, rather than a request to answer."""
        if self.buyer_cancel_window is None:
            return False
        return requested_at - purchased_at <= self.buyer_cancel_window


POLICIES: dict[Marketplace, MarketplacePolicy] = {
    Marketplace.AMAZON: MarketplacePolicy(
        Marketplace.AMAZON,
        cancellation_restocks_on_marketplace=True,
        buyer_cancel_window=timedelta(minutes=30),
        charges_on_shipment_confirmation=True,
    ),
    Marketplace.EBAY: MarketplacePolicy(
        Marketplace.EBAY, cancel_paid_opens_dispute=True, refund_paid_unshipped=True
    ),
    Marketplace.WALMART: MarketplacePolicy(Marketplace.WALMART),
    Marketplace.RAKUTEN: MarketplacePolicy(Marketplace.RAKUTEN, cancellation_restocks_on_marketplace=True),
    Marketplace.JET: MarketplacePolicy(Marketplace.JET, partial_cancellation=False),
}


def policy_for(marketplace: Marketplace | str) -> MarketplacePolicy:
    return POLICIES[Marketplace(marketplace)]

"""What each marketplace allows, and what follows from a change. Pure data and pure functions.

The `Order` aggregate asks its marketplace's policy; nothing else in the domain branches on a marketplace name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from ledger.aggregates.values import DisputeKind, DisputeOutcome, Marketplace, SyncAction


class NotSent(StrEnum):
    """Why a change of the ledger's is never sent to its marketplace (the order's `sync` shows it)."""

    THIRD_PARTY_MANAGED = "third_party_managed"  # someone else fulfils the order and tells the marketplace
    FROM_MARKETPLACE = "from_marketplace"  # the marketplace told us: telling it back would be an echo
    NO_CALL = "no_call"  # the marketplace has no call that receives it
    VOIDED = "voided"  # the seller voided the shipment before the marketplace had it
    SYNC_OFF = "sync_off"  # the account's sync was off when the change was made: it is never sent by itself


# The error code adapters give a refusal that says the order is cancelled on the marketplace (Amazon answers
# confirmShipment of a cancelled order `InvalidInput: Order ... is canceled`): the marketplace's word, which
# the order records as a cancellation by the marketplace.
ORDER_CANCELED = "order-canceled"


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
    # Jet, eBay: a cancellation covers every unit still unshipped, never some of them (eBay's Post-Order
    # cancellation names only the order: `legacyOrderId`, `cancelReason`).
    partial_cancellation: bool = True
    # Jet: nothing can be cancelled once anything shipped.
    cancel_after_shipment: bool = True
    # What the seller names instead of a partial cancellation the marketplace cannot receive.
    partial_cancellation_instead: str = "cancel the whole order"
    # The dispute closings the marketplace has a call for, as (kind, outcome): eBay's `acceptPaymentDispute`
    # (a buyer's payment dispute accepted by the seller). Amazon has no call to close an A-to-z claim; Walmart,
    # Rakuten and Jet have no dispute API; the outcome of an eBay cancellation request is eBay's (or the
    # buyer's) to decide, never the seller's.
    closes_disputes: frozenset[tuple[DisputeKind, DisputeOutcome]] = frozenset()
    # Amazon: the buyer is charged (and the seller paid) only when the shipment confirmation reaches the
    # marketplace, so nothing can be refunded before that confirmation is acknowledged.
    charges_on_shipment_confirmation: bool = False

    def buyer_cancellation_applies_at_once(self, purchased_at: datetime, requested_at: datetime) -> bool:
        """Whether a buyer's cancellation is a fact the ledger records, rather than a request to answer."""
        if self.buyer_cancel_window is None:
            return False
        return requested_at - purchased_at <= self.buyer_cancel_window

    def not_sent(
        self,
        action: SyncAction,
        *,
        third_party_managed: bool,
        from_marketplace: bool,
        dispute: tuple[DisputeKind, DisputeOutcome] | None = None,
        sync_off: bool = False,
    ) -> NotSent | None:
        """Why a change is not sent to the marketplace; None when it is. The outbound queue enqueues only
        what this lets through, and the order's `sync` shows the reason for the rest."""
        if third_party_managed:
            return NotSent.THIRD_PARTY_MANAGED
        if from_marketplace:
            return NotSent.FROM_MARKETPLACE
        if action is SyncAction.CLOSE_DISPUTE and dispute not in self.closes_disputes:
            return NotSent.NO_CALL
        if sync_off:
            return NotSent.SYNC_OFF
        return None


POLICIES: dict[Marketplace, MarketplacePolicy] = {
    Marketplace.AMAZON: MarketplacePolicy(
        Marketplace.AMAZON,
        cancellation_restocks_on_marketplace=True,
        buyer_cancel_window=timedelta(minutes=30),
        charges_on_shipment_confirmation=True,
    ),
    Marketplace.EBAY: MarketplacePolicy(
        Marketplace.EBAY,
        cancel_paid_opens_dispute=True,
        refund_paid_unshipped=True,
        partial_cancellation=False,
        partial_cancellation_instead="cancel the whole order or refund the units",
        closes_disputes=frozenset({(DisputeKind.CLAIM, DisputeOutcome.ACCEPTED)}),
    ),
    Marketplace.WALMART: MarketplacePolicy(Marketplace.WALMART),
    Marketplace.RAKUTEN: MarketplacePolicy(Marketplace.RAKUTEN, cancellation_restocks_on_marketplace=True),
    Marketplace.JET: MarketplacePolicy(
        Marketplace.JET, partial_cancellation=False, cancel_after_shipment=False
    ),
}


def policy_for(marketplace: Marketplace | str) -> MarketplacePolicy:
    return POLICIES[Marketplace(marketplace)]

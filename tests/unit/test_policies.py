"""The table of what each marketplace can receive (`MarketplacePolicy`), and what the order does with it."""

from __future__ import annotations

import pytest

from ledger.aggregates.policies import POLICIES, NotSent
from ledger.aggregates.values import CancelReason, DisputeKind, DisputeOutcome, Marketplace, SyncAction
from ledger.application.commands import RecordSyncItemDied, ResolveSyncItem

# (marketplace, partial cancellation, cancel after a shipment, refund before shipment, refund needs the
# acknowledged shipment, the dispute closings it has a call for)
TABLE = [
    (Marketplace.AMAZON, True, True, False, True, set()),
    (Marketplace.EBAY, False, True, True, False, {(DisputeKind.CLAIM, DisputeOutcome.ACCEPTED)}),
    (Marketplace.WALMART, True, True, False, False, set()),
    (Marketplace.RAKUTEN, True, True, False, False, set()),
    (Marketplace.JET, False, False, False, False, set()),
]


@pytest.mark.parametrize(("marketplace", "partial", "after", "refund_early", "needs_ack", "closes"), TABLE)
def test_what_each_marketplace_can_receive(marketplace, partial, after, refund_early, needs_ack, closes):
    """The policy table says, per marketplace, what its API takes (docs/marketplaces.md shows the same)."""
    policy = POLICIES[marketplace]
    assert policy.partial_cancellation is partial
    assert policy.cancel_after_shipment is after
    assert policy.refund_paid_unshipped is refund_early
    assert policy.charges_on_shipment_confirmation is needs_ack
    assert set(policy.closes_disputes) == closes


@pytest.mark.parametrize("marketplace", list(Marketplace), ids=lambda m: m.value)
@pytest.mark.parametrize("kind", list(DisputeKind))
@pytest.mark.parametrize("outcome", list(DisputeOutcome))
def test_a_dispute_closing_is_sent_only_where_a_call_takes_it(marketplace, kind, outcome):
    """Closing a dispute is sent only as eBay's acceptance of a buyer's payment dispute; otherwise no_call."""
    reason = POLICIES[marketplace].not_sent(
        SyncAction.CLOSE_DISPUTE, third_party_managed=False, from_marketplace=False, dispute=(kind, outcome)
    )
    sent = (marketplace, kind, outcome) == (Marketplace.EBAY, DisputeKind.CLAIM, DisputeOutcome.ACCEPTED)
    assert reason is (None if sent else NotSent.NO_CALL)


@pytest.mark.parametrize("action", [SyncAction.SHIP, SyncAction.CANCEL, SyncAction.REFUND])
def test_third_party_managed_and_marketplace_facts_are_never_sent(action):
    """Nothing of a Third Party Managed order is sent, and nothing the marketplace told the ledger is echoed."""
    policy = POLICIES[Marketplace.WALMART]
    assert policy.not_sent(action, third_party_managed=False, from_marketplace=False) is None
    assert (
        policy.not_sent(action, third_party_managed=True, from_marketplace=False)
        is NotSent.THIRD_PARTY_MANAGED
    )
    assert (
        policy.not_sent(action, third_party_managed=False, from_marketplace=True) is NotSent.FROM_MARKETPLACE
    )


def test_a_third_party_managed_ebay_cancellation_applies_at_once(shop):
    """A TPM eBay order's cancellation is filed nowhere, so it opens no dispute: it cancels at once."""
    order_id = shop.order(Marketplace.EBAY, fulfillment_managed=False)
    assert not shop.details(order_id).actions.cancel_opens_dispute

    result = shop.cancel(order_id, reason=CancelReason.OUT_OF_STOCK)

    details = shop.details(order_id)
    assert result.events[0] == "Cancelled"
    assert (details.status, details.open, details.disputes) == ("canceled", False, ())
    [entry] = details.sync
    assert (entry.action, entry.state, entry.reason) == ("cancel", "not_sent", "third_party_managed")


def test_the_order_sync_shows_each_change_pending_until_acknowledged(shop):
    """A shipment is `pending` until the marketplace acknowledges it, then `sent`."""
    order_id = shop.order(Marketplace.AMAZON)
    shipment_id = shop.ship(order_id).ids["shipment_id"]
    [entry] = shop.details(order_id).sync
    assert (entry.action, entry.reference, entry.state) == ("ship", str(shipment_id), "pending")

    shop.acknowledge(order_id, shipment_id)

    [entry] = shop.details(order_id).sync
    assert entry.state == "sent"


def test_a_dead_change_shows_dead_with_attention_until_resolved_by_hand(shop):
    """The dispatcher's SyncItemDied makes the change `dead` (attention); SyncItemResolved settles it."""
    order_id = shop.order(Marketplace.WALMART)
    shipment_id = shop.ship(order_id).ids["shipment_id"]
    change = {"order_id": order_id, "action": SyncAction.SHIP, "reference": str(shipment_id)}
    shop.ledger.execute(RecordSyncItemDied(ctx=shop.ctx, reason="503 eight times", **change))

    [entry] = shop.details(order_id).sync
    assert (entry.state, entry.message) == ("dead", "503 eight times")
    assert shop.details(order_id).attention

    shop.ledger.execute(ResolveSyncItem(ctx=shop.ctx, reason="confirmed in Seller Center", **change))

    [entry] = shop.details(order_id).sync
    assert (entry.state, entry.reason) == ("sent", "resolved: confirmed in Seller Center")
    assert not shop.details(order_id).attention

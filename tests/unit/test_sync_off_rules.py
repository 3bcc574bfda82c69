"""Sync off per account: changes are recorded and never sent (`not_sent`, reason `sync_off`), Amazon refunds
are allowed, and turning sync on again sends only what is changed from then on."""

from __future__ import annotations

from uuid import UUID

import pytest

from ledger.aggregates.errors import RefundBeforeChargeError
from ledger.aggregates.policies import POLICIES, NotSent
from ledger.aggregates.values import Marketplace, RefundReason, RefundRequestLine, SyncAction


def set_sync(shop, account_id: UUID, on: bool) -> None:
    shop.ledger.update_account(shop.ctx, account_id, sync_enabled=on)


def sync_off_order(shop, marketplace: Marketplace = Marketplace.AMAZON) -> tuple[UUID, UUID]:
    """An order of an account registered with sync on, then turned off: (account id, order id)."""
    order_id = shop.order(marketplace)
    account_id = shop.account(marketplace)
    set_sync(shop, account_id, False)
    return account_id, order_id


@pytest.mark.parametrize("marketplace", list(Marketplace))
def test_the_policy_names_sync_off_after_the_reasons_that_outlast_it(marketplace: Marketplace) -> None:
    """`not_sent`: sync off holds back what would be sent; Third Party Managed, an echo of the marketplace's word
    and a call the marketplace lacks are named first (they stay true whatever the setting)."""
    policy = POLICIES[marketplace]
    assert policy.not_sent(SyncAction.SHIP, third_party_managed=False, from_marketplace=False, sync_off=True) \
        is NotSent.SYNC_OFF  # fmt: skip
    assert policy.not_sent(SyncAction.SHIP, third_party_managed=False, from_marketplace=False) is None
    assert policy.not_sent(SyncAction.SHIP, third_party_managed=True, from_marketplace=False, sync_off=True) \
        is NotSent.THIRD_PARTY_MANAGED  # fmt: skip
    assert policy.not_sent(SyncAction.CANCEL, third_party_managed=False, from_marketplace=True, sync_off=True) \
        is NotSent.FROM_MARKETPLACE  # fmt: skip
    assert policy.not_sent(SyncAction.CLOSE_DISPUTE, third_party_managed=False, from_marketplace=False,
                           sync_off=True) is NotSent.NO_CALL  # fmt: skip


def test_an_account_registers_with_sync_on_and_the_setting_is_an_event(shop) -> None:
    """Sync is on by default; turning it off (and on) is recorded on the account, and read back."""
    account_id = shop.account(Marketplace.EBAY)
    assert shop.ledger.get_account(account_id).sync_enabled
    set_sync(shop, account_id, False)
    assert not shop.ledger.get_account(account_id).sync_enabled
    registered = shop.ledger.register_account(
        shop.ctx, seller=shop.seller, marketplace=Marketplace.EBAY, name="quiet", sync_enabled=False
    )
    assert not registered.sync_enabled
    assert not any(a.sync_enabled for a in shop.ledger.list_accounts(shop.seller) if a.name == "quiet")


def test_changes_made_with_sync_off_are_recorded_and_not_sent(shop) -> None:
    """Shipping and cancelling on a sync-off account change the order; its `sync` shows each change `not_sent`
    with the reason `sync_off`, and the order's sync state is `not_sent` (the marketplace lacks them)."""
    _, order_id = sync_off_order(shop, Marketplace.WALMART)

    shop.ship(order_id, {"A": 2})
    shop.cancel(order_id, {"B": 3})

    details = shop.details(order_id)
    assert (details.shipped_units, details.cancelled_units) == (2, 3)
    assert {(e.action, e.state, e.reason) for e in details.sync if e.action != "acknowledge"} == {
        ("ship", "not_sent", "sync_off"),
        ("cancel", "not_sent", "sync_off"),
    }
    assert details.sync_state == "not_sent"
    assert not details.attention  # nothing refused: the seller chose not to sync


def test_turning_sync_on_again_leaves_earlier_changes_not_sent_and_sends_new_ones(shop) -> None:
    """Changes made while sync was off stay `not_sent` once it is on again (never sent late, by surprise);
    changes made after are sent as usual."""
    account_id, order_id = sync_off_order(shop)
    shop.ship(order_id, {"A": 2})
    set_sync(shop, account_id, True)

    shop.ship(order_id, {"B": 3})

    states = sorted((e.state, e.reason) for e in shop.details(order_id).sync)
    assert states == [("not_sent", "sync_off"), ("pending", None)]
    assert shop.details(order_id).sync_state == "pending"


def test_amazon_refunds_are_allowed_with_sync_off(shop) -> None:
    """Amazon charges on its acknowledgement of the shipment; with sync off that never comes and the ledger
    cannot know what Amazon charged, so a refund of shipped units is allowed (as for Third Party Managed)."""
    _, order_id = sync_off_order(shop)
    shop.ship(order_id)

    assert shop.details(order_id).actions.refund
    assert shop.refund(order_id, reason=RefundReason.OTHER).events == ("Refunded",)
    assert [(line.line_id, line.refunded_quantity) for line in shop.details(order_id).lines] == [
        ("A", 2),
        ("B", 3),
    ]


def test_amazon_refunds_reach_units_shipped_with_sync_off_after_sync_is_on_again(shop) -> None:
    """Units shipped while sync was off stay refundable after sync is on again (Amazon never had their
    confirmation); units shipped since wait for Amazon's acknowledgement as usual."""
    account_id, order_id = sync_off_order(shop)
    shop.ship(order_id, {"A": 2})
    set_sync(shop, account_id, True)
    shop.ship(order_id, {"B": 3})

    with pytest.raises(RefundBeforeChargeError):
        shop.refund(order_id, reason=RefundReason.OTHER, lines=_refund_lines({"B": 1}))
    assert shop.refund(order_id, reason=RefundReason.OTHER, lines=_refund_lines({"A": 2})).events == (
        "Refunded",
    )


def test_voiding_a_shipment_made_with_sync_off_takes_its_units_out_of_the_refundable(shop) -> None:
    """A voided sync-off shipment's units are unshipped: nothing of them is refundable any more."""
    account_id, order_id = sync_off_order(shop)
    shipment_id = shop.ship(order_id, {"A": 2}).ids["shipment_id"]
    shop.ledger.void_shipment(shop.ctx, order_id, shipment_id=shipment_id, reason="wrong parcel")
    set_sync(shop, account_id, True)
    shop.ship(order_id, {"A": 2})

    with pytest.raises(RefundBeforeChargeError):
        shop.refund(order_id, reason=RefundReason.OTHER, lines=_refund_lines({"A": 1}))


def test_an_order_imported_with_sync_off_is_not_acknowledged(shop) -> None:
    """Walmart orders are acknowledged through the queue; with sync off the import says nothing back, and the
    import's event carries the setting (the outbound queue reads it)."""
    account_id = shop.account(Marketplace.WALMART)
    set_sync(shop, account_id, False)
    order_id = shop.ledger.import_order(shop.ctx, account_id, shop.imported()).order_id

    [imported] = shop.events(order_id)
    assert imported.sync_off
    assert shop.details(order_id).sync == ()


def _refund_lines(units: dict[str, int]) -> tuple[RefundRequestLine, ...]:
    return tuple(RefundRequestLine(k, q) for k, q in units.items())

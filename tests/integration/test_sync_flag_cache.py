"""The account's sync setting as order commands see it (`LedgerCore._sync_context`): "sync on" is remembered for
a moment, "sync off" never is, and a Ledger that changes the setting itself sees its change at once."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import pytest
from order_scenarios import OrderSpec, Scenario, new_seller

from ledger.aggregates.values import Carrier, LineQuantity, Marketplace, Source
from ledger.application import core
from ledger.application.ledger import Ledger

UPS = "1Z999AA10123456784"
SPEC = OrderSpec(Marketplace.WALMART, True, False, True, "USD", (5,), False, Source.IMPORT)


@pytest.fixture
def other(ledger_env: dict[str, str]) -> Iterator[Ledger]:
    """A second Ledger on the same database, as another process would be."""
    ledger = Ledger(env=ledger_env)
    yield ledger
    ledger.close()


def ship_one(app: Ledger, shop: Scenario, order_id: UUID) -> str:
    """Ship one unit; the state the ship change's sync entry is in ("not_sent" when sync is off)."""
    app.ship(shop.ctx(), order_id, carrier=Carrier.UPS, tracking_number=UPS, lines=(LineQuantity("L1", 1),))
    return [e.state for e in app.get_order(order_id).sync if e.action == "ship"][-1]


def test_a_ledger_sees_its_own_change_of_sync_at_once(app: Ledger) -> None:
    shop = Scenario(app, new_seller("sync-flag"))
    placed = shop.place(SPEC)
    account_id = app.get_order(placed.order_id).account_id
    assert ship_one(app, shop, placed.order_id) != "not_sent"  # sync on, now remembered

    app.update_account(shop.ctx(), account_id, sync_enabled=False)
    assert ship_one(app, shop, placed.order_id) == "not_sent"

    app.update_account(shop.ctx(), account_id, sync_enabled=True)
    assert ship_one(app, shop, placed.order_id) != "not_sent"


def test_sync_turned_on_elsewhere_is_seen_at_once_and_off_once_the_moment_has_passed(
    app: Ledger, other: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = Scenario(app, new_seller("sync-flag"))
    placed = shop.place(SPEC)
    account_id = app.get_order(placed.order_id).account_id
    other.update_account(shop.ctx(), account_id, sync_enabled=False)
    assert ship_one(app, shop, placed.order_id) == "not_sent"

    monkeypatch.setattr(core, "SYNC_ON_SECONDS", 0.0)  # "on" is remembered for no time at all
    other.update_account(shop.ctx(), account_id, sync_enabled=True)  # "off" is never remembered
    assert ship_one(app, shop, placed.order_id) != "not_sent"
    other.update_account(shop.ctx(), account_id, sync_enabled=False)
    assert ship_one(app, shop, placed.order_id) == "not_sent"

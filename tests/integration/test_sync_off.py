"""Sync off per account, against the sandbox on PostgreSQL: nothing is imported from or sent to the marketplace
while it is off, and turning it on again never sends what was changed meanwhile."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from flow_support import CTX, Flow
from sandbox_support import Sandbox, sandbox_fixture, sandbox_url_fixture  # noqa: F401

from ledger.aggregates.values import Carrier, Marketplace
from ledger.application.errors import OrderNotFoundError
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget
from ledger.integrations.dispatcher import SYNC_OFF_REASON
from ledger.integrations.outbox import OutboundItem, OutboundView

pytestmark = pytest.mark.postgres
UPS_TRACKING = "1Z999AA10123456784"


@pytest.fixture
def own_app(own_target: PostgresTarget) -> Iterator[Ledger]:
    """A Ledger in a schema of the test's own: its dispatcher sends only this test's items."""
    ledger = Ledger(env=own_target.eventsourcing_env())
    yield ledger
    ledger.close()


def set_sync(f: Flow, on: bool) -> None:
    f.app.update_account(CTX, f.account.account_id, sync_enabled=on)


def queued(f: Flow, order_id: UUID) -> list[OutboundItem]:
    with f.connect() as conn:
        return OutboundView().list_items(conn, f.account.seller, order_id=order_id)


def test_with_sync_off_nothing_is_imported_or_sent_and_turning_it_on_sends_only_new_changes(
    own_app: Ledger, own_target: PostgresTarget, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Sync off: a shipment is recorded but never queued nor sent, and the importer skips the account. Sync on
    again: the earlier shipment stays not sent (the seller tells Walmart knowingly, never the ledger by surprise),
    the orders placed meanwhile import, and a new shipment goes out."""
    f = Flow(own_app, own_target, sandbox, tmp_path, Marketplace.WALMART)
    first, second = sandbox.orders("walmart", f.token, count=2)
    f.import_round()
    f.dispatch()  # the acknowledgements, while sync is on
    set_sync(f, False)

    quiet = f.order_id(first["order_id"])
    own_app.ship(CTX, quiet, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    (later,) = sandbox.orders("walmart", f.token, count=1)
    report = f.import_round()
    f.dispatch()

    assert report.error == "skipped: sync is off for this account"
    with pytest.raises(OrderNotFoundError):
        f.order_id(later["order_id"])
    assert f.remote(first["order_id"])["status"] != "shipped"
    assert [i.action for i in queued(f, quiet)] == ["acknowledge"]  # no ship item was ever made
    ship = next(e for e in own_app.get_order(quiet).sync if e.action == "ship")
    assert (ship.state, ship.reason) == ("not_sent", "sync_off")

    set_sync(f, True)
    f.import_round()
    own_app.ship(CTX, f.order_id(second["order_id"]), carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    f.dispatch()

    assert f.remote(first["order_id"])["status"] != "shipped"  # never sent late
    assert own_app.get_order(quiet).sync_state == "not_sent"
    assert f.remote(second["order_id"])["status"] == "shipped"
    assert own_app.get_order(f.order_id(later["order_id"])).account_id == f.account.account_id  # imported now
    assert sandbox.violations() == []


def test_an_item_queued_before_sync_was_turned_off_is_not_sent_but_dead_for_an_operator(
    own_app: Ledger, own_target: PostgresTarget, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A shipment queued while sync was on, not yet sent when it was turned off, is never sent by the dispatcher:
    it is dead with the reason (the order needs attention), and stays so after sync is on until retried."""
    f = Flow(own_app, own_target, sandbox, tmp_path, Marketplace.WALMART)
    (made,) = sandbox.orders("walmart", f.token, count=1)
    f.import_round()
    f.dispatch()  # the acknowledgement
    order_id = f.order_id(made["order_id"])
    own_app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    set_sync(f, False)
    f.dispatch()

    items = {i.action: i for i in queued(f, order_id)}
    assert (items["ship"].state, items["ship"].last_error) == ("dead", SYNC_OFF_REASON)
    assert f.remote(made["order_id"])["status"] != "shipped"
    assert own_app.get_order(order_id).attention

    set_sync(f, True)
    f.dispatch()
    assert f.remote(made["order_id"])["status"] != "shipped"  # nothing goes out by itself
    assert sandbox.violations() == []

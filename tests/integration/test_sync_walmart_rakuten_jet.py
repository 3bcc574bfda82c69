"""Walmart, Rakuten and Jet end to end: the importer brings the sandbox's orders into the ledger on PostgreSQL,
the outbound queue and the dispatcher take the seller's changes back, and the sandbox ends up holding them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from flow_support import Flow
from sandbox_support import Sandbox, sandbox_fixture, sandbox_url_fixture  # noqa: F401

from ledger.aggregates.values import (
    CancelReason,
    Carrier,
    Context,
    Marketplace,
    RefundReason,
    RefundRequestLine,
    Source,
)
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget
from ledger.integrations import outbox
from ledger.integrations.base import SyncRequest
from ledger.integrations.marketplaces import client_for

pytestmark = pytest.mark.postgres
CTX = Context(actor="test", source=Source.API)
UPS_TRACKING = "1Z999AA10123456784"


@pytest.fixture
def own_app(own_target: PostgresTarget) -> Iterator[Ledger]:
    """A Ledger in a schema of the test's own: its dispatcher sends only this test's items."""
    ledger = Ledger(env=own_target.eventsourcing_env())
    yield ledger
    ledger.close()


def flow(
    own_app: Ledger, own_target: PostgresTarget, sandbox: Sandbox, tmp_path: Path, mp: Marketplace
) -> Flow:
    return Flow(own_app, own_target, sandbox, tmp_path, mp)


def test_walmart_orders_in_acknowledged_shipped_refunded_out(
    own_app: Ledger, own_target: PostgresTarget, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Walmart orders import once, each is acknowledged through the queue, and a shipment and refund reach Walmart."""
    f = flow(own_app, own_target, sandbox, tmp_path, Marketplace.WALMART)
    made = sandbox.orders("walmart", f.token, count=3)
    f.import_round()
    f.import_round()
    ids = {view["order_id"]: f.order_id(view["order_id"]) for view in made}
    f.dispatch()
    for moid in ids:
        assert f.remote(moid)["acknowledged_at"] is not None
    assert all(e["attempts"] == 1 for e in sandbox.effects("walmart", f.token))

    moid, order_id = next(iter(ids.items()))
    own_app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    line_id = own_app.get_order(order_id).lines[0].line_id
    own_app.refund(CTX, order_id, reason=RefundReason.DAMAGED, lines=(RefundRequestLine(line_id, 1),))
    f.dispatch()
    remote = f.remote(moid)
    assert remote["status"] == "shipped"
    assert len(remote["refunds"]) == 1
    history = f.history(order_id)
    assert history.count("MarketplaceAcknowledged") == 3  # acknowledgement, shipment, refund
    assert "MarketplaceRejected" not in history
    assert all(f.differences(m) == [] for m in ids)
    # Someone cancels an order directly in Walmart's seller center: sync check sees it.
    other = next(m for m in ids if m != moid)
    direct = client_for(f.account, f.settings)
    line = f.remote(other)["lines"][0]
    payload = {"reason": "out_of_stock", "lines": [{"line_id": "1", "sku": line["sku"], "quantity": 1}]}
    message = outbox.decode("cancel", {"marketplace_order_id": other, **payload})
    direct.send(SyncRequest(uuid4(), uuid4(), other, "cancel", "direct", "direct-1", message))
    direct.close()
    units = sum(line["quantity"] for line in f.remote(other)["lines"])
    expected = [("line 1 cancelled", "0", "1")]
    if units == 1:  # that was the order's only unit: on Walmart it is cancelled, in the ledger unshipped
        expected.insert(0, ("status", "unshipped", "canceled"))
    assert f.differences(other) == expected
    assert sandbox.violations() == []


def test_rakuten_cancellation_restocks_on_rakuten_and_shipment_arrives(
    own_app: Ledger, own_target: PostgresTarget, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A cancelled Rakuten order goes out with the restock choice; another order's shipment arrives once."""
    f = flow(own_app, own_target, sandbox, tmp_path, Marketplace.RAKUTEN)
    cancelled, shipped = sandbox.orders("rakuten", f.token, count=2, max_lines=1)
    f.import_round()
    own_app.cancel(CTX, f.order_id(cancelled["order_id"]), reason=CancelReason.OUT_OF_STOCK)
    own_app.ship(CTX, f.order_id(shipped["order_id"]), carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    f.dispatch()
    f.dispatch()
    gone = f.remote(cancelled["order_id"])
    assert gone["status"] == "canceled"
    line = cancelled["lines"][0]
    assert gone["restocked"] == {line["sku"]: line["quantity"]}
    assert gone["cancellations"][0]["reason"] == "OUT_OF_STOCK"
    sent = f.remote(shipped["order_id"])
    assert sent["status"] == "shipped"
    assert [(s["delivery_company"], s["shipping_number"]) for s in sent["shipments"]] == [
        ("1020", UPS_TRACKING)
    ]
    assert sandbox.violations() == []


def test_jet_whole_order_cancellation_and_refund_arrive(
    own_app: Ledger, own_target: PostgresTarget, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Jet takes the ledger's whole-order cancellation, and a shipment then a refund of another order."""
    f = flow(own_app, own_target, sandbox, tmp_path, Marketplace.JET)
    cancelled, shipped = sandbox.orders("jet", f.token, count=2, max_lines=2)
    f.import_round()
    own_app.cancel(CTX, f.order_id(cancelled["order_id"]), reason=CancelReason.BUYER_CANCELLED)
    order_id = f.order_id(shipped["order_id"])
    own_app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    line_id = own_app.get_order(order_id).lines[0].line_id
    own_app.refund(CTX, order_id, reason=RefundReason.CUSTOMER_RETURN, lines=(RefundRequestLine(line_id, 1),))
    f.dispatch()
    assert f.remote(cancelled["order_id"])["cancellations"][0]["reason"] == "Customer Requested"
    assert f.remote(cancelled["order_id"])["status"] == "canceled"
    remote = f.remote(shipped["order_id"])
    assert remote["status"] == "shipped"
    assert len(remote["refunds"]) == 1
    assert "MarketplaceRejected" not in f.history(order_id)
    assert f.differences(cancelled["order_id"]) == []
    assert f.differences(shipped["order_id"]) == []
    assert sandbox.violations() == []


def test_a_walmart_buyers_cancellation_request_is_a_request_until_the_seller_cancels(
    own_app: Ledger, own_target: PostgresTarget, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Walmart's intentToCancel imports as a CancellationRequested (once); the units stay open until the seller
    cancels, and the seller's cancellation then reaches Walmart."""
    f = flow(own_app, own_target, sandbox, tmp_path, Marketplace.WALMART)
    (made,) = sandbox.orders("walmart", f.token, count=1)
    moid = made["order_id"]
    f.import_round()
    sandbox.event("walmart", f.token, moid, "buyer_cancel")
    f.import_round()
    f.import_round()  # the request is seen again: recorded once
    order_id = f.order_id(moid)
    history = f.history(order_id)
    assert history.count("CancellationRequested") == 1
    assert "Cancelled" not in history
    order = own_app.get_order(order_id)
    assert sum(line.cancelled for line in order.lines) == 0

    own_app.cancel(CTX, order_id, reason=CancelReason.BUYER_CANCELLED)
    f.dispatch()
    remote = f.remote(moid)
    assert remote["status"] == "canceled"
    assert f.differences(moid) == []
    assert sandbox.violations() == []


@pytest.mark.parametrize("mp", [Marketplace.WALMART, Marketplace.RAKUTEN, Marketplace.JET])
def test_the_marketplaces_own_cancellation_is_recorded_as_its_word(
    own_app: Ledger, own_target: PostgresTarget, sandbox: Sandbox, tmp_path: Path, mp: Marketplace
) -> None:
    """The marketplace cancels orders itself: an unshipped one is cancelled in the ledger by the marketplace
    (never echoed back); one the seller shipped but the marketplace never had is recorded as the marketplace's
    word, with attention, and the seller voids the shipment. A re-import records nothing new."""
    f = flow(own_app, own_target, sandbox, tmp_path, mp)
    unshipped, shipped = sandbox.orders(mp.value, f.token, count=2, max_lines=2)
    f.import_round()
    f.dispatch()  # Walmart's acknowledgements
    shipped_id = f.order_id(shipped["order_id"])
    shipment_id = own_app.ship(CTX, shipped_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING).ids[
        "shipment_id"
    ]
    for view in (unshipped, shipped):
        sandbox.event(mp.value, f.token, view["order_id"], "marketplace_cancel")

    f.import_round()
    f.import_round()  # seen again: recorded once

    cancelled = own_app.get_order(f.order_id(unshipped["order_id"]))
    assert (cancelled.status, cancelled.attention) == ("canceled", False)
    assert [c.requested_by for c in cancelled.cancellations] == ["marketplace"]
    assert [(e.action, e.state, e.reason) for e in cancelled.sync if e.action == "cancel"] == [
        ("cancel", "not_sent", "from_marketplace")
    ]
    if mp is Marketplace.WALMART:  # Walmart says why (SELLER_CANCEL_FRAUD_STOP_SHIPMENT)
        assert cancelled.cancellations[0].reason == "fraud_suspected"
    disputed = own_app.get_order(shipped_id)
    assert disputed.attention
    assert sum(i.quantity for i in disputed.marketplace_cancelled) == disputed.shipped_units > 0
    assert f.history(shipped_id).count("MarketplaceCancelled") == 1

    own_app.void_shipment(CTX, shipped_id, shipment_id=shipment_id, reason="cancelled by the marketplace")
    f.dispatch()
    resolved = own_app.get_order(shipped_id)
    assert (resolved.status, resolved.attention) == ("canceled", False)
    assert f.remote(shipped["order_id"])["status"] == "canceled"  # the withdrawn shipment never went out
    assert sandbox.violations() == []


def test_a_cancellation_the_ledger_sent_comes_back_as_nothing_new(
    own_app: Ledger, own_target: PostgresTarget, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The seller's whole-order cancellation, once on Walmart, reads as a cancelled order at the next import:
    the ledger has it already and records nothing."""
    f = flow(own_app, own_target, sandbox, tmp_path, Marketplace.WALMART)
    (made,) = sandbox.orders("walmart", f.token, count=1)
    f.import_round()
    order_id = f.order_id(made["order_id"])
    own_app.cancel(CTX, order_id, reason=CancelReason.OUT_OF_STOCK)
    f.dispatch()
    assert f.remote(made["order_id"])["status"] == "canceled"
    before = f.history(order_id)

    f.import_round()

    assert f.history(order_id) == before
    assert [c.requested_by for c in own_app.get_order(order_id).cancellations] == ["seller"]

"""The sync engine against the sandbox marketplaces: an item waits only for its own operation's rate limit and
for the earlier items of its order it depends on; a dead item is said on its order and strands nothing else."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sync_support import CTX, Flow

from ledger.aggregates.values import CancelReason, Carrier, LineQuantity, Marketplace
from ledger.integrations.dispatcher import Dispatcher
from ledger.integrations.importer import Importer

UPS = "1Z999AA10123456784"


def _import(flow: Flow, marketplace: Marketplace, count: int, **options: Any) -> list[tuple[str, Any]]:
    """`count` orders made at the marketplace and imported: (marketplace order id, ledger order id) each."""
    made = [o["order_id"] for o in flow.make_orders(marketplace, count, **options)]
    [report] = Importer(flow.app, flow.connect, flow.settings()).run_round(flow.account(marketplace))
    assert report.created == count, report
    return [(moid, flow.order_id(marketplace, moid)) for moid in made]


def test_tracking_is_not_delayed_by_cancellations_queued_behind_the_feed_limit(flow: Flow) -> None:
    """20 Amazon cancellations then 3 shipments, Amazon's published limits: the createFeed burst (15) goes out,
    the other cancellations wait for its bucket, and every shipment confirmation reaches Amazon meanwhile; the
    sandbox, keeping Amazon's published limits too, never had to refuse a call."""
    orders = _import(flow, Marketplace.AMAZON, 23)
    flow.sandbox.settings(rate_limits=1)  # from here (the importer's calls are not the dispatcher's to limit)
    cancelled, shipped = orders[:20], orders[20:]
    for _, order_id in cancelled:
        flow.app.cancel(CTX, order_id, reason=CancelReason.OUT_OF_STOCK)
    for _, order_id in shipped:
        flow.app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS)
    flow.queue()
    dispatcher = Dispatcher(flow.app, flow.connect, flow.settings())
    try:
        dispatcher.dispatch_due()
    finally:
        dispatcher.close()
    states = Counter((i["action"], i["state"]) for i in flow.items())
    assert states[("ship", "succeeded")] == 3
    assert 15 <= states[("cancel", "in_flight")] <= 16  # the burst (one more if a token came meanwhile)
    assert states[("cancel", "pending")] == 20 - states[("cancel", "in_flight")]
    token = flow.tokens[Marketplace.AMAZON]
    confirmed = {
        e["order_id"] for e in flow.sandbox.effects("amazon", token) if e["operation"] == "confirmShipment"
    }
    assert confirmed == {moid for moid, _ in shipped}
    assert [f for f in flow.sandbox.faults()["fired"] if f["kind"] == "rate_limit"] == []


def test_a_dead_item_is_said_on_its_order_and_holds_back_only_what_depends_on_it(flow: Flow) -> None:
    """Jet fails a shipment and the dispatcher gives up (one attempt allowed): the item is dead and the order records SyncItemDied; the order's next
    shipment, of another line, still reaches Jet."""
    orders = _import(flow, Marketplace.JET, 12, max_lines=3)
    moid, order_id = next((moid, oid) for moid, oid in orders if len(flow.app.get_order(oid).lines) >= 2)
    first, second = flow.app.get_order(order_id).lines[:2]
    for line in (first, second):
        flow.app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS,
                      lines=(LineQuantity(line.line_id, line.quantity),))  # fmt: skip
    flow.queue()
    flow.sandbox.fault("jet", "shipOrder", "server_error")
    dispatcher = Dispatcher(flow.app, flow.connect, flow.settings(sync_max_attempts=1))
    try:
        dispatcher.dispatch_due()
    finally:
        dispatcher.close()
    states = [(i["sequence"], i["state"]) for i in flow.items() if i["order_id"] == order_id]
    assert states == [(1, "dead"), (2, "succeeded")]
    history = [e.type for e in flow.app.order_history(order_id)]
    assert history[-3:] == ["MarketplaceRejected", "SyncItemDied", "MarketplaceAcknowledged"]
    effects = flow.sandbox.effects("jet", flow.tokens[Marketplace.JET], order_id=moid)
    assert [e["operation"] for e in effects] == ["shipOrder"]


def test_the_sandbox_refuses_calls_beyond_amazons_published_limit(flow: Flow) -> None:
    """With limits on and the ledger's createFeed bucket lifted, the 16th feed in a row is a 429 (at its
    createFeedDocument, burst 15 too): the sandbox keeps Amazon's published limits."""
    orders = _import(flow, Marketplace.AMAZON, 16)
    flow.sandbox.settings(rate_limits=1)
    for _, order_id in orders:
        flow.app.cancel(CTX, order_id, reason=CancelReason.OUT_OF_STOCK)
    flow.queue()
    settings = flow.settings(rate_limits={"amazon.createFeed": (1000.0, 1000)}, sync_backoff=60.0)
    dispatcher = Dispatcher(flow.app, flow.connect, settings)
    try:
        dispatcher.dispatch_due()
    finally:
        dispatcher.close()
    fired = [f for f in flow.sandbox.faults()["fired"] if f["kind"] == "rate_limit"]
    assert fired == [{"marketplace": "amazon", "operation": "createFeedDocument", "kind": "rate_limit"}]
    states = Counter(i["state"] for i in flow.items())
    assert states == {"in_flight": 15, "failed": 1}

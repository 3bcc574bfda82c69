"""All Sales shows what needs the seller: a dead sync item, the marketplace's cancellation, a buyer's request."""

from __future__ import annotations

from typing import Any

from order_scenarios import UPS_TRACKING, OrderSpec, Scenario, catch_up, new_seller

from ledger.aggregates.values import CancelReason, Carrier, Marketplace, Requester, Source, SyncAction
from ledger.application.commands import RecordSyncItemDied, ResolveSyncItem
from ledger.application.ledger import Ledger
from ledger.projections import base
from ledger.projections.all_sales import AllSalesProjection
from ledger.projections.all_sales_view import AllSalesView, SalesFilter

VIEW = AllSalesView()


def _spec(marketplace: Marketplace) -> OrderSpec:
    return OrderSpec(marketplace, True, False, True, "USD", (2,), False, Source.IMPORT)  # seller-fulfilled


def _seen(app: Ledger, connect: base.Connect, seller: str, order_id: Any) -> dict[str, Any]:
    """The order as All Sales lists and counts it, caught up with the log."""
    catch_up(AllSalesProjection(), connect, app, 50)
    with connect() as conn:
        (summary,) = VIEW.list_orders(conn, seller, SalesFilter()).items
        flagged = VIEW.list_orders(conn, seller, SalesFilter(attention=True)).items
        calm = VIEW.list_orders(conn, seller, SalesFilter(attention=False)).items
        requested = VIEW.list_orders(conn, seller, SalesFilter(buyer_cancel_requested=True)).items
        counts = VIEW.counts(conn, seller, SalesFilter())
    order = app.repository.get(order_id)
    assert summary.order_id == order_id
    assert (summary.attention, summary.buyer_cancel_requested, summary.sync_state) == (
        order.attention,
        order.buyer_cancel_requested,
        order.sync_state,
    )
    assert [s.order_id for s in flagged] == ([order_id] if summary.attention else [])
    assert [s.order_id for s in calm] == ([] if summary.attention else [order_id])
    assert [s.order_id for s in requested] == ([order_id] if summary.buyer_cancel_requested else [])
    assert counts["attention"] == int(summary.attention)
    assert counts["buyer_cancel_requested"] == int(summary.buyer_cancel_requested)
    return {
        "attention": summary.attention,
        "requested": summary.buyer_cancel_requested,
        "sync": summary.sync_state,
    }


def test_a_dead_sync_item_needs_attention_until_resolved(app: Ledger, connect: base.Connect) -> None:
    """A change the dispatcher gave up on lists the order as dead and needing attention; resolving clears it."""
    shop = Scenario(app, new_seller("attention-dead"))
    order_id = shop.place(_spec(Marketplace.EBAY)).order_id
    shipped = app.ship(shop.ctx(), order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    reference = str(shipped.ids["shipment_id"])
    assert _seen(app, connect, shop.seller, order_id) == {
        "attention": False,
        "requested": False,
        "sync": "pending",
    }
    app.execute(
        RecordSyncItemDied(
            ctx=shop.ctx(), order_id=order_id, action=SyncAction.SHIP, reference=reference, reason="gone"
        )
    )
    assert _seen(app, connect, shop.seller, order_id) == {
        "attention": True,
        "requested": False,
        "sync": "dead",
    }
    app.execute(
        ResolveSyncItem(
            ctx=shop.ctx(), order_id=order_id, action=SyncAction.SHIP, reference=reference, reason="phoned"
        )
    )
    assert _seen(app, connect, shop.seller, order_id) == {
        "attention": False,
        "requested": False,
        "sync": "in_sync",
    }


def test_a_buyer_cancel_request_needs_attention_until_answered(app: Ledger, connect: base.Connect) -> None:
    """A buyer's late cancellation request is listed, counted and filtered until the seller cancels."""
    shop = Scenario(app, new_seller("attention-buyer"))
    order_id = shop.place(_spec(Marketplace.AMAZON)).order_id
    app.cancel(shop.ctx(), order_id, reason=CancelReason.BUYER_CANCELLED, requested_by=Requester.BUYER)
    seen = _seen(app, connect, shop.seller, order_id)
    assert (seen["attention"], seen["requested"]) == (True, True)
    app.cancel(shop.ctx(), order_id, reason=CancelReason.BUYER_CANCELLED)
    seen = _seen(app, connect, shop.seller, order_id)
    assert (seen["attention"], seen["requested"]) == (False, False)


def test_a_marketplace_cancellation_of_shipped_units_needs_attention(
    app: Ledger, connect: base.Connect
) -> None:
    """The marketplace cancelling units the ledger shows shipped raises attention; a refund settles it."""
    shop = Scenario(app, new_seller("attention-marketplace"))
    order_id = shop.place(_spec(Marketplace.AMAZON)).order_id
    app.ship(shop.ctx(), order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    app.cancel(
        shop.ctx(Source.MARKETPLACE),
        order_id,
        reason=CancelReason.BUYER_CANCELLED,
        requested_by=Requester.MARKETPLACE,
    )
    assert _seen(app, connect, shop.seller, order_id)["attention"] is True

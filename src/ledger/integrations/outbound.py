"""The outbound sync queue: what each marketplace must be told about an order, in the order it happened.

One item per change the ledger made that a marketplace has to hear about: a shipment, a cancellation, a
refund, a dispute the seller closed, and (Walmart) the acknowledgement of a new order. Nothing the marketplace
cannot receive (`MarketplacePolicy.not_sent`): nothing for Third Party Managed orders, nothing for facts that
came from the marketplace itself (telling it back would be an echo), no call the marketplace does not have.

An item's id is a uuid5 of (order, action, reference), so it is the same in every generation, and its
`idempotency_key` (the id as text) is what the dispatcher hands to the marketplace: a rebuild never makes a
second request for the same change.

This projection holds no SQL: `outbox.py`, the queue's one owner, writes the rows. The projection hands it the
items it makes and the marketplace's answers that arrive as events (`MarketplaceAcknowledged`,
`MarketplaceRejected`), inside its batch's transaction; the dispatcher claims and finishes items through it.
It lives in integrations/ beside the outbox and the marketplace table it reads (what each marketplace is sent).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID, uuid5

from ledger.aggregates.order import Order
from ledger.aggregates.policies import policy_for
from ledger.aggregates.values import DisputeKind, DisputeOutcome, Requester, Source, SyncAction
from ledger.integrations import outbox
from ledger.integrations.marketplaces import entry_for
from ledger.integrations.outbox import ItemRow, OrderRow
from ledger.projections import base
from ledger.projections.base import Cursor, Event, Projection, Tables

# The sync action an answer may name for an item of another action: the aggregate accepts answers about a
# cancellation dispute only as `open_dispute`, while the queue asks for it with `cancel`.
ANSWER_ALIASES = {SyncAction.OPEN_DISPUTE.value: SyncAction.CANCEL.value}


def item_id(order_id: UUID, action: str, reference: str) -> UUID:
    """The id of the item that tells the marketplace `action` about `reference` (stable forever)."""
    return uuid5(order_id, f"{action}:{reference}")


# ------------------------------------------------------------------------------------------ rows


def _lines(row: OrderRow, lines: Sequence[Any]) -> tuple[outbox.Line, ...]:
    return tuple(
        outbox.Line(line_id=i.line_id, sku=row.skus.get(i.line_id, ""), quantity=i.quantity) for i in lines
    )


def _restock_choice(row: OrderRow, restocks_on_marketplace: bool) -> bool:
    """The restock flag of a cancellation: only marketplaces that take the choice are ever asked to restock."""
    return entry_for(row.marketplace).takes_restock_choice and restocks_on_marketplace


# --------------------------------------------------------------------------------------- folding


class Batch:
    """One batch's folding: the orders and items it touches, and the items it makes."""

    def __init__(
        self, orders: dict[UUID, OrderRow], items: dict[UUID, ItemRow], order_items: dict[UUID, list[ItemRow]]
    ) -> None:
        self.orders = orders
        self.items = items
        self.order_items = order_items  # each order's items so far, in sequence: what a new one may wait for
        self.new_orders: set[UUID] = set()
        self.changed_orders: set[UUID] = set()
        self.new_items: list[ItemRow] = []
        self.changed_items: set[UUID] = set()

    def fold(self, position: int, event: Any) -> None:
        if isinstance(event, Order.MarketplaceAcknowledged | Order.MarketplaceRejected):
            self._answer(event)
            return
        if isinstance(event, Order.ShipmentVoided):
            self._withdraw(event)
            return
        if isinstance(event, Order.Imported):
            self._imported(position, event)
            return
        row = self.orders.get(event.originator_id)
        if row is None:
            return
        if isinstance(event, Order.DisputeOpened):
            row.disputes[str(event.dispute_id)] = {
                "kind": event.kind,
                "marketplace_dispute_id": event.marketplace_dispute_id,
            }
            self.changed_orders.add(row.order_id)
        made = _item_for(row, event)
        if made is not None and _sendable(row, event, made[0]):
            self._make(row, position, event, *made)

    def _imported(self, position: int, event: Order.Imported) -> None:
        row = OrderRow(
            order_id=event.originator_id,
            seller=event.seller,
            account_id=event.account_id,
            marketplace=event.marketplace,
            marketplace_order_id=event.marketplace_order_id,
            currency=event.currency,
            third_party_managed=event.third_party_managed,
            skus={line.line_id: line.sku for line in event.lines},
        )
        self.orders[row.order_id] = row
        self.new_orders.add(row.order_id)
        # Acknowledging is the answer to the marketplace's own message, so whatever brought the order in; with
        # the account's sync off the ledger says nothing to the marketplace, this included.
        if (
            not row.third_party_managed
            and not event.sync_off
            and entry_for(row.marketplace).acknowledges_orders
        ):
            message = outbox.Acknowledge(
                marketplace_order_id=row.marketplace_order_id, lines=_lines(row, event.lines)
            )
            self._make(row, position, event, SyncAction.ACKNOWLEDGE.value, str(row.order_id), message)

    def _make(
        self, row: OrderRow, position: int, event: Any, action: str, reference: str, message: outbox.Message
    ) -> None:
        new_id = item_id(row.order_id, action, reference)
        if new_id in self.items:
            return  # the same change twice cannot happen; keep the first if it ever does
        earlier = self.order_items.setdefault(row.order_id, [])
        item = ItemRow(
            id=new_id,
            idempotency_key=str(new_id),
            order_id=row.order_id,
            seller=row.seller,
            account_id=row.account_id,
            marketplace=row.marketplace,
            action=action,
            reference=reference,
            payload=message,
            sequence=row.next_sequence,
            position=position,
            state=outbox.PENDING,
            attempts=0,
            next_attempt_at=event.timestamp,
            last_error=None,
            marketplace_reference=None,
            created_at=event.timestamp,
            updated_at=event.timestamp,
            depends_on=[e.id for e in earlier if outbox.waits_for(message, e.payload)],
        )
        earlier.append(item)
        row.next_sequence += 1
        self.changed_orders.add(row.order_id)
        self.items[new_id] = item
        self.new_items.append(item)

    def _withdraw(self, event: Order.ShipmentVoided) -> None:
        """A voided shipment's confirmation that has not gone out (or died) never will: its item is withdrawn,
        `resolved` saying why, so nothing waits for it and no retry sends it. One in flight is left to its
        dispatcher; the marketplace's answer then tells."""
        item = self.items.get(item_id(event.originator_id, SyncAction.SHIP.value, str(event.shipment_id)))
        if item is None or item.state not in (outbox.PENDING, outbox.FAILED, outbox.DEAD):
            return
        item.state = outbox.RESOLVED
        item.last_error = f"withdrawn: the shipment was voided ({event.reason})"
        item.updated_at = event.timestamp
        self.changed_items.add(item.id)

    def _answer(self, event: Any) -> None:
        for target in answer_targets(event.originator_id, event.action, event.reference):
            item = self.items.get(target)
            if item is not None and outbox.settle(item, event):
                self.changed_items.add(item.id)


def answer_targets(order_id: UUID, action: str, reference: str) -> list[UUID]:
    """The ids of the items a marketplace's answer about (action, reference) may be about."""
    targets = [item_id(order_id, action, reference)]
    if action in ANSWER_ALIASES:
        targets.append(item_id(order_id, ANSWER_ALIASES[action], reference))
    return targets


Made = tuple[str, str, outbox.Message]  # action, reference, message


def _sendable(row: OrderRow, event: Any, action: str) -> bool:
    """Whether the marketplace can receive the change (`MarketplacePolicy.not_sent`, the order's `sync` shows
    the same reason for what is not sent): never for Third Party Managed orders, never an echo of what the
    marketplace told us, never a call the marketplace does not have, never a change made while the account's
    sync was off."""
    dispute = None
    if isinstance(event, Order.DisputeClosed):
        kind = row.disputes.get(str(event.dispute_id), {}).get("kind")
        dispute = (DisputeKind(kind), DisputeOutcome(event.outcome)) if kind else None
    reason = policy_for(row.marketplace).not_sent(
        SyncAction(action),
        third_party_managed=row.third_party_managed,
        from_marketplace=event.source == Source.MARKETPLACE,
        dispute=dispute,
        sync_off=event.sync_off,
    )
    return reason is None


def _item_for(row: OrderRow, event: Any) -> Made | None:
    """(action, reference, message) of the item a change of the seller's makes, if any."""
    build = _BUILDERS.get(type(event))
    return None if build is None else build(row, event)


def _shipped(row: OrderRow, event: Order.Shipped) -> Made:
    return (
        SyncAction.SHIP.value,
        str(event.shipment_id),
        outbox.Ship(
            marketplace_order_id=row.marketplace_order_id,
            shipment_id=str(event.shipment_id),
            carrier=event.carrier,
            tracking_number=event.tracking_number,
            shipping_class=event.shipping_class,
            shipped_at=event.shipped_at,
            lines=_lines(row, event.lines),
        ),
    )


def _cancelled(row: OrderRow, event: Order.Cancelled) -> Made | None:
    # After an accepted cancellation dispute, the request went out when the dispute opened; a
    # cancellation the marketplace made itself needs no request.
    if event.dispute_id is not None or event.requested_by == Requester.MARKETPLACE:
        return None
    return (
        SyncAction.CANCEL.value,
        str(event.cancellation_id),
        outbox.Cancel(
            marketplace_order_id=row.marketplace_order_id,
            cancellation_id=str(event.cancellation_id),
            dispute_id=None,
            reason=event.reason,
            requested_by=event.requested_by,
            restock=_restock_choice(row, event.restocked_on_marketplace),
            lines=_lines(row, event.lines),
        ),
    )


def _dispute_opened(row: OrderRow, event: Order.DisputeOpened) -> Made | None:
    if event.kind != DisputeKind.CANCELLATION:
        return None  # a claim starts at the marketplace
    # eBay: a seller's cancellation of a paid order is a request the marketplace answers; this is it.
    restock = _restock_choice(row, policy_for(row.marketplace).cancellation_restocks_on_marketplace)
    return (
        SyncAction.CANCEL.value,
        str(event.dispute_id),
        outbox.Cancel(
            marketplace_order_id=row.marketplace_order_id,
            cancellation_id=None,
            dispute_id=str(event.dispute_id),
            reason=event.reason,
            requested_by=Requester.SELLER.value,
            restock=restock,
            lines=_lines(row, event.lines),
        ),
    )


def _refunded(row: OrderRow, event: Order.Refunded) -> Made:
    lines = tuple(
        outbox.RefundLine(
            line_id=line.line_id,
            sku=row.skus.get(line.line_id, ""),
            quantity=line.quantity,
            item_amount=line.item_amount,
            tax_amount=line.tax_amount,
            shipping_amount=line.shipping_amount,
            total=line.total,
        )
        for line in event.lines
    )
    return (
        SyncAction.REFUND.value,
        str(event.refund_id),
        outbox.Refund(
            marketplace_order_id=row.marketplace_order_id,
            refund_id=str(event.refund_id),
            reason=event.reason,
            currency=row.currency,
            item_amount=sum((line.item_amount for line in event.lines), Decimal(0)),
            tax_amount=sum((line.tax_amount for line in event.lines), Decimal(0)),
            shipping_amount=sum((line.shipping_amount for line in event.lines), Decimal(0)),
            total=event.total,
            lines=lines,
        ),
    )


def _dispute_closed(row: OrderRow, event: Order.DisputeClosed) -> Made:
    dispute = row.disputes.get(str(event.dispute_id), {})
    return (
        SyncAction.CLOSE_DISPUTE.value,
        str(event.dispute_id),
        outbox.CloseDispute(
            marketplace_order_id=row.marketplace_order_id,
            dispute_id=str(event.dispute_id),
            kind=dispute.get("kind"),
            marketplace_dispute_id=dispute.get("marketplace_dispute_id"),
            outcome=event.outcome,
        ),
    )


_BUILDERS: dict[type[Any], Callable[[OrderRow, Any], Made | None]] = {
    Order.Shipped: _shipped,
    Order.Cancelled: _cancelled,
    Order.DisputeOpened: _dispute_opened,
    Order.Refunded: _refunded,
    Order.DisputeClosed: _dispute_closed,
}


# Events that may make an item, or change what later items need to know: these need the order's row.
_NEEDS_ORDER = tuple(_BUILDERS)
_ANSWERS = (Order.MarketplaceAcknowledged, Order.MarketplaceRejected)


# ------------------------------------------------------------------------------------ projection


class OutboundProjection(Projection):
    name: ClassVar[str] = "outbound"
    tables: ClassVar[tuple[str, ...]] = ("outbound_orders", "outbound_items")
    topics: ClassVar[tuple[str, ...]] = ()
    handles: ClassVar[tuple[type, ...]] = (Order.Imported, Order.ShipmentVoided, *_BUILDERS, *_ANSWERS)

    def create_tables(self, cur: Cursor, t: Tables) -> None:
        outbox.create_tables(cur, t["outbound_orders"], t["outbound_items"])

    def create_indexes(self, cur: Cursor, t: Tables) -> None:
        """For the dispatcher (due items), the per-marketplace counts, and the API's listing per seller."""
        items = "outbound_items"
        base.create_named_indexes(
            cur,
            t,
            "outbound",
            (
                ("ix_due", items, "(state, next_attempt_at) WHERE state IN ('pending', 'failed')"),
                ("ix_marketplace", items, "(marketplace, state)"),
                ("ix_seller", items, "(seller, position)"),
                ("ix_seller_state", items, "(seller, state, position)"),
            ),
        )

    def apply(self, cur: Cursor, t: Tables, events: Sequence[Event]) -> None:
        imported = {e.event.originator_id for e in events if isinstance(e.event, Order.Imported)}
        order_ids = {
            e.event.originator_id
            for e in events
            if isinstance(e.event, _NEEDS_ORDER) and e.event.originator_id not in imported
        }
        answered = [
            target
            for e in events
            if isinstance(e.event, _ANSWERS)
            for target in answer_targets(e.event.originator_id, e.event.action, e.event.reference)
        ] + [
            item_id(e.event.originator_id, SyncAction.SHIP.value, str(e.event.shipment_id))
            for e in events
            if isinstance(e.event, Order.ShipmentVoided)
        ]
        batch = Batch(
            outbox.load_orders(cur, list(order_ids), t["outbound_orders"]),
            outbox.lock_answered(cur, answered, t["outbound_items"]),
            outbox.load_order_items(cur, list(order_ids), t["outbound_items"]),
        )
        for item in events:
            batch.fold(item.position, item.event)
        self._write(cur, t, batch)

    def _write(self, cur: Cursor, t: Tables, batch: Batch) -> None:
        changed_orders = [batch.orders[o] for o in sorted(batch.changed_orders | batch.new_orders)]
        outbox.save_orders(cur, changed_orders, t["outbound_orders"])
        outbox.enqueue(cur, batch.new_items, t["outbound_items"])
        made = {item.id for item in batch.new_items}
        changed = [batch.items[i] for i in sorted(batch.changed_items - made)]
        outbox.record_answers(cur, changed, t["outbound_items"])

    def carry_over(self, cur: Cursor, old: Tables, new: Tables) -> None:
        """Keep what the dispatcher did (see `outbox.carry_over`)."""
        outbox.carry_over(cur, old["outbound_items"], new["outbound_items"])

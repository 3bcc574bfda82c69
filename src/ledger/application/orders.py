"""Orders: the handler of each order command, and the queries that read one order.

A handler is the step between load and save: it calls the order's method with the command's fields (the load,
the idempotent replay, the If-Match check, the save and the retries are `LedgerCore._run`'s). `ORDER_HANDLERS`
is the table `Ledger.execute` picks from. The queries return `OrderDetails` and `HistoryEntry` (queries.py),
with the buyer's personal data decrypted; never the aggregate.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from ledger.aggregates.errors import InvalidInputError
from ledger.aggregates.order import Order
from ledger.aggregates.values import Marketplace
from ledger.application.commands import (
    Cancel,
    CloseDispute,
    OpenDispute,
    OrderCommand,
    RecordPayment,
    RecordSyncCheck,
    RecordSyncItemDied,
    RecordSyncOutcome,
    Refund,
    ResolveSyncItem,
    Restock,
    Ship,
    VoidShipment,
)
from ledger.application.core import LedgerCore, OrderHandler
from ledger.application.errors import OrderNotFoundError
from ledger.application.queries import Discrepancy, HistoryEntry, OrderDetails


def ship(app: LedgerCore, order: Order, cmd: Ship) -> None:
    now = app.clock()
    order.ship(
        cmd.ctx,
        carrier=cmd.carrier,
        carrier_name=cmd.carrier_name,
        tracking_number=cmd.tracking_number,
        shipping_class=cmd.shipping_class,
        shipped_at=cmd.shipped_at or now,
        now=now,
        lines=cmd.lines,
    )


def cancel(app: LedgerCore, order: Order, cmd: Cancel) -> None:
    restock = cmd.restock_in_ledger
    if restock is None:
        restock = app._account(order.account_id, None, to_change=False).restock_in_ledger
    order.cancel(
        cmd.ctx,
        reason=cmd.reason,
        now=app.clock(),
        lines=cmd.lines,
        restock_in_ledger=restock,
        requested_by=cmd.requested_by,
    )


def refund(app: LedgerCore, order: Order, cmd: Refund) -> None:
    order.refund(
        cmd.ctx,
        reason=cmd.reason,
        lines=cmd.lines,
        shipping_amount=cmd.shipping_amount,
        tax_amount=cmd.tax_amount,
    )


def record_payment(app: LedgerCore, order: Order, cmd: RecordPayment) -> None:
    order.clear_payment(cmd.ctx, cmd.paid_at or cmd.ctx.effective_at or app.clock())


def open_dispute(app: LedgerCore, order: Order, cmd: OpenDispute) -> None:
    order.open_dispute(cmd.ctx, reason=cmd.reason, marketplace_dispute_id=cmd.marketplace_dispute_id)


def close_dispute(app: LedgerCore, order: Order, cmd: CloseDispute) -> None:
    order.close_dispute(cmd.ctx, dispute_id=cmd.dispute_id, outcome=cmd.outcome)


def restock(app: LedgerCore, order: Order, cmd: Restock) -> None:
    order.restock(cmd.ctx, lines=cmd.lines)


def void_shipment(app: LedgerCore, order: Order, cmd: VoidShipment) -> None:
    order.void_shipment(cmd.ctx, shipment_id=cmd.shipment_id, reason=cmd.reason)


def record_sync_check(app: LedgerCore, order: Order, cmd: RecordSyncCheck) -> None:
    order.record_check(cmd.ctx, cmd.divergences)


def record_sync_outcome(app: LedgerCore, order: Order, cmd: RecordSyncOutcome) -> None:
    if cmd.accepted:
        order.record_acknowledgement(
            cmd.ctx,
            action=cmd.action,
            reference=cmd.reference,
            marketplace_reference=cmd.marketplace_reference,
            reason=cmd.reason,
        )
    else:
        order.record_rejection(
            cmd.ctx,
            action=cmd.action,
            reference=cmd.reference,
            error_code=cmd.error_code,
            message=cmd.message,
            permanent=cmd.permanent,
        )


def record_sync_item_died(app: LedgerCore, order: Order, cmd: RecordSyncItemDied) -> None:
    order.record_sync_death(cmd.ctx, action=cmd.action, reference=cmd.reference, reason=cmd.reason)


def resolve_sync_item(app: LedgerCore, order: Order, cmd: ResolveSyncItem) -> None:
    order.resolve_sync_item(cmd.ctx, action=cmd.action, reference=cmd.reference, reason=cmd.reason)


ORDER_HANDLERS: dict[type[OrderCommand], OrderHandler] = {
    Ship: ship,
    Cancel: cancel,
    Refund: refund,
    RecordPayment: record_payment,
    OpenDispute: open_dispute,
    CloseDispute: close_dispute,
    Restock: restock,
    VoidShipment: void_shipment,
    RecordSyncCheck: record_sync_check,
    RecordSyncOutcome: record_sync_outcome,
    RecordSyncItemDied: record_sync_item_died,
    ResolveSyncItem: resolve_sync_item,
}


class OrderQueries(LedgerCore):
    """One order as it stands, as it stood, and its history (`seller`: only that seller's order is found)."""

    def get_order(self, order_id: UUID, seller: str | None = None) -> OrderDetails:
        return self._shown(OrderDetails.of(self._order(order_id, seller)))

    def find_order(self, seller: str, marketplace: Marketplace, marketplace_order_id: str) -> OrderDetails:
        order_id = Order.create_id(seller, marketplace.value, marketplace_order_id)
        return self.get_order(order_id, seller)

    def order_as_of(
        self,
        order_id: UUID,
        *,
        version: int | None = None,
        at: datetime | None = None,
        seller: str | None = None,
    ) -> OrderDetails:
        """The order as it stood at a version or a time, rebuilt from its events."""
        current = self._order(order_id, seller)
        if at is not None:
            if at.tzinfo is None:
                raise InvalidInputError("as_of needs a time zone", "as_of")
            stamps = [e.timestamp for e in self.events.get(order_id)]  # type: ignore[attr-defined]
            version = sum(1 for stamp in stamps if stamp <= at)
            if version == 0:
                msg = f"order {order_id} did not exist yet at {at.isoformat()}"
                raise OrderNotFoundError(msg)
        if version is None:
            return self._shown(OrderDetails.of(current))
        if not 1 <= version <= current.version:
            raise InvalidInputError(f"version must be 1 to {current.version}", "version")
        return self._shown(OrderDetails.of(self.repository.get(order_id, version=version)))

    def order_history(self, order_id: UUID, seller: str | None = None) -> list[HistoryEntry]:
        order = self._order(order_id, seller)
        buyer, ship_to, _ = self.personal_data.reveal(order.buyer, order.ship_to)
        return [HistoryEntry.of(e).showing(buyer, ship_to) for e in self.events.get(order_id)]  # type: ignore[arg-type]

    def discrepancies(
        self,
        seller: str,
        *,
        account_id: UUID | None = None,
        marketplace: Marketplace | None = None,
        open_only: bool | None = None,
    ) -> list[Discrepancy]:
        """Each order of the seller where a check found the marketplace disagreeing: what the latest
        `DivergenceFound` found, when, and whether a `DivergenceResolved` followed; newest first. Read from the
        log by those events' topics, so it costs what the divergences cost, not what the orders do; every event
        committed before the call is read, even while an older transaction still holds the log's commit horizon
        (which a follower waits for: this read keeps no cursor)."""
        topics = [get_topic(Order.DivergenceFound), get_topic(Order.DivergenceResolved)]
        latest: dict[UUID, Discrepancy] = {}
        position = 0
        while notifications := self.recorded_notifications(position, 1000, topics):
            position = notifications[-1].id
            for notification in notifications:
                event: Any = self.mapper.to_domain_event(notification)
                if isinstance(event, Order.DivergenceFound):
                    latest[event.originator_id] = Discrepancy(
                        event.originator_id, tuple(event.divergences), event.timestamp, None
                    )
                elif event.originator_id in latest:
                    found = latest[event.originator_id]
                    latest[event.originator_id] = dataclasses.replace(found, resolved_at=event.timestamp)
        shown = []
        for found in sorted(latest.values(), key=lambda d: d.found_at, reverse=True):
            if open_only is not None and open_only != (found.resolved_at is None):
                continue
            order: Order = self.repository.get(found.order_id)
            if order.seller != seller or account_id not in (None, order.account_id):
                continue
            if marketplace is not None and order.marketplace is not marketplace:
                continue
            shown.append(dataclasses.replace(found, account_id=order.account_id, marketplace=order.marketplace.value,
                                             marketplace_order_id=order.marketplace_order_id))  # fmt: skip
        return shown

    def _shown(self, details: OrderDetails) -> OrderDetails:
        buyer, ship_to, _ = self.personal_data.reveal(details.buyer, details.ship_to)
        return dataclasses.replace(details, buyer=buyer, ship_to=ship_to)

"""Small frozen objects the application returns: never aggregates, never mutable state."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from ledger.aggregates.account import MarketplaceAccount
from ledger.aggregates.api_key import ApiKey
from ledger.aggregates.chain import canonical
from ledger.aggregates.order import (
    Cancellation,
    Dispute,
    Order,
    Refund,
    Shipment,
    SyncEntry,
    SyncOutcome,
)
from ledger.aggregates.rules import AllowedActions, allowed_actions
from ledger.aggregates.values import Address, Buyer, Divergence, LineQuantity

ENVELOPE_FIELDS = frozenset(
    {
        "originator_id",
        "originator_version",
        "originator_topic",
        "timestamp",
        "actor",
        "source",
        "reason",
        "effective_at",
        "idempotency_key",
        "request_digest",
        "sync_off",
        "prev_hash",
        "hash",
    }
)
ID_FIELDS = ("shipment_id", "cancellation_id", "refund_id", "dispute_id", "restock_id")


@dataclass(frozen=True)
class CommandResult:
    """What a command did: the order's new version, the events it recorded, the ids it made."""

    order_id: UUID
    version: int
    events: tuple[str, ...]
    ids: dict[str, UUID] = field(default_factory=dict)
    replayed: bool = False  # the idempotency key was seen before: nothing new was recorded
    notification_id: int | None = None  # position in the global log, for read-your-writes


@dataclass(frozen=True)
class ImportResult:
    order_id: UUID
    created: bool
    version: int
    events: tuple[str, ...]
    notification_id: int | None = None
    replayed: bool = False  # the idempotency key was seen before: nothing new was recorded


@dataclass(frozen=True)
class AccountDetails:
    account_id: UUID
    seller: str
    marketplace: str
    name: str
    fulfillment_managed: bool
    restock_in_ledger: bool
    version: int
    sync_enabled: bool = True  # False: sync off, nothing is imported from or sent to the marketplace

    @classmethod
    def of(cls, account: MarketplaceAccount) -> AccountDetails:
        return cls(
            account.id,
            account.seller,
            account.marketplace.value,
            account.name,
            account.fulfillment_managed,
            account.restock_in_ledger,
            account.version,
            account.sync_enabled,
        )


@dataclass(frozen=True)
class KeyDetails:
    """An API key as its seller sees it: never the secret, nor its hash."""

    key_id: UUID
    seller: str
    role: str
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def of(cls, key: ApiKey) -> KeyDetails:
        return cls(key.id, key.seller, key.role.value, key.name, key.created_on, key.revoked_at)


@dataclass(frozen=True)
class LineDetails:
    line_id: str
    sku: str
    title: str
    quantity: int
    unit_price: Decimal
    tax: Decimal
    shipping: Decimal
    shipped: int
    cancelled: int
    refunded_quantity: int
    refunded_amount: Decimal
    restocked: int
    pending_cancel: int
    requested_cancel: int
    shippable: int = 0  # units that may ship now (the web page offers only what the rules allow)
    cancellable: int = 0
    refundable: int = 0  # shipped units not refunded yet (on Amazon: only those the marketplace confirmed)
    restockable: int = 0  # cancelled or returned units not back in the ledger's stock yet


@dataclass(frozen=True)
class OrderDetails:
    order_id: UUID
    seller: str
    account_id: UUID
    marketplace: str
    marketplace_order_id: str
    purchased_at: datetime
    buyer: Buyer
    ship_to: Address | None
    ship_by: datetime | None
    currency: str
    total: Decimal
    refunded_total: Decimal
    status: str
    payment_status: str
    paid_at: datetime | None
    dispute_status: str | None
    third_party_managed: bool
    open: bool
    units: int
    shipped_units: int
    cancelled_units: int
    version: int
    updated_at: datetime
    lines: tuple[LineDetails, ...]
    shipments: tuple[Shipment, ...]
    cancellations: tuple[Cancellation, ...]
    refunds: tuple[Refund, ...]
    disputes: tuple[Dispute, ...]
    attention: bool
    buyer_cancel_requested: bool
    sync_state: str
    marketplace_cancelled: tuple[LineQuantity, ...]
    sync: tuple[SyncEntry, ...]
    sync_answers: tuple[SyncOutcome, ...]
    actions: AllowedActions

    @classmethod
    def of(cls, order: Order) -> OrderDetails:
        return cls(
            order_id=order.id,
            seller=order.seller,
            account_id=order.account_id,
            marketplace=order.marketplace.value,
            marketplace_order_id=order.marketplace_order_id,
            purchased_at=order.purchased_at,
            buyer=order.buyer,
            ship_to=order.ship_to,
            ship_by=order.ship_by,
            currency=order.currency,
            total=order.total,
            refunded_total=order.refunded_total,
            status=order.status.value,
            payment_status=order.payment_status.value,
            paid_at=order.paid_at,
            dispute_status=order.dispute_status,
            third_party_managed=order.third_party_managed,
            open=order.is_open,
            units=order.units,
            shipped_units=order.shipped_units,
            cancelled_units=order.cancelled_units,
            version=order.version,
            updated_at=order.modified_on,
            lines=tuple(
                LineDetails(
                    line_id=s.line.line_id,
                    sku=s.line.sku,
                    title=s.line.title,
                    quantity=s.ordered,
                    unit_price=s.line.unit_price,
                    tax=s.line.tax,
                    shipping=s.line.shipping,
                    shipped=s.shipped,
                    cancelled=s.cancelled,
                    refunded_quantity=s.refunded_quantity,
                    refunded_amount=s.refunded_amount,
                    restocked=s.restocked,
                    pending_cancel=s.pending_cancel,
                    requested_cancel=s.requested_cancel,
                    shippable=s.shippable,
                    cancellable=s.cancellable,
                    refundable=s.shipped_refundable(
                        order.policy.charges_on_shipment_confirmation and not order.third_party_managed
                    ),
                    restockable=s.restockable,
                )
                for s in order.lines.values()
            ),
            shipments=tuple(order.shipments.values()),
            cancellations=tuple(order.cancellations.values()),
            refunds=tuple(order.refunds.values()),
            disputes=tuple(order.disputes.values()),
            attention=order.attention,
            buyer_cancel_requested=order.buyer_cancel_requested,
            sync_state=order.sync_state,
            marketplace_cancelled=tuple(
                LineQuantity(k, q) for k, q in order.marketplace_cancelled.items() if q
            ),
            sync=order.sync_status,
            sync_answers=tuple(order.sync),
            actions=allowed_actions(order),
        )


@dataclass(frozen=True)
class HistoryEntry:
    """One event of an order as auditors read it."""

    version: int
    type: str
    recorded_at: datetime
    effective_at: datetime | None
    actor: str
    source: str
    reason: str | None
    idempotency_key: str | None
    data: dict[str, Any]
    hash: str
    prev_hash: str

    @classmethod
    def of(cls, event: Order.Event | Order.Imported) -> HistoryEntry:
        state = vars(event)
        return cls(
            version=event.originator_version,
            type=type(event).__name__,
            recorded_at=event.timestamp,
            effective_at=event.effective_at,
            actor=event.actor,
            source=event.source,
            reason=event.reason,
            idempotency_key=event.idempotency_key,
            data={k: canonical(v) for k, v in state.items() if k not in ENVELOPE_FIELDS},
            hash=event.hash,
            prev_hash=event.prev_hash,
        )

    def showing(self, buyer: Buyer, ship_to: Address | None) -> HistoryEntry:
        """The entry with the buyer's fields as revealed (`PersonalData.reveal`: `[erased]` once forgotten). Only
        the import carries them; its hash stays the hash of what is stored (the tokens)."""
        if self.type != "Imported":
            return self
        return dataclasses.replace(
            self, data={**self.data, "buyer": canonical(buyer), "ship_to": canonical(ship_to)}
        )


@dataclass(frozen=True)
class Discrepancy:
    """An order where a check found the marketplace disagreeing: the fields with both values, when, and when
    a later check found them agreeing again (None: still open)."""

    order_id: UUID
    divergences: tuple[Divergence, ...]
    found_at: datetime
    resolved_at: datetime | None
    account_id: UUID | None = None
    marketplace: str = ""
    marketplace_order_id: str = ""

    @property
    def open(self) -> bool:
        return self.resolved_at is None

"""Request and response bodies of the v1 contract beyond the import shapes (schemas.py): accounts, order
commands, order reads and history. Strict: unknown fields are refused, every field has explicit bounds.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import Meta, Struct

from ledger.aggregates.values import (
    CancelReason,
    Carrier,
    DisputeOutcome,
    Marketplace,
    RefundReason,
    RefundRequestLine,
    parse_amount,
)
from ledger.api.bodies.schemas import Amount, Id, Time
from ledger.api.errors import Problem
from ledger.application.queries import AccountDetails, CommandResult, HistoryEntry, ImportResult, OrderDetails
from ledger.projections.all_sales_view import OrderSummary

Quantity = Annotated[int, Meta(ge=1, le=1_000_000)]
Name = Annotated[str, Meta(min_length=1, max_length=100)]


class Strict(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Base of every request body."""


class Out(Struct, kw_only=True, frozen=True):
    """Base of every response body."""


# ------------------------------------------------------------------------------------------- accounts


class AccountIn(Strict, frozen=True):
    marketplace: Marketplace
    name: Name
    fulfillment_managed: bool = True
    restock_in_ledger: bool = False
    # False (sync off): the ledger neither imports from nor sends to the marketplace; changes are recorded as
    # `not_sent` with the reason `sync_off`, and stay so when sync is on again (docs/marketplaces.md).
    sync_enabled: bool = True


class AccountPatch(Strict, frozen=True):
    name: Name | None = None
    fulfillment_managed: bool | None = None
    restock_in_ledger: bool | None = None
    sync_enabled: bool | None = None


class AccountOut(Out, frozen=True):
    account_id: UUID
    marketplace: str
    name: str
    fulfillment_managed: bool
    restock_in_ledger: bool
    sync_enabled: bool
    version: int

    @classmethod
    def of(cls, a: AccountDetails) -> AccountOut:
        return cls(
            account_id=a.account_id,
            marketplace=a.marketplace,
            name=a.name,
            fulfillment_managed=a.fulfillment_managed,
            restock_in_ledger=a.restock_in_ledger,
            sync_enabled=a.sync_enabled,
            version=a.version,
        )


class AccountList(Out, frozen=True):
    items: list[AccountOut]


# ------------------------------------------------------------------------------------------- imports


class ImportOut(Out, frozen=True):
    order_id: UUID
    created: bool
    version: int
    events: list[str]

    @classmethod
    def of(cls, r: ImportResult) -> ImportOut:
        return cls(order_id=r.order_id, created=r.created, version=r.version, events=list(r.events))


class ImportItemOut(Out, frozen=True, omit_defaults=True):
    """One order of a bulk import: its result, or the problem that refused it."""

    index: int
    marketplace_order_id: str | None = None  # None when the order could not be read at all
    order_id: UUID | None = None
    created: bool | None = None
    version: int | None = None
    events: list[str] | None = None
    error: Problem | None = None


class ImportManyOut(Out, frozen=True):
    results: list[ImportItemOut]
    imported: int
    failed: int


# ------------------------------------------------------------------------------------------- commands


class LineQuantityIn(Strict, frozen=True):
    line_id: Id
    quantity: Quantity


CARRIER_SPELLINGS = "UPS, FedEx, USPS, DHL, OnTrac, Amazon Logistics, Royal Mail, Canada Post, Other"


class ShipmentIn(Strict, frozen=True):
    carrier: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=40,
            description=f"the canonical code ({', '.join(c.value for c in Carrier)}) or a marketplace's "
            f"spelling ({CARRIER_SPELLINGS}), in any case; answered with the canonical code",
            examples=["UPS", "fedex", "Royal Mail"],
        ),
    ]
    tracking_number: Annotated[str, Meta(min_length=1, max_length=100)]
    carrier_name: Annotated[
        str, Meta(max_length=100, description="the carrier's name; required with carrier `other`")
    ] = ""
    shipping_class: Annotated[str, Meta(max_length=100)] = ""
    shipped_at: Time | None = None
    lines: Annotated[list[LineQuantityIn], Meta(min_length=1, max_length=1000)] | None = None


class CancellationIn(Strict, frozen=True):
    reason: CancelReason
    lines: Annotated[list[LineQuantityIn], Meta(min_length=1, max_length=1000)] | None = None
    restock_in_ledger: bool | None = None


class RefundLineIn(Strict, frozen=True):
    line_id: Id
    quantity: Annotated[int, Meta(ge=0, le=1_000_000)] = 0
    amount: Amount | None = None

    def to_domain(self, index: int) -> RefundRequestLine:
        amount = None if self.amount is None else parse_amount(self.amount, f"lines[{index}].amount")
        return RefundRequestLine(self.line_id, self.quantity, amount)


class RefundIn(Strict, frozen=True):
    reason: RefundReason
    lines: Annotated[list[RefundLineIn], Meta(min_length=1, max_length=1000)] | None = None
    shipping_amount: Amount = "0"
    tax_amount: Amount = "0"


class DisputeIn(Strict, frozen=True):
    reason: Annotated[str, Meta(min_length=1, max_length=500)]
    marketplace_dispute_id: Annotated[str, Meta(min_length=1, max_length=100)] | None = None


class DisputeCloseIn(Strict, frozen=True):
    outcome: DisputeOutcome


class VoidIn(Strict, frozen=True):
    reason: Annotated[str, Meta(min_length=1, max_length=500)]


class RestockIn(Strict, frozen=True):
    lines: Annotated[list[LineQuantityIn], Meta(min_length=1, max_length=1000)]


class CommandOut(Out, frozen=True, omit_defaults=True):
    """What a command did: the order's new version, the events it recorded, and the ids it made."""

    order_id: UUID
    version: int
    events: list[str]
    shipment_id: UUID | None = None
    cancellation_id: UUID | None = None
    refund_id: UUID | None = None
    dispute_id: UUID | None = None
    restock_id: UUID | None = None

    @classmethod
    def of(cls, r: CommandResult) -> CommandOut:
        return cls(
            order_id=r.order_id,
            version=r.version,
            events=list(r.events),
            shipment_id=r.ids.get("shipment_id"),
            cancellation_id=r.ids.get("cancellation_id"),
            refund_id=r.ids.get("refund_id"),
            dispute_id=r.ids.get("dispute_id"),
            restock_id=r.ids.get("restock_id"),
        )


# -------------------------------------------------------------------------------------------- reads


class OrderSummaryOut(Out, frozen=True):
    order_id: UUID
    account_id: UUID
    marketplace: str
    marketplace_order_id: str
    purchased_at: datetime
    buyer_name: str
    currency: str
    total: Decimal
    refunded_total: Decimal
    status: str
    payment_status: str
    dispute_status: str | None
    third_party_managed: bool
    open: bool
    units: int
    shipped_units: int
    cancelled_units: int
    version: int
    updated_at: datetime
    buyer_cancel_requested: bool
    attention: bool
    sync_state: Literal["in_sync", "pending", "failing", "dead", "diverged", "not_sent"]
    ship_by: datetime | None  # the marketplace's latest ship date (Amazon, eBay), when it gives one

    @classmethod
    def of(cls, s: OrderSummary) -> OrderSummaryOut:
        return msgspec.convert(s, cls, from_attributes=True)


class OrderPage(Out, frozen=True):
    items: list[OrderSummaryOut]
    next_cursor: str | None


class OrderCountsOut(Out, frozen=True):
    """Orders that match the filters: in all, and per All Sales tab."""

    all: int
    unshipped: int
    partially_shipped: int
    shipped: int
    canceled: int
    third_party_managed: int
    disputes_open: int
    buyer_cancel_requested: int
    attention: int


class BuyerOut(Out, frozen=True):
    name: str
    email: str


class AddressOut(Out, frozen=True):
    name: str
    line1: str
    line2: str
    city: str
    state: str
    postal_code: str
    country: str
    phone: str


class LineOut(Out, frozen=True):
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


class LineQuantityOut(Out, frozen=True):
    line_id: str
    quantity: int


class ShipmentOut(Out, frozen=True):
    shipment_id: UUID
    carrier: str
    carrier_name: str
    tracking_number: str
    shipping_class: str
    shipped_at: datetime
    lines: list[LineQuantityOut]
    confirmed: bool
    voided: bool


class CancellationOut(Out, frozen=True):
    cancellation_id: UUID
    reason: str
    requested_by: str
    lines: list[LineQuantityOut]
    restocked_on_marketplace: bool
    dispute_id: UUID | None
    cancelled_at: datetime


class RefundLineOut(Out, frozen=True):
    line_id: str
    quantity: int
    item_amount: Decimal
    tax_amount: Decimal
    shipping_amount: Decimal


class RefundOut(Out, frozen=True):
    refund_id: UUID
    reason: str
    lines: list[RefundLineOut]
    total: Decimal
    refunded_at: datetime


class DisputeOut(Out, frozen=True):
    dispute_id: UUID
    kind: str
    reason: str
    marketplace_dispute_id: str | None
    lines: list[LineQuantityOut]
    restock_in_ledger: bool
    opened_at: datetime
    outcome: str | None
    closed_at: datetime | None


class SyncOut(Out, frozen=True):
    """One change as the marketplace has it: `sent`, `pending`, `failing`, `dead`, or `not_sent` with the
    `reason` (`third_party_managed`, `from_marketplace`, `no_call`, `sync_off`, `voided`)."""

    action: str
    reference: str
    state: str
    reason: str | None
    marketplace_reference: str | None
    error_code: str | None
    message: str | None
    at: datetime


class OrderOut(OrderSummaryOut, frozen=True):
    """The order in full: the summary, plus its lines and everything that happened to it."""

    buyer: BuyerOut
    ship_to: AddressOut | None
    paid_at: datetime | None
    lines: list[LineOut]
    shipments: list[ShipmentOut]
    cancellations: list[CancellationOut]
    refunds: list[RefundOut]
    disputes: list[DisputeOut]
    marketplace_cancelled: list[LineQuantityOut]
    sync: list[SyncOut]

    @classmethod
    def of_details(cls, d: OrderDetails) -> OrderOut:
        out = msgspec.convert(d, OrderOutFields, from_attributes=True)
        return cls(**msgspec.structs.asdict(out), buyer_name=d.buyer.name)


class OrderOutFields(Out, frozen=True):
    """OrderOut without the fields the write side does not name the same way (filled in by of_details)."""

    order_id: UUID
    account_id: UUID
    marketplace: str
    marketplace_order_id: str
    purchased_at: datetime
    currency: str
    total: Decimal
    refunded_total: Decimal
    status: str
    payment_status: str
    dispute_status: str | None
    third_party_managed: bool
    open: bool
    units: int
    shipped_units: int
    cancelled_units: int
    version: int
    updated_at: datetime
    buyer: BuyerOut
    ship_to: AddressOut | None
    paid_at: datetime | None
    lines: list[LineOut]
    shipments: list[ShipmentOut]
    cancellations: list[CancellationOut]
    refunds: list[RefundOut]
    disputes: list[DisputeOut]
    attention: bool
    buyer_cancel_requested: bool
    sync_state: Literal["in_sync", "pending", "failing", "dead", "diverged", "not_sent"]
    ship_by: datetime | None
    marketplace_cancelled: list[LineQuantityOut]
    sync: list[SyncOut]


class HistoryEventOut(Out, frozen=True):
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
    def of(cls, e: HistoryEntry) -> HistoryEventOut:
        return msgspec.convert(e, cls, from_attributes=True)


class HistoryOut(Out, frozen=True):
    events: list[HistoryEventOut]


class HealthOut(Out, frozen=True, omit_defaults=True):
    status: Literal["ok", "unavailable"]
    database: Literal["reachable", "unreachable"] | None = None
    projections: dict[str, int] | None = None
    behind: dict[str, str] | None = None
    """/readyz: each projection past a readiness bound, and why."""
    reason: str | None = None
    """/readyz: why the database counts as down."""

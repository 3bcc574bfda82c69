"""The order commands as objects: what a caller asks of an order, run by `Ledger.execute(command)`.

Routes, the web page, the CSV upload, the importer, the dispatcher and the CLI build these; `orders.py` and
`imports.py` hold the handler of each (`Ledger.execute` picks it from one table). A command is frozen (it states
one request and never changes) and keyword-only (its fields are named where it is built).

Every order command carries what the generic command path needs (`OrderCommand`): the request's context, the
order, the version the caller expects (If-Match; None: any) and the seller the caller acts for (None: any
seller's order, for operators and marketplaces; another seller's order is "not found").
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TypeVar
from uuid import UUID

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.values import (
    CancelReason,
    Carrier,
    Context,
    DisputeOutcome,
    Divergence,
    ImportedOrder,
    LineQuantity,
    RefundReason,
    RefundRequestLine,
    Requester,
    SyncAction,
)


@dataclass(frozen=True, kw_only=True)
class OrderCommand:
    ctx: Context
    order_id: UUID
    expected_version: int | None = None
    seller: str | None = None


C = TypeVar("C", bound=OrderCommand)


def fingerprinted(cmd: C) -> C:
    """The command with a fingerprint of what it asks as its request digest: its name and arguments (not who
    asks, nor the version it expects). For a caller with no request of its own to fingerprint (the CLI): the
    same idempotency key with other arguments is then refused instead of replaying the first command."""
    asked = {
        f.name: getattr(cmd, f.name)
        for f in dataclasses.fields(cmd)
        if f.name not in ("ctx", "expected_version", "seller")
    }
    digest = hashlib.sha256(f"{type(cmd).__name__} {asked!r}".encode()).hexdigest()
    return dataclasses.replace(cmd, ctx=dataclasses.replace(cmd.ctx, request_digest=digest))


@dataclass(frozen=True, kw_only=True)
class Ship(OrderCommand):
    """Record a shipment (no `lines`: everything still unshipped; no `shipped_at`: now)."""

    carrier: Carrier
    tracking_number: str
    carrier_name: str = ""
    shipping_class: str = ""
    shipped_at: datetime | None = None
    lines: tuple[LineQuantity, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class Cancel(OrderCommand):
    """Cancel unshipped units (no `lines`: all of them); `restock_in_ledger` None: the account's setting."""

    reason: CancelReason
    lines: tuple[LineQuantity, ...] | None = None
    restock_in_ledger: bool | None = None
    requested_by: Requester = Requester.SELLER


@dataclass(frozen=True, kw_only=True)
class Refund(OrderCommand):
    """Refund shipped units or amounts (no `lines`: only the shipping and tax amounts given; with neither,
    everything refundable; `lines=()` is refused)."""

    reason: RefundReason
    lines: tuple[RefundRequestLine, ...] | None = None
    shipping_amount: Decimal = Decimal(0)
    tax_amount: Decimal = Decimal(0)


@dataclass(frozen=True, kw_only=True)
class RecordPayment(OrderCommand):
    """The marketplace cleared the payment (no `paid_at`: the context's effective time, or now)."""

    paid_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class OpenDispute(OrderCommand):
    reason: str
    marketplace_dispute_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class CloseDispute(OrderCommand):
    dispute_id: UUID
    outcome: DisputeOutcome


@dataclass(frozen=True, kw_only=True)
class Restock(OrderCommand):
    """Put cancelled or returned units back into the ledger's stock."""

    lines: tuple[LineQuantity, ...]


@dataclass(frozen=True, kw_only=True)
class VoidShipment(OrderCommand):
    """Undo a shipment the marketplace has not acknowledged, or refused: its units are unshipped again."""

    shipment_id: UUID
    reason: str


@dataclass(frozen=True, kw_only=True)
class RecordSyncCheck(OrderCommand):
    """What comparing the order with the marketplace found (no divergences: they agree)."""

    divergences: tuple[Divergence, ...]


@dataclass(frozen=True, kw_only=True)
class RecordSyncOutcome(OrderCommand):
    """What a marketplace answered about a change we sent it (the dispatcher records every answer)."""

    action: SyncAction
    reference: str
    accepted: bool
    marketplace_reference: str | None = None
    error_code: str = ""
    message: str = ""
    permanent: bool = False
    reason: str | None = None  # an acceptance's note: the marketplace had the change already, what it said


@dataclass(frozen=True, kw_only=True)
class RecordSyncItemDied(OrderCommand):
    """The dispatcher gave up on telling the marketplace a change (dead), and why."""

    action: SyncAction
    reference: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class ResolveSyncItem(OrderCommand):
    """An operator settles a dead change by hand, saying how (the marketplace was told some other way)."""

    action: SyncAction
    reference: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class ImportOrder:
    """Import an order of an account once and only once (imports.py says what a re-sent order does)."""

    ctx: Context
    account_id: UUID
    order: ImportedOrder
    seller: str | None = None


@dataclass(frozen=True)
class ImportItem:
    """One order of a bulk import: its account, the order, and the idempotency key its events carry (None: the
    context's)."""

    account_id: UUID
    order: ImportedOrder
    idempotency_key: str | None = None


@dataclass(frozen=True, kw_only=True)
class ImportOrders:
    """Import many orders, one result per item in order; an item that is an error is its own result."""

    ctx: Context
    items: Sequence[ImportItem | LedgerError]
    seller: str | None = None

"""What the importer and the dispatcher need of a marketplace; one adapter per marketplace implements it.

Adapters (`amazon.py`, `ebay.py`, `walmart.py`, `rakuten.py`, `jet.py`) speak the marketplace's own wire
shapes and map them, with pure functions, to and from the shapes below. Nothing here knows HTTP.

Outbound: the dispatcher turns one outbound-queue item into a `SyncRequest` (its message typed, one Struct per
action: see `outbox.py`) and calls `send`. The adapter
answers `Accepted` (the marketplace has it), `Submitted` (the marketplace took it for asynchronous processing,
e.g. an Amazon feed or an eBay refund: ask again with `poll`), or raises `TransientMarketplaceError` (try
again later, honouring `retry_after`) or `PermanentMarketplaceError` (retrying cannot help). Every request
carries the item's `idempotency_key`, mapped to the marketplace's own dedupe key where it has one, so a
retry after a lost response never ships or refunds twice.

Inbound: the importer pages through `list_orders(updated_after, page)`; each `RemoteOrder` is the import
shape plus the facts the marketplace reports about it (payment, a buyer's cancellation, disputes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable
from uuid import UUID

from ledger.aggregates.values import CancelReason, DisputeOutcome, ImportedOrder, LineQuantity, Marketplace
from ledger.integrations.outbox import Message


@dataclass(frozen=True)
class Endpoint:
    """Where one marketplace account is reached, and as whom. Credentials are never printed."""

    base_url: str
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout_seconds: float = 10.0


# ------------------------------------------------------------------------------------- inbound


@dataclass(frozen=True)
class PaymentCleared:
    paid_at: datetime


@dataclass(frozen=True)
class BuyerCancelled:
    """The buyer cancelled on the marketplace (Amazon: within 30 minutes of purchase, applied at once), or,
    with `applied=False`, asked the seller to cancel (Walmart `intentToCancel`, Rakuten, Jet): the order's
    policy then decides whether it is a cancellation or a request the seller answers by cancelling or shipping.
    """

    requested_at: datetime
    lines: tuple[LineQuantity, ...] | None = None  # None: the whole order
    applied: bool = True


@dataclass(frozen=True)
class DisputeOpenedRemotely:
    marketplace_dispute_id: str
    reason: str
    opened_at: datetime


@dataclass(frozen=True)
class DisputeClosedRemotely:
    marketplace_dispute_id: str
    outcome: DisputeOutcome
    closed_at: datetime


@dataclass(frozen=True)
class CancelledRemotely:
    """The marketplace cancelled the whole order on its own (Walmart's `Cancelled` line statuses on every unit,
    Rakuten's `orderProgress` 900, Jet's every item cancelled): its word, recorded as a cancellation by the
    marketplace (`MarketplaceCancelled` with attention for units the ledger shipped and it never had)."""

    cancelled_at: datetime
    reason: CancelReason = CancelReason.OTHER


MarketplaceFact = (
    PaymentCleared | BuyerCancelled | CancelledRemotely | DisputeOpenedRemotely | DisputeClosedRemotely
)


@dataclass(frozen=True)
class RemoteOrder:
    """One order as a marketplace lists it: the import shape and what it reports having happened since."""

    order: ImportedOrder
    updated_at: datetime
    facts: tuple[MarketplaceFact, ...] = ()
    # The marketplace expects the seller to acknowledge the order (Walmart within 4 hours; Amazon's
    # order acknowledgement); the importer does so once the order is stored.
    needs_acknowledgement: bool = False


@dataclass(frozen=True)
class OrderPage:
    orders: tuple[RemoteOrder, ...]
    next_page: str | None  # an opaque token for the next page; None: the last page


# ------------------------------------------------------------------------------------ outbound


@dataclass(frozen=True)
class SyncRequest:
    """One outbound-queue item, as the dispatcher hands it to an adapter."""

    item_id: UUID
    order_id: UUID
    marketplace_order_id: str
    action: str  # a SyncAction value: ship, cancel, refund, close_dispute, acknowledge
    reference: str  # the ledger's id of the change: shipment, cancellation, refund or dispute id
    idempotency_key: str
    message: Message  # the item's typed message, decoded by the outbox


@dataclass(frozen=True)
class Accepted:
    """The marketplace applied the change; its own reference for it, if it gives one."""

    marketplace_reference: str | None = None


@dataclass(frozen=True)
class Submitted:
    """The marketplace took the change for asynchronous processing; `poll` with this reference later."""

    marketplace_reference: str
    poll_after_seconds: float = 30.0


Outcome = Accepted | Submitted


class MarketplaceError(Exception):
    """The marketplace did not apply the change. `code` is its error code, or an HTTP status as text."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class TransientMarketplaceError(MarketplaceError):
    """Worth another try later: 429, 5xx, a timeout, a reset connection, a feed still in progress."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


class PermanentMarketplaceError(MarketplaceError):
    """Retrying cannot help (the marketplace refused the request itself); the item goes dead."""


@dataclass(frozen=True)
class RemoteState:
    """What a marketplace says of an order now, for `ledger sync check`: quantities per line id."""

    marketplace_order_id: str
    status: str
    shipped: Mapping[str, int]
    cancelled: Mapping[str, int]
    refunded_total: str  # a decimal string in the order's currency


class CallGate(Protocol):
    """Paces an adapter's calls by marketplace operation (the importer's rate limiter): `before` waits for the
    operation's token, `throttled` is told of a 429 (and how long the marketplace asked to wait)."""

    def before(self, operation: str) -> None: ...

    def throttled(self, operation: str, seconds: float) -> None: ...


@runtime_checkable
class Gated(Protocol):
    """An adapter whose reads (listing orders, and what it asks per listed order) go through a CallGate."""

    def set_gate(self, gate: CallGate | None) -> None: ...


class MarketplaceClient(Protocol):
    """One marketplace account's connection. Implementations are thread-safe or used by one thread."""

    marketplace: Marketplace

    def list_orders(self, updated_after: datetime, page: str | None = None) -> OrderPage:
        """Orders created or changed after `updated_after` (inclusive paging by the marketplace's rules)."""
        ...

    def acknowledge(self, marketplace_order_id: str) -> None:
        """Tell the marketplace the seller has the order (a no-op where the marketplace has no such call)."""
        ...

    def send(self, request: SyncRequest) -> Outcome:
        """Tell the marketplace about one change; raises a MarketplaceError when it is not applied."""
        ...

    def poll(self, request: SyncRequest, marketplace_reference: str) -> Outcome:
        """The result of a change that was `Submitted`; Submitted again while it is still processing."""
        ...

    def order_state(self, marketplace_order_id: str) -> RemoteState:
        """What the marketplace holds for the order now."""
        ...

    def close(self) -> None: ...

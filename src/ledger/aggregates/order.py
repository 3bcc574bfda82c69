"""The `Order` aggregate: one marketplace order, its lines, and every change as an immutable event.

Event classes are permanent: their topics (this module's path and the class names) are stored with every
event. Add fields with defaults; never rename or move a class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY, dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from ledger.aggregates import rules
from ledger.aggregates.chain import GENESIS_HASH, chain_hash
from ledger.aggregates.errors import (
    DisputeAlreadyClosedError,
    DisputeNotFoundError,
    ImportConflictError,
    NothingToCancelError,
    UnknownSyncReferenceError,
)
from ledger.aggregates.lines import (
    LineState,
    OrderState,
    attention,
    change_state,
    order_state,
    requested_left,
    sync_state,
    unshipped_in_refund,
)
from ledger.aggregates.policies import ORDER_CANCELED, MarketplacePolicy, NotSent, policy_for
from ledger.aggregates.values import (
    Address,
    Buyer,
    CancelReason,
    Carrier,
    Context,
    DisputeKind,
    DisputeOutcome,
    Divergence,
    ImportedOrder,
    LineQuantity,
    Marketplace,
    OrderLine,
    OrderStatus,
    PaymentStatus,
    RefundLine,
    RefundReason,
    RefundRequestLine,
    Requester,
    Source,
    SyncAction,
    normalize_id,
    normalized_lines,
)

ORDER_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledger.dev/orders")


@dataclass(frozen=True)
class Envelope:
    """What every order event carries besides its own data: who, through what, why, when, and the chain."""

    _: KW_ONLY
    actor: str
    source: str
    reason: str | None = None
    effective_at: datetime | None = None
    idempotency_key: str | None = None
    request_digest: str | None = None  # fingerprint of the request that carried the idempotency key
    # The account's sync was off: the marketplace is never told of this change. Events stored before the field
    # existed read it as False from the class (their stored state, which their hash covers, has no such key).
    sync_off: bool = False
    prev_hash: str = GENESIS_HASH
    hash: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[misc]
        object.__setattr__(self, "hash", chain_hash(self.prev_hash, self))

    def mutate(self, aggregate: Any) -> Any:
        order = super().mutate(aggregate)  # type: ignore[misc]
        order.last_hash = self.hash
        if self.idempotency_key is not None:
            order.command_keys.setdefault(self.idempotency_key, []).append(order.version)
        return order


@dataclass(frozen=True)
class Shipment:
    shipment_id: UUID
    carrier: str
    tracking_number: str
    shipping_class: str
    shipped_at: datetime
    lines: tuple[LineQuantity, ...]
    confirmed: bool = False
    voided: bool = False
    carrier_name: str = ""
    untold: bool = False  # shipped while the account's sync was off: the marketplace never hears of it


@dataclass(frozen=True)
class Cancellation:
    cancellation_id: UUID
    reason: str
    requested_by: str
    lines: tuple[LineQuantity, ...]
    restocked_on_marketplace: bool
    dispute_id: UUID | None
    cancelled_at: datetime


@dataclass(frozen=True)
class Refund:
    refund_id: UUID
    reason: str
    lines: tuple[RefundLine, ...]
    total: Decimal
    refunded_at: datetime


@dataclass(frozen=True)
class Dispute:
    dispute_id: UUID
    kind: str
    reason: str
    marketplace_dispute_id: str | None
    lines: tuple[LineQuantity, ...]
    restock_in_ledger: bool
    opened_at: datetime
    outcome: str | None = None
    closed_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.outcome is None


@dataclass(frozen=True)
class SyncOutcome:
    """What a marketplace answered about one change the ledger sent it."""

    action: str
    reference: str
    accepted: bool
    marketplace_reference: str | None
    error_code: str | None
    message: str | None
    permanent: bool
    recorded_at: datetime


@dataclass(frozen=True)
class Change:
    """A change of the ledger's that its marketplace hears about, or why it does not (`not_sent`)."""

    action: str
    reference: str
    not_sent: NotSent | None
    at: datetime


@dataclass(frozen=True)
class SyncEntry:
    """Where one change stands with the marketplace: `sent` (acknowledged), `pending` (no answer yet),
    `failing` (refused for now, tried again), `dead` (refused for good), or `not_sent` with the reason."""

    action: str
    reference: str
    state: str
    reason: str | None
    marketplace_reference: str | None
    error_code: str | None
    message: str | None
    at: datetime


class Order(Aggregate):
    """An order on one marketplace. Command methods check the rules, then trigger one or more events."""

    # Set by `Imported`.
    seller: str
    account_id: UUID
    marketplace: Marketplace
    marketplace_order_id: str
    purchased_at: datetime
    currency: str
    payment_status: PaymentStatus
    paid_at: datetime | None
    buyer: Buyer
    ship_to: Address | None
    ship_by: datetime | None
    third_party_managed: bool

    @staticmethod
    @lru_cache(maxsize=4096)  # an import asks twice (the existence check, then the event)
    def create_id(seller: str, marketplace: str, marketplace_order_id: str) -> UUID:
        """The order's id, from its normalized marketplace id: every lookup by a look-alike spelling finds it."""
        return uuid5(ORDER_NAMESPACE, f"{seller}\x1f{marketplace}\x1f{normalize_id(marketplace_order_id)}")

    def __init__(self) -> None:
        self.last_hash = GENESIS_HASH
        self.command_keys: dict[str, list[int]] = {}
        self.lines: dict[str, LineState] = {}
        self.shipments: dict[UUID, Shipment] = {}
        self.cancellations: dict[UUID, Cancellation] = {}
        self.refunds: dict[UUID, Refund] = {}
        self.disputes: dict[UUID, Dispute] = {}
        self.cancel_requests: list[tuple[str, tuple[LineQuantity, ...]]] = []
        self.sync: list[SyncOutcome] = []
        self.changes: list[Change] = []
        # Units the marketplace says it cancelled while the ledger shows them shipped: the seller's to resolve
        # (void the shipment, refund, or restock); the order needs attention meanwhile.
        self.marketplace_cancelled: dict[str, int] = {}
        self.dead: dict[tuple[str, str], str] = {}  # changes the dispatcher gave up on, with why
        self.resolved: dict[tuple[str, str], str] = {}  # dead changes an operator settled by hand, with how
        self.divergences: tuple[Divergence, ...] = ()  # open: the last check found these; () when in sync
        self.restocks: list[tuple[UUID, tuple[LineQuantity, ...]]] = []

    # ----------------------------------------------------------------------------------- events

    @dataclass(frozen=True)
    class Event(Envelope, Aggregate.Event):
        pass

    @dataclass(frozen=True)
    class Imported(Envelope, Aggregate.Created):
        seller: str
        account_id: UUID
        marketplace: str
        marketplace_order_id: str
        purchased_at: datetime
        currency: str
        payment_status: str
        buyer: Buyer
        lines: tuple[OrderLine, ...]
        third_party_managed: bool
        ship_to: Address | None = None
        paid_at: datetime | None = None
        # Added later with a default: an Imported stored before it has no `ship_by` in its state, reads None
        # (the class default) and hashes as it always did (the chain covers the stored fields only).
        ship_by: datetime | None = None

        def apply(self, order: Order) -> None:
            order.seller = self.seller
            order.account_id = self.account_id
            order.marketplace = Marketplace(self.marketplace)
            order.marketplace_order_id = self.marketplace_order_id
            order.purchased_at = self.purchased_at
            order.currency = self.currency
            order.payment_status = PaymentStatus(self.payment_status)
            order.paid_at = self.paid_at
            order.buyer = self.buyer
            order.ship_to = self.ship_to
            order.ship_by = self.ship_by
            order.third_party_managed = self.third_party_managed
            order.lines = {line.line_id: LineState(line) for line in self.lines}

    class PaymentCleared(Event):
        paid_at: datetime

        def apply(self, order: Order) -> None:
            order.payment_status = PaymentStatus.PAID
            order.paid_at = self.paid_at

    class Shipped(Event):
        shipment_id: UUID
        carrier: str
        tracking_number: str
        shipping_class: str
        shipped_at: datetime
        lines: tuple[LineQuantity, ...]
        carrier_name: str = ""  # the carrier's name when `carrier` is "other"

        def apply(self, order: Order) -> None:
            for item in self.lines:
                state = order.lines[item.line_id]
                state.shipped += item.quantity
                state.untold_shipped += item.quantity if self.sync_off else 0
                state.requested_cancel = requested_left(state.requested_cancel, state.open_quantity)
            order.shipments[self.shipment_id] = Shipment(
                self.shipment_id,
                self.carrier,
                self.tracking_number,
                self.shipping_class,
                self.shipped_at,
                tuple(self.lines),
                carrier_name=self.carrier_name,
                untold=self.sync_off,
            )
            order.note_change(self, SyncAction.SHIP, self.shipment_id)

    class CancellationRequested(Event):
        requested_by: str
        lines: tuple[LineQuantity, ...]

        def apply(self, order: Order) -> None:
            for item in self.lines:
                state = order.lines[item.line_id]
                state.requested_cancel = requested_left(
                    state.requested_cancel + item.quantity, state.open_quantity
                )
            order.cancel_requests.append((self.requested_by, tuple(self.lines)))

    class Cancelled(Event):
        cancellation_id: UUID
        requested_by: str
        lines: tuple[LineQuantity, ...]
        restocked_on_marketplace: bool
        dispute_id: UUID | None = None

        def apply(self, order: Order) -> None:
            for item in self.lines:
                state = order.lines[item.line_id]
                state.cancelled += item.quantity
                state.requested_cancel = requested_left(
                    state.requested_cancel - item.quantity, state.open_quantity
                )
            order.cancellations[self.cancellation_id] = Cancellation(
                self.cancellation_id,
                self.reason or "",
                self.requested_by,
                tuple(self.lines),
                self.restocked_on_marketplace,
                self.dispute_id,
                self.effective_at or self.timestamp,
            )
            if self.requested_by == Requester.MARKETPLACE:
                _take(order.marketplace_cancelled, self.lines)
            # After an accepted cancellation dispute, the request went out when the dispute opened.
            if self.dispute_id is None:
                by_marketplace = self.requested_by == Requester.MARKETPLACE
                order.note_change(
                    self, SyncAction.CANCEL, self.cancellation_id, by_marketplace=by_marketplace
                )

    class Refunded(Event):
        refund_id: UUID
        lines: tuple[RefundLine, ...]
        total: Decimal

        def apply(self, order: Order) -> None:
            for item in self.lines:
                state = order.lines[item.line_id]
                state.refunded_unshipped += unshipped_in_refund(
                    item.quantity, state.shipped, state.refunded_quantity, state.refunded_unshipped
                )
                state.refunded_quantity += item.quantity
                state.refunded_item += item.item_amount
                state.refunded_tax += item.tax_amount
                state.refunded_shipping += item.shipping_amount
                state.requested_cancel = requested_left(state.requested_cancel, state.open_quantity)
            order.refunds[self.refund_id] = Refund(
                self.refund_id,
                self.reason or "",
                tuple(self.lines),
                self.total,
                self.effective_at or self.timestamp,
            )
            order.note_change(self, SyncAction.REFUND, self.refund_id)
            order.marketplace_cancelled.clear()  # the seller resolved it by refunding

    class DisputeOpened(Event):
        dispute_id: UUID
        kind: str
        marketplace_dispute_id: str | None = None
        lines: tuple[LineQuantity, ...] = ()
        restock_in_ledger: bool = False

        def apply(self, order: Order) -> None:
            for item in self.lines:
                order.lines[item.line_id].pending_cancel += item.quantity
            order.disputes[self.dispute_id] = Dispute(
                self.dispute_id,
                self.kind,
                self.reason or "",
                self.marketplace_dispute_id,
                tuple(self.lines),
                self.restock_in_ledger,
                self.effective_at or self.timestamp,
            )
            if self.kind == DisputeKind.CANCELLATION:  # the seller's cancellation request (eBay)
                order.note_change(self, SyncAction.CANCEL, self.dispute_id)

    class DisputeClosed(Event):
        dispute_id: UUID
        outcome: str

        def apply(self, order: Order) -> None:
            dispute = order.disputes[self.dispute_id]
            for item in dispute.lines:
                order.lines[item.line_id].pending_cancel -= item.quantity
            order.disputes[self.dispute_id] = replace(
                dispute, outcome=self.outcome, closed_at=self.effective_at or self.timestamp
            )
            order.note_change(
                self,
                SyncAction.CLOSE_DISPUTE,
                self.dispute_id,
                (DisputeKind(dispute.kind), DisputeOutcome(self.outcome)),
            )

    class Restocked(Event):
        restock_id: UUID
        lines: tuple[LineQuantity, ...]
        cause_id: UUID | None = None

        def apply(self, order: Order) -> None:
            for item in self.lines:
                order.lines[item.line_id].restocked += item.quantity
            order.restocks.append((self.restock_id, tuple(self.lines)))
            order.marketplace_cancelled.clear()  # the seller resolved it by restocking

    class MarketplaceAcknowledged(Event):
        action: str
        reference: str
        marketplace_reference: str | None = None

        def apply(self, order: Order) -> None:
            if self.action == SyncAction.SHIP:
                shipment = order.shipments[UUID(self.reference)]
                order.shipments[shipment.shipment_id] = replace(shipment, confirmed=True)
                for item in shipment.lines:
                    order.lines[item.line_id].confirmed_shipped += item.quantity
            order.sync.append(
                SyncOutcome(
                    self.action,
                    self.reference,
                    True,
                    self.marketplace_reference,
                    None,
                    None,
                    False,
                    self.effective_at or self.timestamp,
                )
            )

    class MarketplaceRejected(Event):
        action: str
        reference: str
        error_code: str
        message: str
        permanent: bool

        def apply(self, order: Order) -> None:
            order.sync.append(
                SyncOutcome(
                    self.action,
                    self.reference,
                    False,
                    None,
                    self.error_code,
                    self.message,
                    self.permanent,
                    self.effective_at or self.timestamp,
                )
            )

    class SyncItemDied(Event):
        """The dispatcher gave up on telling the marketplace a change (`reason`): the order needs attention
        until the change is acknowledged (an operator's retry) or resolved by hand."""

        action: str
        reference: str

        def apply(self, order: Order) -> None:
            order.dead[(self.action, self.reference)] = self.reason or ""

    class SyncItemResolved(Event):
        """An operator settled a dead change by hand (`reason`: how the marketplace was told, or why not)."""

        action: str
        reference: str

        def apply(self, order: Order) -> None:
            order.dead.pop((self.action, self.reference), None)
            order.resolved[(self.action, self.reference)] = self.reason or ""

    class MarketplaceCancelled(Event):
        """The marketplace cancelled units the ledger shows shipped: it refused their shipment ("order is
        canceled"), or an import reports them cancelled. Its word on what it owns, recorded for the seller."""

        lines: tuple[LineQuantity, ...]
        shipment_id: UUID | None = None

        def apply(self, order: Order) -> None:
            for item in self.lines:
                order.marketplace_cancelled[item.line_id] = (
                    order.marketplace_cancelled.get(item.line_id, 0) + item.quantity
                )

    class ShipmentVoided(Event):
        """A shipment the marketplace never acknowledged (or refused) is undone: its units are unshipped."""

        shipment_id: UUID
        lines: tuple[LineQuantity, ...]

        def apply(self, order: Order) -> None:
            untold = order.shipments[self.shipment_id].untold
            for item in self.lines:
                state = order.lines[item.line_id]
                state.shipped -= item.quantity
                state.untold_shipped -= item.quantity if untold else 0
            order.shipments[self.shipment_id] = replace(order.shipments[self.shipment_id], voided=True)

    class DivergenceFound(Event):
        """A check found the marketplace disagreeing with the ledger on these fields (or on others than the
        last check found)."""

        divergences: tuple[Divergence, ...]

        def apply(self, order: Order) -> None:
            order.divergences = tuple(self.divergences)

    class DivergenceResolved(Event):
        """A check found the marketplace and the ledger agreeing again."""

        def apply(self, order: Order) -> None:
            order.divergences = ()

    # --------------------------------------------------------------------------- sync view

    def note_change(
        self,
        event: Order.Event,
        action: SyncAction,
        reference: UUID,
        dispute: tuple[DisputeKind, DisputeOutcome] | None = None,
        *,
        by_marketplace: bool = False,
    ) -> None:
        """Remember a change the marketplace hears about, or why it does not (the outbound queue applies the
        same `MarketplacePolicy.not_sent` to what it enqueues)."""
        reason = self.policy.not_sent(
            action,
            third_party_managed=self.third_party_managed,
            from_marketplace=by_marketplace or event.source == Source.MARKETPLACE,
            dispute=dispute,
            sync_off=event.sync_off,
        )
        self.changes.append(
            Change(action.value, str(reference), reason, event.effective_at or event.timestamp)
        )

    @property
    def _voided(self) -> set[str]:
        return {str(k) for k, shipment in self.shipments.items() if shipment.voided}

    @property
    def attention(self) -> bool:
        """The seller has something to resolve (`lines.attention`)."""
        return attention(
            diverged=bool(self.divergences),
            marketplace_cancelled=any(self.marketplace_cancelled.values()),
            buyer_cancel_requested=self.buyer_cancel_requested,
            dead=any(entry.state == "dead" for entry in self.sync_status),
        )

    @property
    def sync_state(self) -> str:
        """The order's standing with its marketplace (`lines.sync_state`)."""
        return sync_state(((e.state, e.reason) for e in self.sync_status), diverged=bool(self.divergences))

    @property
    def buyer_cancel_requested(self) -> bool:
        return any(state.requested_cancel for state in self.lines.values())

    @property
    def sync_status(self) -> tuple[SyncEntry, ...]:
        """Each change as the marketplace has it, from its answers (a cancellation dispute's request is
        answered as `cancel` or `open_dispute`); the answers to Walmart's order acknowledgement, which no
        change of the ledger's made, are listed too."""
        entries = []
        for change in self.changes:
            if change.not_sent is not None:
                entries.append(
                    SyncEntry(change.action, change.reference, "not_sent", change.not_sent.value,
                              None, None, None, change.at)
                )  # fmt: skip
                continue
            actions = {change.action}
            if change.action == SyncAction.CANCEL:
                actions.add(SyncAction.OPEN_DISPUTE.value)
            key = (change.action, change.reference)
            if key in self.resolved:
                entries.append(SyncEntry(change.action, change.reference, "sent", f"resolved: {self.resolved[key]}",
                                         None, None, None, change.at))  # fmt: skip
                continue
            answers = [a for a in self.sync if a.action in actions and a.reference == change.reference]
            if not any(a.accepted for a in answers) and change.reference in self._voided:
                entries.append(SyncEntry(change.action, change.reference, "not_sent", NotSent.VOIDED.value,
                                         None, None, None, change.at))  # fmt: skip
                continue
            entry = _entry(change, answers, dead=key in self.dead)
            if entry.state == "dead" and key in self.dead:
                entry = replace(entry, message=entry.message or self.dead[key])
            entries.append(entry)
        acknowledgements = [a for a in self.sync if a.action == SyncAction.ACKNOWLEDGE]
        if acknowledgements:
            first = acknowledgements[0]
            change = Change(first.action, first.reference, None, first.recorded_at)
            entries.append(_entry(change, acknowledgements))
        return tuple(entries)

    # ------------------------------------------------------------------------- chain and ids

    def trigger_event(self, event_class: type[Any], **kwargs: Any) -> None:
        kwargs["prev_hash"] = self.last_hash
        super().trigger_event(event_class, **kwargs)

    def _new_id(self, kind: str, offset: int = 1) -> UUID:
        """A deterministic id for something this order makes: the same command replayed makes the same id."""
        return uuid5(self.id, f"{kind}:{self.version + offset}")

    # ------------------------------------------------------------------------------ queries

    @property
    def policy(self) -> MarketplacePolicy:
        return policy_for(self.marketplace)

    @property
    def charged_only(self) -> bool:
        """Whether refunds reach only shipped units the marketplace confirmed (it charges on confirmation);
        Third Party Managed orders are charged outside the ledger."""
        return self.policy.charges_on_shipment_confirmation and not self.third_party_managed

    @property
    def state(self) -> OrderState:
        """Status, totals and the rest of the order's derived state (aggregates/lines.py defines them)."""
        return order_state(
            (s.tally for s in self.lines.values()),
            disputes=len(self.disputes),
            open_disputes=sum(d.is_open for d in self.disputes.values()),
        )

    @property
    def units(self) -> int:
        return self.state.units

    @property
    def shipped_units(self) -> int:
        return self.state.shipped_units

    @property
    def cancelled_units(self) -> int:
        return self.state.cancelled_units

    @property
    def total(self) -> Decimal:
        return self.state.total

    @property
    def refunded_total(self) -> Decimal:
        return self.state.refunded_total

    @property
    def status(self) -> OrderStatus:
        return self.state.status

    @property
    def dispute_status(self) -> str | None:
        return self.state.dispute_status

    @property
    def is_open(self) -> bool:
        return self.state.is_open

    def versions_for_key(self, idempotency_key: str) -> list[int]:
        return list(self.command_keys.get(idempotency_key, ()))

    # ----------------------------------------------------------------------------- commands

    @classmethod
    def import_order(
        cls,
        ctx: Context,
        *,
        seller: str,
        account_id: UUID,
        marketplace: Marketplace,
        order: ImportedOrder,
        third_party_managed: bool,
        checked: bool = False,
    ) -> Order:
        """`checked`: the caller ran `rules.check_imported_order` on this order already (the application checks
        the plaintext before sealing the buyer's fields, whose tokens hold nothing the check refuses), so the
        checks run once per import."""
        if not checked:
            rules.check_imported_order(order)
        fields = {
            "seller": seller,
            "account_id": account_id,
            "marketplace": marketplace.value,
            "marketplace_order_id": order.marketplace_order_id,
            "purchased_at": order.purchased_at,
            "currency": order.currency,
            "payment_status": order.payment_status.value,
            "buyer": order.buyer,
            "lines": order.lines,
            "third_party_managed": third_party_managed,
            "ship_to": order.ship_to,
            "paid_at": order.paid_at,
            "ship_by": order.ship_by,
            **_envelope(ctx),
        }
        order_id = cls.create_id(seller, marketplace.value, order.marketplace_order_id)
        if cls is not Order:  # a subclass: the library's general path
            return cls._create(cls.Imported, id=order_id, **fields)
        return _created(order_id, fields, cls.Imported.create_timestamp())

    def reimport(
        self, ctx: Context, account_id: UUID, order: ImportedOrder, now: datetime, *, checked: bool = False
    ) -> None:
        """The marketplace sent the order again: nothing changes, or the payment cleared (`checked`: as for
        `import_order`)."""
        if not checked:
            rules.check_imported_order(order)
        differences = rules.import_differences(self.imported_view(account_id), order)
        if account_id != self.account_id:
            differences.insert(0, "account_id")
        if differences:
            msg = f"order {order.marketplace_order_id} was imported before with different {', '.join(differences)}"
            raise ImportConflictError(msg)
        if order.payment_status is PaymentStatus.PAID and self.payment_status is PaymentStatus.PENDING:
            self.clear_payment(ctx, order.paid_at or ctx.effective_at or now)

    def imported_view(self, account_id: UUID) -> ImportedOrder:
        return ImportedOrder(
            marketplace_order_id=self.marketplace_order_id,
            purchased_at=self.purchased_at,
            currency=self.currency,
            payment_status=self.payment_status,
            buyer=self.buyer,
            lines=tuple(s.line for s in self.lines.values()),
            ship_to=self.ship_to,
            paid_at=self.paid_at,
            ship_by=self.ship_by,
        )

    def clear_payment(self, ctx: Context, paid_at: datetime) -> None:
        if self.payment_status is PaymentStatus.PAID:
            return
        self.trigger_event(self.PaymentCleared, paid_at=paid_at, **_envelope(ctx))

    def ship(
        self,
        ctx: Context,
        *,
        carrier: Carrier,
        tracking_number: str,
        shipped_at: datetime,
        now: datetime,
        shipping_class: str = "",
        lines: tuple[LineQuantity, ...] | None = None,
        carrier_name: str = "",
    ) -> UUID:
        number = rules.check_tracking_number(carrier, tracking_number)
        name = rules.check_carrier_name(carrier, carrier_name)
        rules.check_storable(shipping_class, "shipping_class")
        rules.check_can_ship(self)
        rules.check_ship_time(shipped_at, self.purchased_at, now)
        items = rules.resolve_shipment_lines(self.lines, normalized_lines(lines))
        shipment_id = self._new_id("shipment")
        self.trigger_event(
            self.Shipped,
            shipment_id=shipment_id,
            carrier=carrier.value,
            carrier_name=name,
            tracking_number=number,
            shipping_class=shipping_class,
            shipped_at=shipped_at,
            lines=items,
            **_envelope(ctx),
        )
        return shipment_id

    def cancel(
        self,
        ctx: Context,
        *,
        reason: CancelReason,
        now: datetime,
        lines: tuple[LineQuantity, ...] | None = None,
        restock_in_ledger: bool = False,
        requested_by: Requester = Requester.SELLER,
    ) -> UUID:
        """Cancel unshipped units. Returns the id of the cancellation, request or dispute it made."""
        reason = rules.check_cancel_reason(reason)
        envelope = _envelope(ctx, reason=reason.value)
        lines = normalized_lines(lines)
        if requested_by is Requester.MARKETPLACE:
            return self._marketplace_cancelled(ctx, envelope, lines, restock_in_ledger, None)
        items = rules.resolve_cancellation_lines(self, lines, by_seller=requested_by is Requester.SELLER)
        requested_at = ctx.effective_at or now
        if requested_by is Requester.BUYER and not self.policy.buyer_cancellation_applies_at_once(
            self.purchased_at, requested_at
        ):
            request_id = self._new_id("cancel-request")
            self.trigger_event(
                self.CancellationRequested, requested_by=requested_by.value, lines=items, **envelope
            )
            return request_id
        if (
            requested_by is Requester.SELLER
            and self.policy.cancel_paid_opens_dispute
            and self.payment_status is PaymentStatus.PAID
            and not self.third_party_managed  # nothing is filed with the marketplace, so nothing answers
        ):
            dispute_id = self._new_id("dispute")
            self.trigger_event(
                self.DisputeOpened,
                dispute_id=dispute_id,
                kind=DisputeKind.CANCELLATION.value,
                lines=items,
                restock_in_ledger=restock_in_ledger,
                **envelope,
            )
            return dispute_id
        return self._cancel_now(ctx, envelope, items, requested_by, restock_in_ledger, None)

    def _cancel_now(
        self,
        ctx: Context,
        envelope: dict[str, Any],
        items: tuple[LineQuantity, ...],
        requested_by: Requester,
        restock_in_ledger: bool,
        dispute_id: UUID | None,
    ) -> UUID:
        cancellation_id = self._new_id("cancellation")
        self.trigger_event(
            self.Cancelled,
            cancellation_id=cancellation_id,
            requested_by=requested_by.value,
            lines=items,
            restocked_on_marketplace=self.policy.cancellation_restocks_on_marketplace,
            dispute_id=dispute_id,
            **envelope,
        )
        if restock_in_ledger:
            self._restock(ctx, items, cancellation_id)
        return cancellation_id

    def _marketplace_cancelled(
        self,
        ctx: Context,
        envelope: dict[str, Any],
        lines: tuple[LineQuantity, ...] | None,
        restock_in_ledger: bool,
        shipment_id: UUID | None,
    ) -> UUID:
        """The marketplace cancelled `lines` (None: every unit it has not shipped). Unshipped units are
        cancelled; units the ledger shipped but the marketplace never acknowledged are its word against ours,
        recorded as `MarketplaceCancelled` for the seller to resolve. Returns the cancellation's (or the
        record's) id."""
        whole = lines is None
        if lines is None:
            lines = tuple(
                LineQuantity(k, s.ordered - s.confirmed_shipped - s.cancelled - s.refunded_unshipped)
                for k, s in self.lines.items()
            )
        lines = rules.check_requested_lines(self.lines, (i for i in lines if i.quantity > 0 or not whole))
        cancel: list[LineQuantity] = []
        disputed: list[LineQuantity] = []
        for item in lines:
            state = self.lines[item.line_id]
            now = min(item.quantity, state.open_quantity)
            # Shipped here but never acknowledged there, and not reported before.
            unacknowledged = (
                state.shipped - state.confirmed_shipped - self.marketplace_cancelled.get(item.line_id, 0)
            )
            shipped = min(item.quantity - now, unacknowledged)
            if not whole and item.quantity > now + max(shipped, 0):
                msg = f"line {item.line_id} has {now + max(shipped, 0)} unit(s) the marketplace could cancel"
                raise NothingToCancelError(msg)
            if now > 0:
                cancel.append(LineQuantity(item.line_id, now))
            if shipped > 0:
                disputed.append(LineQuantity(item.line_id, shipped))
        if not cancel and not disputed:
            raise NothingToCancelError("the ledger has this cancellation already")
        made = None
        # The open units' cancellation first: a marketplace's `Cancelled` settles earlier reports of the same
        # lines (`marketplace_cancelled`), so recorded after the report it would erase the report's shipped
        # units of a line it also cancels open units of (the order then lost its attention).
        if cancel:
            made = self._cancel_now(
                ctx, envelope, tuple(cancel), Requester.MARKETPLACE, restock_in_ledger, None
            )
        if disputed:
            reported = self._new_id("marketplace-cancelled")
            made = made or reported
            self.trigger_event(
                self.MarketplaceCancelled, lines=tuple(disputed), shipment_id=shipment_id, **envelope
            )
        assert made is not None
        return made

    def void_shipment(self, ctx: Context, *, shipment_id: UUID, reason: str) -> UUID:
        """Undo a shipment the marketplace has not acknowledged, or refused: its units are unshipped again,
        and whatever the marketplace said it cancelled of them is cancelled now. Returns the shipment id."""
        rules.check_reason(reason)
        shipment = rules.check_voidable(self, shipment_id)
        envelope = _envelope(ctx, reason=reason)
        self.trigger_event(self.ShipmentVoided, shipment_id=shipment_id, lines=shipment.lines, **envelope)
        outstanding = tuple(
            LineQuantity(k, min(q, self.lines[k].open_quantity))
            for k, q in self.marketplace_cancelled.items()
            if min(q, self.lines[k].open_quantity) > 0
        )
        if outstanding:
            self._cancel_now(ctx, envelope, outstanding, Requester.MARKETPLACE, False, None)
        return shipment_id

    def refund(
        self,
        ctx: Context,
        *,
        reason: RefundReason,
        lines: tuple[RefundRequestLine, ...] | None = None,
        shipping_amount: Decimal = Decimal(0),
        tax_amount: Decimal = Decimal(0),
    ) -> UUID:
        reason = rules.check_refund_reason(reason)
        # With the account's sync off the ledger cannot know what the marketplace charged: every shipped unit is
        # refundable (as on a Third Party Managed order).
        charged_only = False if ctx.sync_off else None
        refund_lines = rules.resolve_refund(
            self, normalized_lines(lines), shipping_amount, tax_amount, charged_only=charged_only
        )
        refund_id = self._new_id("refund")
        self.trigger_event(
            self.Refunded,
            refund_id=refund_id,
            lines=refund_lines,
            total=sum((line.total for line in refund_lines), Decimal(0)),
            **_envelope(ctx, reason=reason.value),
        )
        return refund_id

    def open_dispute(
        self,
        ctx: Context,
        *,
        reason: str,
        marketplace_dispute_id: str | None = None,
    ) -> UUID:
        """A buyer's claim, as the marketplace or an operator reports it. The same marketplace id is a no-op."""
        rules.check_reason(reason)
        if marketplace_dispute_id is not None:
            marketplace_dispute_id = normalize_id(marketplace_dispute_id)
            rules.check_identifier(marketplace_dispute_id, "marketplace_dispute_id")
        for dispute in self.disputes.values():
            if marketplace_dispute_id and dispute.marketplace_dispute_id == marketplace_dispute_id:
                return dispute.dispute_id
        dispute_id = self._new_id("dispute")
        self.trigger_event(
            self.DisputeOpened,
            dispute_id=dispute_id,
            kind=DisputeKind.CLAIM.value,
            marketplace_dispute_id=marketplace_dispute_id,
            **_envelope(ctx, reason=reason),
        )
        return dispute_id

    def close_dispute(self, ctx: Context, *, dispute_id: UUID, outcome: DisputeOutcome) -> UUID | None:
        """Close a dispute. An accepted cancellation dispute cancels its units; returns that cancellation's id."""
        dispute = self.disputes.get(dispute_id)
        if dispute is None:
            msg = f"order {self.id} has no dispute {dispute_id}"
            raise DisputeNotFoundError(msg)
        if not dispute.is_open:
            msg = f"dispute {dispute_id} closed already ({dispute.outcome})"
            raise DisputeAlreadyClosedError(msg)
        self.trigger_event(self.DisputeClosed, dispute_id=dispute_id, outcome=outcome.value, **_envelope(ctx))
        if dispute.kind == DisputeKind.CANCELLATION and outcome is DisputeOutcome.ACCEPTED:
            return self._cancel_now(
                ctx,
                _envelope(ctx, reason=dispute.reason),
                dispute.lines,
                Requester.SELLER,
                dispute.restock_in_ledger,
                dispute_id,
            )
        return None

    def restock(self, ctx: Context, *, lines: tuple[LineQuantity, ...]) -> UUID:
        items = rules.resolve_restock_lines(self.lines, normalized_lines(lines))
        return self._restock(ctx, items, None)

    def _restock(self, ctx: Context, items: tuple[LineQuantity, ...], cause_id: UUID | None) -> UUID:
        restock_id = self._new_id("restock")
        self.trigger_event(
            self.Restocked, restock_id=restock_id, lines=items, cause_id=cause_id, **_envelope(ctx)
        )
        return restock_id

    def record_check(self, ctx: Context, divergences: tuple[Divergence, ...]) -> None:
        """What a comparison with the marketplace found: a divergence found (or changed), resolved, or
        nothing new to record."""
        if divergences == self.divergences:
            return
        if divergences:
            self.trigger_event(self.DivergenceFound, divergences=divergences, **_envelope(ctx))
        else:
            self.trigger_event(self.DivergenceResolved, **_envelope(ctx))

    def record_acknowledgement(
        self,
        ctx: Context,
        *,
        action: SyncAction,
        reference: str,
        marketplace_reference: str | None = None,
        reason: str | None = None,
    ) -> None:
        """The marketplace accepted a change (`reason`: how, when it is not plain: it refused the change as
        something it had already). Recording the same acknowledgement twice changes nothing."""
        self._check_reference(action, reference)
        if any(s.accepted and s.action == action and s.reference == reference for s in self.sync):
            return
        self.trigger_event(
            self.MarketplaceAcknowledged,
            action=action.value,
            reference=reference,
            marketplace_reference=marketplace_reference,
            **_envelope(ctx, reason),
        )

    def record_rejection(
        self,
        ctx: Context,
        *,
        action: SyncAction,
        reference: str,
        error_code: str,
        message: str,
        permanent: bool,
    ) -> None:
        self._check_reference(action, reference)
        self.trigger_event(
            self.MarketplaceRejected,
            action=action.value,
            reference=reference,
            error_code=error_code,
            message=message,
            permanent=permanent,
            **_envelope(ctx),
        )
        if action is SyncAction.SHIP and error_code == ORDER_CANCELED:
            shipment = self.shipments[UUID(reference)]
            # An import may have recorded the marketplace's cancellation first (the buyer cancelled, the import
            # ran, then the confirmation was refused): only what the ledger does not hold yet is recorded, and
            # the refusal always is.
            lines = self._not_yet_marketplace_cancelled(shipment.lines)
            if not shipment.voided and lines:
                envelope = _envelope(ctx, reason=message)
                self._marketplace_cancelled(ctx, envelope, lines, False, shipment.shipment_id)

    def _not_yet_marketplace_cancelled(self, lines: tuple[LineQuantity, ...]) -> tuple[LineQuantity, ...]:
        """Of `lines`, the units the marketplace could still be recorded as cancelling: open ones, and shipped
        ones it never acknowledged nor was recorded as cancelling."""
        left = []
        for item in lines:
            state = self.lines[item.line_id]
            unacknowledged = (
                state.shipped - state.confirmed_shipped - self.marketplace_cancelled.get(item.line_id, 0)
            )
            quantity = min(item.quantity, state.open_quantity + max(unacknowledged, 0))
            if quantity > 0:
                left.append(LineQuantity(item.line_id, quantity))
        return tuple(left)

    def record_sync_death(self, ctx: Context, *, action: SyncAction, reference: str, reason: str) -> None:
        """The dispatcher gave up on a change: the order needs attention until it is retried or resolved."""
        self._check_reference(action, reference)
        self.trigger_event(
            self.SyncItemDied, action=action.value, reference=reference, **_envelope(ctx, reason)
        )

    def resolve_sync_item(self, ctx: Context, *, action: SyncAction, reference: str, reason: str) -> None:
        """An operator settled a change the dispatcher gave up on, by hand, saying how."""
        self._check_reference(action, reference)
        self.trigger_event(
            self.SyncItemResolved, action=action.value, reference=reference, **_envelope(ctx, reason)
        )

    def _check_reference(self, action: SyncAction, reference: str) -> None:
        known: dict[SyncAction, set[str]] = {
            SyncAction.SHIP: {str(k) for k in self.shipments},
            # An eBay seller cancellation is sent as `cancel` about its cancellation dispute.
            SyncAction.CANCEL: {str(k) for k in self.cancellations}
            | {str(k) for k, d in self.disputes.items() if d.kind == DisputeKind.CANCELLATION},
            SyncAction.REFUND: {str(k) for k in self.refunds},
            SyncAction.OPEN_DISPUTE: {str(k) for k in self.disputes},
            SyncAction.CLOSE_DISPUTE: {str(k) for k, d in self.disputes.items() if not d.is_open},
            SyncAction.RESTOCK: {str(k) for k, _ in self.restocks},
            SyncAction.ACKNOWLEDGE: {str(self.id)},
        }
        if reference not in known[action]:
            msg = f"order {self.id} has no {action.value} {reference!r} to report on"
            raise UnknownSyncReferenceError(msg)


def _take(counts: dict[str, int], lines: tuple[LineQuantity, ...]) -> None:
    for item in lines:
        if item.line_id in counts:
            counts[item.line_id] = max(counts[item.line_id] - item.quantity, 0)


def _entry(change: Change, answers: list[SyncOutcome], *, dead: bool = False) -> SyncEntry:
    accepted = next((a for a in answers if a.accepted), None)
    last = accepted or (answers[-1] if answers else None)
    state = change_state(
        not_sent=False,
        resolved=False,
        voided=False,
        accepted=accepted is not None,
        answered=last is not None,
        permanent=last is not None and last.permanent,
        dead=dead,
    )
    return SyncEntry(
        change.action,
        change.reference,
        state,
        None,
        last.marketplace_reference if last else None,
        last.error_code if last else None,
        last.message if last else None,
        last.recorded_at if last else change.at,
    )


_IMPORTED_FIELDS = tuple(f.name for f in dataclasses.fields(Order.Imported))
"""`Order.Imported`'s fields in the order its dataclass `__init__` sets them (the stored state keeps this order)."""
_ORDER_TOPIC = f"{Order.__module__}:{Order.__qualname__}"  # the library's get_topic(Order)


def _created(order_id: UUID, fields: dict[str, Any], timestamp: datetime) -> Order:
    """A new order and its `Imported` event, as the library's `_create` makes them (event, then the aggregate
    through `Imported.mutate(None)`), without its general machinery: no keyword filtering by signature, no topic
    resolution, one dict for the event's state (a bulk import makes thousands). The same event, attribute for
    attribute and in the same order, and so the same hash and stored bytes (tests/unit/test_order_created.py
    compares both paths)."""
    values = {
        "originator_id": order_id,
        "originator_version": Order.INITIAL_VERSION,
        "timestamp": timestamp,
        "originator_topic": _ORDER_TOPIC,
        "prev_hash": GENESIS_HASH,
        "hash": "",
        **fields,
    }
    event = object.__new__(Order.Imported)
    event.__dict__.update({name: values[name] for name in _IMPORTED_FIELDS})
    object.__setattr__(event, "hash", chain_hash(event.prev_hash, event))  # as Envelope.__post_init__
    order = object.__new__(Order)  # as CanInitAggregate.mutate: __base_init__, __init__, apply
    order.__base_init__(order_id, event.originator_version, timestamp)
    order.__init__()  # type: ignore[misc]
    event.apply(order)
    order.last_hash = event.hash  # as Envelope.mutate
    if event.idempotency_key is not None:
        order.command_keys.setdefault(event.idempotency_key, []).append(order.version)
    order.pending_events.append(event)
    return order


def _envelope(ctx: Context, reason: str | None = None) -> dict[str, Any]:
    return {
        "actor": ctx.actor,
        "source": ctx.source.value,
        "reason": reason,
        "effective_at": ctx.effective_at,
        "idempotency_key": ctx.idempotency_key,
        "request_digest": ctx.request_digest,
        "sync_off": ctx.sync_off,
    }

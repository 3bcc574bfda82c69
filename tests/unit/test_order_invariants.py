"""Property-based tests of the order invariants: random command sequences on an in-memory `Ledger`.

A hypothesis state machine imports a few orders (every marketplace, paid and pending, fulfillment-managed and
Third Party Managed accounts, restocking in the ledger on and off) and sends them random commands. A model
of its own, changed only when a command succeeds, predicts for each command whether the marketplace's rules
allow it and what it records; after every step the order as the ledger reports it must agree with the model
and with the invariants every order keeps whatever happened to it. A few focused examples at the end pin
down cases the machine reaches only rarely.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ledger.aggregates.chain import GENESIS_HASH, chain_hash
from ledger.aggregates.errors import (
    CancelAfterShipmentError,
    DisputeAlreadyClosedError,
    DisputeNotFoundError,
    ImportConflictError,
    InvalidShipTimeError,
    InvalidTrackingNumberError,
    LedgerError,
    NothingToCancelError,
    NothingToRefundError,
    NothingToShipError,
    OverRefundError,
    OverRestockError,
    OverShipmentError,
    PartialCancellationError,
    ReasonRequiredError,
    RefundBeforeChargeError,
    RefundUnpaidOrderError,
    RefundUnshippedError,
    ShipDuringCancellationDisputeError,
    ShipUnpaidOrderError,
    UnknownSyncReferenceError,
)
from ledger.aggregates.values import (
    Buyer,
    CancelReason,
    Carrier,
    Context,
    DisputeKind,
    DisputeOutcome,
    ImportedOrder,
    LineQuantity,
    Marketplace,
    OrderLine,
    PaymentStatus,
    RefundReason,
    RefundRequestLine,
    Requester,
    SyncAction,
)
from ledger.application.errors import IdempotencyKeyReusedError, VersionMismatchError
from ledger.application.ledger import Ledger
from ledger.application.queries import AccountDetails, CommandResult, OrderDetails

NOW = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)
PURCHASED_AT = NOW - timedelta(hours=2)
AMAZON_BUYER_CANCEL_WINDOW = timedelta(minutes=30)
SELLER = "seller-1"
ZERO = Decimal(0)
CENT = Decimal("0.01")
MAX_ORDERS = 3
UNKNOWN_ID = UUID("00000000-0000-4000-8000-000000000000")

PRICES = [Decimal(p) for p in ("0.99", "5", "10.50", "19.99")]
TAXES = [Decimal(t) for t in ("0", "0.10", "0.83", "1.00", "1.05")]
REFUND_AMOUNTS = [Decimal(a) for a in ("0.50", "1.00", "5.00", "25.00")]
SHIPPINGS = [Decimal(s) for s in ("0", "3.5", "4.00")]

# (carrier, tracking number as typed, whether the carrier's format accepts it); valid ones weigh more, so
# that most shipments get past the format check.
VALID_TRACKING = [
    (Carrier.UPS, "1Z999AA10123456784", True),
    (Carrier.UPS, "1z999aa1 0123456784", True),  # pasted from a label: normalized
    (Carrier.FEDEX, "123456789012", True),
    (Carrier.FEDEX, "449044304137821", True),
    (Carrier.USPS, "9400111899223197428490", True),
]
INVALID_TRACKING = [
    (Carrier.UPS, "1Z999AA10123456785", False),  # wrong check digit
    (Carrier.FEDEX, "12345", False),
]
TRACKING = VALID_TRACKING * 2 + INVALID_TRACKING
# (shipped_at, whether it is acceptable: not before the purchase, not more than 5 minutes ahead of the clock)
SHIP_TIMES = [
    *[(None, True)] * 3,  # the default, the clock's now
    (NOW - timedelta(minutes=30), True),
    (NOW + timedelta(minutes=4), True),
    (PURCHASED_AT - timedelta(minutes=1), False),
    (NOW + timedelta(hours=1), False),
]
# When the buyer asked to cancel: inside Amazon's 30 minutes (the boundary included), outside, or "now".
CANCEL_TIMES = [
    None,
    PURCHASED_AT + timedelta(minutes=10),
    PURCHASED_AT + timedelta(minutes=30),
    PURCHASED_AT + timedelta(minutes=31),
    PURCHASED_AT + timedelta(minutes=90),
]
# Mostly without: a reused key replays instead of running the command, which changes nothing.
KEYS = st.sampled_from([None] * 8 + ["key-1", "key-2"])
EXPECTED_VERSIONS = st.sampled_from([None] * 8 + ["current", "stale"])
PAID = st.sampled_from([True, True, False])
REFUND_FAMILY = (
    RefundUnpaidOrderError,
    RefundUnshippedError,
    RefundBeforeChargeError,
    OverRefundError,
    NothingToRefundError,
)
CANCEL_QUANTITY_ERRORS = (NothingToCancelError, CancelAfterShipmentError)

line_specs = st.tuples(
    st.integers(1, 4), st.sampled_from(PRICES), st.sampled_from(TAXES), st.sampled_from(SHIPPINGS)
)


def restockable(line: LineModel) -> int:
    return line.cancelled + line.refunded - line.restocked


def tax_share(line: LineModel, quantity: int) -> Decimal:
    """The line's tax for `quantity` refunded units: pro rata in cents, the last units take the rest."""
    left = line.line.tax - line.refunded_tax
    if quantity <= 0:
        return ZERO
    if line.refunded + quantity >= line.line.quantity:
        return left
    share = (line.line.tax * quantity / line.line.quantity).quantize(CENT, rounding=ROUND_HALF_EVEN)
    return min(share, left)


def spread(total: Decimal, room: list[Decimal]) -> list[Decimal]:
    """`total` over slots in order, each up to its room."""
    shares = []
    for capacity in room:
        share = min(total, max(capacity, ZERO))
        shares.append(share)
        total -= share
    return shares


@dataclass
class LineModel:
    """What the test expects of one line, counted from the commands that succeeded."""

    line: OrderLine
    shipped: int = 0
    confirmed: int = 0
    cancelled: int = 0
    pending: int = 0
    refunded: int = 0
    refunded_unshipped: int = 0
    restocked: int = 0
    refunded_item: Decimal = ZERO
    refunded_tax: Decimal = ZERO
    refunded_shipping: Decimal = ZERO

    @property
    def open(self) -> int:
        return self.line.quantity - self.shipped - self.cancelled - self.refunded_unshipped

    @property
    def free(self) -> int:
        """Units that may ship or be cancelled: open and not held by a cancellation dispute."""
        return self.open - self.pending

    @property
    def refunded_amount(self) -> Decimal:
        return self.refunded_item + self.refunded_tax + self.refunded_shipping

    def shipped_refundable(self, charged_only: bool) -> int:
        shipped = self.confirmed if charged_only else self.shipped
        return max(shipped - (self.refunded - self.refunded_unshipped), 0)


@dataclass
class DisputeModel:
    kind: DisputeKind
    lines: dict[str, int]
    restock: bool
    marketplace_dispute_id: str | None
    open: bool = True


@dataclass(frozen=True)
class KeyUse:
    """The first command that ran under one of the seller's idempotency keys (recording events or not)."""

    order_id: UUID
    command: str | None  # the request's name (None: the dispatcher's outcome, sent without a request)
    version: int
    events: tuple[str, ...]
    digest: str | None


@dataclass
class OrderModel:
    """What the test expects of one order; changed only after a command succeeded."""

    order_id: UUID
    account: AccountDetails
    imported: ImportedOrder
    paid: bool
    lines: dict[str, LineModel]
    version: int = 1
    disputes: dict[UUID, DisputeModel] = field(default_factory=dict)
    shipments: dict[UUID, dict[str, int]] = field(default_factory=dict)
    # What the ledger may report on to a marketplace, by action: the ids its commands made.
    references: dict[SyncAction, set[str]] = field(default_factory=dict)
    acknowledged: set[tuple[SyncAction, str]] = field(default_factory=set)
    sync_outcomes: int = 0

    def made(self, action: SyncAction, reference: UUID) -> None:
        self.references.setdefault(action, set()).add(str(reference))

    def known(self, action: SyncAction) -> set[str]:
        if action is SyncAction.ACKNOWLEDGE:
            return {str(self.order_id)}
        return self.references.get(action, set())

    @property
    def marketplace(self) -> Marketplace:
        return Marketplace(self.account.marketplace)

    @property
    def charged_only(self) -> bool:
        """Amazon charges the buyer on the shipment confirmation, unless a third party manages the order."""
        return self.marketplace is Marketplace.AMAZON and self.account.fulfillment_managed

    @property
    def has_open_cancellation_dispute(self) -> bool:
        return any(d.open and d.kind is DisputeKind.CANCELLATION for d in self.disputes.values())


@dataclass(frozen=True)
class Outcome:
    """What the model says a command does: refused (with one of these errors) or records these events."""

    refusals: tuple[type[LedgerError], ...] = ()
    events: tuple[str, ...] = ()


class OrderLedgerMachine(RuleBasedStateMachine):
    """Random commands on a few orders of one seller, checked against a model after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.app = Ledger(clock=lambda: NOW)
        self.accounts: dict[tuple[Marketplace, bool, bool], AccountDetails] = {}
        self.models: dict[str, OrderModel] = {}
        self.keys: dict[str, KeyUse] = {}  # a key is the seller's, across orders and commands

    # ------------------------------------------------------------------------------- helpers

    def ctx(
        self, key: str | None = None, effective_at: datetime | None = None, digest: str | None = None
    ) -> Context:
        return Context(actor="tester", idempotency_key=key, effective_at=effective_at, request_digest=digest)

    def account(self, marketplace: Marketplace, fulfillment_managed: bool, restock: bool) -> AccountDetails:
        wanted = (marketplace, fulfillment_managed, restock)
        if wanted not in self.accounts:
            self.accounts[wanted] = self.app.register_account(
                self.ctx(),
                seller=SELLER,
                marketplace=marketplace,
                name=f"{marketplace.value}-{'fm' if fulfillment_managed else 'tpm'}-{restock}",
                fulfillment_managed=fulfillment_managed,
                restock_in_ledger=restock,
            )
        return self.accounts[wanted]

    def pick(self, data: st.DataObject, prefer: Any = None) -> OrderModel:
        """An order, among those `prefer` likes if there are some: fewer steps go to commands bound to fail."""
        keys = sorted(k for k, m in self.models.items() if prefer is None or prefer(m)) or sorted(self.models)
        return self.models[data.draw(st.sampled_from(keys), label="order")]

    def any_order(self, predicate: Any) -> bool:
        return any(predicate(m) for m in self.models.values())

    def recorded_position(self) -> int | None:
        return self.app.recorder.max_notification_id()

    def execute(
        self,
        model: OrderModel,
        outcome: Outcome,
        command: Any,
        *,
        request: tuple[Any, ...] | None,
        key: str | None = None,
        expected: str | None = None,
        effective_at: datetime | None = None,
    ) -> CommandResult | None:
        """Run `command(ctx, expected_version)` and check it against `outcome`; the result if the command ran.

        `request` describes the command; its digest goes with an idempotency key (None: send no digest, as
        the dispatcher does). A reused key replays the first command if it is the same command on the same
        order with the same digest, and is refused otherwise; a stale expected version is refused after the key
        is looked at and before the rules are. A refused command records nothing at all, nor uses its key.
        """
        position = self.recorded_position()
        digest = (
            None if key is None or request is None else hashlib.sha256(repr(request).encode()).hexdigest()
        )
        ctx = self.ctx(key, effective_at, digest)
        expected_version = {None: None, "current": model.version, "stale": model.version - 1}[expected]
        command_name = None if request is None else request[0]
        if key is not None and key in self.keys:
            first = self.keys[key]
            if (first.order_id, first.command, first.digest) != (model.order_id, command_name, digest):
                with pytest.raises(IdempotencyKeyReusedError):
                    command(ctx, expected_version)
                assert self.recorded_position() == position
                return None
            result = command(ctx, expected_version)
            assert result.replayed, "a reused idempotency key must replay, not run the command again"
            assert (result.version, result.events) == (first.version, first.events)
            assert self.recorded_position() == position
            return None
        if expected == "stale":
            with pytest.raises(VersionMismatchError):
                command(ctx, expected_version)
            assert self.recorded_position() == position
            return None
        refusal: LedgerError | None = None
        try:
            result = command(ctx, expected_version)
        except LedgerError as error:
            refusal = error
        if refusal is not None:
            assert outcome.refusals, f"the rules allow this command, yet it was refused: {refusal!r}"
            assert isinstance(refusal, outcome.refusals), f"{refusal!r} is none of {outcome.refusals}"
            assert self.recorded_position() == position, "a refused command recorded something"
            assert self.app.get_order(model.order_id).version == model.version
            return None
        assert not outcome.refusals, f"accepted, but the rules refuse it with one of {outcome.refusals}"
        assert not result.replayed
        assert result.events == outcome.events
        assert result.version == model.version + len(result.events)
        model.version = result.version
        if key is not None:
            self.keys[key] = KeyUse(model.order_id, command_name, result.version, result.events, digest)
        return result

    # --------------------------------------------------------------------------------- imports

    def _import(
        self,
        marketplace: Marketplace,
        paid: bool,
        fulfillment_managed: bool,
        restock: bool,
        specs: list[tuple[int, Decimal, Decimal, Decimal]],
    ) -> None:
        account = self.account(marketplace, fulfillment_managed, restock)
        marketplace_order_id = f"MO-{len(self.models) + 1}"
        lines = tuple(
            OrderLine(f"L{i}", f"SKU-{i}", quantity, price, tax, shipping)
            for i, (quantity, price, tax, shipping) in enumerate(specs, start=1)
        )
        imported = ImportedOrder(
            marketplace_order_id=marketplace_order_id,
            purchased_at=PURCHASED_AT,
            currency="USD",
            payment_status=PaymentStatus.PAID if paid else PaymentStatus.PENDING,
            buyer=Buyer("Ada Buyer", "ada@example.com"),
            lines=lines,
            paid_at=PURCHASED_AT if paid else None,
        )
        result = self.app.import_order(self.ctx(), account.account_id, imported)
        assert result.created
        assert result.events == ("Imported",)
        assert result.version == 1
        self.models[marketplace_order_id] = OrderModel(
            order_id=result.order_id,
            account=account,
            imported=imported,
            paid=paid,
            lines={line.line_id: LineModel(line) for line in lines},
        )

    @initialize(
        marketplace=st.sampled_from(Marketplace),
        paid=PAID,
        fulfillment_managed=st.booleans(),
        restock=st.booleans(),
        specs=st.lists(line_specs, min_size=1, max_size=3),
    )
    def first_order(
        self,
        marketplace: Marketplace,
        paid: bool,
        fulfillment_managed: bool,
        restock: bool,
        specs: list[tuple[int, Decimal, Decimal, Decimal]],
    ) -> None:
        self._import(marketplace, paid, fulfillment_managed, restock, specs)

    @precondition(lambda self: len(self.models) < MAX_ORDERS)
    @rule(
        marketplace=st.sampled_from(Marketplace),
        paid=PAID,
        fulfillment_managed=st.booleans(),
        restock=st.booleans(),
        specs=st.lists(line_specs, min_size=1, max_size=3),
    )
    def another_order(
        self,
        marketplace: Marketplace,
        paid: bool,
        fulfillment_managed: bool,
        restock: bool,
        specs: list[tuple[int, Decimal, Decimal, Decimal]],
    ) -> None:
        self._import(marketplace, paid, fulfillment_managed, restock, specs)

    @rule(
        data=st.data(),
        payment=st.sampled_from(PaymentStatus),
        change=st.sampled_from([None, None, "quantity", "buyer", "purchased_at", "account"]),
    )
    def reimport(self, data: st.DataObject, payment: PaymentStatus, change: str | None) -> None:
        model = self.pick(data)
        sent = replace(model.imported, payment_status=payment, paid_at=None)
        account_id = model.account.account_id
        if change == "quantity":
            first = sent.lines[0]
            sent = replace(sent, lines=(replace(first, quantity=first.quantity + 1), *sent.lines[1:]))
        elif change == "buyer":
            sent = replace(sent, buyer=Buyer("Someone Else", "else@example.com"))
        elif change == "purchased_at":
            sent = replace(sent, purchased_at=PURCHASED_AT - timedelta(days=1))
        elif change == "account":  # the same marketplace order, sent through the seller's other account
            other = self.account(
                model.marketplace, not model.account.fulfillment_managed, model.account.restock_in_ledger
            )
            account_id = other.account_id
        position = self.recorded_position()
        if change is not None:
            with pytest.raises(ImportConflictError):
                self.app.import_order(self.ctx(), account_id, sent)
            assert self.recorded_position() == position
            return
        result = self.app.import_order(self.ctx(), account_id, sent)
        assert not result.created
        assert result.order_id == model.order_id
        clears = payment is PaymentStatus.PAID and not model.paid
        assert result.events == (("PaymentCleared",) if clears else ())
        assert result.version == model.version + len(result.events)
        model.version = result.version
        model.paid = model.paid or clears

    @precondition(lambda self: self.any_order(lambda m: not m.paid))
    @rule(data=st.data(), paid_at=st.sampled_from([None, NOW - timedelta(hours=1)]), key=KEYS)
    def record_payment(self, data: st.DataObject, paid_at: datetime | None, key: str | None) -> None:
        model = self.pick(data)
        outcome = Outcome(events=() if model.paid else ("PaymentCleared",))
        result = self.execute(
            model,
            outcome,
            lambda ctx, _: self.app.record_payment(ctx, model.order_id, paid_at=paid_at),
            request=("record_payment", paid_at),
            key=key,
        )
        if result is not None:
            model.paid = True

    # ------------------------------------------------------------------------------- commands

    def draw_lines(
        self, data: st.DataObject, model: OrderModel, room: Any = lambda line: line.free
    ) -> dict[str, int] | None:
        """None (the command's default: every unit it can take) or some lines, each with 1 unit up to one more
        than `room(line)` allows, so that both sides of each limit come up often."""
        chosen = data.draw(
            st.sampled_from([True, False, False, False]).flatmap(
                lambda default: st.none() if default else self.some_lines(model, room)
            ),
            label="lines",
        )
        return None if chosen is None else dict(chosen)

    @staticmethod
    def some_lines(model: OrderModel, room: Any) -> st.SearchStrategy[list[tuple[str, int]]]:
        return st.lists(
            st.sampled_from(sorted(model.lines)).flatmap(
                lambda lid: st.tuples(st.just(lid), st.integers(1, max(room(model.lines[lid]), 0) + 1))
            ),
            min_size=1,
            max_size=len(model.lines),
            unique_by=lambda item: item[0],
        )

    @rule(
        data=st.data(),
        tracking=st.sampled_from(TRACKING),
        ship_time=st.sampled_from(SHIP_TIMES),
        key=KEYS,
        expected=EXPECTED_VERSIONS,
    )
    def ship(
        self,
        data: st.DataObject,
        tracking: tuple[Carrier, str, bool],
        ship_time: tuple[datetime | None, bool],
        key: str | None,
        expected: str | None,
    ) -> None:
        model = self.pick(data)
        requested = self.draw_lines(data, model)
        carrier, number, valid_number = tracking
        shipped_at, valid_time = ship_time
        items = requested or {lid: s.free for lid, s in model.lines.items() if s.free > 0}
        refusals: list[type[LedgerError]] = []
        if not valid_number:
            refusals.append(InvalidTrackingNumberError)
        if not model.paid:
            refusals.append(ShipUnpaidOrderError)
        if model.has_open_cancellation_dispute:
            refusals.append(ShipDuringCancellationDisputeError)
        if not valid_time:
            refusals.append(InvalidShipTimeError)
        if requested is None and not items:
            refusals.append(NothingToShipError)
        if requested is not None and any(q > model.lines[lid].free for lid, q in requested.items()):
            refusals.append(OverShipmentError)
        lines = None if requested is None else tuple(LineQuantity(k, q) for k, q in requested.items())
        result = self.execute(
            model,
            Outcome(tuple(refusals), ("Shipped",)),
            lambda ctx, version: self.app.ship(
                ctx,
                model.order_id,
                carrier=carrier,
                tracking_number=number,
                shipped_at=shipped_at,
                lines=lines,
                expected_version=version,
            ),
            request=("ship", carrier, number, shipped_at, lines),
            key=key,
            expected=expected,
        )
        if result is None:
            return
        for lid, quantity in items.items():
            model.lines[lid].shipped += quantity
        model.shipments[result.ids["shipment_id"]] = dict(items)
        model.made(SyncAction.SHIP, result.ids["shipment_id"])

    @rule(
        data=st.data(),
        requester=st.sampled_from(Requester),
        requested_at=st.sampled_from(CANCEL_TIMES),
        restock=st.sampled_from([None, True, False]),
        reason=st.sampled_from(CancelReason),
        key=KEYS,
        expected=EXPECTED_VERSIONS,
    )
    def cancel(
        self,
        data: st.DataObject,
        requester: Requester,
        requested_at: datetime | None,
        restock: bool | None,
        reason: CancelReason,
        key: str | None,
        expected: str | None,
    ) -> None:
        model = self.pick(data, lambda m: any(line.free for line in m.lines.values()))
        if requester is Requester.MARKETPLACE and any(s.shipped > s.confirmed for s in model.lines.values()):
            return  # the marketplace's word against unacknowledged shipments: test_marketplace_word.py
        if requester is Requester.MARKETPLACE and any(s.pending for s in model.lines.values()):
            # The marketplace's word on units a seller's eBay cancellation request holds: the domain records
            # it (the marketplace decides); what that does to the open request is not modelled here yet.
            return
        requested = self.draw_lines(data, model)
        whole = {lid: s.free for lid, s in model.lines.items() if s.free > 0}
        items = whole if requested is None else requested
        refusals: list[type[LedgerError]] = []
        if not items or any(q > model.lines[lid].free for lid, q in items.items()):
            refusals.extend(CANCEL_QUANTITY_ERRORS)
        shipped_any = any(s.shipped for s in model.lines.values())
        by_seller = requester is Requester.SELLER
        if by_seller and model.marketplace is Marketplace.JET and (shipped_any or items != whole):
            refusals.append(PartialCancellationError)
        if by_seller and model.marketplace is Marketplace.EBAY and items != whole:
            refusals.append(PartialCancellationError)
        in_window = (
            model.marketplace is Marketplace.AMAZON
            and (requested_at or NOW) - PURCHASED_AT <= AMAZON_BUYER_CANCEL_WINDOW
        )
        restocks = model.account.restock_in_ledger if restock is None else restock
        if requester is Requester.BUYER and not in_window:
            effect = "request"
            events: tuple[str, ...] = ("CancellationRequested",)
        elif (
            by_seller
            and model.marketplace is Marketplace.EBAY
            and model.paid
            and model.account.fulfillment_managed  # a Third Party Managed order cancels at once
        ):
            effect = "dispute"
            events = ("DisputeOpened",)
        else:
            effect = "cancel"
            events = ("Cancelled", "Restocked") if restocks else ("Cancelled",)
        lines = None if requested is None else tuple(LineQuantity(k, q) for k, q in requested.items())
        result = self.execute(
            model,
            Outcome(tuple(refusals), events),
            lambda ctx, version: self.app.cancel(
                ctx,
                model.order_id,
                reason=reason,
                lines=lines,
                restock_in_ledger=restock,
                requested_by=requester,
                expected_version=version,
            ),
            request=("cancel", requester, requested_at, restock, reason, lines),
            effective_at=requested_at,
            key=key,
            expected=expected,
        )
        if result is None:
            return
        if effect == "dispute":
            model.disputes[result.ids["dispute_id"]] = DisputeModel(
                DisputeKind.CANCELLATION, dict(items), restocks, None
            )
            model.made(SyncAction.OPEN_DISPUTE, result.ids["dispute_id"])
            for lid, quantity in items.items():
                model.lines[lid].pending += quantity
        elif effect == "cancel":
            model.made(SyncAction.CANCEL, result.ids["cancellation_id"])
            if restocks:
                model.made(SyncAction.RESTOCK, result.ids["restock_id"])
            for lid, quantity in items.items():
                model.lines[lid].cancelled += quantity
                if restocks:
                    model.lines[lid].restocked += quantity

    @rule(
        data=st.data(),
        reason=st.sampled_from(RefundReason),
        shipping_amount=st.sampled_from([Decimal(a) for a in ("0", "0", "0.50", "2.00", "4.00")]),
        tax_amount=st.sampled_from([Decimal(a) for a in ("0", "0", "0.10", "1.00")]),
        key=KEYS,
        expected=EXPECTED_VERSIONS,
    )
    def refund(
        self,
        data: st.DataObject,
        reason: RefundReason,
        shipping_amount: Decimal,
        tax_amount: Decimal,
        key: str | None,
        expected: str | None,
    ) -> None:
        model = self.pick(data, lambda m: m.paid)
        chosen = data.draw(
            st.sampled_from([True, False, False]).flatmap(
                lambda whole: st.none() if whole else self.refund_lines(model)
            ),
            label="refund lines",
        )
        # No lines: the amounts alone if any is given, else everything refundable.
        whole = chosen is None and not (shipping_amount or tax_amount)
        requests = (
            [RefundRequestLine(lid, q, amount) for lid, q, amount in chosen]
            if chosen is not None
            else self.whole_refund(model)
            if whole
            else []
        )
        refusals, drafts = self.refund_outcome(model, requests, shipping_amount, tax_amount, whole=whole)
        result = self.execute(
            model,
            Outcome(tuple(refusals), ("Refunded",)),
            lambda ctx, version: self.app.refund(
                ctx,
                model.order_id,
                reason=reason,
                lines=None if chosen is None else tuple(requests),
                shipping_amount=shipping_amount,
                tax_amount=tax_amount,
                expected_version=version,
            ),
            request=("refund", reason, chosen, shipping_amount, tax_amount),
            key=key,
            expected=expected,
        )
        if result is None:
            return
        refund = next(
            r for r in self.app.get_order(model.order_id).refunds if r.refund_id == result.ids["refund_id"]
        )
        got = {
            line.line_id: (line.quantity, line.item_amount, line.tax_amount, line.shipping_amount)
            for line in refund.lines
        }
        assert got == drafts, "the refund gives back other units or amounts than the rules say"
        assert refund.total == sum((sum(parts[1:]) for parts in drafts.values()), ZERO)
        model.made(SyncAction.REFUND, refund.refund_id)
        for lid, (quantity, item, tax, shipping) in drafts.items():
            line = model.lines[lid]
            line.refunded_unshipped += max(quantity - line.shipped_refundable(charged_only=False), 0)
            line.refunded += quantity
            line.refunded_item += item
            line.refunded_tax += tax
            line.refunded_shipping += shipping

    def refund_lines(self, model: OrderModel) -> st.SearchStrategy[list[tuple[str, int, Decimal | None]]]:
        """Some lines, each with 0 up to one more unit than may be refunded, and now and then an amount."""

        def line(lid: str) -> st.SearchStrategy[tuple[str, int, Decimal | None]]:
            state = model.lines[lid]
            room = state.shipped_refundable(model.charged_only)
            if model.marketplace is Marketplace.EBAY:
                room += state.free
            amounts = st.sampled_from([None, None, None, *REFUND_AMOUNTS])
            return st.tuples(st.just(lid), st.integers(0, room + 1), amounts).filter(
                lambda item: item[1] > 0 or item[2] is not None
            )

        return st.lists(
            st.sampled_from(sorted(model.lines)).flatmap(line),
            min_size=1,
            max_size=len(model.lines),
            unique_by=lambda item: item[0],
        )

    @staticmethod
    def was_charged(model: OrderModel, line: LineModel) -> bool:
        """eBay charges at purchase; Amazon (fulfillment-managed) on the shipment confirmation; others on shipment."""
        if model.marketplace is Marketplace.EBAY:
            return True
        return bool(line.confirmed if model.charged_only else line.shipped)

    def whole_refund(self, model: OrderModel) -> list[RefundRequestLine]:
        """A refund without lines: every charged unit, and on eBay the unshipped ones too."""
        requests = []
        for lid, line in model.lines.items():
            quantity = line.shipped_refundable(model.charged_only)
            if model.marketplace is Marketplace.EBAY:
                quantity += line.free
            if quantity:
                requests.append(RefundRequestLine(lid, quantity))
        return requests

    def refund_outcome(
        self,
        model: OrderModel,
        requests: list[RefundRequestLine],
        shipping_amount: Decimal,
        tax_amount: Decimal,
        *,
        whole: bool,
    ) -> tuple[list[type[LedgerError]], dict[str, tuple[int, Decimal, Decimal, Decimal]]]:
        """Whether the rules refuse the refund, and what it gives back per line otherwise."""
        refusals: list[type[LedgerError]] = []
        if not model.paid:
            refusals.append(RefundUnpaidOrderError)
        if (
            whole
            and not requests
            and model.charged_only
            and any(line.shipped_refundable(charged_only=False) for line in model.lines.values())
        ):
            refusals.append(RefundBeforeChargeError)  # Amazon: shipped, but no confirmation charged the buyer
        ebay = model.marketplace is Marketplace.EBAY
        drafts: dict[str, list[Any]] = {}
        for request in requests:
            line = model.lines[request.line_id]
            if request.quantity == 0:
                if not self.was_charged(model, line):
                    refusals.append(RefundBeforeChargeError if line.shipped else RefundUnshippedError)
            else:
                charged_units = line.shipped_refundable(model.charged_only)
                allowed = request.quantity <= charged_units or (
                    ebay and request.quantity - charged_units <= line.free
                )
                if not allowed:
                    refusals.extend(REFUND_FAMILY)
            item = request.amount if request.amount is not None else line.line.unit_price * request.quantity
            if item > line.line.item_total - line.refunded_item:
                refusals.append(OverRefundError)
            tax = tax_share(line, request.quantity) if request.amount is None else ZERO
            drafts[request.line_id] = [request.quantity, item, tax, ZERO]
        for component, amount in ((3, shipping_amount), (2, tax_amount)):
            if not amount:
                continue
            # Order-level shipping and tax go back only on lines the buyer was charged for.
            room = []
            for lid, line in model.lines.items():
                left = (
                    line.line.shipping - line.refunded_shipping
                    if component == 3
                    else line.line.tax - line.refunded_tax
                )
                left -= drafts[lid][component] if lid in drafts else ZERO
                room.append(left if self.was_charged(model, line) else ZERO)
            if amount > sum(room):
                refusals.extend((OverRefundError, RefundBeforeChargeError))
                continue
            for lid, share in zip(model.lines, spread(amount, room), strict=True):
                if share:
                    drafts.setdefault(lid, [0, ZERO, ZERO, ZERO])[component] += share
        result = {
            lid: (draft[0], draft[1], draft[2], draft[3])
            for lid, draft in drafts.items()
            if draft[0] or sum(draft[1:])
        }
        if not result:
            refusals.append(NothingToRefundError)
        return refusals, result

    @rule(
        data=st.data(),
        reason=st.sampled_from(["item not received", "not as described", "damaged", "late", "   "]),
        marketplace_dispute_id=st.sampled_from([None, "CASE-1", "CASE-2"]),
        key=KEYS,
        expected=EXPECTED_VERSIONS,
    )
    def open_dispute(
        self,
        data: st.DataObject,
        reason: str,
        marketplace_dispute_id: str | None,
        key: str | None,
        expected: str | None,
    ) -> None:
        model = self.pick(data)
        known = marketplace_dispute_id is not None and any(
            d.marketplace_dispute_id == marketplace_dispute_id for d in model.disputes.values()
        )
        outcome = Outcome(
            (ReasonRequiredError,) if not reason.strip() else (),
            () if known else ("DisputeOpened",),
        )
        result = self.execute(
            model,
            outcome,
            lambda ctx, version: self.app.open_dispute(
                ctx,
                model.order_id,
                reason=reason,
                marketplace_dispute_id=marketplace_dispute_id,
                expected_version=version,
            ),
            request=("open_dispute", reason, marketplace_dispute_id),
            key=key,
            expected=expected,
        )
        if result is not None and not known:
            model.disputes[result.ids["dispute_id"]] = DisputeModel(
                DisputeKind.CLAIM, {}, False, marketplace_dispute_id
            )
            model.made(SyncAction.OPEN_DISPUTE, result.ids["dispute_id"])

    @precondition(lambda self: self.any_order(lambda m: m.disputes))
    @rule(data=st.data(), outcome=st.sampled_from(DisputeOutcome), key=KEYS, expected=EXPECTED_VERSIONS)
    def close_dispute(
        self, data: st.DataObject, outcome: DisputeOutcome, key: str | None, expected: str | None
    ) -> None:
        model = self.pick(data, lambda m: any(d.open for d in m.disputes.values()))
        dispute_id = data.draw(st.sampled_from([*model.disputes] * 3 + [UNKNOWN_ID]), label="dispute")
        dispute = model.disputes.get(dispute_id)
        cancels = (
            dispute is not None
            and dispute.kind is DisputeKind.CANCELLATION
            and outcome is DisputeOutcome.ACCEPTED
        )
        events: tuple[str, ...] = ("DisputeClosed",)
        if cancels:
            assert dispute is not None
            events += ("Cancelled", "Restocked") if dispute.restock else ("Cancelled",)
        refusals: tuple[type[LedgerError], ...] = ()
        if dispute is None:
            refusals = (DisputeNotFoundError,)
        elif not dispute.open:
            refusals = (DisputeAlreadyClosedError,)
        result = self.execute(
            model,
            Outcome(refusals, events),
            lambda ctx, version: self.app.close_dispute(
                ctx,
                model.order_id,
                dispute_id=dispute_id,
                outcome=outcome,
                expected_version=version,
            ),
            request=("close_dispute", dispute_id, outcome),
            key=key,
            expected=expected,
        )
        if result is None:
            return
        assert dispute is not None
        dispute.open = False
        model.made(SyncAction.CLOSE_DISPUTE, dispute_id)
        if cancels:
            model.made(SyncAction.CANCEL, result.ids["cancellation_id"])
            if dispute.restock:
                model.made(SyncAction.RESTOCK, result.ids["restock_id"])
        for lid, quantity in dispute.lines.items():
            line = model.lines[lid]
            line.pending -= quantity
            if cancels:
                line.cancelled += quantity
                if dispute.restock:
                    line.restocked += quantity

    @precondition(lambda self: self.any_order(lambda m: any(restockable(line) for line in m.lines.values())))
    @rule(data=st.data(), key=KEYS, expected=EXPECTED_VERSIONS)
    def restock(self, data: st.DataObject, key: str | None, expected: str | None) -> None:
        model = self.pick(data, lambda m: any(restockable(line) for line in m.lines.values()))
        requested = self.draw_lines(data, model, restockable) or {sorted(model.lines)[0]: 1}
        over = any(q > restockable(model.lines[lid]) for lid, q in requested.items())
        result = self.execute(
            model,
            Outcome((OverRestockError,) if over else (), ("Restocked",)),
            lambda ctx, version: self.app.restock(
                ctx,
                model.order_id,
                lines=tuple(LineQuantity(k, q) for k, q in requested.items()),
                expected_version=version,
            ),
            request=("restock", tuple(requested.items())),
            key=key,
            expected=expected,
        )
        if result is not None:
            model.made(SyncAction.RESTOCK, result.ids["restock_id"])
            for lid, quantity in requested.items():
                model.lines[lid].restocked += quantity

    @rule(data=st.data(), accepted=st.sampled_from([True, True, False]), key=KEYS)
    def marketplace_answers(self, data: st.DataObject, accepted: bool, key: str | None) -> None:
        """The dispatcher records what the marketplace said about a change the ledger sent it; a shipment
        confirmation it accepted makes the shipped units charged (Amazon)."""
        model = self.pick(
            data, lambda m: m.shipments.keys() - {UUID(r) for a, r in m.acknowledged if a == "ship"}
        )
        actions = [a for a in SyncAction if model.known(a)]
        action = data.draw(
            st.sampled_from(
                [SyncAction.SHIP] * 4 * (SyncAction.SHIP in actions) + actions * 4 + [*SyncAction]
            ),
            label="action",
        )
        reference = data.draw(
            st.sampled_from(sorted(model.known(action)) * 3 + [str(UNKNOWN_ID)]), label="reference"
        )
        known = reference in model.known(action)
        if accepted:
            events: tuple[str, ...] = (
                () if (action, reference) in model.acknowledged else ("MarketplaceAcknowledged",)
            )
        else:
            events = ("MarketplaceRejected",)
        result = self.execute(
            model,
            Outcome(() if known else (UnknownSyncReferenceError,), events),
            lambda ctx, _: self.app.record_sync_outcome(
                ctx,
                model.order_id,
                action=action,
                reference=reference,
                accepted=accepted,
                marketplace_reference="MKT-1" if accepted else None,
                error_code="" if accepted else "InvalidRequest",
                message="" if accepted else "the marketplace refused it",
                permanent=not accepted,
            ),
            request=None,  # the dispatcher sends no request digest
            key=key,
        )
        if result is None or not result.events:
            return
        model.sync_outcomes += 1
        if accepted:
            model.acknowledged.add((action, reference))
            if action is SyncAction.SHIP:
                for lid, quantity in model.shipments[UUID(reference)].items():
                    model.lines[lid].confirmed += quantity

    # ----------------------------------------------------------------------------- invariants

    @invariant()
    def orders_keep_their_invariants(self) -> None:
        for model in self.models.values():
            details = self.app.get_order(model.order_id)
            check_against_model(details, model)
            check_invariants(details, model)
            self.check_history(model, details)

    def check_history(self, model: OrderModel, details: OrderDetails) -> None:
        history = self.app.order_history(model.order_id)
        events = list(self.app.events.get(model.order_id))
        assert details.version == len(history) == len(events)
        assert [entry.version for entry in history] == list(range(1, len(history) + 1))
        previous = GENESIS_HASH
        for entry, event in zip(history, events, strict=True):
            assert entry.prev_hash == previous, f"the chain breaks at version {entry.version}"
            assert event.prev_hash == previous
            assert chain_hash(event.prev_hash, event) == event.hash == entry.hash
            previous = entry.hash


def check_against_model(details: OrderDetails, model: OrderModel) -> None:
    """The ledger's counts are the model's: nothing recorded that the model did not expect, nothing lost."""
    assert details.version == model.version
    assert details.payment_status == ("paid" if model.paid else "pending")
    assert details.third_party_managed is not model.account.fulfillment_managed
    assert [line.line_id for line in details.lines] == list(model.lines)
    for line in details.lines:
        expected = model.lines[line.line_id]
        assert (line.shipped, line.cancelled, line.pending_cancel) == (
            expected.shipped,
            expected.cancelled,
            expected.pending,
        ), f"line {line.line_id}"
        assert (line.refunded_quantity, line.restocked) == (expected.refunded, expected.restocked)
        assert line.refunded_amount == expected.refunded_amount
    assert {s.shipment_id for s in details.shipments} == set(model.shipments)
    assert {str(s.shipment_id) for s in details.shipments if s.confirmed} == {
        reference for action, reference in model.acknowledged if action is SyncAction.SHIP
    }
    assert {str(c.cancellation_id) for c in details.cancellations} == model.known(SyncAction.CANCEL)
    assert {str(r.refund_id) for r in details.refunds} == model.known(SyncAction.REFUND)
    assert {str(d.dispute_id) for d in details.disputes} == model.known(SyncAction.OPEN_DISPUTE)
    assert {(o.action, o.reference) for o in details.sync_answers if o.accepted} == model.acknowledged
    assert {d.dispute_id for d in details.disputes if d.is_open} == {
        k for k, d in model.disputes.items() if d.open
    }
    assert len(details.sync_answers) == model.sync_outcomes


def check_invariants(details: OrderDetails, model: OrderModel) -> None:
    """What holds for every order, whatever was done to it."""
    refunded_unshipped = {lid: line.refunded_unshipped for lid, line in model.lines.items()}
    shipped_by_line = sum_lines(s.lines for s in details.shipments)
    cancelled_by_line = sum_lines(c.lines for c in details.cancellations)
    open_units = 0
    for line in details.lines:
        unshipped_refunds = refunded_unshipped[line.line_id]
        if details.marketplace != Marketplace.EBAY:
            assert unshipped_refunds == 0, "only eBay refunds units before they ship"
        assert line.shipped + line.cancelled + line.pending_cancel + unshipped_refunds <= line.quantity
        assert line.refunded_quantity <= line.shipped + unshipped_refunds
        assert line.restocked <= line.cancelled + line.refunded_quantity
        open_here = line.quantity - line.shipped - line.cancelled - unshipped_refunds
        assert line.requested_cancel <= open_here, (
            f"line {line.line_id}: a buyer's cancellation request holds {line.requested_cancel} unit(s),"
            f" but only {open_here} are still open"
        )
        assert line.shipped == shipped_by_line.get(line.line_id, 0)
        assert line.cancelled == cancelled_by_line.get(line.line_id, 0)
        paid = line.unit_price * line.quantity + line.tax + line.shipping
        assert ZERO <= line.refunded_amount <= paid, f"line {line.line_id} refunded more than was paid"
        parts = [part for refund in details.refunds for part in refund.lines if part.line_id == line.line_id]
        assert sum((p.item_amount for p in parts), ZERO) <= line.unit_price * line.quantity
        assert sum((p.tax_amount for p in parts), ZERO) <= line.tax
        assert sum((p.shipping_amount for p in parts), ZERO) <= line.shipping
        assert sum((p.total for p in parts), ZERO) == line.refunded_amount
        assert sum(p.quantity for p in parts) == line.refunded_quantity
        open_units += line.quantity - line.shipped - line.cancelled - unshipped_refunds
    units = sum(line.quantity for line in details.lines)
    shipped = sum(line.shipped for line in details.lines)
    cancelled = sum(line.cancelled for line in details.lines)
    assert (details.units, details.shipped_units, details.cancelled_units) == (units, shipped, cancelled)
    # Canceled: nothing shipped and nothing left to ship (cancelled, or refunded before shipment on eBay).
    if shipped == 0 and open_units == 0:
        assert details.status == "canceled"
    elif shipped == 0:
        assert details.status == "unshipped"
    elif open_units == 0:
        assert details.status == "shipped"
    else:
        assert details.status == "partially_shipped"
    any_dispute_open = any(d.is_open for d in details.disputes)
    assert details.open == (open_units > 0 or any_dispute_open)
    expected_dispute_status = None if not details.disputes else "open" if any_dispute_open else "closed"
    assert details.dispute_status == expected_dispute_status
    assert details.total == sum((line.total for line in model.imported.lines), ZERO)
    assert details.total == sum(
        (line.unit_price * line.quantity + line.tax + line.shipping for line in details.lines), ZERO
    )
    assert details.refunded_total == sum((r.total for r in details.refunds), ZERO)
    assert details.refunded_total == sum((line.refunded_amount for line in details.lines), ZERO)
    for refund in details.refunds:
        assert refund.total == sum((part.total for part in refund.lines), ZERO)
    assert details.refunded_total <= details.total


def sum_lines(groups: Any) -> dict[str, int]:
    totals: dict[str, int] = {}
    for lines in groups:
        for item in lines:
            totals[item.line_id] = totals.get(item.line_id, 0) + item.quantity
    return totals


class TestOrderInvariants(OrderLedgerMachine.TestCase):  # type: ignore[name-defined]
    """Random command sequences keep every order's invariants, match the model, and refusals record nothing."""

    settings = settings(
        max_examples=150,
        stateful_step_count=30,
        deadline=None,
        report_multiple_bugs=False,  # shrink one failure quickly rather than several slowly
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# ------------------------------------------------------------------------ focused examples


def paid_order(app: Ledger, marketplace: Marketplace, line: OrderLine) -> UUID:
    account = app.register_account(
        Context(actor="tester"), seller=SELLER, marketplace=marketplace, name="shop"
    )
    imported = ImportedOrder(
        marketplace_order_id="MO-1",
        purchased_at=PURCHASED_AT,
        currency="USD",
        payment_status=PaymentStatus.PAID,
        buyer=Buyer("Ada Buyer", "ada@example.com"),
        lines=(line,),
    )
    return app.import_order(Context(actor="tester"), account.account_id, imported).order_id


@pytest.mark.parametrize(("quantity", "tax"), [(3, "1.00"), (4, "0.10"), (3, "0.83"), (2, "0.83")])
def test_refunding_every_unit_one_by_one_gives_back_exactly_the_line_tax(quantity: int, tax: str) -> None:
    """Unit by unit refunds give back each unit's rounded share of tax, and the last one the rest: the
    line's tax exactly, never a cent more or less."""
    app = Ledger(clock=lambda: NOW)
    order_id = paid_order(
        app, Marketplace.WALMART, OrderLine("L1", "SKU-1", quantity, Decimal("5.00"), Decimal(tax))
    )
    app.ship(Context(actor="tester"), order_id, carrier=Carrier.UPS, tracking_number="1Z999AA10123456784")

    for _ in range(quantity):
        app.refund(
            Context(actor="tester"),
            order_id,
            reason=RefundReason.CUSTOMER_RETURN,
            lines=(RefundRequestLine("L1", 1),),
        )

    refunds = app.get_order(order_id).refunds
    shares = [refund.lines[0].tax_amount for refund in refunds]
    assert sum(shares, ZERO) == Decimal(tax)
    assert all(
        share == (Decimal(tax) / quantity).quantize(CENT, rounding=ROUND_HALF_EVEN) for share in shares[:-1]
    )
    assert app.get_order(order_id).refunded_total == Decimal("5.00") * quantity + Decimal(tax)


def test_refunding_unshipped_units_leaves_no_cancellation_request_on_them() -> None:
    """On eBay, once the units a buyer asked to cancel are refunded before shipment (so they never ship),
    no cancellation request is left waiting on them, as after a shipment or a cancellation."""
    app = Ledger(clock=lambda: NOW)
    order_id = paid_order(
        app, Marketplace.EBAY, OrderLine("L1", "SKU-1", 3, Decimal("5.00"), Decimal("1.00"))
    )
    requested = app.cancel(
        Context(actor="tester"),
        order_id,
        reason=CancelReason.BUYER_CANCELLED,
        requested_by=Requester.BUYER,
        lines=(LineQuantity("L1", 2),),
    )
    assert requested.events == ("CancellationRequested",)

    app.refund(
        Context(actor="tester"), order_id, reason=RefundReason.OTHER, lines=(RefundRequestLine("L1", 3),)
    )

    details = app.get_order(order_id)
    assert (details.status, details.open) == ("canceled", False)
    assert details.lines[0].requested_cancel == 0

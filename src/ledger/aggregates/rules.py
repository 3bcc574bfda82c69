"""The checks behind the order's commands: small functions that raise named errors or return what to record."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING
from uuid import UUID

from ledger.aggregates.errors import (
    CancelAfterShipmentError,
    CarrierNameRequiredError,
    InvalidAmountError,
    InvalidInputError,
    InvalidOrderError,
    InvalidQuantityError,
    InvalidShipTimeError,
    InvalidTrackingNumberError,
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
    RuleViolationError,
    ShipDuringCancellationDisputeError,
    ShipmentAcknowledgedError,
    ShipmentNotFoundError,
    ShipmentRefundedError,
    ShipmentVoidedError,
    ShipUnpaidOrderError,
    UnknownLineError,
)
from ledger.aggregates.lines import LineState, allocate
from ledger.aggregates.tracking import is_valid_tracking_number, normalize_tracking_number
from ledger.aggregates.values import (
    ZERO,
    CancelReason,
    Carrier,
    DisputeKind,
    ImportedOrder,
    LineQuantity,
    PaymentStatus,
    RefundLine,
    RefundReason,
    RefundRequestLine,
    id_problem,
    is_currency,
    is_valid_amount,
)

if TYPE_CHECKING:
    from ledger.aggregates.order import Order, Shipment

# Clocks of marketplaces, carriers and our hosts disagree a little; a ship time this far ahead is still "now".
CLOCK_SKEW = timedelta(minutes=5)
MAX_TEXT = 500
MAX_ID = 100


# ---------------------------------------------------------------------------------------- import


def check_storable(value: str, field: str, error: type[InvalidInputError] = InvalidInputError) -> None:
    """Refuse a NUL character: PostgreSQL text cannot hold it, so a read model could never show the event (a
    projection stopped on the first such order, for good)."""
    if "\x00" in value:
        raise error(f"{field} contains a NUL character (U+0000)", field)


def check_identifier(value: str, field: str, error: type[InvalidInputError] = InvalidInputError) -> None:
    """An identifier (already normalized by the value it is part of): 1 to 100 characters, none of them a
    control or format character."""
    problem = id_problem(value)
    if problem is not None:
        raise error(f"{field} {problem}", field)
    if len(value) > MAX_ID:
        raise error(f"{field} is longer than {MAX_ID} characters", field)


def check_imported_order(order: ImportedOrder) -> None:
    """An imported order's rules, checked in a fixed order (the first problem is the one named). Field names are
    made only for a refusal: every import checks every field."""
    check_identifier(order.marketplace_order_id, "marketplace_order_id", InvalidOrderError)
    check_storable(order.buyer.name, "buyer.name", InvalidOrderError)
    check_storable(order.buyer.email, "buyer.email", InvalidOrderError)
    if order.ship_to is not None:
        for name, value in vars(order.ship_to).items():
            if "\x00" in value:
                check_storable(value, f"ship_to.{name}", InvalidOrderError)
    if order.purchased_at.tzinfo is None:
        raise InvalidOrderError("purchased_at needs a time zone", "purchased_at")
    if order.paid_at is not None and order.paid_at.tzinfo is None:
        raise InvalidOrderError("paid_at needs a time zone", "paid_at")
    if order.ship_by is not None and order.ship_by.tzinfo is None:
        raise InvalidOrderError("ship_by needs a time zone", "ship_by")
    if not is_currency(order.currency):
        raise InvalidOrderError(f"currency {order.currency!r} is not an active ISO 4217 code", "currency")
    if not order.lines:
        raise InvalidOrderError("an order needs at least one line", "lines")
    seen: set[str] = set()
    for index, line in enumerate(order.lines):
        if id_problem(line.line_id) is not None or len(line.line_id) > MAX_ID:
            check_identifier(line.line_id, f"lines[{index}].line_id", InvalidOrderError)
        if id_problem(line.sku) is not None or len(line.sku) > MAX_ID:
            check_identifier(line.sku, f"lines[{index}].sku", InvalidOrderError)
        if line.line_id in seen:
            raise InvalidOrderError(f"line_id {line.line_id!r} is repeated", f"lines[{index}].line_id")
        seen.add(line.line_id)
        if "\x00" in line.title:
            check_storable(line.title, f"lines[{index}].title", InvalidOrderError)
        if line.quantity < 1:
            raise InvalidOrderError("quantity must be at least 1", f"lines[{index}].quantity")
        for name, amount in (("unit_price", line.unit_price), ("tax", line.tax), ("shipping", line.shipping)):
            if not is_valid_amount(amount, order.currency):
                msg = f"{name} {amount} is not a valid {order.currency} amount"
                raise InvalidOrderError(msg, f"lines[{index}].{name}")


def import_differences(before: ImportedOrder, after: ImportedOrder) -> list[str]:
    """Fields on which a re-sent order contradicts the imported one (payment progress is not one)."""
    fields = ("purchased_at", "currency", "buyer", "lines", "ship_to")
    return [name for name in fields if getattr(before, name) != getattr(after, name)]


# -------------------------------------------------------------------------------------- shipping


def check_tracking_number(carrier: Carrier, tracking_number: str) -> str:
    number = normalize_tracking_number(tracking_number)
    if not number:
        raise InvalidTrackingNumberError("a shipment needs a tracking number", "tracking_number")
    if not is_valid_tracking_number(carrier, number):
        msg = f"{tracking_number!r} is not a valid {carrier.value} tracking number"
        raise InvalidTrackingNumberError(msg, "tracking_number")
    return number


def check_carrier_name(carrier: Carrier, carrier_name: str) -> str:
    """The carrier's name, trimmed: required with `other`, which says nothing of who carries the parcel."""
    name = carrier_name.strip()
    if carrier is Carrier.OTHER and not name:
        raise CarrierNameRequiredError("carrier 'other' needs carrier_name", "carrier_name")
    check_storable(name, "carrier_name")
    return name


@dataclass(frozen=True)
class AllowedActions:
    """What an order allows right now: the changes the checks below would accept (the web page offers only
    these)."""

    close_dispute: bool  # a dispute is open: it may be closed (accepted, rejected, withdrawn)
    restock: bool  # cancelled or returned units are not back in the ledger's stock yet
    ship: bool
    cancel: bool
    refund: bool
    cancel_opens_dispute: (
        bool  # eBay, paid, unshipped: cancelling opens a dispute; refunding is the other way
    )
    whole_order_only: bool  # the marketplace cancels every unshipped unit at once, or nothing (Jet, eBay)
    void: tuple[UUID, ...] = ()  # shipments the marketplace has not acknowledged (or refused): voidable


def allowed_actions(order: Order) -> AllowedActions:
    policy = order.policy
    paid = order.payment_status is PaymentStatus.PAID
    lines = order.lines.values()
    cancellable = sum(state.cancellable for state in lines)
    charged_only = order.charged_only
    refundable = sum(state.shipped_refundable(charged_only) for state in lines)
    try:
        check_can_ship(order)
    except (ShipUnpaidOrderError, ShipDuringCancellationDisputeError):
        can_ship = False
    else:
        can_ship = sum(state.shippable for state in lines) > 0
    return AllowedActions(
        close_dispute=any(dispute.is_open for dispute in order.disputes.values()),
        restock=any(state.restockable > 0 for state in lines),
        ship=can_ship,
        cancel=cancellable > 0 and (policy.cancel_after_shipment or not order.shipped_units),
        refund=refundable > 0 or (policy.refund_paid_unshipped and paid and cancellable > 0),
        cancel_opens_dispute=(
            policy.cancel_paid_opens_dispute and paid and cancellable > 0 and not order.third_party_managed
        ),
        whole_order_only=not policy.partial_cancellation,
        void=tuple(k for k in order.shipments if _voidable(order, k)),
    )


def _voidable(order: Order, shipment_id: UUID) -> bool:
    try:
        check_voidable(order, shipment_id)
    except RuleViolationError:
        return False
    return True


def check_can_ship(order: Order) -> None:
    if order.payment_status is not PaymentStatus.PAID:
        raise ShipUnpaidOrderError(f"order {order.marketplace_order_id} is not paid yet")
    for dispute in order.disputes.values():
        if dispute.is_open and dispute.kind == DisputeKind.CANCELLATION:
            msg = f"order {order.marketplace_order_id} ships nothing until its cancellation dispute closes"
            raise ShipDuringCancellationDisputeError(msg)


def check_ship_time(shipped_at: datetime, purchased_at: datetime, now: datetime) -> None:
    if shipped_at.tzinfo is None:
        raise InvalidShipTimeError("shipped_at needs a time zone", "shipped_at")
    if shipped_at < purchased_at:
        raise InvalidShipTimeError("shipped_at is before the purchase", "shipped_at")
    if shipped_at > now + CLOCK_SKEW:
        raise InvalidShipTimeError("shipped_at is in the future", "shipped_at")


def check_voidable(order: Order, shipment_id: UUID) -> Shipment:
    """A shipment can be voided while the marketplace has not acknowledged it (pending, refused, never sent:
    Third Party Managed, sync off), and while none of its units were refunded as shipped."""
    shipment = order.shipments.get(shipment_id)
    if shipment is None:
        raise ShipmentNotFoundError(f"order {order.marketplace_order_id} has no shipment {shipment_id}")
    if shipment.voided:
        raise ShipmentVoidedError(f"shipment {shipment_id} is voided already")
    if shipment.confirmed:
        msg = (
            f"{order.marketplace.value} acknowledged shipment {shipment_id}: it stands there, so refund or"
            " restock instead of voiding it"
        )
        raise ShipmentAcknowledgedError(msg)
    for item in shipment.lines:
        state = order.lines[item.line_id]
        if state.shipped - item.quantity < state.refunded_quantity - state.refunded_unshipped:
            msg = f"line {item.line_id}: units of shipment {shipment_id} were refunded as shipped"
            raise ShipmentRefundedError(msg)
    return shipment


def check_requested_lines(
    lines: Mapping[str, LineState], requested: Iterable[LineQuantity]
) -> tuple[LineQuantity, ...]:
    """Known lines, each once, each with a positive quantity."""
    seen: set[str] = set()
    items = tuple(requested)
    for index, item in enumerate(items):
        if item.line_id not in lines:
            raise UnknownLineError(f"no line {item.line_id!r} on this order", f"lines[{index}].line_id")
        if item.line_id in seen:
            raise InvalidQuantityError(f"line {item.line_id!r} is listed twice", f"lines[{index}].line_id")
        seen.add(item.line_id)
        if item.quantity < 1:
            raise InvalidQuantityError("quantity must be at least 1", f"lines[{index}].quantity")
    return items


def resolve_shipment_lines(
    lines: Mapping[str, LineState], requested: tuple[LineQuantity, ...] | None
) -> tuple[LineQuantity, ...]:
    if requested is None:
        items = tuple(LineQuantity(k, s.shippable) for k, s in lines.items() if s.shippable > 0)
        if not items:
            raise NothingToShipError("every unit is shipped, cancelled or held by a cancellation")
        return items
    for item in check_requested_lines(lines, requested):
        state = lines[item.line_id]
        if item.quantity > state.shippable:
            msg = f"line {item.line_id} has {state.shippable} unit(s) left to ship, not {item.quantity}"
            raise OverShipmentError(msg)
    return tuple(requested)


# ---------------------------------------------------------------------------------- cancellation


def resolve_cancellation_lines(
    order: Order, requested: tuple[LineQuantity, ...] | None, *, by_seller: bool = True
) -> tuple[LineQuantity, ...]:
    """The units a cancellation takes. A seller's cancellation must be one the marketplace can receive
    (whole orders only on Jet and eBay); a buyer's or the marketplace's is a fact reported as it is."""
    lines = order.lines
    if requested is None:
        items = tuple(LineQuantity(k, s.cancellable) for k, s in lines.items() if s.cancellable > 0)
        if not items:
            if order.shipped_units:
                raise CancelAfterShipmentError("shipped units can only be refunded")
            raise NothingToCancelError("nothing is left to cancel on this order")
    else:
        items = check_requested_lines(lines, requested)
        for item in items:
            state = lines[item.line_id]
            if item.quantity > state.cancellable:
                msg = f"line {item.line_id} has {state.cancellable} unshipped unit(s) to cancel"
                if state.shipped:
                    raise CancelAfterShipmentError(msg + "; shipped units can only be refunded")
                raise NothingToCancelError(msg)
    policy = order.policy
    if not by_seller:
        return items
    if not policy.cancel_after_shipment and order.shipped_units:
        msg = f"{order.marketplace.value} cancels whole orders only, before anything ships: refund instead"
        raise PartialCancellationError(msg)
    if not policy.partial_cancellation:
        whole = {k: s.cancellable for k, s in lines.items() if s.cancellable > 0}
        if {i.line_id: i.quantity for i in items} != whole:
            msg = (
                f"{order.marketplace.value} cancels every unshipped unit of an order at once, never some of"
                f" them: {policy.partial_cancellation_instead}"
            )
            raise PartialCancellationError(msg)
    return items


def check_cancel_reason(reason: str) -> CancelReason:
    try:
        return CancelReason(reason)
    except ValueError:
        allowed = ", ".join(r.value for r in CancelReason)
        raise ReasonRequiredError(f"reason must be one of {allowed}", "reason") from None


def check_refund_reason(reason: str) -> RefundReason:
    try:
        return RefundReason(reason)
    except ValueError:
        allowed = ", ".join(r.value for r in RefundReason)
        raise ReasonRequiredError(f"reason must be one of {allowed}", "reason") from None


def check_reason(reason: str) -> None:
    if not reason.strip():
        raise ReasonRequiredError("a reason is required", "reason")
    if len(reason) > MAX_TEXT:
        raise ReasonRequiredError(f"reason is longer than {MAX_TEXT} characters", "reason")
    check_storable(reason, "reason", ReasonRequiredError)


# ---------------------------------------------------------------------------------------- refund


def resolve_refund(
    order: Order,
    requested: tuple[RefundRequestLine, ...] | None,
    shipping_amount: Decimal,
    tax_amount: Decimal,
    *,
    charged_only: bool | None = None,
) -> tuple[RefundLine, ...]:
    """What a refund gives back per line and component, within what was paid and not yet refunded.

    With `requested` lines: those, plus the shipping and tax amounts if given; with no lines but a shipping or
    tax amount: only those amounts; with neither: everything still refundable. An empty list of lines is
    refused (it names nothing, and must not read as "everything")."""
    if order.payment_status is not PaymentStatus.PAID:
        raise RefundUnpaidOrderError(f"order {order.marketplace_order_id} is not paid: nothing to refund")
    for name, amount in (("shipping_amount", shipping_amount), ("tax_amount", tax_amount)):
        if not is_valid_amount(amount, order.currency):
            raise InvalidAmountError(f"{amount} is not a valid {order.currency} amount", name)
    charged_only = order.charged_only if charged_only is None else charged_only
    if requested is not None and not requested:
        raise InvalidQuantityError("name at least one line to refund, or leave lines out", "lines")
    if requested is None:
        requested = () if shipping_amount or tax_amount else _whole_refund(order, charged_only)
    drafts = [_refund_line(order, index, item, charged_only) for index, item in enumerate(requested)]
    if len({d.line_id for d in drafts}) != len(drafts):
        raise InvalidQuantityError("a line is listed twice", "lines")
    drafts = _add_order_level(order, drafts, "shipping_amount", shipping_amount, charged_only)
    drafts = _add_order_level(order, drafts, "tax_amount", tax_amount, charged_only)
    result = tuple(d for d in drafts if d.quantity or d.total)
    if not result:
        raise NothingToRefundError("the refund gives back nothing")
    return result


def _whole_refund(order: Order, charged_only: bool) -> tuple[RefundRequestLine, ...]:
    items = []
    for line_id, state in order.lines.items():
        quantity = state.shipped_refundable(charged_only)
        if order.policy.refund_paid_unshipped:
            quantity += state.cancellable
        if quantity:
            items.append(RefundRequestLine(line_id, quantity))
    if not items and charged_only and any(s.shipped_refundable(False) for s in order.lines.values()):
        raise RefundBeforeChargeError(_before_charge(order, None))
    return tuple(items)


def _refund_line(order: Order, index: int, item: RefundRequestLine, charged_only: bool) -> RefundLine:
    where = f"lines[{index}]"
    state = order.lines.get(item.line_id)
    if state is None:
        raise UnknownLineError(f"no line {item.line_id!r} on this order", f"{where}.line_id")
    if item.quantity < 0:
        raise InvalidQuantityError("quantity cannot be negative", f"{where}.quantity")
    if item.amount is not None and not is_valid_amount(item.amount, order.currency):
        raise InvalidAmountError(f"{item.amount} is not a valid {order.currency} amount", f"{where}.amount")
    if item.quantity == 0 and item.amount is None:
        raise InvalidQuantityError("give a quantity, an amount, or both", where)
    _check_refundable_units(order, state, item, charged_only)
    item_amount = item.amount if item.amount is not None else state.line.unit_price * item.quantity
    if item_amount > state.refundable_item:
        msg = f"line {item.line_id}: {item_amount} exceeds the {state.refundable_item} left to refund"
        raise OverRefundError(msg)
    tax = state.tax_share(item.quantity, order.currency) if item.amount is None else ZERO
    return RefundLine(item.line_id, item.quantity, item_amount, tax, ZERO)


def _check_refundable_units(
    order: Order, state: LineState, item: RefundRequestLine, charged_only: bool
) -> None:
    line_id = item.line_id
    policy = order.policy
    if item.quantity == 0:
        # A money-only adjustment needs units the buyer was charged for.
        if _was_charged(order, state, charged_only):
            return
        if charged_only and state.shipped:
            raise RefundBeforeChargeError(_before_charge(order, line_id))
        raise RefundUnshippedError(f"line {line_id} has not shipped: cancel it instead of refunding it")
    charged = state.shipped_refundable(charged_only)
    if item.quantity <= charged:
        return
    if policy.refund_paid_unshipped and item.quantity - charged <= state.cancellable:
        return
    if charged_only and item.quantity <= state.shipped_refundable(charged_only=False):
        raise RefundBeforeChargeError(_before_charge(order, line_id))
    if state.cancellable and item.quantity - charged <= state.cancellable:
        msg = f"line {line_id}: unshipped units can only be cancelled, not refunded"
        raise RefundUnshippedError(msg)
    msg = f"line {line_id} has {charged} shipped unit(s) left to refund, not {item.quantity}"
    raise OverRefundError(msg)


def _before_charge(order: Order, line_id: str | None) -> str:
    where = f"line {line_id}: " if line_id else ""
    return (
        f"{where}{order.marketplace.value} charges the buyer only once it has the shipment confirmation;"
        " refund after the marketplace acknowledges the shipment, or, if it refused it or never will have it,"
        " void the shipment (POST .../shipments/{shipment_id}/void) and cancel the units instead"
    )


def _add_order_level(
    order: Order, drafts: list[RefundLine], component: str, amount: Decimal, charged_only: bool
) -> list[RefundLine]:
    """Spread an order-level tax or shipping refund over the lines the buyer was charged for, each up to
    what it has left."""
    if not amount:
        return drafts
    by_line = {d.line_id: d for d in drafts}
    states = list(order.lines.values())

    def left(state: LineState, charged: bool) -> Decimal:
        if not _was_charged(order, state, charged):
            return ZERO
        paid = state.refundable_shipping if component == "shipping_amount" else state.refundable_tax
        return paid - getattr(by_line.get(state.line.line_id), component, ZERO)

    capacities = [left(s, charged_only) for s in states]
    if amount > sum(capacities):
        if charged_only and amount <= sum(left(s, False) for s in states):
            raise RefundBeforeChargeError(_before_charge(order, None))
        msg = f"{component} {amount} exceeds the {sum(capacities)} left to refund on shipped lines"
        raise OverRefundError(msg)
    for state, share in zip(states, allocate(amount, capacities), strict=True):
        if not share:
            continue
        line_id = state.line.line_id
        draft = by_line.get(line_id) or RefundLine(line_id, 0, ZERO)
        by_line[line_id] = _with_component(draft, component, getattr(draft, component) + share)
    return [by_line[s.line.line_id] for s in states if s.line.line_id in by_line]


def _was_charged(order: Order, state: LineState, charged_only: bool) -> bool:
    """Whether the buyer paid for something on this line that a refund may give back."""
    if order.policy.refund_paid_unshipped:
        return True
    return bool(state.confirmed_shipped if charged_only else state.shipped)


def _with_component(line: RefundLine, component: str, value: Decimal) -> RefundLine:
    if component == "shipping_amount":
        return RefundLine(line.line_id, line.quantity, line.item_amount, line.tax_amount, value)
    return RefundLine(line.line_id, line.quantity, line.item_amount, value, line.shipping_amount)


# --------------------------------------------------------------------------------------- restock


def resolve_restock_lines(
    lines: Mapping[str, LineState], requested: tuple[LineQuantity, ...]
) -> tuple[LineQuantity, ...]:
    items = check_requested_lines(lines, requested)
    if not items:
        raise InvalidQuantityError("name the lines to restock", "lines")
    for item in items:
        state = lines[item.line_id]
        if item.quantity > state.restockable:
            msg = f"line {item.line_id} has {state.restockable} cancelled or returned unit(s) to restock"
            raise OverRestockError(msg)
    return items

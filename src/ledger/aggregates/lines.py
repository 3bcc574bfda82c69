"""Per-line quantities and amounts of an order, and every piece of state derived from them.

Derived order state (a line's open units, the refunded-unshipped rule, an order's status, whether it is open,
its dispute status, its totals) is defined here once, as pure functions over plain values, so that the `Order`
aggregate and the projections that fold its events (All Sales, exposure) cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import NamedTuple

from ledger.aggregates.values import MINOR_UNITS, ZERO, OrderLine, OrderStatus


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round to the currency's minor unit (banker's rounding, as marketplaces settle)."""
    return amount.quantize(Decimal(1).scaleb(-MINOR_UNITS.get(currency, 2)), rounding=ROUND_HALF_EVEN)


# ------------------------------------------------------------------------------------ one line


def open_units(quantity: int, shipped: int, cancelled: int, refunded_unshipped: int) -> int:
    """Units neither shipped, cancelled nor refunded before shipment."""
    return quantity - shipped - cancelled - refunded_unshipped


def unrefunded_shipped(shipped: int, refunded_quantity: int, refunded_unshipped: int) -> int:
    """Of `shipped` units, those not yet refunded (units refunded before shipment were never among them)."""
    return max(shipped - (refunded_quantity - refunded_unshipped), 0)


def unshipped_in_refund(quantity: int, shipped: int, refunded_quantity: int, refunded_unshipped: int) -> int:
    """The refunded-unshipped rule: how many of `quantity` refunded units had not shipped (eBay refunds paid,
    unshipped units): a refund takes the shipped, unrefunded units first; the rest never ship."""
    return max(quantity - unrefunded_shipped(shipped, refunded_quantity, refunded_unshipped), 0)


def share(amount: Decimal, *, of: int, done: int, units: int, left: Decimal, currency: str) -> Decimal:
    """The part of `amount` (spread over `of` units) that `units` more units take when `done` units took theirs
    and `left` remains: in proportion, rounded to the minor unit, and the last units take whatever is left."""
    if units <= 0 or of == 0:
        return ZERO
    if done + units >= of:
        return left
    return min(quantize(amount * units / of, currency), left)


# ------------------------------------------------------------------------------------ the order


class LineTally(NamedTuple):
    """What an order's derived state needs of one line."""

    quantity: int
    shipped: int
    cancelled: int
    refunded_unshipped: int
    total: Decimal
    refunded: Decimal


@dataclass(frozen=True, slots=True)
class OrderState:
    """An order's derived state, as the aggregate answers it and the read models store it."""

    units: int
    shipped_units: int
    cancelled_units: int
    total: Decimal
    refunded_total: Decimal
    status: OrderStatus
    is_open: bool
    dispute_status: str | None
    open_disputes: int


def order_status(shipped_units: int, settled: bool) -> OrderStatus:
    """`settled`: no line has a unit left to ship. `canceled` when nothing shipped and nothing is left."""
    if shipped_units == 0:
        return OrderStatus.CANCELED if settled else OrderStatus.UNSHIPPED
    return OrderStatus.SHIPPED if settled else OrderStatus.PARTIALLY_SHIPPED


def is_open(settled: bool, open_disputes: int) -> bool:
    """Open until every unit is shipped, cancelled or refunded before shipment and no dispute is open."""
    return open_disputes > 0 or not settled


def dispute_status(disputes: int, open_disputes: int) -> str | None:
    """None without disputes; `open` while any is open; else `closed`."""
    if not disputes:
        return None
    return "open" if open_disputes else "closed"


# OrderState's fields, in its order: what `order_figures` returns.
OrderFigures = tuple[int, int, int, Decimal, Decimal, OrderStatus, bool, str | None, int]


def order_figures(lines: Iterable[LineTally], *, disputes: int, open_disputes: int) -> OrderFigures:
    """The order's derived state, in one pass over its lines, as `OrderState`'s fields in order (a projection
    writing thousands of rows a second takes them without building the object)."""
    units = shipped = cancelled = 0
    total = refunded = ZERO
    settled = True
    for line in lines:
        units += line.quantity
        shipped += line.shipped
        cancelled += line.cancelled
        total += line.total
        refunded += line.refunded
        settled = (
            settled and open_units(line.quantity, line.shipped, line.cancelled, line.refunded_unshipped) == 0
        )
    return (
        units,
        shipped,
        cancelled,
        total,
        refunded,
        order_status(shipped, settled),
        is_open(settled, open_disputes),
        dispute_status(disputes, open_disputes),
        open_disputes,
    )


def order_state(lines: Iterable[LineTally], *, disputes: int, open_disputes: int) -> OrderState:
    """The order's derived state, in one pass over its lines."""
    return OrderState(*order_figures(lines, disputes=disputes, open_disputes=open_disputes))


@dataclass
class LineState:
    """Where one line stands. Mutated only by the order's events."""

    line: OrderLine
    shipped: int = 0
    confirmed_shipped: int = 0  # shipped units whose confirmation the marketplace acknowledged
    # Shipped units the marketplace never hears of (the account's sync was off): what it charged for them is
    # outside the ledger's sight, so a refund that needs the marketplace's acknowledgement reaches them too.
    untold_shipped: int = 0
    cancelled: int = 0
    pending_cancel: int = 0  # held by an open cancellation dispute
    requested_cancel: int = 0  # buyer asked, seller has not answered
    refunded_quantity: int = 0
    refunded_unshipped: int = 0  # refunded before shipment (eBay): these units never ship
    refunded_item: Decimal = field(default=ZERO)
    refunded_tax: Decimal = field(default=ZERO)
    refunded_shipping: Decimal = field(default=ZERO)
    restocked: int = 0

    @property
    def ordered(self) -> int:
        return self.line.quantity

    @property
    def open_quantity(self) -> int:
        return open_units(self.ordered, self.shipped, self.cancelled, self.refunded_unshipped)

    @property
    def shippable(self) -> int:
        return self.open_quantity - self.pending_cancel

    @property
    def cancellable(self) -> int:
        return self.open_quantity - self.pending_cancel

    @property
    def refunded_amount(self) -> Decimal:
        return self.refunded_item + self.refunded_tax + self.refunded_shipping

    @property
    def refundable_item(self) -> Decimal:
        return self.line.item_total - self.refunded_item

    @property
    def refundable_tax(self) -> Decimal:
        return self.line.tax - self.refunded_tax

    @property
    def refundable_shipping(self) -> Decimal:
        return self.line.shipping - self.refunded_shipping

    @property
    def restockable(self) -> int:
        """Cancelled or returned (refunded) units not yet back in the ledger's stock."""
        return self.cancelled + self.refunded_quantity - self.restocked

    @property
    def tally(self) -> LineTally:
        return LineTally(
            self.ordered,
            self.shipped,
            self.cancelled,
            self.refunded_unshipped,
            self.line.total,
            self.refunded_amount,
        )

    def shipped_refundable(self, charged_only: bool) -> int:
        """Shipped units not yet refunded; `charged_only` counts only those the marketplace confirmed (and those
        it never heard of because sync was off)."""
        shipped = (
            min(self.confirmed_shipped + self.untold_shipped, self.shipped) if charged_only else self.shipped
        )
        return unrefunded_shipped(shipped, self.refunded_quantity, self.refunded_unshipped)

    def tax_share(self, quantity: int, currency: str) -> Decimal:
        """The line's tax for `quantity` more refunded units."""
        return share(
            self.line.tax,
            of=self.line.quantity,
            done=self.refunded_quantity,
            units=quantity,
            left=self.refundable_tax,
            currency=currency,
        )


def allocate(total: Decimal, capacities: list[Decimal]) -> list[Decimal]:
    """Split `total` over slots in order, each up to its capacity. The caller checks the total fits."""
    shares = []
    remaining = total
    for capacity in capacities:
        part = min(remaining, max(capacity, ZERO))
        shares.append(part)
        remaining -= part
    return shares


# ------------------------------------------------------------- the order and its marketplace

# Why a change is not sent that leaves the marketplace without the ledger's word (the others, an echo of the
# marketplace's own word or a voided shipment, leave nothing to tell).
# `sync_off` is one of them: the marketplace lacks the change until the seller acts (see docs/marketplaces.md).
UNTOLD = frozenset({"third_party_managed", "no_call", "sync_off"})
# An order's sync state, worst first: the first any of its changes (or a divergence) is in.
SYNC_STATES = ("diverged", "dead", "failing", "pending", "not_sent")


def requested_left(requested: int, open_quantity: int) -> int:
    """Units a buyer asked to cancel that are still waiting on the seller: never more than are open."""
    return min(max(requested, 0), open_quantity)


def change_state(
    *,
    not_sent: bool,
    resolved: bool,
    voided: bool,
    accepted: bool,
    answered: bool,
    permanent: bool,
    dead: bool,
) -> str:
    """Where one change stands with its marketplace: `not_sent`, `sent` (acknowledged, or resolved by hand),
    `pending` (no answer), `failing` (refused for now) or `dead` (refused for good, or given up on).
    `permanent`: the last answer refused it for good; `voided`: its shipment was voided."""
    if not_sent:
        return "not_sent"
    if resolved or accepted:
        return "sent"
    if voided:
        return "not_sent"
    if dead or (answered and permanent):
        return "dead"
    return "failing" if answered else "pending"


def sync_state(entries: Iterable[tuple[str, str | None]], *, diverged: bool) -> str:
    """The order's sync state from its changes' (state, not-sent reason): `diverged` while a check finds the
    marketplace disagreeing, else the worst of `dead`, `failing`, `pending` and `not_sent` (a change the
    marketplace never hears of, as Third Party Managed or without a call for it), else `in_sync`."""
    found = {"diverged"} if diverged else set()
    for state, reason in entries:
        if state != "not_sent" or reason in UNTOLD:
            found.add(state)
    for state in SYNC_STATES:  # a loop, not next(genexpr): projections call this once per order written
        if state in found:
            return state
    return "in_sync"


def attention(
    *, diverged: bool, marketplace_cancelled: bool, buyer_cancel_requested: bool, dead: bool
) -> bool:
    """The seller has something to resolve: a check found the marketplace disagreeing, the marketplace
    cancelled units the ledger shows shipped, a buyer asked to cancel, or a change was refused for good."""
    return diverged or marketplace_cancelled or buyer_cancel_requested or dead

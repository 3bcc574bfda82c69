"""Per-line quantities and amounts of an order, and the arithmetic the order's rules use."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from ledger.aggregates.values import MINOR_UNITS, ZERO, OrderLine


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round to the currency's minor unit (banker's rounding, as marketplaces settle)."""
    return amount.quantize(Decimal(1).scaleb(-MINOR_UNITS.get(currency, 2)), rounding=ROUND_HALF_EVEN)


@dataclass
class LineState:
    """Where one line stands. Mutated only by the order's events."""

    line: OrderLine
    shipped: int = 0
    confirmed_shipped: int = 0  # shipped units whose confirmation the marketplace acknowledged
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
        """Units neither shipped, cancelled nor refunded before shipment."""
        return self.ordered - self.shipped - self.cancelled - self.refunded_unshipped

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

    def shipped_refundable(self, charged_only: bool) -> int:
        """Shipped units not yet refunded; `charged_only` counts only those the marketplace confirmed."""
        shipped = self.confirmed_shipped if charged_only else self.shipped
        return max(shipped - (self.refunded_quantity - self.refunded_unshipped), 0)

    def tax_share(self, quantity: int, currency: str) -> Decimal:
        """The line's tax for `quantity` units; the last units take whatever rounding left over."""
        if quantity <= 0 or self.line.quantity == 0:
            return ZERO
        if self.refunded_quantity + quantity >= self.line.quantity:
            return self.refundable_tax
        return min(quantize(self.line.tax * quantity / self.line.quantity, currency), self.refundable_tax)


def allocate(total: Decimal, capacities: list[Decimal]) -> list[Decimal]:
    """Split `total` over slots in order, each up to its capacity. The caller checks the total fits."""
    shares = []
    remaining = total
    for capacity in capacities:
        share = min(remaining, max(capacity, ZERO))
        shares.append(share)
        remaining -= share
    return shares

"""Derived order state (aggregates/lines.py): the pure functions the Order aggregate and the projections share."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ledger.aggregates.lines import (
    LineTally,
    dispute_status,
    is_open,
    open_units,
    order_state,
    order_status,
    share,
    unrefunded_shipped,
    unshipped_in_refund,
)
from ledger.aggregates.values import OrderStatus

D = Decimal
ZERO = Decimal(0)


@pytest.mark.parametrize(
    ("quantity", "shipped", "cancelled", "refunded_unshipped", "expected"),
    [
        (3, 0, 0, 0, 3),
        (3, 1, 0, 0, 2),
        (3, 1, 1, 0, 1),
        (3, 1, 1, 1, 0),
        (3, 0, 3, 0, 0),
        (2, 0, 0, 2, 0),
    ],
)
def test_open_units_are_those_neither_shipped_cancelled_nor_refunded_before_shipment(
    quantity: int, shipped: int, cancelled: int, refunded_unshipped: int, expected: int
) -> None:
    """A line's open units: ordered minus shipped, cancelled and refunded-before-shipment units."""
    assert open_units(quantity, shipped, cancelled, refunded_unshipped) == expected


@pytest.mark.parametrize(
    ("shipped", "refunded_quantity", "refunded_unshipped", "expected"),
    [
        (0, 0, 0, 0),
        (2, 0, 0, 2),
        (2, 1, 0, 1),
        (2, 2, 0, 0),
        (2, 1, 1, 2),  # the refunded unit had not shipped: both shipped units are still refundable
        (1, 3, 1, 0),  # never below zero
    ],
)
def test_unrefunded_shipped_units_leave_out_units_refunded_after_shipment(
    shipped: int, refunded_quantity: int, refunded_unshipped: int, expected: int
) -> None:
    """Shipped units not yet refunded; units refunded before shipment never count against them."""
    assert unrefunded_shipped(shipped, refunded_quantity, refunded_unshipped) == expected


@pytest.mark.parametrize(
    ("quantity", "shipped", "refunded_quantity", "refunded_unshipped", "expected"),
    [
        (1, 0, 0, 0, 1),  # nothing shipped: the refunded unit never ships
        (2, 1, 0, 0, 1),  # one shipped unit is refunded first, the other had not shipped
        (1, 1, 0, 0, 0),
        (1, 2, 1, 0, 0),
        (2, 2, 1, 0, 1),  # one shipped unit was refunded before: one shipped unit left
        (1, 1, 1, 1, 0),  # the earlier refund was of an unshipped unit: the shipped one is still there
        (3, 0, 1, 1, 3),
    ],
)
def test_a_refund_takes_shipped_units_first_and_the_rest_never_ship(
    quantity: int, shipped: int, refunded_quantity: int, refunded_unshipped: int, expected: int
) -> None:
    """The refunded-unshipped rule: units beyond the shipped, unrefunded ones are refunded before shipment."""
    assert unshipped_in_refund(quantity, shipped, refunded_quantity, refunded_unshipped) == expected


@pytest.mark.parametrize(
    ("amount", "of", "done", "units", "left", "currency", "expected"),
    [
        (D("1.00"), 3, 0, 1, D("1.00"), "USD", D("0.33")),
        (D("1.00"), 3, 1, 1, D("0.67"), "USD", D("0.33")),
        (D("1.00"), 3, 2, 1, D("0.34"), "USD", D("0.34")),  # the last unit takes the rounding
        (D("1.00"), 3, 0, 3, D("1.00"), "USD", D("1.00")),
        (D("0.05"), 2, 0, 1, D("0.05"), "USD", D("0.02")),  # banker's rounding: 0.025 -> 0.02
        (D("0.15"), 2, 0, 1, D("0.15"), "USD", D("0.08")),  # 0.075 -> 0.08
        (D("100"), 3, 0, 1, D("100"), "JPY", D("33")),  # no minor unit
        (D("1.00"), 4, 0, 2, D("0.30"), "USD", D("0.30")),  # never more than is left
        (D("1.00"), 3, 0, 0, D("1.00"), "USD", ZERO),
        (D("1.00"), 3, 0, -1, D("1.00"), "USD", ZERO),
        (D("1.00"), 0, 0, 1, D("1.00"), "USD", ZERO),
    ],
)
def test_share_is_proportional_and_the_last_units_take_what_is_left(
    amount: Decimal, of: int, done: int, units: int, left: Decimal, currency: str, expected: Decimal
) -> None:
    """A line's tax (refunds) or tax and shipping (exposure) per units: rounded, capped, the rest to the last."""
    assert share(amount, of=of, done=done, units=units, left=left, currency=currency) == expected


@pytest.mark.parametrize(
    ("shipped_units", "settled", "expected"),
    [
        (0, False, OrderStatus.UNSHIPPED),
        (0, True, OrderStatus.CANCELED),
        (1, False, OrderStatus.PARTIALLY_SHIPPED),
        (1, True, OrderStatus.SHIPPED),
    ],
)
def test_order_status(shipped_units: int, settled: bool, expected: OrderStatus) -> None:
    """Status from shipped units and whether any unit is left to ship."""
    assert order_status(shipped_units, settled) is expected


@pytest.mark.parametrize(
    ("settled", "open_disputes", "expected"),
    [(False, 0, True), (True, 0, False), (True, 1, True), (False, 2, True)],
)
def test_an_order_is_open_while_units_are_left_or_a_dispute_is_open(
    settled: bool, open_disputes: int, expected: bool
) -> None:
    """`open`: units left to ship, or an open dispute."""
    assert is_open(settled, open_disputes) is expected


@pytest.mark.parametrize(
    ("disputes", "open_disputes", "expected"),
    [(0, 0, None), (1, 0, "closed"), (1, 1, "open"), (3, 1, "open"), (3, 0, "closed")],
)
def test_dispute_status(disputes: int, open_disputes: int, expected: str | None) -> None:
    """None without disputes, `open` while one is open, else `closed`."""
    assert dispute_status(disputes, open_disputes) == expected


def tally(quantity: int, shipped: int = 0, cancelled: int = 0, refunded_unshipped: int = 0) -> LineTally:
    total = D("10.00") * quantity + D("1.00")
    refunded = D("10.00") * refunded_unshipped
    return LineTally(quantity, shipped, cancelled, refunded_unshipped, total, refunded)


@pytest.mark.parametrize(
    ("lines", "disputes", "open_disputes", "status", "open_", "dispute"),
    [
        ([tally(2)], 0, 0, OrderStatus.UNSHIPPED, True, None),
        ([tally(2, shipped=1)], 0, 0, OrderStatus.PARTIALLY_SHIPPED, True, None),
        ([tally(2, shipped=2)], 0, 0, OrderStatus.SHIPPED, False, None),
        ([tally(2, shipped=1, cancelled=1)], 0, 0, OrderStatus.SHIPPED, False, None),
        ([tally(2, cancelled=2)], 0, 0, OrderStatus.CANCELED, False, None),
        ([tally(2, cancelled=1, refunded_unshipped=1)], 0, 0, OrderStatus.CANCELED, False, None),
        ([tally(1, refunded_unshipped=1), tally(1)], 0, 0, OrderStatus.UNSHIPPED, True, None),
        ([tally(1, shipped=1), tally(2)], 1, 0, OrderStatus.PARTIALLY_SHIPPED, True, "closed"),
        ([tally(1, shipped=1), tally(2, shipped=2)], 2, 1, OrderStatus.SHIPPED, True, "open"),
        ([tally(1, cancelled=1)], 1, 1, OrderStatus.CANCELED, True, "open"),
    ],
)
def test_order_state_of_lines_and_disputes(
    lines: list[LineTally],
    disputes: int,
    open_disputes: int,
    status: OrderStatus,
    open_: bool,
    dispute: str | None,
) -> None:
    """The order's derived state: status, open, dispute status, and the sums of its lines."""
    state = order_state(iter(lines), disputes=disputes, open_disputes=open_disputes)
    assert (state.status, state.is_open, state.dispute_status) == (status, open_, dispute)
    assert state.open_disputes == open_disputes


def test_order_state_sums_its_lines() -> None:
    """Units, shipped and cancelled units, total and refunded total add up over the lines."""
    lines = [
        LineTally(2, 1, 1, 0, D("21.00"), ZERO),
        LineTally(3, 1, 0, 1, D("35.50"), D("22.75")),
    ]
    state = order_state(lines, disputes=0, open_disputes=0)
    assert (state.units, state.shipped_units, state.cancelled_units) == (5, 2, 1)
    assert (state.total, state.refunded_total) == (D("56.50"), D("22.75"))

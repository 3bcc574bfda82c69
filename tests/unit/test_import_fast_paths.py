"""The bulk import's shortcuts answer as the code they shortcut: amounts of a line (`LineIn.to_domain`),
`is_valid_amount`, `id_problem`, `normalize_id` and `check_imported_order` give the same values and refuse with
the same messages as the previous implementations (kept below as references)."""

from __future__ import annotations

import dataclasses
import unicodedata
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ledger.aggregates import rules
from ledger.aggregates.errors import InvalidInputError, InvalidOrderError
from ledger.aggregates.values import (
    MAX_AMOUNT,
    Address,
    Buyer,
    ImportedOrder,
    OrderLine,
    PaymentStatus,
    id_problem,
    is_valid_amount,
    minor_units,
    normalize_id,
    parse_amount,
)
from ledger.api.bodies.schemas import LineIn

# ------------------------------------------------------------------------------------------ references


def _reference_is_valid_amount(amount: Decimal, currency: str) -> bool:
    if not amount.is_finite() or amount < 0 or amount >= MAX_AMOUNT:
        return False
    exponent = amount.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return -exponent <= minor_units(currency)


def _reference_id_problem(text: str) -> str | None:
    if not text:
        return "is empty"
    bad = next((c for c in text if unicodedata.category(c) in {"Cc", "Cf"}), None)
    return None if bad is None else f"contains the control character U+{ord(bad):04X}"


def _reference_check(order: ImportedOrder) -> None:
    """`rules.check_imported_order` before its field names were made lazily."""
    rules.check_identifier(order.marketplace_order_id, "marketplace_order_id", InvalidOrderError)
    rules.check_storable(order.buyer.name, "buyer.name", InvalidOrderError)
    rules.check_storable(order.buyer.email, "buyer.email", InvalidOrderError)
    if order.ship_to is not None:
        for name, value in vars(order.ship_to).items():
            rules.check_storable(value, f"ship_to.{name}", InvalidOrderError)
    if order.purchased_at.tzinfo is None:
        raise InvalidOrderError("purchased_at needs a time zone", "purchased_at")
    if order.paid_at is not None and order.paid_at.tzinfo is None:
        raise InvalidOrderError("paid_at needs a time zone", "paid_at")
    if order.ship_by is not None and order.ship_by.tzinfo is None:
        raise InvalidOrderError("ship_by needs a time zone", "ship_by")
    if order.currency not in {"USD", "JPY", "KWD", "EUR"}:
        raise InvalidOrderError(f"currency {order.currency!r} is not an active ISO 4217 code", "currency")
    if not order.lines:
        raise InvalidOrderError("an order needs at least one line", "lines")
    seen: set[str] = set()
    for index, line in enumerate(order.lines):
        where = f"lines[{index}]"
        rules.check_identifier(line.line_id, f"{where}.line_id", InvalidOrderError)
        rules.check_identifier(line.sku, f"{where}.sku", InvalidOrderError)
        if line.line_id in seen:
            raise InvalidOrderError(f"line_id {line.line_id!r} is repeated", f"{where}.line_id")
        seen.add(line.line_id)
        rules.check_storable(line.title, f"{where}.title", InvalidOrderError)
        if line.quantity < 1:
            raise InvalidOrderError("quantity must be at least 1", f"{where}.quantity")
        for name in ("unit_price", "tax", "shipping"):
            amount: Decimal = getattr(line, name)
            if not _reference_is_valid_amount(amount, order.currency):
                msg = f"{name} {amount} is not a valid {order.currency} amount"
                raise InvalidOrderError(msg, f"{where}.{name}")


def _outcome(call: Any, *args: Any) -> Any:
    try:
        return ("ok", call(*args))
    except InvalidInputError as e:
        return (type(e).__name__, e.message, e.field)


# ----------------------------------------------------------------------------------------------- tests

AMOUNT_TEXTS = [
    "0", "12.50", "12.5", "12.505", "-1.00", "-0", "007.10", "1.", ".5", "1e3", "1E+1", " 1", "1 ", "+1",
    "1_000", "NaN", "Infinity", "١٢", "12.50\n", "", "-", "1.2.3", "9" * 40, "9" * 41, "0." + "0" * 38,
    "999999999999.99", "1000000000000", "5.0000000000000000000000000001",
]  # fmt: skip


@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD"])
@pytest.mark.parametrize("text", AMOUNT_TEXTS)
def test_a_line_s_amounts_read_as_parse_amount_reads_them(text: str, currency: str) -> None:
    """Same Decimal (value and exponent), or the same refusal naming the same field."""
    line = LineIn(line_id="1", sku="S", quantity=1, unit_price=text, tax=text, shipping="0")
    got = _outcome(lambda: line.to_domain(3, currency))
    want = _outcome(lambda: parse_amount(text, "lines[3].unit_price", currency))
    if want[0] == "ok":
        assert got[0] == "ok"
        assert str(got[1].unit_price) == str(got[1].tax) == str(want[1])
    else:
        assert got == want


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.decimals(allow_nan=True, allow_infinity=True),
        st.decimals(min_value=0, max_value=10**12, places=5),
        st.integers(min_value=-(10**13), max_value=10**13).map(lambda n: Decimal(n).scaleb(-3)),
    ),
    st.sampled_from(["USD", "JPY", "KWD", "BIF"]),
)
@example(Decimal("5.0000000000000000000000000001"), "USD")
@example(Decimal("1.000000000000000000000000000000000"), "JPY")
@example(Decimal("-0.00"), "USD")
@example(Decimal("1E+2"), "JPY")
@example(Decimal("999999999999.999"), "KWD")
def test_is_valid_amount_is_the_normalizing_check(amount: Decimal, currency: str) -> None:
    """The quantize shortcut never answers otherwise than the normalized exponent did."""
    assert is_valid_amount(amount, currency) == _reference_is_valid_amount(amount, currency)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=12))
@example("a\u200bb")
@example("a\tb")
@example("a\u2028b")
@example("a\u00a0b")
@example("\ud800")
@example("")
def test_id_problem_and_normalize_id_answer_as_before(text: str) -> None:
    """Printable text skips the walk; ASCII text skips NFKC; the answers are the same."""
    assert id_problem(text) == _reference_id_problem(text)
    assert normalize_id(text) == unicodedata.normalize("NFKC", text).strip()


def test_every_character_s_problem_is_as_before() -> None:
    """Each code point of the Basic Multilingual Plane, alone, between letters."""
    for code in range(0x10000):
        text = f"a{chr(code)}b"
        assert id_problem(text) == _reference_id_problem(text), hex(code)


def _order(**changes: Any) -> ImportedOrder:
    values: dict[str, Any] = {
        "marketplace_order_id": "M-1",
        "purchased_at": datetime(2026, 11, 19, tzinfo=UTC),
        "currency": "USD",
        "payment_status": PaymentStatus.PAID,
        "buyer": Buyer("Ann", "ann@example.com"),
        "ship_to": Address(name="Ann", line1="1 Main St"),
        "lines": (
            OrderLine("1", "SKU-1", 2, Decimal("12.50"), Decimal("2.00"), title="Mug"),
            OrderLine("2", "SKU-2", 1, Decimal("5.00"), shipping=Decimal("4.99")),
        ),
    }
    order = ImportedOrder(**values)
    # Past __post_init__'s normalization, as a marketplace mapping could hand the check any value.
    for name, value in changes.items():
        object.__setattr__(order, name, value)
    return order


def _line(**changes: Any) -> tuple[OrderLine, ...]:
    return (OrderLine("1", "SKU-1", 1, Decimal("1.00")), dataclasses.replace(_order().lines[1], **changes))


BAD_ORDERS = {
    "good": _order(),
    "id empty": _order(marketplace_order_id=""),
    "id control": _order(marketplace_order_id="M\x01"),
    "id too long": _order(marketplace_order_id="M" * 101),
    "NUL name": _order(buyer=Buyer("A\x00", "a@example.com")),
    "NUL address": _order(ship_to=Address(city="X\x00")),
    "NUL address and name": _order(buyer=Buyer("A\x00", "a"), ship_to=Address(city="X\x00")),
    "naive": _order(purchased_at=datetime(2026, 1, 1)),
    "naive paid_at": _order(paid_at=datetime(2026, 1, 1)),
    "currency": _order(currency="XXX"),
    "no lines": _order(lines=()),
    "line id": _order(lines=_line(line_id="\u200b")),
    "line id long": _order(lines=_line(line_id="x" * 101)),
    "sku": _order(lines=_line(sku="")),
    "sku format": _order(lines=_line(sku="a\u2060")),
    "repeated": _order(lines=_line(line_id="1")),
    "title": _order(lines=_line(title="\x00")),
    "quantity": _order(lines=_line(quantity=0)),
    "unit price": _order(lines=_line(unit_price=Decimal("1.001"))),
    "tax": _order(lines=_line(tax=Decimal("-1"))),
    "shipping": _order(lines=_line(shipping=Decimal("NaN"))),
    "jpy": _order(currency="JPY"),
    "kwd": _order(currency="KWD", lines=_line(unit_price=Decimal("1.001"))),
    "two problems": _order(lines=_line(sku="", title="\x00")),
}


@pytest.mark.parametrize("case", BAD_ORDERS)
def test_the_import_check_refuses_as_before(case: str) -> None:
    """The same first problem, message and field."""
    order = BAD_ORDERS[case]
    assert _outcome(rules.check_imported_order, order) == _outcome(_reference_check, order)

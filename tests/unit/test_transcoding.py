"""The Ledger's event encoder writes exactly the bytes of the library's `JSONTranscoder` (transcoding.py)."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from ledger.aggregates.values import Address, Buyer, Marketplace, OrderLine
from ledger.application.ledger import Ledger
from ledger.eventstore.transcoding import DataclassTranscoding, LedgerTranscoder

ODD_TEXT = "".join(chr(c) for c in range(1, 128)) + '"\\é中😀\u2028\u2029\ufeff'
ODD_ID = ODD_TEXT[32:126] + "é中😀"  # an identifier may hold no control or format character


def _library(ledger: Ledger) -> Any:
    transcoder = ledger.factory.transcoder()  # the library's JSONTranscoder
    ledger.register_transcodings(transcoder)
    return transcoder


def _state(event: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(event).items() if k not in ("originator_id", "originator_version")}


def test_every_event_of_an_order_is_encoded_byte_for_byte_as_the_library_does(
    ledger: Ledger, shop: Any
) -> None:
    """Imported (odd text in every field), shipped, acknowledged, cancelled, refunded: the same bytes."""
    assert isinstance(ledger.mapper.transcoder, LedgerTranscoder)
    account_id = shop.account(Marketplace.AMAZON)
    order = shop.imported(
        buyer=Buyer(ODD_TEXT, ODD_TEXT),
        lines=(
            OrderLine("A", ODD_ID[:100], 3, Decimal("10.00"), title=ODD_TEXT),
            OrderLine("B", "SKU-B", 1, Decimal("0.01")),
        ),
    )
    order_id = ledger.import_order(shop.ctx, account_id, order).order_id
    shipment = shop.ship(order_id, {"A": 1}).ids["shipment_id"]
    shop.acknowledge(order_id, shipment)
    shop.cancel(order_id, {"B": 1})
    shop.refund(order_id)
    events = shop.events(order_id)
    assert len(events) >= 5
    library = _library(ledger)
    for event in events:
        assert ledger.mapper.transcoder.encode(_state(event)) == library.encode(_state(event))


def test_values_outside_the_plain_set_are_left_to_the_library(ledger: Ledger) -> None:
    """A float and a non-string key are encoded by the library's encoder, as before."""
    library = _library(ledger)
    for value in [{"x": 1e16, "y": 0.1}, {1: "a"}, {"t": (1, "b", None, True)}]:
        assert ledger.mapper.transcoder.encode(value) == library.encode(value)


class _Mark(enum.StrEnum):
    A = "a"


@dataclasses.dataclass(frozen=True)
class _Odd:
    text: Any
    nested: Any = None


def test_every_kind_of_value_in_a_value_object_is_encoded_as_the_library_does(ledger: Ledger) -> None:
    """Value objects holding odd values (a str enum, None, nesting, ids, times, a float) give the library's bytes."""
    library = _library(ledger)
    ours = ledger.mapper.transcoder
    ours.register(DataclassTranscoding(_Odd, "odd_test"))
    library.register(DataclassTranscoding(_Odd, "odd_test"))
    when = datetime(2026, 12, 3, 17, 0, 1, 5, tzinfo=UTC)
    values = [
        _Odd(_Mark.A, None),
        _Odd(ODD_TEXT, (Buyer(ODD_TEXT, "e"), [Decimal("-0.10"), uuid.UUID(int=7)], {"k": when})),
        _Odd(Decimal("1E+3"), _Odd(True, Address(ODD_TEXT, line2="x"))),
        _Odd(0.5),
        _Odd({1: "a"}),
        OrderLine("A", "S", 2, Decimal("3.00"), tax=Decimal("0")),
    ]
    for value in values:
        for state in ({"v": value}, {"v": [value, value]}):
            assert ours.encode(state) == library.encode(state)


def test_a_transcoding_registered_later_is_used(ledger: Ledger) -> None:
    """The per-type walks are made again when a transcoding is registered after encoding began."""
    ours = ledger.mapper.transcoder
    with pytest.raises(TypeError):
        ours.encode({"v": _Odd("x")})
    ours.register(DataclassTranscoding(_Odd, "odd_test"))
    library = _library(ledger)
    library.register(DataclassTranscoding(_Odd, "odd_test"))
    assert ours.encode({"v": _Odd("x")}) == library.encode({"v": _Odd("x")})

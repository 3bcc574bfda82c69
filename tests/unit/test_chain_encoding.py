"""The hash chain's encoder gives the bytes it always gave (aggregates/chain.py).

Events stored by the code of commit 70a71cd (tests/fixtures/chain_events_70a71cd.json, made by
tests/fixtures/make_chain_events.py: every stored order event type, odd text, sealed buyer fields, offsets
that are not UTC) verify with today's code, and today's encoding of each is byte for byte the first
implementation's (kept below as the reference)."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent

from ledger.aggregates.chain import GENESIS_HASH, _fast_encode, canonical, canonical_event_bytes, chain_hash
from ledger.aggregates.values import Buyer, Marketplace, OrderLine
from ledger.application.ledger import Ledger
from ledger.audit.checkpoints import Row
from ledger.audit.verification import check_chain

FIXTURE = Path(__file__).parent.parent / "fixtures" / "chain_events_70a71cd.json"
STREAMS: list[list[dict[str, Any]]] = json.loads(FIXTURE.read_text())["streams"]


# ------------------------------------------------------- the first implementation (commit 70a71cd), verbatim


def _reference_canonical(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return _reference_canonical(value.value)
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _reference_canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _reference_canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reference_canonical(v) for v in value]
    msg = f"no canonical encoding for {type(value).__name__}"
    raise TypeError(msg)


def _reference_bytes(event: object) -> bytes:
    body = {k: _reference_canonical(v) for k, v in vars(event).items() if k != "hash"}
    cls = type(event)
    body["__topic__"] = f"{cls.__module__}:{cls.__qualname__}"
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _reference_hash(prev_hash: str, event: object) -> str:
    digest = hashlib.sha256()
    digest.update(prev_hash.encode("ascii"))
    digest.update(_reference_bytes(event))
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- tests


def _stored(row: dict[str, Any]) -> StoredEvent:
    return StoredEvent(
        UUID(row["originator_id"]), row["originator_version"], row["topic"], row["state"].encode()
    )


def test_the_fixture_holds_every_stored_order_event_type() -> None:
    topics = {row["topic"] for stream in STREAMS for row in stream}
    assert len(topics) == 17
    assert any("pd1:" in row["state"] for stream in STREAMS for row in stream)  # sealed buyer fields


def test_events_stored_by_the_first_implementation_verify_unchanged(ledger: Ledger) -> None:
    """Every stored hash recomputes, and the audit's chain check passes on every stream."""
    events = 0
    for stream in STREAMS:
        prev_hash = GENESIS_HASH
        for row in stream:
            event = ledger.mapper.to_domain_event(_stored(row))
            assert event.prev_hash == prev_hash
            assert canonical_event_bytes(event) == _reference_bytes(event)
            assert chain_hash(prev_hash, event) == event.hash
            prev_hash = event.hash
            events += 1
        order_id = UUID(stream[0]["originator_id"])
        rows = [
            Row(n, order_id, row["originator_version"], row["topic"], row["state"].encode())
            for n, row in enumerate(stream, start=1)
        ]
        assert check_chain(ledger.mapper, order_id, rows) == (len(stream), None)
    assert events > 150


def test_a_changed_stored_event_no_longer_verifies(ledger: Ledger) -> None:
    """The comparison above can fail: one changed character in a stored field breaks its hash."""
    row = dict(STREAMS[0][0])
    row["state"] = row["state"].replace('"actor":"', '"actor":"x', 1)
    event = ledger.mapper.to_domain_event(_stored(row))
    assert chain_hash(GENESIS_HASH, event) != event.hash


def test_new_events_hash_as_the_first_implementation_does(shop: Any) -> None:
    """Events made now (odd text in every field) carry the hash the first implementation gives them."""
    odd = "".join(chr(c) for c in range(1, 128)) + '"\\é中😀\u2028\u2029\ufeff\ud7ff\U0010ffff'
    account_id = shop.account(Marketplace.AMAZON)
    order = shop.imported(
        buyer=Buyer(odd, odd),
        lines=(
            OrderLine("A", "SKU-é", 3, Decimal("10.00"), title=odd),
            OrderLine("B", "B", 1, Decimal("1E+1")),
        ),
    )
    order_id = shop.ledger.import_order(shop.ctx, account_id, order).order_id
    shipment = shop.ship(order_id, {"A": 1}).ids["shipment_id"]
    shop.acknowledge(order_id, shipment)
    shop.cancel(order_id, {"B": 1})
    shop.refund(order_id)
    events = shop.events(order_id)
    assert len(events) >= 5
    prev_hash = GENESIS_HASH
    for event in events:
        assert canonical_event_bytes(event) == _reference_bytes(event)
        assert event.hash == _reference_hash(prev_hash, event)
        prev_hash = event.hash


class _Color(enum.Enum):
    RED = "red"


class _Size(enum.IntEnum):
    BIG = 3


class _Text(str):
    pass


@dataclasses.dataclass(frozen=True)
class _Inner:
    at: datetime
    amount: Decimal
    tags: tuple[str, ...]
    mapping: dict[Any, Any]


@dataclasses.dataclass(frozen=True)
class _Event:
    """Not an event class of the ledger: any object with fields is encoded by the same rules."""

    when: datetime
    offset: datetime
    id: UUID
    color: _Color
    size: _Size
    text: _Text
    inner: _Inner
    items: list[Any]
    nothing: None
    flag: bool
    count: int
    hash: str = ""


def test_values_of_every_kind_encode_as_before() -> None:
    inner = _Inner(
        datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        Decimal("-0.000"),
        ("z", "a"),
        {2: "two", "b": [Decimal("1E+3"), None], "a": {"y": 1, "x": True}},
    )
    event = _Event(
        when=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        offset=datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=timezone(timedelta(hours=5, minutes=45))),
        id=UUID(int=7),
        color=_Color.RED,
        size=_Size.BIG,
        text=_Text("é\n\t\x00\x7f"),
        inner=inner,
        items=[inner, (1, "x"), [], {}],
        nothing=None,
        flag=False,
        count=2**70,
        hash="ignored",
    )
    assert canonical_event_bytes(event) == _reference_bytes(event)
    assert chain_hash("a" * 64, event) == _reference_hash("a" * 64, event)


@dataclasses.dataclass(frozen=True)
class _Child(_Inner):
    more: Any = None


@dataclasses.dataclass(frozen=True)
class _Holder:
    inner: _Inner
    child: _Child
    color: _Color
    text: _Text
    lines: tuple[OrderLine, ...]
    hash: str = ""


def test_value_objects_encode_the_same_every_time_they_are_met() -> None:
    """A value object class's converter is made on first sight: the first and later encodings are the first
    implementation's, for the class, a subclass with a field more, and values of every kind inside them."""
    at = datetime(2026, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=-3)))
    for n in range(3):
        inner = _Inner(at, Decimal(f"{n}.50"), ("b", _Text("a")), {n: [_Color.RED, _Size.BIG]})
        child = _Child(at, Decimal("1E+2"), (), {}, more=[inner, None, UUID(int=n)])
        event = _Holder(
            inner, child, _Color.RED, _Text("t"), (OrderLine("A", "S", 1, Decimal("2.00"), title="é"),)
        )
        assert canonical_event_bytes(event) == _reference_bytes(event)
        assert canonical(child) == _reference_canonical(child)


def test_a_value_without_a_canonical_encoding_is_refused() -> None:
    @dataclasses.dataclass
    class _Floaty:
        x: float

    with pytest.raises(TypeError, match="no canonical encoding for float"):
        canonical_event_bytes(_Floaty(0.5))
    with pytest.raises(TypeError):
        canonical({"x": object()})


def test_every_character_encodes_as_the_standard_library_does() -> None:
    """Every code point but the surrogates, as a value and as a key (their order too), in the encoder's bytes."""
    for start in range(0, 0x110000, 0x4000):
        chars = [chr(c) for c in range(start, start + 0x4000) if not 0xD800 <= c < 0xE000]
        body: dict[str, Any] = {c + "k": ["x" + c + "y", c] for c in reversed(chars)}
        expected = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert _fast_encode(body) == expected, hex(start)


def test_a_lone_surrogate_is_refused_as_before() -> None:
    """Text no UTF-8 can hold fails as the standard library's encoding failed (UnicodeEncodeError)."""

    @dataclasses.dataclass
    class _Odd:
        text: str

    with pytest.raises(UnicodeEncodeError):
        _reference_bytes(_Odd("a\ud800"))
    with pytest.raises(UnicodeEncodeError):
        canonical_event_bytes(_Odd("a\ud800"))

"""Stored events decoded by the typed decoders (eventstore/decoding.py) are the library's domain events.

Compared field by field with the library's own decoding (`Mapper.to_domain_event` with the same transcoder):
the same class, the same keys in the same order, the same type and text of every value (a Decimal's exponent,
a time's offset, lists where the event class says tuple, str where it says a str enum), the same value
objects. For every event stored by the previous release (tests/fixtures/chain_events_70a71cd.json and the
release 0.1.0 dump) and for events of every class made now with any values (hypothesis); and whatever the
typed decoders do not describe is decoded by the library, as before.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent
from eventsourcing.utils import get_topic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.aggregates.account import MarketplaceAccount, SellerAccounts
from ledger.aggregates.api_key import ApiKey, SellerApiKeys
from ledger.aggregates.order import Order
from ledger.application.ledger import Ledger
from ledger.eventstore.decoding import LedgerMapper, typed_decoding

FIXTURES = Path(__file__).parent.parent / "fixtures"
IN_MEMORY = {"PERSISTENCE_MODULE": "eventsourcing.popo", "LEDGER_PERSISTENCE_MODULE": "eventsourcing.popo"}
_ROW = re.compile(
    r"INSERT INTO __SCHEMA__\.ledger_events VALUES \('([-0-9a-f]{36})', (\d+), '([^']+)', '\\x([0-9a-f]+)', \d+\);"
)


def _previous_release() -> list[StoredEvent]:
    """Every event stored by commit 70a71cd's unit suite (the fixture), and release 0.1.0's event log."""
    streams = json.loads((FIXTURES / "chain_events_70a71cd.json").read_text())["streams"]
    rows = [
        StoredEvent(UUID(r["originator_id"]), r["originator_version"], r["topic"], r["state"].encode())
        for stream in streams
        for r in stream
    ]
    for line in (FIXTURES / "schema_release_0_1.sql").read_text().splitlines():
        if match := _ROW.match(line):
            rows.append(StoredEvent(UUID(match[1]), int(match[2]), match[3], bytes.fromhex(match[4])))
    return rows


def _event_classes() -> list[type]:
    """Every event class of the order, account and API key aggregates (each stored topic's class)."""
    classes = []
    for aggregate in (Order, MarketplaceAccount, SellerAccounts, ApiKey, SellerApiKeys):
        for value in vars(aggregate).values():
            if isinstance(value, type) and issubclass(value, Aggregate.Event) and value.__name__ != "Event":
                classes.append(value)
    return classes


@pytest.fixture(scope="module")
def mapper() -> LedgerMapper:
    mapper = Ledger(env=IN_MEMORY).mapper
    assert isinstance(mapper, LedgerMapper)
    return mapper


def _library(mapper: Mapper[UUID], stored: StoredEvent) -> Any:
    return Mapper.to_domain_event(mapper, stored)


def assert_same(ours: Any, library: Any, at: str = "event") -> None:
    """The same type and value, to the text: dict keys in the same order, a Decimal's exponent, a time's
    offset; objects compared by their attributes."""
    assert type(ours) is type(library), at
    if isinstance(library, dict):
        assert list(ours) == list(library), at
        for key, value in library.items():
            assert_same(ours[key], value, f"{at}.{key}")
    elif isinstance(library, list):
        assert len(ours) == len(library), at
        for n, (mine, theirs) in enumerate(zip(ours, library, strict=True)):
            assert_same(mine, theirs, f"{at}[{n}]")
    elif isinstance(library, Decimal):  # by text: NaN is not equal to itself, and an sNaN refuses to compare
        assert repr(ours) == repr(library), at
    elif isinstance(library, datetime):
        assert ours == library, at
        assert repr(ours) == repr(library), at  # the offset, and naive stays naive
        assert ours.utcoffset() == library.utcoffset(), at
    elif isinstance(library, str | int | float | UUID | None):
        assert ours == library, at
    else:
        assert_same(vars(ours), vars(library), f"{at}:{type(library).__name__}")


def test_every_event_of_the_previous_release_decodes_typed_as_the_library_does(mapper: LedgerMapper) -> None:
    """199 stored events of 20 topics: each takes the typed path (no fallback), and is the library's event."""
    rows = _previous_release()
    assert len(rows) >= 190
    assert len({row.topic for row in rows}) == 20  # every order event type, and the account events
    for row in rows:
        typed = typed_decoding(mapper.transcoder, row.topic)
        assert typed is not None, row.topic
        typed.decode(row.state)  # raises if this event would have gone to the library's decoding
        assert_same(mapper.to_domain_event(row), _library(mapper, row))


def test_every_event_class_but_one_has_a_typed_decoder(mapper: LedgerMapper) -> None:
    """Only an account's settings change (a dict of any values) is left to the library's decoding."""
    classes = _event_classes()
    assert len(classes) > 25
    untyped = {
        cls.__qualname__ for cls in classes if typed_decoding(mapper.transcoder, get_topic(cls)) is None
    }
    assert untyped == {"MarketplaceAccount.SettingsChanged"}


# ------------------------------------------------------------------------ events made now, any values

_OFFSETS = st.timedeltas(
    min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)
)
_TIMEZONES = st.one_of(st.none(), st.just(UTC), _OFFSETS.map(timezone))


def _values(annotation: Any) -> st.SearchStrategy[Any]:
    """Any value of the annotation's type, as the domain could hold it."""
    origin = typing.get_origin(annotation)
    if origin is not None and origin in (typing.Union, type(int | None)):
        return st.one_of(*(_values(arg) for arg in typing.get_args(annotation)))
    if origin is tuple:
        return st.lists(_values(typing.get_args(annotation)[0]), max_size=3).map(tuple)
    if annotation is type(None):
        return st.none()
    if annotation is str:
        return st.text(max_size=12)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers()
    if annotation is Decimal:
        return st.decimals()  # any exponent, NaN, sNaN, infinities
    if annotation is datetime:
        return st.datetimes(timezones=_TIMEZONES)
    if annotation is UUID:
        return st.uuids()
    assert dataclasses.is_dataclass(annotation), annotation
    hints = typing.get_type_hints(annotation)
    return st.builds(annotation, **{f.name: _values(hints[f.name]) for f in dataclasses.fields(annotation)})


@st.composite
def _events(draw: st.DrawFn, classes: list[type]) -> Any:
    """An event of any class with any values; a field with a default may be absent (as in an older event)."""
    cls = draw(st.sampled_from(classes))
    hints = typing.get_type_hints(cls)
    state: dict[str, Any] = {"originator_id": uuid4(), "originator_version": draw(st.integers(1, 99))}
    for f in dataclasses.fields(cls):
        if f.name in state:
            continue
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if has_default and draw(st.booleans()):
            continue
        state[f.name] = draw(_values(hints[f.name]))
    event = object.__new__(cls)
    object.__setattr__(event, "__dict__", state)
    return event


_TYPED_CLASSES = [c for c in _event_classes() if c.__qualname__ != "MarketplaceAccount.SettingsChanged"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=_events(_TYPED_CLASSES))
def test_events_made_now_with_any_values_decode_typed_as_the_library_does(
    mapper: LedgerMapper, event: Any
) -> None:
    """Any text, integer, decimal (NaN, infinities, any exponent), time (naive, any offset), id and value
    object, and fields absent: the typed path is taken and gives the library's event."""
    stored = mapper.to_stored_event(event)
    typed = typed_decoding(mapper.transcoder, stored.topic)
    assert typed is not None
    typed.decode(stored.state)  # no fallback
    assert_same(mapper.to_domain_event(stored), _library(mapper, stored))


# ------------------------------------------------------------------- what goes to the library's decoding


def _refunded() -> StoredEvent:
    """A refund stored by the previous release, given the `sync_off` key events stored now have."""
    row = next(row for row in _previous_release() if row.topic.endswith("Order.Refunded"))
    state = row.state.decode().replace('"prev_hash"', '"sync_off":false,"prev_hash"', 1)
    return dataclasses.replace(row, state=state.encode())


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('{"timestamp"', '{"unknown_key":1,"timestamp"'),  # a key the class does not have
        ('"quantity":1', '"quantity":1.0'),  # a float where the class says int
        ('"sync_off":false', '"sync_off":0'),  # an int where it says bool
        ('"total":{"_type_":"decimal_str","_data_":"', '"total":"'),  # plain text where it says Decimal
        ('"_data_":"10.80"', '"_data_":10.80'),  # a JSON number: the library's Decimal(10.8) of the float
        ('{"timestamp"', '{"class_version":1,"timestamp"'),  # the library pops it
        ('{"_type_":"refund_line","_data_":', '{"_data_":'),  # no `_type_`: the library keeps a plain dict
        ('"refund_line","_data_":{', '"refund_line","_data_":{"extra":1,'),  # the value object refuses it
        ('"decimal_str"', '"decimal_unknown"'),  # a transcoding that is not registered
        ('"actor":"', '"actor":null,"":"'),  # null where the class says str
    ],
)
def test_shapes_the_typed_decoder_does_not_describe_are_decoded_by_the_library(
    mapper: LedgerMapper, old: str, new: str
) -> None:
    """An event stored in another shape gives exactly what the library gives (an event, or the same error)."""
    row = _refunded()
    text = row.state.decode()
    assert old in text
    stored = dataclasses.replace(row, state=text.replace(old, new, 1).encode())
    typed = typed_decoding(mapper.transcoder, stored.topic)
    assert typed is not None
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever msgspec says: the typed decoder refuses it
        typed.decode(stored.state)
    try:
        expected = _library(mapper, stored)
    except MapperDeserialisationError as error:
        with pytest.raises(MapperDeserialisationError, match=re.escape(str(error))):
            mapper.to_domain_event(stored)
    else:
        assert_same(mapper.to_domain_event(stored), expected)


def test_an_unknown_topic_fails_as_the_library_fails(mapper: LedgerMapper) -> None:
    """No typed decoder for a topic that resolves to no class: the library's error, unchanged."""
    stored = dataclasses.replace(_refunded(), topic="ledger.aggregates.order:Order.Nothing")
    with pytest.raises(Exception) as library:  # noqa: PT011
        _library(mapper, stored)
    with pytest.raises(type(library.value)):
        mapper.to_domain_event(stored)


class _Versioned(Aggregate):
    class Happened(Aggregate.Event):
        class_version: ClassVar[int] = 2
        amount: Decimal
        note: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["note"] = "from v1"


def test_an_upcast_class_is_decoded_by_the_library() -> None:
    """A class with a `class_version` has no typed decoder: its old events are upcast by the library."""
    mapper = Ledger(env=IN_MEMORY).mapper
    assert typed_decoding(mapper.transcoder, get_topic(_Versioned.Happened)) is None
    stored = StoredEvent(
        uuid4(),
        1,
        get_topic(_Versioned.Happened),
        b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-01-02T03:04:05+00:00"},'
        b'"amount":{"_type_":"decimal_str","_data_":"1.10"}}',
    )
    event = mapper.to_domain_event(stored)
    assert event.note == "from v1"
    assert repr(event.amount) == "Decimal('1.10')"
    assert_same(event, _library(mapper, stored))

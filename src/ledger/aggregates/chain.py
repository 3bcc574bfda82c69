"""The per-order hash chain: every event carries `prev_hash` and `hash`.

`hash = SHA-256(prev_hash || canonical encoding of the event without its hash)`. The canonical encoding is
sorted-key, compact JSON of the event's topic and fields, with decimals, times, ids and enums as strings, so it
can be recomputed from stored events by anyone, at any time, without a global lock.

`canonical` states the rules. The hot path (`canonical_event_bytes`, every event ever made and every event
verified) applies the same rules through `_canonical`: one lookup of the value's exact type for the types events
are made of, a function made once per value object class (`_fields_converter`), anything else through
`canonical`; and msgspec's sorted JSON encoder, made once, which writes the same bytes as the standard library's
(`_fast_encode`). The bytes are the same (tests/unit/test_chain_encoding.py compares them with the first
implementation's, and recomputes hashes of events stored by it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, cast
from uuid import UUID

import msgspec

GENESIS_HASH = "0" * 64


def canonical(value: Any) -> Any:
    """A JSON-ready form of `value` that is the same before and after a round trip through storage."""
    if isinstance(value, Enum):
        return canonical(value.value)
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        convert = _CONVERTERS.get(type(value))
        if convert is None:  # a dataclass's fields are its class's: one converter per class
            names = tuple(f.name for f in dataclasses.fields(value))
            convert = _CONVERTERS[type(value)] = _fields_converter(names)
        return convert(value)
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    msg = f"no canonical encoding for {type(value).__name__}"
    raise TypeError(msg)


_LEAVES = frozenset({str, int, bool, type(None)})
"""The exact types that are their own canonical form (checked inline: a call per leaf is most of a walk)."""


def _canonical(value: Any) -> Any:
    """`canonical(value)`, faster for the exact types events are made of: one lookup of the value's type."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    convert = _CONVERTERS.get(kind)
    if convert is None:
        return canonical(value)
    return convert(value)


def _sequence(value: list[Any] | tuple[Any, ...]) -> list[Any]:
    return [v if type(v) in _LEAVES else _canonical(v) for v in value]


def _fields_converter(names: tuple[str, ...]) -> Callable[[Any], dict[str, Any]]:
    """`canonical` of a value object whose fields are `names`, as one function made for its class: each field
    read once, leaves inline, the rest through `_canonical` (a dict of the fields built by a loop with `getattr`
    per field took most of the hash's walk). A dataclass's field names are identifiers (`dataclasses` refuses
    others), so each is read as an attribute."""
    reads = "".join(f"    v{i} = value.{name}\n" for i, name in enumerate(names))
    items = ", ".join(
        f"{name!r}: v{i} if type(v{i}) in _LEAVES else _canonical(v{i})" for i, name in enumerate(names)
    )
    namespace: dict[str, Any] = {"_LEAVES": _LEAVES, "_canonical": _canonical}
    exec(f"def convert(value):\n{reads}    return {{{items}}}\n", namespace)  # noqa: S102
    return cast("Callable[[Any], dict[str, Any]]", namespace["convert"])


_CONVERTERS: dict[type, Callable[[Any], Any]] = {
    Decimal: str,
    UUID: str,
    datetime: datetime.isoformat,
    tuple: _sequence,
    list: _sequence,
}
"""Per exact type, its canonical form's maker: the types events are made of, and each value object class
`canonical` has met (a dataclass's fields are its class's); any other type goes through `canonical`."""


_TOPICS: dict[type, str] = {}
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_fast_encode = msgspec.json.Encoder(order="sorted").encode
"""The same bytes as `_encode(...).encode()` for what `_canonical` returns (keys sorted by code point, no spaces,
the same escapes: only `"`, `\\` and control characters, `\\uXXXX` in lower case; checked for every code point
and the stored events in tests/unit/test_chain_encoding.py), about seven times faster: the standard library's
encoder took half of the hash's time. What it cannot write (a `str` subclass, an int beyond 64 bits, a lone
surrogate) goes through `_encode` as before, which answers as it always did."""


def event_topic(event: object) -> str:
    cls = type(event)
    topic = _TOPICS.get(cls)
    if topic is None:
        topic = _TOPICS[cls] = f"{cls.__module__}:{cls.__qualname__}"
    return topic


def canonical_event_bytes(event: object) -> bytes:
    """The bytes the hash covers: the event's topic and every field but `hash`."""
    body = {k: v if type(v) in _LEAVES else _canonical(v) for k, v in vars(event).items() if k != "hash"}
    body["__topic__"] = event_topic(event)
    try:
        return _fast_encode(body)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        return _encode(body).encode()


def chain_hash(prev_hash: str, event: object) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_event_bytes(event)).hexdigest()

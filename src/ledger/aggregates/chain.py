"""The per-order hash chain: every event carries `prev_hash` and `hash`.

`hash = SHA-256(prev_hash || canonical encoding of the event without its hash)`. The canonical encoding is
sorted-key, compact JSON of the event's topic and fields, with decimals, times, ids and enums as strings, so it
can be recomputed from stored events by anyone, at any time, without a global lock.

`canonical` states the rules. The hot path (`canonical_event_bytes`, every event ever made and every event
verified) applies the same rules through `_canonical`: the common exact types first, each value object's field
names kept once per class, anything else through `canonical`; and msgspec's sorted JSON encoder, made once, which
writes the same bytes as the standard library's (`_fast_encode`). The bytes are the same (tests/unit/test_chain_encoding.py compares them with
the first implementation's, and recomputes hashes of events stored by it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any
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
        names = tuple(f.name for f in dataclasses.fields(value))
        _FIELDS[type(value)] = names
        return {name: canonical(getattr(value, name)) for name in names}
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    msg = f"no canonical encoding for {type(value).__name__}"
    raise TypeError(msg)


_FIELDS: dict[type, tuple[str, ...]] = {}
"""The field names of each value object class `canonical` has met (a dataclass's fields are its class's)."""


_LEAVES = frozenset({str, int, bool, type(None)})
"""The exact types that are their own canonical form (checked inline: a call per leaf is most of a walk)."""


def _canonical(value: Any) -> Any:
    """`canonical(value)`, faster for the exact types events are made of."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    if kind is Decimal or kind is UUID:
        return str(value)
    if kind is datetime:
        return value.isoformat()
    if kind is tuple or kind is list:
        return [v if type(v) in _LEAVES else _canonical(v) for v in value]
    names = _FIELDS.get(kind)
    if names is not None:
        return {name: v if type(v := getattr(value, name)) in _LEAVES else _canonical(v) for name in names}
    return canonical(value)


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

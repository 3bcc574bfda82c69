"""The per-order hash chain: every event carries `prev_hash` and `hash`.

`hash = SHA-256(prev_hash || canonical encoding of the event without its hash)`. The canonical encoding is
sorted-key, compact JSON of the event's topic and fields, with decimals, times, ids and enums as strings, so it
can be recomputed from stored events by anyone, at any time, without a global lock.
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
        return {f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    msg = f"no canonical encoding for {type(value).__name__}"
    raise TypeError(msg)


def event_topic(event: object) -> str:
    cls = type(event)
    return f"{cls.__module__}:{cls.__qualname__}"


def canonical_event_bytes(event: object) -> bytes:
    """The bytes the hash covers: the event's topic and every field but `hash`."""
    body = {k: canonical(v) for k, v in vars(event).items() if k != "hash"}
    body["__topic__"] = event_topic(event)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, event: object) -> str:
    digest = hashlib.sha256()
    digest.update(prev_hash.encode("ascii"))
    digest.update(canonical_event_bytes(event))
    return digest.hexdigest()

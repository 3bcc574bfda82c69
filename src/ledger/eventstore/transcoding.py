"""Stored events' JSON: the bytes the library's `JSONTranscoder` writes, made faster.

Why: encoding the events was a fifth of a bulk import's Python time. The library encodes with `json` and calls
back into Python for every value it cannot encode itself (decimals, times, ids, the value objects). Here one
Python pass turns the event's state into plain dicts, lists and strings, with each registered transcoding's
`{"_type_": ..., "_data_": ...}` in place, as the library's callback does, and msgspec writes the JSON
(compact separators, non-ASCII unescaped: the same bytes; tests/unit/test_transcoding.py compares them).
Anything outside that plain set (a float, a non-string key, a type without a transcoding) goes to the library's
encoder as before, so nothing is stored in a shape the library would not have written. Decoding: the
library's, or typed decoders that give the same events faster (decoding.py, `LedgerMapper`).

Value objects (order lines, buyers, addresses, ...) are stored as a dict of their fields under a name that never
changes (`DataclassTranscoding`, `VALUE_TRANSCODINGS`), so moving or renaming a class never breaks stored events.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
from eventsourcing.persistence import JSONTranscoder, Transcoding

from ledger.aggregates.values import Address, Buyer, Divergence, LineQuantity, OrderLine, RefundLine

_LEAVES = frozenset({str, int, bool, type(None)})
"""Values written as they are (checked inline: a call per leaf was most of the walk)."""


class _NotPlain(Exception):
    """A value the fast path leaves to the library's encoder."""


class LedgerTranscoder(JSONTranscoder):
    def __init__(self) -> None:
        super().__init__()
        self._json = msgspec.json.Encoder()

    def encode(self, obj: Any) -> bytes:
        try:
            return self._json.encode(self._plain(obj))
        except (_NotPlain, msgspec.EncodeError, UnicodeError):
            return super().encode(obj)

    def _plain(self, value: Any) -> Any:
        kind = type(value)
        if kind in _LEAVES:
            return value
        if kind is dict:
            plain: dict[str, Any] = {}
            for key, item in value.items():
                if type(key) is not str:
                    raise _NotPlain
                plain[key] = item if type(item) in _LEAVES else self._plain(item)
            return plain
        if kind is list or kind is tuple:
            return [item if type(item) in _LEAVES else self._plain(item) for item in value]
        transcoding = self.types.get(kind)
        if transcoding is not None:
            data = transcoding.encode(value)
            return {
                "_type_": transcoding.name,
                "_data_": data if type(data) in _LEAVES else self._plain(data),
            }
        if isinstance(value, str):  # a str enum: json writes its text, as msgspec does
            return str.__str__(value)
        raise _NotPlain


class DataclassTranscoding(Transcoding):
    """Stores a frozen value object as a dict of its fields, under a name that never changes."""

    def __init__(self, cls: type[Any], name: str) -> None:
        self.type = cls
        self.name = name
        self.fields = tuple(
            f.name for f in dataclasses.fields(cls)
        )  # `fields()` per call: a bulk import's hot path

    def encode(self, obj: Any) -> dict[str, Any]:
        return {name: getattr(obj, name) for name in self.fields}

    def decode(self, data: dict[str, Any]) -> Any:
        return self.type(**data)


VALUE_TRANSCODINGS = (
    (OrderLine, "order_line"),
    (LineQuantity, "line_quantity"),
    (RefundLine, "refund_line"),
    (Buyer, "buyer"),
    (Address, "address"),
    (Divergence, "divergence"),
)

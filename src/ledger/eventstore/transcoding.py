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
from collections.abc import Callable
from typing import Any, cast

import msgspec
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Transcoding,
    UUIDAsHex,
)

from ledger.aggregates.values import Address, Buyer, Divergence, LineQuantity, OrderLine, RefundLine

_LEAVES = frozenset({str, int, bool, type(None)})
"""Values written as they are (checked inline: a call per leaf was most of the walk)."""


class _NotPlain(Exception):
    """A value the fast path leaves to the library's encoder."""


class LedgerTranscoder(JSONTranscoder):
    def __init__(self) -> None:
        super().__init__()
        self._json = msgspec.json.Encoder()
        self._walks: dict[type, Callable[[Any], Any]] = {}
        """Per exact type, the function that makes its plain form (made on first sight, from the registry)."""

    def register(self, transcoding: Transcoding) -> None:
        super().register(transcoding)
        self._walks.clear()

    def encode(self, obj: Any) -> bytes:
        try:
            return self._json.encode(self._plain(obj))
        except (_NotPlain, msgspec.EncodeError, UnicodeError):
            return super().encode(obj)

    def _plain(self, value: Any) -> Any:
        kind = type(value)
        if kind in _LEAVES:
            return value
        walk = self._walks.get(kind)
        if walk is None:
            walk = self._walks[kind] = self._walk_for(kind)
        return walk(value)

    def _walk_for(self, kind: type) -> Callable[[Any], Any]:
        """The plain form's maker for values of exactly `kind`, in the order the first walk decided it: dicts,
        lists and tuples, registered transcodings, str subclasses (a str enum: json writes its text, as msgspec
        does); anything else is not plain."""
        if kind is dict:
            return self._plain_dict
        if kind is list or kind is tuple:
            return self._plain_list
        transcoding = self.types.get(kind)
        if transcoding is not None:
            return self._transcoded(transcoding)
        if issubclass(kind, str):
            return str.__str__
        return _not_plain

    def _plain_dict(self, value: dict[Any, Any]) -> dict[str, Any]:
        plain: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain
            plain[key] = item if type(item) in _LEAVES else self._plain(item)
        return plain

    def _plain_list(self, value: list[Any] | tuple[Any, ...]) -> list[Any]:
        plain = self._plain
        return [item if type(item) in _LEAVES else plain(item) for item in value]

    def _transcoded(self, transcoding: Transcoding) -> Callable[[Any], Any]:
        """`{"_type_": name, "_data_": plain form of transcoding.encode(value)}`, as the library's callback
        makes it; for the library's own transcodings of ids, decimals and times (whose data is a string) and
        for `DataclassTranscoding` (a dict of the fields) the same, made without the generic walk."""
        name = transcoding.name
        kind = type(transcoding)
        if kind is DecimalAsStr:
            return lambda value: {"_type_": name, "_data_": str(value)}
        if kind is UUIDAsHex:
            return lambda value: {"_type_": name, "_data_": value.hex}
        if kind is DatetimeAsISO:
            return lambda value: {"_type_": name, "_data_": value.isoformat()}
        if kind is DataclassTranscoding:
            assert isinstance(transcoding, DataclassTranscoding)
            return _dataclass_walk(transcoding, self._plain)
        encode = transcoding.encode
        plain = self._plain

        def walk(value: Any) -> dict[str, Any]:
            data = encode(value)
            return {"_type_": name, "_data_": data if type(data) in _LEAVES else plain(data)}

        return walk


def _not_plain(value: Any) -> Any:
    raise _NotPlain


def _dataclass_walk(transcoding: DataclassTranscoding, plain: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """One generated function per value object class: each field read once, leaves written inline, the rest
    through `plain`; the same dict as `{"_type_": name, "_data_": plain(transcoding.encode(value))}`."""
    reads = "".join(f"    v{i} = value.{field}\n" for i, field in enumerate(transcoding.fields))
    data = ", ".join(
        f"{field!r}: v{i} if type(v{i}) in _LEAVES else plain(v{i})"
        for i, field in enumerate(transcoding.fields)
    )
    source = f"def walk(value):\n{reads}    return {{'_type_': {transcoding.name!r}, '_data_': {{{data}}}}}\n"
    namespace: dict[str, Any] = {"_LEAVES": _LEAVES, "plain": plain}
    exec(compile(source, f"<stored JSON of {transcoding.type.__qualname__}>", "exec"), namespace)  # noqa: S102
    return cast("Callable[[Any], Any]", namespace["walk"])


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

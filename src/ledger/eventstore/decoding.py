"""Stored events decoded by typed msgspec decoders: the library's domain events, built mostly in C.

Why: decoding was 29-33 us of the 72 us an All Sales rebuild spends per event (BENCHMARKS.md, issue 17). The
library parses with `json` and calls back into Python for every JSON object (`object_hook`), then a
`Transcoding` per tagged value makes the `Decimal`, `UUID`, `datetime` or value object. Here each event class
has a decoder made once from its field annotations: a msgspec Struct whose fields say what is stored (a
`{"_type_": "uuid_hex", "_data_": ...}` object for a `UUID`, a list of tagged `order_line` objects for a
`tuple[OrderLine, ...]`, ...), so msgspec's C decoder checks the shape and builds the strings, numbers, ids
and lists; then one function per class, generated once from the same annotations (plain attribute loads, no
walk over a field list per event), unwraps the tagged values into the state dict the library would have made (same keys in the same order, same types: a tuple field comes back a list, a str enum a str,
an absent key stays absent), and `LedgerMapper` makes the event from it as the library's `Mapper` does.

Exactly the library's values, by construction: decimals are `Decimal(text)` and times
`datetime.fromisoformat(text)` of the stored text (the library's own calls: "1.10" keeps its exponent, a time
its stored offset), ids msgspec's `UUID` (it takes a strict subset of the texts `UUID()` takes, for the same
value), value objects made as their `DataclassTranscoding` makes them. Anything a decoder does not describe
fails its validation and goes to the library's decoding, unchanged: an unknown or extra key, a value of
another JSON type than the annotation's (a float, a plain string where a tagged value is expected, ...), a
tagged object of another name, a `class_version` (classes with upcasts are never decoded here), a topic whose
class has a field this module cannot describe (`Any`, a dict, a float). Encoding is untouched.

Key order: a decoder writes the keys in the class's field order, which is the order the stored JSON has (the
library stores `vars(event)`, filled in field order). Fields are only ever added, never reordered (events are
permanent), so an older event's keys are in the same relative order; tests/unit/test_typed_decoding.py compares keys, order and types with the
library's decoding for every event type of the previous release and of this one.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Hashable
from datetime import datetime
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

import msgspec
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    Transcoder,
    UUIDAsHex,
    find_id_convertor,
)
from eventsourcing.utils import resolve_topic

from ledger.eventstore.transcoding import DataclassTranscoding

_ENVELOPE_KEYS = frozenset({"originator_id", "originator_version"})
"""Fields that are not in the stored state (the mapper takes them from the stored event)."""

_PLAIN = (str, int, bool, type(None))
"""Annotations whose stored JSON value is the value itself. msgspec is strict where the library takes what it
finds: a stored `true` is no int for it, nor `1` a bool, nor `1.0` an int (those go to the library)."""


class _Unsupported(Exception):
    """An annotation this module cannot describe: its class is left to the library's decoding."""


class _NoTag(msgspec.Struct, tag_field="_type_", tag="\x00", gc=False):
    """A tag no transcoding has: a union with it makes msgspec require the `_type_` key of a tagged value (a
    lone tagged Struct would take an object without one, which the library would leave a plain dict)."""


def _tagged(name: str, data: Any) -> Any:
    """A `{"_type_": name, "_data_": data}` object, as the library's encoder writes every registered type."""
    struct = msgspec.defstruct(
        f"Tagged_{name}",
        [("data", data, msgspec.field(name="_data_"))],
        tag_field="_type_",
        tag=name,
        forbid_unknown_fields=True,
        gc=False,
    )
    return struct | _NoTag


class _Compiler:
    """Makes, for an annotation, the msgspec type of its stored JSON and the Python expression turning a decoded
    value of that type (a variable's name, `{}` in the expression) into what the library's decoding gives."""

    def __init__(self, transcoder: JSONTranscoder) -> None:
        self.transcoder = transcoder
        self.namespace: dict[str, Any] = {
            "UNSET": msgspec.UNSET,
            "_Decimal": Decimal,
            "_fromisoformat": datetime.fromisoformat,
            "_new": object.__new__,
            "_set": object.__setattr__,
        }
        self.makers: dict[type, str] = {}
        self.sources: list[str] = []
        self.depth = 0

    def stored(self, annotation: Any) -> tuple[Any, str | None]:
        """(msgspec type, conversion expression with `{}` for the value, or None when it is the value)."""
        if annotation in _PLAIN:
            return annotation, None
        origin = typing.get_origin(annotation)
        if origin in (types.UnionType, typing.Union):
            args = typing.get_args(annotation)
            others = [a for a in args if a is not type(None)]
            if len(others) == 1 and len(args) == 2:
                inner, convert = self.stored(others[0])
                if convert is None:
                    return inner | None, None
                return inner | None, "(None if {0} is None else " + convert + ")"
            if all(a in _PLAIN for a in args):
                return annotation, None
            raise _Unsupported(annotation)
        if origin in (tuple, list):
            args = typing.get_args(annotation)
            if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):
                raise _Unsupported(annotation)
            inner, convert = self.stored(args[0])
            if convert is None:
                return list[inner], None  # type: ignore[valid-type]
            self.depth += 1
            item = f"x{self.depth}"
            return list[inner], "[" + convert.format(item) + f" for {item} in {{0}}]"  # type: ignore[valid-type]
        if not isinstance(annotation, type):
            raise _Unsupported(annotation)
        transcoding = self.transcoder.types.get(annotation)
        if transcoding is None:
            if issubclass(annotation, str) and issubclass(annotation, enum.Enum):
                return str, None  # a str enum is stored as its text, and the library reads back a str
            raise _Unsupported(annotation)
        # Only the transcodings whose `decode` is known; the stored text is given to the library's own calls.
        kind = type(transcoding)
        if kind is DecimalAsStr:
            return _tagged(transcoding.name, str), "_Decimal({0}.data)"
        if kind is DatetimeAsISO:
            return _tagged(transcoding.name, str), "_fromisoformat({0}.data)"
        if kind is UUIDAsHex:
            return _tagged(transcoding.name, UUID), "{0}.data"
        if isinstance(transcoding, DataclassTranscoding) and kind is DataclassTranscoding:
            data, maker = self.value_object(transcoding)
            return _tagged(transcoding.name, data), maker + "({0}.data)"
        raise _Unsupported(annotation)

    def value_object(self, transcoding: DataclassTranscoding) -> tuple[Any, str]:
        """The Struct of a value object's stored fields, and the name of the function making the object from it
        as `DataclassTranscoding.decode` does (`cls(**data)`: an absent field takes its default)."""
        cls = transcoding.type
        fields = dataclasses.fields(cls)
        plain_init = (
            getattr(cls, "__post_init__", None) is None
            and "__slots__" not in vars(cls)
            and all(f.init for f in fields)
            and tuple(f.name for f in fields) == transcoding.fields
            and len(fields) == len(typing.get_type_hints(cls))  # no InitVar or ClassVar among the annotations
        )
        if not plain_init:
            raise _Unsupported(cls)  # its __init__ does more than store the fields: the library calls it
        hints = typing.get_type_hints(cls)
        specs: list[tuple[Any, ...]] = []
        items: list[str] = []
        for f in fields:
            stored, convert = self.stored(hints[f.name])
            value = (convert or "{0}").format(f"x.{f.name}")
            default: Any = f.default
            if f.default_factory is not dataclasses.MISSING:
                default = msgspec.UNSET if convert else msgspec.field(default_factory=f.default_factory)
                factory = self.constant(f.default_factory)
                value = value if not convert else f"({factory}() if x.{f.name} is UNSET else {value})"
            elif default is not dataclasses.MISSING and convert:
                # The default is the value object's, not the stored form: made here when the key is absent.
                value = f"({self.constant(default)} if x.{f.name} is UNSET else {value})"
                default = msgspec.UNSET
            specs.append((f.name, stored) if default is dataclasses.MISSING else (f.name, stored, default))
            items.append(f"{f.name!r}: {value}")
        data = msgspec.defstruct(f"Stored_{cls.__name__}", specs, forbid_unknown_fields=True, gc=False)
        name = self.makers.get(cls)
        if name is None:
            name = self.makers[cls] = f"_make_{cls.__name__}_{len(self.makers)}"
            self.sources.append(
                f"def {name}(x):\n"
                f"    o = _new({self.constant(cls)})\n"
                f"    _set(o, '__dict__', {{{', '.join(items)}}})\n"
                "    return o\n"
            )
        return data, name

    def constant(self, value: Any) -> str:
        """A name for `value` in the generated code's namespace."""
        name = f"_c{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def event(self, cls: type) -> Callable[[bytes], dict[str, Any]]:
        """The decoding of `cls`'s stored state into the library's state dict: any subset of the class's fields
        (an event stored before a field came has no key for it, and gets none)."""
        hints = typing.get_type_hints(cls)
        specs: list[tuple[str, Any, Any]] = []
        body: list[str] = []
        for f in dataclasses.fields(cls):
            if f.name in _ENVELOPE_KEYS:
                continue
            stored, convert = self.stored(hints[f.name])
            specs.append((f.name, stored, msgspec.UNSET))
            body.append(f"    v = s.{f.name}\n    if v is not UNSET:\n        d[{f.name!r}] = ")
            body.append((convert or "{0}").format("v") + "\n")
        struct = msgspec.defstruct(f"Stored_{cls.__qualname__}", specs, forbid_unknown_fields=True, gc=False)
        decode = self.constant(msgspec.json.Decoder(struct).decode)
        source = "".join(self.sources) + f"def decode(b):\n    s = {decode}(b)\n    d = {{}}\n"
        source += "".join(body) + "    return d\n"
        namespace = dict(self.namespace)
        exec(compile(source, f"<typed decoding of {cls.__qualname__}>", "exec"), namespace)  # noqa: S102
        return cast("Callable[[bytes], dict[str, Any]]", namespace["decode"])


class _Typed:
    """One event class's typed decoding: the class, its decoding (`_Compiler.event`) and its originator ids'
    conversion by type of stored id (the library's `find_id_convertor`, kept here: it is asked per event)."""

    __slots__ = ("cls", "decode", "ids")

    def __init__(self, cls: type, decode: Callable[[bytes], dict[str, Any]]) -> None:
        self.cls = cls
        self.decode = decode
        self.ids: dict[type, Callable[[Any], Any]] = {}


def typed_decoding(transcoder: Transcoder, topic: str) -> _Typed | None:
    """The typed decoding of the events of `topic`, or None if they take the library's (see the docstring)."""
    if not isinstance(transcoder, JSONTranscoder):
        return None
    try:
        cls = resolve_topic(topic)
    except Exception:  # the library's decoding raises the same error, in its own words
        return None
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)) or getattr(cls, "class_version", 1) != 1:
        return None
    try:
        decode = _Compiler(transcoder).event(cls)
    except (_Unsupported, NameError, TypeError, RecursionError):  # NameError: an unresolvable annotation
        return None
    return _Typed(cls, decode)


class LedgerMapper(Mapper[UUID]):
    """The library's `Mapper`, decoding with a typed decoder per event class when it has one (see the module's
    docstring); whatever that decoder refuses, and every topic without one, is decoded by the library."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.typed: dict[str, _Typed | None] = {}

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        topic = stored_event.topic
        try:
            typed = self.typed[topic]
        except KeyError:
            typed = self.typed[topic] = typed_decoding(self.transcoder, topic)
        if typed is None:
            return super().to_domain_event(stored_event)
        try:
            state = stored_event.state
            if self.cipher:
                state = self.cipher.decrypt(state)
            if self.compressor:
                state = self.compressor.decompress(state)
            event_state = typed.decode(state)
        except Exception:  # a shape the typed decoder does not describe: the library decodes it
            return super().to_domain_event(stored_event)
        cls = typed.cls
        originator_id = stored_event.originator_id
        id_type = type(originator_id)
        try:
            convert_id = typed.ids[id_type]
        except KeyError:
            convert_id = typed.ids[id_type] = find_id_convertor(cls, cast("Hashable", id_type))
        event_state["originator_id"] = convert_id(originator_id)
        event_state["originator_version"] = stored_event.originator_version
        domain_event: Any = object.__new__(cls)
        object.__setattr__(domain_event, "__dict__", event_state)
        return domain_event

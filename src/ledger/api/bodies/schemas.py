"""Request shapes of the v1 contract (../shared/API.md): strict msgspec Structs, unknown fields rejected.

The CLI reads the same shapes from files, so a file that `ledger import` takes is a body the API takes.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import Meta, Struct

from ledger.aggregates.errors import InvalidInputError, InvalidOrderError
from ledger.aggregates.times import RFC3339_PATTERN, parse_time, to_utc
from ledger.aggregates.values import (
    AMOUNT_PATTERN,
    MAX_AMOUNT_TEXT,
    Address,
    Buyer,
    ImportedOrder,
    OrderLine,
    PaymentStatus,
    is_currency,
    minor_units,
    parse_amount,
)

Id = Annotated[str, Meta(min_length=1, max_length=100)]
Text = Annotated[str, Meta(max_length=500)]
ShortText = Annotated[str, Meta(max_length=200)]
# Amounts and times are strings read by one parser each (values.parse_amount, times.parse_time), never by the
# JSON decoder: it would take JSON numbers, exponents, epoch seconds and lower-case `t`/`z`, which API.md's
# *Input, stated exactly* refuses (422). Their patterns refuse the wrong shape as the body is decoded (so a
# file for `ledger import` is refused whole, naming the field) and document it (OpenAPI); the parsers then
# check what a pattern cannot: the calendar, the currency's minor unit.
Amount = Annotated[
    str,
    Meta(
        max_length=MAX_AMOUNT_TEXT,
        pattern=AMOUNT_PATTERN,
        description="a decimal string in the order's currency, such as 19.99",
    ),
]
Time = Annotated[
    str,
    Meta(
        max_length=40,
        pattern=RFC3339_PATTERN,
        description="RFC 3339 with a zone, such as 2026-11-20T10:00:00Z",
        extra_json_schema={"extra": {"format": "date-time"}},
    ),
]
MAX_AHEAD = timedelta(hours=24)  # a purchase this far in the future is a typo or a wrong clock
# An order's Structs are not tracked by the garbage collector (gc=False): frozen, holding text, numbers, ids and
# each other, they can never be part of a cycle, and a bulk import decodes thousands of them, each of which would
# otherwise count toward the next collection and be walked by it (tests/unit/test_bulk_collections.py).


class LineIn(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True, gc=False):
    line_id: Id
    sku: Id
    title: Text = ""
    quantity: Annotated[int, Meta(ge=1, le=1_000_000)]
    unit_price: Amount
    tax: Amount = "0"
    shipping: Amount = "0"

    def to_domain(self, index: int, currency: str) -> OrderLine:
        """The line as the domain takes it (`index`: its place in the order, named by a refusal)."""
        places = minor_units(currency)
        return OrderLine(
            line_id=self.line_id,
            sku=self.sku,
            quantity=self.quantity,
            unit_price=_amount(self.unit_price, places, index, "unit_price", currency),
            tax=_amount(self.tax, places, index, "tax", currency),
            shipping=_amount(self.shipping, places, index, "shipping", currency),
            title=self.title,
        )


_AMOUNTS = [re.compile(r"-?[0-9]+" if n == 0 else rf"-?[0-9]+(?:\.[0-9]{{1,{n}}})?") for n in range(4)]
"""Per number of decimal places a currency has (ISO 4217: 0 to 3), an amount `parse_amount` takes without a word."""


def _amount(text: str, places: int, index: int, name: str, currency: str) -> Decimal:
    """`parse_amount(text, f"lines[{index}].{name}", currency)`, in one match for the amounts it takes: the field's
    name is made only for a refusal, which `parse_amount` words (a bulk import reads three amounts per line)."""
    if len(text) <= MAX_AMOUNT_TEXT and _AMOUNTS[places].fullmatch(text):
        return Decimal(text)
    return parse_amount(text, f"lines[{index}].{name}", currency)


class BuyerIn(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True, gc=False):
    name: ShortText
    email: Annotated[str, Meta(max_length=320)]


class AddressIn(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True, gc=False):
    name: ShortText = ""
    line1: ShortText = ""
    line2: ShortText = ""
    city: ShortText = ""
    state: ShortText = ""
    postal_code: Annotated[str, Meta(max_length=32)] = ""
    country: Annotated[str, Meta(max_length=2)] = ""
    phone: Annotated[str, Meta(max_length=40)] = ""


class OrderIn(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True, gc=False):
    account_id: UUID
    marketplace_order_id: Id
    purchased_at: Time
    currency: Annotated[str, Meta(pattern="^[A-Z]{3}$", description="an active ISO 4217 code")]
    payment_status: Literal["pending", "paid"]
    paid_at: Time | None = None
    ship_by: Time | None = None  # the marketplace's latest ship date, when it gives one
    buyer: BuyerIn
    ship_to: AddressIn | None = None
    lines: Annotated[list[LineIn], Meta(min_length=1, max_length=1000)]

    def to_domain(self) -> ImportedOrder:
        """The order as the domain takes it: amounts and times read exactly, the currency an active one. Every
        refusal is an `invalid-order` naming the field, as the domain's own checks are."""
        try:
            return self._to_domain()
        except InvalidOrderError:
            raise
        except InvalidInputError as e:
            raise InvalidOrderError(e.message, e.field) from None

    def _to_domain(self) -> ImportedOrder:
        if not is_currency(self.currency):
            raise InvalidOrderError(f"currency {self.currency!r} is not an active ISO 4217 code", "currency")
        purchased_at = to_utc(parse_time(self.purchased_at, "purchased_at"), "purchased_at")
        if purchased_at > datetime.now(UTC) + MAX_AHEAD:
            msg = f"purchased_at {self.purchased_at} is more than 24 hours in the future"
            raise InvalidOrderError(msg, "purchased_at")
        return ImportedOrder(
            marketplace_order_id=self.marketplace_order_id,
            purchased_at=purchased_at,
            currency=self.currency,
            payment_status=_PAYMENT_STATUS.get(self.payment_status) or PaymentStatus(self.payment_status),
            buyer=Buyer(self.buyer.name, self.buyer.email),
            lines=tuple(line.to_domain(i, self.currency) for i, line in enumerate(self.lines)),
            ship_to=Address(*msgspec.structs.astuple(self.ship_to)) if self.ship_to else None,
            paid_at=to_utc(parse_time(self.paid_at, "paid_at"), "paid_at") if self.paid_at else None,
            ship_by=to_utc(parse_time(self.ship_by, "ship_by"), "ship_by") if self.ship_by else None,
        )


_PAYMENT_STATUS = {status.value: status for status in PaymentStatus}
if AddressIn.__struct_fields__ != tuple(
    f.name for f in dataclasses.fields(Address)
):  # read by position above
    raise TypeError("AddressIn's fields are not Address's, in its order")


class ImportRequest(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    orders: Annotated[list[OrderIn], Meta(min_length=1, max_length=5000)]


MAX_BATCH = 1000  # orders in one `POST /v1/orders/import`


class ImportEnvelope(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`POST /v1/orders/import`'s envelope: its orders are read one by one, so one bad order refuses only itself."""

    orders: Annotated[list[msgspec.Raw], Meta(min_length=1, max_length=MAX_BATCH)]


_order_list = msgspec.json.Decoder(list[OrderIn])
_import_envelope = msgspec.json.Decoder(ImportEnvelope)
_import_request = msgspec.json.Decoder(ImportRequest)
_one_order = msgspec.json.Decoder(OrderIn)
_object_keys = msgspec.json.Decoder(dict[str, msgspec.Raw])


def decode_batch(data: bytes) -> list[OrderIn | InvalidOrderError]:
    """Each order of a bulk import's envelope, or why it cannot be read. Raises msgspec errors for the envelope
    (not JSON, not an object, no `orders` list, too many orders): only those refuse the batch whole."""
    return [_order_or_error(raw) for raw in _import_envelope.decode(data).orders]


def _order_or_error(raw: msgspec.Raw) -> OrderIn | InvalidOrderError:
    try:
        return _one_order.decode(raw)
    except msgspec.ValidationError as e:
        message, _, where = str(e).partition(" - at `$")
        return InvalidOrderError(message, where.rstrip("`").lstrip(".") or None)


def decode_orders(data: bytes) -> list[OrderIn]:
    """Orders from `{orders: [...]}`, a list of orders, or one order (JSON). Raises msgspec errors."""
    if data.lstrip()[:1] == b"[":
        return _order_list.decode(data)
    if "orders" in _object_keys.decode(data):
        return _import_request.decode(data).orders
    return [_one_order.decode(data)]

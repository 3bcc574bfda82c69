"""Request shapes of the v1 contract (../shared/API.md): strict msgspec Structs, unknown fields rejected.

The CLI reads the same shapes from files, so a file that `ledger import` takes is a body the API takes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import Meta, Struct

from ledger.aggregates.errors import InvalidOrderError
from ledger.aggregates.values import Address, Buyer, ImportedOrder, OrderLine, PaymentStatus

Id = Annotated[str, Meta(min_length=1, max_length=100)]
Text = Annotated[str, Meta(max_length=500)]
ShortText = Annotated[str, Meta(max_length=200)]
AwareTime = Annotated[datetime, Meta(tz=True)]
# A money amount: a decimal string ("19.99"). The pattern only documents the shape (OpenAPI `pattern`, for
# clients and schema-driven tests); the domain checks sign, size and precision against the currency (422).
Amount = Annotated[
    Decimal,
    Meta(
        description="a decimal string in the order's currency, such as 19.99",
        extra_json_schema={"extra": {"pattern": r"^\d{1,12}(\.\d{1,4})?$"}},
    ),
]


class LineIn(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    line_id: Id
    sku: Id
    title: Text = ""
    quantity: Annotated[int, Meta(ge=1, le=1_000_000)]
    unit_price: Amount
    tax: Amount = Decimal(0)
    shipping: Amount = Decimal(0)


class BuyerIn(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    name: ShortText
    email: Annotated[str, Meta(max_length=320)]


class AddressIn(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    name: ShortText = ""
    line1: ShortText = ""
    line2: ShortText = ""
    city: ShortText = ""
    state: ShortText = ""
    postal_code: Annotated[str, Meta(max_length=32)] = ""
    country: Annotated[str, Meta(max_length=2)] = ""
    phone: Annotated[str, Meta(max_length=40)] = ""


class OrderIn(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    account_id: UUID
    marketplace_order_id: Id
    purchased_at: AwareTime
    currency: Annotated[str, Meta(pattern="^[A-Z]{3}$")]
    payment_status: Literal["pending", "paid"]
    paid_at: AwareTime | None = None
    buyer: BuyerIn
    ship_to: AddressIn | None = None
    lines: Annotated[list[LineIn], Meta(min_length=1, max_length=1000)]

    def to_domain(self) -> ImportedOrder:
        return ImportedOrder(
            marketplace_order_id=self.marketplace_order_id,
            purchased_at=_utc(self.purchased_at, "purchased_at"),
            currency=self.currency,
            payment_status=PaymentStatus(self.payment_status),
            buyer=Buyer(self.buyer.name, self.buyer.email),
            lines=tuple(
                OrderLine(
                    line_id=line.line_id,
                    sku=line.sku,
                    quantity=line.quantity,
                    unit_price=line.unit_price,
                    tax=line.tax,
                    shipping=line.shipping,
                    title=line.title,
                )
                for line in self.lines
            ),
            ship_to=Address(**msgspec.structs.asdict(self.ship_to)) if self.ship_to else None,
            paid_at=_utc(self.paid_at, "paid_at") if self.paid_at else None,
        )


def _utc(moment: datetime, field: str) -> datetime:
    """The moment in UTC; one that falls outside years 1 to 9999 there (0001-01-01T00:00+02:00) is refused."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidOrderError(f"{field} is out of range once converted to UTC", field) from None


class ImportRequest(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    orders: Annotated[list[OrderIn], Meta(min_length=1, max_length=5000)]


_order_list = msgspec.json.Decoder(list[OrderIn])
_import_request = msgspec.json.Decoder(ImportRequest)
_one_order = msgspec.json.Decoder(OrderIn)
_object_keys = msgspec.json.Decoder(dict[str, msgspec.Raw])


def decode_orders(data: bytes) -> list[OrderIn]:
    """Orders from `{orders: [...]}`, a list of orders, or one order (JSON). Raises msgspec errors."""
    if data.lstrip()[:1] == b"[":
        return _order_list.decode(data)
    if "orders" in _object_keys.decode(data):
        return _import_request.decode(data).orders
    return [_one_order.decode(data)]

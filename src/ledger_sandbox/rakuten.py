"""The sandbox's Rakuten: the small REST shape the Rakuten adapter speaks (see `integrations/rakuten.py`).

The seller is the license key in `Authorization: ESA base64(serviceSecret:licenseKey)`. Requests are checked
against the strict Structs below; each change is applied once per `requestId`. Rules: nothing beyond a line's
open units is shipped or cancelled; a cancellation with `inventoryRestoreType: 1` puts the units back into the
shop's stock on Rakuten (kept per SKU in `extra["restocked"]`); only shipped units are refunded, never more
than the line was charged. A `buyer_cancel` event is a buyer's request (`cancelRequest`), never applied at once.
"""

from __future__ import annotations

import base64
import binascii
import random
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath

from ledger_sandbox.app import Caller, Marketplace, Sandbox
from ledger_sandbox.state import Json, Line, Order, iso, utcnow
from ledger_sandbox.strict import (
    UNAUTHORIZED,
    Invalid,
    Refusal,
    buyer_cancel,
    changed_page,
    either,
    json_response,
    known_params,
    marketplace_cancel,
    plain,
    serve,
    strict,
)

NAME = "rakuten"
BASE = "/es/2.0/orders"
MAX_LIMIT = 1000
NOT_FOUND = "ORDER_EXT_API_GET_ORDER_ERROR_001"
INVALID = "ORDER_EXT_API_UPDATE_ERROR_002"

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Units = Annotated[int, msgspec.Meta(ge=1)]
Amount = Decimal  # msgspec takes no bounds on Decimal: checked in refund_order
DeliveryCompany = Annotated[str, msgspec.Meta(pattern=r"^10[0-2][0-9]$")]

# --------------------------------------------------------------------------- accepted request shapes


class _Strict(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    pass


class _ItemUnits(_Strict):
    item_detail_id: NonEmpty
    units: Units


class ShipmentRequest(_Strict):
    request_id: NonEmpty
    delivery_company: DeliveryCompany
    shipping_number: NonEmpty
    shipping_datetime: datetime
    items: Annotated[list[_ItemUnits], msgspec.Meta(min_length=1)]
    delivery_company_name: NonEmpty | None = None


class CancellationRequest(_Strict):
    request_id: NonEmpty
    cancel_reason: Literal[
        "BUYER_REQUEST",
        "OUT_OF_STOCK",
        "UNDELIVERABLE_ADDRESS",
        "PRICE_ERROR",
        "SUSPECTED_FRAUD",
        "NON_PAYMENT",
        "OTHER",
    ]
    inventory_restore_type: Literal[0, 1]
    items: Annotated[list[_ItemUnits], msgspec.Meta(min_length=1)]


class _RefundItem(_Strict):
    item_detail_id: NonEmpty
    units: Annotated[int, msgspec.Meta(ge=0)]
    item_amount: Amount
    tax_amount: Amount
    shipping_amount: Amount


class RefundRequest(_Strict):
    request_id: NonEmpty
    refund_reason: Literal[
        "RETURNED",
        "NOT_DELIVERED",
        "NOT_AS_DESCRIBED",
        "DAMAGED",
        "SHIPPING_FEE_ADJUSTMENT",
        "GOODWILL",
        "OTHER",
    ]
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
    items: Annotated[list[_RefundItem], msgspec.Meta(min_length=1)]


# ------------------------------------------------------------------------------------- rendering


def _split(name: str) -> tuple[str, str]:
    first, _, family = name.partition(" ")
    return family, first


def progress(order: Order) -> int:
    if order.canceled:
        return 900
    if order.status == "shipped":
        return 500
    return 300 if order.paid_at is not None else 100


def _refunded(order: Order, line_id: str) -> tuple[int, Decimal]:
    units, amount = 0, Decimal(0)
    for refund in order.refunds:
        for item in refund["items"]:
            if item["item_detail_id"] == line_id:
                units += item["units"]
                amount += Decimal(item["amount"])
    return units, amount


def render(order: Order) -> Json:
    family, first = _split(order.buyer_name)
    ship_family, ship_first = _split(order.address.get("name", ""))
    request = order.buyer_cancel
    return {
        "orderNumber": order.order_id,
        "orderProgress": progress(order),
        "orderDatetime": iso(order.purchased_at),
        "updateDatetime": iso(order.updated_at),
        "paymentDatetime": iso(order.paid_at),
        "currency": order.currency,
        "orderer": {
            "familyName": family,
            "firstName": first,
            "emailAddress": order.buyer_email,
            "phoneNumber": order.address.get("phone", ""),
        },
        "shipTo": {
            "familyName": ship_family,
            "firstName": ship_first,
            "zipCode": order.address.get("postal_code", ""),
            "prefecture": order.address.get("state", ""),
            "city": order.address.get("city", ""),
            "subAddress": order.address.get("line1", ""),
            "country": order.address.get("country", ""),
            "phoneNumber": order.address.get("phone", ""),
        },
        "items": [
            {
                "itemDetailId": line.line_id,
                "manageNumber": line.sku,
                "itemName": line.title,
                "units": line.quantity,
                "price": line.unit_price,
                "taxPrice": line.tax,
                "shippingPrice": line.shipping,
                "shippedUnits": line.shipped,
                "cancelledUnits": line.cancelled,
            }
            for line in order.lines
        ],
        "cancelRequest": {"requestDatetime": iso(request["requested_at"]), "items": None}
        if request is not None and not request.get("applied")
        else None,
        "refunds": [{"refundId": r["refund_id"], "amount": Decimal(r["amount"])} for r in order.refunds],
    }


def error(status: int, code: str, message: str) -> Response[Any]:
    return json_response(
        {"MessageModelList": [{"messageType": "ERROR", "messageCode": code, "message": message}]}, status
    )


def _info(code: str, message: str, **ids: str) -> Response[Any]:
    return json_response(
        {"MessageModelList": [{"messageType": "INFO", "messageCode": code, "message": message}], **ids}
    )


def _account(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("ESA "):
        return None
    try:
        secret, _, license_key = base64.b64decode(header[4:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return license_key if secret and license_key else None


CALLER = Caller(NAME, _account, error, UNAUTHORIZED, (NOT_FOUND, "order {} not found"))


def _line(order: Order, item_detail_id: str) -> Line:
    line = order.line(item_detail_id)
    if line is None:
        raise Refusal(400, INVALID, f"order {order.order_id} has no item {item_detail_id!r}")
    return line


def _open(line: Line) -> int:
    return line.quantity - line.shipped - line.cancelled


def _wanted(order: Order, items: list[_ItemUnits], what: str) -> dict[str, int]:
    wanted: dict[str, int] = {}
    for item in items:
        wanted[item.item_detail_id] = wanted.get(item.item_detail_id, 0) + item.units
    for line_id, units in wanted.items():
        line = _line(order, line_id)
        if units > _open(line):
            raise Refusal(400, INVALID, f"item {line_id} has {_open(line)} units to {what}, not {units}")
    return wanted


# ------------------------------------------------------------------------------------ the routes


@get(BASE)
async def search_orders(request: Request[Any, Any, Any]) -> Response[Any]:
    """Orders changed at or after `updatedFrom`, oldest change first, keyset-paged by `cursor`."""

    def work(sandbox: Sandbox, account: str, _: bytes) -> Response[Any]:
        known_params(request, {"updatedFrom", "limit", "cursor"})
        page, next_cursor = changed_page(
            request,
            sandbox,
            account,
            CALLER,
            "searchOrder",
            since="updatedFrom",
            size="limit",
            most=MAX_LIMIT,
            cursor="cursor",
        )
        return json_response({"orders": [render(o) for o in page], "nextCursor": next_cursor})

    return await serve(request, CALLER, "searchOrder", work)


@get(BASE + "/{order_number:str}")
async def get_order(request: Request[Any, Any, Any], order_number: FromPath[str]) -> Response[Any]:
    def work(sandbox: Sandbox, account: str, _: bytes) -> Response[Any]:
        return json_response({"order": render(CALLER.order(sandbox, account, order_number))})

    return await serve(request, CALLER, "getOrder", work)


@post(BASE + "/{order_number:str}/shipments", status_code=200)
async def update_order_shipping(
    request: Request[Any, Any, Any], order_number: FromPath[str]
) -> Response[Any]:
    def work(sandbox: Sandbox, account: str, body: bytes) -> Response[Any]:
        shipment = strict(body, ShipmentRequest)
        if shipment.shipping_datetime.tzinfo is None:
            raise Invalid(["shippingDatetime needs a time zone"])
        if shipment.delivery_company == "1000" and not shipment.delivery_company_name:
            raise Invalid(["deliveryCompany 1000 (other) needs deliveryCompanyName"])
        order = CALLER.order(sandbox, account, order_number)

        def apply() -> Json:
            if order.canceled:
                raise Refusal(400, INVALID, f"order {order.order_id} is cancelled")
            wanted = _wanted(order, shipment.items, "ship")
            for line_id, units in wanted.items():
                _line(order, line_id).shipped += units
            detail_id = str(sandbox.state.next_number())
            order.shipments.append(
                {
                    "shipping_detail_id": detail_id,
                    "request_id": shipment.request_id,
                    "delivery_company": shipment.delivery_company,
                    "delivery_company_name": shipment.delivery_company_name,
                    "shipping_number": shipment.shipping_number,
                    "shipped_at": shipment.shipping_datetime,
                    "items": wanted,
                }
            )
            order.touch()
            return {"shippingDetailId": detail_id}

        result, _ = sandbox.state.apply_once(
            NAME, account, "updateOrderShipping", shipment.request_id, order.order_id, apply
        )
        return _info("ORDER_EXT_API_UPDATE_ORDERSHIPPING_INFO_101", "shipping registered", **result)

    return await serve(request, CALLER, "updateOrderShipping", work)


@post(BASE + "/{order_number:str}/cancellations", status_code=200)
async def cancel_order(request: Request[Any, Any, Any], order_number: FromPath[str]) -> Response[Any]:
    def work(sandbox: Sandbox, account: str, body: bytes) -> Response[Any]:
        cancellation = strict(body, CancellationRequest)
        order = CALLER.order(sandbox, account, order_number)

        def apply() -> Json:
            wanted = _wanted(order, cancellation.items, "cancel")
            restock = cancellation.inventory_restore_type == 1
            restocked: dict[str, int] = order.extra.setdefault("restocked", {})
            for line_id, units in wanted.items():
                line = _line(order, line_id)
                line.cancelled += units
                if restock:
                    restocked[line.sku] = restocked.get(line.sku, 0) + units
            cancellation_id = str(sandbox.state.next_number())
            order.cancellations.append(
                {
                    "cancellation_id": cancellation_id,
                    "request_id": cancellation.request_id,
                    "reason": cancellation.cancel_reason,
                    "restock": restock,
                    "items": wanted,
                }
            )
            if all(line.cancelled == line.quantity for line in order.lines):
                order.canceled = True
            order.touch()
            return {"cancellationId": cancellation_id}

        result, _ = sandbox.state.apply_once(
            NAME, account, "cancelOrder", cancellation.request_id, order.order_id, apply
        )
        return _info("ORDER_EXT_API_CANCEL_ORDER_INFO_101", "cancellation registered", **result)

    return await serve(request, CALLER, "cancelOrder", work)


@post(BASE + "/{order_number:str}/refunds", status_code=200)
async def refund_order(request: Request[Any, Any, Any], order_number: FromPath[str]) -> Response[Any]:
    def work(sandbox: Sandbox, account: str, body: bytes) -> Response[Any]:
        refund = strict(body, RefundRequest)
        negative = [
            f"items[{n}]: amounts are not negative"
            for n, i in enumerate(refund.items)
            if min(i.item_amount, i.tax_amount, i.shipping_amount) < 0
        ]
        if negative:
            raise Invalid(negative)
        order = CALLER.order(sandbox, account, order_number)
        if refund.currency != order.currency:
            raise Refusal(400, INVALID, f"currency {refund.currency} is not the order's {order.currency}")

        def apply() -> Json:
            items: list[Json] = []
            for item in refund.items:
                line = _line(order, item.item_detail_id)
                units, amount = _refunded(order, line.line_id)
                total = item.item_amount + item.tax_amount + item.shipping_amount
                if not line.shipped or item.units + units > line.shipped:
                    raise Refusal(400, INVALID, f"item {line.line_id}: only shipped units are refunded")
                if amount + total > line.unit_price * line.quantity + line.tax + line.shipping:
                    raise Refusal(400, INVALID, f"item {line.line_id}: refunds would pass what was charged")
                items.append({"item_detail_id": line.line_id, "units": item.units, "amount": str(total)})
            refund_id = str(sandbox.state.next_number())
            amount = sum((Decimal(i["amount"]) for i in items), Decimal(0))
            order.refunds.append(
                {
                    "refund_id": refund_id,
                    "request_id": refund.request_id,
                    "reason": refund.refund_reason,
                    "items": items,
                    "amount": str(amount),
                }
            )
            order.touch()
            return {"refundId": refund_id}

        result, _ = sandbox.state.apply_once(
            NAME, account, "refundOrder", refund.request_id, order.order_id, apply
        )
        return _info("ORDER_EXT_API_REFUND_ORDER_INFO_101", "refund registered", **result)

    return await serve(request, CALLER, "refundOrder", work)


# ------------------------------------------------------------------------------ the module's hooks


def new_order_id(rng: random.Random) -> str:
    return f"{rng.randint(100000, 999999)}-{utcnow():%Y%m%d}-{rng.randint(0, 10**10 - 1):010d}"


# A buyer's cancellation is a request on Rakuten (`cancelRequest`), which the shop answers.
# Rakuten's own cancellation (`marketplace_cancel`) shows as `cancelledUnits` and, once nothing is left open,
# `orderProgress` 900.
event = either(buyer_cancel("BUYER_REQUEST"), marketplace_cancel("SHOP_REASON"))


def describe(sandbox: Sandbox, order: Order) -> Json:
    return {"rakuten": plain(render(order)), "restocked": dict(order.extra.get("restocked", {}))}


MARKETPLACE = Marketplace(
    name=NAME,
    routes=[search_orders, get_order, update_order_shipping, cancel_order, refund_order],
    new_order_id=new_order_id,
    error=error,
    event=event,
    describe=describe,
)

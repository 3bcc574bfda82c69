"""The sandbox's Jet: list and get orders, ship, cancel a whole order, refund (see `integrations/jet.py`).

The seller is the Bearer token. Requests are checked against the strict Structs below. Each change is applied
once per Jet's merchant id for it: `alt_shipment_id`, `alt_cancel_id`, `alt_refund_id`. Jet's rules: a
cancellation is of the whole order and only before anything shipped; only shipped units are refunded, never
more than the item was charged. A `buyer_cancel` event is a customer's request (`request_order_cancel_qty`).
"""

from __future__ import annotations

import random
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post, put
from litestar.params import FromPath

from ledger_sandbox.app import Caller, Marketplace, Sandbox
from ledger_sandbox.state import Json, Line, Order, iso
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

NAME = "jet"
MAX_PAGE = 1000

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Amount = Decimal  # msgspec takes no bounds on Decimal: checked in create_refund
CARRIERS = Literal[
    "UPS", "USPS", "FedEx", "DHL", "OnTrac", "FedEx SmartPost", "UPS SurePost", "DHL Global Mail", "Other"
]
CANCEL_REASONS = Literal[
    "Customer Requested",
    "Out of Stock",
    "Undeliverable Address",
    "Pricing Error",
    "Fraud",
    "Payment Not Received",
    "Other",
]
REFUND_REASONS = Literal[
    "No longer want this item",
    "Item never arrived",
    "Website description is inaccurate",
    "Item arrived damaged",
    "Shipping cost adjustment",
    "Goodwill gesture",
    "Other",
]

# --------------------------------------------------------------------------- accepted request shapes


class _Strict(msgspec.Struct, forbid_unknown_fields=True):
    pass


class _ShipmentItem(_Strict):
    merchant_sku: NonEmpty
    response_shipment_sku_quantity: Annotated[int, msgspec.Meta(ge=1)]
    order_item_id: NonEmpty | None = None


class _Shipment(_Strict):
    alt_shipment_id: NonEmpty
    shipment_tracking_number: NonEmpty
    response_shipment_date: datetime
    carrier: CARRIERS
    shipment_items: Annotated[list[_ShipmentItem], msgspec.Meta(min_length=1)]


class ShippedRequest(_Strict):
    shipments: Annotated[list[_Shipment], msgspec.Meta(min_length=1)]


class CancelRequest(_Strict):
    alt_cancel_id: NonEmpty
    cancel_reason: CANCEL_REASONS


class _RefundAmount(_Strict):
    principal: Amount
    tax: Amount
    shipping_cost: Amount
    shipping_tax: Amount


class _RefundItem(_Strict):
    order_item_id: NonEmpty
    order_return_refund_qty: Annotated[int, msgspec.Meta(ge=0)]
    refund_reason: REFUND_REASONS
    refund_amount: _RefundAmount


class RefundRequest(_Strict):
    items: Annotated[list[_RefundItem], msgspec.Meta(min_length=1)]


# ------------------------------------------------------------------------------------- rendering


def status(order: Order) -> str:
    if order.canceled or order.status == "shipped":
        return "complete"
    return "inprogress" if order.status == "partially_shipped" else "ready"


def _refunded(order: Order, line_id: str) -> tuple[int, Decimal]:
    units, amount = 0, Decimal(0)
    for refund in order.refunds:
        for item in refund["items"]:
            if item["order_item_id"] == line_id:
                units += item["units"]
                amount += Decimal(item["amount"])
    return units, amount


def render(order: Order) -> Json:
    request = order.buyer_cancel
    requested = request is not None and not request.get("applied") and not order.canceled
    return {
        "merchant_order_id": order.order_id,
        "reference_order_id": order.extra.get("reference_order_id", order.order_id[:12]),
        "status": status(order),
        "order_placed_date": iso(order.purchased_at),
        "order_last_update": iso(order.updated_at),
        "hash_email": order.buyer_email,
        "buyer": {"name": order.buyer_name, "phone_number": order.address.get("phone", "")},
        "shipping_to": {
            "recipient": {
                "name": order.address.get("name", ""),
                "phone_number": order.address.get("phone", ""),
            },
            "address": {
                "address1": order.address.get("line1", ""),
                "address2": order.address.get("line2", ""),
                "city": order.address.get("city", ""),
                "state": order.address.get("state", ""),
                "zip_code": order.address.get("postal_code", ""),
            },
        },
        "order_items": [
            {
                "order_item_id": line.line_id,
                "merchant_sku": line.sku,
                "product_title": line.title,
                "request_order_quantity": line.quantity,
                "request_order_cancel_qty": line.quantity - line.shipped - line.cancelled if requested else 0,
                "item_price": {
                    "base_price": line.unit_price,
                    "item_tax": line.tax,
                    "item_shipping_cost": line.shipping,
                    "item_shipping_tax": Decimal("0.00"),
                },
                "shipped_quantity": line.shipped,
                "cancelled_quantity": line.cancelled,
            }
            for line in order.lines
        ],
        "refunds": [
            {
                "alt_refund_id": r["alt_refund_id"],
                "refund_authorization_id": r["refund_authorization_id"],
                "refund_total": Decimal(r["amount"]),
            }
            for r in order.refunds
        ],
    }


def error(status: int, code: str, message: str) -> Response[Any]:
    return json_response({"errors": [message], "error_code": code}, status)


def _account(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("Authorization", "")
    token = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""
    return token or None


CALLER = Caller(NAME, _account, error, UNAUTHORIZED, ("NotFound", "order {} not found"))


def _item(order: Order, order_item_id: str | None, sku: str) -> Line:
    if order_item_id is not None:
        line = order.line(order_item_id)
        if line is None or line.sku != sku:
            raise Refusal(
                400, "BadRequest", f"order {order.order_id} has no item {order_item_id} with SKU {sku}"
            )
        return line
    found = [line for line in order.lines if line.sku == sku]
    if not found:
        raise Refusal(400, "BadRequest", f"order {order.order_id} has no SKU {sku}")
    return found[0]


# ------------------------------------------------------------------------------------ the routes


@get("/api/orders")
async def list_orders(request: Request[Any, Any, Any]) -> Response[Any]:
    def work(sandbox: Sandbox, account: str, _: bytes) -> Response[Any]:
        known_params(request, {"updated_since", "page_size", "page_token"})
        page, next_token = changed_page(
            request,
            sandbox,
            account,
            CALLER,
            "listOrders",
            since="updated_since",
            size="page_size",
            most=MAX_PAGE,
            cursor="page_token",
        )
        return json_response({"orders": [render(o) for o in page], "next_page_token": next_token})

    return await serve(request, CALLER, "listOrders", work)


@get("/api/orders/withoutShipmentDetail/{merchant_order_id:str}")
async def order_details(request: Request[Any, Any, Any], merchant_order_id: FromPath[str]) -> Response[Any]:
    def work(sandbox: Sandbox, account: str, _: bytes) -> Response[Any]:
        return json_response(render(CALLER.order(sandbox, account, merchant_order_id)))

    return await serve(request, CALLER, "getOrder", work)


@put("/api/orders/{merchant_order_id:str}/shipped", status_code=200)
async def ship_order(request: Request[Any, Any, Any], merchant_order_id: FromPath[str]) -> Response[Any]:
    def work(sandbox: Sandbox, account: str, body: bytes) -> Response[Any]:
        shipped = strict(body, ShippedRequest)
        for shipment in shipped.shipments:
            if shipment.response_shipment_date.tzinfo is None:
                raise Invalid(["response_shipment_date needs a time zone"])
        order = CALLER.order(sandbox, account, merchant_order_id)
        for shipment in shipped.shipments:

            def apply(shipment: _Shipment = shipment) -> Json:
                if order.canceled:
                    raise Refusal(400, "BadRequest", f"order {order.order_id} is cancelled")
                wanted: dict[str, int] = {}
                lines: dict[str, Line] = {}
                for item in shipment.shipment_items:
                    line = _item(order, item.order_item_id, item.merchant_sku)
                    lines[line.line_id] = line
                    wanted[line.line_id] = wanted.get(line.line_id, 0) + item.response_shipment_sku_quantity
                for line_id, units in wanted.items():
                    target = lines[line_id]
                    if units > target.quantity - target.shipped - target.cancelled:
                        raise Refusal(
                            400, "BadRequest", f"item {line_id} has fewer than {units} units to ship"
                        )
                for line_id, units in wanted.items():
                    lines[line_id].shipped += units
                order.shipments.append(
                    {
                        "alt_shipment_id": shipment.alt_shipment_id,
                        "carrier": shipment.carrier,
                        "tracking_number": shipment.shipment_tracking_number,
                        "shipped_at": shipment.response_shipment_date,
                        "items": wanted,
                    }
                )
                order.touch()
                return {"items": wanted}

            sandbox.state.apply_once(
                NAME, account, "shipOrder", shipment.alt_shipment_id, order.order_id, apply
            )
        return Response(content=b"", status_code=204)

    return await serve(request, CALLER, "shipOrder", work)


@put("/api/orders/{merchant_order_id:str}/cancel", status_code=200)
async def cancel_order(request: Request[Any, Any, Any], merchant_order_id: FromPath[str]) -> Response[Any]:
    """The whole order, and only while nothing of it has shipped."""

    def work(sandbox: Sandbox, account: str, body: bytes) -> Response[Any]:
        cancel = strict(body, CancelRequest)
        order = CALLER.order(sandbox, account, merchant_order_id)

        def apply() -> Json:
            if any(line.shipped for line in order.lines):
                raise Refusal(
                    400, "BadRequest", f"order {order.order_id} has shipped: Jet cancels whole orders only"
                )
            if order.canceled:
                raise Refusal(400, "BadRequest", f"order {order.order_id} is already cancelled")
            for line in order.lines:
                line.cancelled = line.quantity
            order.canceled = True
            order.cancellations.append(
                {"alt_cancel_id": cancel.alt_cancel_id, "reason": cancel.cancel_reason}
            )
            order.touch()
            return {"reason": cancel.cancel_reason}

        sandbox.state.apply_once(NAME, account, "cancelOrder", cancel.alt_cancel_id, order.order_id, apply)
        return Response(content=b"", status_code=204)

    return await serve(request, CALLER, "cancelOrder", work)


@post("/api/refunds/{merchant_order_id:str}/{alt_refund_id:str}", status_code=201)
async def create_refund(
    request: Request[Any, Any, Any], merchant_order_id: FromPath[str], alt_refund_id: FromPath[str]
) -> Response[Any]:
    def work(sandbox: Sandbox, account: str, body: bytes) -> Response[Any]:
        refund = strict(body, RefundRequest)
        negative = [
            f"items[{n}].refund_amount: amounts are not negative"
            for n, i in enumerate(refund.items)
            if min(msgspec.structs.astuple(i.refund_amount)) < 0
        ]
        if negative:
            raise Invalid(negative)
        order = CALLER.order(sandbox, account, merchant_order_id)

        def apply() -> Json:
            items: list[Json] = []
            for item in refund.items:
                line = order.line(item.order_item_id)
                if line is None:
                    raise Refusal(
                        400, "BadRequest", f"order {order.order_id} has no item {item.order_item_id}"
                    )
                units, amount = _refunded(order, line.line_id)
                money = item.refund_amount
                total = money.principal + money.tax + money.shipping_cost + money.shipping_tax
                if not line.shipped or units + item.order_return_refund_qty > line.shipped:
                    raise Refusal(400, "BadRequest", f"item {line.line_id}: only shipped units are refunded")
                if amount + total > line.unit_price * line.quantity + line.tax + line.shipping:
                    raise Refusal(
                        400, "BadRequest", f"item {line.line_id}: refunds would pass what was charged"
                    )
                items.append(
                    {
                        "order_item_id": line.line_id,
                        "units": item.order_return_refund_qty,
                        "amount": str(total),
                    }
                )
            authorization = f"{sandbox.state.next_number():08d}-jet-refund"
            order.refunds.append(
                {
                    "alt_refund_id": alt_refund_id,
                    "refund_authorization_id": authorization,
                    "items": items,
                    "amount": str(sum((Decimal(i["amount"]) for i in items), Decimal(0))),
                }
            )
            order.touch()
            return {"refund_authorization_id": authorization, "refund_status": "accepted"}

        result, _ = sandbox.state.apply_once(
            NAME, account, "createRefund", alt_refund_id, order.order_id, apply
        )
        return json_response(result, 201)

    return await serve(request, CALLER, "createRefund", work)


# ------------------------------------------------------------------------------ the module's hooks


def new_order_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


# A customer's cancellation is a request on Jet (`request_order_cancel_qty` on the open items).
# Jet's own cancellation (`marketplace_cancel`) shows as each item's `cancelled_quantity`, the order `complete`.
event = either(buyer_cancel("Customer Requested"), marketplace_cancel("Fraud"))


def describe(sandbox: Sandbox, order: Order) -> Json:
    return {"jet": plain(render(order))}


MARKETPLACE = Marketplace(
    name=NAME,
    routes=[list_orders, order_details, ship_order, cancel_order, create_refund],
    new_order_id=new_order_id,
    error=error,
    event=event,
    describe=describe,
)

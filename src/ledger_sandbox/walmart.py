"""The sandbox's Walmart: Marketplace API v3 orders (list, get, acknowledge, ship, cancel and refund by line).

Shapes follow Walmart's public documentation (no spec file exists here): requests are checked against the
strict Structs below, so an unknown field, a missing one or a code Walmart does not know is a schema
violation. The seller is the `WM_SEC.ACCESS_TOKEN` (a token `POST /v3/token` issued names its client id; any
other token is taken as the seller's name); every change is applied once per `WM_QOS.CORRELATION_ID` (the
adapter sends its idempotency key there), and the same correlation id again answers the first result.
Line numbers are "1", "2"... in the order's line order. Walmart's own rules hold: nothing beyond a line's open
units is shipped or cancelled, only shipped lines are refunded (negative amounts, at most what was charged).
A `buyer_cancel` event is a customer's request (`intentToCancel` on the open lines), never applied at once.
"""

from __future__ import annotations

import base64
import binascii
import random
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlencode

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath

from ledger_sandbox.app import Caller, Marketplace, Sandbox
from ledger_sandbox.state import Json, Line, Order, parse_time, utcnow
from ledger_sandbox.strict import (
    UNAUTHORIZED,
    Invalid,
    Refusal,
    buyer_cancel,
    either,
    int_param,
    json_response,
    known_params,
    marketplace_cancel,
    plain,
    serve,
    strict,
)

NAME = "walmart"
MAX_LIMIT = 200
NOT_FOUND = "CONTENT_NOT_FOUND.GMP_ORDER_API"
INVALID = "INVALID_REQUEST_CONTENT.GMP_ORDER_API"

CANCELLATION_REASONS = Literal[
    "CUSTOMER_REQUESTED_SELLER_TO_CANCEL",
    "SELLER_CANCEL_OUT_OF_STOCK",
    "SELLER_CANCEL_PRICING_ERROR",
    "SELLER_CANCEL_FRAUD_STOP_SHIPMENT",
    "SELLER_CANCEL_ADDRESS_NOT_SERVICEABLE",
]
REFUND_REASONS = Literal[
    "BillingError",
    "TaxExemptCustomer",
    "ItemNotAsAdvertised",
    "IncorrectItemReceived",
    "CancelledYetShipped",
    "ItemNotReceivedByCustomer",
    "IncorrectShippingPrice",
    "DamagedItem",
    "DefectiveItem",
    "CustomerChangedMind",
    "CustomerReceivedItemLate",
    "Missing Parts / Instructions",
    "Finance -> Goodwill",
    "Finance -> Rollback",
]
METHOD_CODES = Literal["Standard", "Express", "OneDay", "Freight", "WhiteGlove", "Value"]
CARRIERS = Literal["UPS", "USPS", "FedEx", "DHL", "OnTrac", "Airborne", "LaserShip", "Streamlite", "Ensenda"]
Quantity = Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]*$")]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]

# --------------------------------------------------------------------------- accepted request shapes


class _Strict(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    pass


class _Money(_Strict):
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
    amount: Decimal


class _Tax(_Strict):
    tax_name: NonEmpty
    tax_amount: _Money


class _Charge(_Strict):
    charge_type: Literal["PRODUCT", "SHIPPING"]
    charge_name: NonEmpty
    charge_amount: _Money
    tax: _Tax | None = None


class _StatusQuantity(_Strict):
    unit_of_measurement: Literal["EACH", "EA"]
    amount: Quantity


class _CarrierName(_Strict):
    carrier: CARRIERS | None = None
    other_carrier: NonEmpty | None = None


class _TrackingInfo(_Strict):
    ship_date_time: int
    carrier_name: _CarrierName
    method_code: METHOD_CODES
    tracking_number: NonEmpty
    tracking_url: str | None = msgspec.field(default=None, name="trackingURL")


class _ShipStatus(_Strict):
    status: Literal["Shipped"]
    status_quantity: _StatusQuantity
    tracking_info: _TrackingInfo


class _ShipStatuses(_Strict):
    order_line_status: Annotated[list[_ShipStatus], msgspec.Meta(min_length=1)]


class _ShipLine(_Strict):
    line_number: NonEmpty
    order_line_statuses: _ShipStatuses
    seller_order_id: str | None = None
    intent_to_cancel_override: bool | None = None


class _ShipLines(_Strict):
    order_line: Annotated[list[_ShipLine], msgspec.Meta(min_length=1)]


class _OrderShipment(_Strict):
    order_lines: _ShipLines


class ShipRequest(_Strict):
    order_shipment: _OrderShipment


class _CancelStatus(_Strict):
    status: Literal["Cancelled"]
    cancellation_reason: CANCELLATION_REASONS
    status_quantity: _StatusQuantity


class _CancelStatuses(_Strict):
    order_line_status: Annotated[list[_CancelStatus], msgspec.Meta(min_length=1)]


class _CancelLine(_Strict):
    line_number: NonEmpty
    order_line_statuses: _CancelStatuses


class _CancelLines(_Strict):
    order_line: Annotated[list[_CancelLine], msgspec.Meta(min_length=1)]


class _OrderCancellation(_Strict):
    order_lines: _CancelLines


class CancelRequest(_Strict):
    order_cancellation: _OrderCancellation


class _RefundCharge(_Strict):
    refund_reason: REFUND_REASONS
    charge: _Charge


class _RefundCharges(_Strict):
    refund_charge: Annotated[list[_RefundCharge], msgspec.Meta(min_length=1)]


class _Refund(_Strict):
    refund_charges: _RefundCharges
    refund_comments: str | None = None


class _Refunds(_Strict):
    refund: Annotated[list[_Refund], msgspec.Meta(min_length=1)]


class _RefundLine(_Strict):
    line_number: NonEmpty
    refunds: _Refunds
    is_full_refund: bool | None = None


class _RefundLines(_Strict):
    order_line: Annotated[list[_RefundLine], msgspec.Meta(min_length=1)]


class _OrderRefund(_Strict):
    purchase_order_id: NonEmpty
    order_lines: _RefundLines


class RefundRequest(_Strict):
    order_refund: _OrderRefund


# ------------------------------------------------------------------------------------- rendering


def _millis(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _money(order: Order, amount: Decimal) -> Json:
    return {"currency": order.currency, "amount": amount}


def _quantity(units: int) -> Json:
    return {"unitOfMeasurement": "EACH", "amount": str(units)}


def _number(order: Order, line: Line) -> str:
    return str(order.lines.index(line) + 1)


def _line_by_number(order: Order, number: str) -> Line:
    if number.isdigit() and 1 <= int(number) <= len(order.lines):
        return order.lines[int(number) - 1]
    raise Refusal(400, INVALID, f"order {order.order_id} has no line {number!r}")


def _open(line: Line) -> int:
    return line.quantity - line.shipped - line.cancelled


def render(order: Order) -> Json:
    """The order as `GET /v3/orders` lists it."""
    lines = []
    for number, line in enumerate(order.lines, 1):
        key = str(number)
        charges: list[Json] = [
            {
                "chargeType": "PRODUCT",
                "chargeName": "ItemPrice",
                "chargeAmount": _money(order, line.unit_price * line.quantity),
                "tax": {"taxName": "Tax1", "taxAmount": _money(order, line.tax)},
            }
        ]
        if line.shipping:
            charges.append(
                {
                    "chargeType": "SHIPPING",
                    "chargeName": "Shipping",
                    "chargeAmount": _money(order, line.shipping),
                    "tax": None,
                }
            )
        statuses: list[Json] = []
        if line.shipped:
            tracking = next(
                (s["tracking"] for s in reversed(order.shipments) if key in s["lines"]),
                None,
            )
            statuses.append(
                {"status": "Shipped", "statusQuantity": _quantity(line.shipped), "trackingInfo": tracking}
            )
        if line.cancelled:
            reason = next(
                (c["reason"] for c in reversed(order.cancellations) if key in c["lines"]),
                "CUSTOMER_REQUESTED_SELLER_TO_CANCEL",
            )
            statuses.append(
                {
                    "status": "Cancelled",
                    "statusQuantity": _quantity(line.cancelled),
                    "cancellationReason": reason,
                }
            )
        if _open(line):
            status = "Acknowledged" if order.acknowledged_at is not None else "Created"
            statuses.append({"status": status, "statusQuantity": _quantity(_open(line))})
        refund_charges = [c for r in order.refunds if r["line_number"] == key for c in r["charges"]]
        refunds = [r for r in order.refunds if r["line_number"] == key]
        lines.append(
            {
                "lineNumber": key,
                "item": {"productName": line.title, "sku": line.sku},
                "charges": {"charge": charges},
                "orderLineQuantity": _quantity(line.quantity),
                "statusDate": _millis(order.updated_at),
                "orderLineStatuses": {"orderLineStatus": statuses},
                "refund": {
                    "refundId": refunds[-1]["refund_id"],
                    "refundComments": refunds[-1]["comments"],
                    "refundCharges": {"refundCharge": refund_charges},
                }
                if refunds
                else None,
                "intentToCancel": bool(
                    order.buyer_cancel is not None and not order.buyer_cancel.get("applied") and _open(line)
                ),
                "fulfillment": {"fulfillmentOption": "S2H", "shipMethod": "STANDARD"},
            }
        )
    address = order.address
    return {
        "purchaseOrderId": order.order_id,
        "customerOrderId": order.extra.get("customer_order_id", f"2{order.order_id[1:]}"),
        "customerEmailId": order.buyer_email,
        "orderType": "REGULAR",
        "orderDate": _millis(order.purchased_at),
        "shippingInfo": {
            "phone": address.get("phone", ""),
            "estimatedDeliveryDate": _millis(order.purchased_at) + 5 * 86_400_000,
            "estimatedShipDate": _millis(order.purchased_at) + 2 * 86_400_000,
            "methodCode": "Standard",
            "postalAddress": {
                "name": address.get("name", ""),
                "address1": address.get("line1", ""),
                "address2": address.get("line2") or None,
                "city": address.get("city", ""),
                "state": address.get("state", ""),
                "postalCode": address.get("postal_code", ""),
                "country": {"US": "USA"}.get(address.get("country", ""), address.get("country", "")),
                "addressType": "RESIDENTIAL",
            },
        },
        "orderLines": {"orderLine": lines},
    }


def error(status: int, code: str, message: str) -> Response[Any]:
    """Walmart's error body."""
    body: Json = {
        "errors": {
            "error": [
                {
                    "code": code,
                    "description": message,
                    "info": message,
                    "severity": "ERROR",
                    "category": "APPLICATION" if status >= 500 else "DATA",
                    "causes": [],
                    "errorIdentifiers": {},
                }
            ]
        }
    }
    return json_response(body, status)


ISSUED_PREFIX = "wmt."


def issue_token(client_id: str) -> str:
    """The access token `POST /v3/token` gives: it names the seller (the client id) for later calls."""
    return ISSUED_PREFIX + base64.urlsafe_b64encode(client_id.encode()).decode("ascii")


def _account(request: Request[Any, Any, Any]) -> str | None:
    """The seller: the client id behind a token this sandbox issued, or any other token as it is."""
    token = request.headers.get("WM_SEC.ACCESS_TOKEN") or ""
    if not token.startswith(ISSUED_PREFIX):
        return token or None
    try:
        return base64.urlsafe_b64decode(token[len(ISSUED_PREFIX) :].encode()).decode() or None
    except (binascii.Error, UnicodeDecodeError):
        return None  # not one this sandbox issued: 401, as for an expired token


CALLER = Caller(NAME, _account, error, UNAUTHORIZED, (NOT_FOUND, "purchase order {} not found"))


def _correlation(request: Request[Any, Any, Any]) -> str:
    value = request.headers.get("WM_QOS.CORRELATION_ID")
    if not value:
        raise Invalid(["header WM_QOS.CORRELATION_ID is required"])
    if not request.headers.get("WM_SVC.NAME"):
        raise Invalid(["header WM_SVC.NAME is required"])
    return value


def _units(status_quantity: _StatusQuantity) -> int:
    return int(status_quantity.amount)


# ------------------------------------------------------------------------------------ the routes

LIST_PARAMS = {
    "createdStartDate",
    "createdEndDate",
    "lastModifiedStartDate",
    "lastModifiedEndDate",
    "limit",
    "hasMoreElements",
    "soIndex",
    "poIndex",
    "status",
    "purchaseOrderId",
    "customerOrderId",
    "sku",
    "productInfo",
}


def _time_param(request: Request[Any, Any, Any], name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ValueError:
        raise Invalid([f"query parameter {name!r}: {raw!r} is not an ISO 8601 time"]) from None


def _client(request: Request[Any, Any, Any]) -> str | None:
    """The client id of `Authorization: Basic base64(clientId:clientSecret)`."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        client_id, _, secret = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return client_id if client_id and secret else None


TOKEN_CALLER = Caller(NAME, _client, error, UNAUTHORIZED, CALLER.not_found)


@post("/v3/token", status_code=200)
async def get_token(request: Request[Any, Any, Any]) -> Response[Any]:
    """The client-credentials grant: a form body `grant_type=client_credentials` -> {access_token, ...}."""

    def work(sandbox: Sandbox, client_id: str, body: bytes) -> Response[Any]:
        _correlation(request)
        if not request.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            raise Invalid(["POST /v3/token takes an application/x-www-form-urlencoded body"])
        if parse_qs(body.decode("utf-8", "replace")) != {"grant_type": ["client_credentials"]}:
            raise Invalid(["the body is grant_type=client_credentials"])
        token = {"access_token": issue_token(client_id), "token_type": "Bearer", "expires_in": 900}
        return json_response(token)

    return await serve(request, TOKEN_CALLER, "getToken", work)


@get("/v3/orders")
async def get_all_orders(request: Request[Any, Any, Any]) -> Response[Any]:
    """Orders oldest change first, `limit` a page; `meta.nextCursor` is the query string of the next page."""

    def work(sandbox: Sandbox, account: str, _: bytes) -> Response[Any]:
        known_params(request, LIST_PARAMS)
        _correlation(request)
        limit = int_param(request, "limit", 100, 1, MAX_LIMIT)
        created_from = _time_param(request, "createdStartDate")
        created_to = _time_param(request, "createdEndDate")
        modified_from = _time_param(request, "lastModifiedStartDate")
        modified_to = _time_param(request, "lastModifiedEndDate")
        after_ms = int_param(request, "soIndex", -1, -1, 2**62)
        after_po = request.query_params.get("poIndex", "")
        orders = sorted(
            (
                o
                for o in sandbox.state.account_orders(NAME, account).values()
                if (created_from is None or o.purchased_at >= created_from)
                and (created_to is None or o.purchased_at <= created_to)
                and (modified_from is None or o.updated_at >= modified_from)
                and (modified_to is None or o.updated_at <= modified_to)
            ),
            key=lambda o: (_millis(o.updated_at), o.order_id),
        )
        remaining = [o for o in orders if (_millis(o.updated_at), o.order_id) > (after_ms, after_po)]
        page = remaining[:limit]
        if after_ms >= 0 and sandbox.duplicate_page(NAME, "getAllOrders"):
            previous = [o for o in orders if (_millis(o.updated_at), o.order_id) <= (after_ms, after_po)]
            page = previous[-1:] + page
        next_cursor = None
        if len(remaining) > limit:
            last = page[-1]
            query = {
                k: v
                for k, v in request.query_params.items()
                if k not in ("soIndex", "poIndex", "hasMoreElements")
            }
            query.update(
                {
                    "limit": str(limit),
                    "hasMoreElements": "true",
                    "soIndex": str(_millis(last.updated_at)),
                    "poIndex": last.order_id,
                }
            )
            next_cursor = "?" + urlencode(query)
        body = {
            "list": {
                "meta": {"totalCount": len(orders), "limit": limit, "nextCursor": next_cursor},
                "elements": {"order": [render(o) for o in page]},
            }
        }
        return json_response(body)

    return await serve(request, CALLER, "getAllOrders", work)


@get("/v3/orders/{purchase_order_id:str}")
async def get_an_order(request: Request[Any, Any, Any], purchase_order_id: FromPath[str]) -> Response[Any]:
    def work(sandbox: Sandbox, account: str, _: bytes) -> Response[Any]:
        _correlation(request)
        return json_response({"order": render(CALLER.order(sandbox, account, purchase_order_id))})

    return await serve(request, CALLER, "getAnOrder", work)


def _once(
    sandbox: Sandbox, account: str, operation: str, key: str, order: Order, apply: Any
) -> Response[Any]:
    sandbox.state.apply_once(NAME, account, operation, key, order.order_id, apply)
    return json_response({"order": render(order)})


@post("/v3/orders/{purchase_order_id:str}/acknowledge", status_code=200)
async def acknowledge_orders(
    request: Request[Any, Any, Any], purchase_order_id: FromPath[str]
) -> Response[Any]:
    def work(sandbox: Sandbox, account: str, body: bytes) -> Response[Any]:
        key = _correlation(request)
        if body.strip():
            raise Invalid(["acknowledge takes no body"])
        order = CALLER.order(sandbox, account, purchase_order_id)

        def apply() -> Json:
            if order.acknowledged_at is None:
                order.acknowledged_at = utcnow()
                order.touch()
            return {"acknowledged_at": order.acknowledged_at}

        return _once(sandbox, account, "acknowledgeOrders", key, order, apply)

    return await serve(request, CALLER, "acknowledgeOrders", work)


@post("/v3/orders/{purchase_order_id:str}/shipping", status_code=200)
async def ship_order_lines(
    request: Request[Any, Any, Any], purchase_order_id: FromPath[str]
) -> Response[Any]:
    def work(sandbox: Sandbox, account: str, body: bytes) -> Response[Any]:
        key = _correlation(request)
        shipment = strict(body, ShipRequest)
        carriers = [
            status.tracking_info.carrier_name
            for line in shipment.order_shipment.order_lines.order_line
            for status in line.order_line_statuses.order_line_status
        ]
        if any((name.carrier is None) == (name.other_carrier is None) for name in carriers):
            raise Invalid(["trackingInfo.carrierName takes one of carrier and otherCarrier"])
        order = CALLER.order(sandbox, account, purchase_order_id)

        def apply() -> Json:
            wanted: dict[str, int] = {}
            tracking: Json | None = None
            for line in shipment.order_shipment.order_lines.order_line:
                target = _line_by_number(order, line.line_number)
                for status in line.order_line_statuses.order_line_status:
                    wanted[line.line_number] = wanted.get(line.line_number, 0) + _units(
                        status.status_quantity
                    )
                    tracking = msgspec.to_builtins(status.tracking_info)
                if wanted[line.line_number] > _open(target):
                    raise Refusal(400, INVALID, f"line {line.line_number} has {_open(target)} units to ship")
                if order.canceled:
                    raise Refusal(400, INVALID, f"order {order.order_id} is cancelled")
            for number, units in wanted.items():
                _line_by_number(order, number).shipped += units
            record = {"correlation_id": key, "lines": wanted, "tracking": tracking, "at": utcnow()}
            order.shipments.append(record)
            order.touch()
            return {"lines": wanted}

        return _once(sandbox, account, "shippingUpdates", key, order, apply)

    return await serve(request, CALLER, "shippingUpdates", work)


@post("/v3/orders/{purchase_order_id:str}/cancel", status_code=200)
async def cancel_order_lines(
    request: Request[Any, Any, Any], purchase_order_id: FromPath[str]
) -> Response[Any]:
    def work(sandbox: Sandbox, account: str, body: bytes) -> Response[Any]:
        key = _correlation(request)
        cancellation = strict(body, CancelRequest)
        order = CALLER.order(sandbox, account, purchase_order_id)

        def apply() -> Json:
            wanted: dict[str, int] = {}
            reason = ""
            for line in cancellation.order_cancellation.order_lines.order_line:
                target = _line_by_number(order, line.line_number)
                for status in line.order_line_statuses.order_line_status:
                    wanted[line.line_number] = wanted.get(line.line_number, 0) + _units(
                        status.status_quantity
                    )
                    reason = status.cancellation_reason
                if wanted[line.line_number] > _open(target):
                    raise Refusal(
                        400, INVALID, f"line {line.line_number} has {_open(target)} units to cancel"
                    )
            for number, units in wanted.items():
                _line_by_number(order, number).cancelled += units
            order.cancellations.append(
                {"correlation_id": key, "lines": wanted, "reason": reason, "at": utcnow()}
            )
            if all(line.cancelled == line.quantity for line in order.lines):
                order.canceled = True
            order.touch()
            return {"lines": wanted, "reason": reason}

        return _once(sandbox, account, "cancelOrderLines", key, order, apply)

    return await serve(request, CALLER, "cancelOrderLines", work)


@post("/v3/orders/{purchase_order_id:str}/refund", status_code=200)
async def refund_order_lines(
    request: Request[Any, Any, Any], purchase_order_id: FromPath[str]
) -> Response[Any]:
    def work(sandbox: Sandbox, account: str, body: bytes) -> Response[Any]:
        key = _correlation(request)
        refund = strict(body, RefundRequest)
        if refund.order_refund.purchase_order_id != purchase_order_id:
            raise Invalid(["orderRefund.purchaseOrderId differs from the path's purchaseOrderId"])
        order = CALLER.order(sandbox, account, purchase_order_id)

        def apply() -> Json:
            made: list[Json] = []
            for line in refund.order_refund.order_lines.order_line:
                target = _line_by_number(order, line.line_number)
                if not target.shipped:
                    raise Refusal(400, INVALID, f"line {line.line_number} is not shipped: nothing to refund")
                charges: list[Json] = []
                amount = Decimal(0)
                reason = ""
                for entry in line.refunds.refund:
                    for refund_charge in entry.refund_charges.refund_charge:
                        charge = refund_charge.charge
                        parts = [charge.charge_amount] + ([charge.tax.tax_amount] if charge.tax else [])
                        for money in parts:
                            if money.currency != order.currency:
                                raise Refusal(
                                    400, INVALID, f"currency {money.currency} is not {order.currency}"
                                )
                            if money.amount > 0:
                                raise Refusal(400, INVALID, "refund amounts are negative")
                            amount -= money.amount
                        charges.append(msgspec.to_builtins(refund_charge, builtin_types=(Decimal,)))
                        reason = refund_charge.refund_reason
                line_total = target.unit_price * target.quantity + target.tax + target.shipping
                before = sum(
                    (Decimal(r["amount"]) for r in order.refunds if r["line_number"] == line.line_number),
                    Decimal(0),
                )
                if before + amount > line_total:
                    raise Refusal(
                        400, INVALID, f"line {line.line_number}: refunds would pass the {line_total} charged"
                    )
                made.append(
                    {
                        "refund_id": f"{order.order_id}-R{sandbox.state.next_number()}",
                        "correlation_id": key,
                        "line_number": line.line_number,
                        "line_id": target.line_id,
                        "amount": str(amount),
                        "reason": reason,
                        "comments": line.refunds.refund[-1].refund_comments,
                        "charges": charges,
                        "at": utcnow(),
                    }
                )
            order.refunds.extend(made)
            order.touch()
            return {"refunds": [{"refund_id": r["refund_id"], "amount": r["amount"]} for r in made]}

        return _once(sandbox, account, "refundOrderLines", key, order, apply)

    return await serve(request, CALLER, "refundOrderLines", work)


# ------------------------------------------------------------------------------ the module's hooks


def new_order_id(rng: random.Random) -> str:
    return str(rng.randint(10**12, 10**13 - 1))


# A customer's cancellation is a request on Walmart: the open lines show `intentToCancel`. Walmart's own
# cancellation (`marketplace_cancel`: e.g. an order not acknowledged in time, or stopped for fraud) shows as
# `Cancelled` line statuses with its reason, lines numbered from 1 as `render` looks them up.
event = either(
    buyer_cancel("CUSTOMER_REQUESTED"),
    marketplace_cancel("SELLER_CANCEL_FRAUD_STOP_SHIPMENT", lambda order, index: str(index + 1)),
)


def describe(sandbox: Sandbox, order: Order) -> Json:
    return {"walmart": plain(render(order))}


MARKETPLACE = Marketplace(
    name=NAME,
    routes=[
        get_token,
        get_all_orders,
        get_an_order,
        acknowledge_orders,
        ship_order_lines,
        cancel_order_lines,
        refund_order_lines,
    ],
    new_order_id=new_order_id,
    error=error,
    event=event,
    describe=describe,
)

"""eBay in the sandbox: Sell Fulfillment API v1 and Post-Order API v2 cancellations.

Requests to the Fulfillment API are checked against eBay's OpenAPI 3 spec (`sell_fulfillment_v1_oas3.json`:
bodies and query parameters); answers use eBay's field names and error shape (`{"errors": [{errorId, domain,
category, message}]}`). The seller is the bearer token (`Authorization: Bearer <token>`; the Post-Order API
also takes `IAF <token>`), any non-empty value: the account namespace.

- `getOrders` (`filter=lastmodifieddate:[from..to]` or `creationdate:[...]`, `limit` up to 200, `offset`),
  `getOrder`.
- `createShippingFulfillment`: 201 with a `Location`; the fulfillment id is the tracking number, so the same
  tracking number on the same order is not created twice (a repeat answers 201 with the same `Location`).
- `issueRefund`: `PENDING` at once, `REFUNDED` after `refund_processing_seconds` (in `getOrder`'s
  `paymentSummary.refunds`). eBay has no idempotency key for refunds; the sandbox takes the `comment` as one
  (our adapter writes its idempotency key there), so a repeated comment on the same order is the same refund.
- Payment disputes: `getPaymentDisputeSummaries` (`order_id`, `payment_dispute_status`, `limit`, `offset`) and
  `getPaymentDispute`, for the claims the control API opens and closes (`open_dispute`, `close_dispute`).
- Post-Order `POST /post-order/v2/cancellation` (`legacyOrderId`, `cancelReason`): an unpaid order is
  cancelled at once; a paid one opens a cancellation request (`CANCEL_REQUESTED`) that the control API
  approves or rejects (`approve_cancellation`, `reject_cancellation`), or that is approved by itself after
  `cancellation_approval_seconds` when that is not negative. One open request per order: asking again answers
  with the same `cancelId`; a request after a rejected one gets a new `cancelId`. `GET /post-order/v2/cancellation/{cancelId}` reads it.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from litestar import Request, Response, get, post
from litestar.params import FromPath

from ledger_sandbox.app import (
    Caller,
    ControlError,
    Marketplace,
    Sandbox,
    json_response,
    read_json,
)
from ledger_sandbox.state import Json, Order, iso, monotonic, parse_time, utcnow
from ledger_sandbox.validation import spec

NAME = "ebay"
SPEC = "ebay/sell_fulfillment_v1_oas3.json"
BASE = "/sell/fulfillment/v1"
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
SHIP_BY_DAYS = 2  # the seller's stated handling time: eBay's ship-by date is this long after purchase
REFUND_REASONS = frozenset(
    {
        "BUYER_CANCEL",
        "BUYER_RETURN",
        "ITEM_NOT_RECEIVED",
        "SELLER_WRONG_ITEM",
        "SELLER_OUT_OF_STOCK",
        "SELLER_FOUND_CHEAPER_PRICE",
        "OTHER",
    }
)
CANCEL_REASONS = frozenset({"BUYER_ASKED_CANCEL", "OUT_OF_STOCK_OR_CANNOT_FULFILL", "ADDRESS_ISSUES"})
OUTCOMES = {"accepted": "SELLER_LOST", "rejected": "SELLER_WON", "withdrawn": "OTHER"}
_FILTER = re.compile(r"^(lastmodifieddate|creationdate):\[(.*?)\.\.(.*?)\]$")


def error(status: int, code: str, message: str) -> Response[Any]:
    error_ids = {400: 32100, 401: 1001, 403: 1100, 404: 32100, 409: 32200, 429: 2001}
    return json_response(
        {
            "errors": [
                {
                    "errorId": error_ids.get(status, 2003 if status >= 500 else 32100),
                    "domain": "API_FULFILLMENT",
                    "category": "REQUEST" if status < 500 else "APPLICATION",
                    "message": code,
                    "longMessage": message,
                }
            ]
        },
        status,
    )


def new_order_id(rng: random.Random) -> str:
    return f"{rng.randint(10, 99)}-{rng.randint(10000, 99999)}-{rng.randint(10000, 99999)}"


def _account(request: Request[Any, Any, Any]) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme not in ("Bearer", "IAF") or not token.strip():
        return None
    return token.strip()


CALLER = Caller(
    NAME,
    _account,
    error,
    (401, "Invalid access token", "Invalid access token."),
    ("Order not found", "Order {} was not found."),
)
# getOrders words its 401 at more length.
LIST_CALLER = replace(
    CALLER,
    unauthorized=(
        401,
        "Invalid access token",
        "Invalid access token. Check the value of the Authorization HTTP request header.",
    ),
)


def _amount(value: Decimal, currency: str) -> Json:
    return {"value": f"{value:.2f}", "currency": currency}


def _refunds(order: Order) -> list[Json]:
    return order.extra.setdefault("refunds", [])  # type: ignore[no-any-return]


def _cancels(order: Order) -> list[Json]:
    return order.extra.setdefault("cancel_requests", [])  # type: ignore[no-any-return]


def render_order(order: Order) -> Json:
    currency = order.currency
    subtotal = sum((line.unit_price * line.quantity for line in order.lines), Decimal(0))
    shipping = sum((line.shipping for line in order.lines), Decimal(0))
    tax = sum((line.tax for line in order.lines), Decimal(0))
    refunds = _refunds(order)
    refunded = sum((Decimal(r["amount"]) for r in refunds if r["refundStatus"] == "REFUNDED"), Decimal(0))
    if order.paid_at is None:
        payment_status = "PENDING"
    elif refunded and refunded >= order.total:
        payment_status = "FULLY_REFUNDED"
    elif refunded:
        payment_status = "PARTIALLY_REFUNDED"
    else:
        payment_status = "PAID"
    open_units = sum(line.quantity - line.cancelled for line in order.lines)
    shipped = sum(line.shipped for line in order.lines)
    fulfillment = (
        "FULFILLED" if open_units and shipped >= open_units else "IN_PROGRESS" if shipped else "NOT_STARTED"
    )
    cancels = list(_cancels(order))
    if order.buyer_cancel is not None:
        cancels.append(
            {
                "cancelId": f"B{order.order_id.replace('-', '')}",
                "initiator": "BUYER",
                "cancelReason": order.buyer_cancel.get("reason") or "BUYER_ASKED_CANCEL",
                "cancelRequestState": "COMPLETED" if order.buyer_cancel.get("applied") else "REQUESTED",
                "requested_at": iso(order.buyer_cancel["requested_at"]),
                **(
                    {"completed_at": iso(order.buyer_cancel["requested_at"])}
                    if order.buyer_cancel.get("applied")
                    else {}
                ),
            }
        )
    cancel_state = (
        "CANCELED"
        if order.canceled
        else "IN_PROGRESS"
        if any(c["cancelRequestState"] == "REQUESTED" for c in cancels)
        else "NONE_REQUESTED"
    )
    address = order.address
    rendered: Json = {
        "orderId": order.order_id,
        "legacyOrderId": order.extra.get("legacy_order_id", order.order_id),
        "creationDate": iso(order.purchased_at),
        "lastModifiedDate": iso(order.updated_at),
        "orderFulfillmentStatus": fulfillment,
        "orderPaymentStatus": payment_status,
        "sellerId": order.account,
        "buyer": {"username": order.buyer_username},
        "pricingSummary": {
            "priceSubtotal": _amount(subtotal, currency),
            "deliveryCost": _amount(shipping, currency),
            "tax": _amount(tax, currency),
            "total": _amount(order.total, currency),
        },
        "cancelStatus": {
            "cancelState": cancel_state,
            "cancelRequests": [
                {
                    "cancelRequestId": c["cancelId"],
                    "cancelInitiator": c["initiator"],
                    "cancelReason": c["cancelReason"],
                    "cancelRequestState": c["cancelRequestState"],
                    "cancelRequestedDate": c["requested_at"],
                    **({"cancelCompletedDate": c["completed_at"]} if c.get("completed_at") else {}),
                }
                for c in cancels
            ],
            **({"cancelledDate": order.extra["cancelled_at"]} if order.extra.get("cancelled_at") else {}),
        },
        "paymentSummary": {
            "totalDueSeller": _amount(order.total - refunded, currency),
            "payments": [
                {
                    "paymentMethod": "EBAY",
                    "paymentReferenceId": f"PAY-{order.order_id}",
                    "paymentStatus": "PAID" if order.paid_at else "PENDING",
                    "amount": _amount(order.total, currency),
                    **({"paymentDate": iso(order.paid_at)} if order.paid_at else {}),
                }
            ],
            "refunds": [
                {
                    "refundId": r["refundId"],
                    "refundStatus": r["refundStatus"],
                    "amount": _amount(Decimal(r["amount"]), currency),
                    **(
                        {"refundDate": r["refunded_at"], "refundReferenceId": r["refundId"]}
                        if r.get("refunded_at")
                        else {}
                    ),
                }
                for r in refunds
            ],
        },
        "fulfillmentStartInstructions": [
            {
                "fulfillmentInstructionsType": "SHIP_TO",
                "ebaySupportedFulfillment": False,
                "minEstimatedDeliveryDate": iso(order.purchased_at + timedelta(days=3)),
                "maxEstimatedDeliveryDate": iso(order.purchased_at + timedelta(days=7)),
                "shippingStep": {
                    "shippingCarrierCode": "USPS",
                    "shippingServiceCode": "USPSPriority",
                    "shipTo": {
                        "fullName": address["name"],
                        "contactAddress": {
                            "addressLine1": address["line1"],
                            "city": address["city"],
                            "stateOrProvince": address["state"],
                            "postalCode": address["postal_code"],
                            "countryCode": address["country"],
                        },
                        "primaryPhone": {"phoneNumber": address["phone"]},
                        "email": order.buyer_email,
                    },
                },
            }
        ],
        "fulfillmentHrefs": [
            f"https://api.ebay.com{BASE}/order/{order.order_id}/shipping_fulfillment/{s['fulfillmentId']}"
            for s in order.shipments
        ],
        "lineItems": [
            {
                "lineItemId": line.line_id,
                "legacyItemId": f"1{abs(int(line.line_id)) % 10**11:011d}"
                if line.line_id.isdigit()
                else line.line_id,
                "sku": line.sku,
                "title": line.title,
                "quantity": line.quantity,
                "soldFormat": "FIXED_PRICE",
                "listingMarketplaceId": "EBAY_US",
                "purchaseMarketplaceId": "EBAY_US",
                "lineItemCost": _amount(line.unit_price * line.quantity, currency),
                "deliveryCost": {"shippingCost": _amount(line.shipping, currency)},
                "taxes": [{"amount": _amount(line.tax, currency), "taxType": "STATE_SALES_TAX"}],
                "total": _amount(line.unit_price * line.quantity + line.shipping + line.tax, currency),
                "lineItemFulfillmentInstructions": {
                    "guaranteedDelivery": False,
                    "shipByDate": iso(order.purchased_at + timedelta(days=SHIP_BY_DAYS)),
                    "minEstimatedDeliveryDate": iso(order.purchased_at + timedelta(days=3)),
                    "maxEstimatedDeliveryDate": iso(order.purchased_at + timedelta(days=7)),
                },
                "lineItemFulfillmentStatus": "FULFILLED"
                if line.shipped >= line.quantity - line.cancelled and line.shipped
                else "IN_PROGRESS"
                if line.shipped
                else "NOT_STARTED",
                "refunds": [
                    {
                        "refundId": r["refundId"],
                        "amount": _amount(Decimal(amt), currency),
                        **({"refundDate": r["refunded_at"]} if r.get("refunded_at") else {}),
                    }
                    for r in refunds
                    for lid, amt in r.get("lines", {}).items()
                    if lid == line.line_id
                ],
            }
            for line in order.lines
        ],
        "salesRecordReference": order.extra.get("sales_record", "1"),
    }
    return rendered


def render_dispute(order: Order, dispute: Json, summary: bool) -> Json:
    rendered: Json = {
        "paymentDisputeId": dispute["dispute_id"],
        "paymentDisputeStatus": "CLOSED" if dispute["status"] == "CLOSED" else "ACTION_NEEDED",
        "reason": dispute["reason"],
        "orderId": order.order_id,
        "buyerUsername": order.buyer_username,
        "openDate": iso(dispute["opened_at"]),
        "amount": _amount(Decimal(dispute["amount"]), order.currency),
    }
    if dispute.get("closed_at"):
        rendered["closedDate"] = iso(dispute["closed_at"])
    else:
        rendered["respondByDate"] = iso(dispute["opened_at"] + timedelta(days=10))
    if not summary:
        rendered["revision"] = 1
        if dispute.get("outcome"):
            rendered["resolution"] = {
                "reasonForClosure": dispute.get("closure") or OUTCOMES[dispute["outcome"]]
            }
    return rendered


# ------------------------------------------------------------------------------- fulfillment API


def _query(request: Request[Any, Any, Any]) -> dict[str, list[str]]:
    return {key: request.query_params.getall(key) for key in request.query_params}


@get(f"{BASE}/order")
async def get_orders(request: Request[Any, Any, Any]) -> Response[Any]:
    sandbox, account = await LIST_CALLER.begin(request, "getOrders")
    query = _query(request)
    problems = spec(SPEC).query_errors("/order", "get", query)
    window: tuple[str, datetime | None, datetime | None] | None = None
    for part in (query.get("filter") or [""])[0].split(","):
        if not part:
            continue
        match = _FILTER.match(part.strip())
        if match is None:
            problems.append(
                f"filter {part!r}: the sandbox knows lastmodifieddate:[from..to] and creationdate:[from..to]"
            )
            continue
        try:
            low = parse_time(match.group(2)) if match.group(2) else None
            high = parse_time(match.group(3)) if match.group(3) else None
        except ValueError:
            problems.append(f"filter {part!r}: the dates are ISO 8601")
            continue
        window = (match.group(1), low, high)
    limit, offset = DEFAULT_LIMIT, 0
    try:
        limit = int((query.get("limit") or [str(DEFAULT_LIMIT)])[0])
        offset = int((query.get("offset") or ["0"])[0])
    except ValueError:
        problems.append("limit and offset are integers")
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        problems.append(f"limit is 1 to {MAX_LIMIT} and offset not negative")
    refused = sandbox.refuse(request, NAME, "getOrders", problems)
    if refused is not None:
        return refused
    ids = set((query.get("orderIds") or [""])[0].split(",")) - {""}
    with sandbox.state.lock:
        orders = list(sandbox.state.account_orders(NAME, account).values())
        if ids:
            orders = [o for o in orders if o.order_id in ids]
        by = window[0] if window else "creationdate"

        def stamp(o: Order) -> datetime:
            return o.updated_at if by == "lastmodifieddate" else o.purchased_at

        if window is not None:
            orders = [
                o
                for o in orders
                if (window[1] is None or stamp(o) >= window[1])
                and (window[2] is None or stamp(o) <= window[2])
            ]
        orders.sort(key=lambda o: (stamp(o), o.order_id))
        start = offset - 1 if offset > 0 and sandbox.duplicate_page(NAME, "getOrders") else offset
        page = orders[start : offset + limit]
        base = str(request.base_url).rstrip("/") + f"{BASE}/order?"
        params = {k: v[0] for k, v in query.items() if k not in ("offset", "limit")}
        body: Json = {
            "href": base + urlencode({**params, "limit": limit, "offset": offset}),
            "limit": limit,
            "offset": offset,
            "total": len(orders),
            "orders": [render_order(o) for o in page],
        }
        if offset + limit < len(orders):
            body["next"] = base + urlencode({**params, "limit": limit, "offset": offset + limit})
        if offset > 0:
            body["prev"] = base + urlencode({**params, "limit": limit, "offset": max(offset - limit, 0)})
    return json_response(body)


@get(f"{BASE}/order/{{order_id:str}}")
async def get_order(request: Request[Any, Any, Any], order_id: FromPath[str]) -> Response[Any]:
    sandbox, account = await CALLER.begin(request, "getOrder")
    with sandbox.state.lock:
        order = CALLER.order(sandbox, account, order_id)
        return json_response(render_order(order))


@post(f"{BASE}/order/{{order_id:str}}/shipping_fulfillment", status_code=201)
async def create_shipping_fulfillment(
    request: Request[Any, Any, Any], order_id: FromPath[str]
) -> Response[Any]:
    sandbox, account = await CALLER.begin(request, "createShippingFulfillment")
    body, problem = await read_json(request)
    problems = [problem] if problem else spec(SPEC).body_errors("ShippingFulfillmentDetails", body)
    if not problems:
        if not body.get("lineItems"):
            problems.append("lineItems: at least one line item")
        if not body.get("trackingNumber") or not body.get("shippingCarrierCode"):
            problems.append("trackingNumber and shippingCarrierCode are needed to track the package")
        if body.get("shippedDate"):
            try:
                parse_time(body["shippedDate"])
            except ValueError:
                problems.append("shippedDate is not an ISO 8601 time")
    refused = sandbox.refuse(request, NAME, "createShippingFulfillment", problems)
    if refused is not None:
        return refused
    tracking = str(body["trackingNumber"])

    def apply() -> Json:
        order = CALLER.order(sandbox, account, order_id)
        if order.canceled or order.paid_at is None:
            raise CALLER.refuse(400, "Invalid order state", f"Order {order_id} is not paid or is cancelled.")
        wanted: dict[str, int] = {}
        for item in body["lineItems"]:
            line = order.line(str(item.get("lineItemId", "")))
            if line is None:
                raise CALLER.refuse(
                    400,
                    "Invalid line item",
                    f"Line item {item.get('lineItemId')} is not in order {order_id}.",
                )
            wanted[line.line_id] = wanted.get(line.line_id, 0) + int(
                item.get("quantity") or line.quantity - line.shipped - line.cancelled
            )
        for line_id, quantity in wanted.items():
            line = order.line(line_id)
            assert line is not None
            if quantity < 1 or line.shipped + quantity > line.quantity - line.cancelled:
                raise CALLER.refuse(
                    400,
                    "Invalid quantity",
                    f"Line item {line_id} has fewer than {quantity} units left to ship.",
                )
        for line_id, quantity in wanted.items():
            line = order.line(line_id)
            assert line is not None
            line.shipped += quantity
        shipment = {
            "fulfillmentId": tracking,
            "shipmentTrackingNumber": tracking,
            "shippingCarrierCode": body["shippingCarrierCode"],
            "shippedDate": body.get("shippedDate") or iso(utcnow()),
            "lines": wanted,
        }
        order.shipments.append(shipment)
        order.touch()
        return shipment

    sandbox.state.apply_once(NAME, account, "createShippingFulfillment", tracking, order_id, apply)
    location = str(request.base_url).rstrip("/") + f"{BASE}/order/{order_id}/shipping_fulfillment/{tracking}"
    return Response(content=b"", status_code=201, headers={"Location": location})


@get(f"{BASE}/order/{{order_id:str}}/shipping_fulfillment")
async def get_shipping_fulfillments(
    request: Request[Any, Any, Any], order_id: FromPath[str]
) -> Response[Any]:
    sandbox, account = await CALLER.begin(request, "getShippingFulfillments")
    with sandbox.state.lock:
        order = CALLER.order(sandbox, account, order_id)
        fulfillments = [
            {
                "fulfillmentId": s["fulfillmentId"],
                "shipmentTrackingNumber": s["shipmentTrackingNumber"],
                "shippingCarrierCode": s["shippingCarrierCode"],
                "shippedDate": s["shippedDate"],
                "lineItems": [{"lineItemId": k, "quantity": v} for k, v in s["lines"].items()],
            }
            for s in order.shipments
        ]
    return json_response({"fulfillments": fulfillments, "total": len(fulfillments)})


def _refund_problems(body: Json) -> list[str]:
    """What the spec cannot say about an issueRefund request: eBay's enumerations and rules."""
    problems: list[str] = []
    if body.get("reasonForRefund") not in REFUND_REASONS:
        problems.append(f"reasonForRefund {body.get('reasonForRefund')!r} is not a ReasonForRefundEnum value")
    if bool(body.get("refundItems")) == bool(body.get("orderLevelRefundAmount")):
        problems.append("either refundItems or orderLevelRefundAmount")
    amounts = [i.get("refundAmount") or {} for i in body.get("refundItems") or []] + (
        [body["orderLevelRefundAmount"]] if body.get("orderLevelRefundAmount") else []
    )
    for amount in amounts:
        try:
            if Decimal(str(amount.get("value"))) <= 0 or not amount.get("currency"):
                raise ValueError
        except (ArithmeticError, ValueError):
            problems.append("a refund amount is a positive value with a currency")
    if any(not i.get("lineItemId") for i in body.get("refundItems") or []):
        problems.append("each refundItems entry names its lineItemId")
    if len(str(body.get("comment", ""))) > 100:
        problems.append("comment: at most 100 characters")
    return problems


@post(f"{BASE}/order/{{order_id:str}}/issue_refund", status_code=200)
async def issue_refund(request: Request[Any, Any, Any], order_id: FromPath[str]) -> Response[Any]:
    sandbox, account = await CALLER.begin(request, "issueRefund")
    body, problem = await read_json(request)
    problems = [problem] if problem else spec(SPEC).body_errors("IssueRefundRequest", body)
    if not problems:
        problems = _refund_problems(body)
    refused = sandbox.refuse(request, NAME, "issueRefund", problems)
    if refused is not None:
        return refused

    def apply() -> Json:
        order = CALLER.order(sandbox, account, order_id)
        if order.paid_at is None:
            raise CALLER.refuse(409, "Order not paid", f"Order {order_id} has no payment to refund.")
        lines: dict[str, str] = {}
        total = Decimal(0)
        for item in body.get("refundItems") or []:
            line = order.line(item["lineItemId"])
            if line is None:
                raise CALLER.refuse(
                    400, "Invalid line item", f"Line item {item['lineItemId']} is not in order {order_id}."
                )
            if item["refundAmount"]["currency"] != order.currency:
                raise CALLER.refuse(400, "Invalid currency", f"The order's currency is {order.currency}.")
            amount = Decimal(item["refundAmount"]["value"])
            lines[line.line_id] = str(Decimal(lines.get(line.line_id, "0")) + amount)
            total += amount
        if body.get("orderLevelRefundAmount"):
            total = Decimal(body["orderLevelRefundAmount"]["value"])
        already = sum((Decimal(r["amount"]) for r in _refunds(order)), Decimal(0))
        if already + total > order.total:
            raise CALLER.refuse(
                409, "Refund exceeds payment", f"Refunds would exceed the {order.total} paid."
            )
        refund = {
            "refundId": f"5{sandbox.state.next_number():011d}",
            "refundStatus": "PENDING",
            "amount": str(total),
            "lines": lines,
            "reason": body["reasonForRefund"],
            "comment": body.get("comment"),
            "_started": monotonic(),
        }
        _refunds(order).append(refund)
        order.refunds.append({k: v for k, v in refund.items() if not k.startswith("_")})
        order.touch()
        return {"refundId": refund["refundId"], "refundStatus": "PENDING"}

    key = str(body.get("comment") or f"{order_id}:{sandbox.state.next_number()}")
    result, _ = sandbox.state.apply_once(NAME, account, "issueRefund", key, order_id, apply)
    return json_response(result)


@get(f"{BASE}/payment_dispute_summary")
async def get_payment_dispute_summaries(request: Request[Any, Any, Any]) -> Response[Any]:
    sandbox, account = await CALLER.begin(request, "getPaymentDisputeSummaries")
    query = _query(request)
    problems = spec(SPEC).query_errors("/payment_dispute_summary", "get", query)
    try:
        limit = int((query.get("limit") or ["200"])[0])
        offset = int((query.get("offset") or ["0"])[0])
    except ValueError:
        problems.append("limit and offset are integers")
        limit, offset = 200, 0
    refused = sandbox.refuse(request, NAME, "getPaymentDisputeSummaries", problems)
    if refused is not None:
        return refused
    order_filter = next(iter(query.get("order_id", [])), None)
    status_filter = next(iter(query.get("payment_dispute_status", [])), None)
    with sandbox.state.lock:
        found = [
            render_dispute(order, dispute, summary=True)
            for order in sandbox.state.account_orders(NAME, account).values()
            if order_filter is None or order.order_id == order_filter
            for dispute in order.disputes
            if dispute["kind"] == "claim"
        ]
    if status_filter:
        found = [d for d in found if d["paymentDisputeStatus"] in status_filter.split(",")]
    found.sort(key=lambda d: (d["openDate"], d["paymentDisputeId"]))
    return json_response(
        {
            "paymentDisputeSummaries": found[offset : offset + limit],
            "total": len(found),
            "limit": limit,
            "offset": offset,
        }
    )


@get(f"{BASE}/payment_dispute/{{dispute_id:str}}")
async def get_payment_dispute(request: Request[Any, Any, Any], dispute_id: FromPath[str]) -> Response[Any]:
    sandbox, account = await CALLER.begin(request, "getPaymentDispute")
    with sandbox.state.lock:
        for order in sandbox.state.account_orders(NAME, account).values():
            for dispute in order.disputes:
                if dispute["dispute_id"] == dispute_id and dispute["kind"] == "claim":
                    return json_response(render_dispute(order, dispute, summary=False))
    return error(404, "Payment dispute not found", f"Payment dispute {dispute_id} was not found.")


@post(f"{BASE}/payment_dispute/{{dispute_id:str}}/accept", status_code=200)
async def accept_payment_dispute(request: Request[Any, Any, Any], dispute_id: FromPath[str]) -> Response[Any]:
    """The seller accepts the buyer's claim: the dispute closes in the buyer's favour (once per dispute)."""
    sandbox, account = await CALLER.begin(request, "acceptPaymentDispute")
    body, problem = await read_json(request)
    problems = [problem] if problem else spec(SPEC).body_errors("AcceptPaymentDisputeRequest", body or {})
    refused = sandbox.refuse(request, NAME, "acceptPaymentDispute", problems)
    if refused is not None:
        return refused
    with sandbox.state.lock:
        for order in sandbox.state.account_orders(NAME, account).values():
            for dispute in order.disputes:
                if dispute["dispute_id"] == dispute_id and dispute["kind"] == "claim":

                    def accept(order: Order = order, dispute: Json = dispute) -> Json:
                        if dispute["status"] != "CLOSED":
                            dispute.update(
                                status="CLOSED",
                                closed_at=utcnow(),
                                outcome="accepted",
                                closure="SELLER_ACCEPT",
                            )
                            order.touch()
                        return {"outcome": dispute["outcome"]}

                    sandbox.state.apply_once(
                        NAME, account, "acceptPaymentDispute", dispute_id, order.order_id, accept
                    )
                    return Response(content=b"", status_code=204)
    return error(404, "Payment dispute not found", f"Payment dispute {dispute_id} was not found.")


# --------------------------------------------------------------------- Post-Order cancellation


def _render_cancel(order: Order, cancel: Json) -> Json:
    return {
        "cancelDetail": {
            "cancelId": cancel["cancelId"],
            "legacyOrderId": order.order_id,
            "cancelReason": cancel["cancelReason"],
            "cancelState": "CLOSED" if cancel["cancelRequestState"] != "REQUESTED" else "INITIATED",
            "cancelStatus": {
                "REQUESTED": "CANCEL_REQUESTED",
                "COMPLETED": "CANCEL_CLOSED_WITH_REFUND" if order.paid_at else "CANCEL_CLOSED_NO_REFUND",
                "REJECTED": "CANCEL_REJECTED",
            }[cancel["cancelRequestState"]],
            "requestorType": cancel["initiator"],
            "cancelRequestDate": {"value": cancel["requested_at"]},
            **({"cancelCloseDate": {"value": cancel["completed_at"]}} if cancel.get("completed_at") else {}),
        }
    }


def _complete_cancel(order: Order, cancel: Json, approved: bool) -> None:
    now = iso(utcnow())
    cancel["cancelRequestState"] = "COMPLETED" if approved else "REJECTED"
    cancel["completed_at"] = now
    if approved:
        for line in order.lines:
            line.cancelled = line.quantity - line.shipped
        order.canceled = all(line.shipped == 0 for line in order.lines)
        order.extra["cancelled_at"] = now
        order.cancellations.append(
            {
                "key": cancel["cancelId"],
                "reason": cancel["cancelReason"],
                "at": now,
                "lines": {ln.line_id: ln.cancelled for ln in order.lines},
            }
        )
    for dispute in order.disputes:
        if dispute["dispute_id"] == cancel["cancelId"]:
            dispute.update(
                status="CLOSED", closed_at=utcnow(), outcome="accepted" if approved else "rejected"
            )
    order.touch()


@post("/post-order/v2/cancellation", status_code=201)
async def create_cancellation(request: Request[Any, Any, Any]) -> Response[Any]:
    sandbox, account = await CALLER.begin(request, "createCancellation")
    body, problem = await read_json(request)
    problems = [problem] if problem else []
    if not problems:
        if not isinstance(body, dict):
            problems.append("the body is a JSON object")
        else:
            unknown = set(body) - {
                "legacyOrderId",
                "cancelReason",
                "buyerPaid",
                "buyerPaidDate",
                "relistLineItem",
            }
            if unknown:
                problems.append(f"unknown fields: {', '.join(sorted(unknown))}")
            if not isinstance(body.get("legacyOrderId"), str) or not body.get("legacyOrderId"):
                problems.append("legacyOrderId is required")
            if body.get("cancelReason") not in CANCEL_REASONS:
                problems.append(f"cancelReason is one of {', '.join(sorted(CANCEL_REASONS))}")
            if "buyerPaid" in body and not isinstance(body["buyerPaid"], bool):
                problems.append("buyerPaid is a boolean")
    refused = sandbox.refuse(request, NAME, "createCancellation", problems)
    if refused is not None:
        return refused
    order_id = body["legacyOrderId"]

    with sandbox.state.lock:
        order = CALLER.order(sandbox, account, order_id)
        active = next(
            (c for c in _cancels(order) if c["cancelRequestState"] in ("REQUESTED", "COMPLETED")), None
        )
        if active is not None:
            sandbox.state.apply_once(NAME, account, "createCancellation", order_id, order_id, dict)
            return json_response({"cancelId": active["cancelId"]}, 201)
        if order.canceled or all(line.shipped >= line.quantity - line.cancelled for line in order.lines):
            return error(409, "Not eligible for cancellation", f"Order {order_id} is shipped or cancelled.")

        def apply() -> Json:
            cancel = {
                "cancelId": f"{5_100_000_000 + sandbox.state.next_number()}",
                "cancelReason": body["cancelReason"],
                "initiator": "SELLER",
                "cancelRequestState": "REQUESTED",
                "requested_at": iso(utcnow()),
                "_started": monotonic(),
            }
            _cancels(order).append(cancel)
            if order.paid_at is None:
                _complete_cancel(order, cancel, approved=True)
            else:
                order.disputes.append(
                    {
                        "dispute_id": cancel["cancelId"],
                        "kind": "cancellation",
                        "reason": body["cancelReason"],
                        "amount": str(order.total),
                        "status": "OPEN",
                        "opened_at": utcnow(),
                        "closed_at": None,
                        "outcome": None,
                    }
                )
                order.touch()
            return {"cancelId": cancel["cancelId"]}

        # One request per order at a time: a new request after a rejected one is a new request, with its own
        # cancelId (keyed by how many the order had), while a retry of an open one answered above.
        key = f"{order_id}#{len(_cancels(order))}"
        result, _ = sandbox.state.apply_once(NAME, account, "createCancellation", key, order_id, apply)
    return json_response({"cancelId": result["cancelId"]}, 201)


@get("/post-order/v2/cancellation/{cancel_id:str}")
async def get_cancellation(request: Request[Any, Any, Any], cancel_id: FromPath[str]) -> Response[Any]:
    sandbox, account = await CALLER.begin(request, "getCancellation")
    with sandbox.state.lock:
        for order in sandbox.state.account_orders(NAME, account).values():
            for cancel in _cancels(order):
                if cancel["cancelId"] == cancel_id:
                    return json_response(_render_cancel(order, cancel))
    return error(404, "Cancellation not found", f"Cancellation {cancel_id} was not found.")


# ------------------------------------------------------------------------------------ the rest


def tick(sandbox: Sandbox) -> None:
    """Refunds go from PENDING to REFUNDED; cancellation requests are approved when set to be."""
    settings = sandbox.state.settings
    now = monotonic()
    for (marketplace, _), orders in sandbox.state.orders.items():
        if marketplace != NAME:
            continue
        for order in orders.values():
            for refund in order.extra.get("refunds", []):
                if (
                    refund["refundStatus"] == "PENDING"
                    and now - refund["_started"] >= settings.refund_processing_seconds
                ):
                    refund["refundStatus"] = "REFUNDED"
                    refund["refunded_at"] = iso(utcnow())
                    for entry in order.refunds:
                        if entry["refundId"] == refund["refundId"]:
                            entry.update(refundStatus="REFUNDED", refunded_at=refund["refunded_at"])
                    order.touch()
            approval = settings.cancellation_approval_seconds
            for cancel in order.extra.get("cancel_requests", []):
                if (
                    cancel["cancelRequestState"] == "REQUESTED"
                    and approval >= 0
                    and now - cancel["_started"] >= approval
                ):
                    _complete_cancel(order, cancel, approved=True)


def event(sandbox: Sandbox, order: Order, body: Json) -> bool:
    """eBay's own control events: `approve_cancellation` / `reject_cancellation` {cancel_id?} (the open one)."""
    kind = body.get("type")
    if kind not in ("approve_cancellation", "reject_cancellation"):
        return False
    wanted = body.get("cancel_id")
    cancel = next(
        (
            c
            for c in _cancels(order)
            if c["cancelRequestState"] == "REQUESTED" and wanted in (None, c["cancelId"])
        ),
        None,
    )
    if cancel is None:
        raise ControlError(f"no open cancellation request on order {order.order_id}", 404)
    _complete_cancel(order, cancel, approved=kind == "approve_cancellation")
    return True


def describe(sandbox: Sandbox, order: Order) -> Json:
    return {
        "marketplace_status": render_order(order)["orderFulfillmentStatus"],
        "payment_status": render_order(order)["orderPaymentStatus"],
        "cancel_requests": [{k: v for k, v in c.items() if not k.startswith("_")} for c in _cancels(order)],
    }


MARKETPLACE = Marketplace(
    name=NAME,
    routes=[
        get_orders,
        get_order,
        create_shipping_fulfillment,
        get_shipping_fulfillments,
        issue_refund,
        get_payment_dispute_summaries,
        get_payment_dispute,
        accept_payment_dispute,
        create_cancellation,
        get_cancellation,
    ],
    new_order_id=new_order_id,
    error=error,
    tick=tick,
    event=event,
    describe=describe,
)

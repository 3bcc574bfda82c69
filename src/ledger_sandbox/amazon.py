"""Amazon SP-API in the sandbox: Orders v0 and Feeds 2021-06-30, as the real API answers them.

Requests are checked against Amazon's published models (`ordersV0.json`, `feeds_2021-06-30.json`); answers
use Amazon's field names and error shape (`{"errors": [{code, message, details}]}`).

- Orders: `getOrders` (`MarketplaceIds`, `LastUpdatedAfter` or `CreatedAfter`, `MaxResultsPerPage`,
  `NextToken`), `getOrder`, `getOrderItems`, `confirmShipment` (204; deduplicated per order by
  `packageReferenceId`: a repeat changes nothing and answers 204 again).
- Feeds: `createFeedDocument` (a URL to upload to, standing for S3), the upload (`PUT`), `createFeed`,
  `getFeed` (`IN_QUEUE`, then `IN_PROGRESS`, then `DONE` as `feed_processing_seconds` pass), `getFeedDocument`
  and the processing report download. Feed types: `POST_ORDER_ACKNOWLEDGEMENT_DATA` (XML
  `OrderAcknowledgement`: `StatusCode` `Success` acknowledges, `Failure` cancels the listed items, or the
  whole order, with a `CancelReason`) and `POST_PAYMENT_ADJUSTMENT_DATA` (XML `OrderAdjustment`: refunds per
  `AdjustedItem`, deduplicated by `MerchantAdjustmentItemID`). Amazon has no dedupe key for
  acknowledgements; the sandbox takes `MerchantOrderID` as one (our adapter puts its idempotency key there),
  and cancelling units already cancelled is a no-op.
- The seller is the `x-amz-access-token` the request carries (any non-empty value): the account namespace.

Amazon pays the seller only after shipment confirmation, and accepts payment adjustments only for items
that shipped.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import zlib
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from xml.etree import ElementTree

from litestar import Request, Response, get, post, put
from litestar.params import FromPath

from ledger_sandbox.app import Caller, Marketplace, Sandbox, json_response, read_json, sandbox_of
from ledger_sandbox.state import Json, Order, Violation, iso, monotonic, parse_time, utcnow
from ledger_sandbox.validation import spec

NAME = "amazon"
ORDERS_SPEC = "amazon/ordersV0.json"
FEEDS_SPEC = "amazon/feeds_2021-06-30.json"
US_MARKETPLACE_ID = "ATVPDKIKX0DER"
MAX_PAGE = 100
ACKNOWLEDGEMENT_FEED = "POST_ORDER_ACKNOWLEDGEMENT_DATA"
ADJUSTMENT_FEED = "POST_PAYMENT_ADJUSTMENT_DATA"
CANCEL_REASONS = frozenset(
    {
        "NoInventory",
        "ShippingAddressUndeliverable",
        "CustomerExchange",
        "BuyerCanceled",
        "GeneralAdjustment",
        "CarrierCreditDecision",
        "RiskAssessmentInformationNotValid",
        "CarrierCoverageFailure",
        "CustomerReturn",
        "MerchandiseNotReceived",
        "CannotVerifyInformation",
        "PricingError",
        "RejectOrder",
        "WeatherDelay",
    }
)
ADJUSTMENT_REASONS = frozenset(
    {
        "NoInventory",
        "CustomerReturn",
        "GeneralAdjustment",
        "CouldNotShip",
        "DifferentItem",
        "Abandoned",
        "CustomerCancel",
        "PriceError",
        "ProductOutofStock",
        "CustomerAddressIncorrect",
        "Exchange",
        "Other",
        "CarrierCreditDecision",
        "RiskAssessmentInformationNotValid",
        "CarrierCoverageFailure",
        "TransactionRecord",
        "Undeliverable",
        "RefusedDelivery",
    }
)
COMPONENT_TYPES = frozenset(
    {"Principal", "Shipping", "Tax", "ShippingTax", "RestockingFee", "GiftWrap", "Other"}
)
STATUSES = {
    "pending": "Pending",
    "unshipped": "Unshipped",
    "partially_shipped": "PartiallyShipped",
    "shipped": "Shipped",
    "canceled": "Canceled",
}


def error(status: int, code: str, message: str) -> Response[Any]:
    return json_response({"errors": [{"code": code, "message": message, "details": ""}]}, status)


def new_order_id(rng: random.Random) -> str:
    return f"{rng.randint(100, 999)}-{rng.randint(0, 9_999_999):07d}-{rng.randint(0, 9_999_999):07d}"


def _account(request: Request[Any, Any, Any]) -> str | None:
    token = request.headers.get("x-amz-access-token", "").strip()
    return token or None


CALLER = Caller(
    NAME,
    _account,
    error,
    (403, "Unauthorized", "Access to requested resource is denied."),
    ("NotFound", "Order {} not found"),
)


def _money(amount: Decimal, currency: str) -> Json:
    return {"CurrencyCode": currency, "Amount": f"{amount:.2f}"}


def render_order(order: Order) -> Json:
    shipped = sum(line.shipped for line in order.lines)
    unshipped = sum(line.quantity - line.cancelled - line.shipped for line in order.lines)
    address = order.address
    return {
        "AmazonOrderId": order.order_id,
        "PurchaseDate": iso(order.purchased_at),
        "LastUpdateDate": iso(order.updated_at),
        "OrderStatus": STATUSES[order.status],
        "FulfillmentChannel": "MFN",
        "SalesChannel": "Amazon.com",
        "ShipServiceLevel": "Std US D2D Dom",
        "OrderTotal": _money(order.total, order.currency),
        "NumberOfItemsShipped": shipped,
        "NumberOfItemsUnshipped": max(unshipped, 0),
        "PaymentMethod": "Other",
        "PaymentMethodDetails": ["Standard"],
        "MarketplaceId": US_MARKETPLACE_ID,
        "ShipmentServiceLevelCategory": "Standard",
        "OrderType": "StandardOrder",
        "EarliestShipDate": iso(order.purchased_at + timedelta(days=1)),
        "LatestShipDate": iso(order.purchased_at + timedelta(days=3)),
        "IsBusinessOrder": False,
        "IsPrime": False,
        "IsPremiumOrder": False,
        "IsGlobalExpressEnabled": False,
        "IsReplacementOrder": False,
        "IsSoldByAB": False,
        "IsISPU": False,
        "IsAccessPointOrder": False,
        "ShippingAddress": {
            "Name": address["name"],
            "AddressLine1": address["line1"],
            "City": address["city"],
            "StateOrRegion": address["state"],
            "PostalCode": address["postal_code"],
            "CountryCode": address["country"],
            "Phone": address["phone"],
        },
        "BuyerInfo": {"BuyerEmail": order.buyer_email, "BuyerName": order.buyer_name},
    }


def render_items(order: Order) -> list[Json]:
    items = []
    for line in order.lines:
        item: Json = {
            "ASIN": f"B0{zlib.crc32(line.sku.encode()) % 10**8:08d}",
            "SellerSKU": line.sku,
            "OrderItemId": line.line_id,
            "Title": line.title,
            "QuantityOrdered": line.quantity,
            "QuantityShipped": line.shipped,
            "ProductInfo": {"NumberOfItems": "1"},
            "ItemPrice": _money(line.unit_price * line.quantity, order.currency),
            "ItemTax": _money(line.tax, order.currency),
            "ShippingPrice": _money(line.shipping, order.currency),
            "ShippingTax": _money(Decimal(0), order.currency),
            "PromotionDiscount": _money(Decimal(0), order.currency),
            "IsGift": "false",
            "ConditionId": "New",
            "ConditionSubtypeId": "New",
            "IsTransparency": False,
            "SerialNumberRequired": False,
        }
        if order.buyer_cancel is not None:
            item["BuyerRequestedCancel"] = {
                "IsBuyerRequestedCancel": "true",
                "BuyerCancelReason": str(order.buyer_cancel.get("reason", "")),
            }
        items.append(item)
    return items


# ------------------------------------------------------------------------------------- orders


def _token(data: Json) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def _untoken(token: str) -> Json | None:
    """A NextToken's cursor, or None when it is not one this API gave."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(data, dict) or set(data) != {"after", "before", "by_update", "offset", "size"}:
            return None
        parse_time(data["after"])
        parse_time(data["before"])
        int(data["offset"])
        int(data["size"])
    except (ValueError, TypeError, AttributeError):
        return None
    return data


@get("/orders/v0/orders")
async def get_orders(request: Request[Any, Any, Any]) -> Response[Any]:
    sandbox, account = await CALLER.begin(request, "getOrders")
    query = {key: request.query_params.getall(key) for key in request.query_params}
    problems = spec(ORDERS_SPEC).query_errors("/orders/v0/orders", "get", query)
    token = request.query_params.get("NextToken")
    cursor: Json | None = None
    if token is not None:
        cursor = _untoken(token)
        if cursor is None:
            problems.append("NextToken is not a token this API gave")
    elif not (query.get("LastUpdatedAfter") or query.get("CreatedAfter")):
        problems.append("either CreatedAfter or LastUpdatedAfter is required")
    size_text = (query.get("MaxResultsPerPage") or [str(MAX_PAGE)])[0]
    if not (size_text.isdigit() and 1 <= int(size_text) <= MAX_PAGE):
        problems.append(f"MaxResultsPerPage must be 1 - {MAX_PAGE}")
    if cursor is None and not problems:
        try:
            by_update = "LastUpdatedAfter" in query
            after = parse_time(query["LastUpdatedAfter" if by_update else "CreatedAfter"][0])
        except ValueError:
            problems.append("LastUpdatedAfter / CreatedAfter is not an ISO 8601 time")
        else:
            size = int(size_text)
            cursor = {
                "after": iso(after),
                "before": iso(utcnow()),
                "by_update": by_update,
                "offset": 0,
                "size": size,
            }
    refused = sandbox.refuse(request, NAME, "getOrders", problems)
    if refused is not None:
        return refused
    assert cursor is not None
    after, before = parse_time(cursor["after"]), parse_time(cursor["before"])
    with sandbox.state.lock:

        def stamp(o: Order) -> datetime:
            return o.updated_at if cursor["by_update"] else o.purchased_at

        chosen = sorted(
            (o for o in sandbox.state.account_orders(NAME, account).values() if after <= stamp(o) <= before),
            key=lambda o: (stamp(o), o.order_id),
        )
        offset, size = int(cursor["offset"]), int(cursor["size"])
        start = offset - 1 if offset > 0 and sandbox.duplicate_page(NAME, "getOrders") else offset
        page = chosen[start : offset + size]
        payload: Json = {"Orders": [render_order(o) for o in page]}
        if offset + size < len(chosen):
            payload["NextToken"] = _token({**cursor, "offset": offset + size})
        payload["LastUpdatedBefore" if cursor["by_update"] else "CreatedBefore"] = cursor["before"]
    return json_response({"payload": payload})


@get("/orders/v0/orders/{order_id:str}")
async def get_order(request: Request[Any, Any, Any], order_id: FromPath[str]) -> Response[Any]:
    sandbox, account = await CALLER.begin(request, "getOrder")
    with sandbox.state.lock:
        order = CALLER.order(sandbox, account, order_id)
        return json_response({"payload": render_order(order)})


@get("/orders/v0/orders/{order_id:str}/orderItems")
async def get_order_items(request: Request[Any, Any, Any], order_id: FromPath[str]) -> Response[Any]:
    sandbox, account = await CALLER.begin(request, "getOrderItems")
    query = {key: request.query_params.getall(key) for key in request.query_params}
    refused = sandbox.refuse(
        request,
        NAME,
        "getOrderItems",
        spec(ORDERS_SPEC).query_errors("/orders/v0/orders/{orderId}/orderItems", "get", query),
    )
    if refused is not None:
        return refused
    with sandbox.state.lock:
        order = CALLER.order(sandbox, account, order_id)
        return json_response(
            {"payload": {"AmazonOrderId": order.order_id, "OrderItems": render_items(order)}}
        )


@post("/orders/v0/orders/{order_id:str}/shipmentConfirmation", status_code=200)
async def confirm_shipment(request: Request[Any, Any, Any], order_id: FromPath[str]) -> Response[Any]:
    sandbox, account = await CALLER.begin(request, "confirmShipment")
    body, problem = await read_json(request)
    problems = [problem] if problem else spec(ORDERS_SPEC).body_errors("ConfirmShipmentRequest", body)
    if not problems:
        reference = body["packageDetail"]["packageReferenceId"]
        if not (reference.isdigit() and int(reference) > 0):
            problems.append("packageDetail/packageReferenceId: only positive numeric values are supported")
        try:
            parse_time(body["packageDetail"]["shipDate"])
        except ValueError:
            problems.append("packageDetail/shipDate: not an ISO 8601 date-time")
    refused = sandbox.refuse(request, NAME, "confirmShipment", problems)
    if refused is not None:
        return refused
    detail = body["packageDetail"]

    def apply() -> Json:
        order = CALLER.order(sandbox, account, order_id)
        if order.canceled:
            raise CALLER.refuse(400, "InvalidInput", f"Order {order_id} is canceled")
        if order.paid_at is None:
            raise CALLER.refuse(400, "InvalidInput", f"Order {order_id} is pending payment")
        wanted: dict[str, int] = {}
        for item in detail["orderItems"]:
            wanted[item["orderItemId"]] = wanted.get(item["orderItemId"], 0) + item["quantity"]
        for item_id, quantity in wanted.items():
            line = order.line(item_id)
            if line is None:
                raise CALLER.refuse(400, "InvalidInput", f"Order item {item_id} is not in order {order_id}")
            if quantity < 1 or line.shipped + quantity > line.quantity - line.cancelled:
                raise CALLER.refuse(
                    400, "InvalidInput", f"Quantity {quantity} of {item_id} exceeds what is left to ship"
                )
        for item_id, quantity in wanted.items():
            line = order.line(item_id)
            assert line is not None
            line.shipped += quantity
        shipment = {
            "package_reference_id": detail["packageReferenceId"],
            "carrier": detail["carrierCode"],
            "carrier_name": detail.get("carrierName"),
            "shipping_method": detail.get("shippingMethod"),
            "tracking_number": detail["trackingNumber"],
            "shipped_at": detail["shipDate"],
            "lines": wanted,
            "confirmed_at": iso(utcnow()),
        }
        order.shipments.append(shipment)
        order.touch()
        return shipment

    sandbox.state.apply_once(NAME, account, "confirmShipment", detail["packageReferenceId"], order_id, apply)
    return Response(content=b"", status_code=204)


# -------------------------------------------------------------------------------------- feeds


def _object(sandbox: Sandbox, kind: str, account: str, ident: str) -> Json | None:
    return sandbox.state.objects.get((NAME, f"{kind}:{account}:{ident}"))


def _store(sandbox: Sandbox, kind: str, account: str, ident: str, data: Json) -> None:
    key = (NAME, f"{kind}:{account}:{ident}")
    sandbox.state.objects[key] = data
    if kind == "feed" and data.get("processingStatus") != "DONE":
        sandbox.state.unfinished[key] = None


def _documents_url(request: Request[Any, Any, Any], account: str, document_id: str) -> str:
    """The document's "presigned S3 URL": an opaque signature names it (the seller's token is not in it)."""
    sandbox = sandbox_of(request)
    with sandbox.state.lock:
        document = _object(sandbox, "document", account, document_id)
        assert document is not None
        if "_signature" not in document:
            document["_signature"] = secrets.token_urlsafe(16)
            sandbox.state.objects[(NAME, f"s3:{document['_signature']}")] = {
                "account": account,
                "id": document_id,
            }
        signature = document["_signature"]
    return f"{str(request.base_url).rstrip('/')}/_amazon-s3/{signature}"


def _signed_document(sandbox: Sandbox, signature: str) -> Json | None:
    signed = sandbox.state.objects.get((NAME, f"s3:{signature}"))
    return None if signed is None else _object(sandbox, "document", signed["account"], signed["id"])


@post("/feeds/2021-06-30/documents", status_code=201)
async def create_feed_document(request: Request[Any, Any, Any]) -> Response[Any]:
    sandbox, account = await CALLER.begin(request, "createFeedDocument")
    body, problem = await read_json(request)
    problems = [problem] if problem else spec(FEEDS_SPEC).body_errors("CreateFeedDocumentSpecification", body)
    refused = sandbox.refuse(request, NAME, "createFeedDocument", problems)
    if refused is not None:
        return refused
    with sandbox.state.lock:
        document_id = f"amzn1.tortuga.4.na.{sandbox.state.next_number():08d}"
        _store(
            sandbox, "document", account, document_id, {"contentType": body["contentType"], "content": None}
        )
    return json_response(
        {"feedDocumentId": document_id, "url": _documents_url(request, account, document_id)}, 201
    )


@put("/_amazon-s3/{signature:str}", status_code=200)
async def upload_document(request: Request[Any, Any, Any], signature: FromPath[str]) -> Response[Any]:
    """The presigned S3 URL `createFeedDocument` gives: the feed's content goes here."""
    sandbox = sandbox_of(request)
    early = await sandbox.begin(request, NAME, "uploadFeedDocument")
    if early is not None:
        return early
    content = await request.body()
    with sandbox.state.lock:
        document = _signed_document(sandbox, signature)
        if document is None or document.get("result"):
            return Response(
                content=b"<Error><Code>NoSuchKey</Code></Error>",
                status_code=404,
                media_type="application/xml",
            )
        document["content"] = content.decode("utf-8", errors="replace")
    return Response(content=b"", status_code=200)


@get("/_amazon-s3/{signature:str}")
async def download_document(request: Request[Any, Any, Any], signature: FromPath[str]) -> Response[Any]:
    sandbox = sandbox_of(request)
    sandbox.tick()
    with sandbox.state.lock:
        document = _signed_document(sandbox, signature)
        if document is None or document.get("content") is None:
            return Response(
                content=b"<Error><Code>NoSuchKey</Code></Error>",
                status_code=404,
                media_type="application/xml",
            )
        return Response(
            content=document["content"].encode(), status_code=200, media_type=document["contentType"]
        )


@post("/feeds/2021-06-30/feeds", status_code=202)
async def create_feed(request: Request[Any, Any, Any]) -> Response[Any]:
    sandbox, account = await CALLER.begin(request, "createFeed")
    body, problem = await read_json(request)
    problems = [problem] if problem else spec(FEEDS_SPEC).body_errors("CreateFeedSpecification", body)
    if not problems and body["feedType"] not in (ACKNOWLEDGEMENT_FEED, ADJUSTMENT_FEED):
        problems.append(f"feedType {body['feedType']!r} is not one the sandbox processes")
    refused = sandbox.refuse(request, NAME, "createFeed", problems)
    if refused is not None:
        return refused
    with sandbox.state.lock:
        document = _object(sandbox, "document", account, body["inputFeedDocumentId"])
        if document is None or document.get("content") is None:
            return error(400, "InvalidInput", f"Feed document {body['inputFeedDocumentId']} has no content")
        feed_id = f"{50_000_000_000 + sandbox.state.next_number()}"
        _store(
            sandbox,
            "feed",
            account,
            feed_id,
            {
                "feedId": feed_id,
                "feedType": body["feedType"],
                "marketplaceIds": body["marketplaceIds"],
                "createdTime": iso(utcnow()),
                "processingStatus": "IN_QUEUE",
                "_started": monotonic(),
                "_document": body["inputFeedDocumentId"],
                "_account": account,
            },
        )
    return json_response({"feedId": feed_id}, 202)


@get("/feeds/2021-06-30/feeds/{feed_id:str}")
async def get_feed(request: Request[Any, Any, Any], feed_id: FromPath[str]) -> Response[Any]:
    sandbox, account = await CALLER.begin(request, "getFeed")
    with sandbox.state.lock:
        feed = _object(sandbox, "feed", account, feed_id)
        if feed is None:
            return error(404, "NotFound", f"Feed {feed_id} not found")
        return json_response({k: v for k, v in feed.items() if not k.startswith("_")})


@get("/feeds/2021-06-30/documents/{document_id:str}")
async def get_feed_document(request: Request[Any, Any, Any], document_id: FromPath[str]) -> Response[Any]:
    sandbox, account = await CALLER.begin(request, "getFeedDocument")
    with sandbox.state.lock:
        if _object(sandbox, "document", account, document_id) is None:
            return error(404, "NotFound", f"Feed document {document_id} not found")
    return json_response(
        {"feedDocumentId": document_id, "url": _documents_url(request, account, document_id)}
    )


def tick(sandbox: Sandbox) -> None:
    """Feeds move IN_QUEUE -> IN_PROGRESS (half the processing time) -> DONE (applied, with a report)."""
    delay = sandbox.state.settings.feed_processing_seconds
    now = monotonic()
    for key in [k for k in sandbox.state.unfinished if k[0] == NAME]:
        feed = sandbox.state.objects.get(key)
        if feed is None or feed["processingStatus"] == "DONE":
            sandbox.state.unfinished.pop(key, None)
            continue
        elapsed = now - feed["_started"]
        if elapsed >= delay:
            feed.setdefault("processingStartTime", iso(utcnow()))
            _process(sandbox, feed)
            feed["processingStatus"] = "DONE"
            feed["processingEndTime"] = iso(utcnow())
            sandbox.state.unfinished.pop(key, None)
        elif elapsed >= delay / 2 and feed["processingStatus"] == "IN_QUEUE":
            feed["processingStatus"] = "IN_PROGRESS"
            feed["processingStartTime"] = iso(utcnow())


class MessageError(Exception):
    """One feed message Amazon refuses: (result code, description)."""


def _process(sandbox: Sandbox, feed: Json) -> None:
    account = feed["_account"]
    document = _object(sandbox, "document", account, feed["_document"])
    assert document is not None
    results: list[tuple[str, str, str, str]] = []  # message id, ResultCode, ResultMessageCode, description
    processed = 0
    try:
        root = ElementTree.fromstring(document["content"])  # noqa: S314 - a local test server's own input
    except ElementTree.ParseError as exc:
        _violate_feed(sandbox, feed, [f"the feed is not XML: {exc}"])
        results.append(("0", "Error", "5001", f"XML Parsing Error: {exc}"))
    else:
        expected = "OrderAcknowledgement" if feed["feedType"] == ACKNOWLEDGEMENT_FEED else "OrderAdjustment"
        problems = _envelope_problems(root, expected)
        if problems:
            _violate_feed(sandbox, feed, problems)
            results.append(("0", "Error", "5000", "; ".join(problems)))
        else:
            for message in root.findall("Message"):
                processed += 1
                message_id = message.findtext("MessageID", "0")
                body = message.find(expected)
                assert body is not None
                try:
                    if expected == "OrderAcknowledgement":
                        _acknowledgement(sandbox, account, body)
                    else:
                        _adjustment(sandbox, account, body)
                except MessageError as exc:
                    code, description = exc.args
                    results.append((message_id, "Error", code, description))
    report_id = f"amzn1.tortuga.4.na.{sandbox.state.next_number():08d}"
    _store(
        sandbox,
        "document",
        account,
        report_id,
        {
            "contentType": "text/xml; charset=UTF-8",
            "content": _report(feed, processed, results),
            "result": True,
        },
    )
    feed["resultFeedDocumentId"] = report_id


def _violate_feed(sandbox: Sandbox, feed: Json, problems: list[str]) -> None:
    sandbox.state.violate(
        Violation(NAME, "createFeed", "POST", f"feed {feed['feedId']} ({feed['feedType']})", problems)
    )


def _envelope_problems(root: ElementTree.Element, expected: str) -> list[str]:
    problems = []
    if root.tag != "AmazonEnvelope":
        problems.append(f"the root element is {root.tag}, not AmazonEnvelope")
    if root.find("Header/DocumentVersion") is None or not root.findtext("Header/MerchantIdentifier"):
        problems.append("Header needs DocumentVersion and MerchantIdentifier")
    if root.findtext("MessageType") != expected:
        problems.append(f"MessageType must be {expected} for this feed type")
    messages = root.findall("Message")
    if not messages:
        problems.append("no Message")
    for message in messages:
        if not (message.findtext("MessageID") or "").isdigit():
            problems.append("each Message needs a numeric MessageID")
        body = message.find(expected)
        if body is None or not body.findtext("AmazonOrderID"):
            problems.append(f"each Message needs an {expected} with an AmazonOrderID")
            continue
        if expected == "OrderAcknowledgement":
            if body.findtext("StatusCode") not in ("Success", "Failure"):
                problems.append("StatusCode is Success or Failure")
            for item in body.findall("Item"):
                if not item.findtext("AmazonOrderItemCode"):
                    problems.append("each Item needs an AmazonOrderItemCode")
                reason = item.findtext("CancelReason")
                if reason is not None and reason not in CANCEL_REASONS:
                    problems.append(f"CancelReason {reason!r} is not one of Amazon's")
                quantity = item.findtext("Quantity")
                if quantity is not None and not (quantity.isdigit() and int(quantity) > 0):
                    problems.append("Quantity is a positive integer")
        else:
            items = body.findall("AdjustedItem")
            if not items:
                problems.append("an OrderAdjustment needs an AdjustedItem")
            for item in items:
                if not item.findtext("AmazonOrderItemCode") or not item.findtext("MerchantAdjustmentItemID"):
                    problems.append(
                        "each AdjustedItem needs AmazonOrderItemCode and MerchantAdjustmentItemID"
                    )
                if item.findtext("AdjustmentReason") not in ADJUSTMENT_REASONS:
                    problems.append(
                        f"AdjustmentReason {item.findtext('AdjustmentReason')!r} is not one of Amazon's"
                    )
                components = item.findall("ItemPriceAdjustments/Component")
                if not components:
                    problems.append("an AdjustedItem needs ItemPriceAdjustments with a Component")
                for component in components:
                    amount = component.find("Amount")
                    if (
                        component.findtext("Type") not in COMPONENT_TYPES
                        or amount is None
                        or not amount.get("currency")
                    ):
                        problems.append("a Component has a known Type and an Amount with a currency")
                        continue
                    try:
                        Decimal(amount.text or "")
                    except InvalidOperation:
                        problems.append(f"Amount {amount.text!r} is not a number")
    return problems


def _order_for(sandbox: Sandbox, account: str, body: ElementTree.Element) -> Order:
    order_id = body.findtext("AmazonOrderID", "")
    order = sandbox.state.find(NAME, account, order_id)
    if order is None:
        raise MessageError("18028", f"The order ID {order_id} was not found in our system.")
    return order


def _acknowledgement(sandbox: Sandbox, account: str, body: ElementTree.Element) -> None:
    order = _order_for(sandbox, account, body)
    key = body.findtext("MerchantOrderID") or f"{order.order_id}:{body.findtext('StatusCode')}"
    if body.findtext("StatusCode") == "Success":

        def acknowledge() -> Json:
            order.acknowledged_at = order.acknowledged_at or utcnow()
            return {"acknowledged": True}

        sandbox.state.apply_once(NAME, account, "acknowledgeOrder", key, order.order_id, acknowledge)
        return

    def cancel() -> Json:
        items = body.findall("Item")
        wanted: dict[str, int] = {}
        reasons = set()
        for item in items:
            line = order.line(item.findtext("AmazonOrderItemCode", ""))
            if line is None:
                raise MessageError(
                    "18040", f"Order item {item.findtext('AmazonOrderItemCode')} is not in the order."
                )
            left = line.quantity - line.cancelled - line.shipped
            wanted[line.line_id] = int(item.findtext("Quantity") or left)
            reasons.add(item.findtext("CancelReason") or "")
        if not items:
            wanted = {line.line_id: line.quantity - line.cancelled - line.shipped for line in order.lines}
        for line_id, quantity in wanted.items():
            line = order.line(line_id)
            assert line is not None
            if quantity > line.quantity - line.cancelled - line.shipped:
                raise MessageError(
                    "18041", f"Cannot cancel {quantity} of item {line_id}: shipped or cancelled already."
                )
        for line_id, quantity in wanted.items():
            line = order.line(line_id)
            assert line is not None
            line.cancelled += quantity
        if all(line.cancelled >= line.quantity for line in order.lines):
            order.canceled = True
        cancellation = {"key": key, "lines": wanted, "reason": ",".join(sorted(reasons)), "at": iso(utcnow())}
        order.cancellations.append(cancellation)
        order.touch()
        return cancellation

    sandbox.state.apply_once(NAME, account, "cancelOrder", key, order.order_id, cancel)


def _adjustment(sandbox: Sandbox, account: str, body: ElementTree.Element) -> None:
    order = _order_for(sandbox, account, body)
    for item in body.findall("AdjustedItem"):
        key = item.findtext("MerchantAdjustmentItemID", "")

        def refund(item: ElementTree.Element = item, key: str = key) -> Json:
            line = order.line(item.findtext("AmazonOrderItemCode", ""))
            if line is None:
                raise MessageError(
                    "18040", f"Order item {item.findtext('AmazonOrderItemCode')} is not in the order."
                )
            if line.shipped == 0:
                raise MessageError(
                    "18042", f"Item {line.line_id} has not shipped; Amazon adjusts only shipped items."
                )
            components: dict[str, str] = {}
            total = Decimal(0)
            for component in item.findall("ItemPriceAdjustments/Component"):
                amount_element = component.find("Amount")
                assert amount_element is not None
                if amount_element.get("currency") != order.currency:
                    raise MessageError("18043", f"The currency is {order.currency}.")
                amount = abs(Decimal(amount_element.text or "0"))
                components[component.findtext("Type", "")] = str(amount)
                total += amount
            refunded = sum(
                (Decimal(r["amount"]) for r in order.refunds if r["line_id"] == line.line_id), Decimal(0)
            )
            paid = line.unit_price * line.quantity + line.tax + line.shipping
            if refunded + total > paid:
                raise MessageError("18044", f"The adjustment exceeds what was paid for item {line.line_id}.")
            entry = {
                "key": key,
                "line_id": line.line_id,
                "reason": item.findtext("AdjustmentReason"),
                "components": components,
                "amount": str(total),
                "status": "REFUNDED",
                "at": iso(utcnow()),
            }
            order.refunds.append(entry)
            order.touch()
            return entry

        sandbox.state.apply_once(NAME, account, "paymentAdjustment", key, order.order_id, refund)


def _report(feed: Json, processed: int, results: list[tuple[str, str, str, str]]) -> str:
    with_error = len({r[0] for r in results if r[1] == "Error"})
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<AmazonEnvelope xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="amzn-envelope.xsd">',
        "<Header><DocumentVersion>1.02</DocumentVersion><MerchantIdentifier>SANDBOX</MerchantIdentifier></Header>",
        "<MessageType>ProcessingReport</MessageType>",
        "<Message><MessageID>1</MessageID><ProcessingReport>",
        f"<DocumentTransactionID>{feed['feedId']}</DocumentTransactionID>",
        "<StatusCode>Complete</StatusCode>",
        "<ProcessingSummary>",
        f"<MessagesProcessed>{processed}</MessagesProcessed>",
        f"<MessagesSuccessful>{max(processed - with_error, 0)}</MessagesSuccessful>",
        f"<MessagesWithError>{with_error}</MessagesWithError>",
        "<MessagesWithWarning>0</MessagesWithWarning>",
        "</ProcessingSummary>",
    ]
    for message_id, code, message_code, description in results:
        parts.append(
            f"<Result><MessageID>{message_id}</MessageID><ResultCode>{code}</ResultCode>"
            f"<ResultMessageCode>{message_code}</ResultMessageCode>"
            f"<ResultDescription>{_escape(description)}</ResultDescription></Result>"
        )
    parts.append("</ProcessingReport></Message></AmazonEnvelope>")
    return "\n".join(parts)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------------------------- finances

CHARGE_TYPES = {
    "Principal": "Principal",
    "Shipping": "ShippingCharge",
    "Tax": "Tax",
    "ShippingTax": "ShippingTax",
}


@get("/finances/v0/orders/{order_id:str}/financialEvents")
async def list_financial_events_by_order_id(
    request: Request[Any, Any, Any], order_id: FromPath[str]
) -> Response[Any]:
    """Finances v0 `listFinancialEventsByOrderId`: the refunds (payment adjustments) of an order.

    No spec file for Finances here; the shape follows Amazon's public model (`RefundEventList` of
    `ShipmentItemAdjustmentList` with negative `ItemChargeAdjustmentList` amounts)."""
    sandbox, account = await CALLER.begin(request, "listFinancialEventsByOrderId")
    with sandbox.state.lock:
        order = CALLER.order(sandbox, account, order_id)
        events = [
            {
                "AmazonOrderId": order.order_id,
                "PostedDate": refund["at"],
                "MarketplaceName": "Amazon.com",
                "ShipmentItemAdjustmentList": [
                    {
                        "OrderAdjustmentItemId": refund["key"],
                        "SellerSKU": (order.line(refund["line_id"]) or order.lines[0]).sku,
                        "ItemChargeAdjustmentList": [
                            {
                                "ChargeType": CHARGE_TYPES.get(kind, kind),
                                "ChargeAmount": {
                                    "CurrencyCode": order.currency,
                                    "CurrencyAmount": -float(amount),
                                },
                            }
                            for kind, amount in refund["components"].items()
                        ],
                    }
                ],
            }
            for refund in order.refunds
        ]
    return json_response({"payload": {"FinancialEvents": {"RefundEventList": events}}})


def describe(sandbox: Sandbox, order: Order) -> Json:
    """Amazon's own view of the order, beside the generic one: its status code."""
    return {"marketplace_status": STATUSES[order.status]}


MARKETPLACE = Marketplace(
    name=NAME,
    routes=[
        get_orders,
        get_order,
        get_order_items,
        confirm_shipment,
        create_feed_document,
        upload_document,
        download_document,
        create_feed,
        get_feed,
        get_feed_document,
        list_financial_events_by_order_id,
    ],
    new_order_id=new_order_id,
    error=error,
    tick=tick,
    describe=describe,
    # As the SP-API models publish them (the usage-plan tables of each operation in marketplace-specs/amazon).
    rate_limits={
        "getOrders": (0.0167, 20),
        "getOrder": (0.5, 30),
        "getOrderItems": (0.5, 30),
        "confirmShipment": (2.0, 10),
        "createFeedDocument": (0.5, 15),
        "createFeed": (0.0083, 15),
        "getFeed": (2.0, 15),
        "getFeedDocument": (0.0222, 10),
    },
)

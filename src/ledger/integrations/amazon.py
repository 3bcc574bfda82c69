"""Amazon SP-API adapter: Orders v0 for orders and shipments, Feeds 2021-06-30 for cancellations and refunds.

Credentials (`endpoint.credentials`; never logged, never in an error message):
- `access_token`: the SP-API access token sent as `x-amz-access-token` (the sandbox takes any non-empty value
  and keeps each token's orders apart, as Amazon keeps each seller's);
- `marketplace_id`: the Amazon marketplace (default `ATVPDKIKX0DER`, amazon.com);
- `seller_id`: the merchant identifier written in feed headers (default `SELLER`).

Inbound: `getOrders` by `LastUpdatedAfter`, page by page (`NextToken`), and `getOrderItems` for each order.
Amazon reports payment by the order's status (`Pending` is not yet paid), and a buyer's cancellation within
30 minutes of purchase as a `Canceled` order whose items carry `BuyerRequestedCancel`: that becomes a
`BuyerCancelled` fact. Later, the items carry `BuyerRequestedCancel` while the order stays open: a request
(`BuyerCancelled(applied=False)`) that the seller answers by cancelling or shipping. Amazon pays the seller only after the shipment is confirmed.

Outbound, each change under Amazon's own dedupe key so that a retry never applies twice:
- ship: `confirmShipment` with `packageReferenceId` derived from the idempotency key (Amazon takes only
  positive numbers there) -> `Accepted`;
- cancel: an `OrderAcknowledgement` feed (`StatusCode` Failure, a `CancelReason` per item), the idempotency key
  as `MerchantOrderID` -> `Submitted(feed id)`;
- refund: an `OrderAdjustment` feed, one `AdjustedItem` per line with `MerchantAdjustmentItemID` =
  `<idempotency key>:<n>` -> `Submitted(feed id)`;
- acknowledge: an `OrderAcknowledgement` feed with `StatusCode` Success.
`poll` reads the feed: `IN_QUEUE`/`IN_PROGRESS` -> `Submitted` again; `DONE` -> the processing report's errors
as `PermanentMarketplaceError`, else `Accepted(feed id)`; `CANCELLED`/`FATAL` -> `PermanentMarketplaceError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID
from xml.etree import ElementTree

import httpx
import msgspec

from ledger.aggregates.policies import ORDER_CANCELED
from ledger.aggregates.values import (
    Address,
    Buyer,
    CancelReason,
    Carrier,
    ImportedOrder,
    LineQuantity,
    Marketplace,
    OrderLine,
    PaymentStatus,
    RefundReason,
)
from ledger.integrations.base import (
    Accepted,
    BuyerCancelled,
    Endpoint,
    MarketplaceFact,
    OrderPage,
    Outcome,
    PaymentCleared,
    PermanentMarketplaceError,
    RemoteOrder,
    RemoteState,
    Submitted,
    SyncRequest,
    TransientMarketplaceError,
)
from ledger.integrations.outbox import Acknowledge, Cancel, CloseDispute, Refund, Ship
from ledger.integrations.rest import (
    GatedClient,
    RestTransport,
    decode,
    decoder,
    format_time,
    parse_time,
    quote,
)

DEFAULT_MARKETPLACE_ID = "ATVPDKIKX0DER"
# confirmShipment's refusal of an order Amazon has cancelled: `InvalidInput`, "Order ... is canceled".
CANCELED_ORDER = re.compile(r"\bis cancell?ed\b", re.IGNORECASE)
ACKNOWLEDGEMENT_FEED = "POST_ORDER_ACKNOWLEDGEMENT_DATA"
ADJUSTMENT_FEED = "POST_PAYMENT_ADJUSTMENT_DATA"
FEED_CONTENT_TYPE = "text/xml; charset=UTF-8"
FEED_POLL_SECONDS = 30.0  # Amazon's advice: poll feeds no more often than this

# ------------------------------------------------------------------------------------ wire shapes


class Money(msgspec.Struct, forbid_unknown_fields=False):
    CurrencyCode: str | None = None
    Amount: str | None = None


class AmazonAddress(msgspec.Struct, forbid_unknown_fields=False):
    Name: str = ""
    AddressLine1: str = ""
    AddressLine2: str = ""
    City: str = ""
    StateOrRegion: str = ""
    PostalCode: str = ""
    CountryCode: str = ""
    Phone: str = ""


class AmazonBuyerInfo(msgspec.Struct, forbid_unknown_fields=False):
    BuyerEmail: str = ""
    BuyerName: str = ""


class AmazonOrder(msgspec.Struct, forbid_unknown_fields=False):
    AmazonOrderId: str
    PurchaseDate: str
    LastUpdateDate: str
    OrderStatus: str
    OrderTotal: Money | None = None
    ShippingAddress: AmazonAddress | None = None
    BuyerInfo: AmazonBuyerInfo | None = None
    FulfillmentChannel: str | None = None
    LatestShipDate: str | None = None  # seller-fulfilled orders only


class OrdersList(msgspec.Struct, forbid_unknown_fields=False):
    Orders: list[AmazonOrder]
    NextToken: str | None = None


class GetOrdersResponse(msgspec.Struct, forbid_unknown_fields=False):
    payload: OrdersList


class BuyerRequestedCancel(msgspec.Struct, forbid_unknown_fields=False):
    IsBuyerRequestedCancel: str | None = None
    BuyerCancelReason: str | None = None


class AmazonOrderItem(msgspec.Struct, forbid_unknown_fields=False):
    OrderItemId: str
    QuantityOrdered: int
    SellerSKU: str = ""
    Title: str = ""
    QuantityShipped: int = 0
    ItemPrice: Money | None = None
    ItemTax: Money | None = None
    ShippingPrice: Money | None = None
    ShippingTax: Money | None = None
    BuyerRequestedCancel: BuyerRequestedCancel | None = None


class OrderItemsList(msgspec.Struct, forbid_unknown_fields=False):
    AmazonOrderId: str
    OrderItems: list[AmazonOrderItem]
    NextToken: str | None = None


class GetOrderItemsResponse(msgspec.Struct, forbid_unknown_fields=False):
    payload: OrderItemsList


class GetOrderResponse(msgspec.Struct, forbid_unknown_fields=False):
    payload: AmazonOrder


class FeedDocument(msgspec.Struct, forbid_unknown_fields=False):
    feedDocumentId: str
    url: str


class CreateFeedResponse(msgspec.Struct, forbid_unknown_fields=False):
    feedId: str


class Feed(msgspec.Struct, forbid_unknown_fields=False):
    feedId: str
    processingStatus: str
    resultFeedDocumentId: str | None = None


class ChargeAmount(msgspec.Struct, forbid_unknown_fields=False):
    CurrencyCode: str = ""
    CurrencyAmount: Decimal = Decimal(0)


class ChargeComponent(msgspec.Struct, forbid_unknown_fields=False):
    ChargeType: str = ""
    ChargeAmount: ChargeAmount | None = None


class ShipmentItem(msgspec.Struct, forbid_unknown_fields=False):
    ItemChargeAdjustmentList: list[ChargeComponent] = msgspec.field(default_factory=list)


class ShipmentEvent(msgspec.Struct, forbid_unknown_fields=False):
    ShipmentItemAdjustmentList: list[ShipmentItem] = msgspec.field(default_factory=list)


class FinancialEvents(msgspec.Struct, forbid_unknown_fields=False):
    RefundEventList: list[ShipmentEvent] = msgspec.field(default_factory=list)


class FinancialEventsPayload(msgspec.Struct, forbid_unknown_fields=False):
    FinancialEvents: FinancialEvents = msgspec.field(default_factory=FinancialEvents)
    NextToken: str | None = None


class ListFinancialEventsResponse(msgspec.Struct, forbid_unknown_fields=False):
    payload: FinancialEventsPayload = msgspec.field(default_factory=FinancialEventsPayload)


class AmazonError(msgspec.Struct, forbid_unknown_fields=False):
    code: str = ""
    message: str = ""


class ErrorList(msgspec.Struct, forbid_unknown_fields=False):
    errors: list[AmazonError] = msgspec.field(default_factory=list)


def read_error(body: bytes) -> tuple[str, str] | None:
    """Amazon's `{"errors": [{code, message}]}` as (code, message)."""
    try:
        errors = msgspec.json.decode(body, type=ErrorList).errors
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return (errors[0].code or "error", errors[0].message) if errors else None


# --------------------------------------------------------------------------------- code mappings

CARRIERS: dict[str, str] = {
    Carrier.UPS: "UPS",
    Carrier.USPS: "USPS",
    Carrier.FEDEX: "FedEx",
    Carrier.DHL: "DHL",
    Carrier.ONTRAC: "OnTrac",
    Carrier.AMAZON_LOGISTICS: "Amazon Shipping",
    Carrier.ROYAL_MAIL: "Royal Mail",
    Carrier.CANADA_POST: "Canada Post",
    Carrier.OTHER: "Other",
}
CANCEL_REASONS: dict[str, str] = {
    CancelReason.BUYER_CANCELLED: "BuyerCanceled",
    CancelReason.OUT_OF_STOCK: "NoInventory",
    CancelReason.ADDRESS_UNDELIVERABLE: "ShippingAddressUndeliverable",
    CancelReason.PRICING_ERROR: "PricingError",
    CancelReason.FRAUD_SUSPECTED: "RiskAssessmentInformationNotValid",
    CancelReason.BUYER_UNPAID: "GeneralAdjustment",  # Amazon collects payment itself
    CancelReason.OTHER: "GeneralAdjustment",
}
ADJUSTMENT_REASONS: dict[str, str] = {
    RefundReason.CUSTOMER_RETURN: "CustomerReturn",
    RefundReason.NOT_RECEIVED: "CarrierCreditDecision",
    RefundReason.NOT_AS_DESCRIBED: "DifferentItem",
    RefundReason.DAMAGED: "CustomerReturn",
    RefundReason.SHIPPING_ADJUSTMENT: "GeneralAdjustment",
    RefundReason.GOODWILL: "GeneralAdjustment",
    RefundReason.OTHER: "Other",
}


# Orders v0 status as the ledger's (`ledger sync check` compares these); Pending and the rest stay Amazon's.
STATUSES = {
    "Unshipped": "unshipped",
    "PartiallyShipped": "partially_shipped",
    "Shipped": "shipped",
    "Canceled": "canceled",
}


def carrier_code(carrier: str) -> str:
    return CARRIERS.get(carrier, "Other")


def cancel_reason(reason: str | None) -> str:
    return CANCEL_REASONS.get(reason or CancelReason.OTHER, "GeneralAdjustment")


def adjustment_reason(reason: str | None) -> str:
    return ADJUSTMENT_REASONS.get(reason or RefundReason.OTHER, "Other")


def package_reference_id(idempotency_key: str) -> str:
    """A positive number, the same for the same key: Amazon takes only digits as `packageReferenceId`."""
    try:
        number = UUID(idempotency_key).int >> 68  # 60 bits: at most 19 digits
    except ValueError:
        number = int.from_bytes(idempotency_key.encode()[:8].ljust(8, b"\0"), "big") >> 4
    return str(number or 1)


def adjustment_item_id(idempotency_key: str, index: int) -> str:
    return f"{idempotency_key}:{index}"


# ------------------------------------------------------------------------------- inbound mapping

_ZERO = Decimal(0)


def _amount(money: Money | None) -> Decimal:
    return Decimal(money.Amount) if money is not None and money.Amount else _ZERO


def to_remote_order(order: AmazonOrder, items: Sequence[AmazonOrderItem]) -> RemoteOrder:
    """An Amazon order and its items as the ledger imports it, with the facts Amazon reports."""
    purchased_at = parse_time(order.PurchaseDate)
    updated_at = parse_time(order.LastUpdateDate)
    paid = order.OrderStatus not in ("Pending", "PendingAvailability")
    currency = next(
        (m.CurrencyCode for i in items for m in (i.ItemPrice,) if m is not None and m.CurrencyCode),
        order.OrderTotal.CurrencyCode if order.OrderTotal and order.OrderTotal.CurrencyCode else "USD",
    )
    lines = []
    for item in items:
        quantity = item.QuantityOrdered
        price = _amount(item.ItemPrice)
        lines.append(
            OrderLine(
                line_id=item.OrderItemId,
                sku=item.SellerSKU,
                quantity=quantity,
                unit_price=price / quantity if quantity else price,  # ItemPrice is for the whole line
                tax=_amount(item.ItemTax) + _amount(item.ShippingTax),
                shipping=_amount(item.ShippingPrice),
                title=item.Title,
            )
        )
    address = order.ShippingAddress
    buyer = order.BuyerInfo or AmazonBuyerInfo()
    imported = ImportedOrder(
        marketplace_order_id=order.AmazonOrderId,
        purchased_at=purchased_at,
        currency=currency,
        payment_status=PaymentStatus.PAID if paid else PaymentStatus.PENDING,
        buyer=Buyer(name=buyer.BuyerName, email=buyer.BuyerEmail),
        lines=tuple(lines),
        ship_to=None
        if address is None
        else Address(
            name=address.Name,
            line1=address.AddressLine1,
            line2=address.AddressLine2,
            city=address.City,
            state=address.StateOrRegion,
            postal_code=address.PostalCode,
            country=address.CountryCode,
            phone=address.Phone,
        ),
        paid_at=purchased_at if paid else None,
        ship_by=parse_time(order.LatestShipDate) if order.LatestShipDate else None,
    )
    facts: list[MarketplaceFact] = []
    if paid:
        facts.append(PaymentCleared(paid_at=purchased_at))
    asked = [
        i
        for i in items
        if i.BuyerRequestedCancel is not None and i.BuyerRequestedCancel.IsBuyerRequestedCancel == "true"
    ]
    if order.OrderStatus == "Canceled" and asked:
        facts.append(BuyerCancelled(requested_at=updated_at))
    elif asked and order.OrderStatus in ("Unshipped", "PartiallyShipped"):
        # Past its 30 minutes the buyer can only ask: a request the seller answers by cancelling or shipping.
        requested = (
            None
            if len(asked) == len(items)
            else tuple(LineQuantity(i.OrderItemId, i.QuantityOrdered) for i in asked)
        )
        facts.append(BuyerCancelled(requested_at=updated_at, lines=requested, applied=False))
    return RemoteOrder(
        order=imported,
        updated_at=updated_at,
        facts=tuple(facts),
        needs_acknowledgement=paid and order.OrderStatus in ("Unshipped", "PartiallyShipped"),
    )


# ------------------------------------------------------------------------------ outbound mapping


def confirm_shipment_body(ship: Ship, key: str, marketplace_id: str) -> dict[str, Any]:
    """The `confirmShipment` request for a ship item (`key`: its idempotency key)."""
    carrier = ship.carrier or Carrier.OTHER
    detail: dict[str, Any] = {
        "packageReferenceId": package_reference_id(key),
        "carrierCode": carrier_code(carrier),
        "trackingNumber": ship.tracking_number,
        "shipDate": format_time(ship.shipped_at),
        "orderItems": [{"orderItemId": line.line_id, "quantity": line.quantity} for line in ship.lines],
    }
    if detail["carrierCode"] == "Other":
        detail["carrierName"] = carrier.replace("_", " ").title() if carrier != Carrier.OTHER else "Other"
    if ship.shipping_class:
        detail["shippingMethod"] = ship.shipping_class
    return {"marketplaceId": marketplace_id, "packageDetail": detail}


def _envelope(seller_id: str, message_type: str, body: ElementTree.Element) -> bytes:
    root = ElementTree.Element("AmazonEnvelope")
    header = ElementTree.SubElement(root, "Header")
    ElementTree.SubElement(header, "DocumentVersion").text = "1.01"
    ElementTree.SubElement(header, "MerchantIdentifier").text = seller_id
    ElementTree.SubElement(root, "MessageType").text = message_type
    message = ElementTree.SubElement(root, "Message")
    ElementTree.SubElement(message, "MessageID").text = "1"
    message.append(body)
    text: bytes = ElementTree.tostring(root, encoding="utf-8")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + text


def cancellation_feed(cancel: Cancel, key: str, seller_id: str) -> bytes:
    """An OrderAcknowledgement feed cancelling the request's lines (all of them when it lists none)."""
    body = ElementTree.Element("OrderAcknowledgement")
    ElementTree.SubElement(body, "AmazonOrderID").text = cancel.marketplace_order_id
    ElementTree.SubElement(body, "MerchantOrderID").text = key
    ElementTree.SubElement(body, "StatusCode").text = "Failure"
    reason = cancel_reason(cancel.reason)
    for line in cancel.lines:
        item = ElementTree.SubElement(body, "Item")
        ElementTree.SubElement(item, "AmazonOrderItemCode").text = line.line_id
        ElementTree.SubElement(item, "CancelReason").text = reason
        ElementTree.SubElement(item, "Quantity").text = str(line.quantity)
    return _envelope(seller_id, "OrderAcknowledgement", body)


def acknowledgement_feed(marketplace_order_id: str, seller_id: str, key: str) -> bytes:
    body = ElementTree.Element("OrderAcknowledgement")
    ElementTree.SubElement(body, "AmazonOrderID").text = marketplace_order_id
    ElementTree.SubElement(body, "MerchantOrderID").text = key
    ElementTree.SubElement(body, "StatusCode").text = "Success"
    return _envelope(seller_id, "OrderAcknowledgement", body)


def adjustment_feed(refund: Refund, key: str, seller_id: str) -> bytes:
    """An OrderAdjustment feed refunding each line's components."""
    currency = refund.currency
    reason = adjustment_reason(refund.reason)
    body = ElementTree.Element("OrderAdjustment")
    ElementTree.SubElement(body, "AmazonOrderID").text = refund.marketplace_order_id
    for index, line in enumerate(refund.lines, start=1):
        item = ElementTree.SubElement(body, "AdjustedItem")
        ElementTree.SubElement(item, "AmazonOrderItemCode").text = line.line_id
        ElementTree.SubElement(item, "MerchantAdjustmentItemID").text = adjustment_item_id(key, index)
        ElementTree.SubElement(item, "AdjustmentReason").text = reason
        adjustments = ElementTree.SubElement(item, "ItemPriceAdjustments")
        for kind, amount in (
            ("Principal", line.item_amount),
            ("Shipping", line.shipping_amount),
            ("Tax", line.tax_amount),
        ):
            if amount == 0 and kind != "Principal":
                continue
            component = ElementTree.SubElement(adjustments, "Component")
            ElementTree.SubElement(component, "Type").text = kind
            ElementTree.SubElement(component, "Amount", currency=currency).text = f"{amount:.2f}"
    return _envelope(seller_id, "OrderAdjustment", body)


def report_errors(report: bytes) -> list[tuple[str, str]]:
    """The (ResultMessageCode, ResultDescription) of every error in a feed processing report."""
    root = ElementTree.fromstring(report)  # noqa: S314 - Amazon's own report, not arbitrary input
    return [
        (result.findtext("ResultMessageCode", ""), result.findtext("ResultDescription", ""))
        for result in root.iter("Result")
        if result.findtext("ResultCode") == "Error"
    ]


def refunded_total(events: ListFinancialEventsResponse) -> Decimal:
    """The sum of a page of refund events' charge adjustments (Amazon writes refunds as negative amounts)."""
    return sum(
        (
            abs(charge.ChargeAmount.CurrencyAmount)
            for event in events.payload.FinancialEvents.RefundEventList
            for item in event.ShipmentItemAdjustmentList
            for charge in item.ItemChargeAdjustmentList
            if charge.ChargeAmount is not None
        ),
        _ZERO,
    )


# ----------------------------------------------------------------------------------------- client


class AmazonClient(GatedClient):
    """One Amazon seller account over SP-API (thread-safe as httpx.Client is)."""

    marketplace = Marketplace.AMAZON

    def __init__(self, endpoint: Endpoint, http: httpx.Client | None = None, *, page_size: int = 100) -> None:
        credentials = endpoint.credentials
        if not credentials.get("access_token"):
            raise PermanentMarketplaceError(
                "credentials", "the Amazon account needs an access_token credential"
            )
        self._token = credentials["access_token"]
        self._marketplace_id = credentials.get("marketplace_id") or DEFAULT_MARKETPLACE_ID
        self._seller_id = credentials.get("seller_id") or "SELLER"
        self._transport = RestTransport(endpoint, http, read_error)
        self._page_size = page_size

    def _call(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None
    ) -> bytes:
        return self._transport.call(
            method,
            path,
            {"x-amz-access-token": self._token},
            params=params,
            body=None if body is None else msgspec.json.encode(body),
        )

    def _get(self, path: str, kind: type[Any], params: Mapping[str, Any] | None = None) -> Any:
        return decode(self._call("GET", path, params=params), decoder(kind), f"GET {path}")

    # ---------------------------------------------------------------------------------- inbound

    def list_orders(self, updated_after: datetime, page: str | None = None) -> OrderPage:
        params: dict[str, Any] = {"MarketplaceIds": self._marketplace_id}
        if page is None:
            params["LastUpdatedAfter"] = format_time(updated_after)
            params["MaxResultsPerPage"] = self._page_size
        else:
            params["NextToken"] = page
        listed: GetOrdersResponse = self._transport.gated(
            "getOrders", lambda: self._get("/orders/v0/orders", GetOrdersResponse, params)
        )
        orders = tuple(
            to_remote_order(order, self._items(order.AmazonOrderId)) for order in listed.payload.Orders
        )
        return OrderPage(orders=orders, next_page=listed.payload.NextToken or None)

    def _items(self, order_id: str) -> list[AmazonOrderItem]:
        items: list[AmazonOrderItem] = []
        token: str | None = None
        while True:
            path, params = (
                f"/orders/v0/orders/{quote(order_id)}/orderItems",
                {"NextToken": token} if token else None,
            )
            found: GetOrderItemsResponse = self._transport.gated(
                "getOrderItems", partial(self._get, path, GetOrderItemsResponse, params)
            )
            items += found.payload.OrderItems
            token = found.payload.NextToken
            if not token:
                return items

    def acknowledge(self, marketplace_order_id: str) -> None:
        """Submit the order's acknowledgement feed (Amazon processes it later; its result is not awaited)."""
        feed = acknowledgement_feed(marketplace_order_id, self._seller_id, f"ack:{marketplace_order_id}")
        self._submit_feed(ACKNOWLEDGEMENT_FEED, feed)

    # --------------------------------------------------------------------------------- outbound

    def send(self, request: SyncRequest) -> Outcome:
        key = request.idempotency_key
        match request.message:
            case Ship() as ship:
                body = confirm_shipment_body(ship, key, self._marketplace_id)
                try:
                    self._call(
                        "POST",
                        f"/orders/v0/orders/{quote(request.marketplace_order_id)}/shipmentConfirmation",
                        body=body,
                    )
                except PermanentMarketplaceError as e:
                    if CANCELED_ORDER.search(e.message):  # the buyer cancelled before the confirmation came
                        raise PermanentMarketplaceError(ORDER_CANCELED, e.message) from None
                    raise
                return Accepted(marketplace_reference=body["packageDetail"]["packageReferenceId"])
            case Cancel() as cancel:
                feed_id = self._submit_feed(
                    ACKNOWLEDGEMENT_FEED, cancellation_feed(cancel, key, self._seller_id)
                )
                return Submitted(feed_id, poll_after_seconds=FEED_POLL_SECONDS)
            case Refund() as refund:
                feed_id = self._submit_feed(ADJUSTMENT_FEED, adjustment_feed(refund, key, self._seller_id))
                return Submitted(feed_id, poll_after_seconds=FEED_POLL_SECONDS)
            case Acknowledge():
                feed = acknowledgement_feed(request.marketplace_order_id, self._seller_id, key)
                return Submitted(
                    self._submit_feed(ACKNOWLEDGEMENT_FEED, feed), poll_after_seconds=FEED_POLL_SECONDS
                )
            case CloseDispute():
                raise PermanentMarketplaceError(
                    "unsupported", "SP-API has no call to close an A-to-z claim: answer it in Seller Central"
                )

    def _submit_feed(self, feed_type: str, content: bytes) -> str:
        """createFeedDocument, upload, createFeed: the feed id."""
        document: FeedDocument = decode(
            self._call("POST", "/feeds/2021-06-30/documents", body={"contentType": FEED_CONTENT_TYPE}),
            decoder(FeedDocument),
            "createFeedDocument",
        )
        self._raw("PUT", document.url, content, {"Content-Type": FEED_CONTENT_TYPE})
        created: CreateFeedResponse = decode(
            self._call(
                "POST",
                "/feeds/2021-06-30/feeds",
                body={
                    "feedType": feed_type,
                    "marketplaceIds": [self._marketplace_id],
                    "inputFeedDocumentId": document.feedDocumentId,
                },
            ),
            decoder(CreateFeedResponse),
            "createFeed",
        )
        return created.feedId

    def _raw(
        self, method: str, url: str, content: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> bytes:
        """A call to a presigned document URL (no SP-API token: the URL is the authorization)."""
        return self._transport.request(method, url, headers or {}, content=content, where=urlsplit(url).path)

    def poll(self, request: SyncRequest, marketplace_reference: str) -> Outcome:
        feed: Feed = self._get(f"/feeds/2021-06-30/feeds/{quote(marketplace_reference)}", Feed)
        if feed.processingStatus in ("IN_QUEUE", "IN_PROGRESS"):
            return Submitted(feed.feedId, poll_after_seconds=FEED_POLL_SECONDS)
        if feed.processingStatus != "DONE":
            raise PermanentMarketplaceError(feed.processingStatus, f"feed {feed.feedId} was not processed")
        if feed.resultFeedDocumentId:
            document: FeedDocument = self._get(
                f"/feeds/2021-06-30/documents/{quote(feed.resultFeedDocumentId)}", FeedDocument
            )
            report = self._raw("GET", document.url)
            try:
                errors = report_errors(report)
            except ElementTree.ParseError as exc:
                raise TransientMarketplaceError("unexpected-response", f"feed report: {exc}") from None
            if errors:
                code, message = errors[0]
                raise PermanentMarketplaceError(code or "feed-error", message)
        return Accepted(marketplace_reference=feed.feedId)

    def order_state(self, marketplace_order_id: str) -> RemoteState:
        order: GetOrderResponse = self._get(
            f"/orders/v0/orders/{quote(marketplace_order_id)}", GetOrderResponse
        )
        items = self._items(marketplace_order_id)
        canceled = order.payload.OrderStatus == "Canceled"
        return RemoteState(
            marketplace_order_id=marketplace_order_id,
            status=STATUSES.get(order.payload.OrderStatus, order.payload.OrderStatus),
            shipped={i.OrderItemId: i.QuantityShipped for i in items},
            cancelled={i.OrderItemId: i.QuantityOrdered - i.QuantityShipped for i in items if canceled},
            refunded_total=str(self._refunded(marketplace_order_id)),
        )

    def _refunded(self, marketplace_order_id: str) -> Decimal:
        """What Amazon refunded on the order: the Finances API's refund events (Orders v0 does not say)."""
        total = _ZERO
        token: str | None = None
        while True:
            found: ListFinancialEventsResponse = self._get(
                f"/finances/v0/orders/{quote(marketplace_order_id)}/financialEvents",
                ListFinancialEventsResponse,
                {"NextToken": token} if token else None,
            )
            total += refunded_total(found)
            token = found.payload.NextToken
            if not token:
                return total

    def close(self) -> None:
        self._transport.close()

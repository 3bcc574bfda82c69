"""eBay adapter: Sell Fulfillment API v1 for orders, shipments, refunds and payment disputes; Post-Order API
v2 for seller cancellations.

Credentials (`endpoint.credentials`; never logged, never in an error message):
- `access_token`: the OAuth user token, sent as `Authorization: Bearer <token>` (Post-Order: `IAF <token>`);
  the sandbox takes any non-empty value and keeps each token's orders apart;
- `marketplace_id`: sent as `X-EBAY-C-MARKETPLACE-ID` (default `EBAY_US`).

Inbound: `getOrders` with `filter=lastmodifieddate:[from..]`, `limit` and `offset` (the page token carries the
offset; an order changed while paging may move to a later page, and the importer's overlap finds it on the next
round), and per order its payment
disputes (`getPaymentDisputeSummaries`, and `getPaymentDispute` for the outcome of a closed one). Facts:
payment (`PaymentCleared`), a buyer's completed cancellation (`BuyerCancelled`), the outcome of a seller's
cancellation request of a paid order (`DisputeClosedRemotely` with the request's `cancelId`, which `send`
returned as the marketplace reference when the ledger opened that cancellation dispute), and buyers' payment
disputes opened and closed.

Outbound, under eBay's own dedupe where it has one:
- ship: `createShippingFulfillment`; eBay's fulfillment id is the tracking number, so a retry does not create
  a second fulfillment -> `Accepted(fulfillment id)`;
- refund: `issueRefund` per line, with the idempotency key as `comment` (eBay has no idempotency key for
  refunds; the sandbox dedupes on the comment) -> `Submitted(refund id)`; `poll` reads the refund's status in
  `getOrder` (`PENDING` -> Submitted, `REFUNDED` -> Accepted, `FAILED` -> permanent);
- cancel: Post-Order `POST /post-order/v2/cancellation` (one open request per order) -> `Accepted(cancelId)`;
- close_dispute of a claim accepted by the seller: `acceptPaymentDispute`; other closings are made in Seller
  Hub (a permanent error says so);
- acknowledge: eBay has no such call -> `Accepted()`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import msgspec

from ledger.aggregates.values import (
    Address,
    Buyer,
    CancelReason,
    Carrier,
    DisputeOutcome,
    ImportedOrder,
    Marketplace,
    OrderLine,
    PaymentStatus,
    RefundReason,
)
from ledger.integrations import outbox
from ledger.integrations.base import (
    Accepted,
    BuyerCancelled,
    DisputeClosedRemotely,
    DisputeOpenedRemotely,
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
from ledger.integrations.rest import (
    GatedClient,
    RestTransport,
    decode,
    decoder,
    format_time,
    parse_time,
    quote,
)

BASE = "/sell/fulfillment/v1"
DEFAULT_MARKETPLACE_ID = "EBAY_US"
REFUND_POLL_SECONDS = 60.0

# ------------------------------------------------------------------------------------ wire shapes


class Amount(msgspec.Struct, forbid_unknown_fields=False):
    value: str = "0"
    currency: str = ""


class Tax(msgspec.Struct, forbid_unknown_fields=False):
    amount: Amount | None = None


class DeliveryCost(msgspec.Struct, forbid_unknown_fields=False):
    shippingCost: Amount | None = None


class LineItemFulfillmentInstructions(msgspec.Struct, forbid_unknown_fields=False):
    shipByDate: str | None = None


class LineItem(msgspec.Struct, forbid_unknown_fields=False):
    lineItemId: str
    quantity: int
    sku: str = ""
    title: str = ""
    lineItemCost: Amount | None = None
    deliveryCost: DeliveryCost | None = None
    taxes: list[Tax] = msgspec.field(default_factory=list)
    lineItemFulfillmentInstructions: LineItemFulfillmentInstructions | None = None


class ContactAddress(msgspec.Struct, forbid_unknown_fields=False):
    addressLine1: str = ""
    addressLine2: str = ""
    city: str = ""
    stateOrProvince: str = ""
    postalCode: str = ""
    countryCode: str = ""


class Phone(msgspec.Struct, forbid_unknown_fields=False):
    phoneNumber: str = ""


class ShipTo(msgspec.Struct, forbid_unknown_fields=False):
    fullName: str = ""
    email: str = ""
    contactAddress: ContactAddress | None = None
    primaryPhone: Phone | None = None


class ShippingStep(msgspec.Struct, forbid_unknown_fields=False):
    shipTo: ShipTo | None = None


class FulfillmentStartInstruction(msgspec.Struct, forbid_unknown_fields=False):
    shippingStep: ShippingStep | None = None


class Payment(msgspec.Struct, forbid_unknown_fields=False):
    paymentStatus: str = ""
    paymentDate: str | None = None


class OrderRefund(msgspec.Struct, forbid_unknown_fields=False):
    refundId: str = ""
    refundStatus: str = ""
    amount: Amount | None = None


class PaymentSummary(msgspec.Struct, forbid_unknown_fields=False):
    payments: list[Payment] = msgspec.field(default_factory=list)
    refunds: list[OrderRefund] = msgspec.field(default_factory=list)


class PricingSummary(msgspec.Struct, forbid_unknown_fields=False):
    total: Amount | None = None


class CancelRequest(msgspec.Struct, forbid_unknown_fields=False):
    cancelRequestId: str = ""
    cancelInitiator: str = ""
    cancelRequestState: str = ""
    cancelRequestedDate: str | None = None
    cancelCompletedDate: str | None = None


class CancelStatus(msgspec.Struct, forbid_unknown_fields=False):
    cancelState: str = "NONE_REQUESTED"
    cancelRequests: list[CancelRequest] = msgspec.field(default_factory=list)


class BuyerInfo(msgspec.Struct, forbid_unknown_fields=False):
    username: str = ""


class EbayOrder(msgspec.Struct, forbid_unknown_fields=False):
    orderId: str
    creationDate: str
    lastModifiedDate: str
    orderPaymentStatus: str = ""
    orderFulfillmentStatus: str = ""
    legacyOrderId: str | None = None
    buyer: BuyerInfo | None = None
    pricingSummary: PricingSummary | None = None
    paymentSummary: PaymentSummary | None = None
    cancelStatus: CancelStatus | None = None
    fulfillmentStartInstructions: list[FulfillmentStartInstruction] = msgspec.field(default_factory=list)
    lineItems: list[LineItem] = msgspec.field(default_factory=list)


class OrderSearchPagedCollection(msgspec.Struct, forbid_unknown_fields=False):
    orders: list[EbayOrder] = msgspec.field(default_factory=list)
    total: int = 0
    next: str | None = None


class PaymentDisputeSummary(msgspec.Struct, forbid_unknown_fields=False):
    paymentDisputeId: str
    paymentDisputeStatus: str = ""
    reason: str = ""
    openDate: str | None = None
    closedDate: str | None = None


class DisputeSummaryResponse(msgspec.Struct, forbid_unknown_fields=False):
    paymentDisputeSummaries: list[PaymentDisputeSummary] = msgspec.field(default_factory=list)
    total: int = 0


class Resolution(msgspec.Struct, forbid_unknown_fields=False):
    reasonForClosure: str | None = None


class PaymentDispute(msgspec.Struct, forbid_unknown_fields=False):
    paymentDisputeId: str
    paymentDisputeStatus: str = ""
    closedDate: str | None = None
    revision: int | None = None
    resolution: Resolution | None = None


class Refund(msgspec.Struct, forbid_unknown_fields=False):
    refundId: str | None = None
    refundStatus: str = ""


class CancelCreated(msgspec.Struct, forbid_unknown_fields=False):
    cancelId: str


class Fulfillment(msgspec.Struct, forbid_unknown_fields=False):
    lineItems: list[dict[str, Any]] = msgspec.field(default_factory=list)


class Fulfillments(msgspec.Struct, forbid_unknown_fields=False):
    fulfillments: list[Fulfillment] = msgspec.field(default_factory=list)


class EbayError(msgspec.Struct, forbid_unknown_fields=False):
    errorId: int | None = None
    message: str = ""
    longMessage: str = ""


class ErrorList(msgspec.Struct, forbid_unknown_fields=False):
    errors: list[EbayError] = msgspec.field(default_factory=list)


def read_error(body: bytes) -> tuple[str, str] | None:
    """eBay's `{"errors": [{errorId, message, longMessage}]}` as (errorId, message)."""
    try:
        errors = msgspec.json.decode(body, type=ErrorList).errors
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not errors:
        return None
    first = errors[0]
    text = f"{first.message}: {first.longMessage}" if first.longMessage else first.message
    return (str(first.errorId) if first.errorId is not None else "error", text)


# --------------------------------------------------------------------------------- code mappings

CARRIERS: dict[str, str] = {
    Carrier.UPS: "UPS",
    Carrier.USPS: "USPS",
    Carrier.FEDEX: "FedEx",
    Carrier.DHL: "DHL",
    Carrier.ONTRAC: "OnTrac",
    Carrier.AMAZON_LOGISTICS: "Other",
    Carrier.ROYAL_MAIL: "RoyalMail",
    Carrier.CANADA_POST: "CanadaPost",
    Carrier.OTHER: "Other",
}
REFUND_REASONS: dict[str, str] = {
    RefundReason.CUSTOMER_RETURN: "BUYER_RETURN",
    RefundReason.NOT_RECEIVED: "ITEM_NOT_RECEIVED",
    RefundReason.NOT_AS_DESCRIBED: "SELLER_WRONG_ITEM",
    RefundReason.DAMAGED: "OTHER",
    RefundReason.SHIPPING_ADJUSTMENT: "OTHER",
    RefundReason.GOODWILL: "OTHER",
    RefundReason.OTHER: "OTHER",
}
CANCEL_REASONS: dict[str, str] = {
    CancelReason.BUYER_CANCELLED: "BUYER_ASKED_CANCEL",
    CancelReason.OUT_OF_STOCK: "OUT_OF_STOCK_OR_CANNOT_FULFILL",
    CancelReason.ADDRESS_UNDELIVERABLE: "ADDRESS_ISSUES",
    CancelReason.PRICING_ERROR: "OUT_OF_STOCK_OR_CANNOT_FULFILL",
    CancelReason.FRAUD_SUSPECTED: "OUT_OF_STOCK_OR_CANNOT_FULFILL",
    CancelReason.BUYER_UNPAID: "BUYER_ASKED_CANCEL",
    CancelReason.OTHER: "OUT_OF_STOCK_OR_CANNOT_FULFILL",
}
# A payment dispute's outcome (eBay OutcomeEnum) as the ledger's: `accepted` means the buyer's claim stood.
OUTCOMES: dict[str, DisputeOutcome] = {
    "SELLER_LOST": DisputeOutcome.ACCEPTED,
    "SELLER_ACCEPT": DisputeOutcome.ACCEPTED,
    "SELLER_WON": DisputeOutcome.REJECTED,
}


# orderFulfillmentStatus as the ledger's order status (`ledger sync check` compares these).
STATUSES = {"NOT_STARTED": "unshipped", "IN_PROGRESS": "partially_shipped", "FULFILLED": "shipped"}


def carrier_code(carrier: str) -> str:
    return CARRIERS.get(carrier, "Other")


def refund_reason(reason: str | None) -> str:
    return REFUND_REASONS.get(reason or RefundReason.OTHER, "OTHER")


def cancel_reason(reason: str | None) -> str:
    return CANCEL_REASONS.get(reason or CancelReason.OTHER, "OUT_OF_STOCK_OR_CANNOT_FULFILL")


def dispute_outcome(reason_for_closure: str | None) -> DisputeOutcome:
    return OUTCOMES.get(reason_for_closure or "", DisputeOutcome.WITHDRAWN)


# ------------------------------------------------------------------------------- inbound mapping

_ZERO = Decimal(0)
_PAID = ("PAID", "PARTIALLY_REFUNDED", "FULLY_REFUNDED")


def _amount(amount: Amount | None) -> Decimal:
    return Decimal(amount.value) if amount is not None and amount.value else _ZERO


def to_remote_order(
    order: EbayOrder,
    disputes: Sequence[PaymentDisputeSummary] = (),
    outcomes: Mapping[str, PaymentDispute] | None = None,
) -> RemoteOrder:
    """An eBay order (and its payment disputes) as the ledger imports it, with the facts eBay reports."""
    purchased_at = parse_time(order.creationDate)
    updated_at = parse_time(order.lastModifiedDate)
    paid = order.orderPaymentStatus in _PAID
    payments = order.paymentSummary.payments if order.paymentSummary else []
    paid_at = (
        next((parse_time(p.paymentDate) for p in payments if p.paymentDate), purchased_at) if paid else None
    )
    currency = (
        order.pricingSummary.total.currency if order.pricingSummary and order.pricingSummary.total else ""
    ) or (next((i.lineItemCost.currency for i in order.lineItems if i.lineItemCost), "USD"))
    lines = tuple(
        OrderLine(
            line_id=item.lineItemId,
            sku=item.sku,
            quantity=item.quantity,
            unit_price=_amount(item.lineItemCost) / item.quantity
            if item.quantity
            else _amount(item.lineItemCost),
            tax=sum((_amount(t.amount) for t in item.taxes), _ZERO),
            shipping=_amount(item.deliveryCost.shippingCost if item.deliveryCost else None),
            title=item.title,
        )
        for item in order.lineItems
    )
    ship_to = next(
        (
            i.shippingStep.shipTo
            for i in order.fulfillmentStartInstructions
            if i.shippingStep and i.shippingStep.shipTo
        ),
        None,
    )
    address = None
    if ship_to is not None:
        contact = ship_to.contactAddress or ContactAddress()
        address = Address(
            name=ship_to.fullName,
            line1=contact.addressLine1,
            line2=contact.addressLine2,
            city=contact.city,
            state=contact.stateOrProvince,
            postal_code=contact.postalCode,
            country=contact.countryCode,
            phone=ship_to.primaryPhone.phoneNumber if ship_to.primaryPhone else "",
        )
    buyer_name = (
        ship_to.fullName if ship_to and ship_to.fullName else (order.buyer.username if order.buyer else "")
    )
    # eBay sets a ship-by date per line; the order must ship by the earliest of them.
    ship_by_dates = [
        parse_time(i.lineItemFulfillmentInstructions.shipByDate)
        for i in order.lineItems
        if i.lineItemFulfillmentInstructions and i.lineItemFulfillmentInstructions.shipByDate
    ]
    imported = ImportedOrder(
        marketplace_order_id=order.orderId,
        purchased_at=purchased_at,
        currency=currency,
        payment_status=PaymentStatus.PAID if paid else PaymentStatus.PENDING,
        buyer=Buyer(name=buyer_name, email=ship_to.email if ship_to else ""),
        lines=lines,
        ship_to=address,
        paid_at=paid_at,
        ship_by=min(ship_by_dates, default=None),
    )
    facts: list[MarketplaceFact] = []
    if paid_at is not None:
        facts.append(PaymentCleared(paid_at=paid_at))
    for request in order.cancelStatus.cancelRequests if order.cancelStatus else []:
        done_at = parse_time(request.cancelCompletedDate) if request.cancelCompletedDate else updated_at
        if request.cancelInitiator == "BUYER" and request.cancelRequestState == "COMPLETED":
            requested = parse_time(request.cancelRequestedDate) if request.cancelRequestedDate else done_at
            facts.append(BuyerCancelled(requested_at=requested))
        elif (
            request.cancelInitiator == "SELLER"
            and paid
            and request.cancelRequestState in ("COMPLETED", "REJECTED")
        ):
            outcome = (
                DisputeOutcome.ACCEPTED
                if request.cancelRequestState == "COMPLETED"
                else DisputeOutcome.REJECTED
            )
            facts.append(DisputeClosedRemotely(request.cancelRequestId, outcome, done_at))
    for dispute in disputes:
        opened_at = parse_time(dispute.openDate) if dispute.openDate else updated_at
        facts.append(DisputeOpenedRemotely(dispute.paymentDisputeId, dispute.reason or "OTHER", opened_at))
        if dispute.paymentDisputeStatus == "CLOSED":
            detail = (outcomes or {}).get(dispute.paymentDisputeId)
            closure = detail.resolution.reasonForClosure if detail and detail.resolution else None
            closed_at = parse_time(dispute.closedDate) if dispute.closedDate else updated_at
            facts.append(DisputeClosedRemotely(dispute.paymentDisputeId, dispute_outcome(closure), closed_at))
    return RemoteOrder(order=imported, updated_at=updated_at, facts=tuple(facts))


# ------------------------------------------------------------------------------ outbound mapping


def fulfillment_body(ship: outbox.Ship) -> dict[str, Any]:
    """The `createShippingFulfillment` request of a ship item."""
    return {
        "lineItems": [{"lineItemId": line.line_id, "quantity": line.quantity} for line in ship.lines],
        "shippedDate": format_time(ship.shipped_at),
        "shippingCarrierCode": carrier_code(ship.carrier or Carrier.OTHER),
        "trackingNumber": ship.tracking_number,
    }


def refund_body(refund: outbox.Refund, key: str) -> dict[str, Any]:
    """The `issueRefund` request of a refund item: every line's total, the idempotency key as comment."""
    return {
        "reasonForRefund": refund_reason(refund.reason),
        "comment": key[:100],
        "refundItems": [
            {
                "lineItemId": line.line_id,
                "refundAmount": {"value": f"{line.total:.2f}", "currency": refund.currency},
            }
            for line in refund.lines
            if line.total > 0
        ],
    }


def cancellation_body(cancel: outbox.Cancel) -> dict[str, Any]:
    """The Post-Order cancellation request (eBay cancels whole orders)."""
    return {
        "legacyOrderId": cancel.marketplace_order_id,
        "cancelReason": cancel_reason(cancel.reason),
    }


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _read_page_token(token: str) -> int:
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
    except (ValueError, KeyError, TypeError):
        raise PermanentMarketplaceError("bad-page-token", "not a page token this adapter made") from None


# ----------------------------------------------------------------------------------------- client


class EbayClient(GatedClient):
    """One eBay seller account (thread-safe as httpx.Client is)."""

    marketplace = Marketplace.EBAY

    def __init__(self, endpoint: Endpoint, http: httpx.Client | None = None, *, page_size: int = 100) -> None:
        credentials = endpoint.credentials
        if not credentials.get("access_token"):
            raise PermanentMarketplaceError(
                "credentials", "the eBay account needs an access_token credential"
            )
        self._token = credentials["access_token"]
        self._marketplace_id = credentials.get("marketplace_id") or DEFAULT_MARKETPLACE_ID
        self._transport = RestTransport(endpoint, http, read_error)
        self._page_size = page_size

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        iaf: bool = False,
    ) -> bytes:
        headers = {
            "Authorization": f"{'IAF' if iaf else 'Bearer'} {self._token}",
            "X-EBAY-C-MARKETPLACE-ID": self._marketplace_id,
        }
        return self._transport.call(
            method, path, headers, params=params, body=None if body is None else msgspec.json.encode(body)
        )

    def _get(self, path: str, kind: type[Any], params: Mapping[str, Any] | None = None) -> Any:
        return decode(self._call("GET", path, params=params), decoder(kind), f"GET {path}")

    # ---------------------------------------------------------------------------------- inbound

    def list_orders(self, updated_after: datetime, page: str | None = None) -> OrderPage:
        offset = 0 if page is None else _read_page_token(page)
        params = {
            "filter": f"lastmodifieddate:[{format_time(updated_after)}..]",
            "limit": str(self._page_size),
            "offset": str(offset),
        }
        found: OrderSearchPagedCollection = self._transport.gated(
            "getOrders", lambda: self._get(f"{BASE}/order", OrderSearchPagedCollection, params)
        )
        orders = tuple(self._remote(order) for order in found.orders)
        return OrderPage(
            orders=orders, next_page=_page_token(offset + self._page_size) if found.next else None
        )

    def _dispute(self, dispute_id: str) -> PaymentDispute:
        path = f"{BASE}/payment_dispute/{quote(dispute_id)}"
        found: PaymentDispute = self._transport.gated(
            "getPaymentDispute", lambda: self._get(path, PaymentDispute)
        )
        return found

    def _remote(self, order: EbayOrder) -> RemoteOrder:
        disputes: DisputeSummaryResponse = self._transport.gated(
            "getPaymentDisputeSummaries",
            lambda: self._get(
                f"{BASE}/payment_dispute_summary", DisputeSummaryResponse, {"order_id": order.orderId}
            ),
        )
        outcomes = {
            d.paymentDisputeId: self._dispute(d.paymentDisputeId)
            for d in disputes.paymentDisputeSummaries
            if d.paymentDisputeStatus == "CLOSED"
        }
        return to_remote_order(order, disputes.paymentDisputeSummaries, outcomes)

    def acknowledge(self, marketplace_order_id: str) -> None:
        """eBay has no acknowledgement of orders."""

    # --------------------------------------------------------------------------------- outbound

    def send(self, request: SyncRequest) -> Outcome:
        order_path = f"{BASE}/order/{quote(request.marketplace_order_id)}"
        match request.message:
            case outbox.Ship() as ship:
                body = fulfillment_body(ship)
                self._call("POST", f"{order_path}/shipping_fulfillment", body=body)
                return Accepted(marketplace_reference=body["trackingNumber"])
            case outbox.Refund() as refund_message:
                body = refund_body(refund_message, request.idempotency_key)
                if not body["refundItems"]:
                    raise PermanentMarketplaceError("nothing-to-refund", "the refund's lines total zero")
                refund: Refund = decode(
                    self._call("POST", f"{order_path}/issue_refund", body=body),
                    decoder(Refund),
                    "issueRefund",
                )
                if refund.refundStatus == "FAILED" or not refund.refundId:
                    raise PermanentMarketplaceError(
                        "refund-failed", f"eBay answered refundStatus {refund.refundStatus}"
                    )
                return Submitted(refund.refundId, poll_after_seconds=REFUND_POLL_SECONDS)
            case outbox.Cancel() as cancel:
                created: CancelCreated = decode(
                    self._call(
                        "POST", "/post-order/v2/cancellation", body=cancellation_body(cancel), iaf=True
                    ),
                    decoder(CancelCreated),
                    "createCancellation",
                )
                return Accepted(marketplace_reference=created.cancelId)
            case outbox.CloseDispute() as close:
                return self._close_dispute(close)
            case outbox.Acknowledge():
                return Accepted()

    def _close_dispute(self, close: outbox.CloseDispute) -> Outcome:
        dispute_id = close.marketplace_dispute_id
        if close.kind != "claim" or close.outcome != DisputeOutcome.ACCEPTED or not dispute_id:
            raise PermanentMarketplaceError(
                "unsupported",
                "eBay takes only the acceptance of a buyer's payment dispute; do the rest in Seller Hub",
            )
        dispute: PaymentDispute = self._get(f"{BASE}/payment_dispute/{quote(dispute_id)}", PaymentDispute)
        if dispute.paymentDisputeStatus != "CLOSED":
            body = {} if dispute.revision is None else {"revision": dispute.revision}
            self._call("POST", f"{BASE}/payment_dispute/{quote(dispute_id)}/accept", body=body)
        return Accepted(marketplace_reference=dispute_id)

    def poll(self, request: SyncRequest, marketplace_reference: str) -> Outcome:
        if request.action != "refund":
            return Accepted(marketplace_reference=marketplace_reference)
        order: EbayOrder = self._get(f"{BASE}/order/{quote(request.marketplace_order_id)}", EbayOrder)
        refunds = order.paymentSummary.refunds if order.paymentSummary else []
        refund = next((r for r in refunds if r.refundId == marketplace_reference), None)
        if refund is None:
            raise TransientMarketplaceError(
                "refund-not-listed", f"refund {marketplace_reference} is not on the order yet"
            )
        if refund.refundStatus == "REFUNDED":
            return Accepted(marketplace_reference=marketplace_reference)
        if refund.refundStatus == "FAILED":
            raise PermanentMarketplaceError("refund-failed", f"refund {marketplace_reference} failed")
        return Submitted(marketplace_reference, poll_after_seconds=REFUND_POLL_SECONDS)

    def order_state(self, marketplace_order_id: str) -> RemoteState:
        path = f"{BASE}/order/{quote(marketplace_order_id)}"
        order: EbayOrder = self._get(path, EbayOrder)
        fulfillments: Fulfillments = self._get(f"{path}/shipping_fulfillment", Fulfillments)
        shipped: dict[str, int] = {item.lineItemId: 0 for item in order.lineItems}
        for fulfillment in fulfillments.fulfillments:
            for line in fulfillment.lineItems:
                line_id = str(line.get("lineItemId"))
                shipped[line_id] = shipped.get(line_id, 0) + int(line.get("quantity") or 0)
        canceled = order.cancelStatus is not None and order.cancelStatus.cancelState == "CANCELED"
        refunds = order.paymentSummary.refunds if order.paymentSummary else []
        return RemoteState(
            marketplace_order_id=marketplace_order_id,
            status="canceled"
            if canceled
            else STATUSES.get(order.orderFulfillmentStatus, order.orderFulfillmentStatus),
            shipped=shipped,
            cancelled={
                i.lineItemId: i.quantity - shipped.get(i.lineItemId, 0) for i in order.lineItems if canceled
            },
            refunded_total=str(
                sum((_amount(r.amount) for r in refunds if r.refundStatus == "REFUNDED"), _ZERO)
            ),
        )

    def close(self) -> None:
        self._transport.close()

"""Jet: wire shapes, pure mappings both ways, and the client. The smallest of the marketplaces.

Modelled on Jet's merchant API (`/api/orders/...`, `/api/refunds/...`, snake_case, `merchant_order_id`,
`order_items` with `item_price`, `alt_shipment_id` / `alt_refund_id` for the merchant's own ids), trimmed to
what the ledger needs, as the sandbox serves it:

- `GET  /api/orders?updated_since=<RFC 3339>&page_size=<n>[&page_token=<t>]` -> `{orders, next_page_token}`.
- `GET  /api/orders/withoutShipmentDetail/{merchant_order_id}` -> the order.
- `PUT  /api/orders/{merchant_order_id}/shipped` `{shipments: [{alt_shipment_id, shipment_tracking_number,
  response_shipment_date, carrier, shipment_items: [{order_item_id, merchant_sku,
  response_shipment_sku_quantity}]}]}`.
- `PUT  /api/orders/{merchant_order_id}/cancel` `{alt_cancel_id, cancel_reason}`: Jet cancels only a whole
  order, never some of its units (the ledger's Jet policy forbids partial cancellations before this).
- `POST /api/refunds/{merchant_order_id}/{alt_refund_id}` `{items: [{order_item_id, order_return_refund_qty,
  refund_reason, refund_amount: {principal, tax, shipping_cost, shipping_tax}}]}` -> `{refund_authorization_id}`.

Dedupe keys are Jet's own merchant ids: `alt_shipment_id`, `alt_cancel_id` and `alt_refund_id` carry the
item's idempotency key, so a repeated request has one effect. `Authorization: Bearer <token>`. Amounts are
JSON numbers in US dollars. Jet needs no acknowledgement here and has no dispute API: both are accepted with
nothing sent.

A customer's cancellation request (`cancel_request`) is a `BuyerCancelled` fact (see `rest`); Jet's own
cancellation of the order (every item's `cancelled_quantity`) is a `CancelledRemotely` fact.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import httpx
import msgspec

from ledger.aggregates.values import (
    Address,
    Buyer,
    CancelReason,
    Carrier,
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
    CancelledRemotely,
    Endpoint,
    OrderPage,
    Outcome,
    PermanentMarketplaceError,
    RemoteOrder,
    RemoteState,
    SyncRequest,
)
from ledger.integrations.rest import (
    GatedClient,
    RestTransport,
    cancel_code,
    cancelled_remotely,
    decode,
    encode,
    facts_of,
    format_time,
    order_status,
    order_time,
    quote,
    refund_code,
)

PAGE_SIZE = 100
CURRENCY = "USD"
OPEN_STATUSES = ("created", "ready", "acknowledged", "inprogress")

# ----------------------------------------------------------------------------------- wire shapes


class ItemPrice(msgspec.Struct):
    base_price: Decimal  # per unit
    item_tax: Decimal = Decimal(0)  # for the line
    item_shipping_cost: Decimal = Decimal(0)  # for the line
    item_shipping_tax: Decimal = Decimal(0)  # for the line


class JetItem(msgspec.Struct):
    order_item_id: str
    merchant_sku: str
    request_order_quantity: int
    item_price: ItemPrice
    product_title: str = ""
    request_order_cancel_qty: int = 0  # units the customer asked to cancel
    shipped_quantity: int = 0
    cancelled_quantity: int = 0


class Recipient(msgspec.Struct):
    name: str = ""
    phone_number: str = ""


class JetAddress(msgspec.Struct):
    address1: str = ""
    address2: str = ""
    city: str = ""
    state: str = ""
    zip_code: str = ""


class ShippingTo(msgspec.Struct):
    recipient: Recipient = msgspec.field(default_factory=Recipient)
    address: JetAddress = msgspec.field(default_factory=JetAddress)


class JetRefund(msgspec.Struct):
    alt_refund_id: str
    refund_authorization_id: str
    refund_total: Decimal


class JetOrder(msgspec.Struct):
    merchant_order_id: str
    order_placed_date: str
    status: str
    order_items: list[JetItem]
    order_last_update: str | None = None
    reference_order_id: str = ""
    hash_email: str = ""
    buyer: Recipient = msgspec.field(default_factory=Recipient)
    shipping_to: ShippingTo | None = None
    refunds: list[JetRefund] = []


class OrdersResponse(msgspec.Struct):
    orders: list[JetOrder]
    next_page_token: str | None = None


class RefundResponse(msgspec.Struct):
    refund_authorization_id: str
    refund_status: str = "accepted"


class ErrorResponse(msgspec.Struct):
    errors: list[str] = []
    error_code: str | None = None


# Requests.


class ShipmentItem(msgspec.Struct):
    order_item_id: str
    merchant_sku: str
    response_shipment_sku_quantity: int


class Shipment(msgspec.Struct):
    alt_shipment_id: str
    shipment_tracking_number: str
    response_shipment_date: str
    carrier: str
    shipment_items: list[ShipmentItem]


class ShipmentRequest(msgspec.Struct):
    shipments: list[Shipment]


class CancellationRequest(msgspec.Struct):
    alt_cancel_id: str
    cancel_reason: str


class RefundAmount(msgspec.Struct):
    principal: Decimal
    tax: Decimal
    shipping_cost: Decimal
    shipping_tax: Decimal


class RefundItem(msgspec.Struct):
    order_item_id: str
    order_return_refund_qty: int
    refund_reason: str
    refund_amount: RefundAmount


class RefundRequest(msgspec.Struct):
    items: list[RefundItem]


_orders_decoder = msgspec.json.Decoder(OrdersResponse)
_order_decoder = msgspec.json.Decoder(JetOrder)
_refund_decoder = msgspec.json.Decoder(RefundResponse)
_error_decoder = msgspec.json.Decoder(ErrorResponse)

# ------------------------------------------------------------------------------------- the maps

CARRIERS: dict[str, str] = {
    Carrier.UPS: "UPS",
    Carrier.USPS: "USPS",
    Carrier.FEDEX: "FedEx",
    Carrier.DHL: "DHL",
    Carrier.ONTRAC: "OnTrac",
}
OTHER_CARRIER = "Other"  # Jet takes only carriers on its list

CANCEL_REASONS: dict[str, str] = {
    CancelReason.BUYER_CANCELLED: "Customer Requested",
    CancelReason.OUT_OF_STOCK: "Out of Stock",
    CancelReason.ADDRESS_UNDELIVERABLE: "Undeliverable Address",
    CancelReason.PRICING_ERROR: "Pricing Error",
    CancelReason.FRAUD_SUSPECTED: "Fraud",
    CancelReason.BUYER_UNPAID: "Payment Not Received",
    CancelReason.OTHER: "Other",
}

REFUND_REASONS: dict[str, str] = {
    RefundReason.CUSTOMER_RETURN: "No longer want this item",
    RefundReason.NOT_RECEIVED: "Item never arrived",
    RefundReason.NOT_AS_DESCRIBED: "Website description is inaccurate",
    RefundReason.DAMAGED: "Item arrived damaged",
    RefundReason.SHIPPING_ADJUSTMENT: "Shipping cost adjustment",
    RefundReason.GOODWILL: "Goodwill gesture",
    RefundReason.OTHER: "Other",
}


def carrier_name(carrier: str) -> str:
    return CARRIERS.get(carrier, OTHER_CARRIER)


def cancel_reason(reason: str | None, requested_by: str) -> str:
    return cancel_code(CANCEL_REASONS, reason, requested_by)


def refund_reason(reason: str | None) -> str:
    return refund_code(REFUND_REASONS, reason)


# ------------------------------------------------------------------------------------- inbound


def imported_order(order: JetOrder) -> ImportedOrder:
    """Jet's order as the ledger imports it: Jet charges at purchase, so it arrives paid."""
    where = f"order {order.merchant_order_id}"
    if not order.order_items:
        raise PermanentMarketplaceError("unmappable-order", f"{where} has no items")
    purchased_at = order_time(order.order_placed_date, where)
    lines = []
    for item in order.order_items:
        if item.request_order_quantity < 1:
            raise PermanentMarketplaceError(
                "unmappable-order", f"{where} item {item.order_item_id}: quantity"
            )
        price = item.item_price
        lines.append(
            OrderLine(
                line_id=item.order_item_id,
                sku=item.merchant_sku,
                quantity=item.request_order_quantity,
                unit_price=price.base_price,
                tax=price.item_tax + price.item_shipping_tax,
                shipping=price.item_shipping_cost,
                title=item.product_title,
            )
        )
    ship_to = None
    if order.shipping_to is not None:
        recipient, address = order.shipping_to.recipient, order.shipping_to.address
        ship_to = Address(
            name=recipient.name,
            line1=address.address1,
            line2=address.address2,
            city=address.city,
            state=address.state,
            postal_code=address.zip_code,
            country="US",
            phone=recipient.phone_number,
        )
    return ImportedOrder(
        marketplace_order_id=order.merchant_order_id,
        purchased_at=purchased_at,
        currency=CURRENCY,
        payment_status=PaymentStatus.PAID,
        buyer=Buyer(name=order.buyer.name, email=order.hash_email),
        lines=tuple(lines),
        ship_to=ship_to,
        paid_at=purchased_at,
    )


def updated_at(order: JetOrder) -> datetime:
    return order_time(order.order_last_update or order.order_placed_date, order.merchant_order_id)


def cancel_request(order: JetOrder) -> BuyerCancelled | None:
    """A customer's cancellation request (any item's `request_order_cancel_qty`): Jet cancels whole orders."""
    if order.status not in OPEN_STATUSES or not any(i.request_order_cancel_qty for i in order.order_items):
        return None
    return BuyerCancelled(applied=False, requested_at=updated_at(order), lines=None)


def cancelled_by_jet(order: JetOrder) -> CancelledRemotely | None:
    """The order cancelled on Jet: every item's `cancelled_quantity` is all of it (Jet cancels whole orders, and
    its `complete` status alone does not tell a cancelled order from a shipped one)."""
    units = ((i.request_order_quantity, i.shipped_quantity, i.cancelled_quantity) for i in order.order_items)
    return cancelled_remotely(units, updated_at(order))


def remote_order(order: JetOrder) -> RemoteOrder:
    return RemoteOrder(
        order=imported_order(order),
        updated_at=updated_at(order),
        facts=facts_of(cancel_request(order), cancelled_by_jet(order)),
    )


def remote_state(order: JetOrder) -> RemoteState:
    return RemoteState(
        marketplace_order_id=order.merchant_order_id,
        status=order_status(
            (i.request_order_quantity, i.shipped_quantity, i.cancelled_quantity) for i in order.order_items
        ),
        shipped={i.order_item_id: i.shipped_quantity for i in order.order_items},
        cancelled={i.order_item_id: i.cancelled_quantity for i in order.order_items},
        refunded_total=str(sum((r.refund_total for r in order.refunds), Decimal(0))),
    )


# ------------------------------------------------------------------------------------ outbound


def shipment_request(key: str, ship: outbox.Ship) -> ShipmentRequest:
    return ShipmentRequest(
        [
            Shipment(
                alt_shipment_id=key,
                shipment_tracking_number=ship.tracking_number,
                response_shipment_date=format_time(ship.shipped_at),
                carrier=carrier_name(ship.carrier),
                shipment_items=[ShipmentItem(line.line_id, line.sku, line.quantity) for line in ship.lines],
            )
        ]
    )


def cancellation_request(key: str, cancel: outbox.Cancel) -> CancellationRequest:
    """Jet's whole-order cancellation: the message's lines are not sent (Jet takes no units)."""
    return CancellationRequest(
        alt_cancel_id=key, cancel_reason=cancel_reason(cancel.reason, cancel.requested_by)
    )


def refund_request(refund: outbox.Refund) -> RefundRequest:
    """Jet's refund: the line's tax goes as `tax`; the ledger keeps no separate tax on shipping."""
    reason = refund_reason(refund.reason)
    return RefundRequest(
        [
            RefundItem(
                order_item_id=line.line_id,
                order_return_refund_qty=line.quantity,
                refund_reason=reason,
                refund_amount=RefundAmount(
                    principal=line.item_amount,
                    tax=line.tax_amount,
                    shipping_cost=line.shipping_amount,
                    shipping_tax=Decimal(0),
                ),
            )
            for line in refund.lines
        ]
    )


def read_error(body: bytes) -> tuple[str, str] | None:
    """Jet's `{errors: [...], error_code?}` as (code, message)."""
    try:
        error = _error_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not error.errors and error.error_code is None:
        return None
    return error.error_code or "error", "; ".join(error.errors) or (error.error_code or "")


# -------------------------------------------------------------------------------------- client


class JetClient(GatedClient):
    """One Jet merchant over HTTP. `credentials`: `token` (sent as a Bearer token)."""

    marketplace = Marketplace.JET

    def __init__(
        self, endpoint: Endpoint, http: httpx.Client | None = None, *, page_size: int = PAGE_SIZE
    ) -> None:
        self._page_size = page_size
        self._auth = {"Authorization": f"Bearer {endpoint.credentials.get('token', '')}"}
        self._transport = RestTransport(endpoint, http, read_error)

    def list_orders(self, updated_after: datetime, page: str | None = None) -> OrderPage:
        params = {"updated_since": format_time(updated_after), "page_size": str(self._page_size)}
        if page is not None:
            params["page_token"] = page
        body = self._transport.gated(
            "listOrders", lambda: self._transport.call("GET", "/api/orders", self._auth, params=params)
        )
        response = decode(body, _orders_decoder, "GET /api/orders")
        return OrderPage(
            orders=tuple(remote_order(order) for order in response.orders),
            next_page=response.next_page_token or None,
        )

    def acknowledge(self, marketplace_order_id: str) -> None:
        """Jet's orders need no acknowledgement here."""

    def send(self, request: SyncRequest) -> Outcome:
        key = request.idempotency_key
        order = quote(request.marketplace_order_id)
        match request.message:
            case outbox.Ship() as ship:
                body = encode(shipment_request(key, ship))
                self._transport.call("PUT", f"/api/orders/{order}/shipped", self._auth, body=body)
                return Accepted(marketplace_reference=ship.tracking_number)
            case outbox.Cancel() as cancel:
                body = encode(cancellation_request(key, cancel))
                self._transport.call("PUT", f"/api/orders/{order}/cancel", self._auth, body=body)
                return Accepted()
            case outbox.Refund() as refund_message:
                path = f"/api/refunds/{order}/{quote(key)}"
                body = encode(refund_request(refund_message))
                refund = decode(
                    self._transport.call("POST", path, self._auth, body=body), _refund_decoder, path
                )
                if refund.refund_status == "rejected":
                    raise PermanentMarketplaceError("refund-rejected", f"Jet rejected refund {key}")
                return Accepted(marketplace_reference=refund.refund_authorization_id)
            case outbox.CloseDispute() | outbox.Acknowledge():
                return Accepted()  # nothing Jet takes

    def poll(self, request: SyncRequest, marketplace_reference: str) -> Outcome:
        """Jet answers synchronously here: nothing is ever Submitted."""
        return Accepted(marketplace_reference=marketplace_reference)

    def order_state(self, marketplace_order_id: str) -> RemoteState:
        path = f"/api/orders/withoutShipmentDetail/{quote(marketplace_order_id)}"
        return remote_state(decode(self._transport.call("GET", path, self._auth), _order_decoder, path))

    def close(self) -> None:
        self._transport.close()

"""Rakuten: wire shapes, pure mappings both ways, and the client.

Rakuten's order API (RMS) is a set of JSON-over-POST calls that no public spec describes well; this adapter
speaks a small REST shape of our own modelled on it, which the sandbox serves:

- `GET  /es/2.0/orders?updatedFrom=<RFC 3339>&limit=<n>[&cursor=<token>]` -> `{orders, nextCursor}`, oldest
  change first; `nextCursor` is an opaque keyset token (stable while orders change during paging).
- `GET  /es/2.0/orders/{orderNumber}` -> `{order}`.
- `POST /es/2.0/orders/{orderNumber}/shipments`     `{requestId, deliveryCompany, deliveryCompanyName?,
  shippingNumber, shippingDatetime, items: [{itemDetailId, units}]}` -> `{shippingDetailId}`.
- `POST /es/2.0/orders/{orderNumber}/cancellations` `{requestId, cancelReason, inventoryRestoreType,
  items: [...]}` -> `{cancellationId}`. `inventoryRestoreType` 1 puts the units back into Rakuten's stock,
  0 does not: the seller's restock choice, which the outbound queue carries as `restock`.
- `POST /es/2.0/orders/{orderNumber}/refunds`       `{requestId, refundReason, currency, items: [{itemDetailId,
  units, itemAmount, taxAmount, shippingAmount}]}` -> `{refundId}`.

As in RMS: names like `orderNumber`, `orderProgress`, `itemDetailId`, `manageNumber` (the seller's SKU),
`deliveryCompany` codes, the `Authorization: ESA base64(serviceSecret:licenseKey)` header, and messages in
`MessageModelList`. `requestId` is Rakuten's dedupe key here (our idempotency key): a repeat has one effect.
Amounts are JSON numbers in the order's currency (yen have no minor unit). Rakuten has no dispute API for
sellers, so `close_dispute` is accepted with nothing sent.

A customer's cancellation request (`cancel_request`) is a `BuyerCancelled` fact (see `rest`); Rakuten's own
cancellation of the order (`orderProgress` 900) is a `CancelledRemotely` fact.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
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
    LineQuantity,
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

PAGE_LIMIT = 100
BASE = "/es/2.0/orders"

# orderProgress, as RMS numbers it.
PROGRESS_AWAITING_CONFIRMATION = 100
PROGRESS_AWAITING_SHIPMENT = 300
PROGRESS_SHIPPED = 500
PROGRESS_CANCELLED = 900

# ----------------------------------------------------------------------------------- wire shapes


class Orderer(msgspec.Struct, rename="camel"):
    family_name: str = ""
    first_name: str = ""
    email_address: str = ""
    phone_number: str = ""


class ShipTo(msgspec.Struct, rename="camel"):
    family_name: str = ""
    first_name: str = ""
    zip_code: str = ""
    prefecture: str = ""
    city: str = ""
    sub_address: str = ""
    country: str = ""
    phone_number: str = ""


class RakutenItem(msgspec.Struct, rename="camel"):
    item_detail_id: str
    manage_number: str  # the seller's SKU
    units: int
    price: Decimal  # per unit
    item_name: str = ""
    tax_price: Decimal = Decimal(0)  # for the line
    shipping_price: Decimal = Decimal(0)  # for the line
    shipped_units: int = 0
    cancelled_units: int = 0


class ItemUnits(msgspec.Struct, rename="camel"):
    item_detail_id: str
    units: int


class CancelRequest(msgspec.Struct, rename="camel"):
    """The buyer asked to cancel (the seller answers by cancelling, or shipping anyway)."""

    request_datetime: str
    items: list[ItemUnits] | None = None  # None: the whole order


class RakutenRefund(msgspec.Struct, rename="camel"):
    refund_id: str
    amount: Decimal


class RakutenOrder(msgspec.Struct, rename="camel"):
    order_number: str
    order_progress: int
    order_datetime: str
    update_datetime: str
    currency: str
    items: list[RakutenItem]
    payment_datetime: str | None = None
    orderer: Orderer | None = None
    ship_to: ShipTo | None = None
    cancel_request: CancelRequest | None = None
    refunds: list[RakutenRefund] = []


class OrdersResponse(msgspec.Struct, rename="camel"):
    orders: list[RakutenOrder]
    next_cursor: str | None = None


class OrderResponse(msgspec.Struct):
    order: RakutenOrder


class Message(msgspec.Struct, rename="camel"):
    message_type: str
    message_code: str
    message: str = ""


class ActionResponse(msgspec.Struct, rename={"messages": "MessageModelList"}):
    messages: list[Message] = []
    shipping_detail_id: str | None = msgspec.field(default=None, name="shippingDetailId")
    cancellation_id: str | None = msgspec.field(default=None, name="cancellationId")
    refund_id: str | None = msgspec.field(default=None, name="refundId")


class ErrorResponse(msgspec.Struct, rename={"messages": "MessageModelList"}):
    messages: list[Message] = []


# Requests.


class ShipmentRequest(msgspec.Struct, rename="camel", omit_defaults=True):
    request_id: str
    delivery_company: str
    shipping_number: str
    shipping_datetime: str
    items: list[ItemUnits]
    delivery_company_name: str | None = None


class CancellationRequest(msgspec.Struct, rename="camel"):
    request_id: str
    cancel_reason: str
    inventory_restore_type: int
    items: list[ItemUnits]


class RefundItem(msgspec.Struct, rename="camel"):
    item_detail_id: str
    units: int
    item_amount: Decimal
    tax_amount: Decimal
    shipping_amount: Decimal


class RefundRequest(msgspec.Struct, rename="camel"):
    request_id: str
    refund_reason: str
    currency: str
    items: list[RefundItem]


_orders_decoder = msgspec.json.Decoder(OrdersResponse)
_order_decoder = msgspec.json.Decoder(OrderResponse)
_action_decoder = msgspec.json.Decoder(ActionResponse)
_error_decoder = msgspec.json.Decoder(ErrorResponse)

# ------------------------------------------------------------------------------------- the maps

# RMS `deliveryCompany` codes; a carrier without one goes as 1000 (other) with its name.
OTHER_DELIVERY_COMPANY = "1000"
DELIVERY_COMPANIES: dict[str, str] = {
    Carrier.DHL: "1018",
    Carrier.FEDEX: "1019",
    Carrier.UPS: "1020",
    Carrier.USPS: "1024",
}
DELIVERY_COMPANY_NAMES: dict[str, str] = {
    Carrier.ONTRAC: "OnTrac",
    Carrier.AMAZON_LOGISTICS: "Amazon Logistics",
    Carrier.ROYAL_MAIL: "Royal Mail",
    Carrier.CANADA_POST: "Canada Post",
    Carrier.OTHER: "Other",
}

CANCEL_REASONS: dict[str, str] = {
    CancelReason.BUYER_CANCELLED: "BUYER_REQUEST",
    CancelReason.OUT_OF_STOCK: "OUT_OF_STOCK",
    CancelReason.ADDRESS_UNDELIVERABLE: "UNDELIVERABLE_ADDRESS",
    CancelReason.PRICING_ERROR: "PRICE_ERROR",
    CancelReason.FRAUD_SUSPECTED: "SUSPECTED_FRAUD",
    CancelReason.BUYER_UNPAID: "NON_PAYMENT",
    CancelReason.OTHER: "OTHER",
}

REFUND_REASONS: dict[str, str] = {
    RefundReason.CUSTOMER_RETURN: "RETURNED",
    RefundReason.NOT_RECEIVED: "NOT_DELIVERED",
    RefundReason.NOT_AS_DESCRIBED: "NOT_AS_DESCRIBED",
    RefundReason.DAMAGED: "DAMAGED",
    RefundReason.SHIPPING_ADJUSTMENT: "SHIPPING_FEE_ADJUSTMENT",
    RefundReason.GOODWILL: "GOODWILL",
    RefundReason.OTHER: "OTHER",
}


def delivery_company(carrier: str) -> tuple[str, str | None]:
    """(code, name): a known carrier's code, or 1000 with the carrier's name."""
    if carrier in DELIVERY_COMPANIES:
        return DELIVERY_COMPANIES[carrier], None
    return OTHER_DELIVERY_COMPANY, DELIVERY_COMPANY_NAMES.get(carrier, carrier)


def cancel_reason(reason: str | None, requested_by: str) -> str:
    return cancel_code(CANCEL_REASONS, reason, requested_by)


def refund_reason(reason: str | None) -> str:
    return refund_code(REFUND_REASONS, reason)


# ------------------------------------------------------------------------------------- inbound


def _name(family: str, first: str) -> str:
    return " ".join(part for part in (first, family) if part)


def imported_order(order: RakutenOrder) -> ImportedOrder:
    """Rakuten's order as the ledger imports it: paid once Rakuten reports a payment time."""
    where = f"order {order.order_number}"
    if not order.items:
        raise PermanentMarketplaceError("unmappable-order", f"{where} has no items")
    for item in order.items:
        if item.units < 1:
            raise PermanentMarketplaceError("unmappable-order", f"{where} item {item.item_detail_id}: units")
    paid_at = order_time(order.payment_datetime, where) if order.payment_datetime else None
    orderer = order.orderer or Orderer()
    ship_to = None
    if order.ship_to is not None:
        s = order.ship_to
        ship_to = Address(
            name=_name(s.family_name, s.first_name),
            line1=s.sub_address,
            city=s.city,
            state=s.prefecture,
            postal_code=s.zip_code,
            country=s.country,
            phone=s.phone_number,
        )
    return ImportedOrder(
        marketplace_order_id=order.order_number,
        purchased_at=order_time(order.order_datetime, where),
        currency=order.currency,
        payment_status=PaymentStatus.PAID if paid_at is not None else PaymentStatus.PENDING,
        buyer=Buyer(name=_name(orderer.family_name, orderer.first_name), email=orderer.email_address),
        lines=tuple(
            OrderLine(
                line_id=item.item_detail_id,
                sku=item.manage_number,
                quantity=item.units,
                unit_price=item.price,
                tax=item.tax_price,
                shipping=item.shipping_price,
                title=item.item_name,
            )
            for item in order.items
        ),
        ship_to=ship_to,
        paid_at=paid_at,
    )


def cancel_request(order: RakutenOrder) -> BuyerCancelled | None:
    """A buyer's cancellation request on an order still open (see the module docstring)."""
    request = order.cancel_request
    if request is None or order.order_progress >= PROGRESS_SHIPPED:
        return None
    lines = (
        None
        if request.items is None
        else tuple(LineQuantity(i.item_detail_id, i.units) for i in request.items)
    )
    return BuyerCancelled(
        applied=False, requested_at=order_time(request.request_datetime, order.order_number), lines=lines
    )


def cancelled_by_rakuten(order: RakutenOrder) -> CancelledRemotely | None:
    """The order cancelled on Rakuten (`orderProgress` 900, every unit in `cancelledUnits`); RMS's order view
    carries no cancellation reason."""
    at = order_time(order.update_datetime, order.order_number)
    units = [(i.units, i.shipped_units, i.cancelled_units) for i in order.items]
    if order.order_progress == PROGRESS_CANCELLED and not any(i.shipped_units for i in order.items):
        units = [(quantity, 0, quantity) for quantity, _, _ in units]  # its word on the order as a whole
    return cancelled_remotely(units, at)


def remote_order(order: RakutenOrder) -> RemoteOrder:
    return RemoteOrder(
        order=imported_order(order),
        updated_at=order_time(order.update_datetime, order.order_number),
        facts=facts_of(cancel_request(order), cancelled_by_rakuten(order)),
    )


def remote_state(order: RakutenOrder) -> RemoteState:
    return RemoteState(
        marketplace_order_id=order.order_number,
        status=order_status((i.units, i.shipped_units, i.cancelled_units) for i in order.items),
        shipped={i.item_detail_id: i.shipped_units for i in order.items},
        cancelled={i.item_detail_id: i.cancelled_units for i in order.items},
        refunded_total=str(sum((r.amount for r in order.refunds), Decimal(0))),
    )


# ------------------------------------------------------------------------------------ outbound


def _units(lines: Sequence[outbox.Line]) -> list[ItemUnits]:
    return [ItemUnits(line.line_id, line.quantity) for line in lines]


def shipment_request(key: str, ship: outbox.Ship) -> ShipmentRequest:
    code, name = delivery_company(ship.carrier)
    return ShipmentRequest(
        request_id=key,
        delivery_company=code,
        delivery_company_name=name,
        shipping_number=ship.tracking_number,
        shipping_datetime=format_time(ship.shipped_at),
        items=_units(ship.lines),
    )


def cancellation_request(key: str, cancel: outbox.Cancel) -> CancellationRequest:
    """A cancel item as Rakuten's request; `restock` becomes inventoryRestoreType 1 (restore) or 0."""
    return CancellationRequest(
        request_id=key,
        cancel_reason=cancel_reason(cancel.reason, cancel.requested_by),
        inventory_restore_type=1 if cancel.restock else 0,
        items=_units(cancel.lines),
    )


def refund_request(key: str, refund: outbox.Refund) -> RefundRequest:
    return RefundRequest(
        request_id=key,
        refund_reason=refund_reason(refund.reason),
        currency=refund.currency,
        items=[
            RefundItem(
                item_detail_id=line.line_id,
                units=line.quantity,
                item_amount=line.item_amount,
                tax_amount=line.tax_amount,
                shipping_amount=line.shipping_amount,
            )
            for line in refund.lines
        ],
    )


def read_error(body: bytes) -> tuple[str, str] | None:
    """The first ERROR of `MessageModelList` as (code, message)."""
    try:
        messages = _error_decoder.decode(body).messages
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    errors = [m for m in messages if m.message_type == "ERROR"] or messages
    if not errors:
        return None
    return errors[0].message_code, "; ".join(m.message or m.message_code for m in errors)


def authorization(credentials: Mapping[str, str]) -> str:
    """RMS's `ESA base64(serviceSecret:licenseKey)`."""
    pair = f"{credentials.get('service_secret', '')}:{credentials.get('license_key', '')}"
    return "ESA " + base64.b64encode(pair.encode()).decode("ascii")


# -------------------------------------------------------------------------------------- client


class RakutenClient(GatedClient):
    """One Rakuten shop over HTTP. `credentials`: `service_secret` and `license_key`."""

    marketplace = Marketplace.RAKUTEN

    def __init__(
        self, endpoint: Endpoint, http: httpx.Client | None = None, *, page_size: int = PAGE_LIMIT
    ) -> None:
        self._page_size = page_size
        self._auth = {"Authorization": authorization(endpoint.credentials)}
        self._transport = RestTransport(endpoint, http, read_error)

    def list_orders(self, updated_after: datetime, page: str | None = None) -> OrderPage:
        params = {"updatedFrom": format_time(updated_after), "limit": str(self._page_size)}
        if page is not None:
            params["cursor"] = page
        body = self._transport.gated(
            "searchOrder", lambda: self._transport.call("GET", BASE, self._auth, params=params)
        )
        response = decode(body, _orders_decoder, f"GET {BASE}")
        return OrderPage(
            orders=tuple(remote_order(order) for order in response.orders),
            next_page=response.next_cursor or None,
        )

    def acknowledge(self, marketplace_order_id: str) -> None:
        """Rakuten needs no acknowledgement."""

    def send(self, request: SyncRequest) -> Outcome:
        key = request.idempotency_key
        match request.message:
            case outbox.Ship() as ship:
                answer = self._post(request, "shipments", encode(shipment_request(key, ship)))
                return Accepted(marketplace_reference=answer.shipping_detail_id)
            case outbox.Cancel() as cancel:
                answer = self._post(request, "cancellations", encode(cancellation_request(key, cancel)))
                return Accepted(marketplace_reference=answer.cancellation_id)
            case outbox.Refund() as refund:
                answer = self._post(request, "refunds", encode(refund_request(key, refund)))
                return Accepted(marketplace_reference=answer.refund_id)
            case outbox.CloseDispute() | outbox.Acknowledge():
                return Accepted()  # nothing Rakuten takes: no dispute API, no acknowledgement

    def _post(self, request: SyncRequest, what: str, body: bytes) -> ActionResponse:
        path = f"{BASE}/{quote(request.marketplace_order_id)}/{what}"
        return decode(self._transport.call("POST", path, self._auth, body=body), _action_decoder, path)

    def poll(self, request: SyncRequest, marketplace_reference: str) -> Outcome:
        """Rakuten answers synchronously: nothing is ever Submitted."""
        return Accepted(marketplace_reference=marketplace_reference)

    def order_state(self, marketplace_order_id: str) -> RemoteState:
        path = f"{BASE}/{quote(marketplace_order_id)}"
        return remote_state(decode(self._transport.call("GET", path, self._auth), _order_decoder, path).order)

    def close(self) -> None:
        self._transport.close()

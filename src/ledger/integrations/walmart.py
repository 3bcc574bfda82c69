"""Walmart Marketplace API v3 (orders): wire shapes, pure mappings both ways, and the client.

Modelled on Walmart's public documentation of `GET /v3/orders`, `POST /v3/orders/{purchaseOrderId}/acknowledge`,
`/shipping`, `/cancel` and `/refund`. Walmart sells one thing per order line (`lineNumber`), quotes amounts as
JSON numbers with a currency, times as epoch milliseconds, and expects every new order to be acknowledged
(within four hours, or it cancels the order). It has no dedupe key in the body: the `WM_QOS.CORRELATION_ID`
header carries the item's idempotency key, and the marketplace (our sandbox) applies a repeated correlation
id once. Refunds are negative amounts, per line and charge (`PRODUCT` with its tax, `SHIPPING`).

Walmart has no API for the seller to close a dispute, so `close_dispute` is accepted with nothing sent.

A customer's cancellation request (`cancel_request`) is a `BuyerCancelled` fact (see `rest`); Walmart's own
cancellation of the whole order (`Cancelled` statuses on every unit) is a `CancelledRemotely` fact.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from uuid import uuid4

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
    from_millis,
    order_status,
    quote,
    refund_code,
    to_millis,
)

SERVICE_NAME = "Walmart Marketplace"
PAGE_LIMIT = 100  # Walmart's default page; it allows up to 200

# ----------------------------------------------------------------------------------- wire shapes
# Tolerant of fields we do not read: Walmart adds fields without notice.


class Money(msgspec.Struct, rename="camel", omit_defaults=True):
    currency: str
    amount: Decimal


class Tax(msgspec.Struct, rename="camel", omit_defaults=True):
    tax_name: str
    tax_amount: Money


class Charge(msgspec.Struct, rename="camel", omit_defaults=True):
    charge_type: str  # PRODUCT, SHIPPING
    charge_name: str
    charge_amount: Money
    tax: Tax | None = None


class Charges(msgspec.Struct, rename="camel"):
    charge: list[Charge] = []


class Quantity(msgspec.Struct, rename="camel"):
    unit_of_measurement: str
    amount: str  # Walmart sends quantities as strings


class CarrierName(msgspec.Struct, rename="camel", omit_defaults=True):
    carrier: str | None = None
    other_carrier: str | None = None


class TrackingInfo(msgspec.Struct, rename="camel", omit_defaults=True):
    ship_date_time: int
    carrier_name: CarrierName
    method_code: str
    tracking_number: str


class LineStatus(msgspec.Struct, rename="camel", omit_defaults=True):
    status: str  # Created, Acknowledged, Shipped, Cancelled
    status_quantity: Quantity
    cancellation_reason: str | None = None
    tracking_info: TrackingInfo | None = None


class LineStatuses(msgspec.Struct, rename="camel"):
    order_line_status: list[LineStatus] = []


class RefundCharge(msgspec.Struct, rename="camel"):
    refund_reason: str
    charge: Charge


class RefundCharges(msgspec.Struct, rename="camel"):
    refund_charge: list[RefundCharge] = []


class Refund(msgspec.Struct, rename="camel", omit_defaults=True):
    refund_charges: RefundCharges
    refund_id: str | None = None
    refund_comments: str | None = None


class Item(msgspec.Struct, rename="camel"):
    sku: str
    product_name: str = ""


class WalmartOrderLine(msgspec.Struct, rename="camel"):
    line_number: str
    item: Item
    charges: Charges
    order_line_quantity: Quantity
    order_line_statuses: LineStatuses
    status_date: int | None = None
    refund: Refund | None = None
    # The customer asked to cancel the line; the seller answers by cancelling it (or shipping anyway).
    intent_to_cancel: bool = False


class OrderLines(msgspec.Struct, rename="camel"):
    order_line: list[WalmartOrderLine] = []


class PostalAddress(msgspec.Struct, rename="camel"):
    name: str = ""
    address1: str = ""
    address2: str | None = None
    city: str = ""
    state: str = ""
    postal_code: str = ""
    country: str = ""


class ShippingInfo(msgspec.Struct, rename="camel"):
    phone: str = ""
    method_code: str = ""
    postal_address: PostalAddress | None = None


class WalmartOrder(msgspec.Struct, rename="camel"):
    purchase_order_id: str
    customer_order_id: str
    order_date: int
    order_lines: OrderLines
    customer_email_id: str = ""
    shipping_info: ShippingInfo | None = None


class Elements(msgspec.Struct):
    order: list[WalmartOrder] = []


class Meta(msgspec.Struct, rename="camel"):
    total_count: int | None = None
    limit: int | None = None
    next_cursor: str | None = None


class OrderList(msgspec.Struct):
    meta: Meta
    elements: Elements


class OrdersResponse(msgspec.Struct):
    list_: OrderList = msgspec.field(name="list")


class OrderResponse(msgspec.Struct):
    order: WalmartOrder


class WalmartError(msgspec.Struct):
    code: str
    description: str = ""
    field: str | None = None


class ErrorList(msgspec.Struct):
    error: list[WalmartError] = []


class ErrorResponse(msgspec.Struct):
    errors: ErrorList


# Requests.


class ShipLine(msgspec.Struct, rename="camel"):
    line_number: str
    order_line_statuses: LineStatuses


class ShipLines(msgspec.Struct, rename="camel"):
    order_line: list[ShipLine]


class OrderShipment(msgspec.Struct, rename="camel"):
    order_lines: ShipLines


class ShipmentRequest(msgspec.Struct, rename="camel"):
    order_shipment: OrderShipment


class OrderCancellation(msgspec.Struct, rename="camel"):
    order_lines: ShipLines


class CancellationRequest(msgspec.Struct, rename="camel"):
    order_cancellation: OrderCancellation


class RefundList(msgspec.Struct):
    refund: list[Refund]


class RefundLine(msgspec.Struct, rename="camel"):
    line_number: str
    is_full_refund: bool
    refunds: RefundList


class RefundLines(msgspec.Struct, rename="camel"):
    order_line: list[RefundLine]


class OrderRefund(msgspec.Struct, rename="camel"):
    purchase_order_id: str
    order_lines: RefundLines


class RefundRequest(msgspec.Struct, rename="camel"):
    order_refund: OrderRefund


_orders_decoder = msgspec.json.Decoder(OrdersResponse)
_order_decoder = msgspec.json.Decoder(OrderResponse)
_error_decoder = msgspec.json.Decoder(ErrorResponse)

# ------------------------------------------------------------------------------------- the maps

CARRIERS: dict[str, str] = {
    Carrier.UPS: "UPS",
    Carrier.USPS: "USPS",
    Carrier.FEDEX: "FedEx",
    Carrier.DHL: "DHL",
    Carrier.ONTRAC: "OnTrac",
}
# Carriers Walmart does not list go by name in `otherCarrier`.
OTHER_CARRIERS: dict[str, str] = {
    Carrier.AMAZON_LOGISTICS: "Amazon Logistics",
    Carrier.ROYAL_MAIL: "Royal Mail",
    Carrier.CANADA_POST: "Canada Post",
    Carrier.OTHER: "Other",
}

CANCEL_REASONS: dict[str, str] = {
    CancelReason.BUYER_CANCELLED: "CUSTOMER_REQUESTED_SELLER_TO_CANCEL",
    CancelReason.OUT_OF_STOCK: "SELLER_CANCEL_OUT_OF_STOCK",
    CancelReason.ADDRESS_UNDELIVERABLE: "SELLER_CANCEL_ADDRESS_NOT_SERVICEABLE",
    CancelReason.PRICING_ERROR: "SELLER_CANCEL_PRICING_ERROR",
    CancelReason.FRAUD_SUSPECTED: "SELLER_CANCEL_FRAUD_STOP_SHIPMENT",
    # Walmart charges the customer when the order is placed: an unpaid order does not reach the seller, so
    # this (like `other`) is the general code.
    CancelReason.BUYER_UNPAID: "CUSTOMER_REQUESTED_SELLER_TO_CANCEL",
    CancelReason.OTHER: "CUSTOMER_REQUESTED_SELLER_TO_CANCEL",
}
# Walmart's cancellation reasons read back (its own cancellations carry them too).
CANCEL_REASONS_BACK: dict[str, CancelReason] = {
    "CUSTOMER_REQUESTED_SELLER_TO_CANCEL": CancelReason.BUYER_CANCELLED,
    "SELLER_CANCEL_OUT_OF_STOCK": CancelReason.OUT_OF_STOCK,
    "SELLER_CANCEL_ADDRESS_NOT_SERVICEABLE": CancelReason.ADDRESS_UNDELIVERABLE,
    "SELLER_CANCEL_PRICING_ERROR": CancelReason.PRICING_ERROR,
    "SELLER_CANCEL_FRAUD_STOP_SHIPMENT": CancelReason.FRAUD_SUSPECTED,
}

REFUND_REASONS: dict[str, str] = {
    RefundReason.CUSTOMER_RETURN: "CustomerChangedMind",
    RefundReason.NOT_RECEIVED: "ItemNotReceivedByCustomer",
    RefundReason.NOT_AS_DESCRIBED: "ItemNotAsAdvertised",
    RefundReason.DAMAGED: "DamagedItem",
    RefundReason.SHIPPING_ADJUSTMENT: "IncorrectShippingPrice",
    RefundReason.GOODWILL: "Finance -> Goodwill",
    RefundReason.OTHER: "BillingError",
}

# Walmart's shipping method codes; the ledger's shipping class is free text, matched case-insensitively.
METHOD_CODES: dict[str, str] = {
    "": "Standard",
    "standard": "Standard",
    "value": "Value",
    "economy": "Value",
    "express": "Express",
    "expedited": "Express",
    "two_day": "Express",
    "oneday": "OneDay",
    "one_day": "OneDay",
    "next_day": "OneDay",
    "overnight": "OneDay",
    "freight": "Freight",
    "whiteglove": "WhiteGlove",
    "white_glove": "WhiteGlove",
}


def carrier_name(carrier: str) -> CarrierName:
    """Walmart's carrier field for one of the ledger's carriers (an unknown one goes by its own name)."""
    if carrier in CARRIERS:
        return CarrierName(carrier=CARRIERS[carrier])
    return CarrierName(other_carrier=OTHER_CARRIERS.get(carrier, carrier))


def method_code(shipping_class: str | None) -> str:
    key = (shipping_class or "").strip().lower().replace("-", "_").replace(" ", "_")
    return METHOD_CODES.get(key, "Standard")


def cancellation_reason(reason: str | None, requested_by: str) -> str:
    return cancel_code(CANCEL_REASONS, reason, requested_by)


def refund_reason(reason: str | None) -> str:
    return refund_code(REFUND_REASONS, reason)


# ------------------------------------------------------------------------------------- inbound


def _quantity(quantity: Quantity, where: str) -> int:
    try:
        value = int(quantity.amount)
    except ValueError:
        raise PermanentMarketplaceError(
            "unmappable-order", f"{where}: quantity {quantity.amount!r}"
        ) from None
    return value


def _line(order: WalmartOrder, line: WalmartOrderLine) -> OrderLine:
    where = f"order {order.purchase_order_id} line {line.line_number}"
    quantity = _quantity(line.order_line_quantity, where)
    if quantity < 1:
        raise PermanentMarketplaceError("unmappable-order", f"{where}: quantity {quantity}")
    item_total = tax = shipping = Decimal(0)
    for charge in line.charges.charge:
        if charge.charge_type == "PRODUCT":
            item_total += charge.charge_amount.amount
        elif charge.charge_type == "SHIPPING":
            shipping += charge.charge_amount.amount
        if charge.tax is not None:
            tax += charge.tax.tax_amount.amount
    unit_price = item_total / quantity
    if unit_price * quantity != item_total:
        raise PermanentMarketplaceError(
            "unmappable-order", f"{where}: item price {item_total} does not divide into {quantity} units"
        )
    return OrderLine(
        line_id=line.line_number,
        sku=line.item.sku,
        quantity=quantity,
        unit_price=unit_price,
        tax=tax,
        shipping=shipping,
        title=line.item.product_name,
    )


def _currency(order: WalmartOrder) -> str:
    for line in order.order_lines.order_line:
        for charge in line.charges.charge:
            return charge.charge_amount.currency
    return "USD"


def imported_order(order: WalmartOrder) -> ImportedOrder:
    """Walmart's order as the ledger imports it. Walmart charges at purchase, so the order arrives paid."""
    if not order.order_lines.order_line:
        raise PermanentMarketplaceError("unmappable-order", f"order {order.purchase_order_id} has no lines")
    purchased_at = from_millis(order.order_date)
    info = order.shipping_info
    postal = info.postal_address if info is not None else None
    ship_to = None
    if postal is not None:
        ship_to = Address(
            name=postal.name,
            line1=postal.address1,
            line2=postal.address2 or "",
            city=postal.city,
            state=postal.state,
            postal_code=postal.postal_code,
            country=postal.country,
            phone=info.phone if info is not None else "",
        )
    return ImportedOrder(
        marketplace_order_id=order.purchase_order_id,
        purchased_at=purchased_at,
        currency=_currency(order),
        payment_status=PaymentStatus.PAID,
        buyer=Buyer(name=postal.name if postal is not None else "", email=order.customer_email_id),
        lines=tuple(_line(order, line) for line in order.order_lines.order_line),
        ship_to=ship_to,
        paid_at=purchased_at,
    )


def updated_at(order: WalmartOrder) -> datetime:
    """The latest change Walmart reports on the order: its date or a line's status date."""
    stamps = [order.order_date] + [
        line.status_date for line in order.order_lines.order_line if line.status_date is not None
    ]
    return from_millis(max(stamps))


def _unit_counts(line: WalmartOrderLine, status: str) -> int:
    return sum(
        int(s.status_quantity.amount)
        for s in line.order_line_statuses.order_line_status
        if s.status == status
    )


def cancel_request(order: WalmartOrder) -> BuyerCancelled | None:
    """A customer's request to cancel lines still open (`intentToCancel`): a request the seller answers."""
    lines: list[LineQuantity] = []
    requested: list[int] = []
    for line in order.order_lines.order_line:
        if not line.intent_to_cancel:
            continue
        open_units = (
            int(line.order_line_quantity.amount)
            - _unit_counts(line, "Shipped")
            - _unit_counts(line, "Cancelled")
        )
        if open_units > 0:
            lines.append(LineQuantity(line.line_number, open_units))
            requested.append(line.status_date or order.order_date)
    if not lines:
        return None
    return BuyerCancelled(applied=False, requested_at=from_millis(max(requested)), lines=tuple(lines))


def cancelled_by_walmart(order: WalmartOrder) -> CancelledRemotely | None:
    """Every unit of the order `Cancelled` on Walmart (it cancels an order not acknowledged in time, or stops
    one for fraud): its reason read back from the line statuses' `cancellationReason`."""
    lines = order.order_lines.order_line
    reasons = [
        s.cancellation_reason
        for line in lines
        for s in line.order_line_statuses.order_line_status
        if s.status == "Cancelled" and s.cancellation_reason
    ]
    reason = CANCEL_REASONS_BACK.get(reasons[-1], CancelReason.OTHER) if reasons else CancelReason.OTHER
    units = (
        (int(line.order_line_quantity.amount), _unit_counts(line, "Shipped"), _unit_counts(line, "Cancelled"))
        for line in lines
    )
    return cancelled_remotely(units, updated_at(order), reason)


def remote_order(order: WalmartOrder) -> RemoteOrder:
    return RemoteOrder(
        order=imported_order(order),
        updated_at=updated_at(order),
        facts=facts_of(cancel_request(order), cancelled_by_walmart(order)),
        needs_acknowledgement=any(
            s.status == "Created"
            for line in order.order_lines.order_line
            for s in line.order_line_statuses.order_line_status
        ),
    )


def remote_state(order: WalmartOrder) -> RemoteState:
    """What Walmart holds: units shipped and cancelled per line, and the refunds' total (as a positive sum)."""
    lines = order.order_lines.order_line
    shipped = {line.line_number: _unit_counts(line, "Shipped") for line in lines}
    cancelled = {line.line_number: _unit_counts(line, "Cancelled") for line in lines}
    refunded = Decimal(0)
    for line in lines:
        if line.refund is None:
            continue
        for refund_charge in line.refund.refund_charges.refund_charge:
            charge = refund_charge.charge
            refunded += -charge.charge_amount.amount
            if charge.tax is not None:
                refunded += -charge.tax.tax_amount.amount
    status = order_status(
        (int(line.order_line_quantity.amount), shipped[line.line_number], cancelled[line.line_number])
        for line in lines
    )
    return RemoteState(
        marketplace_order_id=order.purchase_order_id,
        status=status,
        shipped=shipped,
        cancelled=cancelled,
        refunded_total=str(refunded),
    )


# ------------------------------------------------------------------------------------ outbound


def _each(quantity: int) -> Quantity:
    return Quantity(unit_of_measurement="EACH", amount=str(quantity))


def shipment_request(ship: outbox.Ship) -> ShipmentRequest:
    """A ship item as Walmart's `orderShipment`: one Shipped status per line, with tracking."""
    tracking = TrackingInfo(
        ship_date_time=to_millis(ship.shipped_at),
        carrier_name=carrier_name(ship.carrier),
        method_code=method_code(ship.shipping_class),
        tracking_number=ship.tracking_number,
    )
    return ShipmentRequest(
        OrderShipment(
            ShipLines(
                [
                    ShipLine(
                        line_number=line.line_id,
                        order_line_statuses=LineStatuses(
                            [LineStatus("Shipped", _each(line.quantity), tracking_info=tracking)]
                        ),
                    )
                    for line in ship.lines
                ]
            )
        )
    )


def cancellation_request(cancel: outbox.Cancel) -> CancellationRequest:
    """A cancel item as Walmart's `orderCancellation`, one Cancelled status per line."""
    reason = cancellation_reason(cancel.reason, cancel.requested_by)
    return CancellationRequest(
        OrderCancellation(
            ShipLines(
                [
                    ShipLine(
                        line_number=line.line_id,
                        order_line_statuses=LineStatuses(
                            [LineStatus("Cancelled", _each(line.quantity), cancellation_reason=reason)]
                        ),
                    )
                    for line in cancel.lines
                ]
            )
        )
    )


def _refund_charges(line: outbox.RefundLine, currency: str, reason: str) -> list[RefundCharge]:
    charges: list[RefundCharge] = []
    item, tax, shipping = line.item_amount, line.tax_amount, line.shipping_amount
    if item or tax:
        charges.append(
            RefundCharge(
                reason,
                Charge(
                    charge_type="PRODUCT",
                    charge_name="ItemPrice",
                    charge_amount=Money(currency, -item),
                    tax=Tax("ItemPriceTax", Money(currency, -tax)),
                ),
            )
        )
    if shipping:
        charges.append(
            RefundCharge(
                reason,
                Charge(
                    charge_type="SHIPPING", charge_name="Shipping", charge_amount=Money(currency, -shipping)
                ),
            )
        )
    return charges


def refund_request(marketplace_order_id: str, refund: outbox.Refund) -> RefundRequest:
    """A refund item as Walmart's `orderRefund`: negative amounts per line and charge."""
    reason = refund_reason(refund.reason)
    currency = refund.currency
    comment = f"ledger refund {refund.refund_id} ({refund.reason or 'other'})"
    lines = []
    for line in refund.lines:
        charges = _refund_charges(line, currency, reason)
        if charges:
            lines.append(
                RefundLine(
                    line_number=line.line_id,
                    is_full_refund=False,
                    refunds=RefundList(
                        [Refund(refund_charges=RefundCharges(charges), refund_comments=comment)]
                    ),
                )
            )
    return RefundRequest(OrderRefund(purchase_order_id=marketplace_order_id, order_lines=RefundLines(lines)))


def read_error(body: bytes) -> tuple[str, str] | None:
    """Walmart's `{errors: {error: [{code, description}]}}` as (code, message)."""
    try:
        errors = _error_decoder.decode(body).errors.error
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not errors:
        return None
    return errors[0].code, "; ".join(e.description or e.code for e in errors)


# -------------------------------------------------------------------------------------- client


class TokenResponse(msgspec.Struct):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - the kind of token, not a secret
    expires_in: float = 900.0


_token_decoder = msgspec.json.Decoder(TokenResponse)
TOKEN_MARGIN_SECONDS = 60.0  # fetch a new token this long before the old one runs out


class WalmartClient(GatedClient):
    """One Walmart seller account over HTTP.

    `credentials`: `client_id` and `client_secret` (the client-credentials grant of `POST /v3/token`: the access
    token is fetched when needed, kept until shortly before it expires, and fetched again once if Walmart
    answers 401), or a ready `access_token`. The token travels in `WM_SEC.ACCESS_TOKEN`."""

    marketplace = Marketplace.WALMART

    def __init__(
        self,
        endpoint: Endpoint,
        http: httpx.Client | None = None,
        *,
        page_size: int = PAGE_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._page_size = page_size
        self._endpoint = endpoint
        self._transport = RestTransport(endpoint, http, read_error)
        self._clock = clock
        self._token: str | None = endpoint.credentials.get("access_token")
        self._token_expires = float("inf")
        self._lock = threading.Lock()

    def _uses_client_credentials(self) -> bool:
        credentials = self._endpoint.credentials
        return bool(credentials.get("client_id") and credentials.get("client_secret"))

    def _access_token(self) -> str:
        with self._lock:
            if self._uses_client_credentials() and (
                self._token is None or self._clock() >= self._token_expires - TOKEN_MARGIN_SECONDS
            ):
                self._token, self._token_expires = self._fetch_token()
            return self._token or ""

    def _fetch_token(self) -> tuple[str, float]:
        credentials = self._endpoint.credentials
        pair = f"{credentials['client_id']}:{credentials['client_secret']}".encode()
        headers = {
            "Authorization": "Basic " + base64.b64encode(pair).decode("ascii"),
            "WM_QOS.CORRELATION_ID": str(uuid4()),
            "WM_SVC.NAME": SERVICE_NAME,
        }
        body = self._transport.call(
            "POST",
            "/v3/token",
            headers,
            body=b"grant_type=client_credentials",
            content_type="application/x-www-form-urlencoded",
        )
        token = decode(body, _token_decoder, "POST /v3/token")
        return token.access_token, self._clock() + token.expires_in

    def _headers(self, correlation_id: str) -> dict[str, str]:
        return {
            "WM_SEC.ACCESS_TOKEN": self._access_token(),
            "WM_QOS.CORRELATION_ID": correlation_id,
            "WM_SVC.NAME": SERVICE_NAME,
        }

    def _call(
        self,
        method: str,
        path: str,
        correlation_id: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> bytes:
        """One call; with client credentials, a 401 (an expired or revoked token) fetches a token and tries once more."""
        try:
            return self._transport.call(method, path, self._headers(correlation_id), params=params, body=body)
        except PermanentMarketplaceError as error:
            if not (self._uses_client_credentials() and error.message.startswith("HTTP 401")):
                raise
        with self._lock:
            self._token = None
        return self._transport.call(method, path, self._headers(correlation_id), params=params, body=body)

    def list_orders(self, updated_after: datetime, page: str | None = None) -> OrderPage:
        """Orders changed since `updated_after`; `page` is Walmart's `nextCursor` (a query string)."""
        if page is None:
            params = {"lastModifiedStartDate": format_time(updated_after), "limit": str(self._page_size)}
            body = self._transport.gated(
                "getAllOrders", lambda: self._call("GET", "/v3/orders", str(uuid4()), params=params)
            )
        else:
            path = "/v3/orders" + (page if page.startswith("?") else f"?{page}")
            body = self._transport.gated("getAllOrders", lambda: self._call("GET", path, str(uuid4())))
        response = decode(body, _orders_decoder, "GET /v3/orders")
        orders = tuple(remote_order(order) for order in response.list_.elements.order)
        return OrderPage(orders=orders, next_page=response.list_.meta.next_cursor or None)

    def acknowledge(self, marketplace_order_id: str) -> None:
        self._acknowledge(marketplace_order_id, f"ack-{marketplace_order_id}")

    def _acknowledge(self, purchase_order_id: str, correlation_id: str) -> None:
        path = f"/v3/orders/{quote(purchase_order_id)}/acknowledge"
        decode(self._call("POST", path, correlation_id), _order_decoder, path)

    def send(self, request: SyncRequest) -> Outcome:
        po = request.marketplace_order_id
        key = request.idempotency_key
        match request.message:
            case outbox.Acknowledge():
                self._acknowledge(po, key)
                return Accepted()
            case outbox.Ship() as ship:
                self._post(po, "shipping", key, encode(shipment_request(ship)))
                return Accepted(marketplace_reference=ship.tracking_number)
            case outbox.Cancel() as cancel:
                self._post(po, "cancel", key, encode(cancellation_request(cancel)))
                return Accepted()
            case outbox.Refund() as refund_message:
                refund = refund_request(po, refund_message)
                if not refund.order_refund.order_lines.order_line:
                    raise PermanentMarketplaceError("empty-refund", "the refund has no amount on any line")
                self._post(po, "refund", key, encode(refund))
                return Accepted()
            case outbox.CloseDispute():
                return Accepted()  # Walmart has no seller-side dispute API: nothing to tell it

    def _post(self, purchase_order_id: str, verb: str, correlation_id: str, body: bytes) -> WalmartOrder:
        path = f"/v3/orders/{quote(purchase_order_id)}/{verb}"
        answer = self._call("POST", path, correlation_id, body=body)
        return decode(answer, _order_decoder, path).order

    def poll(self, request: SyncRequest, marketplace_reference: str) -> Outcome:
        """Walmart answers synchronously: nothing is ever Submitted."""
        return Accepted(marketplace_reference=marketplace_reference)

    def order_state(self, marketplace_order_id: str) -> RemoteState:
        path = f"/v3/orders/{quote(marketplace_order_id)}"
        body = self._call("GET", path, str(uuid4()))
        return remote_state(decode(body, _order_decoder, path).order)

    def close(self) -> None:
        self._transport.close()

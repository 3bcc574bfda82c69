"""Walmart's pure mappings: its order into the ledger's import shape, the outbound queue's payloads into its
requests, the carrier and reason maps, and how an HTTP answer becomes a transient or permanent error."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mapping_support import message, queue_payloads
from mapping_support import payload_lines as payload_lines_of

from ledger.aggregates.values import (
    CancelReason,
    Carrier,
    LineQuantity,
    Marketplace,
    PaymentStatus,
    RefundReason,
    RefundRequestLine,
)
from ledger.integrations import walmart
from ledger.integrations.base import (
    BuyerCancelled,
    CancelledRemotely,
    PermanentMarketplaceError,
    TransientMarketplaceError,
)
from ledger.integrations.rest import classify, order_status, retry_after_seconds
from ledger.integrations.rest import decode as decode_response
from ledger_sandbox import walmart as sandbox

ORDER_DATE = 1_732_100_000_000  # 2024-11-20T10:53:20Z
STATUS_DATE = ORDER_DATE + 3_600_000


def walmart_order(**changes: Any) -> dict[str, Any]:
    """An order as Walmart's GET /v3/orders lists it, with fields the adapter does not read."""
    order: dict[str, Any] = {
        "purchaseOrderId": "1796277083022",
        "customerOrderId": "5281956426648",
        "customerEmailId": "3A31739D8B0A45A1B23F7F8C81C8747F@relay.walmart.com",
        "orderType": "REGULAR",
        "orderDate": ORDER_DATE,
        "shipNode": {"type": "SellerFulfilled"},
        "shippingInfo": {
            "phone": "3155598681",
            "estimatedDeliveryDate": ORDER_DATE + 5 * 86_400_000,
            "methodCode": "Standard",
            "postalAddress": {
                "name": "Kathryn Cole",
                "address1": "3258BWarners rd",
                "address2": None,
                "city": "Warners",
                "state": "NY",
                "postalCode": "13164",
                "country": "USA",
                "addressType": "RESIDENTIAL",
            },
        },
        "orderLines": {
            "orderLine": [
                {
                    "lineNumber": "1",
                    "item": {"productName": "Garmin Refurbished GPS", "sku": "GRM-GPS-1", "imageUrl": "x"},
                    "charges": {
                        "charge": [
                            {
                                "chargeType": "PRODUCT",
                                "chargeName": "ItemPrice",
                                "chargeAmount": {"currency": "USD", "amount": 25.98},
                                "tax": {"taxName": "Tax1", "taxAmount": {"currency": "USD", "amount": 1.95}},
                            },
                            {
                                "chargeType": "SHIPPING",
                                "chargeName": "Shipping",
                                "chargeAmount": {"currency": "USD", "amount": 4.99},
                                "tax": {"taxName": "Tax2", "taxAmount": {"currency": "USD", "amount": 0.37}},
                            },
                        ]
                    },
                    "orderLineQuantity": {"unitOfMeasurement": "EACH", "amount": "2"},
                    "statusDate": STATUS_DATE,
                    "orderLineStatuses": {
                        "orderLineStatus": [
                            {
                                "status": "Created",
                                "statusQuantity": {"unitOfMeasurement": "EACH", "amount": "2"},
                            }
                        ]
                    },
                    "fulfillment": {"fulfillmentOption": "S2H"},
                }
            ]
        },
    }
    order.update(changes)
    return order


def decode(order: dict[str, Any]) -> walmart.WalmartOrder:
    return msgspec.json.decode(msgspec.json.encode(order), type=walmart.WalmartOrder)


def test_order_maps_to_the_import_shape() -> None:
    """A Walmart order imports paid at its order date, with per-unit price and the line's tax and shipping."""
    remote = walmart.remote_order(decode(walmart_order()))
    order = remote.order
    assert order.marketplace_order_id == "1796277083022"
    assert order.purchased_at == datetime(2024, 11, 20, 10, 53, 20, tzinfo=UTC)
    assert (order.payment_status, order.paid_at) == (PaymentStatus.PAID, order.purchased_at)
    assert (order.currency, order.buyer.name) == ("USD", "Kathryn Cole")
    (line,) = order.lines
    assert (line.line_id, line.sku, line.quantity, line.title) == (
        "1",
        "GRM-GPS-1",
        2,
        "Garmin Refurbished GPS",
    )
    assert (line.unit_price, line.tax, line.shipping) == (Decimal("12.99"), Decimal("2.32"), Decimal("4.99"))
    assert order.ship_to is not None
    assert (order.ship_to.city, order.ship_to.postal_code, order.ship_to.phone) == (
        "Warners",
        "13164",
        "3155598681",
    )
    assert remote.needs_acknowledgement
    assert remote.updated_at == datetime(2024, 11, 20, 11, 53, 20, tzinfo=UTC)
    assert remote.facts == ()


def test_mapped_order_is_accepted_by_the_ledger(shop: Any) -> None:
    """The mapped order imports into the ledger as a new Walmart order."""
    result = shop.ledger.import_order(
        shop.ctx, shop.account(Marketplace.WALMART), walmart.imported_order(decode(walmart_order()))
    )
    assert result.created
    assert shop.details(result.order_id).total == Decimal("25.98") + Decimal("2.32") + Decimal("4.99")


def test_price_that_does_not_split_into_units_is_refused() -> None:
    """A line total that is not a whole number of cents per unit cannot be imported: a permanent error."""
    order = walmart_order()
    line = order["orderLines"]["orderLine"][0]
    line["orderLineQuantity"]["amount"] = "3"
    line["charges"]["charge"][0]["chargeAmount"]["amount"] = 10.00
    with pytest.raises(PermanentMarketplaceError) as raised:
        walmart.imported_order(decode(order))
    assert raised.value.code == "unmappable-order"


def test_acknowledged_order_needs_no_acknowledgement_and_intent_to_cancel_is_a_request() -> None:
    """Lines past Created need no acknowledgement; intent to cancel open units maps to a request, not a fact."""
    order = walmart_order()
    line = order["orderLines"]["orderLine"][0]
    line["orderLineStatuses"]["orderLineStatus"] = [
        {"status": "Shipped", "statusQuantity": {"unitOfMeasurement": "EACH", "amount": "1"}},
        {"status": "Acknowledged", "statusQuantity": {"unitOfMeasurement": "EACH", "amount": "1"}},
    ]
    line["intentToCancel"] = True
    remote = walmart.remote_order(decode(order))
    assert not remote.needs_acknowledgement
    request = BuyerCancelled(
        requested_at=datetime(2024, 11, 20, 11, 53, 20, tzinfo=UTC),
        lines=(LineQuantity("1", 1),),
        applied=False,
    )
    assert walmart.cancel_request(decode(order)) == request
    # A request, not a cancellation Walmart applied: the importer records it as one (applied=False).
    assert remote.facts == (request,)


def _statuses(*statuses: tuple[str, int, str | None]) -> list[dict[str, Any]]:
    return [
        {"status": status, "statusQuantity": {"unitOfMeasurement": "EACH", "amount": str(units)}}
        | ({"cancellationReason": reason} if reason else {})
        for status, units, reason in statuses
    ]


def test_walmarts_own_cancellation_of_every_unit_is_a_fact_with_its_reason() -> None:
    """Every unit `Cancelled` on Walmart, none shipped: a CancelledRemotely fact with Walmart's reason read back;
    some units still open, or some shipped, is no such fact (partial cancellations show in `sync check`)."""
    order = walmart_order()
    line = order["orderLines"]["orderLine"][0]
    line["orderLineStatuses"]["orderLineStatus"] = _statuses(
        ("Cancelled", 2, "SELLER_CANCEL_FRAUD_STOP_SHIPMENT")
    )
    cancelled = CancelledRemotely(
        cancelled_at=datetime(2024, 11, 20, 11, 53, 20, tzinfo=UTC), reason=CancelReason.FRAUD_SUSPECTED
    )
    assert walmart.remote_order(decode(order)).facts == (cancelled,)

    line["orderLineStatuses"]["orderLineStatus"] = _statuses(
        ("Cancelled", 1, None), ("Acknowledged", 1, None)
    )
    assert walmart.cancelled_by_walmart(decode(order)) is None
    line["orderLineStatuses"]["orderLineStatus"] = _statuses(("Cancelled", 1, None), ("Shipped", 1, None))
    assert walmart.cancelled_by_walmart(decode(order)) is None


def test_remote_state_counts_statuses_and_refunds() -> None:
    """What Walmart holds: shipped and cancelled units per line, and the refunds as a positive total."""
    order = walmart_order()
    line = order["orderLines"]["orderLine"][0]
    line["orderLineStatuses"]["orderLineStatus"] = [
        {"status": "Shipped", "statusQuantity": {"unitOfMeasurement": "EACH", "amount": "1"}},
        {"status": "Cancelled", "statusQuantity": {"unitOfMeasurement": "EACH", "amount": "1"}},
    ]
    line["refund"] = {
        "refundId": "R1",
        "refundCharges": {
            "refundCharge": [
                {
                    "refundReason": "DamagedItem",
                    "charge": {
                        "chargeType": "PRODUCT",
                        "chargeName": "ItemPrice",
                        "chargeAmount": {"currency": "USD", "amount": -12.99},
                        "tax": {"taxName": "Tax1", "taxAmount": {"currency": "USD", "amount": -0.97}},
                    },
                }
            ]
        },
    }
    state = walmart.remote_state(decode(order))
    assert (state.status, state.shipped, state.cancelled) == ("shipped", {"1": 1}, {"1": 1})
    assert Decimal(state.refunded_total) == Decimal("13.96")


# --------------------------------------------------------------------------------------- outbound


def test_queue_payloads_become_walmart_requests(shop: Any) -> None:
    """Acknowledge, ship, cancel and refund items of a real order become Walmart's request bodies."""
    order_id = shop.order(Marketplace.WALMART)
    shop.ship(
        order_id, {"A": 2}, carrier=Carrier.FEDEX, tracking_number="123456789012", shipping_class="Next Day"
    )
    shop.cancel(order_id, {"B": 3}, reason=CancelReason.PRICING_ERROR)
    shop.refund(
        order_id,
        reason=RefundReason.NOT_AS_DESCRIBED,
        lines=(RefundRequestLine("A", 1),),
        shipping_amount=Decimal("1.00"),
    )
    payloads = queue_payloads(shop, order_id)
    assert set(payloads) == {"acknowledge", "ship", "cancel", "refund"}

    ship = msgspec.json.decode(walmart.encode(walmart.shipment_request(message("ship", payloads["ship"]))))
    (line,) = ship["orderShipment"]["orderLines"]["orderLine"]
    (status,) = line["orderLineStatuses"]["orderLineStatus"]
    assert line["lineNumber"] == "A"
    assert status["status"] == "Shipped"
    assert status["statusQuantity"] == {"unitOfMeasurement": "EACH", "amount": "2"}
    assert status["trackingInfo"]["carrierName"] == {"carrier": "FedEx"}
    assert status["trackingInfo"]["methodCode"] == "OneDay"
    assert status["trackingInfo"]["trackingNumber"] == "123456789012"
    shipped_at = datetime.fromisoformat(payloads["ship"]["shipped_at"])
    assert status["trackingInfo"]["shipDateTime"] == int(shipped_at.timestamp() * 1000)

    cancel = msgspec.json.decode(
        walmart.encode(walmart.cancellation_request(message("cancel", payloads["cancel"])))
    )
    (line,) = cancel["orderCancellation"]["orderLines"]["orderLine"]
    assert line["orderLineStatuses"]["orderLineStatus"] == [
        {
            "status": "Cancelled",
            "statusQuantity": {"unitOfMeasurement": "EACH", "amount": "3"},
            "cancellationReason": "SELLER_CANCEL_PRICING_ERROR",
        }
    ]

    exact = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal)
    refund = exact.decode(
        walmart.encode(walmart.refund_request("PO-1", message("refund", payloads["refund"])))
    )
    assert refund["orderRefund"]["purchaseOrderId"] == "PO-1"
    (line,) = refund["orderRefund"]["orderLines"]["orderLine"]
    charges = line["refunds"]["refund"][0]["refundCharges"]["refundCharge"]
    assert [c["refundReason"] for c in charges] == ["ItemNotAsAdvertised", "ItemNotAsAdvertised"]
    product, shipping = (c["charge"] for c in charges)
    expected = payloads["refund"]["lines"][0]
    assert product["chargeAmount"] == {"currency": "USD", "amount": -Decimal(expected["item_amount"])}
    assert product["tax"]["taxAmount"]["amount"] == -Decimal(expected["tax_amount"])
    assert (shipping["chargeType"], shipping["chargeAmount"]["amount"]) == ("SHIPPING", Decimal("-1.00"))


def test_refund_without_shipping_sends_no_shipping_charge() -> None:
    """A refund line with no shipping amount carries only the PRODUCT charge."""
    payload = {
        "refund_id": "r-1",
        "reason": "goodwill",
        "currency": "USD",
        "lines": [
            {
                "line_id": "2",
                "quantity": 1,
                "item_amount": "5.00",
                "tax_amount": "0.40",
                "shipping_amount": "0",
            }
        ],
    }
    request = walmart.refund_request("PO-2", message("refund", payload))
    charges = request.order_refund.order_lines.order_line[0].refunds.refund[0].refund_charges.refund_charge
    assert [(c.refund_reason, c.charge.charge_type) for c in charges] == [("Finance -> Goodwill", "PRODUCT")]


# ------------------------------------------------------------------------------------------- maps


WALMART_CANCELLATION_REASONS = {
    "CUSTOMER_REQUESTED_SELLER_TO_CANCEL",
    "SELLER_CANCEL_OUT_OF_STOCK",
    "SELLER_CANCEL_PRICING_ERROR",
    "SELLER_CANCEL_FRAUD_STOP_SHIPMENT",
    "SELLER_CANCEL_ADDRESS_NOT_SERVICEABLE",
}


def test_every_canonical_reason_has_a_walmart_code() -> None:
    """Each canonical cancellation and refund reason maps to a code Walmart documents."""
    assert {walmart.cancellation_reason(r, "seller") for r in CancelReason} <= WALMART_CANCELLATION_REASONS
    assert walmart.cancellation_reason(CancelReason.OUT_OF_STOCK, "seller") == "SELLER_CANCEL_OUT_OF_STOCK"
    assert walmart.cancellation_reason(CancelReason.ADDRESS_UNDELIVERABLE, "seller") == (
        "SELLER_CANCEL_ADDRESS_NOT_SERVICEABLE"
    )
    assert walmart.cancellation_reason(None, "buyer") == "CUSTOMER_REQUESTED_SELLER_TO_CANCEL"
    assert set(walmart.REFUND_REASONS) == set(RefundReason)
    assert walmart.refund_reason(RefundReason.NOT_RECEIVED) == "ItemNotReceivedByCustomer"
    assert walmart.refund_reason(None) == walmart.refund_reason(RefundReason.OTHER)


@pytest.mark.parametrize(
    ("carrier", "expected"),
    [
        (Carrier.UPS, {"carrier": "UPS"}),
        (Carrier.USPS, {"carrier": "USPS"}),
        (Carrier.ONTRAC, {"carrier": "OnTrac"}),
        (Carrier.AMAZON_LOGISTICS, {"otherCarrier": "Amazon Logistics"}),
        (Carrier.CANADA_POST, {"otherCarrier": "Canada Post"}),
        (Carrier.OTHER, {"otherCarrier": "Other"}),
    ],
)
def test_carriers_map_to_walmart_names(carrier: Carrier, expected: dict[str, str]) -> None:
    """Carriers Walmart lists go by its name; the others go in otherCarrier."""
    assert msgspec.json.decode(msgspec.json.encode(walmart.carrier_name(carrier))) == expected


@pytest.mark.parametrize(
    ("shipping_class", "code"),
    [
        ("", "Standard"),
        (None, "Standard"),
        ("Two-Day", "Express"),
        ("overnight", "OneDay"),
        ("gift wrap", "Standard"),
    ],
)
def test_shipping_classes_map_to_method_codes(shipping_class: str | None, code: str) -> None:
    """The ledger's free-text shipping class picks Walmart's method code, Standard by default."""
    assert walmart.method_code(shipping_class) == code


# ----------------------------------------------------------------------------------------- errors


def test_http_answers_are_classified() -> None:
    """429 and 5xx are transient (with Retry-After); another 4xx is permanent with Walmart's error code."""
    body = b'{"errors": {"error": [{"code": "INVALID_REQUEST_CONTENT.GMP_ORDER_API", "description": "bad line"}]}}'
    throttled = classify(429, b"", "12", walmart.read_error)
    assert isinstance(throttled, TransientMarketplaceError)
    assert throttled.retry_after == 12
    unavailable = classify(503, body, None, walmart.read_error)
    assert isinstance(unavailable, TransientMarketplaceError)
    assert unavailable.retry_after is None
    refused = classify(400, body, None, walmart.read_error)
    assert isinstance(refused, PermanentMarketplaceError)
    assert refused.code == "INVALID_REQUEST_CONTENT.GMP_ORDER_API"
    assert "bad line" in refused.message
    assert classify(404, b"not json", None, walmart.read_error).code == "404"  # type: ignore[attr-defined]


def test_retry_after_reads_seconds_and_http_dates() -> None:
    """Retry-After is delta-seconds or an HTTP date; garbage is ignored."""
    now = datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("30", now) == 30
    assert retry_after_seconds("Fri, 20 Nov 2026 10:01:00 GMT", now) == 60
    assert retry_after_seconds("Fri, 20 Nov 2026 09:00:00 GMT", now) == 0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


@pytest.mark.parametrize(
    ("units", "status"),
    [
        ([(2, 0, 0), (1, 0, 0)], "unshipped"),
        ([(2, 0, 2), (1, 0, 1)], "canceled"),
        ([(2, 1, 0), (1, 0, 0)], "partially_shipped"),
        ([(2, 1, 1), (1, 0, 1)], "shipped"),
    ],
)
def test_remote_status_speaks_the_ledgers_statuses(units: list[tuple[int, int, int]], status: str) -> None:
    """The marketplace's unit counts give the status the ledger would derive, so sync check can compare them."""
    assert order_status(units) == status


def test_an_answer_that_does_not_decode_is_transient() -> None:
    """A 2xx body that is not Walmart's shape is worth asking again (the request is deduped), not a crash."""
    decoder = msgspec.json.Decoder(walmart.OrderResponse)
    with pytest.raises(TransientMarketplaceError) as raised:
        decode_response(b'{"order": {"purchaseOrderId": 1}}', decoder, "GET /v3/orders/1")
    assert raised.value.code == "unexpected-response"
    with pytest.raises(TransientMarketplaceError):
        decode_response(b"<html>gateway</html>", decoder, "GET /v3/orders/1")


payload_lines = payload_lines_of(st.integers(1, 9).map(str), 10_000)


@settings(max_examples=60, deadline=None)
@given(
    lines=payload_lines,
    carrier=st.sampled_from(list(Carrier)),
    shipping_class=st.sampled_from(["", "standard", "Express", "next day", "freight", "whatever"]),
    cancel_reason=st.sampled_from([*CancelReason, None]),
    refund_reason=st.sampled_from([*RefundReason, None]),
)
def test_every_request_the_adapter_builds_passes_the_sandbox_schema(
    lines: list[dict[str, Any]],
    carrier: Carrier,
    shipping_class: str,
    cancel_reason: CancelReason | None,
    refund_reason: RefundReason | None,
) -> None:
    """Whatever the payload, Walmart's ship, cancel and refund bodies decode under the sandbox's strict shapes."""
    ship = {
        "carrier": carrier.value,
        "tracking_number": "T1",
        "shipping_class": shipping_class,
        "lines": lines,
    }
    ship["shipped_at"] = "2026-11-20T10:00:00+00:00"
    msgspec.json.decode(
        walmart.encode(walmart.shipment_request(message("ship", ship))), type=sandbox.ShipRequest
    )
    cancel = {"reason": cancel_reason, "requested_by": "seller", "lines": lines}
    msgspec.json.decode(
        walmart.encode(walmart.cancellation_request(message("cancel", cancel))), type=sandbox.CancelRequest
    )
    refund = {"refund_id": "r", "reason": refund_reason, "currency": "USD", "lines": lines}
    body = walmart.refund_request("PO-1", message("refund", refund))
    if body.order_refund.order_lines.order_line:  # all-zero lines send nothing (the adapter refuses it)
        msgspec.json.decode(walmart.encode(body), type=sandbox.RefundRequest)

"""Rakuten's and Jet's pure mappings: their orders into the ledger's import shape, the outbound queue's payloads
into their requests (Rakuten's restock choice, Jet's whole-order cancellation), and the carrier and reason maps."""

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
from ledger.integrations import jet, rakuten
from ledger.integrations.base import BuyerCancelled, CancelledRemotely, PermanentMarketplaceError
from ledger_sandbox import jet as sandbox_jet
from ledger_sandbox import rakuten as sandbox_rakuten

EXACT = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal)


# ------------------------------------------------------------------------------------------ Rakuten


def rakuten_order(**changes: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "orderNumber": "502763-20261120-0000012345",
        "orderProgress": 100,
        "orderDatetime": "2026-11-20T19:00:00+09:00",
        "updateDatetime": "2026-11-20T19:05:00+09:00",
        "paymentDatetime": None,
        "currency": "JPY",
        "orderer": {
            "familyName": "Yamada",
            "firstName": "Taro",
            "emailAddress": "taro@example.jp",
            "zip": "x",
        },
        "shipTo": {
            "familyName": "Yamada",
            "firstName": "Hanako",
            "zipCode": "1000001",
            "prefecture": "Tokyo",
        },
        "items": [
            {
                "itemDetailId": "100000001",
                "manageNumber": "TEA-MATCHA-40",
                "itemName": "Matcha 40 g",
                "units": 3,
                "price": 1200,
                "taxPrice": 288,
                "shippingPrice": 500,
                "pointAmount": 12,
            }
        ],
        "giftFlag": 0,
    }
    order.update(changes)
    return order


def rakuten_decode(order: dict[str, Any]) -> rakuten.RakutenOrder:
    return msgspec.json.decode(msgspec.json.encode(order), type=rakuten.RakutenOrder)


def test_rakuten_order_maps_pending_until_paid() -> None:
    """A Rakuten order imports pending without a payment time, and paid at the time Rakuten reports."""
    remote = rakuten.remote_order(rakuten_decode(rakuten_order()))
    order = remote.order
    assert order.payment_status == PaymentStatus.PENDING
    assert order.paid_at is None
    assert order.purchased_at == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert remote.updated_at == datetime(2026, 11, 20, 10, 5, tzinfo=UTC)
    assert (order.currency, order.buyer.name, order.buyer.email) == ("JPY", "Taro Yamada", "taro@example.jp")
    (line,) = order.lines
    assert (line.line_id, line.sku, line.quantity) == ("100000001", "TEA-MATCHA-40", 3)
    assert (line.unit_price, line.tax, line.shipping) == (Decimal(1200), Decimal(288), Decimal(500))
    assert not remote.needs_acknowledgement
    paid = rakuten.imported_order(rakuten_decode(rakuten_order(paymentDatetime="2026-11-20T10:30:00Z")))
    assert (paid.payment_status, paid.paid_at) == (
        PaymentStatus.PAID,
        datetime(2026, 11, 20, 10, 30, tzinfo=UTC),
    )


def test_rakuten_mapped_order_is_accepted_by_the_ledger(shop: Any) -> None:
    """The mapped yen order imports into the ledger (whole yen amounts)."""
    order = rakuten.imported_order(rakuten_decode(rakuten_order()))
    assert shop.ledger.import_order(shop.ctx, shop.account(Marketplace.RAKUTEN), order).created


def test_rakuten_cancel_request_maps_until_shipped() -> None:
    """A buyer's cancellation request maps on an open order, as a fact not applied, and not once it shipped."""
    request = {
        "requestDatetime": "2026-11-20T11:00:00Z",
        "items": [{"itemDetailId": "100000001", "units": 1}],
    }
    asked = rakuten_decode(rakuten_order(cancelRequest=request))
    expected = BuyerCancelled(
        datetime(2026, 11, 20, 11, 0, tzinfo=UTC), (LineQuantity("100000001", 1),), False
    )
    assert rakuten.cancel_request(asked) == expected
    assert rakuten.remote_order(asked).facts == (expected,)
    shipped = rakuten_decode(rakuten_order(cancelRequest=request, orderProgress=500))
    assert rakuten.cancel_request(shipped) is None


def test_rakuten_bad_time_is_a_permanent_error() -> None:
    """An order time that is not RFC 3339 cannot be mapped."""
    with pytest.raises(PermanentMarketplaceError):
        rakuten.imported_order(rakuten_decode(rakuten_order(orderDatetime="20/11/2026")))


def test_rakuten_requests_from_queue_payloads(shop: Any) -> None:
    """Ship, cancel (with the restock choice Rakuten takes) and refund items become Rakuten's requests."""
    order_id = shop.order(Marketplace.RAKUTEN)
    shop.ship(order_id, {"A": 2}, carrier=Carrier.DHL, tracking_number="1234567890")
    shop.cancel(order_id, {"B": 1}, reason=CancelReason.BUYER_CANCELLED)
    shop.refund(order_id, reason=RefundReason.DAMAGED, lines=(RefundRequestLine("A", 1),))
    payloads = queue_payloads(shop, order_id)

    ship = EXACT.decode(rakuten.encode(rakuten.shipment_request("key-1", message("ship", payloads["ship"]))))
    assert ship["requestId"] == "key-1"
    assert (ship["deliveryCompany"], ship["shippingNumber"]) == ("1018", "1234567890")
    assert "deliveryCompanyName" not in ship
    assert ship["items"] == [{"itemDetailId": "A", "units": 2}]
    assert datetime.fromisoformat(ship["shippingDatetime"]) == datetime.fromisoformat(
        payloads["ship"]["shipped_at"]
    )

    # Rakuten puts cancelled units back into its own stock: the queue asks for it, and it is sent.
    assert payloads["cancel"]["restock"] is True
    cancel = EXACT.decode(
        rakuten.encode(rakuten.cancellation_request("key-2", message("cancel", payloads["cancel"])))
    )
    assert cancel == {
        "requestId": "key-2",
        "cancelReason": "BUYER_REQUEST",
        "inventoryRestoreType": 1,
        "items": [{"itemDetailId": "B", "units": 1}],
    }
    no_restock = rakuten.cancellation_request(
        "key-3", message("cancel", {**payloads["cancel"], "restock": False})
    )
    assert no_restock.inventory_restore_type == 0

    refund = EXACT.decode(
        rakuten.encode(rakuten.refund_request("key-4", message("refund", payloads["refund"])))
    )
    line = payloads["refund"]["lines"][0]
    assert refund["refundReason"] == "DAMAGED"
    assert refund["items"] == [
        {
            "itemDetailId": "A",
            "units": 1,
            "itemAmount": Decimal(line["item_amount"]),
            "taxAmount": Decimal(line["tax_amount"]),
            "shippingAmount": Decimal(line["shipping_amount"]),
        }
    ]


def test_rakuten_maps() -> None:
    """Every canonical reason has a Rakuten code; unknown carriers go as 1000 with their name."""
    assert set(rakuten.CANCEL_REASONS) == set(CancelReason)
    assert set(rakuten.REFUND_REASONS) == set(RefundReason)
    assert rakuten.cancel_reason(None, "buyer") == "BUYER_REQUEST"
    assert rakuten.cancel_reason(None, "seller") == "OTHER"
    assert rakuten.delivery_company(Carrier.UPS) == ("1020", None)
    assert rakuten.delivery_company(Carrier.CANADA_POST) == ("1000", "Canada Post")
    assert rakuten.delivery_company("pigeon") == ("1000", "pigeon")


def test_rakuten_authorization_header() -> None:
    """The ESA header is base64 of serviceSecret:licenseKey."""
    assert rakuten.authorization({"service_secret": "SP1", "license_key": "SL2"}) == "ESA U1AxOlNMMg=="


def test_rakuten_errors_read_message_model_list() -> None:
    """The first ERROR message's code and text make the error."""
    body = (
        b'{"MessageModelList": [{"messageType": "INFO", "messageCode": "I1", "message": "fine"},'
        b'{"messageType": "ERROR", "messageCode": "ORDER_EXT_API_UPDATE_ERROR_002", "message": "too many units"}]}'
    )
    assert rakuten.read_error(body) == ("ORDER_EXT_API_UPDATE_ERROR_002", "too many units")
    assert rakuten.read_error(b"<html>") is None


# ---------------------------------------------------------------------------------------------- Jet


def jet_order(**changes: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "merchant_order_id": "3a3f5cc1196911f3495d88271f1431ad",
        "reference_order_id": "101447810393",
        "status": "ready",
        "order_placed_date": "2026-11-20T10:00:00.000Z",
        "order_last_update": "2026-11-20T10:10:00.000Z",
        "hash_email": "a1b2c3@customer.jet.com",
        "buyer": {"name": "Ada Lovelace", "phone_number": "2065550100"},
        "shipping_to": {
            "recipient": {"name": "Ada Lovelace", "phone_number": "2065550100"},
            "address": {"address1": "1 Pine St", "city": "Seattle", "state": "WA", "zip_code": "98109"},
        },
        "order_items": [
            {
                "order_item_id": "b2c4d6",
                "merchant_sku": "MUG-BLK-12",
                "product_title": "Black mug",
                "request_order_quantity": 2,
                "request_order_cancel_qty": 0,
                "item_price": {
                    "base_price": 12.99,
                    "item_tax": 2.08,
                    "item_shipping_cost": 4.99,
                    "item_shipping_tax": 0.40,
                },
                "item_fees": 0.5,
            }
        ],
        "jet_request_directed_cancel": "false",
    }
    order.update(changes)
    return order


def jet_decode(order: dict[str, Any]) -> jet.JetOrder:
    return msgspec.json.decode(msgspec.json.encode(order), type=jet.JetOrder)


def test_jet_order_maps_to_the_import_shape() -> None:
    """A Jet order imports paid, with the per-unit base price and shipping tax folded into the line's tax."""
    remote = jet.remote_order(jet_decode(jet_order()))
    order = remote.order
    assert (order.marketplace_order_id, order.currency) == ("3a3f5cc1196911f3495d88271f1431ad", "USD")
    assert (order.payment_status, order.paid_at) == (
        PaymentStatus.PAID,
        datetime(2026, 11, 20, 10, 0, tzinfo=UTC),
    )
    (line,) = order.lines
    assert (line.line_id, line.sku, line.quantity) == ("b2c4d6", "MUG-BLK-12", 2)
    assert (line.unit_price, line.tax, line.shipping) == (Decimal("12.99"), Decimal("2.48"), Decimal("4.99"))
    assert remote.updated_at == datetime(2026, 11, 20, 10, 10, tzinfo=UTC)
    assert remote.facts == ()
    assert order.ship_to is not None
    assert (order.ship_to.postal_code, order.ship_to.country) == ("98109", "US")


def test_jet_mapped_order_is_accepted_by_the_ledger(shop: Any) -> None:
    """The mapped Jet order imports into the ledger."""
    order = jet.imported_order(jet_decode(jet_order()))
    assert shop.ledger.import_order(shop.ctx, shop.account(Marketplace.JET), order).created


def test_jet_cancel_request_is_of_the_whole_order() -> None:
    """A cancel quantity on any item is a request for the whole order (a fact not applied); none once complete."""
    order = jet_order()
    order["order_items"][0]["request_order_cancel_qty"] = 1
    request = BuyerCancelled(datetime(2026, 11, 20, 10, 10, tzinfo=UTC), None, applied=False)
    assert jet.cancel_request(jet_decode(order)) == request
    assert jet.remote_order(jet_decode(order)).facts == (request,)
    assert jet.cancel_request(jet_decode({**order, "status": "complete"})) is None


def test_jet_requests_from_queue_payloads(shop: Any) -> None:
    """Ship and refund items become Jet's requests keyed by the idempotency key; a cancel names no units."""
    order_id = shop.order(Marketplace.JET)
    shop.ship(order_id, {"A": 1}, carrier=Carrier.AMAZON_LOGISTICS, tracking_number="TBA123456789000")
    shop.refund(order_id, reason=RefundReason.CUSTOMER_RETURN, lines=(RefundRequestLine("A", 1),))
    payloads = queue_payloads(shop, order_id)

    ship = EXACT.decode(jet.encode(jet.shipment_request("key-1", message("ship", payloads["ship"]))))
    (shipment,) = ship["shipments"]
    assert shipment["alt_shipment_id"] == "key-1"
    assert (shipment["carrier"], shipment["shipment_tracking_number"]) == ("Other", "TBA123456789000")
    assert shipment["shipment_items"] == [
        {"order_item_id": "A", "merchant_sku": "SKU-A", "response_shipment_sku_quantity": 1}
    ]

    refund = EXACT.decode(jet.encode(jet.refund_request(message("refund", payloads["refund"]))))
    (item,) = refund["items"]
    line = payloads["refund"]["lines"][0]
    assert (item["order_item_id"], item["order_return_refund_qty"]) == ("A", 1)
    assert item["refund_reason"] == "No longer want this item"
    assert item["refund_amount"] == {
        "principal": Decimal(line["item_amount"]),
        "tax": Decimal(line["tax_amount"]),
        "shipping_cost": Decimal(line["shipping_amount"]),
        "shipping_tax": Decimal(0),
    }

    cancel_order = shop.order(Marketplace.JET)
    shop.cancel(cancel_order, reason=CancelReason.ADDRESS_UNDELIVERABLE)
    cancel = msgspec.json.decode(
        jet.encode(
            jet.cancellation_request("key-2", message("cancel", queue_payloads(shop, cancel_order)["cancel"]))
        )
    )
    assert cancel == {"alt_cancel_id": "key-2", "cancel_reason": "Undeliverable Address"}


def test_jet_maps() -> None:
    """Every canonical reason has a Jet code; carriers off Jet's list go as Other."""
    assert set(jet.CANCEL_REASONS) == set(CancelReason)
    assert set(jet.REFUND_REASONS) == set(RefundReason)
    assert jet.carrier_name(Carrier.FEDEX) == "FedEx"
    assert jet.carrier_name(Carrier.ROYAL_MAIL) == "Other"
    assert jet.cancel_reason(None, "buyer") == "Customer Requested"
    assert jet.read_error(b'{"errors": ["order not found"], "error_code": "NotFound"}') == (
        "NotFound",
        "order not found",
    )


payload_lines = payload_lines_of(st.text("abc0123456789", min_size=1, max_size=10), 100_000)
requests = {
    "lines": payload_lines,
    "carrier": st.sampled_from(list(Carrier)),
    "cancel_reason": st.sampled_from([*CancelReason, None]),
    "refund_reason": st.sampled_from([*RefundReason, None]),
    "restock": st.booleans(),
}


@settings(max_examples=60, deadline=None)
@given(**requests)
def test_every_rakuten_and_jet_request_passes_the_sandbox_schema(
    lines: list[dict[str, Any]],
    carrier: Carrier,
    cancel_reason: CancelReason | None,
    refund_reason: RefundReason | None,
    restock: bool,
) -> None:
    """Whatever the payload, the Rakuten and Jet bodies decode under the sandbox's strict shapes."""
    ship = {"carrier": carrier.value, "tracking_number": "T1", "shipped_at": "2026-11-20T10:00:00+00:00"}
    ship["lines"] = lines
    cancel = {"reason": cancel_reason, "requested_by": "seller", "restock": restock, "lines": lines}
    refund = {"refund_id": "r", "reason": refund_reason, "currency": "USD", "lines": lines}
    for encoded, shape in (
        (
            rakuten.encode(rakuten.shipment_request("k", message("ship", ship))),
            sandbox_rakuten.ShipmentRequest,
        ),
        (
            rakuten.encode(rakuten.cancellation_request("k", message("cancel", cancel))),
            sandbox_rakuten.CancellationRequest,
        ),
        (
            rakuten.encode(rakuten.refund_request("k", message("refund", refund))),
            sandbox_rakuten.RefundRequest,
        ),
        (jet.encode(jet.shipment_request("k", message("ship", ship))), sandbox_jet.ShippedRequest),
        (jet.encode(jet.cancellation_request("k", message("cancel", cancel))), sandbox_jet.CancelRequest),
        (jet.encode(jet.refund_request(message("refund", refund))), sandbox_jet.RefundRequest),
    ):
        msgspec.json.decode(encoded, type=shape)


def test_rakutens_own_cancellation_is_a_fact_and_a_shipped_order_is_not() -> None:
    """`orderProgress` 900 with nothing shipped is Rakuten's cancellation of the order (a CancelledRemotely fact,
    reason `other`: its order view says none); cancelled units beside shipped ones are not."""
    items = rakuten_order()["items"]
    cancelled = rakuten_decode(rakuten_order(orderProgress=900, items=[items[0] | {"cancelledUnits": 3}]))
    at = datetime(2026, 11, 20, 10, 5, tzinfo=UTC)
    assert rakuten.remote_order(cancelled).facts == (CancelledRemotely(cancelled_at=at),)
    mixed = items[0] | {"cancelledUnits": 1, "shippedUnits": 2}
    assert (
        rakuten.cancelled_by_rakuten(rakuten_decode(rakuten_order(orderProgress=500, items=[mixed]))) is None
    )
    assert rakuten.cancelled_by_rakuten(rakuten_decode(rakuten_order())) is None


def test_jets_own_cancellation_is_every_item_cancelled_not_its_complete_status() -> None:
    """Jet's `complete` means shipped or cancelled: only every item's `cancelled_quantity` makes the fact."""
    item = jet_order()["order_items"][0]
    cancelled = jet_decode(jet_order(status="complete", order_items=[item | {"cancelled_quantity": 2}]))
    at = datetime(2026, 11, 20, 10, 10, tzinfo=UTC)
    assert jet.remote_order(cancelled).facts == (CancelledRemotely(cancelled_at=at),)
    shipped = jet_decode(jet_order(status="complete", order_items=[item | {"shipped_quantity": 2}]))
    assert jet.cancelled_by_jet(shipped) is None

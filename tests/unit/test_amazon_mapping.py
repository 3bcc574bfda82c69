"""Pure mappings of the Amazon adapter: orders in, requests and feeds out, carriers and reason codes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from xml.etree import ElementTree

import msgspec
import pytest
from mapping_support import sandbox_order

from ledger.aggregates.values import CancelReason, Carrier, PaymentStatus, RefundReason
from ledger.integrations import amazon, outbox
from ledger.integrations.base import BuyerCancelled, PaymentCleared, SyncRequest
from ledger_sandbox import amazon as amazon_sandbox
from ledger_sandbox.validation import spec

ORDER = {
    "AmazonOrderId": "112-1234567-7654321",
    "PurchaseDate": "2026-03-01T10:00:00Z",
    "LastUpdateDate": "2026-03-01T10:05:00.250Z",
    "OrderStatus": "Unshipped",
    "OrderTotal": {"CurrencyCode": "USD", "Amount": "60.97"},
    "ShippingAddress": {
        "Name": "Ada Lovelace",
        "AddressLine1": "1 Main St",
        "City": "Seattle",
        "PostalCode": "98109",
    },
    "BuyerInfo": {"BuyerEmail": "ada@example.com", "BuyerName": "Ada Lovelace"},
    "SomethingNew": {"Amazon": "adds fields"},
}
ITEMS = [
    {
        "OrderItemId": "11111",
        "SellerSKU": "MUG-BLK-12",
        "Title": "Mug",
        "QuantityOrdered": 2,
        "ItemPrice": {"CurrencyCode": "USD", "Amount": "25.98"},
        "ItemTax": {"CurrencyCode": "USD", "Amount": "2.08"},
        "ShippingPrice": {"CurrencyCode": "USD", "Amount": "4.99"},
        "ShippingTax": {"CurrencyCode": "USD", "Amount": "0.40"},
        "ASIN": "B000000001",
    }
]


def decode_order(**changes: Any) -> amazon.AmazonOrder:
    return msgspec.convert({**ORDER, **changes}, amazon.AmazonOrder)


def decode_items(items: list[dict[str, Any]] = ITEMS) -> list[amazon.AmazonOrderItem]:
    return msgspec.convert(items, list[amazon.AmazonOrderItem])


def sync(action: str, payload: dict[str, Any], key: str | None = None) -> SyncRequest:
    return SyncRequest(
        item_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        marketplace_order_id=ORDER["AmazonOrderId"],  # type: ignore[arg-type]
        action=action,
        reference=str(uuid.uuid4()),
        idempotency_key=key or str(uuid.uuid4()),
        message=outbox.decode(action, {"marketplace_order_id": ORDER["AmazonOrderId"], **payload}),
    )


def test_an_order_maps_to_the_import_shape() -> None:
    """Unit price is ItemPrice over the quantity; both taxes add up; unknown fields are ignored."""
    remote = amazon.to_remote_order(decode_order(), decode_items())
    order = remote.order
    assert order.marketplace_order_id == "112-1234567-7654321"
    assert order.currency == "USD"
    assert order.payment_status == PaymentStatus.PAID
    assert order.purchased_at == datetime(2026, 3, 1, 10, tzinfo=UTC)
    line = order.lines[0]
    assert (line.line_id, line.sku, line.quantity) == ("11111", "MUG-BLK-12", 2)
    assert (line.unit_price, line.tax, line.shipping) == (Decimal("12.99"), Decimal("2.48"), Decimal("4.99"))
    assert line.total == Decimal("33.45")
    assert order.ship_to is not None
    assert order.ship_to.city == "Seattle"
    assert order.buyer.email == "ada@example.com"
    assert remote.updated_at == datetime(2026, 3, 1, 10, 5, 0, 250000, tzinfo=UTC)
    assert remote.facts == (PaymentCleared(paid_at=order.purchased_at),)
    assert remote.needs_acknowledgement


def test_a_pending_order_is_unpaid_and_not_acknowledged() -> None:
    """Pending: payment pending, no payment fact, nothing to acknowledge yet."""
    remote = amazon.to_remote_order(decode_order(OrderStatus="Pending"), decode_items())
    assert remote.order.payment_status == PaymentStatus.PENDING
    assert remote.order.paid_at is None
    assert remote.facts == ()
    assert not remote.needs_acknowledgement


def test_a_buyer_cancellation_amazon_applied_is_a_fact() -> None:
    """Canceled with BuyerRequestedCancel: BuyerCancelled; open with it: the buyer's request; a seller's
    cancellation is no fact (it would echo)."""
    flagged = [
        {**ITEMS[0], "BuyerRequestedCancel": {"IsBuyerRequestedCancel": "true", "BuyerCancelReason": "x"}}
    ]
    by_buyer = amazon.to_remote_order(decode_order(OrderStatus="Canceled"), decode_items(flagged))
    by_seller = amazon.to_remote_order(decode_order(OrderStatus="Canceled"), decode_items())
    requested = amazon.to_remote_order(decode_order(), decode_items(flagged))
    assert [f for f in by_buyer.facts if isinstance(f, BuyerCancelled)] == [
        BuyerCancelled(requested_at=by_buyer.updated_at)
    ]
    assert not any(isinstance(f, BuyerCancelled) for f in by_seller.facts)
    # Past the 30 minutes, on an open order: the buyer's request, for the seller to answer (case 6).
    assert [f for f in requested.facts if isinstance(f, BuyerCancelled)] == [
        BuyerCancelled(requested_at=requested.updated_at, applied=False)
    ]


def test_confirm_shipment_validates_against_amazons_model() -> None:
    """The confirmShipment body is a valid ConfirmShipmentRequest with a numeric packageReferenceId."""
    request = sync(
        "ship",
        {
            "carrier": "fedex",
            "tracking_number": "7946",
            "shipping_class": "Ground",
            "shipped_at": "2026-03-02T09:30:00+00:00",
            "lines": [{"line_id": "11111", "sku": "MUG-BLK-12", "quantity": 2}],
        },
    )
    body = amazon.confirm_shipment_body(request.message, request.idempotency_key, "ATVPDKIKX0DER")
    assert spec("amazon/ordersV0.json").body_errors("ConfirmShipmentRequest", body) == []
    detail = body["packageDetail"]
    assert detail["carrierCode"] == "FedEx"
    assert detail["shipDate"] == "2026-03-02T09:30:00.000Z"
    assert detail["orderItems"] == [{"orderItemId": "11111", "quantity": 2}]
    assert detail["packageReferenceId"] == amazon.package_reference_id(request.idempotency_key)


def test_package_reference_ids_are_positive_numbers_stable_per_key() -> None:
    """The same key gives the same number; other keys give others; never zero or negative."""
    keys = [str(uuid.uuid4()) for _ in range(200)] + ["not-a-uuid", ""]
    references = [amazon.package_reference_id(k) for k in keys]
    assert all(r.isdigit() and int(r) > 0 for r in references)
    assert len(set(references)) == len(references)
    assert amazon.package_reference_id(keys[0]) == references[0]


def test_an_unmapped_carrier_is_named() -> None:
    """A carrier Amazon has no code for goes as Other with its name."""
    request = sync(
        "ship",
        {"carrier": "other", "tracking_number": "X1", "shipped_at": "2026-03-02T09:30:00+00:00", "lines": []},
    )
    detail = amazon.confirm_shipment_body(request.message, request.idempotency_key, "ATVPDKIKX0DER")[
        "packageDetail"
    ]
    assert (detail["carrierCode"], detail["carrierName"]) == ("Other", "Other")
    assert "shippingMethod" not in detail


@pytest.mark.parametrize("carrier", list(Carrier))
def test_every_carrier_has_an_amazon_code(carrier: Carrier) -> None:
    """Each of the ledger's carriers maps to a carrier code."""
    assert amazon.carrier_code(carrier) in amazon.CARRIERS.values()
    assert amazon.CARRIERS[carrier]


@pytest.mark.parametrize("reason", list(CancelReason))
def test_every_cancel_reason_is_an_amazon_cancel_reason(reason: CancelReason) -> None:
    """Each canonical cancellation reason maps to one of Amazon's CancelReason values."""
    assert amazon.cancel_reason(reason) in amazon_sandbox.CANCEL_REASONS


@pytest.mark.parametrize("reason", list(RefundReason))
def test_every_refund_reason_is_an_amazon_adjustment_reason(reason: RefundReason) -> None:
    """Each canonical refund reason maps to one of Amazon's AdjustmentReason values."""
    assert amazon.adjustment_reason(reason) in amazon_sandbox.ADJUSTMENT_REASONS


def test_the_cancellation_feed_names_each_item_reason_and_key() -> None:
    """An OrderAcknowledgement with StatusCode Failure, the key as MerchantOrderID, one Item per line."""
    request = sync(
        "cancel",
        {
            "reason": "address_undeliverable",
            "lines": [{"line_id": "11111", "sku": "MUG-BLK-12", "quantity": 1}],
        },
        key="k-1",
    )
    root = ElementTree.fromstring(
        amazon.cancellation_feed(request.message, request.idempotency_key, "A1SELLER")
    )
    assert root.findtext("MessageType") == "OrderAcknowledgement"
    assert root.findtext("Header/MerchantIdentifier") == "A1SELLER"
    ack = root.find("Message/OrderAcknowledgement")
    assert ack is not None
    assert (ack.findtext("AmazonOrderID"), ack.findtext("MerchantOrderID"), ack.findtext("StatusCode")) == (
        "112-1234567-7654321",
        "k-1",
        "Failure",
    )
    items = ack.findall("Item")
    assert [
        (i.findtext("AmazonOrderItemCode"), i.findtext("CancelReason"), i.findtext("Quantity")) for i in items
    ] == [("11111", "ShippingAddressUndeliverable", "1")]
    assert amazon_sandbox._envelope_problems(root, "OrderAcknowledgement") == []


def test_the_adjustment_feed_refunds_components_under_one_id_per_line() -> None:
    """An OrderAdjustment: MerchantAdjustmentItemID per line, Principal, Shipping and Tax components."""
    request = sync(
        "refund",
        {
            "reason": "damaged",
            "currency": "USD",
            "lines": [
                {
                    "line_id": "11111",
                    "quantity": 1,
                    "item_amount": "12.99",
                    "tax_amount": "1.04",
                    "shipping_amount": "4.99",
                },
                {
                    "line_id": "22222",
                    "quantity": 1,
                    "item_amount": "5.00",
                    "tax_amount": "0",
                    "shipping_amount": "0",
                },
            ],
        },
        key="k-2",
    )
    root = ElementTree.fromstring(
        amazon.adjustment_feed(request.message, request.idempotency_key, "A1SELLER")
    )
    items = root.findall("Message/OrderAdjustment/AdjustedItem")
    assert [i.findtext("MerchantAdjustmentItemID") for i in items] == ["k-2:1", "k-2:2"]
    assert [i.findtext("AdjustmentReason") for i in items] == ["CustomerReturn", "CustomerReturn"]
    components = [
        (c.findtext("Type"), c.find("Amount").get("currency"), c.findtext("Amount"))  # type: ignore[union-attr]
        for c in items[0].findall("ItemPriceAdjustments/Component")
    ]
    assert components == [("Principal", "USD", "12.99"), ("Shipping", "USD", "4.99"), ("Tax", "USD", "1.04")]
    assert [c.findtext("Type") for c in items[1].findall("ItemPriceAdjustments/Component")] == ["Principal"]
    assert amazon_sandbox._envelope_problems(root, "OrderAdjustment") == []


def test_a_processing_report_yields_its_errors() -> None:
    """Errors in a processing report come out as (code, description); a clean report has none."""
    report = b"""<AmazonEnvelope><Message><ProcessingReport>
      <Result><MessageID>1</MessageID><ResultCode>Error</ResultCode><ResultMessageCode>18042</ResultMessageCode>
      <ResultDescription>not shipped</ResultDescription></Result>
      <Result><MessageID>1</MessageID><ResultCode>Warning</ResultCode><ResultMessageCode>1</ResultMessageCode></Result>
    </ProcessingReport></Message></AmazonEnvelope>"""
    assert amazon.report_errors(report) == [("18042", "not shipped")]
    assert amazon.report_errors(b"<AmazonEnvelope/>") == []


def test_amazon_errors_are_read_from_its_error_list() -> None:
    """`{"errors": [...]}` gives (code, message); anything else gives None."""
    assert amazon.read_error(b'{"errors": [{"code": "InvalidInput", "message": "bad"}]}') == (
        "InvalidInput",
        "bad",
    )
    assert amazon.read_error(b"<html>") is None
    assert amazon.read_error(b'{"errors": []}') is None


def test_refund_events_add_up_to_the_refunded_total() -> None:
    """Finances refund events are negative charge adjustments; their sum is the refunded total."""
    body = b"""{"payload": {"FinancialEvents": {"RefundEventList": [
        {"ShipmentItemAdjustmentList": [{"ItemChargeAdjustmentList": [
            {"ChargeType": "Principal", "ChargeAmount": {"CurrencyCode": "USD", "CurrencyAmount": -12.99}},
            {"ChargeType": "Tax", "ChargeAmount": {"CurrencyCode": "USD", "CurrencyAmount": -1.04}}]}]},
        {"ShipmentItemAdjustmentList": [{"ItemChargeAdjustmentList": [
            {"ChargeType": "ShippingCharge", "ChargeAmount": {"CurrencyCode": "USD", "CurrencyAmount": -4.99}}]}]}
    ], "ShipmentEventList": []}}}"""
    events = msgspec.json.decode(body, type=amazon.ListFinancialEventsResponse)
    assert amazon.refunded_total(events) == Decimal("19.02")


def test_latest_ship_date_is_the_orders_ship_by() -> None:
    """`LatestShipDate` (seller-fulfilled orders) is the order's ship-by date; without it there is none; the
    sandbox's order carries one three days after purchase."""
    dated = amazon.to_remote_order(decode_order(LatestShipDate="2026-03-04T06:59:59Z"), decode_items())
    assert dated.order.ship_by == datetime(2026, 3, 4, 6, 59, 59, tzinfo=UTC)
    assert amazon.to_remote_order(decode_order(), decode_items()).order.ship_by is None
    rendered = amazon_sandbox.render_order(sandbox_order("amazon", datetime(2026, 3, 1, 10, tzinfo=UTC)))
    mapped = amazon.to_remote_order(msgspec.convert(rendered, amazon.AmazonOrder), decode_items())
    assert mapped.order.ship_by == mapped.order.purchased_at + timedelta(days=3)

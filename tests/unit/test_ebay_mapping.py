"""Pure mappings of the eBay adapter: orders and facts in, requests out, carriers, reasons and outcomes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from mapping_support import sandbox_order

from ledger.aggregates.values import CancelReason, Carrier, DisputeOutcome, PaymentStatus, RefundReason
from ledger.integrations import ebay, outbox
from ledger.integrations.base import (
    BuyerCancelled,
    DisputeClosedRemotely,
    DisputeOpenedRemotely,
    PaymentCleared,
    SyncRequest,
)
from ledger_sandbox import ebay as ebay_sandbox
from ledger_sandbox.validation import spec

SPEC = "ebay/sell_fulfillment_v1_oas3.json"
ORDER: dict[str, Any] = {
    "orderId": "12-34567-89012",
    "creationDate": "2026-03-01T10:00:00.000Z",
    "lastModifiedDate": "2026-03-01T12:00:00.000Z",
    "orderPaymentStatus": "PAID",
    "orderFulfillmentStatus": "NOT_STARTED",
    "buyer": {"username": "grace_h"},
    "pricingSummary": {"total": {"value": "47.68", "currency": "USD"}},
    "paymentSummary": {"payments": [{"paymentStatus": "PAID", "paymentDate": "2026-03-01T10:01:00.000Z"}]},
    "fulfillmentStartInstructions": [
        {
            "shippingStep": {
                "shipTo": {
                    "fullName": "Grace Hopper",
                    "email": "grace@example.com",
                    "contactAddress": {"addressLine1": "2 Oak St", "city": "Austin", "countryCode": "US"},
                    "primaryPhone": {"phoneNumber": "+15125550100"},
                }
            }
        }
    ],
    "lineItems": [
        {
            "lineItemId": "10001",
            "sku": "USB-C-2M",
            "title": "Cable",
            "quantity": 3,
            "lineItemCost": {"value": "29.85", "currency": "USD"},
            "deliveryCost": {"shippingCost": {"value": "4.99", "currency": "USD"}},
            "taxes": [{"amount": {"value": "2.39", "currency": "USD"}, "taxType": "STATE_SALES_TAX"}],
            "brandNewField": True,
        }
    ],
}


def decode(**changes: Any) -> ebay.EbayOrder:
    return msgspec.convert({**ORDER, **changes}, ebay.EbayOrder)


def sync(action: str, payload: dict[str, Any]) -> SyncRequest:
    return SyncRequest(
        item_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        marketplace_order_id=ORDER["orderId"],
        action=action,
        reference=str(uuid.uuid4()),
        idempotency_key=str(uuid.uuid4()),
        message=outbox.decode(action, {"marketplace_order_id": ORDER["orderId"], **payload}),
    )


def test_an_order_maps_to_the_import_shape() -> None:
    """lineItemCost is for the whole quantity; taxes add up; the buyer and address come from shipTo."""
    remote = ebay.to_remote_order(decode())
    order = remote.order
    assert (order.marketplace_order_id, order.currency, order.payment_status) == (
        "12-34567-89012",
        "USD",
        PaymentStatus.PAID,
    )
    line = order.lines[0]
    assert (line.line_id, line.sku, line.quantity) == ("10001", "USB-C-2M", 3)
    assert (line.unit_price, line.tax, line.shipping) == (Decimal("9.95"), Decimal("2.39"), Decimal("4.99"))
    assert (order.buyer.name, order.buyer.email) == ("Grace Hopper", "grace@example.com")
    assert order.ship_to is not None
    assert (order.ship_to.city, order.ship_to.phone) == ("Austin", "+15125550100")
    paid_at = datetime(2026, 3, 1, 10, 1, tzinfo=UTC)
    assert order.paid_at == paid_at
    assert remote.facts == (PaymentCleared(paid_at=paid_at),)


def test_an_unpaid_order_has_no_payment() -> None:
    """orderPaymentStatus PENDING: payment pending and no fact."""
    remote = ebay.to_remote_order(decode(orderPaymentStatus="PENDING", paymentSummary={"payments": []}))
    assert remote.order.payment_status == PaymentStatus.PENDING
    assert remote.order.paid_at is None
    assert remote.facts == ()


def test_cancel_requests_become_facts() -> None:
    """A buyer's completed cancel: BuyerCancelled; the seller's answered requests: the dispute's outcome."""
    requests = [
        {"cancelRequestId": "B1", "cancelInitiator": "BUYER", "cancelRequestState": "COMPLETED",
         "cancelRequestedDate": "2026-03-01T10:10:00.000Z"},
        {"cancelRequestId": "5100000001", "cancelInitiator": "SELLER", "cancelRequestState": "COMPLETED",
         "cancelCompletedDate": "2026-03-02T10:00:00.000Z"},
        {"cancelRequestId": "5100000002", "cancelInitiator": "SELLER", "cancelRequestState": "REJECTED"},
        {"cancelRequestId": "5100000003", "cancelInitiator": "SELLER", "cancelRequestState": "REQUESTED"},
    ]  # fmt: skip
    facts = ebay.to_remote_order(
        decode(cancelStatus={"cancelState": "CANCELED", "cancelRequests": requests})
    ).facts
    assert BuyerCancelled(requested_at=datetime(2026, 3, 1, 10, 10, tzinfo=UTC)) in facts
    closed = [(f.marketplace_dispute_id, f.outcome) for f in facts if isinstance(f, DisputeClosedRemotely)]
    assert closed == [("5100000001", DisputeOutcome.ACCEPTED), ("5100000002", DisputeOutcome.REJECTED)]


def test_payment_disputes_become_opened_and_closed_facts() -> None:
    """An open dispute: opened; a closed one: opened and closed with eBay's outcome."""
    summaries = msgspec.convert(
        [
            {"paymentDisputeId": "D1", "paymentDisputeStatus": "ACTION_NEEDED", "reason": "ITEM_NOT_RECEIVED",
             "openDate": "2026-03-03T00:00:00.000Z"},
            {"paymentDisputeId": "D2", "paymentDisputeStatus": "CLOSED", "reason": "FRAUD",
             "openDate": "2026-03-03T00:00:00.000Z", "closedDate": "2026-03-09T00:00:00.000Z"},
        ],
        list[ebay.PaymentDisputeSummary],
    )  # fmt: skip
    outcome = msgspec.convert(
        {"paymentDisputeId": "D2", "resolution": {"reasonForClosure": "SELLER_WON"}}, ebay.PaymentDispute
    )
    facts = ebay.to_remote_order(decode(), summaries, {"D2": outcome}).facts
    assert [(f.marketplace_dispute_id, f.reason) for f in facts if isinstance(f, DisputeOpenedRemotely)] == [
        ("D1", "ITEM_NOT_RECEIVED"),
        ("D2", "FRAUD"),
    ]
    assert [f for f in facts if isinstance(f, DisputeClosedRemotely)] == [
        DisputeClosedRemotely("D2", DisputeOutcome.REJECTED, datetime(2026, 3, 9, tzinfo=UTC))
    ]


@pytest.mark.parametrize(
    ("closure", "outcome"),
    [
        ("SELLER_LOST", DisputeOutcome.ACCEPTED),
        ("SELLER_ACCEPT", DisputeOutcome.ACCEPTED),
        ("SELLER_WON", DisputeOutcome.REJECTED),
        (None, DisputeOutcome.WITHDRAWN),
    ],
)
def test_dispute_outcomes(closure: str | None, outcome: DisputeOutcome) -> None:
    """eBay's OutcomeEnum as the ledger's outcome of a buyer's claim."""
    assert ebay.dispute_outcome(closure) is outcome


def test_a_fulfillment_request_validates_against_ebays_spec() -> None:
    """createShippingFulfillment's body is a valid ShippingFulfillmentDetails (no unknown fields)."""
    request = sync(
        "ship",
        {
            "carrier": "royal_mail",
            "tracking_number": "RM123",
            "shipped_at": "2026-03-02T09:30:00+00:00",
            "lines": [{"line_id": "10001", "sku": "USB-C-2M", "quantity": 2}],
        },
    )
    body = ebay.fulfillment_body(request.message)
    assert spec(SPEC).body_errors("ShippingFulfillmentDetails", body) == []
    assert body == {
        "lineItems": [{"lineItemId": "10001", "quantity": 2}],
        "shippedDate": "2026-03-02T09:30:00.000Z",
        "shippingCarrierCode": "RoyalMail",
        "trackingNumber": "RM123",
    }


def test_a_refund_request_validates_against_ebays_spec() -> None:
    """issueRefund's body is a valid IssueRefundRequest: per-line totals, the key as comment; zero lines left out."""
    request = sync(
        "refund",
        {
            "reason": "customer_return",
            "currency": "USD",
            "lines": [
                {"line_id": "10001", "quantity": 1, "total": "12.34"},
                {"line_id": "10002", "quantity": 1, "total": "0.00"},
            ],
        },
    )
    body = ebay.refund_body(request.message, request.idempotency_key)
    assert spec(SPEC).body_errors("IssueRefundRequest", body) == []
    assert body["reasonForRefund"] == "BUYER_RETURN"
    assert body["comment"] == request.idempotency_key
    assert body["refundItems"] == [
        {"lineItemId": "10001", "refundAmount": {"value": "12.34", "currency": "USD"}}
    ]


def test_a_misspelt_field_fails_the_strict_schema() -> None:
    """The strict check refuses a field eBay's schema does not have, which eBay would silently ignore."""
    assert spec(SPEC).body_errors("IssueRefundRequest", {"reasonForRefund": "OTHER", "refundItem": []}) != []


def test_a_cancellation_names_the_order_and_a_post_order_reason() -> None:
    """Post-Order cancellation: legacyOrderId and a seller reason eBay knows."""
    body = ebay.cancellation_body(sync("cancel", {"reason": "out_of_stock"}).message)
    assert body == {"legacyOrderId": "12-34567-89012", "cancelReason": "OUT_OF_STOCK_OR_CANNOT_FULFILL"}


@pytest.mark.parametrize("reason", list(RefundReason))
def test_every_refund_reason_is_an_ebay_reason(reason: RefundReason) -> None:
    """Each canonical refund reason maps to a ReasonForRefundEnum value."""
    assert ebay.refund_reason(reason) in ebay_sandbox.REFUND_REASONS


@pytest.mark.parametrize("reason", list(CancelReason))
def test_every_cancel_reason_is_a_post_order_reason(reason: CancelReason) -> None:
    """Each canonical cancellation reason maps to a seller cancel reason of the Post-Order API."""
    assert ebay.cancel_reason(reason) in ebay_sandbox.CANCEL_REASONS


@pytest.mark.parametrize("carrier", list(Carrier))
def test_every_carrier_has_an_ebay_code(carrier: Carrier) -> None:
    """Each of the ledger's carriers maps to a shipping carrier code."""
    assert ebay.CARRIERS[carrier]


def test_ebay_errors_are_read_from_its_error_list() -> None:
    """`{"errors": [{errorId, message, longMessage}]}` gives (errorId, text); anything else gives None."""
    body = b'{"errors": [{"errorId": 32100, "message": "Invalid", "longMessage": "bad order"}]}'
    assert ebay.read_error(body) == ("32100", "Invalid: bad order")
    assert ebay.read_error(b"oops") is None


def test_the_earliest_line_ship_by_date_is_the_orders() -> None:
    """eBay sets `shipByDate` per line (`lineItemFulfillmentInstructions`): the order ships by the earliest;
    with none there is no ship-by date; the sandbox's lines carry one, in eBay's shape."""
    first, second = dict(ORDER["lineItems"][0]), dict(ORDER["lineItems"][0], lineItemId="10002")
    first["lineItemFulfillmentInstructions"] = {"shipByDate": "2026-03-04T06:59:59.000Z"}
    second["lineItemFulfillmentInstructions"] = {"shipByDate": "2026-03-03T06:59:59.000Z"}
    remote = ebay.to_remote_order(decode(lineItems=[first, second]))
    assert remote.order.ship_by == datetime(2026, 3, 3, 6, 59, 59, tzinfo=UTC)
    assert ebay.to_remote_order(decode()).order.ship_by is None
    purchased_at = datetime(2026, 3, 1, 10, tzinfo=UTC)
    rendered = ebay_sandbox.render_order(sandbox_order("ebay", purchased_at))
    assert spec(SPEC).body_errors("Order", rendered) == []
    mapped = ebay.to_remote_order(msgspec.convert(rendered, ebay.EbayOrder))
    assert mapped.order.ship_by == purchased_at + timedelta(days=ebay_sandbox.SHIP_BY_DAYS)

"""The eBay adapter against the sandbox's Fulfillment and Post-Order APIs: imports, shipments, refunds,
cancellation requests, payment disputes, faults and schema checks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sandbox_support import (  # noqa: F401
    Sandbox,
    cancel_payload,
    sandbox_fixture,
    sandbox_url_fixture,
    settle_outcome,
    sync_request,
)

from ledger.aggregates.values import DisputeOutcome, PaymentStatus
from ledger.integrations.base import (
    Accepted,
    BuyerCancelled,
    DisputeClosedRemotely,
    DisputeOpenedRemotely,
    Endpoint,
    Outcome,
    PaymentCleared,
    PermanentMarketplaceError,
    RemoteOrder,
    Submitted,
    SyncRequest,
    TransientMarketplaceError,
)
from ledger.integrations.ebay import EbayClient
from ledger_sandbox.validation import spec

EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


def client(url: str, account: str, **options: Any) -> EbayClient:
    timeout = options.pop("timeout", 5.0)
    return EbayClient(Endpoint(url, {"access_token": account}, timeout), **options)


@pytest.fixture
def account(sandbox: Sandbox) -> str:
    return sandbox.new_account()


@pytest.fixture
def ebay(sandbox_url: str, account: str) -> Iterator[EbayClient]:
    adapter = client(sandbox_url, account)
    yield adapter
    adapter.close()


def ship(order: dict[str, Any], tracking: str | None = None, quantity: int | None = None) -> SyncRequest:
    lines = [
        {"line_id": ln["line_id"], "sku": ln["sku"], "quantity": quantity or ln["quantity"]}
        for ln in order["lines"]
    ]
    return sync_request(
        order,
        "ship",
        {
            "shipment_id": str(uuid.uuid4()),
            "carrier": "usps",
            "tracking_number": tracking or f"9400{uuid.uuid4().int % 10**18:018d}",
            "shipping_class": "",
            "shipped_at": datetime.now(UTC).isoformat(),
            "lines": lines,
        },
    )


def refund(order: dict[str, Any], amount: str = "5.00", reason: str = "not_received") -> SyncRequest:
    line = order["lines"][0]
    row = {"line_id": line["line_id"], "sku": line["sku"], "quantity": 0, "item_amount": amount}
    row |= {"tax_amount": "0", "shipping_amount": "0", "total": amount}
    return sync_request(
        order,
        "refund",
        {
            "refund_id": str(uuid.uuid4()),
            "reason": reason,
            "currency": order["currency"],
            "item_amount": amount,
            "tax_amount": "0",
            "shipping_amount": "0",
            "total": amount,
            "lines": [row],
        },
    )


def cancel(order: dict[str, Any], dispute: bool) -> SyncRequest:
    cancellation_id, dispute_id = (None, str(uuid.uuid4())) if dispute else (str(uuid.uuid4()), None)
    return sync_request(order, "cancel", cancel_payload(order, cancellation_id, dispute_id))


def listed(ebay: EbayClient, since: datetime = EPOCH) -> dict[str, RemoteOrder]:
    found: dict[str, RemoteOrder] = {}
    page = None
    while True:
        result = ebay.list_orders(since, page)
        for remote in result.orders:
            found[remote.order.marketplace_order_id] = remote
        page = result.next_page
        if page is None:
            return found


def settle(ebay: EbayClient, sync: SyncRequest, outcome: Outcome, sandbox: Sandbox) -> Outcome:
    return settle_outcome(ebay, sync, outcome, sandbox, "the refund stayed pending")


def test_orders_import_page_by_page(sandbox: Sandbox, sandbox_url: str, account: str) -> None:
    """getOrders with a lastmodifieddate filter pages by offset; lines, buyer and payment map over."""
    made = {o["order_id"]: o for o in sandbox.orders("ebay", account, 5)}
    ebay = client(sandbox_url, account, page_size=2)
    pages = []
    page = None
    while True:
        result = ebay.list_orders(EPOCH, page)
        pages.append(len(result.orders))
        page = result.next_page
        if page is None:
            break
    found = listed(ebay)
    ebay.close()
    assert pages == [2, 2, 1]
    assert set(found) == set(made)
    for order_id, remote in found.items():
        view = made[order_id]
        assert remote.order.payment_status == PaymentStatus.PAID
        assert remote.order.buyer.email == view["buyer_email"]
        assert [
            (ln.line_id, ln.sku, ln.quantity, ln.unit_price, ln.tax, ln.shipping) for ln in remote.order.lines
        ] == [
            (
                ln["line_id"],
                ln["sku"],
                ln["quantity"],
                Decimal(ln["unit_price"]),
                Decimal(ln["tax"]),
                Decimal(ln["shipping"]),
            )
            for ln in view["lines"]
        ]
        assert any(isinstance(f, PaymentCleared) for f in remote.facts)
    assert sandbox.violations() == []


def test_the_sandbox_answers_in_ebays_own_shapes(sandbox: Sandbox, sandbox_url: str, account: str) -> None:
    """getOrders' answer validates against eBay's OrderSearchPagedCollection."""
    sandbox.orders("ebay", account, 2)
    response = httpx.get(
        f"{sandbox_url}/sell/fulfillment/v1/order",
        params={"filter": "lastmodifieddate:[2020-01-01T00:00:00.000Z..]", "limit": "1"},
        headers={"Authorization": f"Bearer {account}"},
    )
    checker = spec("ebay/sell_fulfillment_v1_oas3.json")
    assert response.status_code == 200
    assert checker.body_errors("OrderSearchPagedCollection", response.json()) == []
    assert response.json()["total"] == 2
    assert "next" in response.json()


def test_a_duplicated_page_loses_no_order(sandbox: Sandbox, sandbox_url: str, account: str) -> None:
    """A page that repeats the previous page's last order still yields every order."""
    made = {o["order_id"] for o in sandbox.orders("ebay", account, 4)}
    sandbox.fault("ebay", "getOrders", "duplicate")
    ebay = client(sandbox_url, account, page_size=2)
    ids: list[str] = []
    page = None
    while True:
        result = ebay.list_orders(EPOCH, page)
        ids += [o.order.marketplace_order_id for o in result.orders]
        page = result.next_page
        if page is None:
            break
    ebay.close()
    assert len(ids) == 5
    assert set(ids) == made


def test_a_fulfillment_is_created_once_per_tracking_number(
    sandbox: Sandbox, ebay: EbayClient, account: str
) -> None:
    """createShippingFulfillment twice with one tracking number: one fulfillment."""
    order = sandbox.orders("ebay", account, 1)[0]
    sync = ship(order)
    tracking = sync.message.tracking_number  # type: ignore[union-attr]
    assert ebay.send(sync) == ebay.send(sync) == Accepted(tracking)
    effects = sandbox.effects("ebay", account, key=tracking)
    assert [(e["operation"], e["attempts"]) for e in effects] == [("createShippingFulfillment", 2)]
    view = sandbox.order("ebay", account, order["order_id"])
    assert [s["shipmentTrackingNumber"] for s in view["shipments"]] == [tracking]
    assert view["marketplace_status"] == "FULFILLED"
    state = ebay.order_state(order["order_id"])
    assert state.shipped == {ln["line_id"]: ln["quantity"] for ln in order["lines"]}
    assert state.status == "shipped"
    assert sandbox.violations() == []


def test_a_lost_fulfillment_answer_is_retried_without_a_second_shipment(
    sandbox: Sandbox, ebay: EbayClient, account: str
) -> None:
    """The fulfillment is created, the answer lost (transient); the retry creates nothing more."""
    order = sandbox.orders("ebay", account, 1)[0]
    sync = ship(order)
    sandbox.fault("ebay", "createShippingFulfillment", "lost")
    with pytest.raises(TransientMarketplaceError):
        ebay.send(sync)
    assert isinstance(ebay.send(sync), Accepted)
    assert len(sandbox.order("ebay", account, order["order_id"])["shipments"]) == 1


def test_a_refund_is_pending_then_refunded_and_applied_once(
    sandbox: Sandbox, ebay: EbayClient, account: str
) -> None:
    """issueRefund answers PENDING (Submitted); polling sees REFUNDED; a retried refund adds nothing."""
    order = sandbox.orders("ebay", account, 1)[0]
    sync = refund(order, "5.00")
    submitted = ebay.send(sync)
    assert isinstance(submitted, Submitted)
    assert isinstance(settle(ebay, sync, submitted, sandbox), Accepted)
    again = ebay.send(sync)
    assert again == submitted
    view = sandbox.order("ebay", account, order["order_id"])
    assert [(r["amount"], r["reason"], r["refundStatus"]) for r in view["refunds"]] == [
        ("5.00", "ITEM_NOT_RECEIVED", "REFUNDED")
    ]
    effects = sandbox.effects("ebay", account, key=sync.idempotency_key)
    assert [(e["operation"], e["attempts"]) for e in effects] == [("issueRefund", 2)]
    assert ebay.order_state(order["order_id"]).refunded_total == "5.00"
    assert sandbox.violations() == []


def test_a_refund_beyond_the_payment_is_permanent(sandbox: Sandbox, ebay: EbayClient, account: str) -> None:
    """eBay refuses to refund more than was paid: a permanent error."""
    order = sandbox.orders("ebay", account, 1)[0]
    with pytest.raises(PermanentMarketplaceError):
        ebay.send(refund(order, "99999.00"))
    assert sandbox.violations() == []


def test_cancelling_a_paid_order_opens_a_request_closed_by_the_marketplace(
    sandbox: Sandbox, ebay: EbayClient, account: str
) -> None:
    """A paid order: the cancellation request is Accepted with its cancelId; its approval is a closing fact."""
    order = sandbox.orders("ebay", account, 1)[0]
    sync = cancel(order, dispute=True)
    sent = ebay.send(sync)
    assert isinstance(sent, Accepted)
    assert sent.marketplace_reference is not None
    assert ebay.send(sync) == sent  # one open request per order
    assert sandbox.order("ebay", account, order["order_id"])["status"] == "unshipped"
    assert not any(isinstance(f, DisputeClosedRemotely) for f in listed(ebay)[order["order_id"]].facts)
    sandbox.event("ebay", account, order["order_id"], "approve_cancellation")
    facts = listed(ebay)[order["order_id"]].facts
    closed = [f for f in facts if isinstance(f, DisputeClosedRemotely)]
    assert [(f.marketplace_dispute_id, f.outcome) for f in closed] == [
        (sent.marketplace_reference, DisputeOutcome.ACCEPTED)
    ]
    assert sandbox.order("ebay", account, order["order_id"])["status"] == "canceled"
    assert ebay.order_state(order["order_id"]).status == "canceled"


def test_a_rejected_cancellation_request_is_a_rejected_fact(
    sandbox: Sandbox, ebay: EbayClient, account: str
) -> None:
    """The buyer turns the request down: the dispute closes rejected and the order stays open."""
    order = sandbox.orders("ebay", account, 1)[0]
    sent = ebay.send(cancel(order, dispute=True))
    sandbox.event("ebay", account, order["order_id"], "reject_cancellation")
    closed = [f for f in listed(ebay)[order["order_id"]].facts if isinstance(f, DisputeClosedRemotely)]
    assert [(f.marketplace_dispute_id, f.outcome) for f in closed] == [
        (sent.marketplace_reference, DisputeOutcome.REJECTED)
    ]
    assert sandbox.order("ebay", account, order["order_id"])["status"] == "unshipped"


def test_cancelling_an_unpaid_order_takes_effect_at_once(
    sandbox: Sandbox, ebay: EbayClient, account: str
) -> None:
    """An unpaid order is cancelled at once, and reports no dispute."""
    order = sandbox.orders("ebay", account, 1, paid=False)[0]
    assert isinstance(ebay.send(cancel(order, dispute=False)), Accepted)
    assert sandbox.order("ebay", account, order["order_id"])["status"] == "canceled"
    remote = listed(ebay)[order["order_id"]]
    assert remote.order.payment_status == PaymentStatus.PENDING
    assert not any(isinstance(f, DisputeClosedRemotely) for f in remote.facts)
    assert sandbox.violations() == []


def test_payment_disputes_are_reported_opened_and_closed(
    sandbox: Sandbox, ebay: EbayClient, account: str
) -> None:
    """A buyer's payment dispute is DisputeOpenedRemotely; its close, with eBay's outcome, DisputeClosedRemotely."""
    order = sandbox.orders("ebay", account, 1)[0]
    opened = sandbox.event("ebay", account, order["order_id"], "open_dispute", reason="ITEM_NOT_RECEIVED")
    dispute_id = opened["disputes"][0]["dispute_id"]
    facts = listed(ebay)[order["order_id"]].facts
    assert [(f.marketplace_dispute_id, f.reason) for f in facts if isinstance(f, DisputeOpenedRemotely)] == [
        (dispute_id, "ITEM_NOT_RECEIVED")
    ]
    sandbox.event(
        "ebay", account, order["order_id"], "close_dispute", dispute_id=dispute_id, outcome="rejected"
    )
    closed = [f for f in listed(ebay)[order["order_id"]].facts if isinstance(f, DisputeClosedRemotely)]
    assert [(f.marketplace_dispute_id, f.outcome) for f in closed] == [(dispute_id, DisputeOutcome.REJECTED)]


def test_accepting_a_claim_closes_it_once(sandbox: Sandbox, ebay: EbayClient, account: str) -> None:
    """close_dispute (accepted) of a claim accepts the payment dispute; a retry changes nothing."""
    order = sandbox.orders("ebay", account, 1)[0]
    dispute_id = sandbox.event("ebay", account, order["order_id"], "open_dispute")["disputes"][0][
        "dispute_id"
    ]
    sync = sync_request(
        order,
        "close_dispute",
        {
            "dispute_id": str(uuid.uuid4()),
            "kind": "claim",
            "marketplace_dispute_id": dispute_id,
            "outcome": "accepted",
        },
    )
    assert ebay.send(sync) == ebay.send(sync) == Accepted(dispute_id)
    assert sandbox.order("ebay", account, order["order_id"])["disputes"][0]["outcome"] == "accepted"
    assert [e["operation"] for e in sandbox.effects("ebay", account, key=dispute_id)] == [
        "acceptPaymentDispute"
    ]
    assert sandbox.violations() == []


def test_a_buyer_cancellation_is_a_fact(sandbox: Sandbox, ebay: EbayClient, account: str) -> None:
    """A buyer's completed cancellation reads as BuyerCancelled."""
    order = sandbox.orders("ebay", account, 1)[0]
    sandbox.event("ebay", account, order["order_id"], "buyer_cancel")
    assert any(isinstance(f, BuyerCancelled) for f in listed(ebay)[order["order_id"]].facts)


@pytest.mark.parametrize(
    ("kind", "options", "retry_after"),
    [("throttle", {"retry_after": 3}, 3.0), ("server_error", {"status": 500}, None), ("reset", {}, None)],
)
def test_faults_are_transient(
    sandbox: Sandbox,
    ebay: EbayClient,
    account: str,
    kind: str,
    options: dict[str, Any],
    retry_after: float | None,
) -> None:
    """429 (Retry-After), 5xx and a reset are transient errors and issue no refund."""
    order = sandbox.orders("ebay", account, 1)[0]
    sandbox.fault("ebay", "issueRefund", kind, **options)
    with pytest.raises(TransientMarketplaceError) as failed:
        ebay.send(refund(order))
    assert failed.value.retry_after == retry_after
    assert sandbox.order("ebay", account, order["order_id"])["refunds"] == []


def test_a_request_the_schema_rejects_is_refused_and_recorded(
    sandbox: Sandbox, sandbox_url: str, account: str
) -> None:
    """A raw fulfillment whose lineItems is not an array gets eBay's 400 and a recorded violation."""
    order = sandbox.orders("ebay", account, 1)[0]
    response = httpx.post(
        f"{sandbox_url}/sell/fulfillment/v1/order/{order['order_id']}/shipping_fulfillment",
        json={"lineItems": "all", "trackingNumber": "1", "shippingCarrierCode": "USPS"},
        headers={"Authorization": f"Bearer {account}"},
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["errorId"] == 32100
    assert [v["operation"] for v in sandbox.violations()] == ["createShippingFulfillment"]
    sandbox.clear_violations()
    misspelt = httpx.post(
        f"{sandbox_url}/sell/fulfillment/v1/order/{order['order_id']}/issue_refund",
        json={"reasonForRefund": "OTHER", "refundItem": []},
        headers={"Authorization": f"Bearer {account}"},
    )
    assert misspelt.status_code == 400
    assert any("refundItem" in e for e in sandbox.violations()[0]["errors"])
    sandbox.clear_violations()


def test_cancellation_requests_can_be_approved_by_the_clock(
    sandbox: Sandbox, ebay: EbayClient, account: str
) -> None:
    """With cancellation_approval_seconds set, eBay approves the request by itself."""
    sandbox.settings(cancellation_approval_seconds=0)
    order = sandbox.orders("ebay", account, 1)[0]
    sent = ebay.send(cancel(order, dispute=True))
    closed = [f for f in listed(ebay)[order["order_id"]].facts if isinstance(f, DisputeClosedRemotely)]
    assert [(f.marketplace_dispute_id, f.outcome) for f in closed] == [
        (sent.marketplace_reference, DisputeOutcome.ACCEPTED)
    ]

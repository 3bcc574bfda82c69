"""The Amazon adapter against the sandbox's SP-API: imports, shipments, feeds, faults and schema checks."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sandbox_support import (  # noqa: F401
    Sandbox,
    cancel_payload,
    free_port,
    sandbox_fixture,
    sandbox_url_fixture,
    settle_outcome,
    sync_request,
    whole_lines,
)

from ledger.aggregates.values import PaymentStatus
from ledger.integrations.amazon import AmazonClient, adjustment_item_id, package_reference_id
from ledger.integrations.base import (
    Accepted,
    BuyerCancelled,
    Endpoint,
    Outcome,
    PermanentMarketplaceError,
    Submitted,
    SyncRequest,
    TransientMarketplaceError,
)
from ledger_sandbox.app import create_sandbox_app
from ledger_sandbox.validation import SPECS_ENV, SpecsNotFoundError, spec

EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
SRC = Path(__file__).resolve().parents[2] / "src"


def client(url: str, account: str, **options: Any) -> AmazonClient:
    timeout = options.pop("timeout", 5.0)
    return AmazonClient(Endpoint(url, {"access_token": account, "seller_id": "A1SELLER"}, timeout), **options)


def ship(
    order: dict[str, Any], key: str | None = None, lines: list[dict[str, Any]] | None = None
) -> SyncRequest:
    chosen = lines or whole_lines(order)
    return sync_request(
        order,
        "ship",
        {
            "shipment_id": str(uuid.uuid4()),
            "carrier": "ups",
            "tracking_number": f"1Z{uuid.uuid4().hex[:12].upper()}",
            "shipping_class": "Ground",
            "shipped_at": datetime.now(UTC).isoformat(),
            "lines": chosen,
        },
        key,
    )


def refund(order: dict[str, Any], key: str | None = None) -> SyncRequest:
    line = order["lines"][0]
    return sync_request(
        order,
        "refund",
        {
            "refund_id": str(uuid.uuid4()),
            "reason": "customer_return",
            "currency": order["currency"],
            "item_amount": line["unit_price"],
            "tax_amount": "0.50",
            "shipping_amount": "0",
            "total": str(Decimal(line["unit_price"]) + Decimal("0.50")),
            "lines": [
                {
                    "line_id": line["line_id"],
                    "sku": line["sku"],
                    "quantity": 1,
                    "item_amount": line["unit_price"],
                    "tax_amount": "0.50",
                    "shipping_amount": "0",
                    "total": str(Decimal(line["unit_price"]) + Decimal("0.50")),
                }
            ],
        },
        key,
    )


def cancel(order: dict[str, Any], key: str | None = None) -> SyncRequest:
    return sync_request(order, "cancel", cancel_payload(order, str(uuid.uuid4()), None), key)


def settle(amazon: AmazonClient, sync: SyncRequest, outcome: Outcome, sandbox: Sandbox) -> Outcome:
    """Poll a submitted feed until Amazon has processed it."""
    return settle_outcome(amazon, sync, outcome, sandbox, "the feed never finished processing")


def all_pages(amazon: AmazonClient, since: datetime) -> list[Any]:
    orders, page = [], None
    while True:
        found = amazon.list_orders(since, page)
        orders += found.orders
        page = found.next_page
        if page is None:
            return orders


@pytest.fixture
def account(sandbox: Sandbox) -> str:
    return sandbox.new_account()


@pytest.fixture
def amazon(sandbox_url: str, account: str) -> Any:
    adapter = client(sandbox_url, account)
    yield adapter
    adapter.close()


def test_orders_import_page_by_page_with_their_items(
    sandbox: Sandbox, sandbox_url: str, account: str
) -> None:
    """getOrders pages through every order; each comes with its items, buyer, address and payment."""
    made = {o["order_id"]: o for o in sandbox.orders("amazon", account, 5)}
    amazon = client(sandbox_url, account, page_size=2)
    pages = []
    page = None
    while True:
        found = amazon.list_orders(EPOCH, page)
        pages.append(found.orders)
        page = found.next_page
        if page is None:
            break
    amazon.close()
    assert [len(p) for p in pages] == [2, 2, 1]
    imported = [o for p in pages for o in p]
    assert sorted(o.order.marketplace_order_id for o in imported) == sorted(made)
    for remote in imported:
        view = made[remote.order.marketplace_order_id]
        assert remote.order.payment_status == PaymentStatus.PAID
        assert remote.order.buyer.email == view["buyer_email"]
        assert remote.order.ship_to is not None
        assert remote.order.ship_to.postal_code == view["address"]["postal_code"]
        assert [(ln.line_id, ln.sku, ln.quantity, ln.unit_price) for ln in remote.order.lines] == [
            (ln["line_id"], ln["sku"], ln["quantity"], Decimal(ln["unit_price"])) for ln in view["lines"]
        ]
        assert sum((ln.total for ln in remote.order.lines), Decimal(0)) == Decimal(view["total"])
        assert remote.needs_acknowledgement
    assert sandbox.violations() == []


def test_the_sandbox_answers_in_amazons_own_shapes(sandbox: Sandbox, sandbox_url: str, account: str) -> None:
    """The sandbox's getOrders and getOrderItems answers validate against Amazon's response models."""
    order = sandbox.orders("amazon", account, 1)[0]
    headers = {"x-amz-access-token": account}
    orders = httpx.get(
        f"{sandbox_url}/orders/v0/orders",
        params={"MarketplaceIds": "ATVPDKIKX0DER", "CreatedAfter": "2020-01-01T00:00:00Z"},
        headers=headers,
    )
    items = httpx.get(f"{sandbox_url}/orders/v0/orders/{order['order_id']}/orderItems", headers=headers)
    assert spec("amazon/ordersV0.json").body_errors("GetOrdersResponse", orders.json()) == []
    assert spec("amazon/ordersV0.json").body_errors("GetOrderItemsResponse", items.json()) == []
    assert [o["AmazonOrderId"] for o in orders.json()["payload"]["Orders"]] == [order["order_id"]]


def test_a_duplicated_page_repeats_an_order_but_loses_none(
    sandbox: Sandbox, sandbox_url: str, account: str
) -> None:
    """With duplicate deliveries armed, a page repeats the previous page's last order; none is missed."""
    made = {o["order_id"] for o in sandbox.orders("amazon", account, 4)}
    sandbox.fault("amazon", "getOrders", "duplicate")
    amazon = client(sandbox_url, account, page_size=2)
    ids = [o.order.marketplace_order_id for o in all_pages(amazon, EPOCH)]
    amazon.close()
    assert len(ids) == 5
    assert set(ids) == made


def test_only_orders_changed_since_the_cursor_are_listed(
    sandbox: Sandbox, amazon: AmazonClient, account: str
) -> None:
    """LastUpdatedAfter leaves out orders that have not changed since."""
    old = sandbox.orders("amazon", account, 2, purchased_at="2024-01-01T00:00:00Z")
    cursor = datetime(2025, 1, 1, tzinfo=UTC)
    assert all_pages(amazon, cursor) == []
    sandbox.event("amazon", account, old[0]["order_id"], "open_dispute")
    assert [o.order.marketplace_order_id for o in all_pages(amazon, cursor)] == [old[0]["order_id"]]


def test_a_retried_shipment_confirmation_ships_once(
    sandbox: Sandbox, amazon: AmazonClient, account: str
) -> None:
    """confirmShipment twice with one idempotency key: one shipment, the second call counted as an attempt."""
    order = sandbox.orders("amazon", account, 1)[0]
    sync = ship(order)
    first, second = amazon.send(sync), amazon.send(sync)
    reference = package_reference_id(sync.idempotency_key)
    assert first == second == Accepted(reference)
    effects = sandbox.effects("amazon", account, key=reference)
    assert [(e["operation"], e["attempts"]) for e in effects] == [("confirmShipment", 2)]
    view = sandbox.order("amazon", account, order["order_id"])
    assert view["status"] == "shipped"
    assert len(view["shipments"]) == 1
    assert view["shipments"][0]["carrier"] == "UPS"
    assert sandbox.violations() == []


def test_a_shipment_whose_answer_was_lost_is_applied_once(
    sandbox: Sandbox, amazon: AmazonClient, account: str
) -> None:
    """The effect applies, the connection drops (transient), and the retry finds it done: one shipment."""
    order = sandbox.orders("amazon", account, 1)[0]
    sync = ship(order)
    sandbox.fault("amazon", "confirmShipment", "lost")
    with pytest.raises(TransientMarketplaceError) as lost:
        amazon.send(sync)
    assert lost.value.code == "connection"
    assert sandbox.order("amazon", account, order["order_id"])["status"] == "shipped"
    assert isinstance(amazon.send(sync), Accepted)
    effects = sandbox.effects("amazon", account, order_id=order["order_id"])
    assert [(e["key"], e["attempts"]) for e in effects] == [(package_reference_id(sync.idempotency_key), 2)]


@pytest.mark.parametrize(
    ("kind", "options", "code", "retry_after"),
    [
        ("throttle", {"retry_after": 7}, "QuotaExceeded", 7.0),
        ("server_error", {"status": 503}, "InternalFailure", None),
        ("reset", {}, "connection", None),
    ],
)
def test_faults_are_transient_and_change_nothing(
    sandbox: Sandbox,
    amazon: AmazonClient,
    account: str,
    kind: str,
    options: dict[str, Any],
    code: str,
    retry_after: float | None,
) -> None:
    """429 (with Retry-After), 5xx and a reset connection are transient errors; nothing ships."""
    order = sandbox.orders("amazon", account, 1)[0]
    sandbox.fault("amazon", "confirmShipment", kind, **options)
    with pytest.raises(TransientMarketplaceError) as failed:
        amazon.send(ship(order))
    assert failed.value.code == code
    assert failed.value.retry_after == retry_after
    assert sandbox.order("amazon", account, order["order_id"])["shipments"] == []


def test_a_timeout_is_transient(sandbox: Sandbox, sandbox_url: str, account: str) -> None:
    """A marketplace slower than the client's timeout is a transient error."""
    sandbox.fault("amazon", "getOrders", "timeout", seconds=2)
    amazon = client(sandbox_url, account, timeout=0.3)
    with pytest.raises(TransientMarketplaceError) as failed:
        amazon.list_orders(EPOCH)
    amazon.close()
    assert failed.value.code == "timeout"


def test_refusals_are_permanent(sandbox: Sandbox, amazon: AmazonClient, account: str) -> None:
    """An unknown order (404) and too many units (400) are permanent errors."""
    order = sandbox.orders("amazon", account, 1)[0]
    with pytest.raises(PermanentMarketplaceError) as missing:
        amazon.send(ship({**order, "order_id": "111-0000000-0000000"}))
    assert missing.value.code == "NotFound"
    line = order["lines"][0]
    with pytest.raises(PermanentMarketplaceError) as too_many:
        amazon.send(ship(order, lines=[{"line_id": line["line_id"], "sku": line["sku"], "quantity": 99}]))
    assert too_many.value.code == "InvalidInput"
    assert sandbox.violations() == []


def test_a_cancellation_feed_is_processed_asynchronously_once(
    sandbox: Sandbox, amazon: AmazonClient, account: str
) -> None:
    """cancel -> Submitted(feed); polling sees it through to Accepted; a re-sent feed changes nothing more."""
    order = sandbox.orders("amazon", account, 1)[0]
    sync = cancel(order)
    submitted = amazon.send(sync)
    assert isinstance(submitted, Submitted)
    assert isinstance(settle(amazon, sync, submitted, sandbox), Accepted)
    view = sandbox.order("amazon", account, order["order_id"])
    assert view["status"] == "canceled"
    assert view["cancellations"][0]["reason"] == "NoInventory"
    assert isinstance(settle(amazon, sync, amazon.send(sync), sandbox), Accepted)
    effects = sandbox.effects("amazon", account, key=sync.idempotency_key)
    assert [(e["operation"], e["attempts"]) for e in effects] == [("cancelOrder", 2)]
    assert sandbox.violations() == []


def test_a_feed_moves_from_the_queue_to_done(sandbox: Sandbox, amazon: AmazonClient, account: str) -> None:
    """While the feed is processing, poll answers Submitted again."""
    sandbox.settings(feed_processing_seconds=60)
    order = sandbox.orders("amazon", account, 1)[0]
    sync = cancel(order)
    submitted = amazon.send(sync)
    assert isinstance(submitted, Submitted)
    assert isinstance(amazon.poll(sync, submitted.marketplace_reference), Submitted)
    assert sandbox.order("amazon", account, order["order_id"])["status"] == "unshipped"
    sandbox.settings(feed_processing_seconds=0)
    assert amazon.poll(sync, submitted.marketplace_reference) == Accepted(submitted.marketplace_reference)


def test_a_refund_after_shipment_is_applied_once_per_adjustment_item(
    sandbox: Sandbox, amazon: AmazonClient, account: str
) -> None:
    """A payment adjustment refunds the line's components; a retry with the same key adds nothing."""
    order = sandbox.orders("amazon", account, 1)[0]
    amazon.send(ship(order))
    sync = refund(order)
    assert isinstance(settle(amazon, sync, amazon.send(sync), sandbox), Accepted)
    assert isinstance(settle(amazon, sync, amazon.send(sync), sandbox), Accepted)
    view = sandbox.order("amazon", account, order["order_id"])
    assert len(view["refunds"]) == 1
    assert Decimal(view["refunds"][0]["amount"]) == Decimal(order["lines"][0]["unit_price"]) + Decimal("0.50")
    assert view["refunds"][0]["reason"] == "CustomerReturn"
    effects = sandbox.effects("amazon", account, key=adjustment_item_id(sync.idempotency_key, 1))
    assert [(e["operation"], e["attempts"]) for e in effects] == [("paymentAdjustment", 2)]
    assert sandbox.violations() == []


def test_a_refund_before_shipment_is_refused_by_the_report(
    sandbox: Sandbox, amazon: AmazonClient, account: str
) -> None:
    """Amazon adjusts only shipped items: the processing report's error is a permanent error."""
    order = sandbox.orders("amazon", account, 1)[0]
    sync = refund(order)
    with pytest.raises(PermanentMarketplaceError) as refused:
        settle(amazon, sync, amazon.send(sync), sandbox)
    assert refused.value.code == "18042"
    assert sandbox.order("amazon", account, order["order_id"])["refunds"] == []


def test_a_buyer_cancellation_within_30_minutes_is_a_fact(
    sandbox: Sandbox, amazon: AmazonClient, account: str
) -> None:
    """Cancelled by the buyer at once: an applied BuyerCancelled; asked after 30 minutes: only a request
    (BuyerCancelled with applied=False), which the seller answers by cancelling or shipping."""
    now = datetime.now(UTC)
    early = sandbox.orders("amazon", account, 1, purchased_at=(now - timedelta(minutes=10)).isoformat())[0]
    late = sandbox.orders("amazon", account, 1, purchased_at=(now - timedelta(minutes=40)).isoformat())[0]
    sandbox.event("amazon", account, early["order_id"], "buyer_cancel", reason="Changed my mind")
    sandbox.event("amazon", account, late["order_id"], "buyer_cancel")
    found = {o.order.marketplace_order_id: o for o in all_pages(amazon, EPOCH)}
    assert [f.applied for f in found[early["order_id"]].facts if isinstance(f, BuyerCancelled)] == [True]
    assert [f.applied for f in found[late["order_id"]].facts if isinstance(f, BuyerCancelled)] == [False]
    assert amazon.order_state(early["order_id"]).status == "canceled"


def test_order_state_reports_what_amazon_holds(sandbox: Sandbox, amazon: AmazonClient, account: str) -> None:
    """order_state: the status in the ledger's words, shipped units per line, the refunds from Finances."""
    order = sandbox.orders("amazon", account, 1)[0]
    amazon.send(ship(order))
    sync = refund(order)
    settle(amazon, sync, amazon.send(sync), sandbox)
    state = amazon.order_state(order["order_id"])
    assert state.status == "shipped"
    assert Decimal(state.refunded_total) == Decimal(order["lines"][0]["unit_price"]) + Decimal("0.50")
    assert state.shipped == {ln["line_id"]: ln["quantity"] for ln in order["lines"]}


def test_a_request_the_schema_rejects_is_refused_and_recorded(
    sandbox: Sandbox, sandbox_url: str, account: str
) -> None:
    """A raw confirmShipment without packageDetail gets Amazon's 400 and a recorded violation."""
    order = sandbox.orders("amazon", account, 1)[0]
    response = httpx.post(
        f"{sandbox_url}/orders/v0/orders/{order['order_id']}/shipmentConfirmation",
        json={"marketplaceId": "ATVPDKIKX0DER", "packageDetails": {}},
        headers={"x-amz-access-token": account},
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "InvalidInput"
    violations = sandbox.violations()
    assert [v["operation"] for v in violations] == ["confirmShipment"]
    assert any("packageDetail" in error for error in violations[0]["errors"])
    sandbox.clear_violations()


def test_requests_without_a_token_are_refused(sandbox_url: str) -> None:
    """No x-amz-access-token: 403, a permanent error for the adapter."""
    response = httpx.get(f"{sandbox_url}/orders/v0/orders", params={"MarketplaceIds": "ATVPDKIKX0DER"})
    assert response.status_code == 403


def test_ledger_sandbox_command_serves_generated_orders() -> None:
    """`ledger sandbox --orders 2` prints its URL and serves two orders per marketplace to the account."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        "-m",
        "ledger.cli",
        "sandbox",
        "--port",
        str(port),
        "--orders",
        "2",
        "--account",
        "cli",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in first
        amazon = client(f"http://127.0.0.1:{port}", "cli")
        found = Sandbox(f"http://127.0.0.1:{port}").wait_for(lambda: _orders_or_none(amazon))
        amazon.close()
        assert found is not None
        assert len(found) == 2
    finally:
        process.terminate()
        process.wait(timeout=10)


def _orders_or_none(amazon: AmazonClient) -> list[Any] | None:
    try:
        return all_pages(amazon, EPOCH)
    except TransientMarketplaceError:
        return None  # not listening yet


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/_sandbox/amazon/accounts/a/orders", {"count": "five"}),
        ("POST", "/_sandbox/amazon/accounts/a/orders", {"count": 1, "max_lines": "3"}),
        ("POST", "/_sandbox/amazon/accounts/a/orders", {"count": 1, "currency": "dollars"}),
        ("POST", "/_sandbox/amazon/accounts/a/orders", {"count": 1, "purchased_at": "yesterday"}),
        ("POST", "/_sandbox/amazon/faults", {"kind": "throttle", "retry_after": "soon"}),
        ("POST", "/_sandbox/amazon/faults", {"kind": "meteor"}),
        ("POST", "/_sandbox/amazon/faults", {"operation": "getOrders"}),
        ("PUT", "/_sandbox/settings", {"feed_processing_seconds": "fast"}),
        ("POST", "/_sandbox/nowhere/accounts/a/orders", {"count": 1}),
        ("POST", "/_sandbox/amazon/accounts/a/orders/none/events", {"type": "pay"}),
    ],
)
def test_bad_control_requests_are_refused_clearly(
    sandbox: Sandbox, sandbox_url: str, method: str, path: str, body: dict[str, Any]
) -> None:
    """The control API answers bad input with a 4xx and a message, never a 500."""
    response = httpx.request(method, f"{sandbox_url}{path}", json=body)
    assert response.status_code in (400, 404)
    assert response.json()["error"]
    assert sandbox.faults()["armed"] == []


def test_a_forged_next_token_is_a_schema_violation(sandbox: Sandbox, sandbox_url: str, account: str) -> None:
    """A NextToken Amazon never gave is refused with a 400, not a 500."""
    response = httpx.get(
        f"{sandbox_url}/orders/v0/orders",
        params={"MarketplaceIds": "ATVPDKIKX0DER", "NextToken": "eyJvZmZzZXQiOiAieCJ9"},
        headers={"x-amz-access-token": account},
    )
    assert response.status_code == 400
    assert [v["operation"] for v in sandbox.violations()] == ["getOrders"]
    sandbox.clear_violations()


def test_a_refund_feed_lost_after_creation_is_applied_once(
    sandbox: Sandbox, amazon: AmazonClient, account: str
) -> None:
    """createFeed's answer is lost (the feed exists); the re-sent feed is deduped by MerchantAdjustmentItemID."""
    order = sandbox.orders("amazon", account, 1)[0]
    amazon.send(ship(order))
    sync = refund(order)
    sandbox.fault("amazon", "createFeed", "lost")
    with pytest.raises(TransientMarketplaceError):
        amazon.send(sync)
    assert isinstance(settle(amazon, sync, amazon.send(sync), sandbox), Accepted)
    key = adjustment_item_id(sync.idempotency_key, 1)
    effects = sandbox.wait_for(
        lambda: [e for e in sandbox.effects("amazon", account, key=key) if e["attempts"] == 2]
    )
    assert [(e["operation"], e["attempts"]) for e in effects] == [("paymentAdjustment", 2)]
    assert len(sandbox.order("amazon", account, order["order_id"])["refunds"]) == 1


def test_an_order_is_acknowledged_once(sandbox: Sandbox, amazon: AmazonClient, account: str) -> None:
    """acknowledge submits an acknowledgement feed; Amazon records the order acknowledged."""
    order = sandbox.orders("amazon", account, 1)[0]
    amazon.acknowledge(order["order_id"])
    amazon.acknowledge(order["order_id"])
    view = sandbox.wait_for(
        lambda: (v := sandbox.order("amazon", account, order["order_id"]))["acknowledged_at"] and v
    )
    assert view["acknowledged_at"] is not None
    effects = sandbox.wait_for(lambda: [e for e in sandbox.effects("amazon", account) if e["attempts"] == 2])
    assert [e["operation"] for e in effects] == ["acknowledgeOrder"]
    assert sandbox.violations() == []


def test_a_slow_answer_within_the_timeout_is_fine(
    sandbox: Sandbox, amazon: AmazonClient, account: str
) -> None:
    """A slow marketplace that answers within the client's timeout is just slow."""
    sandbox.orders("amazon", account, 1)
    sandbox.fault("amazon", "getOrders", "slow", seconds=0.2)
    assert len(all_pages(amazon, EPOCH)) == 1
    assert sandbox.faults()["fired"][-1] == {
        "marketplace": "amazon",
        "operation": "getOrders",
        "kind": "slow",
    }


def test_a_feed_goes_through_the_queue_and_progress_to_done(
    sandbox: Sandbox, sandbox_url: str, amazon: AmazonClient, account: str
) -> None:
    """getFeed reports IN_QUEUE, then IN_PROGRESS, then DONE with a result document."""
    sandbox.settings(feed_processing_seconds=3)
    order = sandbox.orders("amazon", account, 1)[0]
    submitted = amazon.send(cancel(order))
    assert isinstance(submitted, Submitted)
    seen: list[str] = []

    def status() -> dict[str, Any] | None:
        feed = httpx.get(
            f"{sandbox_url}/feeds/2021-06-30/feeds/{submitted.marketplace_reference}",
            headers={"x-amz-access-token": account},
        ).json()
        if not seen or seen[-1] != feed["processingStatus"]:
            seen.append(feed["processingStatus"])
        return feed if feed["processingStatus"] == "DONE" else None

    done = sandbox.wait_for(status, timeout=15)
    assert seen == ["IN_QUEUE", "IN_PROGRESS", "DONE"]
    assert spec("amazon/feeds_2021-06-30.json").body_errors("Feed", done) == []
    assert done["resultFeedDocumentId"]


def test_the_sandbox_will_not_start_without_the_schemas(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A LEDGER_MARKETPLACE_SPECS without the spec files is a clear error at start, not a 500 per call."""
    monkeypatch.setenv(SPECS_ENV, str(tmp_path))
    with pytest.raises(SpecsNotFoundError, match="LEDGER_MARKETPLACE_SPECS"):
        create_sandbox_app()

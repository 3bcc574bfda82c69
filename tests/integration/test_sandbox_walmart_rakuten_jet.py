"""The Walmart, Rakuten and Jet adapters against the running sandbox: orders in, changes out, faults mapped.

Every request the adapters send is checked by the sandbox against the marketplace's shapes (unknown fields
refused), so each test ends with no violations recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import httpx
import pytest
from sandbox_support import Sandbox, sandbox_fixture, sandbox_url_fixture  # noqa: F401

from ledger.aggregates.values import PaymentStatus
from ledger.integrations import outbox
from ledger.integrations.base import (
    Accepted,
    BuyerCancelled,
    Endpoint,
    PermanentMarketplaceError,
    RemoteOrder,
    SyncRequest,
    TransientMarketplaceError,
)
from ledger.integrations.jet import JetClient
from ledger.integrations.rakuten import RakutenClient
from ledger.integrations.walmart import WalmartClient

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)
SHIPPED_AT = "2026-11-20T15:30:00+00:00"


@pytest.fixture
def account() -> str:
    """A seller account of the test's own on the shared sandbox."""
    return Sandbox.new_account()


@pytest.fixture
def walmart(sandbox_url: str, account: str) -> Iterator[WalmartClient]:
    """The Walmart adapter for the account, two orders a page."""
    client = WalmartClient(Endpoint(sandbox_url, {"access_token": account}, timeout_seconds=2.0), page_size=2)
    yield client
    client.close()


@pytest.fixture
def rakuten(sandbox_url: str, account: str) -> Iterator[RakutenClient]:
    """The Rakuten adapter for the account (its license key), two orders a page."""
    credentials = {"service_secret": "SP338531_secret", "license_key": account}
    client = RakutenClient(Endpoint(sandbox_url, credentials, timeout_seconds=2.0), page_size=2)
    yield client
    client.close()


@pytest.fixture
def jet(sandbox_url: str, account: str) -> Iterator[JetClient]:
    """The Jet adapter for the account (its token), two orders a page."""
    client = JetClient(Endpoint(sandbox_url, {"token": account}, timeout_seconds=2.0), page_size=2)
    yield client
    client.close()


def all_pages(client: Any, since: datetime = LONG_AGO) -> list[RemoteOrder]:
    orders: list[RemoteOrder] = []
    page = client.list_orders(since)
    orders += page.orders
    while page.next_page is not None:
        page = client.list_orders(since, page.next_page)
        orders += page.orders
    return orders


def request(order_id: str, action: str, payload: dict[str, Any], key: str | None = None) -> SyncRequest:
    item = uuid4()
    return SyncRequest(
        item_id=item,
        order_id=uuid4(),
        marketplace_order_id=order_id,
        action=action,
        reference=str(uuid4()),
        idempotency_key=key or str(item),
        message=outbox.decode(action, {"marketplace_order_id": order_id, **payload}),
    )


def lines_of(view: dict[str, Any], quantities: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Payload lines (as the outbound queue writes them) for a sandbox order view."""
    return [
        {
            "line_id": line["line_id"],
            "sku": line["sku"],
            "quantity": (quantities or {}).get(line["line_id"], q),
        }
        for line in view["lines"]
        if (q := line["quantity"] - line["shipped"] - line["cancelled"])
        and (quantities is None or line["line_id"] in quantities)
    ]


def ship_payload(
    lines: list[dict[str, Any]], carrier: str = "ups", tracking: str = "1Z999AA10123456784"
) -> dict[str, Any]:
    return {
        "shipment_id": str(uuid4()),
        "carrier": carrier,
        "tracking_number": tracking,
        "shipping_class": "express",
        "shipped_at": SHIPPED_AT,
        "lines": lines,
    }


def cancel_payload(
    lines: list[dict[str, Any]], reason: str = "out_of_stock", restock: bool = False
) -> dict[str, Any]:
    return {
        "cancellation_id": str(uuid4()),
        "dispute_id": None,
        "reason": reason,
        "requested_by": "seller",
        "restock": restock,
        "lines": lines,
    }


def refund_payload(
    line: dict[str, Any], quantity: int, item: str, tax: str, shipping: str = "0.00"
) -> dict[str, Any]:
    total = str(Decimal(item) + Decimal(tax) + Decimal(shipping))
    return {
        "refund_id": str(uuid4()),
        "reason": "damaged",
        "currency": "USD",
        "item_amount": item,
        "tax_amount": tax,
        "shipping_amount": shipping,
        "total": total,
        "lines": [
            {
                "line_id": line["line_id"],
                "sku": line["sku"],
                "quantity": quantity,
                "item_amount": item,
                "tax_amount": tax,
                "shipping_amount": shipping,
                "total": total,
            }
        ],
    }


def walmart_line(view: dict[str, Any], index: int = 0) -> dict[str, Any]:
    """A sandbox line as the Walmart adapter names it (line numbers 1, 2, ...)."""
    line = dict(view["lines"][index])
    line["line_id"] = str(index + 1)
    return line


# ------------------------------------------------------------------------------------------ Walmart


def test_walmart_pages_through_orders_and_maps_each_once(
    sandbox: Sandbox, walmart: WalmartClient, account: str
) -> None:
    """Five new Walmart orders come back over three pages, each once, mapped with amounts and acknowledgement due."""
    made = sandbox.orders("walmart", account, count=5)
    found = all_pages(walmart)
    assert sorted(o.order.marketplace_order_id for o in found) == sorted(v["order_id"] for v in made)
    by_id = {o.order.marketplace_order_id: o for o in found}
    for view in made:
        remote = by_id[view["order_id"]]
        assert remote.needs_acknowledgement
        assert remote.order.payment_status == PaymentStatus.PAID
        assert remote.order.buyer.email == view["buyer_email"]
        assert [(line.line_id, line.sku, line.quantity) for line in remote.order.lines] == [
            (str(n), line["sku"], line["quantity"]) for n, line in enumerate(view["lines"], 1)
        ]
        assert [(line.unit_price, line.tax, line.shipping) for line in remote.order.lines] == [
            (Decimal(line["unit_price"]), Decimal(line["tax"]), Decimal(line["shipping"]))
            for line in view["lines"]
        ]
        assert sum(line.total for line in remote.order.lines) == Decimal(view["total"])
    assert sandbox.violations() == []


def test_walmart_acknowledge_ship_cancel_refund_reach_the_marketplace(
    sandbox: Sandbox, walmart: WalmartClient, account: str
) -> None:
    """Acknowledgement, a shipment, a cancellation and a refund by line land on the sandbox's order as sent."""
    view = sandbox.orders("walmart", account, count=1, max_lines=1)[0]
    order_id = view["order_id"]
    line = walmart_line(view)
    quantity = line["quantity"]
    assert walmart.send(request(order_id, "acknowledge", {"lines": []})) == Accepted()
    assert sandbox.order("walmart", account, order_id)["acknowledged_at"] is not None
    assert not all_pages(walmart)[0].needs_acknowledgement

    ship = {**line, "quantity": 1}
    outcome = walmart.send(request(order_id, "ship", ship_payload([ship])))
    assert outcome == Accepted(marketplace_reference="1Z999AA10123456784")
    if quantity > 1:
        walmart.send(request(order_id, "cancel", cancel_payload([{**line, "quantity": quantity - 1}])))
    unit = Decimal(line["unit_price"])
    walmart.send(request(order_id, "refund", refund_payload(line, 1, str(unit), "0.50")))

    after = sandbox.order("walmart", account, order_id)
    assert after["lines"][0]["shipped"] == 1
    assert after["lines"][0]["cancelled"] == quantity - 1
    statuses = after["walmart"]["orderLines"]["orderLine"][0]["orderLineStatuses"]["orderLineStatus"]
    tracking = next(s["trackingInfo"] for s in statuses if s["status"] == "Shipped")
    assert tracking["carrierName"]["carrier"] == "UPS"
    assert tracking["methodCode"] == "Express"
    if quantity > 1:
        assert (
            next(s for s in statuses if s["status"] == "Cancelled")["cancellationReason"]
            == "SELLER_CANCEL_OUT_OF_STOCK"
        )
    state = walmart.order_state(order_id)
    assert state.shipped == {"1": 1}
    assert state.cancelled == {"1": quantity - 1}
    assert Decimal(state.refunded_total) == unit + Decimal("0.50")
    assert sandbox.violations() == []


def test_walmart_retried_request_has_one_effect_even_when_the_answer_is_lost(
    sandbox: Sandbox, walmart: WalmartClient, account: str
) -> None:
    """A shipment whose answer is lost is retried with the same correlation id: Walmart applies it once."""
    view = sandbox.orders("walmart", account, count=1, max_lines=1)[0]
    line = walmart_line(view)
    ship = request(view["order_id"], "ship", ship_payload([{**line, "quantity": 1}]))
    sandbox.fault("walmart", "shippingUpdates", "lost")
    with pytest.raises(TransientMarketplaceError):
        walmart.send(ship)
    assert walmart.send(ship) == Accepted(marketplace_reference="1Z999AA10123456784")
    assert walmart.send(ship) == Accepted(marketplace_reference="1Z999AA10123456784")
    effects = sandbox.effects("walmart", account, key=ship.idempotency_key)
    assert [(e["operation"], e["attempts"]) for e in effects] == [("shippingUpdates", 3)]
    assert sandbox.order("walmart", account, view["order_id"])["lines"][0]["shipped"] == 1


@pytest.mark.parametrize(
    ("fault", "options", "code"),
    [
        ("throttle", {"retry_after": 7}, "QuotaExceeded"),
        ("server_error", {"status": 503}, "InternalFailure"),
        ("timeout", {"seconds": 3}, "timeout"),
        ("reset", {}, "connection"),
    ],
)
def test_walmart_faults_are_transient(
    sandbox: Sandbox, walmart: WalmartClient, account: str, fault: str, options: dict[str, Any], code: str
) -> None:
    """429 (with its Retry-After), 5xx, a timeout and a reset connection are transient; nothing is applied."""
    view = sandbox.orders("walmart", account, count=1, max_lines=1)[0]
    cancel = request(view["order_id"], "cancel", cancel_payload([{**walmart_line(view), "quantity": 1}]))
    sandbox.fault("walmart", "cancelOrderLines", fault, **options)
    with pytest.raises(TransientMarketplaceError) as raised:
        walmart.send(cancel)
    assert raised.value.code == code
    if fault == "throttle":
        assert raised.value.retry_after == 7
    assert sandbox.order("walmart", account, view["order_id"])["lines"][0]["cancelled"] == 0
    walmart.send(cancel)
    assert sandbox.order("walmart", account, view["order_id"])["lines"][0]["cancelled"] == 1


def test_walmart_refusals_are_permanent(sandbox: Sandbox, walmart: WalmartClient, account: str) -> None:
    """An unknown order, shipping more than is open, and refunding an unshipped line are permanent errors."""
    view = sandbox.orders("walmart", account, count=1, max_lines=1)[0]
    line = walmart_line(view)
    with pytest.raises(PermanentMarketplaceError) as missing:
        walmart.send(request("9999999999999", "ship", ship_payload([line])))
    assert missing.value.code == "CONTENT_NOT_FOUND.GMP_ORDER_API"
    with pytest.raises(PermanentMarketplaceError):
        walmart.send(
            request(view["order_id"], "ship", ship_payload([{**line, "quantity": line["quantity"] + 1}]))
        )
    with pytest.raises(PermanentMarketplaceError):
        walmart.send(request(view["order_id"], "refund", refund_payload(line, 1, "1.00", "0.00")))
    assert sandbox.effects("walmart", account, order_id=view["order_id"]) == []
    assert sandbox.violations() == []


def test_walmart_sandbox_refuses_a_wrong_shape(sandbox: Sandbox, sandbox_url: str, account: str) -> None:
    """A misspelt field, or a shipment naming no carrier, is a recorded violation and a 400 in Walmart's shape."""
    view = sandbox.orders("walmart", account, count=1, max_lines=1)[0]
    body = {"orderShipment": {"orderLines": {"orderLine": [{"lineNumber": "1", "orderLineStatus": []}]}}}
    headers = {
        "WM_SEC.ACCESS_TOKEN": account,
        "WM_QOS.CORRELATION_ID": "c-1",
        "WM_SVC.NAME": "Walmart Marketplace",
    }
    response = httpx.post(f"{sandbox_url}/v3/orders/{view['order_id']}/shipping", json=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["errors"]["error"][0]["code"] == "InvalidInput"
    status = {
        "status": "Shipped",
        "statusQuantity": {"unitOfMeasurement": "EACH", "amount": "1"},
        "trackingInfo": {
            "shipDateTime": 1_780_000_000_000,
            "carrierName": {},
            "methodCode": "Standard",
            "trackingNumber": "T1",
        },
    }
    no_carrier = {
        "orderShipment": {
            "orderLines": {
                "orderLine": [{"lineNumber": "1", "orderLineStatuses": {"orderLineStatus": [status]}}]
            }
        }
    }
    response = httpx.post(
        f"{sandbox_url}/v3/orders/{view['order_id']}/shipping", json=no_carrier, headers=headers
    )
    assert response.status_code == 400
    assert [v["operation"] for v in sandbox.violations()] == ["shippingUpdates", "shippingUpdates"]
    assert sandbox.order("walmart", account, view["order_id"])["lines"][0]["shipped"] == 0
    sandbox.clear_violations()


def test_walmart_buyer_cancellation_request_is_a_request_not_applied(
    sandbox: Sandbox, walmart: WalmartClient, account: str
) -> None:
    """A customer's cancellation request (intentToCancel) is reported as a request, not a cancellation Walmart applied."""
    view = sandbox.orders("walmart", account, count=1, max_lines=2)[0]
    after = sandbox.event("walmart", account, view["order_id"], "buyer_cancel")
    assert all(line["intentToCancel"] for line in after["walmart"]["orderLines"]["orderLine"])
    (remote,) = all_pages(walmart)
    (fact,) = remote.facts
    assert isinstance(fact, BuyerCancelled)
    assert not fact.applied
    assert len(fact.lines or ()) == len(view["lines"])
    assert walmart.order_state(view["order_id"]).cancelled == {
        str(n): 0 for n in range(1, len(view["lines"]) + 1)
    }


def test_walmart_lists_only_orders_changed_since(
    sandbox: Sandbox, walmart: WalmartClient, account: str
) -> None:
    """Orders changed before `updated_after` are left out; one changed later comes back."""
    _old, changed = sandbox.orders("walmart", account, count=2, purchased_at="2026-01-01T00:00:00Z")
    assert all_pages(walmart, datetime(2026, 6, 1, tzinfo=UTC)) == []
    start = datetime.now(UTC) - timedelta(seconds=1)
    walmart.acknowledge(changed["order_id"])
    assert [o.order.marketplace_order_id for o in all_pages(walmart, start)] == [changed["order_id"]]


def test_walmart_sandbox_filters_by_end_dates_and_refuses_unknown_parameters(
    sandbox: Sandbox, sandbox_url: str, account: str
) -> None:
    """`createdEndDate` and `lastModifiedEndDate` bound the listing; an unknown query parameter is a violation."""
    old = sandbox.orders("walmart", account, count=1, purchased_at="2026-01-01T00:00:00Z")[0]
    sandbox.orders("walmart", account, count=1)
    headers = {
        "WM_SEC.ACCESS_TOKEN": account,
        "WM_QOS.CORRELATION_ID": "c-2",
        "WM_SVC.NAME": "Walmart Marketplace",
    }

    def listed(**params: str) -> list[str]:
        response = httpx.get(f"{sandbox_url}/v3/orders", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [o["purchaseOrderId"] for o in response.json()["list"]["elements"]["order"]]

    assert listed(createdEndDate="2026-02-01T00:00:00Z") == [old["order_id"]]
    assert len(listed()) == 2
    cutoff = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert listed(lastModifiedEndDate=cutoff) == [old["order_id"]]
    refused = httpx.get(f"{sandbox_url}/v3/orders", params={"since": "x"}, headers=headers)
    assert refused.status_code == 400
    assert [v["errors"] for v in sandbox.violations()] == [["unknown query parameter 'since'"]]
    sandbox.clear_violations()


# ------------------------------------------------------------------------------------------ Rakuten


def test_rakuten_pages_and_maps_payment(sandbox: Sandbox, rakuten: RakutenClient, account: str) -> None:
    """Rakuten orders page through once each; an unpaid order imports pending and paid once Rakuten says so."""
    paid = sandbox.orders("rakuten", account, count=3)
    unpaid = sandbox.orders("rakuten", account, count=1, paid=False)[0]
    found = {o.order.marketplace_order_id: o for o in all_pages(rakuten)}
    assert sorted(found) == sorted(v["order_id"] for v in [*paid, unpaid])
    assert found[unpaid["order_id"]].order.payment_status == PaymentStatus.PENDING
    assert found[paid[0]["order_id"]].order.payment_status == PaymentStatus.PAID
    line = paid[0]["lines"][0]
    mapped = found[paid[0]["order_id"]].order.lines[0]
    assert (mapped.line_id, mapped.sku, mapped.quantity, mapped.unit_price) == (
        line["line_id"],
        line["sku"],
        line["quantity"],
        Decimal(line["unit_price"]),
    )
    sandbox.event("rakuten", account, unpaid["order_id"], "pay")
    again = {o.order.marketplace_order_id: o for o in all_pages(rakuten)}
    assert again[unpaid["order_id"]].order.payment_status == PaymentStatus.PAID
    assert sandbox.violations() == []


def test_rakuten_cancel_carries_the_restock_choice(
    sandbox: Sandbox, rakuten: RakutenClient, account: str
) -> None:
    """A cancellation with restock puts the units back into Rakuten's stock; one without does not."""
    view = sandbox.orders("rakuten", account, count=1, max_lines=2)[0]
    first, *rest = lines_of(view)
    rakuten.send(request(view["order_id"], "cancel", cancel_payload([first], restock=True)))
    after = sandbox.order("rakuten", account, view["order_id"])
    assert after["restocked"] == {first["sku"]: first["quantity"]}
    assert after["cancellations"][0]["reason"] == "OUT_OF_STOCK"
    if rest:
        rakuten.send(request(view["order_id"], "cancel", cancel_payload(rest, reason="buyer_cancelled")))
        after = sandbox.order("rakuten", account, view["order_id"])
        assert after["restocked"] == {first["sku"]: first["quantity"]}
        assert after["cancellations"][1]["restock"] is False
    assert after["status"] == "canceled"
    assert sandbox.violations() == []


def test_rakuten_ship_and_refund_once_per_request_id(
    sandbox: Sandbox, rakuten: RakutenClient, account: str
) -> None:
    """A shipment and a refund sent twice with the same key apply once; the order state says so."""
    view = sandbox.orders("rakuten", account, count=1, max_lines=1)[0]
    (line,) = lines_of(view)
    price = view["lines"][0]["unit_price"]
    ship = request(
        view["order_id"], "ship", ship_payload([line], carrier="royal_mail", tracking="RM123456785GB")
    )
    first = rakuten.send(ship)
    assert rakuten.send(ship) == first
    assert isinstance(first, Accepted)
    assert first.marketplace_reference
    refund = request(view["order_id"], "refund", refund_payload(line, 1, price, "0.00"))
    sandbox.fault("rakuten", "refundOrder", "lost")
    with pytest.raises(TransientMarketplaceError):
        rakuten.send(refund)
    rakuten.send(refund)
    after = sandbox.order("rakuten", account, view["order_id"])
    assert after["shipments"][0]["delivery_company"] == "1000"
    assert after["shipments"][0]["delivery_company_name"] == "Royal Mail"
    assert len(after["refunds"]) == 1
    state = rakuten.order_state(view["order_id"])
    assert state.shipped == {line["line_id"]: line["quantity"]}
    assert Decimal(state.refunded_total) == Decimal(price)
    assert [e["attempts"] for e in sandbox.effects("rakuten", account, key=refund.idempotency_key)] == [2]
    assert sandbox.violations() == []


def test_rakuten_faults_and_refusals(sandbox: Sandbox, rakuten: RakutenClient, account: str) -> None:
    """A 429 is transient with its Retry-After; cancelling shipped units and a bad credential are permanent."""
    view = sandbox.orders("rakuten", account, count=1, max_lines=1)[0]
    (line,) = lines_of(view)
    sandbox.fault("rakuten", "updateOrderShipping", "throttle", retry_after=2)
    with pytest.raises(TransientMarketplaceError) as throttled:
        rakuten.send(request(view["order_id"], "ship", ship_payload([line])))
    assert throttled.value.retry_after == 2
    rakuten.send(request(view["order_id"], "ship", ship_payload([line])))
    with pytest.raises(PermanentMarketplaceError) as refused:
        rakuten.send(request(view["order_id"], "cancel", cancel_payload([line])))
    assert refused.value.code == "ORDER_EXT_API_UPDATE_ERROR_002"
    with pytest.raises(PermanentMarketplaceError) as unauthorized:
        RakutenClient(Endpoint(sandbox.url, {})).order_state(view["order_id"])
    assert unauthorized.value.message.startswith("HTTP 401")
    assert sandbox.violations() == []


def test_rakuten_buyer_cancellation_request_is_a_request_not_applied(
    sandbox: Sandbox, rakuten: RakutenClient, account: str
) -> None:
    """A buyer's cancellation request on Rakuten (cancelRequest) is reported as a request, not an applied cancellation."""
    view = sandbox.orders("rakuten", account, count=1)[0]
    after = sandbox.event("rakuten", account, view["order_id"], "buyer_cancel")
    assert after["rakuten"]["cancelRequest"] is not None
    (remote,) = all_pages(rakuten)
    (fact,) = remote.facts
    assert isinstance(fact, BuyerCancelled)
    assert not fact.applied


def test_rakuten_duplicate_page_repeats_an_order(
    sandbox: Sandbox, rakuten: RakutenClient, account: str
) -> None:
    """With duplicate deliveries switched on, a page repeats the last order of the previous one (the importer dedupes)."""
    made = sandbox.orders("rakuten", account, count=4)
    sandbox.fault("rakuten", "searchOrder", "duplicate")
    ids = [o.order.marketplace_order_id for o in all_pages(rakuten)]
    assert len(ids) == 5
    assert sorted(set(ids)) == sorted(v["order_id"] for v in made)


# ---------------------------------------------------------------------------------------------- Jet


def test_jet_pages_and_cancels_whole_orders(sandbox: Sandbox, jet: JetClient, account: str) -> None:
    """Jet orders page through once each; a cancellation cancels the whole order, once per alt_cancel_id."""
    made = sandbox.orders("jet", account, count=3, max_lines=2)
    assert sorted(o.order.marketplace_order_id for o in all_pages(jet)) == sorted(v["order_id"] for v in made)
    view = made[0]
    cancel = request(view["order_id"], "cancel", cancel_payload(lines_of(view), reason="fraud_suspected"))
    assert jet.send(cancel) == Accepted()
    assert jet.send(cancel) == Accepted()
    after = sandbox.order("jet", account, view["order_id"])
    assert after["status"] == "canceled"
    assert all(line["cancelled"] == line["quantity"] for line in after["lines"])
    assert after["cancellations"] == [{"alt_cancel_id": cancel.idempotency_key, "reason": "Fraud"}]
    assert jet.order_state(view["order_id"]).status == "canceled"
    assert sandbox.violations() == []


def test_jet_refuses_to_cancel_a_shipped_order(sandbox: Sandbox, jet: JetClient, account: str) -> None:
    """Once something shipped, Jet refuses a cancellation: a permanent error."""
    view = sandbox.orders("jet", account, count=1, max_lines=1)[0]
    (line,) = lines_of(view)
    jet.send(request(view["order_id"], "ship", ship_payload([{**line, "quantity": 1}], carrier="fedex")))
    with pytest.raises(PermanentMarketplaceError):
        jet.send(
            request(
                view["order_id"],
                "cancel",
                cancel_payload(lines_of(sandbox.order("jet", account, view["order_id"]))),
            )
        )
    assert sandbox.order("jet", account, view["order_id"])["shipments"][0]["carrier"] == "FedEx"


def test_jet_ship_and_refund_once_per_merchant_id(sandbox: Sandbox, jet: JetClient, account: str) -> None:
    """A shipment and a refund retried after lost answers apply once (alt_shipment_id, alt_refund_id)."""
    view = sandbox.orders("jet", account, count=1, max_lines=1)[0]
    (line,) = lines_of(view)
    price = view["lines"][0]["unit_price"]
    ship = request(
        view["order_id"], "ship", ship_payload([line], carrier="usps", tracking="9400100000000000000000")
    )
    sandbox.fault("jet", "shipOrder", "lost")
    with pytest.raises(TransientMarketplaceError):
        jet.send(ship)
    jet.send(ship)
    refund = request(view["order_id"], "refund", refund_payload(line, 1, price, "0.10"))
    first = jet.send(refund)
    assert isinstance(first, Accepted)
    assert first.marketplace_reference
    assert jet.send(refund) == first
    state = jet.order_state(view["order_id"])
    assert state.shipped == {line["line_id"]: line["quantity"]}
    assert Decimal(state.refunded_total) == Decimal(price) + Decimal("0.10")
    assert [e["attempts"] for e in sandbox.effects("jet", account, key=ship.idempotency_key)] == [2]
    assert [e["attempts"] for e in sandbox.effects("jet", account, key=refund.idempotency_key)] == [2]
    assert sandbox.violations() == []


def test_jet_throttle_and_server_errors_are_transient(sandbox: Sandbox, jet: JetClient, account: str) -> None:
    """Jet's 429 and 500 on listing orders are transient errors; the next call succeeds."""
    sandbox.orders("jet", account, count=1)
    sandbox.fault("jet", "listOrders", "throttle", retry_after=3)
    with pytest.raises(TransientMarketplaceError) as throttled:
        jet.list_orders(LONG_AGO)
    assert throttled.value.retry_after == 3
    sandbox.fault("jet", "listOrders", "server_error", status=500)
    with pytest.raises(TransientMarketplaceError):
        jet.list_orders(LONG_AGO)
    assert len(jet.list_orders(LONG_AGO).orders) == 1


def test_jet_buyer_cancellation_request_is_a_request_not_applied(
    sandbox: Sandbox, jet: JetClient, account: str
) -> None:
    """A Jet customer's cancellation request (request_order_cancel_qty) is a whole-order request, not an applied one."""
    view = sandbox.orders("jet", account, count=1)[0]
    after = sandbox.event("jet", account, view["order_id"], "buyer_cancel")
    assert all(item["request_order_cancel_qty"] > 0 for item in after["jet"]["order_items"])
    (remote,) = all_pages(jet)
    (fact,) = remote.facts
    assert isinstance(fact, BuyerCancelled)
    assert not fact.applied
    assert fact.lines is None


class FakeClock:
    """The adapter's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_walmart_client_credentials_token_is_fetched_kept_and_renewed(
    sandbox: Sandbox, sandbox_url: str, account: str
) -> None:
    """With a client id and secret the adapter gets a token from /v3/token, keeps it until it nearly expires,
    and fetches a new one when Walmart answers 401."""
    sandbox.orders("walmart", account, count=1)
    clock = FakeClock()
    credentials = {"client_id": account, "client_secret": "s3cret"}
    client = WalmartClient(Endpoint(sandbox_url, credentials), clock=clock)
    try:
        assert len(client.list_orders(LONG_AGO).orders) == 1  # fetched a token that names the account
        sandbox.fault("walmart", "getToken", "server_error", status=503)
        assert len(client.list_orders(LONG_AGO).orders) == 1  # the token is kept: no second fetch
        clock.now += 900
        with pytest.raises(TransientMarketplaceError):
            client.list_orders(LONG_AGO)  # expired: the fetch of a new one meets the 503
        assert len(client.list_orders(LONG_AGO).orders) == 1
    finally:
        client.close()
    stale = WalmartClient(
        Endpoint(sandbox_url, {**credentials, "access_token": "wmt.not-issued!"}), clock=clock
    )
    try:
        assert len(stale.list_orders(LONG_AGO).orders) == 1  # 401 on the stale token, then a fresh one
    finally:
        stale.close()
    with pytest.raises(PermanentMarketplaceError) as refused:
        WalmartClient(Endpoint(sandbox_url, {"client_id": account, "client_secret": ""})).list_orders(
            LONG_AGO
        )
    assert refused.value.message.startswith("HTTP 401")
    assert sandbox.violations() == []

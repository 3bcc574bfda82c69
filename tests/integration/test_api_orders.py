"""The orders API over HTTP on real PostgreSQL: import, read, the command endpoints, history, All Sales."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from api_support import UPS_TRACKING, Seller, order_body
from litestar.testing import TestClient

from ledger.aggregates.values import Context, Marketplace, SyncAction
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget, connect
from ledger.projections.all_sales import AllSalesProjection
from ledger.projections.base import rebuild

PROBLEM = "https://ledger.dev/problems/"
SHIP = {"carrier": "ups", "tracking_number": UPS_TRACKING}


def _import(client: TestClient[Any], seller: Seller, marketplace: Marketplace = Marketplace.AMAZON) -> str:
    response = client.post("/v1/orders", json=order_body(seller.accounts[marketplace]), headers=seller.auth())
    assert response.status_code == 201, response.text
    return str(response.json()["order_id"])


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + code
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body


def test_import_creates_then_reports_unchanged(client: TestClient[Any], seller: Seller) -> None:
    """The first import is 201 created; the same order again is 200, created false, no event."""
    body = order_body(seller.accounts[Marketplace.WALMART])
    first = client.post("/v1/orders", json=body, headers=seller.auth())
    assert first.status_code == 201
    assert first.json()["created"] is True
    assert first.json()["events"] == ["Imported"]
    again = client.post("/v1/orders", json=body, headers=seller.auth())
    assert again.status_code == 200
    assert again.json() == first.json() | {"created": False, "events": []}


def test_reimport_with_other_lines_is_an_import_conflict(client: TestClient[Any], seller: Seller) -> None:
    """A re-import that differs other than pending to paid is 409 import-conflict."""
    body = order_body(seller.accounts[Marketplace.WALMART])
    assert client.post("/v1/orders", json=body, headers=seller.auth()).status_code == 201
    changed = body | {"buyer": {"name": "Somebody Else", "email": "else@example.com"}}
    _problem(client.post("/v1/orders", json=changed, headers=seller.auth()), 409, "import-conflict")


def test_bulk_import_reports_each_order(client: TestClient[Any], seller: Seller) -> None:
    """`POST /v1/orders/import` answers one result per order, in order, a failure not blocking the others."""
    good = order_body(seller.accounts[Marketplace.EBAY])
    bad = order_body(
        seller.accounts[Marketplace.EBAY],
        lines=[{"line_id": "1", "sku": "X", "quantity": 1, "unit_price": "1.001"}],
    )
    response = client.post("/v1/orders/import", json={"orders": [good, bad, good]}, headers=seller.auth())
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["imported"], body["failed"]) == (2, 1)
    first, second, third = body["results"]
    assert first["created"] is True
    assert second["error"]["status"] == 422
    assert second["error"]["type"].startswith(PROBLEM)
    assert third["created"] is False
    assert third["order_id"] == first["order_id"]


def test_get_order_has_etag_and_full_state(client: TestClient[Any], seller: Seller) -> None:
    """`GET /v1/orders/{id}` returns the order in full with `ETag: "<version>"`."""
    order_id = _import(client, seller)
    response = client.get(f"/v1/orders/{order_id}", headers=seller.auth())
    assert response.status_code == 200
    assert response.headers["etag"] == '"1"'
    order = response.json()
    assert order["order_id"] == order_id
    assert order["total"] == "36.99"
    assert order["buyer_name"] == "Ann Lee"
    assert [line["line_id"] for line in order["lines"]] == ["1", "2"]
    for name in ("shipments", "cancellations", "refunds", "disputes", "sync"):
        assert order[name] == []


def test_ship_then_refund_then_history(client: TestClient[Any], seller: Seller) -> None:
    """Ship everything, refund a unit: 201s with versions and ids; the history lists both, hash-chained."""
    order_id = _import(client, seller, Marketplace.WALMART)
    shipped = client.post(f"/v1/orders/{order_id}/shipments", json=SHIP, headers=seller.auth())
    assert shipped.status_code == 201, shipped.text
    assert shipped.json()["version"] == 2
    assert shipped.json()["events"] == ["Shipped"]
    UUID(shipped.json()["shipment_id"])
    refund = {"reason": "damaged", "lines": [{"line_id": "1", "quantity": 1}]}
    refunded = client.post(f"/v1/orders/{order_id}/refunds", json=refund, headers=seller.auth())
    assert refunded.status_code == 201, refunded.text
    assert refunded.json()["events"] == ["Refunded"]
    UUID(refunded.json()["refund_id"])
    order = client.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()
    assert order["status"] == "shipped"
    assert order["refunded_total"] == "13.50"
    history = client.get(f"/v1/orders/{order_id}/history", headers=seller.auth())
    assert history.status_code == 200
    events = history.json()["events"]
    assert [e["type"] for e in events] == ["Imported", "Shipped", "Refunded"]
    assert all(e["source"] == "api" and e["actor"] == "admin-key" for e in events)
    assert [e["prev_hash"] for e in events[1:]] == [e["hash"] for e in events[:-1]]


def test_cancel_dispute_and_restock(client: TestClient[Any], seller: Seller) -> None:
    """Cancel a line, open and close a buyer dispute, restock the cancelled units: each a 201."""
    order_id = _import(client, seller, Marketplace.WALMART)
    url = f"/v1/orders/{order_id}"
    cancel = {
        "reason": "out_of_stock",
        "lines": [{"line_id": "2", "quantity": 1}],
        "restock_in_ledger": False,
    }
    cancelled = client.post(f"{url}/cancellations", json=cancel, headers=seller.auth())
    assert cancelled.status_code == 201, cancelled.text
    assert "cancellation_id" in cancelled.json()
    opened = client.post(f"{url}/disputes", json={"reason": "item missing"}, headers=seller.auth())
    assert opened.status_code == 201, opened.text
    dispute_id = opened.json()["dispute_id"]
    closed = client.post(
        f"{url}/disputes/{dispute_id}/close", json={"outcome": "rejected"}, headers=seller.auth()
    )
    assert closed.status_code == 201, closed.text
    assert closed.json()["events"] == ["DisputeClosed"]
    restocked = client.post(
        f"{url}/restocks", json={"lines": [{"line_id": "2", "quantity": 1}]}, headers=seller.auth()
    )
    assert restocked.status_code == 201, restocked.text
    assert restocked.json()["events"] == ["Restocked"]
    order = client.get(url, headers=seller.auth()).json()
    assert order["cancelled_units"] == 1
    assert order["lines"][1]["restocked"] == 1
    assert order["disputes"][0]["outcome"] == "rejected"


def test_order_as_of_version(client: TestClient[Any], seller: Seller) -> None:
    """`?version=1` shows the order before its shipment; a version past the last is 422."""
    order_id = _import(client, seller, Marketplace.WALMART)
    assert (
        client.post(f"/v1/orders/{order_id}/shipments", json=SHIP, headers=seller.auth()).status_code == 201
    )
    then = client.get(f"/v1/orders/{order_id}", params={"version": 1}, headers=seller.auth())
    assert then.status_code == 200
    assert then.json()["status"] == "unshipped"
    assert then.headers["etag"] == '"1"'
    _problem(
        client.get(f"/v1/orders/{order_id}", params={"version": 9}, headers=seller.auth()),
        422,
        "invalid-input",
    )


def test_rule_refusals_have_their_problem_types(client: TestClient[Any], seller: Seller) -> None:
    """Cancel after shipment, ship twice and over-refund are 409s with the rule's problem type."""
    order_id = _import(client, seller, Marketplace.WALMART)
    url = f"/v1/orders/{order_id}"
    assert client.post(f"{url}/shipments", json=SHIP, headers=seller.auth()).status_code == 201
    _problem(client.post(f"{url}/shipments", json=SHIP, headers=seller.auth()), 409, "nothing-to-ship")
    _problem(
        client.post(f"{url}/cancellations", json={"reason": "out_of_stock"}, headers=seller.auth()),
        409,
        "cancel-after-shipment",
    )
    over = {"reason": "goodwill", "lines": [{"line_id": "1", "amount": "999.00"}]}
    _problem(client.post(f"{url}/refunds", json=over, headers=seller.auth()), 409, "over-refund")


def test_invalid_tracking_number_is_422_with_field(client: TestClient[Any], seller: Seller) -> None:
    """A tracking number not of the carrier's format is 422 naming the field."""
    order_id = _import(client, seller, Marketplace.WALMART)
    body = {"carrier": "ups", "tracking_number": "1Z-not-a-number"}
    problem = _problem(
        client.post(f"/v1/orders/{order_id}/shipments", json=body, headers=seller.auth()),
        422,
        "invalid-tracking-number",
    )
    assert problem["errors"][0]["field"]


def test_idempotent_replay_returns_the_first_response(client: TestClient[Any], seller: Seller) -> None:
    """The same Idempotency-Key and body answers as the first time and records nothing; another body is 422."""
    order_id = _import(client, seller, Marketplace.WALMART)
    url = f"/v1/orders/{order_id}/shipments"
    headers = seller.auth() | {"Idempotency-Key": "ship-1"}
    first = client.post(url, json=SHIP, headers=headers)
    again = client.post(url, json=SHIP, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    order = client.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()
    assert order["version"] == 2
    assert len(order["shipments"]) == 1
    other = SHIP | {"shipping_class": "express"}
    _problem(client.post(url, json=other, headers=headers), 422, "idempotency-key-reused")


def test_if_match_guards_the_version(client: TestClient[Any], seller: Seller) -> None:
    """`If-Match` with the current ETag succeeds; a stale one is 412; a malformed one is 400."""
    order_id = _import(client, seller, Marketplace.WALMART)
    url = f"/v1/orders/{order_id}"
    etag = client.get(url, headers=seller.auth()).headers["etag"]
    dispute = {"reason": "late"}
    assert (
        client.post(f"{url}/disputes", json=dispute, headers=seller.auth() | {"If-Match": etag}).status_code
        == 201
    )
    _problem(
        client.post(f"{url}/disputes", json=dispute, headers=seller.auth() | {"If-Match": etag}),
        412,
        "version-mismatch",
    )
    _problem(
        client.post(f"{url}/disputes", json=dispute, headers=seller.auth() | {"If-Match": "v2"}),
        400,
        "bad-request",
    )


def test_unknown_order_is_404(client: TestClient[Any], seller: Seller) -> None:
    """An order that does not exist is 404 order-not-found, for reads and commands alike."""
    missing = "00000000-0000-4000-8000-000000000000"
    _problem(client.get(f"/v1/orders/{missing}", headers=seller.auth()), 404, "order-not-found")
    _problem(
        client.post(f"/v1/orders/{missing}/shipments", json=SHIP, headers=seller.auth()),
        404,
        "order-not-found",
    )


def test_list_orders_from_all_sales(
    client: TestClient[Any],
    api_ledger: Ledger,
    pg_target: PostgresTarget,
    seller: Seller,
    other_seller: Seller,
) -> None:
    """`GET /v1/orders` lists the seller's orders newest first, filters, pages with a cursor, refuses bad ones."""
    ids = []
    for day in range(1, 4):
        body = order_body(seller.accounts[Marketplace.JET], purchased_at=f"2026-11-0{day}T10:00:00Z")
        ids.append(client.post("/v1/orders", json=body, headers=seller.auth()).json()["order_id"])
    client.post(
        "/v1/orders", json=order_body(other_seller.accounts[Marketplace.JET]), headers=other_seller.auth()
    )
    shipped = client.post(f"/v1/orders/{ids[0]}/shipments", json=SHIP, headers=seller.auth())
    assert shipped.status_code == 201, shipped.text
    rebuild(AllSalesProjection(), lambda: connect(pg_target), api_ledger.recorder, api_ledger.mapper)

    listed = client.get("/v1/orders", headers=seller.auth())
    assert listed.status_code == 200, listed.text
    assert [o["order_id"] for o in listed.json()["items"]] == ids[::-1]
    assert listed.json()["next_cursor"] is None
    assert listed.json()["items"][0]["total"] == "36.99"

    page = client.get("/v1/orders", params={"limit": 2}, headers=seller.auth()).json()
    assert [o["order_id"] for o in page["items"]] == ids[:0:-1]
    rest = client.get("/v1/orders", params={"limit": 2, "cursor": page["next_cursor"]}, headers=seller.auth())
    assert [o["order_id"] for o in rest.json()["items"]] == ids[:1]

    shipped_only = client.get("/v1/orders", params={"status": "shipped"}, headers=seller.auth()).json()
    assert [o["order_id"] for o in shipped_only["items"]] == ids[:1]
    open_orders = client.get("/v1/orders", params={"open": "true"}, headers=seller.auth()).json()
    assert len(open_orders["items"]) == 2

    _problem(
        client.get("/v1/orders", params={"cursor": "nonsense"}, headers=seller.auth()), 422, "invalid-cursor"
    )
    _problem(
        client.get("/v1/orders", params={"status": "lost"}, headers=seller.auth()), 422, "invalid-filter"
    )
    _problem(client.get("/v1/orders", params={"limit": 501}, headers=seller.auth()), 422, "invalid-filter")
    _problem(
        client.get("/v1/orders", params={"marketplace": "etsy"}, headers=seller.auth()), 422, "invalid-filter"
    )


def test_import_idempotency_key_replays_and_refuses_another_body(
    client: TestClient[Any], seller: Seller
) -> None:
    """An import retried with its Idempotency-Key answers 201 as the first time; another body under it is 422."""
    body = order_body(seller.accounts[Marketplace.WALMART], payment_status="pending")
    headers = seller.auth() | {"Idempotency-Key": "import-1"}
    first = client.post("/v1/orders", json=body, headers=headers)
    again = client.post("/v1/orders", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    paid = body | {"payment_status": "paid"}
    _problem(client.post("/v1/orders", json=paid, headers=headers), 422, "idempotency-key-reused")
    recorded = client.post("/v1/orders", json=paid, headers=seller.auth() | {"Idempotency-Key": "import-2"})
    assert recorded.status_code == 200
    assert recorded.json()["events"] == ["PaymentCleared"]


def test_void_a_shipment_then_409_once_acknowledged(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger
) -> None:
    """`POST .../shipments/{id}/void` unships a pending shipment (its sync entry reads not_sent: voided); an
    acknowledged one is 409 shipment-acknowledged; an eBay partial cancellation is 409 naming the way out."""
    order_id = _import(client, seller, Marketplace.EBAY)
    shipped = client.post(f"/v1/orders/{order_id}/shipments", json=SHIP, headers=seller.auth())
    shipment_id = shipped.json()["shipment_id"]

    voided = client.post(
        f"/v1/orders/{order_id}/shipments/{shipment_id}/void",
        json={"reason": "wrong tracking number"},
        headers=seller.auth(),
    )

    assert voided.status_code == 201, voided.text
    assert voided.json()["events"] == ["ShipmentVoided"]
    order = client.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()
    assert (order["shipped_units"], order["shipments"][0]["voided"]) == (0, True)
    assert [(e["state"], e["reason"]) for e in order["sync"]] == [("not_sent", "voided")]
    partial = {"reason": "out_of_stock", "lines": [{"line_id": "1", "quantity": 1}]}
    refused = client.post(f"/v1/orders/{order_id}/cancellations", json=partial, headers=seller.auth())
    assert (
        "cancel the whole order or refund"
        in _problem(refused, 409, "partial-cancellation-not-supported")["detail"]
    )

    again = client.post(f"/v1/orders/{order_id}/shipments", json=SHIP, headers=seller.auth())
    second = again.json()["shipment_id"]
    api_ledger.record_sync_outcome(
        Context(actor="dispatcher"), UUID(order_id), action=SyncAction.SHIP, reference=second, accepted=True
    )
    late = client.post(
        f"/v1/orders/{order_id}/shipments/{second}/void", json={"reason": "late"}, headers=seller.auth()
    )
    _problem(late, 409, "shipment-acknowledged")


def test_an_import_may_carry_the_marketplaces_ship_by_date(client: TestClient[Any], seller: Seller) -> None:
    """`ship_by` (optional, a time with a zone) is kept and answered in UTC on the order; one without a zone is
    422 naming the field; an order imported without one answers null."""
    body = order_body(seller.accounts[Marketplace.AMAZON], ship_by="2026-11-23T07:59:59+01:00")
    created = client.post("/v1/orders", json=body, headers=seller.auth())
    assert created.status_code == 201, created.text
    order = client.get(f"/v1/orders/{created.json()['order_id']}", headers=seller.auth()).json()
    assert order["ship_by"] == "2026-11-23T06:59:59Z"
    naive = order_body(seller.accounts[Marketplace.AMAZON], ship_by="2026-11-23T07:59:59")
    problem = _problem(client.post("/v1/orders", json=naive, headers=seller.auth()), 422, "invalid-request")
    assert [e["field"] for e in problem["errors"]] == ["ship_by"]
    plain = client.post(
        "/v1/orders", json=order_body(seller.accounts[Marketplace.AMAZON]), headers=seller.auth()
    )
    assert (
        client.get(f"/v1/orders/{plain.json()['order_id']}", headers=seller.auth()).json()["ship_by"] is None
    )

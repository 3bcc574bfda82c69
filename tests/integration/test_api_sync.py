"""The outbound sync queue over HTTP on real PostgreSQL: list and filter, pages, an operator's retry, access."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import pytest
from api_support import UPS_TRACKING, Seller, order_body
from litestar.testing import TestClient
from order_scenarios import catch_up, rows

from ledger.aggregates.values import Context, Divergence, Marketplace, Role
from ledger.application.commands import RecordSyncCheck
from ledger.application.ledger import Ledger
from ledger.integrations.outbound import OutboundProjection
from ledger.projections import base

PROBLEM = "https://ledger.dev/problems/"
ITEM_FIELDS = {
    "id",
    "order_id",
    "marketplace",
    "action",
    "state",
    "attempts",
    "next_attempt_at",
    "last_error",
    "idempotency_key",
    "sequence",
    "reference",
    "operation",
    "blocked_by",
}


def _import(client: TestClient[Any], seller: Seller, marketplace: Marketplace) -> str:
    response = client.post("/v1/orders", json=order_body(seller.accounts[marketplace]), headers=seller.auth())
    assert response.status_code == 201, response.text
    return str(response.json()["order_id"])


def _ship(client: TestClient[Any], seller: Seller, order_id: str) -> str:
    body = {"carrier": "ups", "tracking_number": UPS_TRACKING}
    response = client.post(f"/v1/orders/{order_id}/shipments", json=body, headers=seller.auth())
    assert response.status_code == 201, response.text
    return str(response.json()["shipment_id"])


def _queue(
    client: TestClient[Any], seller: Seller, role: Role = Role.OPERATOR, **params: Any
) -> dict[str, Any]:
    response = client.get("/v1/sync/outbound", params=params, headers=seller.auth(role))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == PROBLEM + code


def _set(connect: base.Connect, item_id: str, state: str, attempts: int, error: str | None) -> None:
    """What the dispatcher does: change the item directly, through the view, stamping updated_at."""
    with connect() as conn:
        conn.execute(
            "UPDATE outbound_items SET state = %s, attempts = %s, last_error = %s,"
            " next_attempt_at = now() + interval '1 day', updated_at = now() WHERE id = %s",
            (state, attempts, error, UUID(item_id)),
        )


@pytest.fixture
def queued(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger, connect: base.Connect
) -> dict[str, str]:
    """A Walmart order (acknowledged) and a shipped Amazon order, projected: three items of the seller's."""
    walmart = _import(client, seller, Marketplace.WALMART)
    amazon = _import(client, seller, Marketplace.AMAZON)
    shipment = _ship(client, seller, amazon)
    catch_up(OutboundProjection(), connect, api_ledger, 500)
    return {"walmart": walmart, "amazon": amazon, "shipment": shipment}


def test_lists_the_sellers_items_oldest_first(
    client: TestClient[Any], seller: Seller, queued: dict[str, str]
) -> None:
    page = _queue(client, seller)
    assert page["next_cursor"] is None
    items = page["items"]
    assert [(i["order_id"], i["action"], i["reference"], i["sequence"]) for i in items] == [
        (queued["walmart"], "acknowledge", queued["walmart"], 1),
        (queued["amazon"], "ship", queued["shipment"], 1),
    ]
    for item in items:
        assert set(item) == ITEM_FIELDS
        assert (item["state"], item["attempts"], item["last_error"]) == ("pending", 0, None)
        assert item["idempotency_key"] == item["id"]
    assert [i["marketplace"] for i in items] == ["walmart", "amazon"]
    # admin reads it too
    assert _queue(client, seller, Role.ADMIN)["items"] == items


def test_filters_and_pages(
    client: TestClient[Any], seller: Seller, queued: dict[str, str], connect: base.Connect
) -> None:
    by_marketplace = _queue(client, seller, marketplace="amazon")["items"]
    assert [i["action"] for i in by_marketplace] == ["ship"]
    by_order = _queue(client, seller, order_id=queued["walmart"])["items"]
    assert [i["action"] for i in by_order] == ["acknowledge"]
    _set(connect, by_order[0]["id"], "dead", 3, "HTTP 400: order unknown")
    dead = _queue(client, seller, state="dead")["items"]
    assert [(i["id"], i["attempts"], i["last_error"]) for i in dead] == [
        (by_order[0]["id"], 3, "HTTP 400: order unknown")
    ]
    assert [i["action"] for i in _queue(client, seller, state="pending")["items"]] == ["ship"]

    first = _queue(client, seller, limit=1)
    assert [i["action"] for i in first["items"]] == ["acknowledge"]
    assert first["next_cursor"] == first["items"][0]["id"]
    second = _queue(client, seller, limit=1, cursor=first["next_cursor"])
    assert [i["action"] for i in second["items"]] == ["ship"]
    third = _queue(client, seller, limit=1, cursor=second["next_cursor"])
    assert third == {"items": [], "next_cursor": None}


def test_items_name_their_call_and_the_earlier_item_they_wait_for(
    client: TestClient[Any], seller: Seller, queued: dict[str, str], api_ledger: Ledger, connect: base.Connect
) -> None:
    """Walmart's shipment names shippingUpdates and waits for the acknowledgement; Amazon's waits for nothing."""
    _ship(client, seller, queued["walmart"])
    catch_up(OutboundProjection(), connect, api_ledger, 500)
    acknowledge, ship = _queue(client, seller, order_id=queued["walmart"])["items"]
    assert (acknowledge["operation"], acknowledge["blocked_by"]) == ("walmart.acknowledgeOrders", None)
    assert (ship["operation"], ship["blocked_by"]) == ("walmart.shippingUpdates", acknowledge["id"])
    amazon = _queue(client, seller, order_id=queued["amazon"])["items"][0]
    assert (amazon["operation"], amazon["blocked_by"]) == ("amazon.confirmShipment", None)


def test_bad_filters_are_422(client: TestClient[Any], seller: Seller) -> None:
    """A filter value the queue does not take is 422 invalid-filter, like every query parameter's value."""
    for params in ({"state": "lost"}, {"marketplace": "etsy"}, {"limit": 0}, {"limit": 501}, {"cursor": "x"}):
        response = client.get("/v1/sync/outbound", params=params, headers=seller.auth())
        _problem(response, 422, "invalid-filter")


def test_retry_puts_a_dead_item_back_keeping_its_attempts(
    client: TestClient[Any], seller: Seller, queued: dict[str, str], connect: base.Connect
) -> None:
    item = _queue(client, seller, order_id=queued["amazon"])["items"][0]
    _set(connect, item["id"], "dead", 5, "HTTP 400: bad tracking")
    [(before,)] = rows(connect, "SELECT updated_at FROM outbound_items WHERE id = %s", UUID(item["id"]))

    response = client.post(f"/v1/sync/outbound/{item['id']}/retry", headers=seller.auth(Role.OPERATOR))

    assert response.status_code == 200, response.text
    retried = response.json()
    assert (retried["id"], retried["state"], retried["attempts"]) == (item["id"], "pending", 5)
    [(state, attempts, due, updated)] = rows(
        connect,
        "SELECT state, attempts, next_attempt_at <= now(), updated_at FROM outbound_items WHERE id = %s",
        UUID(item["id"]),
    )
    assert (state, attempts, due) == ("pending", 5, True)
    assert updated > before  # type: ignore[operator]  # the retry is a direct change: updated_at stamped
    assert _queue(client, seller, state="pending", order_id=queued["amazon"])["items"][0]["attempts"] == 5


def test_retry_takes_a_failed_item_and_admin_may_retry(
    client: TestClient[Any], seller: Seller, queued: dict[str, str], connect: base.Connect
) -> None:
    item = _queue(client, seller, order_id=queued["walmart"])["items"][0]
    _set(connect, item["id"], "failed", 2, "HTTP 503")
    response = client.post(f"/v1/sync/outbound/{item['id']}/retry", headers=seller.auth(Role.ADMIN))
    assert response.status_code == 200, response.text
    assert (response.json()["state"], response.json()["attempts"]) == ("pending", 2)


def test_retry_of_a_pending_or_succeeded_item_is_409(
    client: TestClient[Any], seller: Seller, queued: dict[str, str], connect: base.Connect
) -> None:
    items = _queue(client, seller)["items"]
    response = client.post(f"/v1/sync/outbound/{items[0]['id']}/retry", headers=seller.auth())
    _problem(response, 409, "not-retriable")
    assert "pending" in response.json()["detail"]
    _set(connect, items[1]["id"], "succeeded", 1, None)
    _problem(
        client.post(f"/v1/sync/outbound/{items[1]['id']}/retry", headers=seller.auth()), 409, "not-retriable"
    )
    assert [i["state"] for i in _queue(client, seller)["items"]] == ["pending", "succeeded"]


def test_resolving_a_dead_item_by_hand_records_why_on_its_order(
    client: TestClient[Any], seller: Seller, queued: dict[str, str], api_ledger: Ledger, connect: base.Connect
) -> None:
    """A dead item resolved with a reason is `resolved` and its order says who resolved it, how; only dead ones."""
    item = _queue(client, seller, order_id=queued["amazon"])["items"][0]
    url = f"/v1/sync/outbound/{item['id']}/resolve"
    body = {"reason": "confirmed in Seller Central"}
    _problem(client.post(url, json=body, headers=seller.auth()), 409, "not-resolvable")  # still pending
    _set(connect, item["id"], "dead", 8, "gave up after 8 attempts")
    _problem(client.post(url, json={"reason": ""}, headers=seller.auth()), 422, "invalid-request")
    response = client.post(url, json=body, headers=seller.auth())
    assert response.status_code == 200, response.text
    assert (response.json()["state"], response.json()["last_error"]) == (
        "resolved",
        "resolved by hand: confirmed in Seller Central",
    )
    history = client.get(f"/v1/orders/{queued['amazon']}/history", headers=seller.auth()).json()
    last = history["events"][-1]
    assert (last["type"], last["reason"]) == ("SyncItemResolved", "confirmed in Seller Central")
    assert last["data"]["reference"] == queued["shipment"]
    _problem(client.post(url, json=body, headers=seller.auth()), 409, "not-resolvable")  # once


def test_another_sellers_or_an_unknown_item_is_404(
    client: TestClient[Any],
    seller: Seller,
    other_seller: Seller,
    queued: dict[str, str],
    connect: base.Connect,
) -> None:
    item = _queue(client, seller)["items"][0]
    _set(connect, item["id"], "dead", 1, "HTTP 400")
    for target in (item["id"], str(uuid4())):
        response = client.post(f"/v1/sync/outbound/{target}/retry", headers=other_seller.auth())
        _problem(response, 404, "not-found")
    assert _queue(client, other_seller)["items"] == []
    assert _queue(client, other_seller, order_id=queued["walmart"])["items"] == []
    assert _queue(client, seller, state="dead")["items"][0]["id"] == item["id"]  # untouched


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.FINANCE, Role.INTEGRATION])
def test_other_roles_are_403(client: TestClient[Any], seller: Seller, role: Role) -> None:
    _problem(client.get("/v1/sync/outbound", headers=seller.auth(role)), 403, "forbidden")
    response = client.post(f"/v1/sync/outbound/{uuid4()}/retry", headers=seller.auth(role))
    _problem(response, 403, "forbidden")


def test_no_key_is_401(client: TestClient[Any]) -> None:
    _problem(client.get("/v1/sync/outbound"), 401, "unauthorized")


def test_discrepancies_list_what_a_check_found_per_seller_and_filter(
    client: TestClient[Any], seller: Seller, other_seller: Seller, api_ledger: Ledger
) -> None:
    """`GET /v1/sync/discrepancies`: an order a check found diverging, with both values, open until a check
    finds it in sync; filters account_id, marketplace, open; another seller sees none of it."""
    order_id = _import(client, seller, Marketplace.WALMART)
    found = (Divergence("line 1 shipped", "2", "0"),)
    api_ledger.execute(
        RecordSyncCheck(ctx=Context(actor="sync-check"), order_id=UUID(order_id), divergences=found)
    )

    body = client.get("/v1/sync/discrepancies", headers=seller.auth()).json()

    [item] = body["items"]
    assert (item["order_id"], item["open"], item["resolved_at"]) == (order_id, True, None)
    assert item["divergences"] == [{"field": "line 1 shipped", "ledger": "2", "marketplace": "0"}]
    assert item["account_id"] == str(seller.accounts[Marketplace.WALMART])
    url = "/v1/sync/discrepancies"
    assert client.get(f"{url}?marketplace=amazon", headers=seller.auth()).json()["items"] == []
    assert client.get(f"{url}?open=false", headers=seller.auth()).json()["items"] == []
    assert client.get(url, headers=other_seller.auth()).json()["items"] == []
    assert client.get(f"{url}?open=maybe", headers=seller.auth()).status_code == 422  # a bad value: 422
    api_ledger.execute(
        RecordSyncCheck(ctx=Context(actor="sync-check"), order_id=UUID(order_id), divergences=())
    )
    [resolved] = client.get(f"{url}?open=false", headers=seller.auth()).json()["items"]
    assert resolved["resolved_at"] is not None


def test_a_discrepancy_is_listed_while_an_older_transaction_holds_the_logs_horizon(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger, connect: base.Connect
) -> None:
    """A check's finding is listed as soon as it is recorded, even while a transaction that began before it is
    still open anywhere in the cluster (it holds back the log's commit horizon, which followers wait for): the
    list reads the log as it stands, not below the horizon."""
    order_id = _import(client, seller, Marketplace.WALMART)
    found = (Divergence("line 1 shipped", "2", "0"),)
    with connect() as holder, holder.transaction():
        holder.execute("SELECT pg_current_xact_id()")  # a transaction id, held until the block ends
        api_ledger.execute(
            RecordSyncCheck(ctx=Context(actor="sync-check"), order_id=UUID(order_id), divergences=found)
        )
        listed = client.get("/v1/sync/discrepancies", headers=seller.auth()).json()["items"]
        assert [(item["order_id"], item["open"]) for item in listed] == [(order_id, True)]
        api_ledger.execute(
            RecordSyncCheck(ctx=Context(actor="sync-check"), order_id=UUID(order_id), divergences=())
        )
        resolved = client.get("/v1/sync/discrepancies?open=false", headers=seller.auth()).json()["items"]
        assert [item["order_id"] for item in resolved] == [order_id]

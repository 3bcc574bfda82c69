"""Idempotency-Key on POSTs whose whole response is stored: accounts, bulk import, an operator's retry.

The same key and body get the first response's status and bytes again with no second effect; another body (or
another endpoint) under the key is 422; keys are scoped per seller; nothing is stored when the request failed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest
from api_support import UPS_TRACKING, Seller, order_body
from litestar.testing import TestClient
from order_scenarios import catch_up, rows

from ledger.aggregates.values import Context, Marketplace, Role
from ledger.api.bodies.schemas import OrderIn
from ledger.application.ledger import Ledger
from ledger.integrations.outbound import OutboundProjection
from ledger.projections import base

pytestmark = pytest.mark.postgres
PROBLEM = "https://ledger.dev/problems/"


def _post(client: TestClient[Any], path: str, body: Any, seller: Seller, key: str | None) -> Any:
    headers = seller.auth() | {"Content-Type": "application/json"} | ({"Idempotency-Key": key} if key else {})
    return client.post(path, content=json.dumps(body).encode(), headers=headers)


def test_create_account_replays_the_first_response(client: TestClient[Any], seller: Seller) -> None:
    """The same key and body: the same 201 and bytes, and one account only."""
    body = {"marketplace": "jet", "name": "second jet"}
    first = _post(client, "/v1/accounts", body, seller, "acct-1")
    again = _post(client, "/v1/accounts", body, seller, "acct-1")
    assert first.status_code == again.status_code == 201
    assert first.content == again.content
    named = [
        a
        for a in client.get("/v1/accounts", headers=seller.auth()).json()["items"]
        if a["name"] == "second jet"
    ]
    assert [a["account_id"] for a in named] == [first.json()["account_id"]]


def test_create_account_another_body_or_endpoint_under_the_key_is_422(
    client: TestClient[Any], seller: Seller
) -> None:
    """A different body, or the key reused on another endpoint, is refused as idempotency-key-reused."""
    assert (
        _post(client, "/v1/accounts", {"marketplace": "jet", "name": "a"}, seller, "k-2").status_code == 201
    )
    other = _post(client, "/v1/accounts", {"marketplace": "jet", "name": "b"}, seller, "k-2")
    assert other.status_code == 422
    assert other.json()["type"] == PROBLEM + "idempotency-key-reused"
    bulk = _post(
        client, "/v1/orders/import", {"orders": [order_body(seller.accounts[Marketplace.JET])]}, seller, "k-2"
    )
    assert bulk.status_code == 422
    assert bulk.json()["type"] == PROBLEM + "idempotency-key-reused"


def test_keys_are_scoped_per_seller(client: TestClient[Any], seller: Seller, other_seller: Seller) -> None:
    """Another seller's use of the same key is its own request."""
    body = {"marketplace": "jet", "name": "scoped"}
    mine = _post(client, "/v1/accounts", body, seller, "shared-key")
    theirs = _post(client, "/v1/accounts", body, other_seller, "shared-key")
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["account_id"] != theirs.json()["account_id"]


def test_a_refused_request_stores_nothing(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger
) -> None:
    """A 409 (name taken) is not stored: the response lives only beside an effect, in its transaction."""
    response = _post(client, "/v1/accounts", {"marketplace": "jet", "name": "main"}, seller, "taken-1")
    assert response.status_code == 409
    assert api_ledger.stored_response(seller.name, "taken-1") is None


def test_bulk_import_replays_and_records_nothing_twice(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger
) -> None:
    """The same bulk again under its key: the same bytes, and no order gets a second event."""
    account = seller.accounts[Marketplace.AMAZON]
    body = {"orders": [order_body(account), order_body(account), order_body(uuid4())]}
    first = _post(client, "/v1/orders/import", body, seller, "bulk-1")
    assert first.status_code == 200, first.text
    assert (first.json()["imported"], first.json()["failed"]) == (2, 1)
    versions = {r["order_id"]: r["version"] for r in first.json()["results"] if "order_id" in r}
    again = _post(client, "/v1/orders/import", body, seller, "bulk-1")
    assert again.status_code == 200
    assert again.content == first.content
    for order_id, version in versions.items():
        assert api_ledger.get_order(UUID(order_id)).version == version
    changed = _post(client, "/v1/orders/import", {"orders": body["orders"][:1]}, seller, "bulk-1")
    assert changed.status_code == 422


def test_bulk_import_retried_after_a_partial_failure_finishes_the_rest(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger
) -> None:
    """If the first attempt imported order 0 and then died, the retry replays order 0 and imports order 1."""
    account = seller.accounts[Marketplace.AMAZON]
    body = {"orders": [order_body(account), order_body(account)]}
    raw = json.dumps(body).encode()
    digest = hashlib.sha256(
        b"POST /v1/orders/import\n" + raw
    ).hexdigest()  # the request's method, path and body
    done = api_ledger.import_order(
        Context(actor="api", idempotency_key="bulk-2#0", request_digest=digest),
        account,
        _domain(body["orders"][0]),
        seller=seller.name,
    )
    response = client.post(
        "/v1/orders/import",
        content=raw,
        headers=seller.auth() | {"Content-Type": "application/json", "Idempotency-Key": "bulk-2"},
    )
    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert (first["order_id"], first["created"], first["version"]) == (str(done.order_id), True, done.version)
    assert second["created"] is True
    assert api_ledger.get_order(done.order_id).version == done.version  # replayed, not imported twice


def _domain(order: dict[str, Any]) -> Any:
    return msgspec.convert(order, OrderIn).to_domain()


def test_outbound_retry_replays_without_a_second_change(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger, connect: base.Connect
) -> None:
    """An operator's retry under a key: the replay answers the same and leaves the item as the first left it."""
    imported = client.post(
        "/v1/orders", json=order_body(seller.accounts[Marketplace.AMAZON]), headers=seller.auth()
    )
    order_id = imported.json()["order_id"]
    shipped = client.post(
        f"/v1/orders/{order_id}/shipments",
        json={"carrier": "ups", "tracking_number": UPS_TRACKING},
        headers=seller.auth(),
    )
    assert shipped.status_code == 201
    catch_up(OutboundProjection(), connect, api_ledger, 500)
    [item] = client.get(f"/v1/sync/outbound?order_id={order_id}", headers=seller.auth()).json()["items"]
    with connect() as conn:
        conn.execute(
            "UPDATE outbound_items SET state = 'dead', attempts = 4 WHERE id = %s", (UUID(item["id"]),)
        )
    headers = seller.auth(Role.OPERATOR) | {"Idempotency-Key": "retry-1"}
    first = client.post(f"/v1/sync/outbound/{item['id']}/retry", headers=headers)
    assert first.status_code == 200, first.text
    [(stamp,)] = rows(connect, "SELECT updated_at FROM outbound_items WHERE id = %s", UUID(item["id"]))
    again = client.post(f"/v1/sync/outbound/{item['id']}/retry", headers=headers)
    assert again.status_code == 200
    assert again.content == first.content
    assert rows(connect, "SELECT updated_at FROM outbound_items WHERE id = %s", UUID(item["id"])) == [
        (stamp,)
    ]
    without_key = client.post(f"/v1/sync/outbound/{item['id']}/retry", headers=seller.auth(Role.OPERATOR))
    assert without_key.status_code == 409  # pending now: a second retry without the key is refused as before

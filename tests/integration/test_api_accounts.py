"""Marketplace accounts over HTTP: register, list, read and change one; refusals as problem details."""

from __future__ import annotations

from typing import Any

from api_support import Seller, order_body
from litestar.testing import TestClient

PROBLEM = "https://ledger.dev/problems/"


def test_register_list_get_and_patch(client: TestClient[Any], seller: Seller) -> None:
    """POST makes an account (201), GET lists and reads it, PATCH changes a setting and bumps the version."""
    created = client.post(
        "/v1/accounts",
        json={"marketplace": "ebay", "name": "outlet", "fulfillment_managed": False},
        headers=seller.auth(),
    )
    assert created.status_code == 201, created.text
    account = created.json()
    assert account["marketplace"] == "ebay"
    assert account["fulfillment_managed"] is False
    assert account["restock_in_ledger"] is False
    account_id = account["account_id"]

    listed = client.get("/v1/accounts", headers=seller.auth()).json()["items"]
    assert account_id in {a["account_id"] for a in listed}
    assert client.get(f"/v1/accounts/{account_id}", headers=seller.auth()).json() == account

    patched = client.patch(
        f"/v1/accounts/{account_id}", json={"restock_in_ledger": True}, headers=seller.auth()
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["restock_in_ledger"] is True
    assert patched.json()["version"] == account["version"] + 1


def test_duplicate_name_is_409(client: TestClient[Any], seller: Seller) -> None:
    """A second account of the same marketplace and name is 409 account-name-taken."""
    response = client.post(
        "/v1/accounts", json={"marketplace": "amazon", "name": "main"}, headers=seller.auth()
    )
    assert response.status_code == 409
    assert response.json()["type"] == PROBLEM + "account-name-taken"


def test_unknown_marketplace_is_422_naming_the_field(client: TestClient[Any], seller: Seller) -> None:
    """A marketplace outside the contract's list is 422 with the field in `errors`."""
    response = client.post("/v1/accounts", json={"marketplace": "etsy", "name": "x"}, headers=seller.auth())
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["marketplace"]


def test_unknown_account_is_404(client: TestClient[Any], seller: Seller) -> None:
    """An account id that does not exist is 404 account-not-found."""
    response = client.get("/v1/accounts/00000000-0000-4000-8000-000000000000", headers=seller.auth())
    assert response.status_code == 404
    assert response.json()["type"] == PROBLEM + "account-not-found"


def test_sync_off_over_http_records_changes_as_not_sent_and_allows_amazon_refunds(
    client: TestClient[Any], seller: Seller
) -> None:
    """`sync_enabled: false` (PATCH) is sync off: a shipment then shows in the order's `sync` as `not_sent` with
    the reason `sync_off`, the order's `sync_state` is `not_sent`, and Amazon refunds are allowed at once."""
    created = client.post(
        "/v1/accounts", json={"marketplace": "amazon", "name": "quiet"}, headers=seller.auth()
    )
    assert created.status_code == 201, created.text
    assert created.json()["sync_enabled"] is True
    account_id = created.json()["account_id"]
    patched = client.patch(f"/v1/accounts/{account_id}", json={"sync_enabled": False}, headers=seller.auth())
    assert patched.status_code == 200, patched.text
    assert patched.json()["sync_enabled"] is False
    imported = client.post("/v1/orders", json=order_body(account_id), headers=seller.auth())
    assert imported.status_code == 201, imported.text
    order_id = imported.json()["order_id"]

    shipped = client.post(
        f"/v1/orders/{order_id}/shipments",
        json={"carrier": "ups", "tracking_number": "1Z999AA10123456784"},
        headers=seller.auth(),
    )
    assert shipped.status_code == 201, shipped.text
    refunded = client.post(
        f"/v1/orders/{order_id}/refunds", json={"reason": "goodwill"}, headers=seller.auth()
    )

    assert refunded.status_code == 201, refunded.text
    order = client.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()
    assert {(e["action"], e["state"], e["reason"]) for e in order["sync"]} == {
        ("ship", "not_sent", "sync_off"),
        ("refund", "not_sent", "sync_off"),
    }
    assert order["sync_state"] == "not_sent"
    bad = client.patch(f"/v1/accounts/{account_id}", json={"sync_enabled": "no"}, headers=seller.auth())
    assert bad.status_code == 422

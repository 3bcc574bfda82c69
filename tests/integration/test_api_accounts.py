"""Marketplace accounts over HTTP: register, list, read and change one; refusals as problem details."""

from __future__ import annotations

from typing import Any

from api_support import Seller
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

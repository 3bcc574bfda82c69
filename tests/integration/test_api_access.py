"""Who may call what over HTTP: 401 without a valid key, 403 for a role the contract does not allow,
and sellers scoped by their key (another seller's order or account is a 404)."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import CTX, UPS_TRACKING, Seller, order_body
from litestar.testing import TestClient

from ledger.aggregates.values import Marketplace, Role
from ledger.application.ledger import Ledger

PROBLEM = "https://ledger.dev/problems/"


def _import(client: TestClient[Any], seller: Seller) -> str:
    response = client.post(
        "/v1/orders", json=order_body(seller.accounts[Marketplace.WALMART]), headers=seller.auth()
    )
    assert response.status_code == 201, response.text
    return str(response.json()["order_id"])


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer lk_never-issued-key", "Basic dXNlcjpwYXNz", "lk_no-scheme"],
)
def test_missing_or_unknown_key_is_401(client: TestClient[Any], authorization: str | None) -> None:
    """No key, an empty or unknown key, or another scheme: 401 unauthorized with WWW-Authenticate."""
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/v1/orders/00000000-0000-4000-8000-000000000000", headers=headers)
    assert response.status_code == 401
    assert response.json()["type"] == PROBLEM + "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


def test_revoked_key_is_401(client: TestClient[Any], api_ledger: Ledger, seller: Seller) -> None:
    """A revoked key stops working at once."""
    secret, key = api_ledger.create_api_key(CTX, seller=seller.name, role=Role.ADMIN)
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/v1/accounts", headers=headers).status_code == 200
    api_ledger.revoke_api_key(CTX, key.key_id)
    assert client.get("/v1/accounts", headers=headers).status_code == 401


def test_401_comes_before_body_validation(client: TestClient[Any]) -> None:
    """A request without a key is 401 even when its body is malformed."""
    response = client.post("/v1/orders", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 401


# (method, path template, body, roles allowed)
ORDER_ID = "{order_id}"
CASES = [
    ("GET", "/v1/orders/{order_id}", None, {"admin", "operator", "auditor", "finance"}),
    ("GET", "/v1/orders/{order_id}/history", None, {"admin", "operator", "auditor"}),
    (
        "POST",
        "/v1/orders/{order_id}/shipments",
        {"carrier": "ups", "tracking_number": UPS_TRACKING},
        {"admin", "operator"},
    ),
    ("POST", "/v1/orders/{order_id}/disputes", {"reason": "late"}, {"admin", "operator", "integration"}),
    ("POST", "/v1/accounts", {"marketplace": "jet", "name": "second"}, {"admin"}),
    ("GET", "/v1/accounts", None, {"admin", "operator", "auditor", "finance", "integration"}),
]


@pytest.mark.parametrize(("method", "path", "body", "allowed"), CASES)
@pytest.mark.parametrize("role", list(Role))
def test_roles_per_endpoint(
    client: TestClient[Any], seller: Seller, method: str, path: str, body: Any, allowed: set[str], role: Role
) -> None:
    """A role the contract allows gets through (2xx); any other is 403 forbidden, and nothing is recorded."""
    order_id = _import(client, seller)
    url = path.format(order_id=order_id)
    response = client.request(method, url, json=body, headers=seller.auth(role))
    if role.value in allowed:
        assert response.status_code in {200, 201}, response.text
    else:
        assert response.status_code == 403, response.text
        assert response.json()["type"] == PROBLEM + "forbidden"
        version = client.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()["version"]
        assert version == 1


def test_integration_may_import(client: TestClient[Any], seller: Seller) -> None:
    """The integration role imports orders; the auditor may not."""
    body = order_body(seller.accounts[Marketplace.RAKUTEN])
    assert client.post("/v1/orders", json=body, headers=seller.auth(Role.INTEGRATION)).status_code == 201
    assert client.post("/v1/orders", json=body, headers=seller.auth(Role.AUDITOR)).status_code == 403


def test_another_sellers_order_is_404(client: TestClient[Any], seller: Seller, other_seller: Seller) -> None:
    """Another seller's order is 404 for reads, history and commands, and stays unchanged."""
    order_id = _import(client, seller)
    for method, path, body in [
        ("GET", f"/v1/orders/{order_id}", None),
        ("GET", f"/v1/orders/{order_id}/history", None),
        ("POST", f"/v1/orders/{order_id}/cancellations", {"reason": "other"}),
    ]:
        response = client.request(method, path, json=body, headers=other_seller.auth())
        assert response.status_code == 404, response.text
        assert response.json()["type"] == PROBLEM + "order-not-found"
    assert client.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()["version"] == 1


def test_another_sellers_account_is_404(
    client: TestClient[Any], seller: Seller, other_seller: Seller
) -> None:
    """Another seller's account is 404 to read, to change and to import into."""
    account_id = seller.accounts[Marketplace.AMAZON]
    headers = other_seller.auth()
    assert client.get(f"/v1/accounts/{account_id}", headers=headers).status_code == 404
    assert (
        client.patch(f"/v1/accounts/{account_id}", json={"name": "mine"}, headers=headers).status_code == 404
    )
    response = client.post("/v1/orders", json=order_body(account_id), headers=headers)
    assert response.status_code == 404
    assert response.json()["type"] == PROBLEM + "account-not-found"

"""Errors over HTTP: every one is problem+json with the right status, and none is a 500 or leaks internals."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from api_support import API_MAX_BODY, Seller, order_body
from litestar.testing import TestClient

from ledger.aggregates.values import Marketplace
from ledger.api.app import create_app
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget

PROBLEM = "https://ledger.dev/problems/"


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + code
    assert body["status"] == status
    return body


def test_malformed_json_is_400(client: TestClient[Any], seller: Seller) -> None:
    """A body that is not JSON is 400 malformed-request."""
    headers = seller.auth() | {"Content-Type": "application/json"}
    _problem(client.post("/v1/orders", content=b'{"account_id": ', headers=headers), 400, "malformed-request")


def test_unknown_field_is_422_naming_it(client: TestClient[Any], seller: Seller) -> None:
    """An unknown field, top-level or nested, is 422 with its path in `errors`."""
    body = order_body(seller.accounts[Marketplace.AMAZON], coupon="FREE")
    problem = _problem(client.post("/v1/orders", json=body, headers=seller.auth()), 422, "invalid-request")
    assert [e["field"] for e in problem["errors"]] == ["coupon"]
    body = order_body(seller.accounts[Marketplace.AMAZON])
    body["lines"][0]["colour"] = "red"
    problem = _problem(client.post("/v1/orders", json=body, headers=seller.auth()), 422, "invalid-request")
    assert [e["field"] for e in problem["errors"]] == ["lines[0].colour"]


def test_wrong_type_is_422_naming_the_field(client: TestClient[Any], seller: Seller) -> None:
    """A field of the wrong type or out of bounds is 422 with its path."""
    body = order_body(seller.accounts[Marketplace.AMAZON])
    body["lines"][1]["quantity"] = 0
    problem = _problem(client.post("/v1/orders", json=body, headers=seller.auth()), 422, "invalid-request")
    assert [e["field"] for e in problem["errors"]] == ["lines[1].quantity"]


def test_domain_validation_is_422_with_field(client: TestClient[Any], seller: Seller) -> None:
    """An amount finer than the currency's minor unit is refused by the domain as 422 naming the field."""
    body = order_body(seller.accounts[Marketplace.AMAZON])
    body["lines"][0]["unit_price"] = "1.001"
    problem = _problem(client.post("/v1/orders", json=body, headers=seller.auth()), 422, "invalid-order")
    assert problem["errors"][0]["message"]


def test_oversized_body_is_413(client: TestClient[Any], seller: Seller) -> None:
    """A body over the size limit is 413 body-too-large."""
    headers = seller.auth() | {"Content-Type": "application/json"}
    body = b'{"orders": [' + b" " * (API_MAX_BODY + 1) + b"]}"
    _problem(client.post("/v1/orders/import", content=body, headers=headers), 413, "body-too-large")


def test_unknown_route_and_method(client: TestClient[Any], seller: Seller) -> None:
    """An unknown path is 404 not-found; a known path with another method is 405."""
    _problem(client.get("/v1/nothing-here", headers=seller.auth()), 404, "not-found")
    _problem(client.delete("/v1/accounts", headers=seller.auth()), 405, "method-not-allowed")


def test_bad_path_id_is_404_or_400_never_500(client: TestClient[Any], seller: Seller) -> None:
    """An order id that is not a UUID never reaches the ledger."""
    response = client.get("/v1/orders/not-a-uuid", headers=seller.auth())
    assert response.status_code in {400, 404}
    assert response.headers["content-type"].startswith("application/problem+json")


def test_bad_idempotency_key_is_400(client: TestClient[Any], seller: Seller) -> None:
    """An Idempotency-Key that is too long is 400 naming the header."""
    headers = seller.auth() | {"Idempotency-Key": "k" * 201}
    body = order_body(seller.accounts[Marketplace.AMAZON])
    problem = _problem(client.post("/v1/orders", json=body, headers=headers), 400, "bad-request")
    assert problem["errors"][0]["field"] == "Idempotency-Key"


def test_unexpected_error_is_a_generic_500(
    client: TestClient[Any], seller: Seller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug is a 500 with a generic body: no exception text, no stack trace."""

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret internals: SELECT * FROM ledger_events")

    monkeypatch.setattr(Ledger, "get_account", broken)
    account_id = seller.accounts[Marketplace.AMAZON]
    problem = _problem(client.get(f"/v1/accounts/{account_id}", headers=seller.auth()), 500, "internal-error")
    assert "SELECT" not in problem["detail"]
    assert "Traceback" not in str(problem)


def test_database_down_is_503_with_retry_after(
    client: TestClient[Any], seller: Seller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database error while serving is 503 database-unavailable with Retry-After."""

    def down(*_: Any, **__: Any) -> Any:
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(Ledger, "list_accounts", down)
    response = client.get("/v1/accounts", headers=seller.auth())
    _problem(response, 503, "database-unavailable")
    assert response.headers["retry-after"] == "5"


def test_health_and_readiness(client: TestClient[Any]) -> None:
    """`/healthz` answers without a key; `/readyz` says the database is reachable."""
    assert client.get("/healthz").json() == {"status": "ok"}
    client.app.state.ready_max_lag = (
        10**12
    )  # the run's shared schema has projections far behind: not the point here
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] == "reachable"


def test_readiness_without_database_is_503(pg_target: PostgresTarget, api_ledger: Ledger) -> None:
    """With the database unreachable, `/readyz` is 503 and the app still starts."""
    unreachable = PostgresTarget(host="127.0.0.1", port=1, dbname="x", user="x", schema=pg_target.schema)
    with TestClient(create_app(unreachable, ledger=api_ledger)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"


def test_openapi_schema_documents_operations(client: TestClient[Any]) -> None:
    """`/schema/openapi.json` is OpenAPI 3.1 with an operation id, summary and tag on every operation."""
    schema = client.get("/schema/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    operations = [op for path in schema["paths"].values() for op in path.values()]
    assert len(operations) >= 17
    for op in operations:
        assert op["operationId"]
        assert op["summary"]
        assert op["tags"]
    assert client.get("/schema").status_code == 200


COMMAND_PATHS = [
    "/v1/orders",
    "/v1/orders/import",
    "/v1/accounts",
    "/v1/orders/{order_id}/shipments",
    "/v1/orders/{order_id}/cancellations",
    "/v1/orders/{order_id}/refunds",
    "/v1/orders/{order_id}/disputes",
    "/v1/orders/{order_id}/disputes/00000000-0000-4000-8000-000000000000/close",
    "/v1/orders/{order_id}/restocks",
]
GARBAGE = [b"", b"null", b"[]", b'"text"', b"{}", b'{"lines": "none"}', b"\xff\xfe{", b'{"reason": 7}']


@pytest.mark.parametrize("path", COMMAND_PATHS)
def test_garbage_bodies_are_client_errors(client: TestClient[Any], seller: Seller, path: str) -> None:
    """Empty, non-object, non-UTF-8 or ill-typed bodies are 400 or 422 problems on every POST, never 500."""
    created = client.post(
        "/v1/orders", json=order_body(seller.accounts[Marketplace.WALMART]), headers=seller.auth()
    )
    url = path.format(order_id=created.json()["order_id"])
    headers = seller.auth() | {"Content-Type": "application/json"}
    for body in GARBAGE:
        response = client.post(url, content=body, headers=headers)
        assert response.status_code in {400, 422}, (body, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


def test_time_out_of_range_in_utc_is_422_not_500(client: TestClient[Any], seller: Seller) -> None:
    """A time that leaves years 1 to 9999 once converted to UTC is refused by name, alone in a bulk import."""
    account_id = seller.accounts[Marketplace.AMAZON]
    for field in ("purchased_at", "paid_at"):
        body = order_body(account_id, **{field: "0001-01-01T00:00:03+02:00"})
        problem = _problem(client.post("/v1/orders", json=body, headers=seller.auth()), 422, "invalid-order")
        assert [e["field"] for e in problem["errors"]] == [field]
    orders = [order_body(account_id, purchased_at="9999-12-31T23:59:59-05:00"), order_body(account_id)]
    response = client.post("/v1/orders/import", json={"orders": orders}, headers=seller.auth())
    assert response.status_code == 200, response.text
    assert (response.json()["imported"], response.json()["failed"]) == (1, 1)

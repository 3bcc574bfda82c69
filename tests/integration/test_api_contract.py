"""The v1.1 contract to the letter: per-order bulk import, marketplace carrier spellings, All Sales `sort`,
`updated_since` and counts, unknown query parameters, alike answers for alike mistakes, a missing dispute."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from api_support import UPS_TRACKING, Seller, make_seller, order_body
from litestar.testing import TestClient

from ledger.aggregates.values import Marketplace
from ledger.api.app import create_app
from ledger.api.bodies.schemas import MAX_BATCH
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget, connect
from ledger.projections.all_sales import AllSalesProjection
from ledger.projections.all_sales_view import SORTS
from ledger.projections.base import rebuild

pytestmark = pytest.mark.postgres
PROBLEM = "https://ledger.dev/problems/"


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + code, body
    return body


def _import(client: TestClient[Any], seller: Seller, **changes: Any) -> str:
    body = order_body(seller.accounts[changes.pop("marketplace", Marketplace.AMAZON)], **changes)
    response = client.post("/v1/orders", json=body, headers=seller.auth())
    assert response.status_code == 201, response.text
    return str(response.json()["order_id"])


OwnApi = tuple[TestClient[Any], Seller, Callable[[], None]]


@pytest.fixture
def own_api(own_target: PostgresTarget) -> Iterator[OwnApi]:
    """(client, seller, project) on a schema of the test's own: `project()` rebuilds All Sales over its log."""
    ledger = Ledger(env=own_target.eventsourcing_env())
    try:

        def project() -> None:
            rebuild(AllSalesProjection(), lambda: connect(own_target), ledger.recorder, ledger.mapper)

        with TestClient(create_app(own_target, ledger=ledger)) as client:
            yield client, make_seller(ledger), project
    finally:
        ledger.close()


# --------------------------------------------------------------------------------------- bulk import


def test_bulk_import_refuses_only_the_order_that_does_not_fit_the_schema(
    client: TestClient[Any], seller: Seller
) -> None:
    """An order of the wrong shape among good ones is refused alone, with its field; the others are imported."""
    account = seller.accounts[Marketplace.EBAY]
    good = order_body(account)
    wrong_type = order_body(account) | {
        "lines": [{"line_id": "1", "sku": 7, "quantity": 1, "unit_price": "1"}]
    }
    unknown_field = order_body(account) | {"colour": "blue"}
    orders = [good, wrong_type, unknown_field, "not an order", order_body(account)]

    response = client.post("/v1/orders/import", json={"orders": orders}, headers=seller.auth())

    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3, 4]
    assert (body["imported"], body["failed"]) == (2, 3)
    assert body["results"][0]["created"] is True
    assert body["results"][4]["created"] is True
    for refused in body["results"][1:4]:
        assert refused["error"]["status"] == 422
        assert "order_id" not in refused
    assert body["results"][1]["error"]["errors"][0]["field"] == "lines[0].sku"
    assert "colour" in body["results"][2]["error"]["detail"]
    assert "marketplace_order_id" not in body["results"][3]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[]", 422),  # not an object
        (b"{}", 422),  # no orders
        (b'{"orders": {}}', 422),  # orders not a list
        (b'{"orders": []}', 422),
        (b'{"orders": [], "extra": 1}', 422),
        (b"{not json", 400),
    ],
)
def test_a_malformed_envelope_is_refused_whole(
    client: TestClient[Any], seller: Seller, body: bytes, status: int
) -> None:
    """Only the envelope refuses the whole batch: 400 when it is not JSON, 422 when it is not {orders: [...]}."""
    headers = seller.auth() | {"Content-Type": "application/json"}
    response = client.post("/v1/orders/import", content=body, headers=headers)
    assert response.status_code == status, response.text


def test_more_orders_than_the_batch_limit_are_refused_whole(
    api_ledger: Ledger, pg_target: PostgresTarget
) -> None:
    """A batch of more than MAX_BATCH orders is 422 (an app with the default body limit, large enough)."""
    seller = make_seller(api_ledger)
    with TestClient(create_app(pg_target, ledger=api_ledger)) as client:
        orders = [{"x": i} for i in range(MAX_BATCH + 1)]
        response = client.post("/v1/orders/import", json={"orders": orders}, headers=seller.auth())
    _problem(response, 422, "invalid-request")


# ------------------------------------------------------------------------------------------ carriers


@pytest.mark.parametrize(
    ("spelling", "code"),
    [
        ("UPS", "ups"),
        ("FedEx", "fedex"),
        ("Amazon Logistics", "amazon_logistics"),
        ("royal mail", "royal_mail"),
    ],
)
def test_carriers_in_marketplace_spellings_answer_with_the_canonical_code(
    client: TestClient[Any], seller: Seller, spelling: str, code: str
) -> None:
    """A marketplace's spelling of a carrier, in any case, is accepted and stored as its canonical code."""
    order_id = _import(client, seller)
    tracking = UPS_TRACKING if code == "ups" else "123456789012" if code == "fedex" else "ABC12345"
    shipped = client.post(
        f"/v1/orders/{order_id}/shipments",
        json={"carrier": spelling, "tracking_number": tracking},
        headers=seller.auth(),
    )
    assert shipped.status_code == 201, shipped.text
    order = client.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()
    assert [s["carrier"] for s in order["shipments"]] == [code]


def test_other_carrier_needs_its_name_and_unknown_carriers_are_422(
    client: TestClient[Any], seller: Seller
) -> None:
    """`other` without `carrier_name` is 422 carrier-name-required; with it, the name is kept; unknown is 422."""
    order_id = _import(client, seller)
    url = f"/v1/orders/{order_id}/shipments"
    problem = _problem(
        client.post(url, json={"carrier": "other", "tracking_number": "AB12345"}, headers=seller.auth()),
        422,
        "carrier-name-required",
    )
    assert problem["errors"][0]["field"] == "carrier_name"
    _problem(
        client.post(
            url, json={"carrier": "Pony Express", "tracking_number": "AB12345"}, headers=seller.auth()
        ),
        422,
        "invalid-carrier",
    )
    body = {"carrier": "Other", "carrier_name": "Pony Express", "tracking_number": "AB12345"}
    assert client.post(url, json=body, headers=seller.auth()).status_code == 201
    shipment = client.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()["shipments"][0]
    assert (shipment["carrier"], shipment["carrier_name"]) == ("other", "Pony Express")


# ---------------------------------------------------------------------------------- All Sales: sort


def _walk(client: TestClient[Any], seller: Seller, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        response = client.get("/v1/orders", params=query, headers=seller.auth())
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def test_every_sort_pages_exactly_through_the_orders(own_api: OwnApi) -> None:
    """Each `sort`, paged two at a time, lists every order once, in its order, ties broken by order id."""
    client, seller, project = own_api
    for day, price in [(1, "9.00"), (2, "30.00"), (2, "30.00"), (3, "5.00"), (4, "30.00"), (5, "100.00")]:
        lines = [{"line_id": "1", "sku": "S", "quantity": 1, "unit_price": price}]
        _import(client, seller, purchased_at=f"2026-10-0{day}T10:00:00Z", lines=lines)
    project()

    for sort in SORTS:
        listed = _walk(client, seller, sort=sort, limit=2)
        field = sort.lstrip("-")
        keys = [(Decimal(o[field]) if field == "total" else o[field], o["order_id"]) for o in listed]
        assert keys == sorted(keys, reverse=sort.startswith("-")), sort
        assert len({o["order_id"] for o in listed}) == 6, sort


def test_a_cursor_belongs_to_its_sort(own_api: OwnApi) -> None:
    """A cursor used with another sort is 422 invalid-cursor; an unknown sort is 422 invalid-filter."""
    client, seller, project = own_api
    for _ in range(3):
        _import(client, seller)
    project()
    page = client.get("/v1/orders", params={"sort": "total", "limit": 1}, headers=seller.auth()).json()
    other = {"sort": "-total", "limit": 1, "cursor": page["next_cursor"]}
    _problem(client.get("/v1/orders", params=other, headers=seller.auth()), 422, "invalid-cursor")
    _problem(client.get("/v1/orders", params={"sort": "buyer"}, headers=seller.auth()), 422, "invalid-filter")


def test_updated_since_lists_what_changed(own_api: OwnApi) -> None:
    """`updated_since` keeps the orders changed at or after the moment, and the counts follow it."""
    client, seller, project = own_api
    _import(client, seller)
    changed = _import(client, seller)
    project()
    updated = {o["order_id"]: o["updated_at"] for o in _walk(client, seller)}
    body = {"carrier": "UPS", "tracking_number": UPS_TRACKING}
    assert client.post(f"/v1/orders/{changed}/shipments", json=body, headers=seller.auth()).status_code == 201
    project()
    since = max(updated.values())
    after = _walk(client, seller, updated_since=since, sort="updated_at")
    assert changed in [o["order_id"] for o in after]
    assert all(o["updated_at"] >= since for o in after)
    counts = client.get("/v1/orders/counts", params={"updated_since": since}, headers=seller.auth()).json()
    assert counts["all"] == len(after)


# --------------------------------------------------------------------------------- All Sales: counts


def test_counts_follow_the_filters(own_api: OwnApi) -> None:
    """`GET /v1/orders/counts` counts in all and per tab what the list shows under the same filters."""
    client, seller, project = own_api
    shipped = _import(client, seller)
    _import(client, seller)
    disputed = _import(client, seller, marketplace=Marketplace.EBAY)
    body = {"carrier": "ups", "tracking_number": UPS_TRACKING}
    assert client.post(f"/v1/orders/{shipped}/shipments", json=body, headers=seller.auth()).status_code == 201
    dispute = {"reason": "item not received"}
    assert (
        client.post(f"/v1/orders/{disputed}/disputes", json=dispute, headers=seller.auth()).status_code == 201
    )
    project()

    counts = client.get("/v1/orders/counts", headers=seller.auth())
    assert counts.status_code == 200, counts.text
    assert counts.json() == {
        "all": 3,
        "unshipped": 2,
        "partially_shipped": 0,
        "shipped": 1,
        "canceled": 0,
        "third_party_managed": 0,
        "disputes_open": 1,
        "buyer_cancel_requested": 0,
        "attention": 0,
    }
    for params in ({"marketplace": "ebay"}, {"open": "true"}, {"dispute": "open"}, {"q": "Ann"}):
        counted = client.get("/v1/orders/counts", params=params, headers=seller.auth()).json()
        listed = _walk(client, seller, **params)
        assert counted["all"] == len(listed), params
        for tab in ("unshipped", "shipped"):
            assert counted[tab] == sum(1 for o in listed if o["status"] == tab), (params, tab)
    _problem(
        client.get("/v1/orders/counts", params={"status": "shipped"}, headers=seller.auth()),
        400,
        "bad-request",
    )


# ------------------------------------------------------------------------------ query parameters


@pytest.mark.parametrize(
    "path",
    ["/v1/orders", "/v1/orders/counts", "/v1/accounts", "/v1/sync/outbound", "/v1/orders/{order_id}"],
)
def test_unknown_query_parameters_are_400(client: TestClient[Any], seller: Seller, path: str) -> None:
    """A parameter the route does not take (a typo in a filter) is 400 naming it, never silently ignored."""
    url = path.format(order_id=_import(client, seller))
    problem = _problem(
        client.get(url, params={"stauts": "shipped"}, headers=seller.auth()), 400, "bad-request"
    )
    assert problem["errors"][0]["field"] == "stauts"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": 0}, "invalid-filter"),
        ({"limit": "ten"}, "invalid-filter"),
        ({"status": "bogus"}, "invalid-filter"),
        ({"marketplace": "etsy"}, "invalid-filter"),
        ({"account_id": "not-a-uuid"}, "invalid-filter"),
        ({"open": "perhaps"}, "invalid-filter"),
        ({"purchased_from": "yesterday"}, "invalid-time"),  # times have a problem type of their own
        ({"updated_since": "2026-11-20"}, "invalid-time"),
    ],
)
def test_bad_query_values_answer_alike(
    client: TestClient[Any], seller: Seller, params: dict[str, str], code: str
) -> None:
    """Every query value that is not valid (out of range, unknown, unreadable) is 422, naming the parameter."""
    problem = _problem(client.get("/v1/orders", params=params, headers=seller.auth()), 422, code)
    assert problem["errors"]


# ---------------------------------------------------------------------------------------- disputes


def test_a_missing_dispute_on_an_existing_order_is_404(client: TestClient[Any], seller: Seller) -> None:
    """Closing a dispute the order does not have is 404 dispute-not-found (the order itself exists)."""
    order_id = _import(client, seller)
    response = client.post(
        f"/v1/orders/{order_id}/disputes/{uuid4()}/close", json={"outcome": "accepted"}, headers=seller.auth()
    )
    _problem(response, 404, "dispute-not-found")


# --------------------------------------------------------------------------------------- docs page


def test_the_docs_page_works_offline(client: TestClient[Any]) -> None:
    """`/schema` loads every script, style and icon from this app (vendored Swagger UI 5), none from a CDN."""
    page = client.get("/schema")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert len(assets) >= 3
    for asset in assets:
        assert asset.startswith("/schema/assets/"), asset
        assert client.get(asset).status_code == 200, asset
    assert "SwaggerUIBundle" in page.text
    assert client.get("/schema/openapi.json").status_code == 200


def test_the_openapi_document_describes_the_additions(client: TestClient[Any]) -> None:
    """The schema (which the schemathesis run walks) has the counts route, `sort`, `updated_since`,
    `carrier_name`, and the bulk import's body."""
    schema = client.get("/schema/openapi.json").json()
    paths = schema["paths"]
    assert paths["/v1/orders/counts"]["get"]["operationId"] == "countOrders"
    listed = {p["name"] for p in paths["/v1/orders"]["get"]["parameters"]}
    assert {"sort", "updated_since", "status", "cursor", "limit"} <= listed
    counted = {p["name"] for p in paths["/v1/orders/counts"]["get"]["parameters"]}
    assert "updated_since" in counted
    assert not {"sort", "status", "cursor", "limit"} & counted
    assert "carrier_name" in schema["components"]["schemas"]["ShipmentIn"]["properties"]
    body = paths["/v1/orders/import"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["orders"]["maxItems"] == MAX_BATCH
    for path, item in paths.items():
        for operation in item.values() if path.startswith("/v1/") else ():
            if isinstance(operation, dict) and "responses" in operation:
                assert "400" in operation["responses"]  # unknown query parameters, on every /v1 route

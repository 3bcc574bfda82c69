"""Money over HTTP on PostgreSQL: refunds give back exactly what was asked (API.md *Refunds, exactly*), and an
Idempotency-Key is the seller's, across every endpoint and order (*Idempotency, exactly*)."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from api_support import UPS_TRACKING, Seller, order_body
from litestar.testing import TestClient
from order_scenarios import catch_up, rows

from ledger.aggregates.values import Marketplace
from ledger.application.errors import OrderNotFoundError
from ledger.application.ledger import Ledger
from ledger.integrations.outbound import OutboundProjection
from ledger.projections import base

pytestmark = pytest.mark.postgres
PROBLEM = "https://ledger.dev/problems/"
SHIP = {"carrier": "ups", "tracking_number": UPS_TRACKING}
REPLAYED = "idempotent-replayed"


def _shipped_order(client: TestClient[Any], seller: Seller) -> str:
    """A paid Walmart order of two lines (25.00 + 2.00 tax; 5.00 + 4.99 shipping), every unit shipped."""
    imported = client.post(
        "/v1/orders", json=order_body(seller.accounts[Marketplace.WALMART]), headers=seller.auth()
    )
    assert imported.status_code == 201, imported.text
    order_id = str(imported.json()["order_id"])
    shipped = client.post(f"/v1/orders/{order_id}/shipments", json=SHIP, headers=seller.auth())
    assert shipped.status_code == 201, shipped.text
    return order_id


def _post(client: TestClient[Any], path: str, body: Any, seller: Seller, **headers: str) -> Any:
    sent = (
        seller.auth()
        | {"Content-Type": "application/json"}
        | {k.replace("_", "-"): v for k, v in headers.items()}
    )
    return client.post(path, content=json.dumps(body).encode(), headers=sent)


def _problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["type"] == PROBLEM + code


# ---------------------------------------------------------------------------------------------- refunds


@pytest.mark.parametrize(
    ("amounts", "total"),
    [
        ({"shipping_amount": "1.00"}, "1.00"),
        ({"tax_amount": "0.50"}, "0.50"),
        ({"shipping_amount": "1.00", "tax_amount": "0.50"}, "1.50"),
    ],
    ids=["shipping", "tax", "both"],
)
def test_an_amount_without_lines_refunds_only_that_amount_and_tells_the_marketplace_so(
    client: TestClient[Any],
    seller: Seller,
    api_ledger: Ledger,
    connect: base.Connect,
    amounts: dict[str, str],
    total: str,
) -> None:
    """A refund of shipping and/or tax with no lines refunds only those amounts: no unit, and the marketplace's
    queued refund carries only them."""
    order_id = _shipped_order(client, seller)

    refunded = _post(
        client, f"/v1/orders/{order_id}/refunds", {"reason": "shipping_adjustment", **amounts}, seller
    )

    assert refunded.status_code == 201, refunded.text
    order = client.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()
    assert order["refunded_total"] == total
    assert [line["refunded_quantity"] for line in order["lines"]] == [0, 0]
    assert order["status"] == "shipped"
    catch_up(OutboundProjection(), connect, api_ledger, 500)
    [(payload,)] = rows(
        connect,
        "SELECT payload FROM outbound_items WHERE order_id = %s AND action = 'refund'",
        UUID(order_id),
    )
    assert Decimal(payload["total"]) == Decimal(total)
    assert Decimal(payload["item_amount"]) == 0
    assert Decimal(payload["shipping_amount"]) == Decimal(amounts.get("shipping_amount", "0"))
    assert Decimal(payload["tax_amount"]) == Decimal(amounts.get("tax_amount", "0"))
    assert all(line["quantity"] == 0 for line in payload["lines"])


def test_a_refund_without_lines_or_amounts_refunds_everything_left(
    client: TestClient[Any], seller: Seller
) -> None:
    """No lines and no amounts: every shipped unit with its tax."""
    order_id = _shipped_order(client, seller)

    refunded = _post(client, f"/v1/orders/{order_id}/refunds", {"reason": "customer_return"}, seller)

    assert refunded.status_code == 201, refunded.text
    order = client.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()
    assert [line["refunded_quantity"] for line in order["lines"]] == [2, 1]
    assert order["refunded_total"] == "32.00"


@pytest.mark.parametrize("amounts", [{}, {"shipping_amount": "1.00"}], ids=["alone", "with-shipping"])
def test_an_empty_list_of_lines_is_422(
    client: TestClient[Any], seller: Seller, amounts: dict[str, str]
) -> None:
    """`lines: []` is refused with 422 and refunds nothing."""
    order_id = _shipped_order(client, seller)

    response = _post(
        client, f"/v1/orders/{order_id}/refunds", {"reason": "other", "lines": [], **amounts}, seller
    )

    assert response.status_code == 422, response.text
    assert client.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()["refunds"] == []


# ------------------------------------------------------------------------------------- idempotency keys


def test_a_replay_answers_the_first_response_with_the_replayed_header(
    client: TestClient[Any], seller: Seller
) -> None:
    """The same key, method, path and body: the first response again, `Idempotent-Replayed: true`, nothing new."""
    order_id = _shipped_order(client, seller)
    path = f"/v1/orders/{order_id}/refunds"
    body = {"reason": "damaged", "lines": [{"line_id": "1", "quantity": 1}]}

    first = _post(client, path, body, seller, Idempotency_Key="refund-k1")
    again = _post(client, path, body, seller, Idempotency_Key="refund-k1")

    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert REPLAYED not in first.headers
    assert again.headers[REPLAYED] == "true"
    assert again.headers["etag"] == first.headers["etag"]
    assert len(client.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()["refunds"]) == 1


def test_a_key_used_on_one_order_is_refused_on_another(client: TestClient[Any], seller: Seller) -> None:
    """The same key on another order's command is 422 and records nothing there."""
    first, second = _shipped_order(client, seller), _shipped_order(client, seller)
    body = {"reason": "damaged", "lines": [{"line_id": "1", "quantity": 1}]}
    assert (
        _post(client, f"/v1/orders/{first}/refunds", body, seller, Idempotency_Key="k-orders").status_code
        == 201
    )

    _problem(
        _post(client, f"/v1/orders/{second}/refunds", body, seller, Idempotency_Key="k-orders"),
        422,
        "idempotency-key-reused",
    )
    assert client.get(f"/v1/orders/{second}", headers=seller.auth()).json()["refunds"] == []


def test_a_key_used_on_one_endpoint_is_refused_on_every_other(
    client: TestClient[Any], seller: Seller
) -> None:
    """A key used to ship is 422 on a cancellation, on a dispute and on creating an account, and the other way
    round; nothing is recorded by the refused requests."""
    imported = client.post(
        "/v1/orders", json=order_body(seller.accounts[Marketplace.EBAY]), headers=seller.auth()
    )
    order_id = imported.json()["order_id"]
    url = f"/v1/orders/{order_id}"
    shipped = _post(
        client,
        f"{url}/shipments",
        SHIP | {"lines": [{"line_id": "1", "quantity": 1}]},
        seller,
        Idempotency_Key="k1",
    )
    assert shipped.status_code == 201, shipped.text

    for path, body in (
        (f"{url}/cancellations", {"reason": "out_of_stock"}),
        (f"{url}/disputes", {"reason": "late"}),
        ("/v1/accounts", {"marketplace": "jet", "name": "k1 account"}),
    ):
        _problem(_post(client, path, body, seller, Idempotency_Key="k1"), 422, "idempotency-key-reused")
    order = client.get(url, headers=seller.auth()).json()
    assert (order["version"], order["cancellations"], order["disputes"]) == (2, [], [])

    account = _post(
        client, "/v1/accounts", {"marketplace": "jet", "name": "k2 account"}, seller, Idempotency_Key="k2"
    )
    assert account.status_code == 201, account.text
    _problem(
        _post(client, f"{url}/disputes", {"reason": "late"}, seller, Idempotency_Key="k2"),
        422,
        "idempotency-key-reused",
    )


def test_keys_of_one_seller_are_not_another_sellers(
    client: TestClient[Any], seller: Seller, other_seller: Seller
) -> None:
    """Two sellers may use the same key: each gets its own command recorded."""
    mine, theirs = _shipped_order(client, seller), _shipped_order(client, other_seller)
    body = {"reason": "shipping_adjustment", "shipping_amount": "1.00"}
    for seller_, order_id in ((seller, mine), (other_seller, theirs)):
        response = _post(client, f"/v1/orders/{order_id}/refunds", body, seller_, Idempotency_Key="shared")
        assert response.status_code == 201
        assert REPLAYED not in response.headers


def test_identical_concurrent_requests_with_one_key_and_if_match_all_get_the_replay(
    client: TestClient[Any], seller: Seller
) -> None:
    """16 identical requests at once with one key and one If-Match: one records, all 16 answer 201 with the same
    body (none 412), and the order has one refund."""
    order_id = _shipped_order(client, seller)
    etag = client.get(f"/v1/orders/{order_id}", headers=seller.auth()).headers["etag"]
    body = {"reason": "damaged", "lines": [{"line_id": "1", "quantity": 1}]}
    start = threading.Barrier(16)
    answers: list[Any] = [None] * 16

    def send(index: int) -> None:
        start.wait()
        answers[index] = _post(
            client, f"/v1/orders/{order_id}/refunds", body, seller, Idempotency_Key="burst", If_Match=etag
        )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [a.status_code for a in answers] == [201] * 16, [a.text for a in answers if a.status_code != 201]
    assert len({a.content for a in answers}) == 1
    assert sum(1 for a in answers if REPLAYED not in a.headers) == 1
    assert len(client.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()["refunds"]) == 1


def test_a_key_used_on_an_import_is_refused_on_an_order_command_and_back(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger
) -> None:
    """An import's key replays the import (with the header) and is 422 on another order's command; a command's
    key is 422 on an import, which imports nothing."""
    order_id = _shipped_order(client, seller)
    body = order_body(seller.accounts[Marketplace.JET])
    first = _post(client, "/v1/orders", body, seller, Idempotency_Key="import-k")
    again = _post(client, "/v1/orders", body, seller, Idempotency_Key="import-k")
    assert first.status_code == again.status_code == 201
    assert (again.content, again.headers[REPLAYED]) == (first.content, "true")
    refund = {"reason": "shipping_adjustment", "shipping_amount": "1.00"}
    _problem(
        _post(client, f"/v1/orders/{order_id}/refunds", refund, seller, Idempotency_Key="import-k"),
        422,
        "idempotency-key-reused",
    )
    assert (
        _post(
            client, f"/v1/orders/{order_id}/refunds", refund, seller, Idempotency_Key="refund-k"
        ).status_code
        == 201
    )
    other = order_body(seller.accounts[Marketplace.JET])
    _problem(
        _post(client, "/v1/orders", other, seller, Idempotency_Key="refund-k"), 422, "idempotency-key-reused"
    )
    with pytest.raises(OrderNotFoundError):
        api_ledger.find_order(seller.name, Marketplace.JET, other["marketplace_order_id"])

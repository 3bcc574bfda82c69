"""`POST /v1/shipments/bulk` over HTTP on PostgreSQL: per-row reports, re-uploads, sellers, roles, bad bodies."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import UPS_TRACKING, Seller, order_body

from ledger.aggregates.values import Marketplace, Role

pytestmark = pytest.mark.postgres

HEADER = "marketplace_order_id,line_id,quantity,carrier,tracking_number,shipping_class,shipped_at\n"
CSV = {"Content-Type": "text/csv"}


def _import(client: Any, seller: Seller) -> dict[str, Any]:
    body = order_body(seller.accounts[Marketplace.WALMART])
    response = client.post("/v1/orders", json=body, headers=seller.auth())
    assert response.status_code == 201, response.text
    return {"order_id": response.json()["order_id"], "moid": body["marketplace_order_id"]}


def _upload(client: Any, seller: Seller, text: str, role: Role = Role.OPERATOR) -> Any:
    return client.post("/v1/shipments/bulk", content=text.encode(), headers={**seller.auth(role), **CSV})


def _order(client: Any, seller: Seller, order_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/orders/{order_id}", headers=seller.auth())
    assert response.status_code == 200
    return response.json()


def test_good_and_bad_rows_get_their_own_verdicts(client: Any, seller: Seller) -> None:
    """Good rows ship as one shipment per order and tracking number; bad rows are rejected with reasons."""
    order = _import(client, seller)
    moid = order["moid"]
    text = HEADER + (
        f"{moid},1,2,ups,{UPS_TRACKING},Ground,\n"
        f"{moid},2,1,ups,{UPS_TRACKING},Ground,\n"
        f"{moid},1,two,ups,{UPS_TRACKING},Ground,\n"
        f"NOT-AN-ORDER,1,1,ups,{UPS_TRACKING},,\n"
        f"{moid},1,1,pigeon,{UPS_TRACKING},,\n"
    )
    response = _upload(client, seller, text)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 3)
    rows = {r["row"]: r for r in body["rows"]}
    assert rows[2]["status"] == rows[3]["status"] == "accepted"
    assert rows[2]["shipment_id"] == rows[3]["shipment_id"]
    assert rows[2]["order_id"] == order["order_id"]
    assert rows[4]["code"] == "invalid-quantity"
    assert rows[5]["reason"] == "unknown order 'NOT-AN-ORDER'"
    assert rows[6]["code"] == "invalid-carrier"
    shipped = _order(client, seller, order["order_id"])
    assert [line["shipped"] for line in shipped["lines"]] == [2, 1]
    history = client.get(f"/v1/orders/{order['order_id']}/history", headers=seller.auth()).json()
    assert history["events"][-1]["source"] == "bulk"
    assert history["events"][-1]["actor"] == "operator-key"


def test_reupload_of_the_same_file_ships_nothing_twice(client: Any, seller: Seller) -> None:
    """The same file again: every row is accepted as already recorded, and the order does not change."""
    order = _import(client, seller)
    text = HEADER + f"{order['moid']},1,1,ups,{UPS_TRACKING},,\n"
    first = _upload(client, seller, text).json()
    version = _order(client, seller, order["order_id"])["version"]
    second = _upload(client, seller, text).json()
    assert second["accepted"] == 1
    assert second["rows"][0]["replayed"] is True
    assert second["rows"][0]["shipment_id"] == first["rows"][0]["shipment_id"]
    after = _order(client, seller, order["order_id"])
    assert after["version"] == version
    assert len(after["shipments"]) == 1
    assert after["lines"][0]["shipped"] == 1


def test_wrong_columns_and_duplicate_rows_are_row_rejections(client: Any, seller: Seller) -> None:
    """A header without tracking_number rejects every row; a repeated row is rejected after the first."""
    order = _import(client, seller)
    missing = "marketplace_order_id,line_id,quantity,carrier\n" + f"{order['moid']},1,1,ups\n"
    body = _upload(client, seller, missing).json()
    assert body["rejected"] == 1
    assert "missing column(s) tracking_number" in body["rows"][0]["reason"]
    row = f"{order['moid']},1,1,ups,{UPS_TRACKING},,\n"
    body = _upload(client, seller, HEADER + row + row).json()
    assert [r["status"] for r in body["rows"]] == ["accepted", "rejected"]
    assert body["rows"][1]["reason"] == "duplicate of row 2"


def test_over_shipping_is_refused_in_words(client: Any, seller: Seller) -> None:
    """A row asking for more units than are left is rejected with the ledger's reason; nothing ships."""
    order = _import(client, seller)
    body = _upload(client, seller, HEADER + f"{order['moid']},1,3,ups,{UPS_TRACKING},,\n").json()
    assert body["rows"][0]["code"] == "over-shipment"
    assert "2 unit(s) left to ship, not 3" in body["rows"][0]["reason"]
    assert _order(client, seller, order["order_id"])["shipments"] == []


def test_another_sellers_order_is_unknown(client: Any, seller: Seller, other_seller: Seller) -> None:
    """Another seller's order, named by marketplace order id or by order id, is an unknown order."""
    order = _import(client, other_seller)
    by_moid = _upload(client, seller, HEADER + f"{order['moid']},1,1,ups,{UPS_TRACKING},,\n").json()
    by_id = _upload(
        client,
        seller,
        f"order_id,line_id,quantity,carrier,tracking_number\n{order['order_id']},1,1,ups,{UPS_TRACKING}\n",
    ).json()
    for body in (by_moid, by_id):
        assert body["rows"][0]["status"] == "rejected"
        assert body["rows"][0]["reason"].startswith("unknown order")
        assert "order_id" not in body["rows"][0]
    assert _order(client, other_seller, order["order_id"])["shipments"] == []


def test_bodies_that_are_not_csv_are_problems(client: Any, seller: Seller) -> None:
    """Not CSV at all is 400 `not-csv`; JSON sent as such is 415; both are problem details."""
    response = _upload(client, seller, "")
    assert response.status_code == 400
    assert response.json()["type"].endswith("/not-csv")
    assert response.headers["content-type"].startswith("application/problem+json")
    response = client.post("/v1/shipments/bulk", json={"rows": []}, headers={**seller.auth(Role.OPERATOR)})
    assert response.status_code == 415
    assert response.json()["type"].endswith("/unsupported-media-type")


def test_roles_and_keys(client: Any, seller: Seller) -> None:
    """Operators and admins may upload; an auditor gets 403 and no key 401."""
    text = HEADER + f"X,1,1,ups,{UPS_TRACKING},,\n"
    assert _upload(client, seller, text, Role.ADMIN).status_code == 200
    assert _upload(client, seller, text, Role.AUDITOR).status_code == 403
    assert _upload(client, seller, text, Role.FINANCE).status_code == 403
    assert client.post("/v1/shipments/bulk", content=text.encode(), headers=CSV).status_code == 401


def test_template_needs_no_key(client: Any) -> None:
    """`GET /shipments/template.csv` is a CSV download with the contract's columns, open to anyone."""
    response = client.get("/shipments/template.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.text.splitlines()[0] == HEADER.strip()


@pytest.mark.parametrize(
    "changed",
    [
        {"shipped_at": "2026-11-21T09:00:00Z"},
        {"shipping_class": "Express"},
    ],
    ids=["another-shipped_at", "another-shipping_class"],
)
def test_a_row_recorded_before_with_other_details_is_that_rows_verdict(
    client: Any, seller: Seller, changed: dict[str, str]
) -> None:
    """A row repeating an earlier upload's order, tracking and lines with another shipped_at or shipping_class
    is rejected in the report ("already recorded with different details"); the file's other rows are recorded."""
    first, second = _import(client, seller), _import(client, seller)
    row = {"shipping_class": "Ground", "shipped_at": "2026-11-20T12:00:00Z"}
    earlier = HEADER + f"{first['moid']},1,2,ups,{UPS_TRACKING},{row['shipping_class']},{row['shipped_at']}\n"
    assert _upload(client, seller, earlier).json()["accepted"] == 1
    row |= changed
    text = HEADER + (
        f"{second['moid']},1,2,ups,{UPS_TRACKING},Ground,\n"
        f"{first['moid']},1,2,ups,{UPS_TRACKING},{row['shipping_class']},{row['shipped_at']}\n"
        f"{first['moid']},2,1,ups,1Z999AA10123456793,Ground,\n"
    )

    response = _upload(client, seller, text)

    assert response.status_code == 200, response.text
    rows = {r["row"]: r for r in response.json()["rows"]}
    assert rows[2]["status"] == rows[4]["status"] == "accepted"
    assert rows[3]["status"] == "rejected"
    assert rows[3]["code"] == "idempotency-key-reused"
    assert rows[3]["reason"].startswith("already recorded with different details")
    assert [line["shipped"] for line in _order(client, seller, first["order_id"])["lines"]] == [2, 1]
    assert len(_order(client, seller, first["order_id"])["shipments"]) == 2
    assert [line["shipped"] for line in _order(client, seller, second["order_id"])["lines"]] == [2, 0]

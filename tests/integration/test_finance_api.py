"""`/v1/finance` over HTTP on real PostgreSQL: refunds with re-derivable totals and CSV, settlement uploads and
their stored reconciliations, exposure; roles (finance and admin only) and sellers kept apart."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from api_support import UPS_TRACKING, Seller, order_body
from litestar.testing import TestClient
from order_scenarios import catch_up

from ledger.aggregates.values import Context, Marketplace, Role, Source, SyncAction
from ledger.application.ledger import Ledger
from ledger.projections import base
from ledger.projections.exposure import ExposureProjection
from ledger.projections.refunds import RefundsProjection

PROBLEM = "https://ledger.dev/problems/"
FIN = Role.FINANCE
ORDER_TOTAL = Decimal("36.99")  # order_body: 2 x 12.50 + tax 2.00, 1 x 5.00 + shipping 4.99


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _problem(response: Any, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    if code is not None:
        assert response.json()["type"] == PROBLEM + code


def _order(client: TestClient[Any], seller: Seller, marketplace: Marketplace, moid: str | None = None) -> str:
    body = order_body(seller.accounts[marketplace], moid)
    return str(_ok(client.post("/v1/orders", json=body, headers=seller.auth(Role.OPERATOR)), 201)["order_id"])


def _ship(client: TestClient[Any], seller: Seller, order_id: str) -> str:
    body = {"carrier": "ups", "tracking_number": UPS_TRACKING}
    response = client.post(f"/v1/orders/{order_id}/shipments", json=body, headers=seller.auth(Role.OPERATOR))
    return str(_ok(response, 201)["shipment_id"])


def _refund(client: TestClient[Any], seller: Seller, order_id: str, reason: str, quantity: int = 1) -> None:
    body = {"reason": reason, "lines": [{"line_id": "1", "quantity": quantity}]}
    _ok(client.post(f"/v1/orders/{order_id}/refunds", json=body, headers=seller.auth(Role.OPERATOR)), 201)


def _project(connect: base.Connect, ledger: Ledger) -> None:
    for projection in (RefundsProjection(), ExposureProjection()):
        catch_up(projection, connect, ledger, 500)


@pytest.fixture
def refunded(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger, connect: base.Connect
) -> dict[str, str]:
    """Three refunds in USD: two on an eBay order (damaged, goodwill), one on a Walmart order (damaged)."""
    ebay = _order(client, seller, Marketplace.EBAY)
    walmart = _order(client, seller, Marketplace.WALMART)
    for order_id in (ebay, walmart):
        _ship(client, seller, order_id)
    _refund(client, seller, ebay, "damaged")
    _refund(client, seller, ebay, "goodwill")
    _refund(client, seller, walmart, "damaged")
    _project(connect, api_ledger)
    return {"ebay": ebay, "walmart": walmart}


def _all_pages(client: TestClient[Any], seller: Seller, **params: Any) -> tuple[list[dict[str, Any]], Any]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": 1} | ({"cursor": cursor} if cursor else {})
        body = _ok(client.get("/v1/finance/refunds", params=query, headers=seller.auth(FIN)))
        items += body["items"]
        if body["next_cursor"] is None:
            return items, body["totals"]
        cursor = body["next_cursor"]


def _sums(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    sums: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = sums.setdefault(
            row["currency"],
            {
                "currency": row["currency"],
                "refunds": 0,
                **dict.fromkeys(("item_amount", "tax_amount", "shipping_amount", "total"), Decimal(0)),
            },
        )
        entry["refunds"] += 1
        for name in ("item_amount", "tax_amount", "shipping_amount", "total"):
            entry[name] += Decimal(row[name])
    return sums


def _as_decimals(totals: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        t["currency"]: {k: v if k in ("currency", "refunds") else Decimal(v) for k, v in t.items()}
        for t in totals
    }


# ---------------------------------------------------------------------------------------------- refunds


def test_refund_totals_re_derive_from_every_page(
    client: TestClient[Any], seller: Seller, refunded: dict[str, str]
) -> None:
    """Pages list each refund once with its lines; the totals per currency are the sums of the listed rows."""
    items, totals = _all_pages(client, seller)

    assert len(items) == 3
    assert len({i["refund_id"] for i in items}) == 3
    assert all(isinstance(i["total"], str) for i in items)
    assert all(
        Decimal(i["total"])
        == sum(
            Decimal(line[k]) for line in i["lines"] for k in ("item_amount", "tax_amount", "shipping_amount")
        )
        for i in items
    )
    assert _as_decimals(totals) == _sums(items)
    assert [i["refunded_at"] for i in items] == sorted((i["refunded_at"] for i in items), reverse=True)


def test_refund_filters(client: TestClient[Any], seller: Seller, refunded: dict[str, str]) -> None:
    """marketplace, reason, account_id, currency and days narrow the items and the totals alike."""
    today = datetime.now(UTC).date()
    cases = {
        "marketplace": ({"marketplace": "ebay"}, 2),
        "reason": ({"reason": "goodwill"}, 1),
        "account": ({"account_id": str(seller.accounts[Marketplace.WALMART])}, 1),
        "currency": ({"currency": "EUR"}, 0),
        "today": ({"from": str(today - timedelta(days=1)), "to": str(today + timedelta(days=1))}, 3),
        "before": ({"to": str(today - timedelta(days=2))}, 0),
        "ebay damaged": ({"marketplace": "ebay", "reason": "damaged"}, 1),
    }
    for name, (params, count) in cases.items():
        items, totals = _all_pages(client, seller, **params)
        assert len(items) == count, name
        assert _as_decimals(totals) == _sums(items), name
    ebay_items, _ = _all_pages(client, seller, marketplace="ebay")
    assert {i["order_id"] for i in ebay_items} == {refunded["ebay"]}


def test_refunds_as_csv_parse_back_to_the_json_figures(
    client: TestClient[Any], seller: Seller, refunded: dict[str, str]
) -> None:
    """`format=csv` streams every matching refund; its rows are the JSON items and sum to the JSON totals."""
    response = client.get(
        "/v1/finance/refunds", params={"format": "csv", "limit": 1}, headers=seller.auth(FIN)
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    items, totals = _all_pages(client, seller)

    assert len(rows) == 3  # every row, not one page
    by_id = {i["refund_id"]: i for i in items}
    for row in rows:
        item = by_id[row["refund_id"]]
        for name in ("order_id", "marketplace", "currency", "reason", "total", "item_amount", "tax_amount"):
            assert row[name] == str(item[name]), name
        assert datetime.fromisoformat(row["refunded_at"]) == datetime.fromisoformat(item["refunded_at"])
    assert _sums(rows) == _as_decimals(totals)
    filtered = client.get(
        "/v1/finance/refunds", params={"format": "csv", "reason": "goodwill"}, headers=seller.auth(FIN)
    )
    assert len(list(csv.DictReader(io.StringIO(filtered.text)))) == 1


def test_refunds_bad_parameters(client: TestClient[Any], seller: Seller) -> None:
    """A foreign cursor, a range ending before it starts, a lower-case currency: each 422, never 500."""
    auth = seller.auth(FIN)
    _problem(
        client.get("/v1/finance/refunds", params={"cursor": "nope"}, headers=auth), 422, "invalid-cursor"
    )
    _problem(
        client.get("/v1/finance/refunds", params={"from": "2026-11-02", "to": "2026-11-01"}, headers=auth),
        422,
    )
    _problem(
        client.get(
            "/v1/finance/refunds",
            params={"from": "2026-11-02", "to": "2026-11-01", "format": "csv"},
            headers=auth,
        ),
        422,
    )
    _problem(client.get("/v1/finance/refunds", params={"currency": "usd"}, headers=auth), 422)
    _problem(client.get("/v1/finance/refunds", params={"format": "xml"}, headers=auth), 422)
    _problem(
        client.get("/v1/finance/refunds", params={"from": "yesterday"}, headers=auth), 422, "invalid-time"
    )


def test_another_sellers_refunds_are_invisible(
    client: TestClient[Any], seller: Seller, other_seller: Seller, refunded: dict[str, str]
) -> None:
    """The other seller's finance key lists nothing of this seller's, in JSON and CSV."""
    body = _ok(client.get("/v1/finance/refunds", headers=other_seller.auth(FIN)))
    assert body == {"items": [], "totals": [], "next_cursor": None}
    csv_body = client.get("/v1/finance/refunds", params={"format": "csv"}, headers=other_seller.auth(FIN))
    assert len(list(csv.DictReader(io.StringIO(csv_body.text)))) == 0


# ---------------------------------------------------------------------------------------------- access


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/finance/refunds"),
        ("GET", "/v1/finance/exposure"),
        ("GET", "/v1/finance/reconciliations"),
        ("GET", f"/v1/finance/reconciliations/{uuid4()}"),
        ("POST", "/v1/finance/settlements?marketplace=ebay"),
    ],
)
def test_only_finance_and_admin_may_use_finance(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger, connect: base.Connect, method: str, path: str
) -> None:
    """operator, auditor and integration keys are 403; no key is 401; finance and admin get past the guard."""
    _project(connect, api_ledger)  # the finance read models exist, as in a running service
    for role in (Role.OPERATOR, Role.AUDITOR, Role.INTEGRATION):
        _problem(client.request(method, path, headers=seller.auth(role), content=b"x"), 403, "forbidden")
    _problem(client.request(method, path, content=b"x"), 401, "unauthorized")
    for role in (Role.FINANCE, Role.ADMIN):
        assert client.request(method, path, headers=seller.auth(role), content=b"x").status_code in (
            200,
            404,
            422,
        )


# ------------------------------------------------------------------------------------------ settlements

AMAZON_COLUMNS = (
    "settlement-id",
    "settlement-start-date",
    "settlement-end-date",
    "deposit-date",
    "total-amount",
    "currency",
    "transaction-type",
    "order-id",
    "merchant-order-id",
    "adjustment-id",
    "shipment-id",
    "marketplace-name",
    "amount-type",
    "amount-description",
    "amount",
    "fulfillment-id",
    "posted-date",
    "posted-date-time",
    "order-item-code",
    "merchant-order-item-id",
    "merchant-adjustment-item-id",
    "sku",
    "quantity-purchased",
    "promotion-id",
)


def _amazon_report(rows: list[tuple[str, str, str]]) -> bytes:
    """(order-id, amount-description, amount) Order rows, in the hour around now."""
    stamp = "%Y-%m-%d %H:%M:%S UTC"
    now = datetime.now(UTC)

    def line(**values: str) -> str:
        return "\t".join(values.get(c, "") for c in AMAZON_COLUMNS)

    head = {
        "settlement-id": "77",
        "settlement-start-date": (now - timedelta(hours=1)).strftime(stamp),
        "settlement-end-date": (now + timedelta(hours=1)).strftime(stamp),
        "total-amount": "10.00",
        "currency": "USD",
    }
    text = ["\t".join(AMAZON_COLUMNS), line(**head)]
    text += [
        line(
            **{
                "transaction-type": "Order",
                "order-id": o,
                "amount-type": "ItemPrice",
                "amount-description": d,
                "amount": a,
            }
        )
        for o, d, a in rows
    ]
    return ("\n".join(text) + "\n").encode()


@pytest.fixture
def shipped_on_amazon(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger, connect: base.Connect
) -> list[str]:
    """Two shipped Amazon orders (AMZ-1, AMZ-2), the first one acknowledged by Amazon; projected."""
    order_ids = [_order(client, seller, Marketplace.AMAZON, f"AMZ-{n}") for n in (1, 2)]
    shipments = [_ship(client, seller, order_id) for order_id in order_ids]
    api_ledger.record_sync_outcome(
        Context(actor="amazon", source=Source.MARKETPLACE),
        order_ids[0],
        action=SyncAction.SHIP,
        reference=shipments[0],
        accepted=True,
    )
    _project(connect, api_ledger)
    return order_ids


def test_settlement_upload_is_reconciled_and_stored(
    client: TestClient[Any], seller: Seller, other_seller: Seller, shipped_on_amazon: list[str]
) -> None:
    """201 with the run's summary; the run reads back with both amounts per order; others cannot see it."""
    data = _amazon_report(
        [
            ("AMZ-1", "Principal", "30.00"),
            ("AMZ-1", "Tax", "2.00"),
            ("AMZ-1", "Shipping", "4.99"),
            ("AMZ-2", "Principal", "30.00"),
            ("AMZ-1", "Principal", "oops"),
        ]
    )
    response = client.post(
        "/v1/finance/settlements",
        params={
            "marketplace": "amazon",
            "file_name": "V2-77.txt",
            "account_id": str(seller.accounts[Marketplace.AMAZON]),
        },
        content=data,
        headers={**seller.auth(FIN), "Content-Type": "text/tab-separated-values"},
    )
    summary = _ok(response, 201)

    assert (summary["matched"], summary["amount_differs"], summary["bad_rows"]) == (1, 1, 1)
    assert summary["file"] == {
        "name": "V2-77.txt",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert (summary["created_by"], summary["source"], summary["settlement_id"]) == (
        "finance-key",
        "api",
        "77",
    )
    rid = summary["reconciliation_id"]
    full = _ok(client.get(f"/v1/finance/reconciliations/{rid}", headers=seller.auth(Role.ADMIN)))
    items = {i["marketplace_order_id"]: i for i in full["items"]}
    assert items["AMZ-1"]["outcome"] == "matched"
    assert (items["AMZ-1"]["ledger_amount"], items["AMZ-1"]["marketplace_amount"]) == ("36.99", "36.99")
    assert items["AMZ-2"] | {"report_lines": None} == {
        "kind": "charge",
        "outcome": "amount_differs",
        "marketplace_order_id": "AMZ-2",
        "order_id": shipped_on_amazon[1],
        "currency": "USD",
        "ledger_amount": "36.99",
        "marketplace_amount": "30.00",
        "difference": "-6.99",
        "report_lines": None,
    }
    assert full["bad_row_details"] == [
        {"line": 7, "message": "amount 'oops' is not a number", "field": "amount"}
    ]
    [totals] = full["totals"]
    assert Decimal(totals["ledger_amount"]) == sum(Decimal(i["ledger_amount"]) for i in full["items"])
    assert Decimal(totals["marketplace_amount"]) == sum(
        Decimal(i["marketplace_amount"]) for i in full["items"]
    )
    listed = _ok(client.get("/v1/finance/reconciliations", headers=seller.auth(FIN)))
    assert [r["reconciliation_id"] for r in listed["items"]] == [rid]
    _problem(client.get(f"/v1/finance/reconciliations/{rid}", headers=other_seller.auth(FIN)), 404)
    assert _ok(client.get("/v1/finance/reconciliations", headers=other_seller.auth(FIN)))["items"] == []


def test_settlement_upload_refusals(
    client: TestClient[Any], seller: Seller, other_seller: Seller, shipped_on_amazon: list[str]
) -> None:
    """Not a report, no format for the marketplace, a foreign or other-marketplace account: problems, not stored."""
    auth = {**seller.auth(FIN), "Content-Type": "text/csv"}
    good = _amazon_report([("AMZ-1", "Principal", "30.00")])
    _problem(
        client.post(
            "/v1/finance/settlements", params={"marketplace": "amazon"}, content=b"a,b\n1,2\n", headers=auth
        ),
        422,
        "invalid-settlement-report",
    )
    _problem(
        client.post("/v1/finance/settlements", params={"marketplace": "amazon"}, content=b"", headers=auth),
        422,
    )
    _problem(
        client.post("/v1/finance/settlements", params={"marketplace": "walmart"}, content=good, headers=auth),
        422,
    )
    _problem(
        client.post("/v1/finance/settlements", params={"marketplace": "etsy"}, content=good, headers=auth),
        422,
    )
    _problem(client.post("/v1/finance/settlements", content=good, headers=auth), 422)
    foreign = str(other_seller.accounts[Marketplace.AMAZON])
    _problem(
        client.post(
            "/v1/finance/settlements",
            params={"marketplace": "amazon", "account_id": foreign},
            content=good,
            headers=auth,
        ),
        404,
    )
    ebay_account = str(seller.accounts[Marketplace.EBAY])
    _problem(
        client.post(
            "/v1/finance/settlements",
            params={"marketplace": "amazon", "account_id": ebay_account},
            content=good,
            headers=auth,
        ),
        422,
    )
    _problem(
        client.post(
            "/v1/finance/settlements", params={"marketplace": "amazon"}, content=b"x" * 70_000, headers=auth
        ),
        413,
    )
    assert _ok(client.get("/v1/finance/reconciliations", headers=seller.auth(FIN)))["items"] == []


def test_settlement_idempotency_key(
    client: TestClient[Any], seller: Seller, shipped_on_amazon: list[str]
) -> None:
    """The same Idempotency-Key and file answer with the first run; another file under it is 422."""
    headers = {**seller.auth(FIN), "Idempotency-Key": "nov-77"}
    data = _amazon_report([("AMZ-1", "Principal", "30.00")])
    first = _ok(client.post("/v1/finance/settlements?marketplace=amazon", content=data, headers=headers), 201)
    again = _ok(client.post("/v1/finance/settlements?marketplace=amazon", content=data, headers=headers), 201)
    assert again == first
    other = _amazon_report([("AMZ-1", "Principal", "31.00")])
    _problem(
        client.post("/v1/finance/settlements?marketplace=amazon", content=other, headers=headers),
        422,
        "idempotency-key-reused",
    )


# --------------------------------------------------------------------------------------------- exposure


def test_exposure_is_the_unconfirmed_shipments(
    client: TestClient[Any], seller: Seller, other_seller: Seller, shipped_on_amazon: list[str]
) -> None:
    """Only AMZ-2 is unconfirmed: its value, count and time; nothing for another seller or marketplace."""
    body = _ok(client.get("/v1/finance/exposure", headers=seller.auth(FIN)))
    [entry] = body["items"]
    assert (entry["marketplace"], entry["currency"], entry["shipments"], entry["units"]) == (
        "amazon",
        "USD",
        1,
        3,
    )
    assert entry["value"] == str(ORDER_TOTAL)
    assert datetime.fromisoformat(entry["oldest_shipped_at"]) <= datetime.now(UTC)
    assert _ok(
        client.get("/v1/finance/exposure", params={"marketplace": "ebay"}, headers=seller.auth(FIN))
    ) == {"items": []}
    assert _ok(client.get("/v1/finance/exposure", headers=other_seller.auth(FIN))) == {"items": []}


def test_openapi_documents_the_finance_operations(client: TestClient[Any]) -> None:
    """Operation ids, the finance tag, problem responses and the settlement upload's body types are in /schema."""
    schema = client.get("/schema/openapi.json").json()
    operations = {
        op["operationId"]: op
        for path in schema["paths"].values()
        for op in path.values()
        if isinstance(op, dict) and "operationId" in op
    }
    for name in (
        "listFinanceRefunds",
        "reconcileSettlement",
        "listReconciliations",
        "getReconciliation",
        "getExposure",
    ):
        assert operations[name]["tags"] == ["finance"]
        assert "403" in operations[name]["responses"]
    assert {"application/json", "text/csv"} <= set(
        operations["listFinanceRefunds"]["responses"]["200"]["content"]
    )
    upload = operations["reconcileSettlement"]
    assert {"text/csv", "text/tab-separated-values"} <= set(upload["requestBody"]["content"])
    assert "422" in upload["responses"]


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_refunds_agree_with_the_api(
    client: TestClient[Any], seller: Seller, refunded: dict[str, str], cli: Any
) -> None:
    """`ledger finance refunds` prints the API's items and totals (json), its CSV rows (csv), and the totals (text)."""
    items, totals = _all_pages(client, seller)
    status, out, err = cli("finance", "refunds", "--seller", seller.name, "--format", "json")
    assert status == 0, err
    body = json.loads(out)
    assert sorted(body["items"], key=lambda i: i["refund_id"]) == sorted(items, key=lambda i: i["refund_id"])
    assert body["totals"] == totals

    status, out, _ = cli(
        "finance", "refunds", "--seller", seller.name, "--format", "csv", "--reason", "damaged"
    )
    api_csv = client.get(
        "/v1/finance/refunds", params={"format": "csv", "reason": "damaged"}, headers=seller.auth(FIN)
    )
    assert status == 0
    assert list(csv.reader(io.StringIO(out))) == list(csv.reader(io.StringIO(api_csv.text)))

    status, out, _ = cli("finance", "refunds", "--seller", seller.name)
    [usd] = totals
    assert f"total USD: 3 refunds, items {usd['item_amount']}" in out
    status, _, err = cli("finance", "refunds", "--seller", seller.name, "--from", "2026-13-01")
    assert status == 2
    assert "not a day" in err


def test_cli_reconcile_stores_a_run_the_api_reads(
    client: TestClient[Any], seller: Seller, shipped_on_amazon: list[str], cli: Any, tmp_path: Path
) -> None:
    """`ledger finance reconcile` records the CLI's actor and the file; exit 1 when rows were bad; exposure agrees."""
    report = tmp_path / "settlement-77.txt"
    report.write_bytes(_amazon_report([("AMZ-1", "Principal", "36.99"), ("AMZ-2", "Principal", "1e9")]))

    status, out, err = cli(
        "finance",
        "reconcile",
        str(report),
        "--seller",
        seller.name,
        "--marketplace",
        "amazon",
        "--actor",
        "alice",
    )

    assert status == 1, err
    assert "bad row line 4: amount '1e9' is not a number" in out
    assert "missing_in_marketplace" in out  # AMZ-2: its only row was bad
    [run] = _ok(client.get("/v1/finance/reconciliations", headers=seller.auth(FIN)))["items"]
    assert (run["created_by"], run["source"], run["file"]["name"]) == ("alice", "cli", "settlement-77.txt")
    assert (run["matched"], run["missing_in_marketplace"], run["bad_rows"]) == (1, 1, 1)
    status, out, _ = cli(
        "finance", "reconciliation", run["reconciliation_id"], "--seller", seller.name, "--format", "json"
    )
    assert status == 0
    assert json.loads(out) == _ok(
        client.get(f"/v1/finance/reconciliations/{run['reconciliation_id']}", headers=seller.auth(FIN))
    )
    status, _, err = cli("finance", "reconciliation", run["reconciliation_id"], "--seller", "someone-else")
    assert status == 1
    assert "reconciliation-not-found" in err
    status, _, err = cli(
        "finance", "reconcile", str(tmp_path / "none.txt"), "--seller", seller.name, "--marketplace", "amazon"
    )
    assert status == 1
    assert "cannot read" in err

    status, out, _ = cli("finance", "exposure", "--seller", seller.name, "--json")
    assert status == 0
    assert json.loads(out) == _ok(client.get("/v1/finance/exposure", headers=seller.auth(FIN)))


def test_a_settlement_key_is_the_sellers_across_endpoints(
    client: TestClient[Any], seller: Seller, shipped_on_amazon: list[str]
) -> None:
    """A key used on a settlement upload is 422 on an order command, and a command's key is 422 on an upload."""
    data = _amazon_report([("AMZ-1", "Principal", "30.00")])
    upload = {**seller.auth(FIN), "Idempotency-Key": "settle-k"}
    _ok(client.post("/v1/finance/settlements?marketplace=amazon", content=data, headers=upload), 201)
    order_id = shipped_on_amazon[0]
    dispute = {"reason": "late"}
    _problem(
        client.post(
            f"/v1/orders/{order_id}/disputes",
            json=dispute,
            headers=seller.auth() | {"Idempotency-Key": "settle-k"},
        ),
        422,
        "idempotency-key-reused",
    )
    opened = client.post(
        f"/v1/orders/{order_id}/disputes",
        json=dispute,
        headers=seller.auth() | {"Idempotency-Key": "dispute-k"},
    )
    assert opened.status_code == 201, opened.text
    _problem(
        client.post(
            "/v1/finance/settlements?marketplace=amazon",
            content=data,
            headers={**seller.auth(FIN), "Idempotency-Key": "dispute-k"},
        ),
        422,
        "idempotency-key-reused",
    )

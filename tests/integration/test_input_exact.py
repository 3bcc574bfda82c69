"""API.md *Input, stated exactly*, over HTTP on PostgreSQL: every date parameter (finance refunds `from`/`to`
as JSON and CSV, All Sales `purchased_from`/`purchased_to`, an order's `as_of`, the web page's `from`/`to`) and
every file upload with dates (bulk shipments, settlement reports) driven by hypothesis over the whole calendar
and every zone offset: never a 5xx and never a cut-off CSV. Look-alike identifiers are one order and one SKU;
every CSV export neutralizes cells a spreadsheet would run. (The table of bad inputs is the reliability suite's.)
"""

from __future__ import annotations

import csv
import io
import sys
import unicodedata
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from api_support import UPS_TRACKING, Seller, order_body
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from order_scenarios import catch_up

from ledger.aggregates.values import Marketplace, Role
from ledger.api.bodies.finance import CSV_COLUMNS
from ledger.application.ledger import Ledger
from ledger.audit.as_of import COLUMNS
from ledger.cli.main import main
from ledger.eventstore.database import PostgresTarget
from ledger.projections import base
from ledger.projections.all_sales import AllSalesProjection
from ledger.projections.exposure import ExposureProjection
from ledger.projections.refunds import RefundsProjection

pytestmark = pytest.mark.postgres

HTTP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
OFFSETS = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
MOMENTS = st.datetimes(datetime.min, datetime.max, timezones=OFFSETS)  # noqa: DTZ901 - naive bounds, zoned values
DAYS = st.dates(min_value=date.min, max_value=date.max)
# What a client may type into a date parameter: days and times anywhere in the calendar, and anything else.
DAY_TEXT = st.one_of(DAYS.map(date.isoformat), st.text(max_size=12), st.just("10000-01-01"))
FORMULA = '=HYPERLINK("http://evil.example","click")'


def rfc3339(moment: datetime) -> str:
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


TIME_TEXT = st.one_of(MOMENTS.map(rfc3339), st.text(max_size=25))


def _import(
    client: TestClient[Any], seller: Seller, marketplace: Marketplace, **changes: Any
) -> dict[str, Any]:
    response = client.post("/v1/orders", json=order_body(seller.accounts[marketplace], **changes),
                           headers=seller.auth())  # fmt: skip
    assert response.status_code in {200, 201}, response.text
    return dict(response.json())


def _ship_and_refund(client: TestClient[Any], seller: Seller, order_id: str) -> None:
    shipment = {"carrier": "ups", "tracking_number": UPS_TRACKING}
    assert (
        client.post(f"/v1/orders/{order_id}/shipments", json=shipment, headers=seller.auth()).status_code
        == 201
    )
    refund = {"reason": "damaged", "lines": [{"line_id": "1", "quantity": 1}]}
    assert (
        client.post(f"/v1/orders/{order_id}/refunds", json=refund, headers=seller.auth()).status_code == 201
    )


@pytest.fixture
def refunded(client: TestClient[Any], seller: Seller, api_ledger: Ledger, connect: base.Connect) -> str:
    """An eBay order whose marketplace id is a formula, shipped and refunded once; the read models built."""
    order_id = str(_import(client, seller, Marketplace.EBAY, marketplace_order_id=FORMULA)["order_id"])
    _ship_and_refund(client, seller, order_id)
    for projection in (RefundsProjection(), AllSalesProjection(), ExposureProjection()):
        catch_up(projection, connect, api_ledger, 500)
    return order_id


# ------------------------------------------------------------------------------------ date filters


@HTTP
@given(date_from=st.none() | DAY_TEXT, date_to=st.none() | DAY_TEXT)
@example(date_from=None, date_to="9999-12-31")
@example(date_from="0001-01-01", date_to="9999-12-31")
@example(date_from="9999-12-31", date_to="9999-12-31")
def test_refund_day_filters_anywhere_in_the_calendar_are_answered_in_full(
    client: TestClient[Any], seller: Seller, refunded: str, date_from: str | None, date_to: str | None
) -> None:
    """Refunds `from`/`to`: 200 or 422, never 5xx; the CSV answers as the JSON does, every row and no cut-off."""
    params = {k: v for k, v in (("from", date_from), ("to", date_to)) if v is not None}
    auth = seller.auth(Role.FINANCE)
    listed = client.get("/v1/finance/refunds", params=params | {"limit": 500}, headers=auth)
    as_csv = client.get("/v1/finance/refunds", params=params | {"format": "csv"}, headers=auth)
    assert listed.status_code in {200, 422}, listed.text
    assert as_csv.status_code == listed.status_code, as_csv.text
    if listed.status_code != 200:
        assert listed.json()["errors"][0]["field"] in {"from", "to", "query"}
        return
    assert as_csv.text.endswith("\r\n")
    records = list(csv.reader(io.StringIO(as_csv.text)))
    assert tuple(records[0]) == CSV_COLUMNS
    assert [r[0] for r in records[1:]] == [item["refund_id"] for item in listed.json()["items"]]
    today = datetime.now(UTC).date().isoformat()
    if (date_from or "0001-01-01") <= today and date_to == "9999-12-31":
        assert len(records) == 2  # the refund is found with the calendar's last day as the end


@HTTP
@given(start=st.none() | TIME_TEXT, end=st.none() | TIME_TEXT)
@example(start="0001-01-01T00:00:00+14:00", end="9999-12-31T23:59:59-12:00")
def test_all_sales_time_filters_anywhere_in_the_calendar_are_answered(
    client: TestClient[Any], seller: Seller, refunded: str, start: str | None, end: str | None
) -> None:
    """All Sales `purchased_from`/`purchased_to` in any zone, years 1 to 9999: 200 or 422 naming the field."""
    params = {k: v for k, v in (("purchased_from", start), ("purchased_to", end)) if v is not None}
    response = client.get("/v1/orders", params=params, headers=seller.auth())
    assert response.status_code in {200, 422}, response.text
    if response.status_code == 422:
        assert response.json()["errors"][0]["field"] in {"purchased_from", "purchased_to", "query"}
    elif (start, end) == ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"):
        assert [item["order_id"] for item in response.json()["items"]] == [refunded]


@HTTP
@given(at=TIME_TEXT)
def test_an_order_as_of_any_moment_is_answered(
    client: TestClient[Any], seller: Seller, refunded: str, at: str
) -> None:
    """`GET /v1/orders/{id}?as_of=` at any moment of the calendar: the order then, 404 before it, or 422."""
    response = client.get(f"/v1/orders/{refunded}", params={"as_of": at}, headers=seller.auth())
    assert response.status_code in {200, 404, 422}, response.text


@HTTP
@given(date_from=DAY_TEXT, date_to=DAY_TEXT)
@example(date_from="", date_to="9999-12-31")
@example(date_from="0001-01-01", date_to="9999-12-31")
def test_the_web_pages_day_filters_are_answered(
    client: TestClient[Any], seller: Seller, refunded: str, date_from: str, date_to: str
) -> None:
    """The All Sales page's `from`/`to`: the page (200) or the page with the filter's error (400), never 5xx."""
    response = client.post("/signin", data={"api_key": seller.keys[Role.OPERATOR]}, follow_redirects=False)
    assert response.status_code == 303
    page = client.get("/", params={"from": date_from, "to": date_to})
    assert page.status_code in {200, 400}, page.text
    assert page.text.rstrip().endswith("</html>")


# ------------------------------------------------------------------------------------ file uploads


@HTTP
@given(
    shipped_at=st.one_of(
        MOMENTS.map(rfc3339),
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters=',"\r\n\x00')),
    )
)
@example(shipped_at="9999-12-31T23:59:59-12:00")
@example(shipped_at="0001-01-01T00:00:00+14:00")
def test_a_bulk_upload_gives_any_shipped_at_a_row_verdict(
    client: TestClient[Any], seller: Seller, shipped_at: str
) -> None:
    """`POST /v1/shipments/bulk` with shipped_at anywhere and in any zone: a report (200), the row judged."""
    order = _import(client, seller, Marketplace.WALMART)
    body = (
        "order_id,line_id,quantity,carrier,tracking_number,shipping_class,shipped_at\n"
        f"{order['order_id']},1,1,ups,{UPS_TRACKING},Ground,{shipped_at}\n"
    )
    headers = seller.auth(Role.OPERATOR) | {"Content-Type": "text/csv"}
    response = client.post("/v1/shipments/bulk", content=body.encode(), headers=headers)
    assert response.status_code == 200, response.text
    [row] = response.json()["rows"]
    assert row["status"] in {"accepted", "rejected"}


EBAY_HEADER = "Transaction creation date,Type,Order number,Gross transaction amount,Transaction currency\n"


@HTTP
@given(dates=st.lists(st.one_of(MOMENTS.map(rfc3339), DAYS.map(date.isoformat)), min_size=1, max_size=3))
@example(dates=["9999-12-31"])
@example(dates=["0001-01-01T00:00:00+14:00", "2026-11-20"])
def test_a_settlement_report_dated_anywhere_is_reconciled(
    client: TestClient[Any], seller: Seller, refunded: str, dates: list[str]
) -> None:
    """An eBay report whose rows are dated anywhere in years 1 to 9999, in any zone: 201 or 422, never 5xx."""
    report = EBAY_HEADER + "".join(f"{d},Order,12-{i},10.00,USD\n" for i, d in enumerate(dates))
    response = client.post("/v1/finance/settlements", params={"marketplace": "ebay"}, content=report.encode(),
                           headers=seller.auth(Role.FINANCE))  # fmt: skip
    assert response.status_code in {201, 422}, response.text


# ------------------------------------------------------------------------------------ identifiers


def test_one_order_id_however_encoded_is_one_order(client: TestClient[Any], seller: Seller) -> None:
    """The same marketplace order id in NFC, NFD, with a trailing space and fullwidth imports one order."""
    nfc = "CAFÉ-1" + seller.name[-6:]
    spellings = [nfc, unicodedata.normalize("NFD", nfc), nfc + " ", nfc.translate(_FULLWIDTH)]
    results = [_import(client, seller, Marketplace.AMAZON, marketplace_order_id=s) for s in spellings]
    assert len({r["order_id"] for r in results}) == 1
    assert [r["created"] for r in results] == [True, False, False, False]
    order = client.get(f"/v1/orders/{results[0]['order_id']}", headers=seller.auth()).json()
    assert order["marketplace_order_id"] == nfc


_FULLWIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}  # ASCII ! .. ~ to their fullwidth forms


def test_look_alike_skus_and_line_ids_are_one(client: TestClient[Any], seller: Seller) -> None:
    """SKUs and line ids are stored normalized, so inventory keyed by SKU never splits on how it was typed."""
    body = order_body(seller.accounts[Marketplace.JET])
    body["lines"][0] |= {"line_id": " \uff11 ", "sku": "MUG-1".translate(_FULLWIDTH)}
    body["lines"][1] |= {"sku": unicodedata.normalize("NFD", "CAFÉ-CUP ")}
    order_id = client.post("/v1/orders", json=body, headers=seller.auth()).json()["order_id"]
    lines = client.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()["lines"]
    assert [(x["line_id"], x["sku"]) for x in lines] == [("1", "MUG-1"), ("2", "CAFÉ-CUP")]
    ship = {
        "carrier": "ups",
        "tracking_number": UPS_TRACKING,
        "lines": [{"line_id": "\uff11", "quantity": 1}],
    }
    response = client.post(f"/v1/orders/{order_id}/shipments", json=ship, headers=seller.auth())
    assert response.status_code == 201, response.text


# ---------------------------------------------------------------------------------- CSV injection


def test_the_refunds_csv_neutralizes_formulas(client: TestClient[Any], seller: Seller, refunded: str) -> None:
    """`GET /v1/finance/refunds?format=csv`: a marketplace order id that is a formula is quoted behind a quote."""
    response = client.get("/v1/finance/refunds", params={"format": "csv"}, headers=seller.auth(Role.FINANCE))
    assert f'"\'{FORMULA.replace(chr(34), chr(34) * 2)}"' in response.text
    [row] = list(csv.DictReader(io.StringIO(response.text)))
    assert row["marketplace_order_id"] == "'" + FORMULA


def test_the_cli_exports_neutralize_formulas(
    client: TestClient[Any], seller: Seller, refunded: str, pg_target: PostgresTarget, pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`ledger report all-sales --format csv` and `ledger finance refunds --format csv`: buyer-chosen formulas
    are neutralized; the ledger's own numbers stay numbers."""
    _import(client, seller, Marketplace.WALMART, buyer={"name": "@SUM(1+1)*cmd|' /C calc'!A0", "email": "-x"})
    monkeypatch.setenv("LEDGER_DATABASE_URL", pg_url)
    monkeypatch.setenv("LEDGER_DATABASE_SCHEMA", pg_target.schema)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    sales, refunds = io.StringIO(), io.StringIO()
    assert main(["report", "all-sales", "--seller", seller.name, "--format", "csv"], out=sales) == 0
    assert main(["finance", "refunds", "--seller", seller.name, "--format", "csv"], out=refunds) == 0
    rows = list(csv.DictReader(io.StringIO(sales.getvalue())))
    assert tuple(rows[0]) == COLUMNS
    assert {r["buyer_name"] for r in rows} == {"Ann Lee", "'@SUM(1+1)*cmd|' /C calc'!A0"}
    assert {r["marketplace_order_id"] for r in rows} >= {"'" + FORMULA}
    [refund] = list(csv.DictReader(io.StringIO(refunds.getvalue())))
    assert refund["marketplace_order_id"] == "'" + FORMULA
    assert refund["total"][0].isdigit()

"""The bulk shipment CSV: parsing, per-row verdicts, and shipping on the in-memory Ledger."""

from __future__ import annotations

import csv
import io
from typing import Any
from uuid import uuid4

import pytest

from ledger.aggregates.values import LineQuantity, Marketplace, Source
from ledger.application.bulk_shipping import BulkShipper, idempotency_key
from ledger.application.shipments_csv import ACCEPTED, REJECTED, TEMPLATE, NotCsvError, failed_rows_csv, parse

UPS_TRACKING = "1Z999AA10123456784"  # a UPS example number with a correct check digit
HEADER = "marketplace_order_id,line_id,quantity,carrier,tracking_number,shipping_class,shipped_at\n"
OTHER_UPS = "1Z999AA10123456711"  # another valid UPS number (the check digit holds)


def _csv(*rows: str, header: str = HEADER) -> bytes:
    return (header + "".join(r + "\n" for r in rows)).encode()


def _run(shop: Any, data: bytes, seller: str | None = None):
    shipper = BulkShipper(shop.ledger, actor="bulk-test", seller=seller or shop.seller, source=Source.BULK)
    return shipper.run(parse(data))


def test_template_parses_cleanly() -> None:
    """The downloadable template has the contract's columns and rows that parse without error."""
    parsed = parse(TEMPLATE.encode())
    assert parsed.columns[:3] == ("marketplace_order_id", "line_id", "quantity")
    assert [r.error for r in parsed.rows] == [None, None]
    assert [r.row for r in parsed.rows] == [2, 3]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            "marketplace_order_id,line_id,quantity,carrier,shipping_class\n",
            "missing column(s) tracking_number",
        ),
        ("line_id,quantity,carrier,tracking_number\n", "marketplace_order_id (or order_id)"),
        ("marketplace_order_id,line_id,qty,carrier,tracking_number\n", "unknown column(s) 'qty'"),
    ],
)
def test_wrong_columns_reject_every_row(header: str, expected: str) -> None:
    """A header with a missing or unknown column rejects each row, naming the columns."""
    parsed = parse(_csv("ORDER-1,A,1,ups,x", "ORDER-1,B,1,ups,x", header=header))
    assert len(parsed.rows) == 2
    assert all(r.code == "wrong-columns" and expected in (r.error or "") for r in parsed.rows)


def test_row_with_wrong_field_count_is_rejected_alone() -> None:
    """A row with more or fewer fields than the header is rejected; the next row still parses."""
    parsed = parse(_csv(f"ORDER-1,A,1,ups,{UPS_TRACKING},,,extra", f"ORDER-1,B,1,ups,{UPS_TRACKING},,"))
    assert parsed.rows[0].code == "wrong-columns"
    assert "8 fields" in (parsed.rows[0].error or "")
    assert parsed.rows[1].error is None


@pytest.mark.parametrize("quantity", ["two", "0", "-1", "1.5", "", "10000001"])
def test_bad_quantities_are_rejected(quantity: str) -> None:
    """A quantity that is not a whole number from 1 up is a row rejection with a clear reason."""
    [row] = parse(_csv(f"ORDER-1,A,{quantity},ups,{UPS_TRACKING},,")).rows
    assert row.code == "invalid-quantity"
    assert "quantity" in (row.error or "")


def test_bad_carrier_and_tracking_number_are_rejected() -> None:
    """An unknown carrier, an empty or malformed tracking number, a naive time: each rejects its row."""
    rows = parse(
        _csv(
            f"ORDER-1,A,1,pigeon,{UPS_TRACKING},,",
            "ORDER-1,A,1,ups,1Z999AA10123456780,,",
            "ORDER-1,A,1,ups,,,",
            f"ORDER-1,A,1,UPS,{UPS_TRACKING},,2026-11-20T10:00:00",
            f"ORDER-2,A,1,UPS,{UPS_TRACKING.lower()},,2026-11-20T10:00:00Z",
        )
    ).rows
    assert [r.code for r in rows] == [
        "invalid-carrier",
        "invalid-tracking-number",
        "invalid-tracking-number",
        "invalid-time",
        "",
    ]
    assert "unknown carrier 'pigeon'" in (rows[0].error or "")


def test_duplicate_rows_are_rejected_after_the_first() -> None:
    """The same line twice in one shipment: the first row stands, the copy is rejected naming it."""
    rows = parse(
        _csv(
            f"ORDER-1,A,1,ups,{UPS_TRACKING},,",
            f"ORDER-1,A,1,ups,{UPS_TRACKING},,",
            f"ORDER-1,A,2,ups,{UPS_TRACKING},,",
        )
    ).rows
    assert rows[0].error is None
    assert rows[1].error == "duplicate of row 2"
    assert rows[2].code == "duplicate-row"


@pytest.mark.parametrize(
    "data",
    [b"", b"   \n", b"\x00\x01binary\x00", "é".encode("latin-1") + b",x\n", b'{"not": "csv"}', b"a,b\n1,2\n"],
)
def test_not_csv_is_refused_whole(data: bytes) -> None:
    """Empty, binary, non-UTF-8 or header-less input is not a shipment file at all."""
    with pytest.raises(NotCsvError):
        parse(data)


def test_rows_of_one_order_and_tracking_number_ship_as_one_shipment(shop: Any) -> None:
    """Two rows with the same order and tracking number become one shipment with both lines."""
    order_id = shop.order(Marketplace.WALMART)
    moid = shop.details(order_id).marketplace_order_id
    report = _run(
        shop, _csv(f"{moid},A,2,ups,{UPS_TRACKING},Ground,", f"{moid},B,1,ups,{UPS_TRACKING},Ground,")
    )
    assert [r.status for r in report.rows] == [ACCEPTED, ACCEPTED]
    assert report.rows[0].shipment_id == report.rows[1].shipment_id is not None
    details = shop.details(order_id)
    assert len(details.shipments) == 1
    assert {line.line_id: line.shipped for line in details.lines} == {"A": 2, "B": 1}
    assert shop.events(order_id)[-1].source == Source.BULK


def test_reupload_replays_and_never_ships_twice(shop: Any) -> None:
    """The same file uploaded again is accepted as already recorded, and no second shipment appears."""
    order_id = shop.order(Marketplace.WALMART)
    moid = shop.details(order_id).marketplace_order_id
    data = _csv(f"{moid},A,1,ups,{UPS_TRACKING},,", f"{moid},B,1,ups,{OTHER_UPS},,")
    first = _run(shop, data)
    version = shop.version(order_id)
    second = _run(shop, data)
    assert [r.status for r in second.rows] == [ACCEPTED, ACCEPTED]
    assert all(r.replayed and "already recorded" in r.reason for r in second.rows)
    assert [r.shipment_id for r in second.rows] == [r.shipment_id for r in first.rows]
    assert shop.version(order_id) == version
    assert len(shop.details(order_id).shipments) == 2


def test_over_shipping_row_is_rejected_and_the_rest_of_the_shipment_ships(shop: Any) -> None:
    """A row asking for more units than are left is rejected; the other line of that shipment ships,
    and a re-upload still replays instead of shipping again."""
    order_id = shop.order(Marketplace.WALMART)
    moid = shop.details(order_id).marketplace_order_id
    data = _csv(f"{moid},A,5,ups,{UPS_TRACKING},,", f"{moid},B,3,ups,{UPS_TRACKING},,")
    report = _run(shop, data)
    assert [r.status for r in report.rows] == [REJECTED, ACCEPTED]
    assert report.rows[0].code == "over-shipment"
    assert "2 unit(s) left to ship, not 5" in report.rows[0].reason
    again = _run(shop, data)
    assert [r.status for r in again.rows] == [REJECTED, ACCEPTED]
    assert again.rows[1].replayed
    assert len(shop.details(order_id).shipments) == 1


def test_unknown_orders_and_lines_are_rejected(shop: Any) -> None:
    """An order id no one has, an unknown marketplace order id, an unknown line: each is its row's reason."""
    order_id = shop.order(Marketplace.WALMART)
    moid = shop.details(order_id).marketplace_order_id
    report = _run(
        shop,
        _csv(
            f"NOPE-1,A,1,ups,{UPS_TRACKING},,",
            f"{moid},Z,1,ups,{UPS_TRACKING},,",
            f"{moid},A,1,ups,{UPS_TRACKING},,",
        ),
    )
    assert [r.status for r in report.rows] == [REJECTED, REJECTED, ACCEPTED]
    assert report.rows[0].reason == "unknown order 'NOPE-1'"
    assert report.rows[1].code == "unknown-line"


def test_another_sellers_order_is_an_unknown_order(shop: Any) -> None:
    """A seller cannot ship another seller's order, by marketplace order id or by order id."""
    order_id = shop.order(Marketplace.WALMART)
    moid = shop.details(order_id).marketplace_order_id
    by_moid = _run(shop, _csv(f"{moid},A,1,ups,{UPS_TRACKING},,"), seller="someone-else")
    header = "order_id,line_id,quantity,carrier,tracking_number\n"
    by_id = _run(shop, _csv(f"{order_id},A,1,ups,{UPS_TRACKING}", header=header), seller="someone-else")
    for report in (by_moid, by_id):
        assert report.rows[0].status == REJECTED
        assert report.rows[0].reason.startswith("unknown order")
    assert shop.details(order_id).shipments == ()


def test_business_rule_refusal_rejects_the_shipment_rows(shop: Any) -> None:
    """An unpaid order cannot ship: the ledger's reason is given on each of its rows."""
    order_id = shop.order(Marketplace.WALMART, paid=False)
    moid = shop.details(order_id).marketplace_order_id
    report = _run(shop, _csv(f"{moid},A,1,ups,{UPS_TRACKING},,", f"{moid},B,1,ups,{UPS_TRACKING},,"))
    assert [r.status for r in report.rows] == [REJECTED, REJECTED]
    assert all("not paid" in r.reason for r in report.rows)


def test_failed_rows_file_holds_only_the_rejected_rows(shop: Any) -> None:
    """The failed-rows CSV has the upload's columns and exactly the rejected rows, ready to fix."""
    order_id = shop.order(Marketplace.WALMART)
    moid = shop.details(order_id).marketplace_order_id
    data = _csv(f"{moid},A,1,ups,{UPS_TRACKING},,", f"{moid},B,x,ups,{UPS_TRACKING},,")
    parsed = parse(data)
    report = BulkShipper(shop.ledger, actor="t", seller=shop.seller).run(parsed)
    rows = list(csv.reader(io.StringIO(failed_rows_csv(parsed.columns, report.rows))))
    assert rows == [HEADER.strip().split(","), [moid, "B", "x", "ups", UPS_TRACKING, "", ""]]


def test_idempotency_key_ignores_row_order_but_not_the_lines() -> None:
    """The key is the same for the same lines in any order and changes with a quantity."""
    order_id = uuid4()
    a = idempotency_key("s", order_id, UPS_TRACKING, [LineQuantity("A", 1), LineQuantity("B", 2)])
    b = idempotency_key("s", order_id, UPS_TRACKING, [LineQuantity("B", 2), LineQuantity("A", 1)])
    c = idempotency_key("s", order_id, UPS_TRACKING, [LineQuantity("A", 1), LineQuantity("B", 1)])
    assert a == b != c


def test_marketplace_order_id_on_two_marketplaces_asks_for_the_order_id(shop: Any) -> None:
    """The same marketplace order id on two of the seller's marketplaces is refused as ambiguous."""
    for marketplace in (Marketplace.WALMART, Marketplace.JET):
        account = shop.account(marketplace)
        shop.ledger.import_order(shop.ctx, account, shop.imported("SAME-1"))
    report = _run(shop, _csv(f"SAME-1,A,1,ups,{UPS_TRACKING},,"))
    assert report.rows[0].status == REJECTED
    assert "use the order_id column" in report.rows[0].reason


def test_marketplace_carrier_spellings_and_carrier_name_ship(shop: Any) -> None:
    """`UPS` ships as `ups`; `Other` with a `carrier_name` column ships with that name, without it is refused."""
    first, second, third = (shop.order(Marketplace.WALMART) for _ in range(3))
    moids = [shop.details(o).marketplace_order_id for o in (first, second, third)]
    header = "marketplace_order_id,line_id,quantity,carrier,carrier_name,tracking_number\n"
    report = _run(
        shop,
        _csv(
            f"{moids[0]},A,1,UPS,,{UPS_TRACKING}",
            f"{moids[1]},A,1,Other,Pony Express,AB12345",
            f"{moids[2]},A,1,other,,AB12345",
            header=header,
        ),
    )
    assert [r.status for r in report.rows] == [ACCEPTED, ACCEPTED, REJECTED]
    assert "carrier_name" in (report.rows[2].reason or "")
    assert [s.carrier for s in shop.details(first).shipments] == ["ups"]
    [named] = shop.details(second).shipments
    assert (named.carrier, named.carrier_name) == ("other", "Pony Express")

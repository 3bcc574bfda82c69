"""Settlement report parsers: Amazon's flat-file settlement report V2 and eBay's transaction report, read into
exact charge and refund amounts, with every unreadable row reported by its line number."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.finance.settlements import (
    AMAZON_V2,
    CHARGE,
    EBAY_TRANSACTIONS,
    REFUND,
    BadRow,
    RowError,
    SettlementFormatError,
    parse_amount,
    parse_report,
    parse_time,
)

AMAZON_COLUMNS = [
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
]


def amazon_row(**values: str) -> str:
    return "\t".join(values.get(c.replace("-", "_"), "") for c in AMAZON_COLUMNS)


def amazon_charge(
    order_id: str, amount: str, amount_type: str = "ItemPrice", description: str = "Principal"
) -> str:
    return amazon_row(
        settlement_id="111",
        transaction_type="Order",
        order_id=order_id,
        amount_type=amount_type,
        amount_description=description,
        amount=amount,
        posted_date="2026-11-03",
        posted_date_time="2026-11-03 10:00:00 UTC",
        marketplace_name="Amazon.com",
    )


def amazon_file(*rows: str, header: tuple[str, ...] = tuple(AMAZON_COLUMNS)) -> bytes:
    summary = amazon_row(
        settlement_id="111",
        settlement_start_date="2026-11-01 00:00:00 UTC",
        settlement_end_date="2026-11-15 00:00:00 UTC",
        deposit_date="2026-11-17 00:00:00 UTC",
        total_amount="1234.56",
        currency="USD",
    )
    return ("\n".join(["\t".join(header), summary, *rows]) + "\n").encode()


def test_amazon_summary_row_gives_the_period_currency_and_settlement() -> None:
    """The row without a transaction type carries the settlement id, period, currency and total."""
    report = parse_report("amazon", amazon_file(amazon_charge("111-1", "10.00")))

    assert (report.format, report.marketplace, report.currency) == (AMAZON_V2, "amazon", "USD")
    assert report.settlement_id == "111"
    assert report.period_start == datetime(2026, 11, 1, tzinfo=UTC)
    assert report.period_end == datetime(2026, 11, 15, tzinfo=UTC)
    assert report.total_amount == Decimal("1234.56")
    assert report.rows == 2


def test_amazon_item_price_rows_are_charges_and_refunds_fees_are_ignored() -> None:
    """ItemPrice amounts of Order rows are charges, of Refund rows refunds (negated); fees and non-sales are not matched."""
    data = amazon_file(
        amazon_charge("111-1", "20.00"),
        amazon_charge("111-1", "1.60", description="Tax"),
        amazon_charge("111-1", "-3.00", amount_type="ItemFees", description="Commission"),
        amazon_row(
            transaction_type="Refund",
            order_id="111-2",
            amount_type="ItemPrice",
            amount_description="Principal",
            amount="-5.50",
            posted_date="2026-11-04",
        ),
        amazon_row(
            transaction_type="other-transaction",
            amount_type="other",
            amount="-39.99",
            posted_date="2026-11-04",
        ),
    )

    report = parse_report("amazon", data)

    assert [(x.line, x.kind, x.marketplace_order_id, x.amount) for x in report.lines] == [
        (3, CHARGE, "111-1", Decimal("20.00")),
        (4, CHARGE, "111-1", Decimal("1.60")),
        (6, REFUND, "111-2", Decimal("5.50")),
    ]
    assert report.ignored_rows == 2
    assert report.bad_rows == ()


def test_amazon_bad_rows_are_reported_per_line_and_never_stop_the_others() -> None:
    """Wrong field count, a bad number, another currency, an unknown type, no order id: one bad row each."""
    good = amazon_charge("111-9", "7.00")
    data = amazon_file(
        amazon_charge("111-1", "12,50"),
        good + "\textra",
        amazon_row(
            transaction_type="Order", order_id="111-3", amount_type="ItemPrice", amount="3.00", currency="EUR"
        ),
        amazon_row(transaction_type="Mystery", order_id="111-4", amount_type="ItemPrice", amount="3.00"),
        amazon_row(transaction_type="Order", amount_type="ItemPrice", amount="3.00"),
        amazon_charge("111-5", "1e3"),
        good,
    )

    report = parse_report("amazon", data)

    assert [(b.line, b.field) for b in report.bad_rows] == [
        (3, "amount"),
        (4, "row"),
        (5, "currency"),
        (6, "transaction-type"),
        (7, "order-id"),
        (8, "amount"),
    ]
    assert "12,50" in report.bad_rows[0].message
    assert "25 fields" in report.bad_rows[1].message
    assert "EUR" in report.bad_rows[2].message
    assert "Mystery" in report.bad_rows[3].message
    assert [(x.line, x.amount) for x in report.lines] == [(9, Decimal("7.00"))]


def test_amazon_file_without_the_required_columns_or_summary_is_refused() -> None:
    """Missing columns are named; a report without its summary row, an empty or binary file is refused whole."""
    header = tuple(c for c in AMAZON_COLUMNS if c not in ("amount", "order-id"))
    with pytest.raises(SettlementFormatError, match=r"order-id, amount"):
        parse_report("amazon", amazon_file(header=header))
    no_summary = ("\t".join(AMAZON_COLUMNS) + "\n" + amazon_charge("111-1", "1.00")).encode()
    with pytest.raises(SettlementFormatError, match="summary row"):
        parse_report("amazon", no_summary)
    with pytest.raises(SettlementFormatError, match="empty"):
        parse_report("amazon", b"  \n")
    with pytest.raises(SettlementFormatError, match="not a text file"):
        parse_report("amazon", b"\x00\x01\x02")
    with pytest.raises(SettlementFormatError, match="walmart"):
        parse_report("walmart", amazon_file())


EBAY_HEADER = (
    '"Transaction creation date","Type","Order number","Legacy order ID","Buyer username","Net amount",'
    '"Payout currency","Item ID","Transaction ID","Item title","Quantity","Gross transaction amount",'
    '"Transaction currency","Reference ID","Description"'
)


def ebay_row(when: str, kind: str, order: str, gross: str, currency: str = "USD") -> str:
    return f'"{when}","{kind}","{order}","","buyer1","{gross}","USD","1234","","Mug","1","{gross}","{currency}","",""'


def test_ebay_report_skips_the_preamble_and_reads_orders_and_refunds() -> None:
    """Lines before the header are skipped; Order rows are charges, Refund rows refunds by gross amount."""
    data = "\n".join(
        [
            '"Transaction report"',
            '"Start date","Nov 1, 2026"',
            "",
            EBAY_HEADER,
            ebay_row("2026-11-02", "Order", "01-1", "1,024.50"),
            ebay_row("Nov 3, 2026", "Refund", "01-2", "-8.25"),
            ebay_row("2026-11-05T23:10:00.000Z", "Payout", "--", "-900.00"),
            ebay_row("2026-11-04", "Shipping label", "01-1", "-4.10"),
        ]
    ).encode()

    report = parse_report("ebay", data)

    assert (report.format, report.currency) == (EBAY_TRANSACTIONS, "USD")
    assert [(x.line, x.kind, x.marketplace_order_id, x.amount) for x in report.lines] == [
        (5, CHARGE, "01-1", Decimal("1024.50")),
        (6, REFUND, "01-2", Decimal("8.25")),
    ]
    assert report.ignored_rows == 2
    assert report.period_start == datetime(2026, 11, 2, tzinfo=UTC)
    assert report.period_end == datetime(2026, 11, 6, tzinfo=UTC)


def test_ebay_bad_rows_are_reported_per_line() -> None:
    """A bad date, a missing amount, another currency, an unknown type, too few fields: each a bad row."""
    data = "\n".join(
        [
            EBAY_HEADER,
            ebay_row("2026-11-02", "Order", "01-1", "10.00"),
            ebay_row("yesterday", "Order", "01-2", "10.00"),
            ebay_row("2026-11-02", "Order", "01-3", "--"),
            ebay_row("2026-11-02", "Order", "01-4", "10.00", currency="GBP"),
            ebay_row("2026-11-02", "Bonus", "01-5", "10.00"),
            '"2026-11-02","Order","01-6"',
        ]
    ).encode()

    report = parse_report("ebay", data)

    assert report.bad_rows == (
        BadRow(3, "transaction creation date 'yesterday' is not a time", "transaction creation date"),
        BadRow(4, "gross transaction amount is missing", "gross transaction amount"),
        BadRow(5, "currency 'GBP' is not the report's USD", "transaction currency"),
        BadRow(6, "unknown type 'Bonus'", "type"),
        BadRow(7, "the row has 3 fields, the header 15", "row"),
    )
    assert [x.marketplace_order_id for x in report.lines] == ["01-1"]


def test_ebay_file_without_its_header_is_refused() -> None:
    """A CSV without the transaction report's columns is not a report."""
    with pytest.raises(SettlementFormatError, match="no header row"):
        parse_report("ebay", b"a,b,c\n1,2,3\n")


def test_amounts_are_exact_decimals() -> None:
    """Amounts keep every digit as written; thousands separators pass, decimal commas and exponents do not."""
    assert parse_amount("0.10", "amount") + parse_amount("0.20", "amount") == Decimal("0.30")
    assert parse_amount("-1,234,567.891", "amount") == Decimal("-1234567.891")
    for bad in ("12,50", "1e3", "NaN", "Infinity", "", "1.2.3", "$5"):
        with pytest.raises(RowError):
            parse_amount(bad, "amount")


def test_report_times_in_the_forms_marketplaces_write() -> None:
    """Amazon's `... UTC` and dotted dates, ISO 8601 with offsets, eBay's `Nov 3, 2026`: all UTC-aware."""
    expected = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
    assert parse_time("2026-11-03 10:00:00 UTC", "t") == expected
    assert parse_time("03.11.2026 10:00:00 UTC", "t") == expected
    assert parse_time("2026-11-03T12:00:00+02:00", "t") == expected
    assert parse_time("Nov 3, 2026", "t") == datetime(2026, 11, 3, tzinfo=UTC)
    with pytest.raises(RowError):
        parse_time("31.02.2026", "t")


def test_a_windows_1252_report_is_read() -> None:
    """Amazon writes some reports in Windows-1252: a byte that is not UTF-8 does not refuse the file."""
    row = amazon_charge("111-1", "10.00", description="Caf\xe9")
    report = parse_report("amazon", amazon_file().decode().encode("cp1252") + row.encode("cp1252") + b"\n")

    assert [(x.marketplace_order_id, x.description) for x in report.lines] == [("111-1", "Caf\xe9")]


@settings(max_examples=150, deadline=None)
@given(
    marketplace=st.sampled_from(["amazon", "ebay"]),
    cells=st.lists(
        st.lists(
            st.sampled_from(["Order", "Refund", "ItemPrice", "12.5", "-1", "x", "", '"', "USD", "2026-11-03"])
        ),
        max_size=6,
    ),
    junk=st.binary(max_size=40),
)
def test_any_input_is_a_report_or_a_clear_refusal(
    marketplace: str, cells: list[list[str]], junk: bytes
) -> None:
    """Whatever the bytes, the parser returns a report (bad rows listed) or refuses the file; it never crashes."""
    header = "\t".join(AMAZON_COLUMNS) if marketplace == "amazon" else EBAY_HEADER
    body = "\n".join(("\t" if marketplace == "amazon" else ",").join(row) for row in cells)
    for data in (f"{header}\n{body}".encode(), junk, amazon_file() + body.encode() + junk):
        try:
            report = parse_report(marketplace, data)
        except SettlementFormatError:
            continue
        assert all(isinstance(line.amount, Decimal) for line in report.lines)
        assert len(report.lines) + len(report.bad_rows) + report.ignored_rows <= report.rows

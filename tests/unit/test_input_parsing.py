"""Input read exactly (API.md, *Input, stated exactly*), in the one place each kind is read: times and days
(aggregates/times.py), amounts, currencies and identifiers (aggregates/values.py), and the CSV the ledger
writes (csv_export.py). The file parsers (bulk shipments, settlement reports) are driven over the whole calendar
and every zone offset: a row is accepted or rejected with its reason, never an exception."""

from __future__ import annotations

import csv
import io
import unicodedata
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.aggregates.errors import InvalidAmountError
from ledger.aggregates.times import (
    MAX_TIME,
    MIN_TIME,
    InvalidTimeError,
    after_day,
    parse_bound,
    parse_day,
    parse_moment,
    parse_time,
)
from ledger.aggregates.values import (
    Buyer,
    ImportedOrder,
    OrderLine,
    PaymentStatus,
    id_problem,
    is_currency,
    normalize_id,
    parse_amount,
)
from ledger.application import csv_export, shipments_csv
from ledger.application.shipments_csv import RowResult, failed_rows_csv
from ledger.finance.settlements import SettlementFormatError, parse_report

# Every offset RFC 3339 can write that Python holds (under 24 h), to the minute.
OFFSETS = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
MOMENTS = st.datetimes(datetime.min, datetime.max, timezones=OFFSETS)  # noqa: DTZ901 - naive bounds, zoned values
DAYS = st.dates(min_value=date.min, max_value=date.max)


def rfc3339(moment: datetime) -> str:
    """`moment` as a client writes it: `Z` for UTC, else `+hh:mm`."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# ------------------------------------------------------------------------------------------- times


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-20t10:00:00z",
        "2026-11-20T10:00:00z",
        "2026-11-20 10:00:00Z",
        "2026-11-20T10:00:00",
        "2026-11-20T10:00Z",
        "2026-11-20",
        "1700000000",
        "2026-11-20T10:00:00Z\n",
        " 2026-11-20T10:00:00Z",
        "2026-11-20T10:00:00+0200",
        "2026-11-20T10:00:00+24:00",
        "2026-02-30T10:00:00Z",
        "٢٠٢٦-11-20T10:00:00Z",
        "10000-01-01T00:00:00Z",
        "0000-12-31T00:00:00Z",
    ],
)
def test_a_time_that_is_not_rfc_3339_with_a_zone_is_refused_by_name(text: str) -> None:
    """Lower-case letters, a space for T, no zone, no seconds, epoch numbers, other digits: InvalidTimeError."""
    with pytest.raises(InvalidTimeError) as refused:
        parse_time(text, "purchased_at")
    assert refused.value.field == "purchased_at"


@given(MOMENTS)
def test_every_moment_of_the_calendar_in_every_zone_reads_back(moment: datetime) -> None:
    """A time written in RFC 3339 reads back as the same moment, in the offset it was written in."""
    parsed = parse_time(rfc3339(moment), "t")
    assert parsed == moment
    assert parsed.utcoffset() == moment.utcoffset()


@given(MOMENTS)
def test_a_bound_is_clamped_and_a_fact_refused_outside_the_calendar(moment: datetime) -> None:
    """A filter bound is always answered (clamped into years 1..9999 UTC); a fact there is refused, by name."""
    bound = parse_bound(rfc3339(moment), "purchased_from")
    assert MIN_TIME <= bound <= MAX_TIME
    assert bound.utcoffset() == timedelta(0)
    if _in_utc_calendar(moment):
        assert parse_moment(rfc3339(moment), "shipped_at") == moment == bound
    else:
        assert bound in (MIN_TIME, MAX_TIME)
        with pytest.raises(InvalidTimeError, match="shipped_at"):
            parse_moment(rfc3339(moment), "shipped_at")


def _in_utc_calendar(moment: datetime) -> bool:
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def test_nanoseconds_are_kept_to_the_microsecond() -> None:
    """Nine fraction digits are read; the ledger holds microseconds."""
    assert parse_time("2026-11-20T10:00:00.123456789Z", "t") == datetime(2026, 11, 20, 10, 0, 0, 123456, UTC)


@given(DAYS)
def test_every_day_reads_and_the_last_has_no_day_after(day: date) -> None:
    """Any YYYY-MM-DD of the calendar reads; the exclusive end after 9999-12-31 is 'no end', not an overflow."""
    assert parse_day(day.isoformat(), "to") == day
    end = after_day(day)
    assert (
        end is None
        if day == date.max
        else end == datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    )


@pytest.mark.parametrize(
    "text", ["yesterday", "2026-13-01", "2026-11-31", "20261120", "2026-11-20T00:00:00Z"]
)
def test_a_day_that_is_not_one_is_refused(text: str) -> None:
    """A day filter is YYYY-MM-DD of the calendar."""
    with pytest.raises(InvalidTimeError):
        parse_day(text, "from")


# ------------------------------------------------------------------------------------------ amounts


@pytest.mark.parametrize("text", ["12.50", "100", "0", "0.01", "-5.00", "999999999999"])
def test_an_amount_as_api_md_writes_it_is_read_exactly(text: str) -> None:
    """ASCII digits with an optional '-' and '.': the Decimal keeps the places as written."""
    assert str(parse_amount(text, "unit_price", "USD")) == text


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("1e3", None),
        ("1E+3", None),
        ("1_000.00", None),
        (" 12.50", None),
        ("12.50 ", None),
        ("12.50\n", None),
        ("+12.50", None),
        ("\u0661\u0662\u066b\u0665\u0660", None),  # Arabic-Indic digits and separator
        ("\u0661\u0662.\u0665\u0660", None),
        ("\uff11\uff12.\uff15\uff10", None),  # fullwidth digits
        ("12,50", None),
        ("1,234.56", None),
        (".5", None),
        ("5.", None),
        ("NaN", None),
        ("Infinity", None),
        ("", None),
        ("1" * 41, None),
        ("12.505", "USD"),
        ("100.00", "JPY"),
        ("1.0001", "KWD"),
    ],
)
def test_an_amount_written_any_other_way_is_refused_by_name(text: str, currency: str | None) -> None:
    """Exponents, underscores, spaces, signs, non-ASCII digits, separators, and places past the minor unit."""
    with pytest.raises(InvalidAmountError) as refused:
        parse_amount(text, "lines[0].unit_price", currency)
    assert refused.value.field == "lines[0].unit_price"


@pytest.mark.parametrize(("code", "active"), [("USD", True), ("EUR", True), ("JPY", True), ("XOF", True),
                                              ("XXX", False), ("BTC", False), ("XAU", False), ("XTS", False),
                                              ("usd", False), ("ABC", False)])  # fmt: skip
def test_only_active_iso_4217_currencies_are_currencies(code: str, active: bool) -> None:
    """XXX (no currency), BTC (no ISO code), metals and test codes are not money a buyer pays in."""
    assert is_currency(code) is active


# -------------------------------------------------------------------------------------- identifiers

SPELLINGS = [
    "CAFÉ-114",  # NFC
    unicodedata.normalize("NFD", "CAFÉ-114"),
    "CAFÉ-114 ",
    "  CAFÉ-114\u3000",
    "ＣＡＦÉ－１１４",  # noqa: RUF001 - fullwidth on purpose
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_look_alike_spellings_of_an_id_are_one_id(spelling: str) -> None:
    """NFC, NFD, trailing or ideographic spaces and fullwidth forms all normalize to the same id."""
    assert normalize_id(spelling) == "CAFÉ-114"


def test_an_order_is_keyed_by_its_normalized_ids() -> None:
    """An ImportedOrder, however it is built, carries the normalized order id, line ids and SKUs."""
    line = OrderLine(" \uff11 ", unicodedata.normalize("NFD", "MUGé "), 1, Decimal("1.00"))
    order = ImportedOrder(SPELLINGS[4], datetime(2026, 11, 20, tzinfo=UTC), "USD", PaymentStatus.PAID,
                          Buyer("Ann", "ann@example.com"), (line,))  # fmt: skip
    assert order.marketplace_order_id == "CAFÉ-114"
    assert (order.lines[0].line_id, order.lines[0].sku) == ("1", "MUGé")


@pytest.mark.parametrize("text", ["", "A\x00B", "A\tB", "A\u200bB", "A\u202eB", "A\x7fB", "\x1b[31m"])
def test_an_id_with_a_control_or_format_character_is_refused(text: str) -> None:
    """Empty ids and ids holding invisible control or format characters (NUL, tab, zero-width, bidi) are refused."""
    assert id_problem(normalize_id(text)) is not None


# --------------------------------------------------------------------------------------------- CSV

FORMULAS = ["=1+2", '=HYPERLINK("http://evil","x")', "+1", "-1+2", "@SUM(A1)", "\tTAB", "\rCR", "-", "-5.00x"]


@pytest.mark.parametrize("value", FORMULAS)
def test_a_cell_a_spreadsheet_would_run_is_quoted_behind_an_apostrophe(value: str) -> None:
    """=, +, -, @, tab and CR first: the cell is written as "'<value>", quoted (OWASP), and reads back so."""
    written = csv_export.cell(value)
    assert written.startswith("\"'")
    assert next(csv.reader(io.StringIO(written))) == ["'" + value]


@pytest.mark.parametrize("value", ["-5.00", "-12", "12.50", "0", "Ann Lee", "a,b", 'say "hi"'])
def test_numbers_and_plain_text_are_written_as_they_are(value: str) -> None:
    """The ledger's own negative amounts stay numbers; other cells are quoted only where CSV needs it."""
    written = csv_export.cell(value)
    assert not written.lstrip('"').startswith("'")
    assert next(csv.reader(io.StringIO(written + "\r\n"))) == [value]


@given(st.lists(st.text(max_size=20), min_size=1, max_size=6))
def test_any_row_reads_back_with_only_formula_cells_marked(values: list[str]) -> None:
    """csv_export writes a row Python's csv reads back cell for cell, but for the apostrophe of formula cells."""
    [read] = csv.reader(io.StringIO(csv_export.line(values), newline=""))
    expected = [
        ("'" + v) if v.startswith(csv_export.FORMULA_STARTS) and not _number(v) else v for v in values
    ]
    assert read == expected


def _number(text: str) -> bool:
    try:
        parse_amount(text, "x")
    except InvalidAmountError:
        return False
    return True


def test_the_failed_rows_file_neutralizes_formulas_and_reads_back_as_uploaded() -> None:
    """The bulk page's failed-rows file quotes formula cells; uploaded again, the rows read as the original."""
    fields = {"marketplace_order_id": "=cmd|' /C calc'!A0", "line_id": "@1", "quantity": "-1", "carrier": "ups",
              "tracking_number": "+1Z", "shipping_class": "\tx", "shipped_at": ""}  # fmt: skip
    text = failed_rows_csv(fields, [RowResult(2, "rejected", fields, reason="bad")])
    [_, row] = list(csv.reader(io.StringIO(text)))
    assert row[:2] == ["'=cmd|' /C calc'!A0", "'@1"]
    assert row[2] == "-1"
    parsed = shipments_csv.parse(text.encode())
    assert parsed.rows[0].fields == fields | {"shipping_class": "x"}  # cells are trimmed on upload


# ---------------------------------------------------------------------------------- file parsers

HEADER = "marketplace_order_id,line_id,quantity,carrier,tracking_number,shipping_class,shipped_at\n"


@settings(max_examples=200)
@given(
    st.one_of(
        MOMENTS.map(rfc3339),
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters=',"\r\n\x00'), max_size=30),
    )
)
def test_the_bulk_csv_gives_every_shipped_at_a_verdict(shipped_at: str) -> None:
    """Any shipped_at, in any zone or none: the row is read or rejected with invalid-time, never an exception."""
    row = f"MO-1,1,1,ups,1Z999AA10123456784,Ground,{shipped_at}\n"
    [result] = shipments_csv.parse((HEADER + row).encode()).rows
    assert result.error is None or result.code in {"invalid-time", "wrong-columns"}, result.error
    if result.error is None and result.shipped_at is not None:
        assert result.shipped_at.utcoffset() is not None


AMAZON_HEADER = (
    "settlement-id\tsettlement-start-date\tsettlement-end-date\tdeposit-date\ttotal-amount\tcurrency\t"
    "transaction-type\torder-id\tmerchant-order-id\tadjustment-id\tshipment-id\tmarketplace-name\tamount-type\t"
    "amount-description\tamount\tfulfillment-id\tposted-date\tposted-date-time\torder-item-code\tsku\t"
    "quantity-purchased\n"
)


def _amazon(start: str, end: str, posted: str) -> bytes:
    summary = f"1\t{start}\t{end}\t\t10.00\tUSD" + "\t" * 15 + "\n"
    row = f"1\t\t\t\t\tUSD\tOrder\t111-1\t\t\t\tAmazon.com\tItemPrice\tPrincipal\t10.00\t\t{posted}\t\t\t\t\n"
    return (AMAZON_HEADER + summary + row).encode()


def _ebay(*dates: str) -> bytes:
    head = "Transaction creation date,Type,Order number,Gross transaction amount,Transaction currency\n"
    return (head + "".join(f"{d},Order,12-{i},10.00,USD\n" for i, d in enumerate(dates))).encode()


@settings(max_examples=150)
@given(st.lists(st.one_of(MOMENTS.map(rfc3339), DAYS.map(date.isoformat)), min_size=1, max_size=4))
def test_an_ebay_report_over_any_dates_and_zones_is_read(dates: list[str]) -> None:
    """eBay rows at any moment of the calendar in any zone: read, or that row's error; the period never overflows."""
    report = parse_report("ebay", _ebay(*dates)) if any(_fits(d) for d in dates) else None
    if report is None:
        with pytest.raises(SettlementFormatError):
            parse_report("ebay", _ebay(*dates))
        return
    assert report.period_start <= report.period_end <= MAX_TIME
    assert len(report.lines) + len(report.bad_rows) == len(dates)
    assert all(b.field == "transaction creation date" for b in report.bad_rows)


def _fits(text: str) -> bool:
    try:
        return parse_moment(text, "t") is not None
    except InvalidTimeError:
        return len(text) == 10  # a day: 00:00 UTC, always inside


@settings(max_examples=150)
@given(MOMENTS.map(rfc3339), MOMENTS.map(rfc3339), st.one_of(MOMENTS.map(rfc3339), DAYS.map(date.isoformat)))
def test_an_amazon_report_over_any_dates_and_zones_is_read_or_refused(
    start: str, end: str, posted: str
) -> None:
    """Amazon's period and posted dates anywhere in the calendar and any zone: a report or a 422-type refusal."""
    try:
        report = parse_report("amazon", _amazon(start, end, posted))
    except SettlementFormatError:
        return
    assert report.period_start <= report.period_end
    assert len(report.lines) + len(report.bad_rows) == 1


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"])
def test_settlement_rows_at_the_calendar_edges_are_answered(day: str) -> None:
    """The issue's rows: 9999-12-31 ends the period at the calendar's last moment; a row outside is that row's error."""
    report = parse_report("ebay", _ebay("2026-11-20", day))
    assert report.period_end <= MAX_TIME
    assert len(report.lines) + len(report.bad_rows) == 2

"""Marketplaces' settlement and payout reports, read into charge and refund amounts per report line.

Pure functions over the file's bytes: no database, no clock. Tolerant toward the marketplace (extra columns and
known non-sale transaction types are accepted), strict about what is matched: a row that cannot be read (too many
or too few fields, an amount that is not a number, another currency, an unknown transaction type, a missing order
id or date) becomes a `BadRow` with its line number (the file's physical line, the header being line 1 or later),
and never stops the other rows. Only a file that cannot be a report at all (not text, no header with the required
columns, nothing to reconcile) is refused as a whole with `SettlementFormatError`.

Amounts are `Decimal` parsed from the text as written (a dot as decimal separator; `1,234.56` is accepted);
floats never appear. Each line's `amount` is positive for money the buyer paid (a charge) or was paid back (a
refund): refund rows, negative in the reports, are negated.

Amazon, flat-file settlement report V2 (tab-separated): the summary row (no transaction-type) gives the settlement
id, the period [settlement-start-date, settlement-end-date), the currency and total-amount. `Order` rows are
charges; `Refund`, `Chargeback Refund` and `A-to-z Guarantee Claim` rows are refunds. Only `ItemPrice` amounts
(Principal, Tax, Shipping, ShippingTax, GiftWrap, GiftWrapTax: what the buyer paid) are matched; the marketplace's
fees, promotions and withheld taxes (`ItemFees`, `Promotion`, `ItemWithheldTax`, ...) and non-sale transaction
types (`other-transaction`, `ServiceFee`, reserves, ...) are counted as ignored rows.

eBay, transaction report (CSV; lines before the header, as eBay's download has, are skipped): `Order` rows are
charges and `Refund` rows refunds, by `Gross transaction amount` in `Transaction currency`, keyed by `Order
number`; payouts, fees, shipping labels, holds, claims and the like are ignored rows. The period runs from the
first transaction's UTC day to the end of the last one's. The report's currency is the first sale row's.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from ledger.aggregates.errors import InvalidInputError
from ledger.aggregates.times import MAX_TIME, InvalidTimeError, after_day, day_start, to_utc
from ledger.aggregates.values import Marketplace, is_currency

CHARGE, REFUND = "charge", "refund"
AMAZON_V2 = "amazon-flat-file-v2"
EBAY_TRANSACTIONS = "ebay-transaction-report"
MAX_FIELD = 1000


class SettlementFormatError(InvalidInputError):
    """The file is not a settlement report this ledger reads (HTTP 422): nothing in it was reconciled."""

    code = "invalid-settlement-report"


@dataclass(frozen=True)
class SettlementLine:
    """One report row that is matched: an amount the buyer paid (charge) or got back (refund) on an order."""

    line: int
    kind: str
    marketplace_order_id: str
    amount: Decimal
    transaction_type: str
    description: str


@dataclass(frozen=True)
class BadRow:
    line: int
    message: str
    field: str = ""


@dataclass(frozen=True)
class SettlementReport:
    marketplace: str
    format: str
    currency: str
    period_start: datetime
    period_end: datetime
    settlement_id: str | None = None
    total_amount: Decimal | None = None
    lines: tuple[SettlementLine, ...] = ()
    bad_rows: tuple[BadRow, ...] = ()
    ignored_rows: int = 0
    rows: int = 0  # data rows read (not the header, preamble or blank lines)


def parse_report(marketplace: str, data: bytes) -> SettlementReport:
    """The report in `data`, read with the format of `marketplace`'s settlement reports."""
    parser = PARSERS.get(marketplace)
    if parser is None:
        known = ", ".join(sorted(PARSERS))
        raise SettlementFormatError(
            f"no settlement report format is known for {marketplace}: reports of {known} are read",
            "marketplace",
        )
    return parser(decode_text(data))


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without a byte order mark), else Windows-1252 as Amazon writes some reports."""
    if not data.strip():
        raise SettlementFormatError("the report is empty", "file")
    if b"\x00" in data:
        raise SettlementFormatError("the report is not a text file", "file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            raise SettlementFormatError("the report is neither UTF-8 nor Windows-1252 text", "file") from None


# ------------------------------------------------------------------------------------------- table


@dataclass
class Table:
    """The rows of a delimited file, each with its physical line number, from the header on."""

    header: list[str]
    header_line: int
    rows: list[tuple[int, list[str]]] = field(default_factory=list)


def read_table(text: str, is_header: Callable[[list[str]], bool], required: tuple[str, ...]) -> Table:
    """Split `text` into rows (tab-separated if the header has a tab, else comma-separated); the header is the
    first row `is_header` accepts (earlier lines are a preamble). Names are compared lower-case and trimmed."""
    lines = text.splitlines()
    for index, raw in enumerate(lines):
        delimiter = "\t" if "\t" in raw else ","
        cells = _split(raw, delimiter)
        names = [_name(c) for c in cells]
        if is_header(names):
            missing = [name for name in required if name not in names]
            if missing:
                raise SettlementFormatError(
                    f"the header on line {index + 1} lacks the column(s) {', '.join(missing)}", "file"
                )
            table = Table(names, index + 1)
            for number, row in _rows(lines[index + 1 :], delimiter, index + 2):
                table.rows.append((number, row))
            return table
    raise SettlementFormatError(f"no header row with the columns {', '.join(required)} was found", "file")


def _split(raw: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([raw], delimiter=delimiter, strict=True), [])
    except csv.Error:
        return raw.split(delimiter)


def _rows(lines: list[str], delimiter: str, first: int) -> Iterator[tuple[int, list[str]]]:
    for offset, raw in enumerate(lines):
        if raw.strip():
            yield first + offset, _split(raw, delimiter)


def _name(cell: str) -> str:
    return cell.strip().strip('"').strip().lower()


class Row:
    """A data row by column name."""

    def __init__(self, header: list[str], cells: list[str]) -> None:
        self.values = {name: cell.strip() for name, cell in zip(header, cells, strict=False)}

    def get(self, name: str) -> str:
        return self.values.get(name, "")


class RowError(Exception):
    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


_NUMBER = re.compile(r"^[+-]?(\d+|\d{1,3}(,\d{3})+)(\.\d+)?$")


def parse_amount(text: str, column: str) -> Decimal:
    """A decimal amount as written; `1,234.56` is accepted, `12,50` and `1e3` are not."""
    cleaned = text.strip()
    if not _NUMBER.match(cleaned) or len(cleaned) > 40:
        raise RowError(f"{column} {text!r} is not a number", column)
    try:
        return Decimal(cleaned.replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise RowError(f"{column} {text!r} is not a number", column) from None


_DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%b %d, %Y", "%d %b %Y", "%d-%b-%Y", "%m/%d/%Y")


def parse_time(text: str, column: str) -> datetime:
    """A report time: ISO 8601, `2026-11-20 10:00:00 UTC`, `20.11.2026 10:00:00 UTC`, or a date (00:00 UTC).
    A time without a zone is read as UTC (the reports say their times are UTC). Marketplaces write these looser
    than API.md lets a client; the conversion to UTC is aggregates.times' (a moment outside years 1 to 9999
    there is the row's error)."""
    cleaned = text.strip()
    if not cleaned or len(cleaned) > 40:
        raise RowError(f"{column} is missing" if not cleaned else f"{column} {text!r} is not a time", column)
    candidate = re.sub(r"\s*(UTC|GMT|Z)$", "+00:00", cleaned)
    candidate = re.sub(r"^(\d{2})\.(\d{2})\.(\d{4})", r"\3-\2-\1", candidate)
    try:
        value = datetime.fromisoformat(candidate)
    except ValueError:
        for pattern in _DATE_FORMATS:
            try:
                value = datetime.strptime(cleaned, pattern)  # noqa: DTZ007 - a date: UTC below
                break
            except ValueError:
                continue
        else:
            raise RowError(f"{column} {text!r} is not a time", column) from None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else to_utc(value, column)
    except InvalidTimeError as e:
        raise RowError(e.message, column) from None


def _order_id(row: Row, column: str) -> str:
    value = row.get(column)
    if not value:
        raise RowError(f"{column} is missing", column)
    if len(value) > MAX_FIELD:
        raise RowError(f"{column} is too long", column)
    return value


def _check_width(table: Table, cells: list[str]) -> None:
    if len(cells) != len(table.header):
        raise RowError(f"the row has {len(cells)} fields, the header {len(table.header)}", "row")


# ------------------------------------------------------------------------------------------ amazon

AMAZON_REQUIRED = (
    "settlement-id",
    "settlement-start-date",
    "settlement-end-date",
    "total-amount",
    "currency",
    "transaction-type",
    "order-id",
    "amount-type",
    "amount-description",
    "amount",
    "posted-date",
)
AMAZON_CHARGES = frozenset({"order"})
AMAZON_REFUNDS = frozenset({"refund", "chargeback refund", "a-to-z guarantee claim"})
# Known transaction types that are no sale: fees, reserves, transfers, reimbursements. Counted, not matched.
AMAZON_IGNORED = frozenset(
    {
        "other-transaction",
        "servicefee",
        "service fee",
        "transfer",
        "adjustment",
        "couponredemptionfee",
        "liquidations",
        "previous reserve amount balance",
        "current reserve amount",
        "successful charge",
        "debt recovery",
        "shipping services",
        "subscription fee",
        "safe-t reimbursement",
    }
)
AMAZON_MATCHED_AMOUNT_TYPE = "itemprice"


def parse_amazon(text: str) -> SettlementReport:
    table = read_table(
        text, lambda names: "settlement-id" in names and "transaction-type" in names, AMAZON_REQUIRED
    )
    summary: tuple[int, Row] | None = None
    rows: list[tuple[int, Row]] = []
    bad: list[BadRow] = []
    for number, cells in table.rows:
        try:
            _check_width(table, cells)
        except RowError as e:
            bad.append(BadRow(number, e.message, e.field))
            continue
        row = Row(table.header, cells)
        if not row.get("transaction-type") and summary is None and row.get("settlement-start-date"):
            summary = (number, row)
        else:
            rows.append((number, row))
    if summary is None:
        raise SettlementFormatError(
            "no summary row (the row with settlement-start-date, settlement-end-date, currency and"
            " total-amount and no transaction-type) was found",
            "file",
        )
    number, head = summary
    try:
        start = parse_time(head.get("settlement-start-date"), "settlement-start-date")
        end = parse_time(head.get("settlement-end-date"), "settlement-end-date")
        currency = _currency(head.get("currency"), "currency")
        total = parse_amount(head.get("total-amount"), "total-amount") if head.get("total-amount") else None
    except RowError as e:
        raise SettlementFormatError(
            f"the summary row on line {number} is not valid: {e.message}", e.field
        ) from None
    if end < start:
        raise SettlementFormatError(f"the settlement period ends ({end}) before it starts ({start})", "file")
    lines: list[SettlementLine] = []
    ignored = 0
    for number, row in rows:
        try:
            line = _amazon_line(number, row, currency)
        except RowError as e:
            bad.append(BadRow(number, e.message, e.field))
            continue
        if line is None:
            ignored += 1
        else:
            lines.append(line)
    return SettlementReport(
        marketplace=Marketplace.AMAZON.value,
        format=AMAZON_V2,
        currency=currency,
        period_start=start,
        period_end=end,
        settlement_id=head.get("settlement-id") or None,
        total_amount=total,
        lines=tuple(lines),
        bad_rows=tuple(sorted(bad, key=lambda b: b.line)),
        ignored_rows=ignored,
        rows=len(table.rows),
    )


def _amazon_line(number: int, row: Row, currency: str) -> SettlementLine | None:
    kind_name = row.get("transaction-type")
    kind = row_kind(kind_name, AMAZON_CHARGES, AMAZON_REFUNDS, AMAZON_IGNORED, "transaction-type")
    row_currency = row.get("currency")
    if row_currency and row_currency != currency:
        raise RowError(f"currency {row_currency!r} is not the report's {currency}", "currency")
    amount = parse_amount(row.get("amount"), "amount")
    if row.get("posted-date-time") or row.get("posted-date"):
        parse_time(row.get("posted-date-time") or row.get("posted-date"), "posted-date")
    if kind is None or row.get("amount-type").lower() != AMAZON_MATCHED_AMOUNT_TYPE:
        return None  # a fee, promotion or withheld tax: the marketplace's own, not the buyer's charge
    return SettlementLine(
        line=number,
        kind=kind,
        marketplace_order_id=_order_id(row, "order-id"),
        amount=amount if kind == CHARGE else -amount,
        transaction_type=kind_name,
        description=row.get("amount-description")[:MAX_FIELD],
    )


def row_kind(
    name: str, charges: frozenset[str], refunds: frozenset[str], ignored: frozenset[str], column: str
) -> str | None:
    """CHARGE, REFUND, or None for a known type that is no sale; RowError for a type nobody knows."""
    key = name.strip().lower()
    if key in charges:
        return CHARGE
    if key in refunds:
        return REFUND
    if key in ignored:
        return None
    if not key:
        raise RowError(f"{column} is missing", column)
    raise RowError(f"unknown {column} {name[:80]!r}", column)


def _currency(text: str, column: str) -> str:
    code = text.strip().upper()
    if not is_currency(code):
        raise RowError(f"{column} {text!r} is not an ISO 4217 code", column)
    return code


# -------------------------------------------------------------------------------------------- ebay

EBAY_DATE = "transaction creation date"
EBAY_TYPE = "type"
EBAY_ORDER = "order number"
EBAY_GROSS = "gross transaction amount"
EBAY_CURRENCY = "transaction currency"
EBAY_REQUIRED = (EBAY_DATE, EBAY_TYPE, EBAY_ORDER, EBAY_GROSS, EBAY_CURRENCY)
EBAY_CHARGES = frozenset({"order"})
EBAY_REFUNDS = frozenset({"refund"})
EBAY_IGNORED = frozenset(
    {
        "payout",
        "shipping label",
        "other fee",
        "claim",
        "payment dispute",
        "hold",
        "charge",
        "credit",
        "transfer",
        "adjustment",
        "non-sale charge",
        "reserve",
        "dispute",
    }
)
EBAY_EMPTY = frozenset({"", "--", "-"})


def parse_ebay(text: str) -> SettlementReport:
    table = read_table(text, lambda names: EBAY_DATE in names and EBAY_TYPE in names, EBAY_REQUIRED)
    bad: list[BadRow] = []
    lines: list[tuple[SettlementLine, datetime, str]] = []
    ignored: list[datetime] = []
    for number, cells in table.rows:
        try:
            _check_width(table, cells)
            row = Row(table.header, cells)
            when = parse_time(row.get(EBAY_DATE), EBAY_DATE)
            kind_name = row.get(EBAY_TYPE)
            kind = row_kind(kind_name, EBAY_CHARGES, EBAY_REFUNDS, EBAY_IGNORED, EBAY_TYPE)
            if kind is None:
                ignored.append(when)
                continue
            currency = _currency(row.get(EBAY_CURRENCY), EBAY_CURRENCY)
            gross = row.get(EBAY_GROSS)
            if gross in EBAY_EMPTY:
                raise RowError(f"{EBAY_GROSS} is missing", EBAY_GROSS)
            amount = parse_amount(gross, EBAY_GROSS)
            line = SettlementLine(
                line=number,
                kind=kind,
                marketplace_order_id=_order_id(row, EBAY_ORDER),
                amount=amount if kind == CHARGE else -amount,
                transaction_type=kind_name,
                description=(row.get("description") or row.get("item title"))[:MAX_FIELD],
            )
        except RowError as e:
            bad.append(BadRow(number, e.message, e.field))
            continue
        lines.append((line, when, currency))
    if not lines and not ignored:
        raise SettlementFormatError("the report has no transaction that could be read", "file")
    currency = lines[0][2] if lines else "XXX"
    kept: list[SettlementLine] = []
    for line, _, line_currency in lines:
        if line_currency != currency:
            bad.append(
                BadRow(line.line, f"currency {line_currency!r} is not the report's {currency}", EBAY_CURRENCY)
            )
        else:
            kept.append(line)
    times = [when for _, when, _ in lines] + ignored
    return SettlementReport(
        marketplace=Marketplace.EBAY.value,
        format=EBAY_TRANSACTIONS,
        currency=currency,
        period_start=day_start(min(times).date()),
        period_end=after_day(max(times).date()) or MAX_TIME,  # the calendar's last day: to its end
        lines=tuple(kept),
        bad_rows=tuple(sorted(bad, key=lambda b: b.line)),
        ignored_rows=len(ignored),
        rows=len(table.rows),
    )


PARSERS: dict[str, Callable[[str], SettlementReport]] = {
    Marketplace.AMAZON.value: parse_amazon,
    Marketplace.EBAY.value: parse_ebay,
}

"""The bulk shipment CSV: the format shared by `POST /v1/shipments/bulk`, `ledger ship-file` and the web page's
upload, its parser, the per-row report, and the file of failed rows (bulk_shipping.py records the shipments).

One row is one shipment line. Rows of the same order and tracking number form one shipment. Every row gets
its own verdict: a bad row (a missing column, a bad quantity, an unknown order or line, a duplicate, a bad
carrier or tracking number, a refusal by the ledger's rules) is rejected with its reason and never stops the
others. This module is pure (no I/O beyond the bytes it is given), so every entry point reads files alike.

Rows are numbered as a spreadsheet shows them: the header is row 1, the first data row is row 2.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Final
from uuid import UUID

from ledger.aggregates.errors import InvalidCarrierError, InvalidQuantityError
from ledger.aggregates.times import InvalidTimeError, parse_moment
from ledger.aggregates.tracking import is_valid_tracking_number, normalize_tracking_number, parse_carrier
from ledger.aggregates.values import Carrier, normalize_id, parse_quantity
from ledger.application import csv_export

COLUMNS: Final = (
    "marketplace_order_id",
    "line_id",
    "quantity",
    "carrier",
    "tracking_number",
    "shipping_class",
    "shipped_at",
)
ORDER_ID: Final = "order_id"
CARRIER_NAME: Final = "carrier_name"  # optional: the carrier's name, needed with carrier "other"
KNOWN_COLUMNS: Final = frozenset({*COLUMNS, ORDER_ID, CARRIER_NAME})
REQUIRED: Final = ("line_id", "quantity", "carrier", "tracking_number")
MAX_ROWS: Final = 10_000
MAX_QUANTITY: Final = 1_000_000
MAX_FIELD: Final = 200
TEMPLATE: Final = (
    ",".join(COLUMNS) + "\n"
    "114-3941689-8772232,1,2,ups,1Z999AA10123456784,Ground,2026-11-20T15:30:00Z\n"
    "114-3941689-8772232,2,1,ups,1Z999AA10123456784,Ground,2026-11-20T15:30:00Z\n"
)
ACCEPTED: Final = "accepted"
REJECTED: Final = "rejected"


class NotCsvError(ValueError):
    """The upload is not a CSV file at all (empty, binary, or without a single known column)."""

    code = "not-csv"


@dataclass(frozen=True)
class ShipmentRow:
    """One data row as read: its fields as text (for the failed-rows file) and what could be parsed."""

    row: int
    fields: dict[str, str]
    marketplace_order_id: str = ""
    order_id: UUID | None = None
    line_id: str = ""
    quantity: int = 0
    carrier: Carrier | None = None
    carrier_name: str = ""
    tracking_number: str = ""
    shipping_class: str = ""
    shipped_at: datetime | None = None
    error: str | None = None  # why the row is rejected before the ledger sees it
    code: str = ""

    @property
    def order_ref(self) -> str:
        return str(self.order_id) if self.order_id is not None else self.marketplace_order_id


@dataclass(frozen=True)
class RowResult:
    """The verdict on one row. `replayed`: an earlier upload recorded this shipment already."""

    row: int
    status: str
    fields: dict[str, str]
    reason: str = ""
    code: str = ""
    order_id: UUID | None = None
    shipment_id: UUID | None = None
    version: int | None = None
    replayed: bool = False

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED


@dataclass(frozen=True)
class ParsedFile:
    columns: tuple[str, ...]
    rows: list[ShipmentRow]


@dataclass
class BulkReport:
    rows: list[RowResult] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(1 for r in self.rows if r.accepted)

    @property
    def rejected(self) -> int:
        return len(self.rows) - self.accepted


# ------------------------------------------------------------------------------------------ parsing


def _decode(data: bytes) -> str:
    if not data.strip():
        raise NotCsvError("the file is empty")
    if b"\x00" in data:
        raise NotCsvError("the file is binary, not CSV text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise NotCsvError("the file is not UTF-8 text") from None


def _column_name(raw: str) -> str:
    return raw.strip().lower().replace(" ", "_").replace("-", "_")


def parse(data: bytes) -> ParsedFile:
    """Read the file; NotCsvError if it is not CSV at all. Rows that cannot be used carry their `error`."""
    text = _decode(data)
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as e:
        raise NotCsvError(f"the file is not valid CSV: {e}") from None
    records = [r for r in records if any(cell.strip() for cell in r)]
    if not records:
        raise NotCsvError("the file has no header row")
    columns = tuple(_column_name(c) for c in records[0])
    if not KNOWN_COLUMNS & set(columns):
        raise NotCsvError(f"the first row is not a header: expected the columns {', '.join(COLUMNS)}")
    if len(records) - 1 > MAX_ROWS:
        raise NotCsvError(f"the file has {len(records) - 1} rows; at most {MAX_ROWS} per upload")
    header_error = _header_error(columns)
    rows: list[ShipmentRow] = []
    for number, record in enumerate(records[1:], start=2):
        values = dict(zip(columns, (_cell(cell) for cell in record), strict=False))
        row = ShipmentRow(row=number, fields={c: values.get(c, "") for c in columns})
        if header_error is not None:
            rows.append(replace(row, error=header_error, code="wrong-columns"))
        elif len(record) != len(columns):
            msg = f"the row has {len(record)} fields, the header {len(columns)}"
            rows.append(replace(row, error=msg, code="wrong-columns"))
        else:
            rows.append(_parse_row(row, values))
    return ParsedFile(columns, _mark_duplicates(rows))


def _cell(text: str) -> str:
    """A cell as typed: trimmed, and without the quote csv_export puts before a cell a spreadsheet would run
    as a formula (so the failed-rows file, fixed and uploaded again, reads as the original did)."""
    text = text.strip()
    return text[1:].strip() if text[:1] == "'" and text[1:2] in csv_export.FORMULA_STARTS else text


def _header_error(columns: tuple[str, ...]) -> str | None:
    unknown = [c for c in columns if c not in KNOWN_COLUMNS]
    if unknown:
        return (
            f"unknown column(s) {', '.join(repr(c) for c in unknown)}; the columns are {', '.join(COLUMNS)}"
        )
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        return f"column(s) {', '.join(repeated)} appear more than once"
    missing = [c for c in REQUIRED if c not in columns]
    if "marketplace_order_id" not in columns and ORDER_ID not in columns:
        missing.insert(0, "marketplace_order_id (or order_id)")
    if missing:
        return f"missing column(s) {', '.join(missing)}"
    return None


def _parse_row(row: ShipmentRow, values: dict[str, str]) -> ShipmentRow:
    def reject(message: str, code: str) -> ShipmentRow:
        return replace(row, error=message, code=code)

    too_long = [c for c, v in values.items() if len(v) > MAX_FIELD]
    if too_long:
        return reject(f"{too_long[0]} is longer than {MAX_FIELD} characters", "invalid-field")
    marketplace_order_id = normalize_id(values.get("marketplace_order_id", ""))
    order_id: UUID | None = None
    if values.get(ORDER_ID):
        try:
            order_id = UUID(values[ORDER_ID])
        except ValueError:
            return reject(f"order_id {values[ORDER_ID]!r} is not an order id (a UUID)", "unknown-order")
    elif not marketplace_order_id:
        return reject("marketplace_order_id is empty", "missing-value")
    line_id = normalize_id(values.get("line_id", ""))
    if not line_id:
        return reject("line_id is empty", "missing-value")
    try:
        quantity = parse_quantity(values.get("quantity", ""), "quantity")
    except InvalidQuantityError as e:
        return reject(e.message, "invalid-quantity")
    if not 1 <= quantity <= MAX_QUANTITY:
        return reject(f"quantity must be 1 to {MAX_QUANTITY}, not {quantity}", "invalid-quantity")
    carrier_text = values.get("carrier", "")
    try:
        carrier = parse_carrier(carrier_text)
    except InvalidCarrierError as e:
        return reject(e.message, e.code)
    raw_tracking = values.get("tracking_number", "")
    tracking = normalize_tracking_number(raw_tracking)
    if not tracking:
        return reject("tracking_number is empty", "invalid-tracking-number")
    if not is_valid_tracking_number(carrier, tracking):
        msg = f"{raw_tracking!r} is not a valid {carrier.value} tracking number"
        return reject(msg, "invalid-tracking-number")
    shipped_at: datetime | None = None
    if values.get("shipped_at"):
        try:
            shipped_at = parse_moment(values["shipped_at"], "shipped_at")
        except InvalidTimeError as e:
            return reject(e.message, "invalid-time")
    return replace(
        row,
        marketplace_order_id=marketplace_order_id,
        order_id=order_id,
        line_id=line_id,
        quantity=quantity,
        carrier=carrier,
        carrier_name=values.get(CARRIER_NAME, ""),
        tracking_number=tracking,
        shipping_class=values.get("shipping_class", ""),
        shipped_at=shipped_at,
    )


def _mark_duplicates(rows: list[ShipmentRow]) -> list[ShipmentRow]:
    """A line may appear once per shipment: a second row of the same order, tracking number and line is
    rejected (an exact copy is called a duplicate; the first such row stands)."""
    first: dict[tuple[str, str, str], ShipmentRow] = {}
    out: list[ShipmentRow] = []
    for row in rows:
        if row.error is not None:
            out.append(row)
            continue
        key = (row.order_ref, row.tracking_number, row.line_id)
        earlier = first.get(key)
        if earlier is None:
            first[key] = row
            out.append(row)
        elif earlier.fields == row.fields:
            out.append(replace(row, error=f"duplicate of row {earlier.row}", code="duplicate-row"))
        else:
            msg = f"line {row.line_id} is already in this shipment at row {earlier.row}; one row per line"
            out.append(replace(row, error=msg, code="duplicate-row"))
    return out


def failed_rows_csv(columns: Iterable[str], results: Iterable[RowResult]) -> str:
    """The rejected rows as a CSV file with the same columns: fix them and upload this file again."""
    names = list(columns)
    failed = ([result.fields.get(c, "") for c in names] for result in results if not result.accepted)
    return csv_export.rows(names, failed, newline="\n")

"""Bulk shipments from a CSV file: the format shared by `POST /v1/shipments/bulk`, `ledger ship-file` and the
web page's upload, its parser, and the run that records the shipments.

One row is one shipment line. Rows of the same order and tracking number form one shipment. Every row gets
its own verdict: a bad row (a missing column, a bad quantity, an unknown order or line, a duplicate, a bad
carrier or tracking number, a refusal by the ledger's rules) is rejected with its reason and never stops the
others; when the ledger refuses a shipment because of some of its rows, those rows are rejected and the rest
of the shipment is recorded.

A file uploaded twice ships nothing twice: each shipment's idempotency key is derived from the seller, the
order, the tracking number and the lines, so a second upload replays the first ("already recorded").

Rows are numbered as a spreadsheet shows them: the header is row 1, the first data row is row 2.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Final
from uuid import UUID

from .aggregates.errors import LedgerError
from .aggregates.tracking import is_valid_tracking_number, normalize_tracking_number
from .aggregates.values import Carrier, Context, LineQuantity, Marketplace, Source
from .application import IdempotencyKeyReusedError, Ledger, OrderNotFoundError
from .queries import OrderDetails

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
KNOWN_COLUMNS: Final = frozenset({*COLUMNS, ORDER_ID})
REQUIRED: Final = ("line_id", "quantity", "carrier", "tracking_number")
MAX_ROWS: Final = 10_000
MAX_QUANTITY: Final = 1_000_000
MAX_FIELD: Final = 200
MAX_SUBSET_ROWS: Final = 8  # shipments with more lines are recognised on a re-upload only when whole
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
        values = dict(zip(columns, (cell.strip() for cell in record), strict=False))
        row = ShipmentRow(row=number, fields={c: values.get(c, "") for c in columns})
        if header_error is not None:
            rows.append(replace(row, error=header_error, code="wrong-columns"))
        elif len(record) != len(columns):
            msg = f"the row has {len(record)} fields, the header {len(columns)}"
            rows.append(replace(row, error=msg, code="wrong-columns"))
        else:
            rows.append(_parse_row(row, values))
    return ParsedFile(columns, _mark_duplicates(rows))


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
    marketplace_order_id = values.get("marketplace_order_id", "")
    order_id: UUID | None = None
    if values.get(ORDER_ID):
        try:
            order_id = UUID(values[ORDER_ID])
        except ValueError:
            return reject(f"order_id {values[ORDER_ID]!r} is not an order id (a UUID)", "unknown-order")
    elif not marketplace_order_id:
        return reject("marketplace_order_id is empty", "missing-value")
    line_id = values.get("line_id", "")
    if not line_id:
        return reject("line_id is empty", "missing-value")
    quantity_text = values.get("quantity", "")
    try:
        quantity = int(quantity_text)
    except ValueError:
        return reject(f"quantity {quantity_text!r} is not a whole number", "invalid-quantity")
    if not 1 <= quantity <= MAX_QUANTITY:
        return reject(f"quantity must be 1 to {MAX_QUANTITY}, not {quantity}", "invalid-quantity")
    carrier_text = values.get("carrier", "")
    try:
        carrier = Carrier(_column_name(carrier_text))
    except ValueError:
        known = ", ".join(c.value for c in Carrier)
        return reject(f"unknown carrier {carrier_text!r}; one of {known}", "invalid-carrier")
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
            shipped_at = datetime.fromisoformat(values["shipped_at"].replace("Z", "+00:00"))
        except ValueError:
            return reject(f"shipped_at {values['shipped_at']!r} is not an ISO 8601 time", "invalid-time")
        if shipped_at.tzinfo is None:
            return reject("shipped_at needs a time zone, e.g. 2026-11-20T15:30:00Z", "invalid-time")
    return replace(
        row,
        marketplace_order_id=marketplace_order_id,
        order_id=order_id,
        line_id=line_id,
        quantity=quantity,
        carrier=carrier,
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


# ---------------------------------------------------------------------------------------- shipping


@dataclass
class _Group:
    order_ref: str
    tracking_number: str
    rows: list[ShipmentRow]


def _groups(rows: Iterable[ShipmentRow]) -> list[_Group]:
    groups: dict[tuple[str, str], _Group] = {}
    for row in rows:
        key = (row.order_ref, row.tracking_number)
        groups.setdefault(key, _Group(row.order_ref, row.tracking_number, [])).rows.append(row)
    return list(groups.values())


def idempotency_key(seller: str, order_id: UUID, tracking_number: str, lines: Iterable[LineQuantity]) -> str:
    """The same shipment (seller, order, tracking number, lines) always gets the same key."""
    parts = [seller, str(order_id), tracking_number, *sorted(f"{x.line_id}:{x.quantity}" for x in lines)]
    return "bulk-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def _digest(rows: list[ShipmentRow]) -> str:
    """The request behind the key: the same key with another carrier, class or time is refused."""
    first = rows[0]
    text = "\x1f".join(
        [str(first.carrier), first.shipping_class, first.shipped_at.isoformat() if first.shipped_at else ""]
    )
    return hashlib.sha256(text.encode()).hexdigest()


Progress = Callable[[int], None]


class BulkShipper:
    """Records the shipments of a parsed file for one seller (None: any seller, order ids only)."""

    def __init__(
        self, ledger: Ledger, *, actor: str, seller: str | None, source: Source = Source.BULK
    ) -> None:
        self.ledger = ledger
        self.actor = actor
        self.seller = seller
        self.source = source
        self._orders: dict[str, OrderDetails | None] = {}
        self._ambiguous: set[str] = set()

    def run(self, parsed: ParsedFile, progress: Progress | None = None) -> BulkReport:
        """Every row's verdict, in file order. `progress(n)` is told each time n more rows are done."""
        results: dict[int, RowResult] = {}
        for row in parsed.rows:
            if row.error is not None:
                results[row.row] = _rejected(row, row.error, row.code)
        if progress and results:
            progress(len(results))
        for group in _groups(r for r in parsed.rows if r.error is None):
            for result in self._ship_group(group):
                results[result.row] = result
            if progress:
                progress(len(group.rows))
        return BulkReport([results[r.row] for r in parsed.rows])

    def _order(self, row: ShipmentRow) -> OrderDetails | None:
        ref = row.order_ref
        if ref not in self._orders:
            self._orders[ref] = self._find(row)
        return self._orders[ref]

    def _find(self, row: ShipmentRow) -> OrderDetails | None:
        if row.order_id is not None:
            try:
                return self.ledger.get_order(row.order_id, self.seller)
            except OrderNotFoundError:
                return None
        if self.seller is None:
            return None
        found = []
        for marketplace in Marketplace:
            try:
                found.append(self.ledger.find_order(self.seller, marketplace, row.marketplace_order_id))
            except OrderNotFoundError:
                continue
        if len(found) > 1:
            self._ambiguous.add(row.marketplace_order_id)
        return found[0] if len(found) == 1 else None

    def _ship_group(self, group: _Group) -> list[RowResult]:
        first = group.rows[0]
        order = self._order(first)
        if order is None:
            reason = f"unknown order {group.order_ref!r}"
            if group.order_ref in self._ambiguous:
                reason = f"{group.order_ref!r} names orders on several marketplaces: use the order_id column"
            elif first.order_id is None and self.seller is None:
                reason += ": marketplace order ids need a seller (or use the order_id column)"
            return [_rejected(r, reason, "unknown-order") for r in group.rows]
        results: list[RowResult] = []
        rows = []
        for row in group.rows:
            if (row.carrier, row.shipping_class, row.shipped_at) != (
                first.carrier,
                first.shipping_class,
                first.shipped_at,
            ):
                msg = (
                    f"carrier, shipping_class and shipped_at must match row {first.row} of the same shipment"
                )
                results.append(_rejected(row, msg, "inconsistent-shipment"))
            else:
                rows.append(row)
        earlier = self._shipped_before(order, rows)
        if earlier:
            results += self._ship(order, earlier)
            rows = [r for r in rows if r not in earlier]
            if not rows:
                return results
            order = self._order(first) or order
        try:
            return results + self._ship(order, rows)
        except LedgerError as e:
            refusal = e
        # The ledger refused the shipment: blame the rows that cannot ship, and ship the others.
        lines = {line.line_id: line for line in order.lines}
        good = []
        for row in rows:
            line = lines.get(row.line_id)
            if line is None:
                results.append(
                    _rejected(row, f"no line {row.line_id!r} on this order", "unknown-line", order)
                )
            elif row.quantity > line.shippable:
                msg = f"line {row.line_id} has {line.shippable} unit(s) left to ship, not {row.quantity}"
                results.append(_rejected(row, msg, "over-shipment", order))
            else:
                good.append(row)
        if not good or len(good) == len(rows):
            return results + [_rejected(r, _reason(refusal), refusal.code, order) for r in good]
        try:
            return results + self._ship(order, good)
        except LedgerError as e:
            return results + [_rejected(r, _reason(e), e.code, order) for r in good]

    def _shipped_before(self, order: OrderDetails, rows: list[ShipmentRow]) -> list[ShipmentRow]:
        """The largest set of these rows an earlier upload shipped (its key is on the order), if any.

        An earlier upload may have shipped only some rows of this shipment (it rejected the others); those
        rows now look over-shipped, so they are recognised by their key before anything else is tried."""
        recorded = {e.idempotency_key for e in self.ledger.order_history(order.order_id, self.seller)}
        recorded.discard(None)
        if not recorded:
            return []
        sizes = range(len(rows), 0, -1) if len(rows) <= MAX_SUBSET_ROWS else [len(rows)]
        for size in sizes:
            for subset in itertools.combinations(rows, size):
                lines = [LineQuantity(r.line_id, r.quantity) for r in subset]
                if idempotency_key(order.seller, order.order_id, rows[0].tracking_number, lines) in recorded:
                    return list(subset)
        return []

    def _ship(self, order: OrderDetails, rows: list[ShipmentRow]) -> list[RowResult]:
        first = rows[0]
        lines = tuple(LineQuantity(r.line_id, r.quantity) for r in rows)
        assert first.carrier is not None
        key = idempotency_key(order.seller, order.order_id, first.tracking_number, lines)
        ctx = Context(actor=self.actor, source=self.source, idempotency_key=key, request_digest=_digest(rows))
        result = self.ledger.ship(
            ctx,
            order.order_id,
            carrier=first.carrier,
            tracking_number=first.tracking_number,
            shipping_class=first.shipping_class,
            shipped_at=first.shipped_at,
            lines=lines,
            seller=self.seller,
        )
        self._orders.pop(first.order_ref, None)  # it changed: read it again for the next shipment
        shipment_id = result.ids.get("shipment_id")
        reason = "already recorded by an earlier upload" if result.replayed else ""
        return [
            RowResult(
                row=r.row,
                status=ACCEPTED,
                fields=r.fields,
                reason=reason,
                order_id=order.order_id,
                shipment_id=shipment_id,
                version=result.version,
                replayed=result.replayed,
            )
            for r in rows
        ]


def _reason(e: LedgerError) -> str:
    if isinstance(e, IdempotencyKeyReusedError):
        return "this shipment was recorded before with another carrier, shipping class or time"
    return e.message


def _rejected(row: ShipmentRow, reason: str, code: str, order: OrderDetails | None = None) -> RowResult:
    return RowResult(
        row=row.row,
        status=REJECTED,
        fields=row.fields,
        reason=reason,
        code=code,
        order_id=order.order_id if order else None,
    )


def failed_rows_csv(columns: Iterable[str], results: Iterable[RowResult]) -> str:
    """The rejected rows as a CSV file with the same columns: fix them and upload this file again."""
    names = list(columns)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for result in results:
        if not result.accepted:
            writer.writerow([result.fields.get(c, "") for c in names])
    return out.getvalue()

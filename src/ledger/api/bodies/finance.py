"""Response bodies of `/v1/finance`: refunds with totals, reconciliations, exposure. Money is a decimal string
in the item's `currency`; every total is the sum of the rows it is listed with (or, for refunds, of every
page of the same filters)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

import msgspec

from ledger.api.bodies.orders import Out
from ledger.finance.reconcile import Reconciliation, ReconciliationDetails
from ledger.projections.exposure import ExposureEntry
from ledger.projections.refunds import RefundEntry, RefundTotals

# The refunds as CSV (API `format=csv` and `ledger finance refunds --format csv`): one row per refund.
CSV_COLUMNS = (
    "refund_id",
    "refunded_at",
    "order_id",
    "account_id",
    "marketplace",
    "marketplace_order_id",
    "currency",
    "reason",
    "item_amount",
    "tax_amount",
    "shipping_amount",
    "total",
    "actor",
    "source",
)


def csv_row(entry: RefundEntry) -> list[object]:
    """A refund's CSV row (csv_export writes amounts as exact decimal strings, the time in ISO 8601)."""
    return [getattr(entry, c) for c in CSV_COLUMNS]


class FinanceRefundLineOut(Out, frozen=True):
    line_id: str
    sku: str
    quantity: int
    item_amount: Decimal
    tax_amount: Decimal
    shipping_amount: Decimal


class FinanceRefundOut(Out, frozen=True):
    refund_id: UUID
    order_id: UUID
    account_id: UUID
    marketplace: str
    marketplace_order_id: str
    currency: str
    reason: str
    actor: str
    source: str
    refunded_at: datetime
    item_amount: Decimal
    tax_amount: Decimal
    shipping_amount: Decimal
    total: Decimal
    lines: list[FinanceRefundLineOut]

    @classmethod
    def of(cls, entry: RefundEntry) -> FinanceRefundOut:
        return msgspec.convert(entry, cls, from_attributes=True)


class RefundTotalsOut(Out, frozen=True):
    """Every refund matching the filters (all pages) in one currency: the sums of their amounts."""

    currency: str
    refunds: int
    item_amount: Decimal
    tax_amount: Decimal
    shipping_amount: Decimal
    total: Decimal

    @classmethod
    def of(cls, totals: RefundTotals) -> RefundTotalsOut:
        return msgspec.convert(totals, cls, from_attributes=True)


class FinanceRefundsOut(Out, frozen=True):
    items: list[FinanceRefundOut]
    totals: list[RefundTotalsOut]
    next_cursor: str | None


class ExposureEntryOut(Out, frozen=True):
    """Shipments of one marketplace in one currency that the marketplace has not confirmed yet."""

    marketplace: str
    currency: str
    shipments: int
    units: int
    value: Decimal
    oldest_shipped_at: datetime

    @classmethod
    def of(cls, entry: ExposureEntry) -> ExposureEntryOut:
        return msgspec.convert(entry, cls, from_attributes=True)


class ExposureOut(Out, frozen=True):
    items: list[ExposureEntryOut]


class ReportFileOut(Out, frozen=True):
    name: str
    size: int
    sha256: str


class ReconciliationSummaryOut(Out, frozen=True):
    """One run: who ran it on what file, the report's period and currency, and the count of each outcome."""

    reconciliation_id: UUID
    marketplace: str
    account_id: UUID | None
    created_at: datetime
    created_by: str
    source: str
    file: ReportFileOut
    format: str
    settlement_id: str | None
    currency: str
    period_start: datetime
    period_end: datetime
    total_amount: Decimal | None
    rows: int
    ignored_rows: int
    bad_rows: int
    matched: int
    missing_in_marketplace: int
    missing_in_ledger: int
    amount_differs: int

    @classmethod
    def of(cls, run: Reconciliation) -> ReconciliationSummaryOut:
        """The run's own fields by name; the file's three as one object."""
        file = ReportFileOut(name=run.file_name, size=run.file_size, sha256=run.file_sha256)
        fields = {f: getattr(run, f) for f in ReconciliationSummaryOut.__struct_fields__ if f != "file"}
        return cls(file=file, **fields)


class ReconciliationItemOut(Out, frozen=True):
    """One order's charges or refunds: both amounts (null where a side has none), and the report's lines."""

    kind: str
    outcome: str
    marketplace_order_id: str
    order_id: UUID | None
    currency: str
    ledger_amount: Decimal | None
    marketplace_amount: Decimal | None
    difference: Decimal
    report_lines: list[int]


class BadRowOut(Out, frozen=True):
    line: int
    message: str
    field: str


class ReconciliationTotalsOut(Out, frozen=True):
    """Per currency and kind, the sums of both sides over `items`."""

    currency: str
    kind: str
    items: int
    ledger_amount: Decimal
    marketplace_amount: Decimal
    difference: Decimal


class ReconciliationOut(ReconciliationSummaryOut, frozen=True):
    items: list[ReconciliationItemOut]
    totals: list[ReconciliationTotalsOut]
    bad_row_details: list[BadRowOut]

    @classmethod
    def of_details(cls, details: ReconciliationDetails) -> ReconciliationOut:
        summary = msgspec.structs.asdict(ReconciliationSummaryOut.of(details.run))
        return cls(
            **summary,
            items=[msgspec.convert(i, ReconciliationItemOut, from_attributes=True) for i in details.items],
            totals=[
                msgspec.convert(t, ReconciliationTotalsOut, from_attributes=True) for t in details.totals
            ],
            bad_row_details=[
                BadRowOut(line=b.line, message=b.message, field=b.field) for b in details.bad_rows
            ],
        )


class ReconciliationPageOut(Out, frozen=True):
    items: list[ReconciliationSummaryOut]
    next_cursor: str | None

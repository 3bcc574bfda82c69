"""Finance: `/v1/finance` refunds (with totals, or every row as CSV), settlement reconciliation and exposure.

Roles `finance` and `admin` only (API.md's table: an auditor reads orders and their history, nothing else).
Everything is within the key's seller: another seller's reconciliation is a 404 like a missing one, and the
listings never show another seller's rows. Reads go through the read models' views; a settlement upload is
parsed, matched and stored by `finance.reconcile`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream
from psycopg_pool import ConnectionPool

from ledger.aggregates.times import DAY_PATTERN, parse_day
from ledger.aggregates.values import Marketplace, RefundReason, Role
from ledger.api import idempotent
from ledger.api.auth import ROLES_OPT, actor_of
from ledger.api.bodies.finance import (
    CSV_COLUMNS,
    ExposureEntryOut,
    ExposureOut,
    FinanceRefundOut,
    FinanceRefundsOut,
    ReconciliationOut,
    ReconciliationPageOut,
    ReconciliationSummaryOut,
    RefundTotalsOut,
    csv_row,
)
from ledger.api.errors import problem_responses
from ledger.application import csv_export
from ledger.application.ledger import Ledger
from ledger.application.queries import KeyDetails
from ledger.finance import reconcile
from ledger.projections.exposure import ExposureView
from ledger.projections.refunds import MAX_LIMIT, RefundsView, snapshot

TAGS = ["finance"]
FINANCE = frozenset({Role.ADMIN, Role.FINANCE})
DEFAULT_LIMIT = 50
CSV_PAGE = 500
REFUNDS = RefundsView()
EXPOSURE = ExposureView()
RECONCILIATIONS = reconcile.Reconciliations()
_log = logging.getLogger("ledger.api")
# A day filter: documented as a date; read by aggregates.times (422 outside 0001-01-01 ... 9999-12-31).
DAY: dict[str, Any] = {"schema_extra": {"format": "date", "pattern": DAY_PATTERN}}
Currency = Annotated[str | None, QueryParameter(pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. USD")]


class RefundsFormat(StrEnum):
    JSON = "json"
    CSV = "csv"


# -------------------------------------------------------------------------------------------- refunds


@dataclass
class RefundsOperation(Operation):
    """The 200 answer is JSON, or CSV with `format=csv`: both are documented."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse) and ok.content is not None:
            ok.content["text/csv"] = OpenAPIMediaType(
                schema=Schema(type=OpenAPIType.STRING, description="CSV: " + ", ".join(CSV_COLUMNS))
            )


@get(
    "/finance/refunds",
    operation_id="listFinanceRefunds",
    summary="Refunds, newest first, with totals per currency over every matching refund; `format=csv`:"
    " every matching refund as CSV, one row each",
    description="`from` and `to` are UTC days, both included, on the day the refund took effect. `totals`"
    " cover every page of the same filters, so summing the items of all pages gives them back. With"
    " `format=csv` the response is `text/csv` (columns: " + ", ".join(CSV_COLUMNS) + "); `limit` and"
    " `cursor` are ignored.",
    tags=TAGS,
    opt={ROLES_OPT: FINANCE},
    operation_class=RefundsOperation,
    responses={
        200: ResponseSpec(FinanceRefundsOut, description="a page of refunds and the totals per currency"),
        **problem_responses(401, 403, 422, 503),
    },
    sync_to_thread=True,
)
def list_refunds(
    pool: NamedDependency[ConnectionPool[Any]],
    key: NamedDependency[KeyDetails],
    date_from: Annotated[str | None, QueryParameter(name="from", description="first UTC day", **DAY)] = None,
    date_to: Annotated[str | None, QueryParameter(name="to", description="last UTC day", **DAY)] = None,
    marketplace: FromQuery[Marketplace | None] = None,
    currency: Currency = None,
    reason: FromQuery[RefundReason | None] = None,
    account_id: FromQuery[UUID | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
    output_format: Annotated[RefundsFormat, QueryParameter(name="format")] = RefundsFormat.JSON,
) -> Response[Any]:
    filters: dict[str, Any] = {
        "date_from": parse_day(date_from, "from") if date_from is not None else None,
        "date_to": parse_day(date_to, "to") if date_to is not None else None,
        "marketplace": marketplace.value if marketplace else None,
        "currency": currency,
        "reason": reason.value if reason else None,
        "account_id": account_id,
    }
    if output_format == RefundsFormat.CSV:
        chunks = _csv(pool, key.seller, filters)
        first = next(chunks)  # the header and first page: a bad filter or a failure answers before the 200
        return Stream(
            itertools.chain([first], chunks),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="refunds.csv"'},
        )
    with pool.connection() as conn, snapshot(conn):
        page = REFUNDS.list_refunds(conn, key.seller, limit=limit, cursor=cursor, **filters)
        totals = REFUNDS.totals(conn, key.seller, **filters)
    body = FinanceRefundsOut(
        items=[FinanceRefundOut.of(e) for e in page.items],
        totals=[RefundTotalsOut.of(t) for t in totals],
        next_cursor=page.next_cursor,
    )
    return Response(body)


def _csv(pool: ConnectionPool[Any], seller: str, filters: dict[str, Any]) -> Iterator[str]:
    """Every matching refund, a page of rows per chunk (keyset pages: constant memory, any size), the header
    with the first. A failure after the first chunk (the database gone) is logged and raised again, so the
    server aborts the response: the client sees a broken transfer, never a 200 whose file just ends early."""
    cursor: str | None = None
    header = csv_export.line(CSV_COLUMNS)
    try:
        with pool.connection() as conn, snapshot(conn):
            while True:
                page = REFUNDS.list_refunds(conn, seller, limit=CSV_PAGE, cursor=cursor, **filters)
                yield header + "".join(csv_export.line(csv_row(e)) for e in page.items)
                header = ""
                if page.next_cursor is None:
                    return
                cursor = page.next_cursor
    except Exception:
        if not header:  # past the first chunk: the status is sent, only the transfer can fail
            _log.exception("the refunds CSV failed part-way; the response is aborted")
        raise


# -------------------------------------------------------------------------------------- settlements


@dataclass
class SettlementUploadOperation(Operation):
    """The upload's body is the report file itself, which Litestar cannot infer from a raw body."""

    def __post_init__(self) -> None:
        text = Schema(type=OpenAPIType.STRING, description="the report file as the marketplace wrote it")
        self.request_body = RequestBody(
            required=True,
            description="Amazon: the flat-file settlement report V2 (tab-separated); eBay: the transaction"
            " report (CSV). The delimiter is taken from the header row, so either content type works.",
            content={
                "text/tab-separated-values": OpenAPIMediaType(schema=text),
                "text/csv": OpenAPIMediaType(schema=text),
                "text/plain": OpenAPIMediaType(schema=text),
            },
        )


@post(
    "/finance/settlements",
    operation_id="reconcileSettlement",
    summary="Reconcile a marketplace's settlement report against the ledger; the run is stored",
    description="Every charge and refund of the report's period is matched per order: `matched`,"
    " `amount_differs`, `missing_in_marketplace` or `missing_in_ledger`. Rows that cannot be read are"
    " reported per line (`bad_rows`) and never stop the others. Formats and matching rules: README, Finance."
    " Accepts `Idempotency-Key`.",
    tags=TAGS,
    opt={ROLES_OPT: FINANCE},
    status_code=201,
    operation_class=SettlementUploadOperation,
    responses=problem_responses(401, 403, 404, 413, 422, 503),
)
async def upload_settlement(
    request: Request[Any, Any, Any],
    ledger: NamedDependency[Ledger],
    pool: NamedDependency[ConnectionPool[Any]],
    key: NamedDependency[KeyDetails],
    idempotency_key: NamedDependency[str | None],
    digest: NamedDependency[str],
    marketplace: FromQuery[Marketplace],
    account_id: FromQuery[UUID | None] = None,
    file_name: Annotated[
        str,
        QueryParameter(min_length=1, max_length=200, description="the report's file name, kept with the run"),
    ] = "settlement-report",
    output_detail: Annotated[
        bool, QueryParameter(name="detail", description="answer with the items and bad rows too")
    ] = False,
) -> Response[Any]:
    data = await request.body()
    upload = reconcile.Upload(
        seller=key.seller,
        marketplace=marketplace.value,
        data=data,
        file_name=file_name,
        actor=actor_of(key),
        source="api",
        account_id=account_id,
        idempotency_key=idempotency_key,
    )

    def run() -> reconcile.ReconciliationDetails:
        reconcile.check_account(ledger, key.seller, marketplace.value, account_id)
        with pool.connection() as conn:
            return RECONCILIATIONS.run(conn, upload, datetime.now(UTC))

    asked = idempotent.Request(key.seller, idempotency_key, "reconcileSettlement", digest)
    details = await anyio.to_thread.run_sync(idempotent.kept_elsewhere, ledger, asked, run)
    body: Any = (
        ReconciliationOut.of_details(details) if output_detail else ReconciliationSummaryOut.of(details.run)
    )
    return Response(body, status_code=201)


@get(
    "/finance/reconciliations",
    operation_id="listReconciliations",
    summary="The seller's reconciliation runs, newest first, in keyset pages",
    tags=TAGS,
    opt={ROLES_OPT: FINANCE},
    responses=problem_responses(401, 403, 422, 503),
    sync_to_thread=True,
)
def list_reconciliations(
    pool: NamedDependency[ConnectionPool[Any]],
    key: NamedDependency[KeyDetails],
    marketplace: FromQuery[Marketplace | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=reconcile.MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> ReconciliationPageOut:
    with pool.connection() as conn:
        page = RECONCILIATIONS.list(
            conn, key.seller, marketplace.value if marketplace else None, limit=limit, cursor=cursor
        )
    return ReconciliationPageOut(
        items=[ReconciliationSummaryOut.of(r) for r in page.items], next_cursor=page.next_cursor
    )


@get(
    "/finance/reconciliations/{reconciliation_id:uuid}",
    operation_id="getReconciliation",
    summary="One reconciliation run: who ran it on what file, each order's outcome with both amounts, bad rows",
    tags=TAGS,
    opt={ROLES_OPT: FINANCE},
    responses=problem_responses(401, 403, 404, 503),
    sync_to_thread=True,
)
def get_reconciliation(
    reconciliation_id: FromPath[UUID],
    pool: NamedDependency[ConnectionPool[Any]],
    key: NamedDependency[KeyDetails],
) -> ReconciliationOut:
    with pool.connection() as conn:
        details = RECONCILIATIONS.get(conn, key.seller, reconciliation_id)
    return ReconciliationOut.of_details(details)


# ------------------------------------------------------------------------------------------ exposure


@get(
    "/finance/exposure",
    operation_id="getExposure",
    summary="Per marketplace and currency, the value shipped but not yet confirmed by the marketplace",
    description="Each entry sums the shipments whose confirmation the marketplace has not acknowledged"
    " (Third Party Managed orders excluded): their count, units, value and the oldest one's `shipped_at`.",
    tags=TAGS,
    opt={ROLES_OPT: FINANCE},
    responses=problem_responses(401, 403, 422, 503),
    sync_to_thread=True,
)
def get_exposure(
    pool: NamedDependency[ConnectionPool[Any]],
    key: NamedDependency[KeyDetails],
    marketplace: FromQuery[Marketplace | None] = None,
    account_id: FromQuery[UUID | None] = None,
) -> ExposureOut:
    with pool.connection() as conn:
        entries = EXPOSURE.exposure(conn, key.seller, marketplace.value if marketplace else None, account_id)
    return ExposureOut(items=[ExposureEntryOut.of(e) for e in entries])


ROUTES = [list_refunds, upload_settlement, list_reconciliations, get_reconciliation, get_exposure]

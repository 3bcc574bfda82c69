"""`POST /v1/shipments/bulk`: many shipment lines as a CSV file, one verdict per row (shipments_csv.py).

The answer is 200 whenever the file is CSV, even if every row was rejected: the report says which rows and
why. A body that is not CSV at all is a 400 problem, a body sent as another media type a 415.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import anyio.to_thread
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from msgspec import Struct

from ledger.aggregates.values import Source
from ledger.api.auth import CHANGE_ORDERS, ROLES_OPT, actor_of
from ledger.api.errors import PROBLEM_JSON, FieldError, Problem, problem, problem_responses
from ledger.application.bulk_shipping import BulkShipper
from ledger.application.ledger import Ledger
from ledger.application.queries import KeyDetails
from ledger.application.shipments_csv import BulkReport, NotCsvError, parse

CSV_MEDIA_TYPES = frozenset({"text/csv", "application/csv", "text/plain", "application/vnd.ms-excel"})


class BulkRowOut(Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One row's verdict. `row` counts as a spreadsheet does: the header is row 1."""

    row: int
    status: Literal["accepted", "rejected"]
    reason: str = ""
    code: str = ""
    marketplace_order_id: str = ""
    line_id: str = ""
    order_id: UUID | None = None
    shipment_id: UUID | None = None
    version: int | None = None
    replayed: bool = False


class BulkShipmentsOut(Struct, kw_only=True, frozen=True):
    rows: list[BulkRowOut]
    accepted: int
    rejected: int

    @classmethod
    def of(cls, report: BulkReport) -> BulkShipmentsOut:
        rows = [
            BulkRowOut(
                row=r.row,
                status="accepted" if r.accepted else "rejected",
                reason=r.reason,
                code=r.code,
                marketplace_order_id=r.fields.get("marketplace_order_id", ""),
                line_id=r.fields.get("line_id", ""),
                order_id=r.order_id,
                shipment_id=r.shipment_id,
                version=r.version,
                replayed=r.replayed,
            )
            for r in report.rows
        ]
        return cls(rows=rows, accepted=report.accepted, rejected=report.rejected)


@dataclass
class CsvBodyOperation(Operation):
    """The route reads its body itself (raw CSV), so its OpenAPI operation names the body here."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            content={
                "text/csv": OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.STRING, description="the CSV file, header row first")
                )
            },
            required=True,
            description="one shipment line a row; see the template at GET /shipments/template.csv",
        )


def is_csv_media_type(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() in CSV_MEDIA_TYPES


@post(
    "/shipments/bulk",
    operation_id="shipBulk",
    summary="Record shipments from a CSV file; one verdict per row (a bad row never blocks the others)",
    description="The body (Content-Type: text/csv) has the columns marketplace_order_id (or order_id), "
    "line_id, quantity, carrier, tracking_number, shipping_class, shipped_at; one shipment line a row. Rows of "
    "one order and tracking number form one shipment. Uploading the same file again ships nothing twice.",
    tags=["order commands"],
    opt={ROLES_OPT: CHANGE_ORDERS},
    status_code=200,
    operation_class=CsvBodyOperation,
    responses={
        200: ResponseSpec(BulkShipmentsOut, description="every row's verdict (also when rows were rejected)"),
        **problem_responses(401, 403, 413, 503),
        415: ResponseSpec(Problem, description="the body is not sent as text/csv", media_type=PROBLEM_JSON),
    },
)
async def ship_bulk(
    request: Request[Any, Any, Any],
    ledger: NamedDependency[Ledger],
    key: NamedDependency[KeyDetails],
) -> Response[BulkShipmentsOut] | Response[Problem]:
    if not is_csv_media_type(request.headers.get("content-type")):
        return problem(415, "unsupported-media-type", "send the file as Content-Type: text/csv")
    try:
        parsed = parse(await request.body())
    except NotCsvError as e:
        return problem(400, e.code, str(e), errors=[FieldError("body", str(e))])
    shipper = BulkShipper(ledger, actor=actor_of(key), seller=key.seller, source=Source.BULK)
    report = await anyio.to_thread.run_sync(shipper.run, parsed)
    return Response(BulkShipmentsOut.of(report))


ROUTES = [ship_bulk]

"""Orders: import, the All Sales list, one order (now or as it was), its history, and the order commands.

Commands take `Idempotency-Key` (replays answer exactly as the first time, recording nothing) and
`If-Match: "<version>"` (412 when the order moved on); they answer 201 with the new version, the events
recorded and the ids made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Reference, RequestBody, Schema
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter, RawBody
from litestar.types import AnyCallable

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.times import RFC3339_PATTERN, parse_bound, parse_moment
from ledger.aggregates.tracking import parse_carrier
from ledger.aggregates.values import LineQuantity, Marketplace, Role, parse_amount
from ledger.api import idempotent, lean
from ledger.api.auth import (
    CHANGE_ORDERS,
    IMPORT_ORDERS,
    READ_HISTORY,
    READ_ORDERS,
    RECORD_DISPUTES,
    ROLES_OPT,
)
from ledger.api.auth import context_for as _ctx
from ledger.api.bodies.orders import (
    CancellationIn,
    CommandOut,
    DisputeCloseIn,
    DisputeIn,
    HistoryEventOut,
    HistoryOut,
    ImportItemOut,
    ImportManyOut,
    ImportOut,
    LineQuantityIn,
    OrderCountsOut,
    OrderOut,
    OrderPage,
    OrderSummaryOut,
    RefundIn,
    RestockIn,
    ShipmentIn,
    VoidIn,
)
from ledger.api.bodies.schemas import MAX_BATCH, OrderIn, decode_batch
from ledger.api.consistency import POSITION_RESPONSE_HEADERS, order_reader, position_headers, view_pool
from ledger.api.errors import BadRequestError, ledger_problem, problem_responses
from ledger.application.commands import (
    Cancel,
    CloseDispute,
    ImportItem,
    ImportOrder,
    ImportOrders,
    OpenDispute,
    Refund,
    Restock,
    Ship,
    VoidShipment,
)
from ledger.application.ledger import Ledger
from ledger.application.queries import CommandResult, KeyDetails
from ledger.projections.all_sales import AllSalesProjection
from ledger.projections.all_sales_view import (
    DEFAULT_LIMIT,
    DEFAULT_SORT,
    MAX_LIMIT,
    SORTS,
    STATUSES,
    AllSalesView,
    SalesFilter,
)

TAGS = ["orders"]
COMMAND_TAGS = ["order commands"]
VIEW = AllSalesView()


# A time filter: documented as RFC 3339; read by aggregates.times (422 if it is not one, clamped to the
# calendar Python holds, so any moment of years 1 to 9999 in any zone is answered).
TIME: dict[str, Any] = {"schema_extra": {"format": "date-time", "pattern": RFC3339_PATTERN}}


def _bound(text: str | None, field: str) -> datetime | None:
    return None if text is None else parse_bound(text, field)


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def _created(result: CommandResult, ledger: Ledger) -> Response[CommandOut]:
    headers = _etag(result.version) | position_headers(_position(result.notification_id, ledger))
    if result.replayed:
        headers |= idempotent.REPLAYED
    return Response(CommandOut.of(result), status_code=201, headers=headers)


def _position(recorded: int | None, ledger: Ledger) -> int | None:
    """Where the request's events are in the log; for a replay (nothing recorded now), the last position recorded
    then, which covers the first response's events (the commit horizon's head would not while an older
    transaction is open)."""
    return recorded if recorded is not None else ledger.last_recorded_position()


def _lines(lines: list[LineQuantityIn] | None) -> tuple[LineQuantity, ...] | None:
    return None if lines is None else tuple(LineQuantity(x.line_id, x.quantity) for x in lines)


# --------------------------------------------------------------------------------------------- import


@post(
    "/orders",
    operation_id="importOrder",
    summary="Import one order (201 created, 200 unchanged or payment recorded)",
    tags=TAGS,
    opt={ROLES_OPT: IMPORT_ORDERS},
    responses={
        200: ResponseSpec(ImportOut, description="already imported: unchanged, or its payment recorded"),
        **problem_responses(401, 403, 404, 409, 413, 422, 503),
    },
    response_headers=[*POSITION_RESPONSE_HEADERS, idempotent.REPLAYED_HEADER],
    sync_to_thread=True,
)
def import_order(
    data: JSONBody[OrderIn],
    ledger: NamedDependency[Ledger],
    key: NamedDependency[KeyDetails],
    idempotency_key: NamedDependency[str | None],
    digest: NamedDependency[str],
) -> Response[ImportOut]:
    result = ledger.execute(
        ImportOrder(
            ctx=_ctx(key, idempotency_key, digest),
            account_id=data.account_id,
            order=data.to_domain(),
            seller=key.seller,
        )
    )
    headers = _etag(result.version) | position_headers(_position(result.notification_id, ledger))
    if result.replayed:
        headers |= idempotent.REPLAYED
    return Response(ImportOut.of(result), status_code=201 if result.created else 200, headers=headers)


@dataclass
class _ImportOrdersOperation(Operation):
    """The bulk import reads its body itself (order by order), so its request body is documented here."""

    def __post_init__(self) -> None:
        order = Reference("#/components/schemas/OrderIn")
        envelope = Schema(
            type=OpenAPIType.OBJECT,
            required=["orders"],
            properties={
                "orders": Schema(type=OpenAPIType.ARRAY, items=order, min_items=1, max_items=MAX_BATCH)
            },
        )
        self.request_body = RequestBody(
            content={"application/json": OpenAPIMediaType(schema=envelope)}, required=True
        )


@post(
    "/orders/import",
    operation_id="importOrders",
    summary="Import many orders; one result per order, in order (a failed order never blocks the others)",
    description="Each order is checked on its own: a refused order's result carries its problem and the "
    "others are imported. Only a malformed envelope (not JSON, not an object, no `orders` list, more than "
    f"{MAX_BATCH} orders) is refused whole.",
    tags=TAGS,
    opt={ROLES_OPT: IMPORT_ORDERS},
    status_code=200,
    responses=problem_responses(401, 403, 413, 422, 503),
    response_headers=POSITION_RESPONSE_HEADERS,
    operation_class=_ImportOrdersOperation,
    sync_to_thread=True,
)
def import_orders(
    body: RawBody,
    ledger: NamedDependency[Ledger],
    key: NamedDependency[KeyDetails],
    idempotency_key: NamedDependency[str | None],
    digest: NamedDependency[str],
) -> Response[ImportManyOut]:
    """One `Ledger.import_orders` call (the new orders in one transaction). Under an Idempotency-Key, each
    order's import carries `<key>#<index>` on its events (a retry after a failure part-way replays those and
    imports the rest) and the whole response is stored at the end."""
    try:
        orders = decode_batch(body)
    except msgspec.ValidationError:
        raise  # JSON, but not the envelope: 422
    except msgspec.DecodeError as e:
        raise BadRequestError(f"the body is not JSON: {e}", "body") from None
    request = idempotent.Request(key.seller, idempotency_key, "importOrders", digest)

    def run() -> Response[Any]:
        items: list[ImportItem | LedgerError] = []
        for index, order in enumerate(orders):
            if isinstance(order, LedgerError):
                items.append(order)
                continue
            try:
                domain = order.to_domain()
            except LedgerError as e:
                items.append(e)
                continue
            order_key = None if idempotency_key is None else f"{idempotency_key}#{index}"
            items.append(ImportItem(order.account_id, domain, order_key))
        outcomes = ledger.execute(
            ImportOrders(ctx=_ctx(key, idempotency_key, digest), items=items, seller=key.seller)
        )
        results: list[ImportItemOut] = []
        positions: list[int] = []
        for index, (order, result) in enumerate(zip(orders, outcomes, strict=True)):
            order_ref = None if isinstance(order, LedgerError) else order.marketplace_order_id
            if isinstance(result, LedgerError):
                results.append(
                    ImportItemOut(index=index, marketplace_order_id=order_ref, error=ledger_problem(result))
                )
                continue
            if result.notification_id is not None:
                positions.append(result.notification_id)
            results.append(
                ImportItemOut(
                    index=index,
                    marketplace_order_id=order_ref,
                    order_id=result.order_id,
                    created=result.created,
                    version=result.version,
                    events=list(result.events),
                )
            )
        failed = sum(1 for r in results if r.error is not None)
        stored = request.response(
            200, ImportManyOut(results=results, imported=len(results) - failed, failed=failed)
        )
        if idempotency_key is not None:
            ledger.store_response(stored)
        response = idempotent.stored_response(stored)
        response.headers.update(position_headers(max(positions, default=None)))
        return response

    return idempotent.replay_or_run(ledger, request, run)


# ---------------------------------------------------------------------------------------------- reads


def sales_filter(
    account_id: FromQuery[UUID | None] = None,
    marketplace: FromQuery[Marketplace | None] = None,
    is_open: Annotated[bool | None, QueryParameter(name="open")] = None,
    dispute: Annotated[
        str | None, QueryParameter(max_length=40, description="`open`: orders with an open dispute")
    ] = None,
    sku: Annotated[str | None, QueryParameter(max_length=100)] = None,
    q: Annotated[
        str | None,
        QueryParameter(
            max_length=320,
            description="the exact marketplace order id or buyer email, or a part of the buyer's name",
        ),
    ] = None,
    purchased_from: Annotated[
        str | None, QueryParameter(description="purchased at or after (inclusive)", **TIME)
    ] = None,
    purchased_to: Annotated[
        str | None, QueryParameter(description="purchased before (exclusive)", **TIME)
    ] = None,
    updated_since: Annotated[
        str | None, QueryParameter(description="changed at or after (inclusive): what changed since", **TIME)
    ] = None,
    buyer_cancel_requested: Annotated[
        bool | None, QueryParameter(description="a buyer asked to cancel and the seller has not answered")
    ] = None,
    attention: Annotated[
        bool | None,
        QueryParameter(
            description="the marketplace disagrees, a buyer asked to cancel, or a sync item is dead"
        ),
    ] = None,
) -> SalesFilter:
    """The All Sales filters that the list and its counts share (the list adds `status`)."""
    return SalesFilter(
        account_id=account_id,
        marketplace=marketplace.value if marketplace else None,
        open=is_open,
        dispute=dispute,  # type: ignore[arg-type] # SalesFilter refuses anything but "open"
        sku=sku,
        q=q,
        purchased_from=_bound(purchased_from, "purchased_from"),
        purchased_to=_bound(purchased_to, "purchased_to"),
        updated_since=_bound(updated_since, "updated_since"),
        buyer_cancel_requested=buyer_cancel_requested,
        attention=attention,
    )


FILTERS = {"filters": Provide(sales_filter, sync_to_thread=False)}


@get(
    "/orders",
    operation_id="listOrders",
    summary="All Sales: the seller's orders, filtered, sorted (newest purchase first by default), in keyset pages",
    tags=TAGS,
    opt={ROLES_OPT: READ_ORDERS},
    dependencies=FILTERS,
    responses=problem_responses(401, 403, 422, 503),
    sync_to_thread=True,
)
def list_orders(
    request: Request[Any, Any, Any],
    key: NamedDependency[KeyDetails],
    read_position: NamedDependency[int | None],
    filters: NamedDependency[SalesFilter],
    status: Annotated[
        str | None,
        QueryParameter(max_length=40, description=f"the order's tab: one of {', '.join(STATUSES)}"),
    ] = None,
    sort: Annotated[
        str, QueryParameter(max_length=20, description=f"one of {', '.join(SORTS)}; `-` is descending")
    ] = DEFAULT_SORT,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, QueryParameter(max_length=100, description="`next_cursor` of the page before, same sort")
    ] = None,
) -> OrderPage:
    filters = replace(filters, status=status)
    pool = view_pool(request, AllSalesProjection.name, read_position)
    with pool.connection() as conn:
        page = VIEW.list_orders(conn, key.seller, filters, limit=limit, cursor=cursor, sort=sort)
    return OrderPage(items=[OrderSummaryOut.of(s) for s in page.items], next_cursor=page.next_cursor)


@get(
    "/orders/counts",
    operation_id="countOrders",
    summary="How many orders match the All Sales filters, in all and per tab (the web page's tab counts)",
    tags=TAGS,
    opt={ROLES_OPT: READ_ORDERS},
    dependencies=FILTERS,
    responses=problem_responses(401, 403, 422, 503),
    sync_to_thread=True,
)
def count_orders(
    request: Request[Any, Any, Any],
    key: NamedDependency[KeyDetails],
    read_position: NamedDependency[int | None],
    filters: NamedDependency[SalesFilter],
) -> OrderCountsOut:
    pool = view_pool(request, AllSalesProjection.name, read_position)
    with pool.connection() as conn:
        return OrderCountsOut(**VIEW.counts(conn, key.seller, filters))


@get(
    "/orders/{order_id:uuid}",
    operation_id="getOrder",
    summary="The order in full, now or as it stood at `?version=` or `?as_of=`; ETag is its version",
    tags=TAGS,
    opt={ROLES_OPT: READ_ORDERS},
    responses=problem_responses(401, 403, 404, 422, 503),
    sync_to_thread=True,
)
def get_order(
    request: Request[Any, Any, Any],
    order_id: FromPath[UUID],
    key: NamedDependency[KeyDetails],
    read_position: NamedDependency[int | None],
    as_of: Annotated[str | None, QueryParameter(description="the order as it stood then", **TIME)] = None,
    version: Annotated[int | None, QueryParameter(ge=1)] = None,
) -> Response[OrderOut]:
    ledger = order_reader(request, read_position)
    if as_of is not None or version is not None:
        at = _bound(as_of, "as_of")
        details = ledger.order_as_of(order_id, version=version, at=at, seller=key.seller)
    else:
        details = ledger.get_order(order_id, key.seller)
    return Response(OrderOut.of_details(details), headers=_etag(details.version))


@get(
    "/orders/{order_id:uuid}/history",
    operation_id="getOrderHistory",
    summary="Every event of the order in version order, with its hash chain",
    tags=["audit"],
    opt={ROLES_OPT: READ_HISTORY},
    responses=problem_responses(401, 403, 404, 503),
    sync_to_thread=True,
)
def order_history(
    order_id: FromPath[UUID], ledger: NamedDependency[Ledger], key: NamedDependency[KeyDetails]
) -> HistoryOut:
    return HistoryOut(events=[HistoryEventOut.of(e) for e in ledger.order_history(order_id, key.seller)])


# ------------------------------------------------------------------------------------------- commands


def command(
    path: str, operation_id: str, summary: str, roles: frozenset[Role] = CHANGE_ORDERS
) -> Callable[[AnyCallable], HTTPRouteHandler]:
    """The route of an order command: what every one of them documents and answers alike (201 with the
    command's result, the log position, the problems a command can meet), in one place. Requests take the
    lean path to the function (api/lean.py)."""
    route = post(
        path,
        operation_id=operation_id,
        summary=summary,
        tags=COMMAND_TAGS,
        opt={ROLES_OPT: roles},
        responses=problem_responses(401, 403, 404, 409, 412, 413, 422, 503),
        response_headers=[*POSITION_RESPONSE_HEADERS, idempotent.REPLAYED_HEADER],
        sync_to_thread=True,
        middleware=[lean.lean_commands],
    )

    def decorate(fn: AnyCallable) -> HTTPRouteHandler:
        lean.register(operation_id, fn)
        return route(fn)

    return decorate


@command(
    "/orders/{order_id:uuid}/shipments",
    "shipOrder",
    "Record a shipment (no `lines`: everything still unshipped)",
)
def ship(
    order_id: FromPath[UUID],
    data: JSONBody[ShipmentIn],
    ledger: NamedDependency[Ledger],
    key: NamedDependency[KeyDetails],
    idempotency_key: NamedDependency[str | None],
    expected_version: NamedDependency[int | None],
    digest: NamedDependency[str],
) -> Response[CommandOut]:
    result = ledger.execute(
        Ship(
            ctx=_ctx(key, idempotency_key, digest),
            order_id=order_id,
            carrier=parse_carrier(data.carrier),
            carrier_name=data.carrier_name,
            tracking_number=data.tracking_number,
            shipping_class=data.shipping_class,
            shipped_at=None if data.shipped_at is None else parse_moment(data.shipped_at, "shipped_at"),
            lines=_lines(data.lines),
            expected_version=expected_version,
            seller=key.seller,
        )
    )
    return _created(result, ledger)


@command(
    "/orders/{order_id:uuid}/cancellations",
    "cancelOrder",
    "Cancel unshipped units (no `lines`: everything unshipped); on paid eBay orders, opens a dispute",
)
def cancel(
    order_id: FromPath[UUID],
    data: JSONBody[CancellationIn],
    ledger: NamedDependency[Ledger],
    key: NamedDependency[KeyDetails],
    idempotency_key: NamedDependency[str | None],
    expected_version: NamedDependency[int | None],
    digest: NamedDependency[str],
) -> Response[CommandOut]:
    result = ledger.execute(
        Cancel(
            ctx=_ctx(key, idempotency_key, digest),
            order_id=order_id,
            reason=data.reason,
            lines=_lines(data.lines),
            restock_in_ledger=data.restock_in_ledger,
            expected_version=expected_version,
            seller=key.seller,
        )
    )
    return _created(result, ledger)


@command(
    "/orders/{order_id:uuid}/refunds",
    "refundOrder",
    "Refund shipped units or amounts (no `lines`: only the amounts given, or with none everything refundable)",
)
def refund(
    order_id: FromPath[UUID],
    data: JSONBody[RefundIn],
    ledger: NamedDependency[Ledger],
    key: NamedDependency[KeyDetails],
    idempotency_key: NamedDependency[str | None],
    expected_version: NamedDependency[int | None],
    digest: NamedDependency[str],
) -> Response[CommandOut]:
    lines = None if data.lines is None else tuple(x.to_domain(index) for index, x in enumerate(data.lines))
    result = ledger.execute(
        Refund(
            ctx=_ctx(key, idempotency_key, digest),
            order_id=order_id,
            reason=data.reason,
            lines=lines,
            shipping_amount=parse_amount(data.shipping_amount, "shipping_amount"),
            tax_amount=parse_amount(data.tax_amount, "tax_amount"),
            expected_version=expected_version,
            seller=key.seller,
        )
    )
    return _created(result, ledger)


@command("/orders/{order_id:uuid}/disputes", "openDispute", "Record a buyer's dispute", roles=RECORD_DISPUTES)
def open_dispute(
    order_id: FromPath[UUID],
    data: JSONBody[DisputeIn],
    ledger: NamedDependency[Ledger],
    key: NamedDependency[KeyDetails],
    idempotency_key: NamedDependency[str | None],
    expected_version: NamedDependency[int | None],
    digest: NamedDependency[str],
) -> Response[CommandOut]:
    result = ledger.execute(
        OpenDispute(
            ctx=_ctx(key, idempotency_key, digest),
            order_id=order_id,
            reason=data.reason,
            marketplace_dispute_id=data.marketplace_dispute_id,
            expected_version=expected_version,
            seller=key.seller,
        )
    )
    return _created(result, ledger)


@command(
    "/orders/{order_id:uuid}/disputes/{dispute_id:uuid}/close",
    "closeDispute",
    "Close a dispute with its outcome (`accepted` makes a cancellation dispute's cancellation happen)",
    roles=RECORD_DISPUTES,
)
def close_dispute(
    order_id: FromPath[UUID],
    dispute_id: FromPath[UUID],
    data: JSONBody[DisputeCloseIn],
    ledger: NamedDependency[Ledger],
    key: NamedDependency[KeyDetails],
    idempotency_key: NamedDependency[str | None],
    expected_version: NamedDependency[int | None],
    digest: NamedDependency[str],
) -> Response[CommandOut]:
    result = ledger.execute(
        CloseDispute(
            ctx=_ctx(key, idempotency_key, digest),
            order_id=order_id,
            dispute_id=dispute_id,
            outcome=data.outcome,
            expected_version=expected_version,
            seller=key.seller,
        )
    )
    return _created(result, ledger)


@command(
    "/orders/{order_id:uuid}/restocks",
    "restockOrder",
    "Put cancelled or returned units back into the ledger's stock",
)
def restock(
    order_id: FromPath[UUID],
    data: JSONBody[RestockIn],
    ledger: NamedDependency[Ledger],
    key: NamedDependency[KeyDetails],
    idempotency_key: NamedDependency[str | None],
    expected_version: NamedDependency[int | None],
    digest: NamedDependency[str],
) -> Response[CommandOut]:
    lines = _lines(data.lines)
    assert lines is not None
    result = ledger.execute(
        Restock(
            ctx=_ctx(key, idempotency_key, digest),
            order_id=order_id,
            lines=lines,
            expected_version=expected_version,
            seller=key.seller,
        )
    )
    return _created(result, ledger)


@command(
    "/orders/{order_id:uuid}/shipments/{shipment_id:uuid}/void",
    "voidShipment",
    "Void a shipment the marketplace has not acknowledged, or refused: its units are unshipped again and its"
    " queued confirmation is withdrawn (409 shipment-acknowledged once the marketplace has it)",
)
def void_shipment(
    order_id: FromPath[UUID],
    shipment_id: FromPath[UUID],
    data: JSONBody[VoidIn],
    ledger: NamedDependency[Ledger],
    key: NamedDependency[KeyDetails],
    idempotency_key: NamedDependency[str | None],
    expected_version: NamedDependency[int | None],
    digest: NamedDependency[str],
) -> Response[CommandOut]:
    result = ledger.execute(
        VoidShipment(
            ctx=_ctx(key, idempotency_key, digest),
            order_id=order_id,
            shipment_id=shipment_id,
            reason=data.reason,
            expected_version=expected_version,
            seller=key.seller,
        )
    )
    return _created(result, ledger)


ROUTES = [
    import_order,
    import_orders,
    list_orders,
    count_orders,
    get_order,
    order_history,
    ship,
    cancel,
    refund,
    open_dispute,
    close_dispute,
    restock,
    void_shipment,
]

"""The outbound sync queue: `/v1/sync/outbound` (what each marketplace must be told) and an operator's retry.

Reads and the retry go through `OutboundView` (the SQL lives in `integrations/outbox.py`), always within the
key's seller: another seller's item is a 404 like a missing one.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

import msgspec
import psycopg
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from msgspec import Meta
from psycopg_pool import ConnectionPool

from ledger.aggregates.values import Context, Marketplace, Role, SyncAction
from ledger.api import idempotent
from ledger.api.auth import ROLES_OPT, context_for
from ledger.api.bodies.orders import Out, Strict
from ledger.api.consistency import await_position
from ledger.api.errors import problem_responses
from ledger.application.commands import ResolveSyncItem
from ledger.application.errors import ResponseStoredError
from ledger.application.ledger import Ledger
from ledger.application.queries import KeyDetails
from ledger.eventstore import idempotency
from ledger.integrations.marketplaces import operation_for
from ledger.integrations.outbound import OutboundProjection
from ledger.integrations.outbox import (
    DEAD,
    FAILED,
    IN_FLIGHT,
    MAX_LIMIT,
    PENDING,
    RESOLVED,
    SUCCEEDED,
    NotResolvableError,
    OutboundItem,
    OutboundView,
)

TAGS = ["sync"]
SYNC_ROLES = frozenset({Role.ADMIN, Role.OPERATOR})
DEFAULT_LIMIT = 50
VIEW = OutboundView()


class ItemState(StrEnum):
    PENDING = PENDING
    IN_FLIGHT = IN_FLIGHT
    SUCCEEDED = SUCCEEDED
    FAILED = FAILED
    DEAD = DEAD
    RESOLVED = RESOLVED


class OutboundItemOut(Out, frozen=True):
    id: UUID
    order_id: UUID
    marketplace: str
    action: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    idempotency_key: str
    sequence: int
    reference: str
    operation: str
    """the marketplace call it makes, e.g. `amazon.confirmShipment` (`amazon.getFeed` while it polls a feed)"""
    blocked_by: UUID | None
    """the earlier item of the same order it waits for, if any"""

    @classmethod
    def of(cls, item: OutboundItem) -> OutboundItemOut:
        return cls(
            id=item.id,
            order_id=item.order_id,
            marketplace=item.marketplace,
            action=item.action,
            state=item.state,
            attempts=item.attempts,
            next_attempt_at=item.next_attempt_at,
            last_error=item.last_error,
            idempotency_key=item.idempotency_key,
            sequence=item.sequence,
            reference=item.reference,
            operation=operation_for(item.marketplace, item.action, polling=item.polling),
            blocked_by=item.blocked_by,
        )


class OutboundPage(Out, frozen=True):
    items: list[OutboundItemOut]
    next_cursor: UUID | None


@get(
    "/sync/outbound",
    operation_id="listOutbound",
    summary="The seller's outbound sync queue, oldest change first, filtered, in keyset pages",
    tags=TAGS,
    opt={ROLES_OPT: SYNC_ROLES},
    responses=problem_responses(401, 403, 422, 503),
    sync_to_thread=True,
)
def list_outbound(
    request: Request[Any, Any, Any],
    pool: NamedDependency[ConnectionPool[Any]],
    key: NamedDependency[KeyDetails],
    read_position: NamedDependency[int | None],
    item_state: Annotated[ItemState | None, QueryParameter(name="state")] = None,
    marketplace: FromQuery[Marketplace | None] = None,
    order_id: FromQuery[UUID | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[
        UUID | None, QueryParameter(description="`next_cursor` of the previous page (an item id)")
    ] = None,
) -> OutboundPage:
    await_position(request, pool, OutboundProjection.name, read_position)
    with pool.connection() as conn:
        items = VIEW.list_items(
            conn,
            key.seller,
            state=item_state.value if item_state else None,
            marketplace=marketplace.value if marketplace else None,
            order_id=order_id,
            limit=limit,
            after_id=cursor,
        )
    # A full page may be followed by an empty one: the cursor says "maybe more", never "certainly more".
    next_cursor = items[-1].id if len(items) == limit else None
    return OutboundPage(items=[OutboundItemOut.of(i) for i in items], next_cursor=next_cursor)


@post(
    "/sync/outbound/{item_id:uuid}/retry",
    operation_id="retryOutbound",
    summary="Put a dead (or failed) item back in the queue, due now; its attempts are kept",
    tags=TAGS,
    opt={ROLES_OPT: SYNC_ROLES},
    status_code=200,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
    sync_to_thread=True,
)
def retry_outbound(
    item_id: FromPath[UUID],
    pool: NamedDependency[ConnectionPool[Any]],
    key: NamedDependency[KeyDetails],
    ledger: NamedDependency[Ledger],
    idempotency_key: NamedDependency[str | None],
    digest: NamedDependency[str],
) -> Response[OutboundItemOut]:
    request = idempotent.Request(key.seller, idempotency_key, f"retryOutbound:{item_id}", digest)

    def run() -> Response[Any]:
        with pool.connection() as conn:
            try:
                with conn.transaction():  # the retry and its stored response commit together
                    item = VIEW.retry(conn, key.seller, item_id)
                    if item is None:
                        raise NotFoundException()
                    stored = request.response(200, OutboundItemOut.of(item))
                    if idempotency_key is not None:
                        with conn.cursor() as cur:
                            idempotency.insert(cur, ledger.recorder.datastore.schema, stored)  # type: ignore[attr-defined]
            except psycopg.errors.UniqueViolation:  # the same key's first request committed meanwhile
                raise ResponseStoredError(idempotency_key or "") from None
        return idempotent.stored_response(stored)

    return idempotent.replay_or_run(ledger, request, run)


class ResolveIn(Strict, frozen=True):
    reason: Annotated[str, Meta(min_length=1, max_length=1000)]
    """how the marketplace was told some other way (e.g. in Seller Central), or why it need not be"""


@post(
    "/sync/outbound/{item_id:uuid}/resolve",
    operation_id="resolveOutbound",
    summary="Settle a dead item by hand, saying how (an event on its order); what waited for it goes out",
    tags=TAGS,
    opt={ROLES_OPT: SYNC_ROLES},
    status_code=200,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
    sync_to_thread=True,
)
def resolve_outbound(
    item_id: FromPath[UUID],
    data: JSONBody[ResolveIn],
    pool: NamedDependency[ConnectionPool[Any]],
    key: NamedDependency[KeyDetails],
    ledger: NamedDependency[Ledger],
    idempotency_key: NamedDependency[str | None],
    digest: NamedDependency[str],
) -> OutboundItemOut:
    with pool.connection() as conn:
        item = VIEW.get_item(conn, key.seller, item_id)
    if item is None:
        raise NotFoundException()
    resolved = resolve_dead_item(
        ledger, pool, key.seller, item, data.reason, context_for(key, idempotency_key, digest)
    )
    if resolved is None:
        raise NotFoundException()
    return OutboundItemOut.of(resolved)


def resolve_dead_item(
    ledger: Ledger, pool: ConnectionPool[Any], seller: str, item: OutboundItem, reason: str, ctx: Context
) -> OutboundItem | None:
    """Settle a dead item by hand (the API's resolve and the web page's): the order's event first (its
    attention clears, its history says who resolved it and how), then the row. None: the row is gone."""
    if item.state != DEAD:
        raise NotResolvableError(item.id, item.state)
    ledger.execute(
        ResolveSyncItem(
            ctx=ctx,
            order_id=item.order_id,
            action=SyncAction(item.action),
            reference=item.reference,
            reason=reason,
            seller=seller,
        )
    )
    with pool.connection() as conn:
        return VIEW.resolve(conn, seller, item.id, reason)


class DivergenceOut(Out, frozen=True):
    field: str
    ledger: str
    marketplace: str


class DiscrepancyOut(Out, frozen=True):
    order_id: UUID
    account_id: UUID | None
    marketplace: str
    marketplace_order_id: str
    divergences: list[DivergenceOut]
    found_at: datetime
    resolved_at: datetime | None
    open: bool


class DiscrepanciesOut(Out, frozen=True):
    items: list[DiscrepancyOut]


@get(
    "/sync/discrepancies",
    operation_id="listDiscrepancies",
    summary="Each order where the marketplace and the ledger disagree (`sync check`): the fields with both"
    " values, when it was found, and whether it was resolved; newest first",
    tags=TAGS,
    opt={ROLES_OPT: SYNC_ROLES},
    responses=problem_responses(401, 403, 422, 503),
    sync_to_thread=True,
)
def list_discrepancies(
    ledger: NamedDependency[Ledger],
    key: NamedDependency[KeyDetails],
    account_id: FromQuery[UUID | None] = None,
    marketplace: FromQuery[Marketplace | None] = None,
    open: FromQuery[bool | None] = None,  # the contract's name
) -> DiscrepanciesOut:
    found = ledger.discrepancies(key.seller, account_id=account_id, marketplace=marketplace, open_only=open)
    return DiscrepanciesOut(items=[msgspec.convert(d, DiscrepancyOut, from_attributes=True) for d in found])


ROUTES = [list_outbound, retry_outbound, resolve_outbound, list_discrepancies]

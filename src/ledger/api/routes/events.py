"""The change feed: `GET /v1/events` (pages, with a long poll) and `GET /v1/events/stream` (Server-Sent Events).

Both read the feed's index (ledger.feed.index) within the key's seller and show each event as the order's
history does (ledger.feed.items). A waiting request holds neither a database connection nor a worker thread:
it reads, then awaits the feed's wakeup (ledger.feed.wakeup) until an event may have arrived or its time ends.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

import anyio.to_thread
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from psycopg_pool import ConnectionPool

from ledger.aggregates.errors import InvalidInputError
from ledger.api.auth import READ_ORDERS, ROLES_OPT
from ledger.api.bodies.orders import Out
from ledger.api.consistency import read_side, view_pool
from ledger.api.errors import BadRequestError, problem_responses
from ledger.application.ledger import Ledger
from ledger.application.queries import KeyDetails
from ledger.feed import index
from ledger.feed.index import NAME as FEED
from ledger.feed.items import EVENT_TYPES, FeedItem, encode, items_of
from ledger.feed.wakeup import FeedWakeup

TAGS = ["events"]
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_WAIT = 30
MAX_POSITION = 2**62
STREAM_PAGE = 500
HEARTBEAT_SECONDS = 15.0

After = Annotated[
    int,
    QueryParameter(
        ge=0, le=MAX_POSITION, description="the `next_after` (or last `position`) already seen; 0: start"
    ),
]
Types = Annotated[
    str | None,
    QueryParameter(
        description=f"comma-separated event types, e.g. `Shipped,Cancelled` (of {', '.join(sorted(EVENT_TYPES))})"
    ),
]
OrderFilter = Annotated[UUID | None, QueryParameter(description="only this order's events")]


class EventPage(Out, frozen=True):
    items: list[FeedItem]
    next_after: int
    """The `after` of the next call (past what this seller may see, even when `items` is empty)."""


def parse_types(types: str | None) -> list[str]:
    if types is None:
        return []
    names = [name.strip() for name in types.split(",") if name.strip()]
    unknown = sorted(set(names) - EVENT_TYPES)
    if unknown or not names:
        msg = (
            f"unknown event type {', '.join(unknown) or '(none given)'}: use {', '.join(sorted(EVENT_TYPES))}"
        )
        raise InvalidInputError(msg, "types")
    return names


class Reader:
    """Reads pages of one seller's feed in a worker thread."""

    def __init__(
        self, request: Request[Any, Any, Any], seller: str, types: list[str], order_id: UUID | None
    ) -> None:
        side = read_side(request)  # the read replica when there is one
        self.ledger: Ledger = side.ledger
        self.pool: ConnectionPool[Any] = side.pool
        self.wakeup: FeedWakeup = request.app.state.feed_wakeup
        self.seller = seller
        self.types = types
        self.order_id = order_id

    def read(self, after: int, limit: int) -> EventPage:
        with self.pool.connection() as conn:
            page = index.read_page(conn, self.seller, after, limit, types=self.types, order_id=self.order_id)
        return EventPage(
            items=items_of(page.rows, self.ledger.mapper, self.ledger.personal_data),
            next_after=page.next_after,
        )

    async def read_soon(self, after: int, limit: int) -> EventPage:
        return await anyio.to_thread.run_sync(self.read, after, limit)


@get(
    "/events",
    operation_id="listEvents",
    summary="The seller's change feed: order events after a position, in log order, each once (long poll: `wait`)",
    tags=TAGS,
    opt={ROLES_OPT: READ_ORDERS},
    responses=problem_responses(401, 403, 422, 503),
)
async def list_events(
    request: Request[Any, Any, Any],
    key: NamedDependency[KeyDetails],
    read_position: NamedDependency[int | None],
    after: After = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    types: Types = None,
    order_id: OrderFilter = None,
    wait: Annotated[
        int,
        QueryParameter(
            ge=0, le=MAX_WAIT, description="seconds to hold an empty answer for an event to arrive"
        ),
    ] = 0,
) -> EventPage:
    reader = Reader(request, key.seller, parse_types(types), order_id)
    if read_position is not None:
        await anyio.to_thread.run_sync(view_pool, request, FEED, read_position)
    deadline = time.monotonic() + wait
    while True:
        ticket = reader.wakeup.ticket()
        page = await reader.read_soon(after, limit)
        remaining = deadline - time.monotonic()
        if page.items or remaining <= 0:
            return page
        after = page.next_after
        await reader.wakeup.wait(ticket, remaining)


@get(
    "/events/stream",
    operation_id="streamEvents",
    summary="The change feed as Server-Sent Events (`id:` position, `event:` type, `data:` the item), resumable",
    tags=TAGS,
    opt={ROLES_OPT: READ_ORDERS},
    responses=problem_responses(401, 403, 422, 503),
)
async def stream_events(
    request: Request[Any, Any, Any],
    key: NamedDependency[KeyDetails],
    after: Annotated[
        int | None,
        QueryParameter(ge=0, le=MAX_POSITION, description="start after this position (`Last-Event-ID` wins)"),
    ] = None,
    last_event_id: Annotated[
        str | None,
        HeaderParameter(name="Last-Event-ID", description="the last `id:` received: resume after it"),
    ] = None,
    types: Types = None,
    order_id: OrderFilter = None,
) -> ServerSentEvent:
    start = after or 0
    if last_event_id is not None and last_event_id.strip():
        raw = last_event_id.strip()
        if not raw.isdigit() or int(raw) > MAX_POSITION:
            raise BadRequestError("Last-Event-ID must be a position this stream sent", "Last-Event-ID")
        start = int(raw)
    reader = Reader(request, key.seller, parse_types(types), order_id)

    async def messages() -> AsyncIterator[ServerSentEventMessage]:
        position = start
        quiet_since = time.monotonic()
        while True:
            ticket = reader.wakeup.ticket()
            page = await reader.read_soon(position, STREAM_PAGE)
            for item in page.items:
                yield ServerSentEventMessage(data=encode(item).decode(), event=item.type, id=item.position)
            position = page.next_after
            if len(page.items) == STREAM_PAGE:
                continue
            if page.items:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
                yield ServerSentEventMessage(comment="heartbeat")
                quiet_since = time.monotonic()
            await reader.wakeup.wait(ticket, HEARTBEAT_SECONDS)

    return ServerSentEvent(messages())


ROUTES = [list_events, stream_events]

"""Read-your-writes: commands answer with the log position of what they recorded (`Ledger-Position`), and list
endpoints served by a projection accept `min_position` (or `Ledger-Min-Position`) and wait, bounded, until that
projection has applied it.

Why a wait and not a read of the write model: the lists (All Sales, the outbound queue) exist only as
projections, which follow the log asynchronously (tens of milliseconds behind under load). The wait uses the
projection's progress notifications (`projections.base.wait_for`), so it returns as soon as the position is
applied; past the bound the answer is 503 with Retry-After rather than a stale page.

With a read replica (LEDGER_READ_DATABASE_URL), All Sales, order reads and the change feed read there (`ReadSide`).
A read carrying a position first waits until the replica has replayed the primary's WAL as of the read's start
(eventstore/replica.py says why that covers the write), then, for a view, until the view's progress on the
replica reaches the position (polled: a standby cannot LISTEN). One bound, LEDGER_READ_MAX_WAIT, covers both
waits; past it the answer is 503 `replica-behind` (or `projection-behind`) with Retry-After.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Request
from litestar.datastructures import ResponseHeader
from litestar.params import HeaderParameter, QueryParameter
from psycopg_pool import ConnectionPool

from ledger.aggregates.errors import InvalidInputError
from ledger.api.errors import BadRequestError, ProjectionBehindError, ReplicaBehindError
from ledger.application.ledger import Ledger
from ledger.eventstore.replica import primary_mark, wait_replayed
from ledger.projections.base import last_position, wait_for

POSITION_HEADER = "Ledger-Position"
MIN_POSITION_HEADER = "Ledger-Min-Position"
DEFAULT_WAIT_SECONDS = 5.0
MAX_POSITION = 2**62


POSITION_RESPONSE_HEADERS = [
    ResponseHeader(
        name=POSITION_HEADER,
        description=(
            "the log position of the events this request recorded (or, for a replay, the log's head then): pass"
            " it as `min_position` to a list to read your own write"
        ),
        documentation_only=True,
        value="1",  # documentation only: makes the schema say "a string" (a whole number in it)
    )
]


def max_wait_seconds() -> float:
    """LEDGER_READ_MAX_WAIT: how long a read waits for `min_position` (seconds, default 5)."""
    try:
        value = float(os.environ.get("LEDGER_READ_MAX_WAIT", "") or DEFAULT_WAIT_SECONDS)
    except ValueError:
        return DEFAULT_WAIT_SECONDS
    return value if value > 0 else DEFAULT_WAIT_SECONDS


def position_headers(position: int | None) -> dict[str, str]:
    return {} if position is None else {POSITION_HEADER: str(position)}


def provide_min_position(
    min_position: Annotated[
        int | None,
        QueryParameter(
            ge=1,
            le=MAX_POSITION,
            description=(
                "wait (at most 5 s, then 503 with Retry-After) until this view includes the log position a"
                f" command answered with in `{POSITION_HEADER}`; past the log's end: 422"
            ),
        ),
    ] = None,
    min_position_header: Annotated[
        str | None,
        HeaderParameter(name=MIN_POSITION_HEADER, description="the same as `min_position`, as a header"),
    ] = None,
) -> int | None:
    if min_position is not None:
        return min_position
    if min_position_header is None:
        return None
    raw = min_position_header.strip()
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_POSITION:
        raise BadRequestError(
            f"{MIN_POSITION_HEADER} must be a log position (a whole number >= 1)", MIN_POSITION_HEADER
        )
    return int(raw)


@dataclass(frozen=True)
class ReadSide:
    """Where the reads that may come from a replica go: All Sales and the feed's index (`pool`), orders
    (`ledger`). Without a replica both are the primary's (the app's own pool and Ledger)."""

    pool: ConnectionPool[Any]
    ledger: Ledger
    replica: bool


def read_side(request: Request[Any, Any, Any]) -> ReadSide:
    side: ReadSide = request.app.state.read_side
    return side


def _wait_seconds(request: Request[Any, Any, Any]) -> float:
    return float(getattr(request.app.state, "read_wait_seconds", None) or max_wait_seconds())


def _past_the_end(position: int, head: int) -> InvalidInputError:
    msg = f"min_position {position} is past the end of the log ({head}): not a position this ledger gave"
    return InvalidInputError(msg, "min_position")


def _await_replica(request: Request[Any, Any, Any], side: ReadSide, position: int, seconds: float) -> float:
    """Wait until the replica holds everything the primary had committed when this read began (which includes
    `position`); return the seconds left of the bound, or raise ReplicaBehindError."""
    deadline = time.monotonic() + seconds
    primary: ConnectionPool[Any] = request.app.state.pool
    with primary.connection() as conn:
        mark = primary_mark(conn)
    if position > mark.head:  # a position we answered with is committed, so never past the head
        raise _past_the_end(position, mark.head)
    with side.pool.connection() as conn:
        if not wait_replayed(conn, mark.lsn, max(deadline - time.monotonic(), 0.0)):
            raise ReplicaBehindError(position, seconds)
    return max(deadline - time.monotonic(), 0.0)


def view_pool(request: Request[Any, Any, Any], projection: str, position: int | None) -> ConnectionPool[Any]:
    """The pool to read `projection`'s view from, once the view there has applied `position` (at once when
    None); else ProjectionBehindError or ReplicaBehindError."""
    side = read_side(request)
    if not side.replica:
        await_position(request, side.pool, projection, position)
        return side.pool
    if position is not None:
        seconds = _wait_seconds(request)
        remaining = _await_replica(request, side, position, seconds)
        with side.pool.connection() as conn:
            if not wait_for(conn, projection, position, remaining, listen=False):
                raise ProjectionBehindError(projection, position, seconds)
    return side.pool


def order_reader(request: Request[Any, Any, Any], position: int | None) -> Ledger:
    """The Ledger to read orders from, once it holds `position`. The primary's always does (a position is
    given out after its commit): there `position` is only checked against the log's head."""
    side = read_side(request)
    if position is None:
        return side.ledger
    if side.replica:
        _await_replica(request, side, position, _wait_seconds(request))
        return side.ledger
    with side.pool.connection() as conn, conn.cursor() as cur:
        head = last_position(cur)
    if position > head:
        raise _past_the_end(position, head)
    return side.ledger


def await_position(
    request: Request[Any, Any, Any], pool: ConnectionPool[Any], projection: str, position: int | None
) -> None:
    """Return once `projection` has applied `position` (at once when None); else raise ProjectionBehindError."""
    if position is None:
        return
    seconds = _wait_seconds(request)
    with pool.connection() as conn:
        with conn.cursor() as cur:
            head = last_position(cur)
        if position > head:  # a position we answered with is committed, so never past the head
            raise _past_the_end(position, head)
        if not wait_for(conn, projection, position, seconds):
            raise ProjectionBehindError(projection, position, seconds)

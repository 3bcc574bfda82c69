"""`/healthz` (the process answers) and `/readyz` (the database answers and every projection is within bounds).

`/readyz` asks the database on a new connection of its own, not a pooled one: while the server is down a pool
waits (for its timeout) to reconnect, and would answer late, or ready once the server is back; a new connection
is refused at once, so the answer is 503 with the reason for exactly as long as the server is down.

Readiness bounds (a load balancer takes the instance out while they are exceeded):
- `LEDGER_READY_MAX_LAG`: most events a projection may be behind the log's head (default 10000; 0 disables);
- `LEDGER_READY_MAX_LAG_SECONDS`: how long a projection may be behind without progress (default unset: off).
A 503 body names each projection behind and why. Tests set `app.state.ready_max_lag` / `ready_max_lag_seconds`.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import psycopg
from litestar import Request, Response, get
from litestar.di import NamedDependency
from psycopg_pool import ConnectionPool

from ledger.api.bodies.orders import HealthOut
from ledger.projections.base import ProjectionStatus, database_now
from ledger.projections.base import status as projection_status
from ledger.projections.registry import all_projections

TAGS = ["operations"]
DEFAULT_MAX_LAG = 10_000
CONNECT_TIMEOUT_SECONDS = 2


@get("/healthz", operation_id="health", summary="The process is up", tags=TAGS, sync_to_thread=False)
def healthz() -> HealthOut:
    return HealthOut(status="ok")


def _env_number(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = default
    return None if value is None or value <= 0 else value


def bounds(request: Request[Any, Any, Any]) -> tuple[float | None, float | None]:
    """(most events behind, most seconds behind without progress); None: that bound is off."""
    state = request.app.state
    events = getattr(state, "ready_max_lag", None) or _env_number("LEDGER_READY_MAX_LAG", DEFAULT_MAX_LAG)
    seconds = getattr(state, "ready_max_lag_seconds", None) or _env_number(
        "LEDGER_READY_MAX_LAG_SECONDS", None
    )
    return events, seconds


def behind(
    row: ProjectionStatus, max_events: float | None, max_seconds: float | None, now: datetime
) -> str | None:
    """Why this projection makes the instance unready, or None."""
    if row.lag == 0:
        return None
    if max_events is not None and row.lag > max_events:
        return f"{row.lag} events behind (bound {max_events:g})"
    if max_seconds is not None:
        if row.updated_at is None:
            return f"{row.lag} events behind and never run"
        stalled = (now - row.updated_at).total_seconds()
        if stalled > max_seconds:
            return f"{row.lag} events behind, no progress for {stalled:.0f} s (bound {max_seconds:g} s)"
    return None


@get(
    "/readyz",
    operation_id="ready",
    summary="The database is reachable and each projection's lag (events) is within the readiness bounds",
    tags=TAGS,
    sync_to_thread=True,
)
def readyz(
    request: Request[Any, Any, Any], pool: NamedDependency[ConnectionPool[Any]]
) -> Response[HealthOut]:
    conninfo = pool.conninfo() if callable(pool.conninfo) else pool.conninfo
    kwargs = (pool.kwargs if isinstance(pool.kwargs, dict) else {}) | {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "autocommit": True,
    }
    try:
        with psycopg.connect(conninfo, **kwargs) as conn:
            rows = projection_status(conn, all_projections())
            clock = database_now(conn)
    except psycopg.Error as exc:
        reason = (
            "PostgreSQL does not accept connections"
            if isinstance(exc, psycopg.OperationalError)
            else f"PostgreSQL refused the readiness query ({type(exc).__name__})"
        )
        body = HealthOut(status="unavailable", database="unreachable", reason=reason)
        return Response(body, status_code=503, headers={"Retry-After": "5"})
    lags = {row.name: row.lag for row in rows}
    max_events, max_seconds = bounds(request)
    late = {row.name: why for row in rows if (why := behind(row, max_events, max_seconds, clock)) is not None}
    if late:
        body = HealthOut(status="unavailable", database="reachable", projections=lags, behind=late)
        return Response(body, status_code=503, headers={"Retry-After": "5"})
    return Response(HealthOut(status="ok", database="reachable", projections=lags))


ROUTES = [healthz, readyz]

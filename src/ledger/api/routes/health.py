"""`/healthz` (the process answers) and `/readyz` (the database answers, projection lag)."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.di import NamedDependency
from psycopg_pool import ConnectionPool

from ...projections.base import status as projection_status
from ...projections.registry import all_projections
from ..bodies import HealthOut

TAGS = ["operations"]


@get("/healthz", operation_id="health", summary="The process is up", tags=TAGS, sync_to_thread=False)
def healthz() -> HealthOut:
    return HealthOut(status="ok")


@get(
    "/readyz",
    operation_id="ready",
    summary="The database is reachable; each projection's lag in events",
    tags=TAGS,
    sync_to_thread=True,
)
def readyz(pool: NamedDependency[ConnectionPool[Any]]) -> Response[HealthOut]:
    try:
        with pool.connection(timeout=2) as conn:
            lags = {row.name: row.lag for row in projection_status(conn, all_projections())}
    except Exception:
        body = HealthOut(status="unavailable", database="unreachable")
        return Response(body, status_code=503, headers={"Retry-After": "5"})
    return Response(HealthOut(status="ok", database="reachable", projections=lags))


ROUTES = [healthz, readyz]

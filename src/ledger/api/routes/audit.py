"""Audit: recompute an order's hash chain from the stored events table (`ledger verify --order` over HTTP).

The check reads PostgreSQL directly (verification.py), not through the application, so that it sees the rows as
they are stored; it answers 200 with `valid: false` for a broken chain (the finding is the answer, not an error).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromPath
from psycopg_pool import ConnectionPool

from ledger.aggregates.values import Role
from ledger.api.auth import ROLES_OPT
from ledger.api.bodies.orders import Out
from ledger.api.errors import problem_responses
from ledger.application.ledger import Ledger
from ledger.application.queries import KeyDetails
from ledger.audit.verification import verify_order

VERIFY = frozenset({Role.ADMIN, Role.AUDITOR})


class VerificationOut(Out, frozen=True):
    valid: bool
    events_checked: int
    first_invalid_version: int | None
    problem: str | None  # why the first invalid version is invalid; null when valid


@get(
    "/orders/{order_id:uuid}/verification",
    operation_id="verifyOrder",
    summary="Recompute the order's hash chain from the stored events (and the checkpoints that sealed them)",
    tags=["audit"],
    opt={ROLES_OPT: VERIFY},
    responses=problem_responses(401, 403, 404, 503),
    sync_to_thread=True,
)
def order_verification(
    order_id: FromPath[UUID],
    ledger: NamedDependency[Ledger],
    pool: NamedDependency[ConnectionPool[Any]],
    key: NamedDependency[KeyDetails],
) -> VerificationOut:
    with pool.connection() as conn:
        result = verify_order(conn, ledger.mapper, order_id, seller=key.seller)
    return VerificationOut(
        valid=result.valid,
        events_checked=result.events_checked,
        first_invalid_version=result.first_invalid_version,
        problem=result.problem,
    )


ROUTES = [order_verification]

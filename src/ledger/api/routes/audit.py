"""Audit: an order's hash chain recomputed from the stored events table (`ledger verify --order` over HTTP),
the newest signed checkpoint, the keys that verify it, and an order's bundle for offline verification.

The checks read PostgreSQL directly (verification.py), not through the application, so that they see the rows
as they are stored; a broken chain answers 200 with `valid: false` (the finding is the answer, not an error).
The public keys are the process's own (its signing key and the retired keys it trusts), never the database's.
"""

from __future__ import annotations

import base64
from typing import Any
from uuid import UUID

from litestar import Request, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from psycopg_pool import ConnectionPool

from ledger.aggregates.values import Role
from ledger.api.auth import ROLES_OPT
from ledger.api.bodies.orders import Out
from ledger.api.errors import problem_responses
from ledger.application.ledger import Ledger
from ledger.application.queries import KeyDetails
from ledger.audit.bundle import Bundle, build_bundle
from ledger.audit.checkpoints import SignedCheckpoint, latest_checkpoint
from ledger.audit.keys import AuditTrust, public_pem, raw_public
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


class PublicKeyOut(Out, frozen=True):
    key_id: str  # the key's fingerprint: 32 hex digits of SHA-256 over its raw 32 bytes
    algorithm: str
    public_key: str  # base64 of the raw 32 bytes
    pem: str
    signing: bool  # whether this process signs new checkpoints with it


class PublicKeysOut(Out, frozen=True):
    keys: list[PublicKeyOut]


def _trust(request: Request[Any, Any, Any]) -> AuditTrust:
    trust: AuditTrust = request.app.state.audit_trust
    return trust


@get(
    "/audit/public-keys",
    operation_id="listAuditPublicKeys",
    summary="The Ed25519 public keys that verify the signed checkpoints (keep a copy outside the ledger)",
    tags=["audit"],
    opt={ROLES_OPT: VERIFY},
    responses=problem_responses(401, 403),
)
async def public_keys(request: Request[Any, Any, Any]) -> PublicKeysOut:
    trust = _trust(request)
    return PublicKeysOut(
        keys=[
            PublicKeyOut(
                key_id=kid,
                algorithm="Ed25519",
                public_key=base64.b64encode(raw_public(public)).decode("ascii"),
                pem=public_pem(public).decode("ascii"),
                signing=kid == trust.signer_id,
            )
            for kid, public in sorted(trust.trusted.items())
        ]
    )


@get(
    "/audit/checkpoints/latest",
    operation_id="getLatestAuditCheckpoint",
    summary="The newest signed checkpoint: save it outside the ledger and verify against it later",
    tags=["audit"],
    opt={ROLES_OPT: VERIFY},
    responses=problem_responses(401, 403, 404, 503),
    sync_to_thread=True,
)
def latest(pool: NamedDependency[ConnectionPool[Any]]) -> SignedCheckpoint:
    with pool.connection() as conn:
        checkpoint = latest_checkpoint(conn)
    if checkpoint is None:
        raise NotFoundException("no checkpoint has been signed yet")
    return checkpoint


@get(
    "/orders/{order_id:uuid}/audit-bundle",
    operation_id="getOrderAuditBundle",
    summary="The order's stored events with their hashes, the signed checkpoints that sealed them and the "
    "Merkle paths: `ledger audit verify-bundle` checks it offline",
    tags=["audit"],
    opt={ROLES_OPT: VERIFY},
    responses=problem_responses(401, 403, 404, 503),
    sync_to_thread=True,
)
def audit_bundle(
    order_id: FromPath[UUID],
    ledger: NamedDependency[Ledger],
    pool: NamedDependency[ConnectionPool[Any]],
    key: NamedDependency[KeyDetails],
) -> Bundle:
    with pool.connection() as conn:
        verify_order(conn, ledger.mapper, order_id, seller=key.seller)  # 404 unless the order is the seller's
        return build_bundle(conn, ledger.mapper, order_id)


ROUTES = [order_verification, public_keys, latest, audit_bundle]

"""Bearer API keys, roles and the seller a request acts for.

A guard authenticates every `/v1` request before its body is read (401 for a missing, unknown or revoked key)
and checks the route's roles (403); routes then get the key as the `key` dependency and scope every read and
command to `key.seller`, so another seller's order or account is a 404 like a missing one.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler

from ledger.aggregates.values import Context, Role, Source
from ledger.application.ledger import Ledger
from ledger.application.queries import KeyDetails

ROLES_OPT = "roles"
STATE_KEY = "api_key"

ADMIN = frozenset({Role.ADMIN})
READ_ACCOUNTS = frozenset(Role)
READ_ORDERS = frozenset({Role.ADMIN, Role.OPERATOR, Role.AUDITOR, Role.FINANCE})
READ_HISTORY = frozenset({Role.ADMIN, Role.OPERATOR, Role.AUDITOR})
IMPORT_ORDERS = frozenset({Role.ADMIN, Role.OPERATOR, Role.INTEGRATION})
CHANGE_ORDERS = frozenset({Role.ADMIN, Role.OPERATOR})
RECORD_DISPUTES = frozenset({Role.ADMIN, Role.OPERATOR, Role.INTEGRATION})


def bearer_secret(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, secret = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return secret.strip()


def raw_header(scope: Any, name: bytes) -> str | None:
    """The first value of a request header (`name` lower case, as ASGI gives them), without building Litestar's
    `Headers` of the whole request."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def authorize(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Guard: the request's key must be active and its role among the route's `roles`."""
    secret = bearer_secret(raw_header(connection.scope, b"authorization"))
    if secret is None:
        raise NotAuthorizedException("send an API key as `Authorization: Bearer <key>`")
    ledger: Ledger = connection.app.state.ledger
    # A recently authenticated key is answered from memory, without a hop to a worker thread.
    key = ledger.cached_key(secret) or await anyio.to_thread.run_sync(ledger.authenticate, secret)
    if key is None:
        raise NotAuthorizedException("unknown or revoked API key")
    roles: frozenset[Role] = handler.opt.get(ROLES_OPT, frozenset())
    if Role(key.role) not in roles:
        raise PermissionDeniedException(f"the {key.role} role may not do this")
    connection.scope["state"][STATE_KEY] = key  # the request's `state`, without a `State` object per access


def provide_key(request: Request[Any, Any, Any]) -> KeyDetails:
    key: KeyDetails = request.scope["state"][STATE_KEY]
    return key


def actor_of(key: KeyDetails) -> str:
    """Who the events say acted: the key's name, or the key's id when it has none."""
    return key.name or f"key:{key.key_id}"


def context_for(key: KeyDetails, idempotency_key: str | None = None, digest: str | None = None) -> Context:
    return Context(
        actor=actor_of(key), source=Source.API, idempotency_key=idempotency_key, request_digest=digest
    )

"""What routes are given (`Provide`): the Ledger, the read pool, the caller's key, and the command headers."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any

from litestar import Request
from litestar._kwargs.cleanup import DependencyCleanupGroup
from litestar._kwargs.dependencies import resolve_dependency
from litestar._kwargs.kwargs_model import KwargsModel
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.params import HeaderParameter
from psycopg_pool import ConnectionPool

from ledger.api.auth import provide_key
from ledger.api.consistency import provide_min_position
from ledger.api.errors import BadRequestError
from ledger.application.ledger import Ledger

MAX_IDEMPOTENCY_KEY = 200
_IF_MATCH = re.compile(r'^(?:W/)?"?(\d{1,18})"?$')


def provide_ledger(request: Request[Any, Any, Any]) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


def provide_pool(request: Request[Any, Any, Any]) -> ConnectionPool[Any]:
    pool: ConnectionPool[Any] = request.app.state.pool
    return pool


# Dependencies share one namespace of parameter names per route: each header gets a name of its own.
def provide_idempotency_key(
    idempotency_key_header: Annotated[
        str | None,
        HeaderParameter(
            name="Idempotency-Key",
            description="the same key with the same body replays the first response; another body is 422",
        ),
    ] = None,
) -> str | None:
    if idempotency_key_header is None:
        return None
    idempotency_key_header = idempotency_key_header.strip()
    if (
        not idempotency_key_header
        or len(idempotency_key_header) > MAX_IDEMPOTENCY_KEY
        or not idempotency_key_header.isprintable()
    ):
        msg = f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters"
        raise BadRequestError(msg, "Idempotency-Key")
    return idempotency_key_header


def provide_expected_version(
    if_match_header: Annotated[
        str | None,
        HeaderParameter(name="If-Match", description='"<version>": refused with 412 if the order moved on'),
    ] = None,
) -> int | None:
    """`If-Match: "<version>"` (an ETag this API gave out); absent or `*`: no check."""
    if if_match_header is None or if_match_header.strip() == "*":
        return None
    match = _IF_MATCH.match(if_match_header.strip())
    if match is None:
        raise BadRequestError('If-Match must be an ETag of this API: "<version>"', "If-Match")
    return int(match.group(1))


async def provide_digest(request: Request[Any, Any, Any]) -> str:
    """The fingerprint of the request's method, path and raw body: the same Idempotency-Key with another of
    any of them is refused."""
    return request_digest(request.scope, await request.body())


def request_digest(scope: Any, body: bytes) -> str:
    """`provide_digest` of a request's scope and its body, read already (api/lean.py)."""
    # the path as `request.url.path` gives it, without parsing a URL
    digest = hashlib.sha256(f"{scope['method']} {scope.get('root_path', '')}{scope['path']}\n".encode())
    digest.update(body)
    return digest.hexdigest()


async def _resolve_in_order(
    self: KwargsModel, connection: ASGIConnection[Any, Any, Any, Any], kwargs: dict[str, Any]
) -> DependencyCleanupGroup:
    """Litestar's `KwargsModel.resolve_dependencies`, one dependency after another.

    Litestar resolves the independent dependencies of a route concurrently, in an anyio task group: for a
    command's five (ledger, key, two headers, the body's digest) that was about a tenth of the server's CPU per
    command (BENCHMARKS.md), to run functions that return at once. Ours do no waiting but the body read, so in
    order is as fast and cheaper; an error is still the first dependency's that fails.
    The providers that take the request alone are called with it directly: Litestar would first convert a
    `{"request": ...}` through the provider's signature model, per request."""
    cleanup_group = DependencyCleanupGroup()
    for batch in self.dependency_batches:
        for dependency in batch:
            fn = dependency.provide.dependency
            if fn in _OF_THE_REQUEST:  # takes the request alone: no signature model to fill
                value = fn(connection)
                kwargs[dependency.key] = await value if fn is provide_digest else value
            else:
                await resolve_dependency(dependency, connection, kwargs, cleanup_group)
    return cleanup_group


KwargsModel.resolve_dependencies = _resolve_in_order  # type: ignore[method-assign]
_OF_THE_REQUEST: frozenset[Any] = frozenset({provide_ledger, provide_pool, provide_key, provide_digest})


DEPENDENCIES = {
    "ledger": Provide(provide_ledger, sync_to_thread=False),
    "pool": Provide(provide_pool, sync_to_thread=False),
    "key": Provide(provide_key, sync_to_thread=False),
    "idempotency_key": Provide(provide_idempotency_key, sync_to_thread=False),
    "expected_version": Provide(provide_expected_version, sync_to_thread=False),
    "digest": Provide(provide_digest),
    "read_position": Provide(provide_min_position, sync_to_thread=False),
}

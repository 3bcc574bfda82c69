"""`Idempotency-Key` for POSTs whose response is stored whole (ledger.eventstore.idempotency): accounts, bulk import, an
operator's retry. The first response's status and bytes are what a retry gets; another request under the key
(another operation or another body) is 422 `idempotency-key-reused`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from litestar import Response
from litestar.datastructures import ResponseHeader

from ledger.application.errors import IdempotencyKeyReusedError, ResponseStoredError
from ledger.application.ledger import Ledger
from ledger.eventstore.idempotency import StoredResponse

T = TypeVar("T")
JSON = "application/json"
REPLAYED = {"Idempotent-Replayed": "true"}
"""The header of a response that answers a request made before under its Idempotency-Key."""
REPLAYED_HEADER = ResponseHeader(
    name="Idempotent-Replayed",
    description="`true`: the first response to this request under its Idempotency-Key, again; nothing new recorded",
    documentation_only=True,
    value="true",
)


class Request(msgspec.Struct, frozen=True):
    """Who asks, under which key, for what (the route's operation id), with which body (its digest)."""

    seller: str
    key: str | None
    operation: str
    digest: str

    def response(self, status: int, body: msgspec.Struct) -> StoredResponse:
        """The response to send and, under a key, to store: the first answer and its replays are the same bytes."""
        return StoredResponse(self.seller, self.key or "", self.operation, self.digest, status, encode(body))


def encode(body: msgspec.Struct) -> bytes:
    return msgspec.json.encode(body)


def replay_or_run(ledger: Ledger, request: Request, run: Callable[[], Response[Any]]) -> Response[Any]:
    """The stored response under the key, or `run()` (which stores its response with its effect)."""
    if request.key is None:
        return run()
    stored = ledger.stored_response(request.seller, request.key)
    if stored is None:
        try:
            return run()
        except ResponseStoredError:  # a concurrent request under the same key won: answer as it did
            stored = ledger.stored_response(request.seller, request.key)
            assert stored is not None
    if stored.operation != request.operation or stored.digest != request.digest:
        msg = f"idempotency key {request.key!r} was used for a different request"
        raise IdempotencyKeyReusedError(msg, "Idempotency-Key")
    response = stored_response(stored)
    response.headers.update(REPLAYED)
    return response


def kept_elsewhere(ledger: Ledger, request: Request, run: Callable[[], T]) -> T:
    """`run()` for an endpoint that keeps its own replays (a settlement upload: finance/reconcile.py) under a
    key that is still the seller's across endpoints: refused if the key was used on another endpoint, and,
    once run, marked as this endpoint's (an empty body: this endpoint never answers from the row)."""
    if request.key is None:
        return run()
    stored = ledger.stored_response(request.seller, request.key)
    if stored is not None and stored.operation != request.operation:
        msg = f"idempotency key {request.key!r} was used for a different request"
        raise IdempotencyKeyReusedError(msg, "Idempotency-Key")
    result = run()
    ledger.store_response(
        StoredResponse(request.seller, request.key, request.operation, request.digest, 201, b"")
    )
    return result


def stored_response(stored: StoredResponse) -> Response[Any]:
    """The stored bytes as they are (the route's declared body type documents their shape)."""
    return Response(content=stored.body, status_code=stored.status, media_type=JSON)

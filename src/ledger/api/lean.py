"""The lean path of the order commands: the same checks, the same function, the same response, less framework.

An order command (`routes/orders.command`) is the request this service answers most, and most of its CPU went to
Litestar's per-request machinery rather than to the command (issue 17: routing and kwargs, a signature model
per dependency, an anyio hop to a thread, the response's objects and send wrappers). `lean_commands` is the
route-level middleware of those routes. It runs what Litestar would run, in the same order, with the same
functions, and only skips the generic parts:

1. the route's guard (`guards.v1_guard`'s steps, in its order: the key and its role; the body, read from
   `receive` with Litestar's limits and kept where Litestar's `Request` finds it, then decoded strictly; the query);
2. the route's arguments, from the path parameters, the strictly decoded body (the guard's own decoding: on
   success it equals Litestar's lenient one), and the providers of `api.dependencies` called directly;
3. the route's own function, in a thread of this module's pool (the context copied, like anyio does; a plain
   queue of threads instead of the executor cost less per hand-off in a micro-benchmark, yet more CPU in the
   server's command threads, so the executor stays: BENCHMARKS.md);
4. the function's `Response`, encoded as Litestar's `to_response` encodes it (the same status, the same headers
   in the same order, the same body bytes), sent by `observability.direct_send` past the send wrappers (the
   metrics still see its status, and it carries the same X-Request-Id). A response this module does not know how
   to make byte for byte (cookies, a background task, other media types, a hook on the route) is Litestar's.

Anything else goes to Litestar's path unchanged (`app`): a handler whose parameters are not a command's, a route
with other guards or hooks, an empty body (Litestar's 400), a command header sent twice. The request body, once
read, is kept in the scope where Litestar's `Request` reads it, so the fallback does not read it again. An
exception is Litestar's to answer: the middleware is wrapped in its exception handler, which answers problem
details as for any other route.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Response
from litestar._asgi.utils import wrap_in_exception_handler
from litestar.exceptions import ClientException, InternalServerException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.serialization import get_serializer
from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState

from ledger.api.auth import STATE_KEY, authorize, raw_header
from ledger.api.dependencies import provide_expected_version, provide_idempotency_key, request_digest
from ledger.api.guards import v1_guard
from ledger.api.observability import direct_send
from ledger.api.query_params import refuse_unknown_query_parameters
from ledger.api.strict_body import decode_strictly, strict_decoder

COMMAND_PARAMETERS = frozenset({"data", "ledger", "key", "idempotency_key", "expected_version", "digest"})
"""What a command's function takes besides its path parameters (routes/orders.py)."""
THREADS = 40
"""Threads that run command functions: as many as anyio's default limit, which Litestar's path uses."""
JSON = "application/json"

_functions: dict[str, Callable[..., Any]] = {}
_parameters: dict[str, frozenset[str]] = {}
_ONCE = object()
_ENTITY_HEADERS = frozenset({"content-type", "content-length", "x-request-id"})
_executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="ledger-command")


def register(operation_id: str, fn: Callable[..., Any]) -> None:
    """Let the route `operation_id` take the lean path to `fn` (its own function, undecorated)."""
    _functions[operation_id] = fn
    _parameters[operation_id] = frozenset(inspect.signature(fn).parameters)


def _header(scope: Scope, name: bytes) -> str | object | None:
    """A header's only value, None when absent, `_ONCE` when it is sent more than once."""
    found: str | None = None
    for key, value in scope["headers"]:
        if key == name:
            if found is not None:
                return _ONCE
            found = value.decode("latin-1")
    return found


@dataclass(frozen=True)
class _Route:
    """What the lean path needs of a route handler, resolved on its first request."""

    fn: Callable[..., Any] | None  # None: the route takes Litestar's path
    decoder: msgspec.json.Decoder[Any] | None
    max_body: float
    encoder: msgspec.json.Encoder | None  # None: Litestar's `to_response` makes every answer
    media_type: str  # the route's ("" unless given): a response's own comes first, then this, then JSON


_routes: dict[Any, _Route] = {}


def _route(handler: Any, path_params: dict[str, Any]) -> _Route:
    route = _routes.get(handler)
    if route is None:
        route = _routes[handler] = _resolve(handler, path_params)
    return route


def _resolve(handler: Any, path_params: dict[str, Any]) -> _Route:
    fn = _functions.get(handler.operation_id)
    if (
        fn is None
        or _parameters[handler.operation_id] != COMMAND_PARAMETERS.union(path_params)
        or handler.resolve_before_request() is not None
        or handler.resolve_after_response() is not None
        or tuple(handler.resolve_guards()) != (v1_guard,)
    ):
        return _Route(None, None, math.inf, None, "")
    plain = (
        not any(layer.after_request for layer in handler.ownership_layers)
        and handler.background is None
        and handler.resolve_return_dto() is None
        and not any(not c.documentation_only for c in handler.resolve_response_cookies())
        and all(h.documentation_only for h in handler.resolve_response_headers())
    )
    encoder = (
        msgspec.json.Encoder(enc_hook=get_serializer(handler.resolve_type_encoders())) if plain else None
    )
    max_body = handler.resolve_request_max_body_size() or math.inf
    return _Route(fn, strict_decoder(handler), max_body, encoder, str(handler.media_type or ""))


async def _read_body(scope: Scope, receive: Receive, max_body: float) -> bytes:
    """Litestar's `Request.body()`: the same limits and errors, kept in the scope where a `Request` finds it."""
    state = ScopeState.from_scope(scope)
    if isinstance(kept := state.body, bytes):
        return kept
    announced = raw_header(scope, b"content-length")
    if announced is not None:
        try:
            length = int(announced)
        except ValueError:
            raise ClientException(f"Invalid content-length: {announced!r}") from None
        if length > max_body:
            raise RequestEntityTooLarge
    chunks: list[bytes] = []
    total = 0
    while event := await receive():
        if event["type"] == "http.request":
            chunk = event["body"]
            if chunk:
                total += len(chunk)
                if total > max_body:
                    raise RequestEntityTooLarge
                chunks.append(chunk)
            if not event.get("more_body", False):
                break
        if event["type"] == "http.disconnect":
            raise InternalServerException("client disconnected prematurely")
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    state.body = body
    return body


def _encoded(route: _Route, result: Any, scope: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
    """The start message's status and headers and the body that Litestar's `to_response` would make of
    `result`; None when it is not a response this module makes byte for byte."""
    status: int | None = getattr(result, "status_code", None)
    if (
        route.encoder is None
        or status is None
        or type(result) is not Response
        or result.background is not None
        or result.cookies
        or result.response_type_encoders
        or (result.media_type or route.media_type or JSON) != JSON
        or not 200 <= status < 400
        or status in {204, 304}
        or scope["method"] == "HEAD"
    ):
        return None
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in result.headers.items()
    ]
    if any(name.decode("latin-1") in _ENTITY_HEADERS for name, _ in headers):
        return None
    content = result.content
    try:
        body = content if isinstance(content, bytes) else route.encoder.encode(content)
    except (TypeError, ValueError, msgspec.EncodeError):
        return None  # Litestar's path raises its own error for it
    headers.append((b"content-type", b"application/json"))
    headers.append((b"content-length", str(len(body)).encode("latin-1")))
    return status, headers, body


def lean_commands(app: ASGIApp) -> ASGIApp:
    """The route-level middleware of the order commands (see the module's doc)."""

    async def lean(scope: Any, receive: Receive, send: Send) -> None:
        handler: Any = scope["route_handler"]
        path_params: dict[str, Any] = scope["path_params"]
        route = _route(handler, path_params)
        if route.fn is None or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        request = handler.resolve_request_class()(scope=scope, receive=receive, send=send)
        # v1_guard's steps in its order: 401/403, then the body (413, 415, 400, 422), then the query (400)
        await authorize(request, handler)
        data: Any = None
        body = b""
        if route.decoder is not None:
            body = await _read_body(scope, receive, route.max_body)
            if body:
                data = decode_strictly(route.decoder, body, scope)
        if scope.get("query_string"):
            await refuse_unknown_query_parameters(request, handler)
        idempotency_key = _header(scope, b"idempotency-key")
        if_match = _header(scope, b"if-match")
        if data is None or idempotency_key is _ONCE or if_match is _ONCE:
            await app(scope, receive, send)  # Litestar's own answer (the body is kept in the scope)
            return
        kwargs = dict(path_params)
        kwargs["data"] = data
        kwargs["ledger"] = scope["litestar_app"].state.ledger  # provide_ledger
        kwargs["key"] = scope["state"][STATE_KEY]  # provide_key
        kwargs["idempotency_key"] = provide_idempotency_key(idempotency_key)  # type: ignore[arg-type]
        kwargs["expected_version"] = provide_expected_version(if_match)  # type: ignore[arg-type]
        kwargs["digest"] = request_digest(scope, body)
        call = functools.partial(contextvars.copy_context().run, route.fn, **kwargs)
        result = await asyncio.get_running_loop().run_in_executor(_executor, call)
        encoded = _encoded(route, result, scope)
        if encoded is None:
            response = await handler.to_response(app=scope["litestar_app"], data=result, request=request)
            await response(scope, receive, send)
            return
        status, headers, content = encoded
        await direct_send(scope, send, status, headers, content)

    return wrap_in_exception_handler(lean)

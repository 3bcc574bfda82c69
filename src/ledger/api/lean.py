"""The lean path of the order commands: the same checks, the same function, the same response, less framework.

An order command (`routes/orders.command`) is the request this service answers most, and most of its CPU went to
Litestar's per-request machinery rather than to the command (issue 17: routing and kwargs, a signature model
per dependency, an anyio hop to a thread). `lean_commands` is the route-level middleware of those routes. It
runs what Litestar would run, in the same order, with the same functions, and only skips the generic parts:

1. the route's guards (`authorize_connection`: the key, its role, the JSON body read strictly, the query);
2. the route's arguments, from the path parameters, the strictly decoded body (the guard's own decoding: on
   success it equals Litestar's lenient one), and the providers of `api.dependencies` called directly;
3. the route's own function, in a thread of this module's pool (the context copied, like anyio does);
4. Litestar's own `to_response` for the function's `Response`, so the answer is the same bytes and headers.

Anything else goes to Litestar's path unchanged (`app`): a handler whose parameters are not a command's, an
empty body (Litestar's 400), a command header sent twice. The request body, once read, is kept in the scope by
Litestar's `Request`, so the fallback reads it again from there. An exception is Litestar's to answer: the
middleware is wrapped in its exception handler, which answers problem details as for any other route.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from litestar._asgi.utils import wrap_in_exception_handler
from litestar.types import ASGIApp, Receive, Scope, Send

from ledger.api.auth import provide_key
from ledger.api.dependencies import (
    provide_digest,
    provide_expected_version,
    provide_idempotency_key,
    provide_ledger,
)
from ledger.api.strict_body import STRICT_BODY

COMMAND_PARAMETERS = frozenset({"data", "ledger", "key", "idempotency_key", "expected_version", "digest"})
"""What a command's function takes besides its path parameters (routes/orders.py)."""
THREADS = 40
"""Threads that run command functions: as many as anyio's default limit, which Litestar's path uses."""

_functions: dict[str, Callable[..., Any]] = {}
_parameters: dict[str, frozenset[str]] = {}
_executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="ledger-command")
_ONCE = object()


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


def lean_commands(app: ASGIApp) -> ASGIApp:
    """The route-level middleware of the order commands (see the module's doc)."""

    async def lean(scope: Any, receive: Receive, send: Send) -> None:
        handler: Any = scope["route_handler"]
        fn = _functions.get(handler.operation_id)
        path_params: dict[str, Any] = scope["path_params"]
        if (
            fn is None
            or scope["method"] != "POST"
            or _parameters[handler.operation_id] != COMMAND_PARAMETERS.union(path_params)
            or handler.resolve_before_request() is not None
        ):
            await app(scope, receive, send)
            return
        request = handler.resolve_request_class()(scope=scope, receive=receive, send=send)
        await handler.authorize_connection(request)  # 401, 403, 415, 400, 422 as on Litestar's path
        data = scope["state"].pop(STRICT_BODY, None)
        idempotency_key = _header(scope, b"idempotency-key")
        if_match = _header(scope, b"if-match")
        if data is None or idempotency_key is _ONCE or if_match is _ONCE:
            await app(scope, receive, send)  # Litestar's own answer (the body is kept in the scope)
            return
        kwargs = dict(path_params)
        kwargs["data"] = data
        kwargs["ledger"] = provide_ledger(request)
        kwargs["key"] = provide_key(request)
        kwargs["idempotency_key"] = provide_idempotency_key(idempotency_key)  # type: ignore[arg-type]
        kwargs["expected_version"] = provide_expected_version(if_match)  # type: ignore[arg-type]
        kwargs["digest"] = await provide_digest(request)
        call = functools.partial(contextvars.copy_context().run, fn, **kwargs)
        result = await asyncio.get_running_loop().run_in_executor(_executor, call)
        response = await handler.to_response(app=scope["litestar_app"], data=result, request=request)
        await response(scope, receive, send)
        if after_response := handler.resolve_after_response():
            await after_response(request)

    return wrap_in_exception_handler(lean)

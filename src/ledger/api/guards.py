"""The one guard of every `/v1` route: the key and its role, the JSON body read strictly, the known query
parameters, in that order (auth.authorize, strict_body.strict_json_body, query_params).

One guard rather than three, and given the route handler itself: Litestar hands every guard a fresh copy of
the handler (`copy(handler)`, per guard, per request: about 5% of a command's CPU, issue 17). Our guards only
read the handler (its `opt`, its signature), so `authorize_connection` below passes it as it is."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from ledger.api.auth import authorize
from ledger.api.query_params import refuse_unknown_query_parameters
from ledger.api.strict_body import strict_json_body


async def v1_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """401/403 first (before the body is read), then 415/400/422 for the body, then 400 for the query."""
    await authorize(connection, handler)
    await strict_json_body(connection, handler)
    await refuse_unknown_query_parameters(connection, handler)


async def _authorize_connection(
    self: BaseRouteHandler, connection: ASGIConnection[Any, Any, Any, Any]
) -> None:
    """Litestar's `BaseRouteHandler.authorize_connection`: every guard in scope, in order, given the handler
    (not a copy of it: no guard of this app changes its handler)."""
    for guard in self.resolve_guards():  # made async by Litestar (`ensure_async_callable`)
        await guard(connection, self)  # type: ignore[misc]


BaseRouteHandler.authorize_connection = _authorize_connection  # type: ignore[method-assign]

"""Unknown query parameters are 400 on every route: a typo in a filter (`?stauts=shipped`) must never silently
widen a result. The parameters a route knows are those its handler and its dependencies declare."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.routes import HTTPRoute

from ledger.api.errors import BadRequestError

_KNOWN_KEY = "known_query_parameters"


def _known(app: Litestar) -> dict[BaseRouteHandler, frozenset[str]]:
    """Each HTTP handler's query parameters, read once from the kwargs models Litestar built at start-up."""
    known: dict[BaseRouteHandler, frozenset[str]] | None = app.state.get(_KNOWN_KEY)
    if known is None:
        known = {
            handler: frozenset(p.field_alias for p in model.expected_query_params)
            for route in app.routes
            if isinstance(route, HTTPRoute)
            for handler, model in route.route_handler_map.values()
        }
        app.state[_KNOWN_KEY] = known
    return known


async def refuse_unknown_query_parameters(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard: every query parameter of the request is one the route declares (400 `bad-request` otherwise)."""
    if not connection.query_params:
        return
    # Guards are given a copy of the handler; the scope holds the one Litestar indexed.
    allowed = _known(connection.app).get(connection.scope["route_handler"], frozenset())
    unknown = sorted(set(connection.query_params) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise BadRequestError(
            f"unknown query parameter {unknown[0]!r}; this route takes: {known}", unknown[0]
        )

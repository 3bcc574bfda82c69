"""`create_app(target) -> Litestar`: with cli.py, the one place where the HTTP service is wired.

The lifespan owns the Ledger (its own eventsourcing connection pool) and a psycopg pool for the read models;
both close when the app stops. Tests pass an already open PostgresTarget (and may pass a Ledger).
Every routed request goes through `observe` (request id, metrics, a JSON log line); the Prometheus registry is
the app's own, made here, and `/metrics` (no key needed) reads it.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from litestar import Litestar, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from ledger.api.consistency import ReadSide
from ledger.api.dependencies import DEPENDENCIES
from ledger.api.errors import EXCEPTION_HANDLERS
from ledger.api.guards import v1_guard
from ledger.api.observability import Metrics, metrics_endpoint, observe
from ledger.api.routes import accounts, audit, events, finance, health, orders, shipments, sync, webhooks
from ledger.api.web import ROUTES as WEB_ROUTES
from ledger.application.ledger import Ledger
from ledger.audit.keys import AuditTrust
from ledger.config import DEFAULT_WEB_SESSION_TTL
from ledger.eventstore.database import PostgresTarget, connect, read_only_env, session_options
from ledger.feed.urls import UrlPolicy
from ledger.feed.wakeup import FALLBACK_SECONDS, REPLICA_FALLBACK_SECONDS, FeedWakeup

DEFAULT_MAX_BODY_SIZE = 5 * 1024 * 1024  # a bulk import of some thousands of orders fits
POOL_TIMEOUT_SECONDS = 5.0
DOCS_ASSETS = "/schema/assets"  # Swagger UI's files, vendored in api/docs_assets (no CDN)


def docs_page() -> SwaggerRenderPlugin:
    """`/schema`: Swagger UI over the OpenAPI document, every asset served by this app, so it works offline."""
    return SwaggerRenderPlugin(
        path="/",
        js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{DOCS_ASSETS}/favicon-32x32.png'>",
    )


def read_pool(target: PostgresTarget, name: str = "ledger-api") -> ConnectionPool[Any]:
    """Autocommit connections whose search_path starts with the target's schema (like database.connect)."""
    conninfo = make_conninfo(target.conninfo(), options=session_options(target))
    return ConnectionPool(
        conninfo,
        min_size=1,
        max_size=max(target.pool_size, 1),
        kwargs={"autocommit": True, "connect_timeout": 5},
        timeout=POOL_TIMEOUT_SECONDS,
        check=ConnectionPool.check_connection,
        open=False,
        name=name,
    )


def settle() -> None:
    """Take what start-up made (modules, the app and its routes, the pools) out of the garbage collector's full
    collections, which otherwise walk all of it again each time the objects that requests leave behind trigger
    one: a bulk import triggers many (about 15 us of CPU per order, measured in process with and without
    `gc.freeze`). Collected first, so that no garbage is frozen with it."""
    gc.collect()
    gc.freeze()


def create_app(
    target: PostgresTarget,
    *,
    ledger: Ledger | None = None,
    audit_trust: AuditTrust | None = None,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    web_session_ttl: timedelta = DEFAULT_WEB_SESSION_TTL,
    webhook_urls: UrlPolicy | None = None,
    replica: PostgresTarget | None = None,
    debug: bool = False,
    settle_heap: bool = False,
) -> Litestar:
    """The HTTP API over `target` (its schema must exist). A given `ledger` is used and left open.
    `replica`: a streaming replica of `target` that All Sales, order reads and the change feed read from.
    `audit_trust` gives the public keys the audit routes list (none without it);
    `webhook_urls`: which webhook URLs to accept besides public https ones (Settings; default none);
    `settle_heap`: a server process's app (`ledger serve`) freezes its start-up heap once it has started (`settle`)."""
    trust = audit_trust or AuditTrust(None)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own = ledger is None
        app.state.ledger = Ledger(env=target.eventsourcing_env()) if ledger is None else ledger
        pool = read_pool(target)
        pool.open(wait=False)
        app.state.pool = pool
        app.state.metrics = metrics
        metrics.watch_queue(pool)
        app.state.audit_trust = trust
        app.state.web_session_ttl = web_session_ttl
        app.state.webhook_urls = webhook_urls or UrlPolicy()
        if replica is None:
            app.state.read_side = ReadSide(pool=pool, ledger=app.state.ledger, replica=False)
        else:
            replica_pool = read_pool(replica, "ledger-api-replica")
            replica_pool.open(wait=False)
            app.state.read_side = ReadSide(
                pool=replica_pool, ledger=Ledger(env=read_only_env(replica)), replica=True
            )
        app.state.feed_wakeup = wakeup = FeedWakeup(
            lambda: connect(target),
            fallback_seconds=FALLBACK_SECONDS if replica is None else REPLICA_FALLBACK_SECONDS,
        )
        wakeup.start(asyncio.get_running_loop())
        if settle_heap:
            settle()
        try:
            yield
        finally:
            wakeup.stop()
            pool.close()
            if replica is not None:
                app.state.read_side.pool.close()
                app.state.read_side.ledger.close()
            if own:
                app.state.ledger.close()

    v1 = Router(
        path="/v1",
        route_handlers=[
            *accounts.ROUTES,
            *orders.ROUTES,
            *sync.ROUTES,
            *audit.ROUTES,
            *finance.ROUTES,
            *shipments.ROUTES,
            *events.ROUTES,
            *webhooks.ROUTES,
        ],
        guards=[v1_guard],
        security=[{"BearerAuth": []}],
    )
    return Litestar(
        route_handlers=[
            v1,
            *health.ROUTES,
            metrics_endpoint,
            *WEB_ROUTES,
            create_static_files_router(
                DOCS_ASSETS,
                directories=[Path(__file__).parent / "docs_assets"],
                include_in_schema=False,
                name="docs-assets",
            ),
        ],
        dependencies=DEPENDENCIES,
        middleware=[observe(metrics)],
        logging_config=None,  # the process configures logging (`ledger serve`: JSON lines), not the app
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        request_max_body_size=max_body_size,
        openapi_config=OpenAPIConfig(
            title="ledger",
            version="1.0.0",
            description="Event-sourced order ledger: the v1 HTTP contract (shared/API.md).",
            path="/schema",
            webhooks=webhooks.DELIVERY_DOC,
            render_plugins=[docs_page(), JsonRenderPlugin(path="/openapi.json")],
            components=Components(
                security_schemes={
                    "BearerAuth": SecurityScheme(type="http", scheme="bearer", description="an API key")
                }
            ),
        ),
        debug=debug,
    )

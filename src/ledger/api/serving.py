"""How `ledger serve` runs the app in several processes: uvicorn's supervisor spawns each worker, which builds its
own app (its own Ledger, group committer and pools) from the environment the parent prepared.

Why processes: one process runs Python under one GIL, and a command's request spends most of its time in
Python (HTTP, auth, loading and folding the order, encoding its events); PostgreSQL serializes the saves anyway,
so more processes add CPU where the machine has it, and each process's group commit still batches its own.
"""

from __future__ import annotations

import os
from urllib.parse import quote

from litestar import Litestar

from ledger.api.app import create_app
from ledger.audit.keys import load_trust
from ledger.config import Settings
from ledger.eventstore.database import PostgresTarget, parse_database_url, read_replica
from ledger.feed.urls import UrlPolicy

DEFAULT_GRACEFUL_SECONDS = 30
"""How long SIGTERM waits for in-flight requests (LEDGER_GRACEFUL_TIMEOUT) before closing their connections."""


def database_url(target: PostgresTarget) -> str:
    """A LEDGER_DATABASE_URL that reaches `target` (the embedded server's socket directory included)."""
    password = f":{quote(target.password, safe='')}" if target.password else ""
    auth = f"{quote(target.user, safe='')}{password}@"
    dbname = quote(target.dbname, safe="")
    if target.is_unix_socket:
        return f"postgresql://{auth}/{dbname}?host={target.host}&port={target.port}"
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"postgresql://{auth}{host}:{target.port}/{dbname}"


def export_target(target: PostgresTarget) -> None:
    """Put the opened database in this process's environment, which spawned workers inherit."""
    os.environ["LEDGER_DATABASE_URL"] = database_url(target)
    os.environ["LEDGER_DATABASE_SCHEMA"] = target.schema
    os.environ["LEDGER_DB_POOL_SIZE"] = str(target.pool_size)


def app_from_env() -> Litestar:
    """The app of one worker process (uvicorn factory): the database the parent exported."""
    settings = Settings.from_env()
    if settings.database_url is None:
        raise RuntimeError("a ledger worker process needs LEDGER_DATABASE_URL (set by `ledger serve`)")
    target = parse_database_url(settings.database_url, settings.database_schema, pool_size=settings.pool_size)
    return create_app(
        target,
        audit_trust=load_trust(settings),
        web_session_ttl=settings.web_session_ttl,
        webhook_urls=UrlPolicy.of(settings),
        replica=read_replica(settings),
        settle_heap=True,
    )


def graceful_seconds() -> int:
    raw = os.environ.get("LEDGER_GRACEFUL_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_GRACEFUL_SECONDS
    try:
        value = int(raw)
    except ValueError:
        return DEFAULT_GRACEFUL_SECONDS
    return max(value, 1)

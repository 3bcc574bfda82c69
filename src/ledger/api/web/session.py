"""Who is signed in to the web page, and how pages are rendered.

Sign-in takes an API key once (a POST) and keeps it in a session cookie: HttpOnly (no script reads it),
SameSite=Strict (no other site's form or link sends it), Secure behind https, gone when the browser closes,
never in a URL. The key is checked again on every request, like a Bearer key: a revoked key is signed out at
once, and a changed cookie is just an unknown key. State-changing POSTs also refuse a foreign `Origin`.

The pages call the same Ledger and All Sales view as the API, with the key's seller and role, and record
changes with `Source.WEB`.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.response import Redirect
from psycopg_pool import ConnectionPool

from ledger.aggregates.values import Context, Role, Source
from ledger.api.auth import actor_of
from ledger.application.ledger import Ledger
from ledger.application.queries import KeyDetails

COOKIE = "ledger_session"
HTML = "text/html; charset=utf-8"


@functools.cache
def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("ledger.api.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M UTC") if t is not None else ""
    env.filters["day"] = lambda t: t.strftime("%Y-%m-%d") if t is not None else ""
    env.filters["label"] = lambda s: str(s).replace("_", " ").capitalize()
    env.filters["brief"] = brief
    return env


def brief(data: dict[str, Any]) -> str:
    """An event's data in one line for the timeline (the page escapes it)."""
    parts = []
    for name, value in data.items():
        if value in (None, "", [], {}):
            continue
        if isinstance(value, list):
            items = [
                f"line {v.get('line_id')} x {v.get('quantity')}"
                if isinstance(v, dict) and "line_id" in v
                else str(v)
                for v in value[:10]
            ]
            text = ", ".join(items) + (" ..." if len(value) > 10 else "")
        elif isinstance(value, dict):
            continue  # whole nested objects (the imported order) are in the API's history
        else:
            text = str(value)
        parts.append(f"{name.replace('_', ' ')}: {text[:120]}")
    return "; ".join(parts)


def render(name: str, status: int = 200, **context: Any) -> Response[str]:
    html = templates().get_template(name).render(**context)
    return Response(
        html,
        status_code=status,
        media_type=HTML,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


def ledger_of(request: Request[Any, Any, Any]) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


def pool_of(request: Request[Any, Any, Any]) -> ConnectionPool[Any]:
    pool: ConnectionPool[Any] = request.app.state.pool
    return pool


def signed_in(request: Request[Any, Any, Any]) -> KeyDetails | None:
    """The active key of the session cookie (blocking: call from a worker thread)."""
    secret = request.cookies.get(COOKIE)
    if not secret:
        return None
    return ledger_of(request).authenticate(secret)


def session_cookie(request: Request[Any, Any, Any], secret: str) -> Cookie:
    return Cookie(
        key=COOKIE,
        value=secret,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def to_signin() -> Redirect:
    return Redirect("/signin", status_code=303)


def foreign_origin(request: Request[Any, Any, Any]) -> bool:
    """A POST whose Origin is another site (browsers send Origin on every form POST)."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin == "null"
    return urlsplit(origin).netloc != request.headers.get("host", "")


def may(key: KeyDetails, roles: frozenset[Role]) -> bool:
    return Role(key.role) in roles


def web_context(key: KeyDetails, token: str | None, fields: dict[str, Any]) -> Context:
    """The form's one-time token makes a double submit replay instead of acting twice."""
    digest = hashlib.sha256(repr(sorted((k, str(v)) for k, v in fields.items() if k != "token")).encode())
    return Context(
        actor=actor_of(key),
        source=Source.WEB,
        idempotency_key=f"web-{token}" if token else None,
        request_digest=digest.hexdigest(),
    )

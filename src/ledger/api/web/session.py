"""Who is signed in to the web page, and how pages are rendered.

Sign-in takes an API key once (a POST) and opens a session (ledger.eventstore.web_sessions): the cookie carries a
random session id, never the key. The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's
form or link sends it), Secure behind https, gone when the browser closes, never in a URL. The session ends at
sign-out (its row is deleted), LEDGER_WEB_SESSION_TTL after sign-in (absolute: using the page does not extend
it), or when its key is revoked: the key is checked on every request through the Ledger's key cache, like a
Bearer key (revoked through this process: at once; through another: within KEY_CACHE_SECONDS).

Every state-changing POST (the forms, the failed-rows file, sign-in and sign-out) must come from this site's
own pages (`foreign_origin`); with the SameSite cookie, that is the page's defence against cross-site requests.

The pages call the same Ledger and All Sales view as the API, with the key's seller and role, and record
changes with `Source.WEB`.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.response import Redirect
from psycopg_pool import ConnectionPool

from ledger.aggregates.values import Context, Role, Source
from ledger.api.auth import actor_of
from ledger.api.web import present
from ledger.application.ledger import Ledger
from ledger.application.queries import KeyDetails
from ledger.eventstore import web_sessions

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
    env.filters["when"] = present.time_tag
    env.filters["label"] = present.label
    env.filters["reason"] = present.reason
    env.filters["marketplace"] = present.marketplace_name
    return env


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
    """The active key of the request's session (blocking: call from a worker thread); None when there is no
    session, it expired, or its key was revoked (the session is then deleted)."""
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return None
    with pool_of(request).connection() as conn:
        found = web_sessions.session_key(conn, session_id)
        if found is None:
            return None
        key = ledger_of(request).active_key(found[0])
        if key is None or key.seller != found[1]:
            web_sessions.close_session(conn, session_id)
            return None
    return key


def open_session(request: Request[Any, Any, Any], key: KeyDetails) -> Cookie:
    """A new session for `key` (blocking), as the cookie that carries its id; the request's old session ends."""
    ttl: timedelta = request.app.state.web_session_ttl
    with pool_of(request).connection() as conn:
        if old := request.cookies.get(COOKIE):
            web_sessions.close_session(conn, old)
        session_id = web_sessions.open_session(conn, key.key_id, key.seller, ttl)
    return Cookie(
        key=COOKIE,
        value=session_id,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def close_session(request: Request[Any, Any, Any]) -> None:
    """End the request's session, if any (blocking)."""
    if session_id := request.cookies.get(COOKIE):
        with pool_of(request).connection() as conn:
            web_sessions.close_session(conn, session_id)


def to_signin() -> Redirect:
    return Redirect("/signin", status_code=303)


def foreign_origin(request: Request[Any, Any, Any]) -> bool:
    """Whether a POST may come from another site, by what the browser says of where it comes from.

    `Sec-Fetch-Site` when the browser sends it (anything but `same-origin` is refused), else the `Origin`
    (`null`, from a sandboxed frame or a redirect, is refused), else the `Referer`. A request with none of them is
    not a modern browser's cross-site request (browsers send Origin with every cross-site POST), and a browser
    never sends the SameSite=Strict session cookie with one anyway."""
    host = request.headers.get("host", "")
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site != "same-origin"
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == "null" or urlsplit(origin).netloc != host
    referer = request.headers.get("referer")
    if referer is not None:
        return urlsplit(referer).netloc != host
    return False


def refuse_foreign(request: Request[Any, Any, Any], key: KeyDetails | None) -> Response[str] | None:
    """The 403 page for a POST from another site; None for one from this site."""
    if not foreign_origin(request):
        return None
    return render("message.html", 403, key=key, title="Refused", message="The form came from another site.")


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

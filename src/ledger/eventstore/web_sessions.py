"""The web page's sign-in sessions: the one owner of the `web_sessions` table.

A session id is a random secret kept only in the browser's cookie; the table keeps its SHA-256, so a copy of the
table (a backup, a replica) signs nobody in. A row names the API key it was opened with; the caller checks that
key on every request (a revoked key ends its sessions). Expiry is absolute: `expires_at` is set once, at sign-in;
`last_seen` only says when the session was last used.

The functions take an autocommit connection whose search_path starts with the deployment's schema (the API's
read pool); the table is created by migration 0003_web_sessions.sql.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any
from uuid import UUID


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def open_session(conn: Any, key_id: UUID, seller: str, ttl: timedelta) -> str:
    """A new session for this key, valid for `ttl`; returns its id (the cookie's value, stored nowhere else).

    Sessions past their expiry are deleted here, so the table holds about one row per signed-in browser."""
    session_id = secrets.token_urlsafe(32)
    conn.execute("DELETE FROM web_sessions WHERE expires_at <= now()")
    conn.execute(
        "INSERT INTO web_sessions (id_hash, key_id, seller, expires_at) VALUES (%s, %s, %s, now() + %s)",
        (_hash(session_id), key_id, seller, ttl),
    )
    return session_id


def session_key(conn: Any, session_id: str) -> tuple[UUID, str] | None:
    """The (key id, seller) of a session that has not expired, noting that it was used; else None."""
    row = conn.execute(
        "UPDATE web_sessions SET last_seen = now() WHERE id_hash = %s AND expires_at > now()"
        " RETURNING key_id, seller",
        (_hash(session_id),),
    ).fetchone()
    return None if row is None else (row[0], str(row[1]))


def close_session(conn: Any, session_id: str) -> None:
    """Delete the session (signing out, or its key was revoked); an unknown id is no error."""
    conn.execute("DELETE FROM web_sessions WHERE id_hash = %s", (_hash(session_id),))

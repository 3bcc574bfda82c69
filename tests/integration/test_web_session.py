"""The web page's session over HTTP on PostgreSQL: a random id stored server-side (never the API key), its expiry,
its end at sign-out or when its key is revoked, and the same-origin rule for the POSTs that are not order forms
(the failed-rows file and sign-out)."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from api_support import CTX, Seller

from ledger.aggregates.values import Role
from ledger.application.ledger import Ledger
from ledger.projections import base

pytestmark = pytest.mark.postgres

SAME_SITE = {"Origin": "http://testserver.local"}
CROSS_SITE = (
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver.local"},
    {"Sec-Fetch-Site": "same-site"},
    {"Referer": "https://evil.example/page"},
)


def _sign_in(client: Any, seller: Seller, role: Role = Role.OPERATOR) -> str:
    response = client.post(
        "/signin", data={"api_key": seller.keys[role]}, headers=SAME_SITE, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    session_id: str = client.cookies["ledger_session"]
    return session_id


def _row(connect: base.Connect, session_id: str) -> Any:
    with connect() as conn:
        return conn.execute(
            "SELECT key_id, seller, created_at, expires_at, last_seen FROM web_sessions WHERE id_hash = %s",
            (hashlib.sha256(session_id.encode()).hexdigest(),),
        ).fetchone()


def _signed_in(client: Any) -> bool:
    """Whether the bulk page (which needs a session and nothing else) opens rather than sending to sign-in."""
    response = client.get("/shipments", follow_redirects=False)
    assert response.status_code in {200, 303}, response.text
    return bool(response.status_code == 200)


def test_the_session_cookie_is_a_random_id_stored_as_a_hash(
    client: Any, seller: Seller, connect: base.Connect
) -> None:
    """The cookie carries a fresh random id, not the key; the table keeps its hash, the key and the seller."""
    first = _sign_in(client, seller)
    key = seller.keys[Role.OPERATOR]
    assert key not in first
    assert len(first) >= 43  # token_urlsafe(32)
    row = _row(connect, first)
    assert row is not None
    assert row[1] == seller.name
    assert row[3] - row[2] == timedelta(hours=12)  # LEDGER_WEB_SESSION_TTL's default
    with connect() as conn:
        stored = conn.execute("SELECT id_hash FROM web_sessions WHERE seller = %s", (seller.name,)).fetchall()
    assert all(first not in str(value) and key not in str(value) for value in stored)
    second = _sign_in(client, seller)
    assert second != first
    assert _row(connect, first) is None  # signing in again ends the old session
    assert _signed_in(client)
    client.cookies.set("ledger_session", key)  # the key itself is no session
    assert not _signed_in(client)


def test_an_expired_session_is_signed_out(client: Any, seller: Seller, connect: base.Connect) -> None:
    """A session past its expires_at sends the browser to sign in, and the next sign-in clears it away."""
    session_id = _sign_in(client, seller)
    assert _signed_in(client)
    with connect() as conn:
        conn.execute(
            "UPDATE web_sessions SET expires_at = now() - interval '1 second' WHERE id_hash = %s",
            (hashlib.sha256(session_id.encode()).hexdigest(),),
        )
        conn.commit()
    assert not _signed_in(client)
    client.cookies.clear()
    _sign_in(client, seller)
    assert _row(connect, session_id) is None


def test_the_configured_ttl_sets_the_expiry(client: Any, seller: Seller, connect: base.Connect) -> None:
    """LEDGER_WEB_SESSION_TTL (the app's web_session_ttl) is the time from sign-in to expiry."""
    client.app.state.web_session_ttl = timedelta(minutes=30)
    row = _row(connect, _sign_in(client, seller))
    assert row[3] - row[2] == timedelta(minutes=30)


def test_revoking_the_key_ends_its_session(
    client: Any, seller: Seller, api_ledger: Ledger, connect: base.Connect
) -> None:
    """Once the session's key is revoked the page sends the browser to sign in, and the row is gone."""
    session_id = _sign_in(client, seller)
    assert _signed_in(client)
    key_id = _row(connect, session_id)[0]
    api_ledger.revoke_api_key(CTX, key_id)
    assert not _signed_in(client)
    assert _row(connect, session_id) is None


def test_sign_out_deletes_the_session(client: Any, seller: Seller, connect: base.Connect) -> None:
    """Sign-out deletes the row: the same id, sent again, signs nobody in."""
    session_id = _sign_in(client, seller)
    response = client.post("/signout", headers=SAME_SITE, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/signin")
    assert _row(connect, session_id) is None
    client.cookies.set("ledger_session", session_id)
    assert not _signed_in(client)


def test_sign_out_is_a_same_site_post_only(client: Any, seller: Seller, connect: base.Connect) -> None:
    """GET /signout does nothing (405); a sign-out posted from another site is 403 and the session lives on."""
    session_id = _sign_in(client, seller)
    assert client.get("/signout", follow_redirects=False).status_code == 405
    for headers in CROSS_SITE:
        response = client.post("/signout", headers=headers, follow_redirects=False)
        assert response.status_code == 403, headers
    assert _row(connect, session_id) is not None
    assert _signed_in(client)


def test_the_failed_rows_file_needs_a_session_and_this_site(client: Any, seller: Seller) -> None:
    """failed.csv: without a session it sends to sign-in, for a role that cannot ship it is 403, from another
    site it is 403 even with a session; from the bulk page itself it hands the rows back as a file."""
    form = {"csv": "order_id,tracking_number\nabc,1Z\n"}
    response = client.post("/shipments/failed.csv", data=form, headers=SAME_SITE, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/signin")
    _sign_in(client, seller, Role.AUDITOR)
    assert client.post("/shipments/failed.csv", data=form, headers=SAME_SITE).status_code == 403
    _sign_in(client, seller)
    for headers in CROSS_SITE:
        response = client.post("/shipments/failed.csv", data=form, headers=headers, follow_redirects=False)
        assert response.status_code == 403, headers
        assert "abc,1Z" not in response.text
    for headers in (SAME_SITE, {"Sec-Fetch-Site": "same-origin"}):
        response = client.post("/shipments/failed.csv", data=form, headers=headers)
        assert response.status_code == 200
        assert response.text == form["csv"]
        assert response.headers["content-disposition"] == 'attachment; filename="failed-rows.csv"'

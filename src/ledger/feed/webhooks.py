"""The one owner of the webhook tables: the endpoints (`webhooks`) and the log of every delivery attempt
(`webhook_deliveries`); migration 0004_webhooks.sql creates them.

The delivery queue is durable without a row per event: each webhook keeps a cursor into the change feed
(`position`: every event of its seller up to there is delivered or dead) and the state of its next event
(`attempts`, `first_failed_at`, `next_attempt_at`). The feed's positions are stable and its index commits in
log order (index.py), so "the webhook's next event" is always the same event until the cursor moves. A
dispatcher claims one due webhook with a session advisory lock keyed by its id (`claim_due`), delivers its next
events while holding that lock and no transaction, then records the attempts and moves the cursor in one short
transaction:
- no transaction stays open during a POST: an open transaction that has written (a row lock is a write) holds
  back the log's commit horizon for every follower of the log (eventstore/database.py), and a receiver may take
  `TIMEOUT` seconds to answer;
- a crash or `kill -9` during a delivery ends the session, which releases the lock with nothing of the batch
  recorded, so its events are delivered again (at least once), and nothing else has moved;
- another dispatcher skips a webhook that is being delivered, so a webhook's events go out one at a time, in
  position order, each waiting for the one before it (or its death after the retry budget).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString
from uuid import UUID, uuid4

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow, class_row

from ledger.projections import base

SECRET_PREFIX = "whsec_"  # noqa: S105 - a marker, not a secret
SUCCEEDED = "succeeded"
FAILED = "failed"
DEAD = "dead"
MAX_ERROR_LENGTH = 500


@dataclass(frozen=True)
class Webhook:
    webhook_id: UUID
    seller: str
    url: str
    types: list[str]
    description: str | None
    created_at: datetime
    position: int
    """Every event of the seller's up to here is delivered or dead."""
    attempts: int
    """Failed attempts at the next event."""
    first_failed_at: datetime | None
    next_attempt_at: datetime


@dataclass(frozen=True)
class Claimed:
    """A webhook with the secret to sign with (claimed by `claim_due`: its advisory lock held by the session)."""

    webhook: Webhook
    secret: str


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt, as `GET /v1/webhooks/{id}/deliveries` lists it."""

    delivery_id: int
    webhook_id: UUID
    position: int | None
    """The event's position; None for a test delivery."""
    event_id: UUID
    event_type: str
    attempt: int
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    outcome: str


@dataclass(frozen=True)
class Outcome:
    """What an attempt came to, to record: `status_code` and/or `error`, and how long it took."""

    position: int | None
    event_id: UUID
    event_type: str
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_COLUMNS = sql.SQL(
    "webhook_id, seller, url, types, description, created_at, position, attempts, first_failed_at,"
    " next_attempt_at"
)
_ATTEMPT_COLUMNS = sql.SQL(
    "delivery_id, webhook_id, position, event_id, event_type, attempt, attempted_at, status_code, error,"
    " duration_ms, outcome"
)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def create(
    conn: psycopg.Connection[TupleRow],
    seller: str,
    url: str,
    types: list[str],
    description: str | None,
    now: datetime,
) -> tuple[Webhook, str]:
    """A new webhook of the seller's and its secret; it gets the events recorded from now on."""
    secret = new_secret()
    with conn.transaction(), conn.cursor(row_factory=class_row(Webhook)) as cur:
        with conn.cursor() as plain:
            head = base.head_position(plain)
        webhook = cur.execute(
            sql.SQL(
                "INSERT INTO webhooks (webhook_id, seller, url, types, description, secret, created_at, position,"
                " next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {}"
            ).format(_COLUMNS),
            (uuid4(), seller, url, types, description, secret, now, head, now),
        ).fetchone()
    assert webhook is not None
    return webhook, secret


def list_webhooks(conn: psycopg.Connection[TupleRow], seller: str) -> list[Webhook]:
    with conn.cursor(row_factory=class_row(Webhook)) as cur:
        return cur.execute(
            sql.SQL("SELECT {} FROM webhooks WHERE seller = %s ORDER BY created_at, webhook_id").format(
                _COLUMNS
            ),
            (seller,),
        ).fetchall()


def get(conn: psycopg.Connection[TupleRow], seller: str, webhook_id: UUID) -> Webhook | None:
    """The seller's webhook; None if there is none (or it is another seller's)."""
    with conn.cursor(row_factory=class_row(Webhook)) as cur:
        return cur.execute(
            sql.SQL("SELECT {} FROM webhooks WHERE webhook_id = %s AND seller = %s").format(_COLUMNS),
            (webhook_id, seller),
        ).fetchone()


def get_with_secret(conn: psycopg.Connection[TupleRow], seller: str, webhook_id: UUID) -> Claimed | None:
    """The seller's webhook and its secret (a test delivery), unlocked; None if there is none."""
    with conn.cursor() as cur:
        row = cur.execute(
            sql.SQL("SELECT {}, secret FROM webhooks WHERE webhook_id = %s AND seller = %s").format(_COLUMNS),
            (webhook_id, seller),
        ).fetchone()
    return None if row is None else Claimed(Webhook(*row[:-1]), str(row[-1]))


def delete(conn: psycopg.Connection[TupleRow], seller: str, webhook_id: UUID) -> bool:
    """Delete the webhook and its delivery log (waits for a delivery in progress); False if there is none."""
    cur = conn.execute("DELETE FROM webhooks WHERE webhook_id = %s AND seller = %s", (webhook_id, seller))
    return cur.rowcount > 0


def attempts(
    conn: psycopg.Connection[TupleRow],
    webhook_id: UUID,
    *,
    outcome: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[Attempt]:
    """The webhook's delivery attempts, newest first (keyset: `before` a delivery id)."""
    where = [sql.SQL("webhook_id = %s")]
    params: list[Any] = [webhook_id]
    if outcome is not None:
        where.append(sql.SQL("outcome = %s"))
        params.append(outcome)
    if before is not None:
        where.append(sql.SQL("delivery_id < %s"))
        params.append(before)
    query = sql.SQL("SELECT {} FROM webhook_deliveries WHERE {} ORDER BY delivery_id DESC LIMIT %s").format(
        _ATTEMPT_COLUMNS, base.all_of(where)
    )
    with conn.cursor(row_factory=class_row(Attempt)) as cur:
        return cur.execute(query, [*params, limit]).fetchall()


# ------------------------------------------------------------------------------------ the queue


def _due(condition: LiteralString) -> sql.Composed:
    """The webhooks due at the first parameter with an event after their cursor, and `condition`."""
    return sql.SQL(
        "SELECT {}, secret FROM webhooks w WHERE next_attempt_at <= %s AND EXISTS ("
        " SELECT 1 FROM feed_events f WHERE f.seller = w.seller AND f.position > w.position"
        " AND (cardinality(w.types) = 0 OR f.type = ANY(w.types))) "
    ).format(_COLUMNS) + sql.SQL(condition)


CANDIDATES = 8
"""Due webhooks `claim_due` tries to lock, earliest first, before it gives up (the others are being delivered)."""


def delivery_lock(webhook_id: UUID) -> int:
    """The webhook's advisory-lock key: 64 bits of a hash of its id (signed, as PostgreSQL's bigint keys are)."""
    digest = hashlib.blake2b(f"ledger-webhook:{webhook_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def claim_due(conn: psycopg.Connection[TupleRow], now: datetime) -> Iterator[Claimed | None]:
    """Hold one webhook that is due at `now` and has an event after its cursor (None: none is free), skipping
    those another session holds, until the block ends. The hold is a session advisory lock, not a row lock, so
    the claim keeps no transaction open (and takes no transaction id): use `conn` in autocommit, and record what
    was delivered in a short transaction of its own. The row is read again once the lock is held, so what
    another dispatcher recorded just before it let go is seen."""
    with conn.cursor() as cur:
        candidates = cur.execute(_due("ORDER BY next_attempt_at LIMIT %s"), (now, CANDIDATES)).fetchall()
    for candidate in candidates:
        key = delivery_lock(candidate[0])
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if not (got and got[0]):
            continue
        try:
            row = conn.execute(_due("AND webhook_id = %s"), (now, candidate[0])).fetchone()
            if row is not None:
                yield Claimed(Webhook(*row[:-1]), str(row[-1]))
                return
        finally:
            _unlock(conn, key)
    yield None


def _unlock(conn: psycopg.Connection[TupleRow], key: int) -> None:
    """Let go of a delivery lock; a session that has died let go of it already."""
    if conn.closed or conn.broken:
        return
    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def record_batch(
    conn: psycopg.Connection[TupleRow], attempts: list[tuple[Webhook, Outcome, datetime, datetime | None]]
) -> list[Attempt]:
    """Record a claim's attempts (each: the webhook as it stood before it, the outcome, when, and the retry
    time, None for none) in one transaction, in order, unless the webhook was deleted meanwhile (then
    nothing: its log went with it)."""
    if not attempts:
        return []
    with conn.transaction():
        exists = conn.execute(
            "SELECT 1 FROM webhooks WHERE webhook_id = %s FOR UPDATE", (attempts[0][0].webhook_id,)
        ).fetchone()
        if exists is None:
            return []
        return [record(conn, hook, outcome, now, retry_at=retry) for hook, outcome, now, retry in attempts]


def record(
    conn: psycopg.Connection[TupleRow],
    claimed: Webhook,
    outcome: Outcome,
    now: datetime,
    *,
    retry_at: datetime | None,
) -> Attempt:
    """Record an attempt at the claimed webhook's next event (inside a transaction): on success, or with
    no `retry_at` (the budget is spent: dead), the cursor moves past the event; otherwise the event is due
    again at `retry_at`."""
    attempt = claimed.attempts + 1
    if outcome.succeeded or retry_at is None:
        state = SUCCEEDED if outcome.succeeded else DEAD
        conn.execute(
            "UPDATE webhooks SET position = %s, attempts = 0, first_failed_at = NULL, next_attempt_at = %s"
            " WHERE webhook_id = %s",
            (outcome.position, now, claimed.webhook_id),
        )
    else:
        state = FAILED
        conn.execute(
            "UPDATE webhooks SET attempts = %s, first_failed_at = coalesce(first_failed_at, %s),"
            " next_attempt_at = %s WHERE webhook_id = %s",
            (attempt, now, retry_at, claimed.webhook_id),
        )
    return log_attempt(conn, claimed.webhook_id, attempt, outcome, now, state)


def log_attempt(
    conn: psycopg.Connection[TupleRow],
    webhook_id: UUID,
    attempt: int,
    outcome: Outcome,
    now: datetime,
    state: str,
) -> Attempt:
    """Add an attempt to the webhook's delivery log (a test delivery's alone)."""
    error = None if outcome.error is None else outcome.error[:MAX_ERROR_LENGTH]
    with conn.cursor(row_factory=class_row(Attempt)) as cur:
        row = cur.execute(
            sql.SQL(
                "INSERT INTO webhook_deliveries (webhook_id, position, event_id, event_type, attempt, attempted_at,"
                " status_code, error, duration_ms, outcome) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " RETURNING {}"
            ).format(_ATTEMPT_COLUMNS),
            (
                webhook_id,
                outcome.position,
                outcome.event_id,
                outcome.event_type,
                attempt,
                now,
                outcome.status_code,
                error,
                outcome.duration_ms,
                state,
            ),
        ).fetchone()
    assert row is not None
    return row

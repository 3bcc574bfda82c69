"""The importer's own tables, and the only module that reads or writes them.

- `integration_cursors`: per account, how far the importer has read the marketplace (`updated_after`), and how
  its last round ended.
- `integration_accounts`, `integration_state`: the accounts found in the log, and how far the log was read.
- `integration_orders`: every order imported, when the marketplace last changed it, and when (if ever) the
  ledger acknowledged it to the marketplace.

Every function runs on a connection in autocommit mode; each write commits on its own. The tables are created
by the versioned migrations (`eventstore/migrations/`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from uuid import UUID

import psycopg
from psycopg.rows import TupleRow

Connection = psycopg.Connection[TupleRow]

# ---------------------------------------------------------------------------------- accounts


def accounts_position(conn: Connection) -> int:
    """The log position up to which registered accounts have been recorded (0: none yet)."""
    row = conn.execute("SELECT position FROM integration_state WHERE name = 'accounts'").fetchone()
    return int(row[0]) if row else 0


def record_accounts(
    conn: Connection, accounts: Iterable[tuple[UUID | str, str, datetime]], position: int
) -> None:
    """Record (account id, marketplace, registered at) of accounts found up to `position`, in one transaction."""
    with conn.transaction():
        for account_id, marketplace, registered_at in accounts:
            conn.execute(
                "INSERT INTO integration_accounts (account_id, marketplace, registered_at)"
                " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (account_id, marketplace, registered_at),
            )
        conn.execute(
            "INSERT INTO integration_state (name, position) VALUES ('accounts', %s)"
            " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position",
            (position,),
        )


def account_ids(conn: Connection) -> list[UUID]:
    """Every recorded account, in the order they were registered."""
    rows = conn.execute("SELECT account_id FROM integration_accounts ORDER BY registered_at").fetchall()
    return [r[0] for r in rows]


# ----------------------------------------------------------------------------------- cursors


@contextmanager
def account_lock(conn: Connection, account_id: UUID) -> Iterator[bool]:
    """Hold the account's import lock, if no other process holds it (yields whether it was taken)."""
    key = zlib.crc32(f"ledger-import:{account_id}".encode()) & 0x7FFFFFFF
    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    if not (got and got[0]):
        yield False
        return
    try:
        yield True
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def cursor(conn: Connection, account_id: UUID) -> datetime | None:
    """How far the account's marketplace has been read; None before its first round."""
    row = conn.execute(
        "SELECT updated_after FROM integration_cursors WHERE account_id = %s", (account_id,)
    ).fetchone()
    return None if row is None else row[0]


def start_cursor(conn: Connection, account_id: UUID, marketplace: str, start: datetime) -> None:
    """The account's first cursor (left as it is if another process made it first)."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO integration_cursors (account_id, marketplace, updated_after) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (account_id, marketplace, start),
        )


def advance_cursor(conn: Connection, account_id: UUID, to: datetime) -> None:
    """Move the account's cursor forward to `to` (never back)."""
    with conn.transaction():
        conn.execute(
            "UPDATE integration_cursors SET updated_after = greatest(updated_after, %s), updated_at = now()"
            " WHERE account_id = %s",
            (to, account_id),
        )


def end_round(conn: Connection, account_id: UUID, error: str | None) -> None:
    """Note that the account's round ended now, and with what error (None: none)."""
    with conn.transaction():
        conn.execute(
            "UPDATE integration_cursors SET last_round_at = now(), last_error = %s WHERE account_id = %s",
            (error, account_id),
        )


# ------------------------------------------------------------------------------------ orders


def record_order(
    conn: Connection, account_id: UUID, marketplace_order_id: str, order_id: UUID, remote_updated_at: datetime
) -> datetime | None:
    """Record an imported order (its newest remote change kept); when it was acknowledged, None: not yet."""
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO integration_orders (account_id, marketplace_order_id, order_id, remote_updated_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (account_id, marketplace_order_id) DO UPDATE"
            " SET remote_updated_at = greatest(integration_orders.remote_updated_at, EXCLUDED.remote_updated_at)"
            " RETURNING acknowledged_at",
            (account_id, marketplace_order_id, order_id, remote_updated_at),
        ).fetchone()
    return None if row is None else row[0]


def mark_acknowledged(conn: Connection, account_id: UUID, marketplace_order_id: str) -> None:
    with conn.transaction():
        conn.execute(
            "UPDATE integration_orders SET acknowledged_at = now()"
            " WHERE account_id = %s AND marketplace_order_id = %s",
            (account_id, marketplace_order_id),
        )


def recent_orders(conn: Connection, since: datetime, account_id: UUID | None) -> list[tuple[UUID, str, UUID]]:
    """(account id, marketplace order id, order id) of orders the marketplace changed since `since`,
    newest first per account; `account_id`: that account's only."""
    rows = conn.execute(
        "SELECT account_id, marketplace_order_id, order_id FROM integration_orders"
        " WHERE remote_updated_at >= %s AND (%s::uuid IS NULL OR account_id = %s)"
        " ORDER BY account_id, remote_updated_at DESC",
        (since, account_id, account_id),
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]

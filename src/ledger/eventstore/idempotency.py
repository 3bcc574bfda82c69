"""Stored responses for `Idempotency-Key` on requests whose effect is not one order's events.

Order commands keep their key on the events they record (a replay is rebuilt from those events). Creating an
account, a bulk import or an operator's retry answer with something else, so their first response is kept in a
table, `ledger_idempotency`, keyed by (seller, key): the same key and the same request (operation and body
digest) get those bytes and that status again; another request under the key is refused.

Atomic with the effect: an account's response row is inserted by the events recorder in the same transaction
as the account's events (`LedgerApplicationRecorder.insert_events(..., stored_response=...)`), so either both
exist or neither. A bulk import is several transactions (its new orders in one, each re-sent order in its own):
each order's import carries a key derived from the request's (`<key>#<index>`) on its events, so a retry after a
crash replays the orders already imported and imports the rest; the whole response is stored once all are done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

IDEMPOTENCY_TABLE = "ledger_idempotency"


@dataclass(frozen=True)
class StoredResponse:
    """The first response to a request made under an idempotency key."""

    seller: str
    key: str
    operation: str
    digest: str
    status: int
    body: bytes


def insert(cur: Any, schema: str, response: StoredResponse, *, if_absent: bool = False) -> None:
    """Insert the row; a second row under the key is a unique violation unless `if_absent`."""
    statement = sql.SQL(
        "INSERT INTO {schema}.{table} (seller, key, operation, digest, status, body) VALUES (%s, %s, %s, %s, %s, %s)"
    ).format(schema=sql.Identifier(schema), table=sql.Identifier(IDEMPOTENCY_TABLE))
    if if_absent:
        statement = sql.Composed([statement, sql.SQL(" ON CONFLICT DO NOTHING")])
    cur.execute(
        statement,
        (response.seller, response.key, response.operation, response.digest, response.status, response.body),
    )


def select(cur: Any, schema: str, seller: str, key: str) -> StoredResponse | None:
    row = cur.execute(
        sql.SQL(
            "SELECT operation, digest, status, body FROM {schema}.{table} WHERE seller = %s AND key = %s"
        ).format(schema=sql.Identifier(schema), table=sql.Identifier(IDEMPOTENCY_TABLE)),
        (seller, key),
    ).fetchone()
    if row is None:
        return None
    operation, digest, status, body = (
        row.values() if isinstance(row, dict) else row
    )  # the library's rows are dicts
    return StoredResponse(seller, key, str(operation), str(digest), int(status), bytes(body))

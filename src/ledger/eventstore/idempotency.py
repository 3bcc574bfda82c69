"""Stored responses under a seller's `Idempotency-Key`: one table, `ledger_idempotency`, keyed by (seller, key).

A key belongs to the seller, across every endpoint and every order (API.md, *Idempotency, exactly*): its row
holds what was asked (`operation`, and the request's `digest`) and what was answered (`status`, `body`). The
same key with the same operation and digest gets that answer again; anything else under the key is refused.

Atomic with the effect: the row is inserted by the events recorder in the same transaction as the events
(`insert_events(..., stored_responses=[...])`, on PostgreSQL `LedgerApplicationRecorder`, in memory
`MemoryApplicationRecorder` below), so either both exist or neither, and of two concurrent requests under one
key exactly one commits (the other's save fails on the primary key, an IntegrityError, and it replays). An
order command stores its `CommandResult` (application/core.py); an account's registration the HTTP response.
A bulk import is several transactions (its new orders in one, each re-sent order in its own): each order's
import carries a key derived from the request's (`<key>#<index>`) on its events, so a retry after a crash
replays the orders already imported and imports the rest; the whole response is stored once all are done
(`keep_response`, which keeps the first row if one is there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder
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

    def answers(self, operation: str, digest: str) -> bool:
        """Whether a request (this operation, this digest) under the key is the one this answered."""
        return (self.operation, self.digest) == (operation, digest)


class ResponseRecorder(Protocol):
    """What the Ledger's recorders (PostgreSQL and in memory) offer besides the library's methods."""

    def select_response(self, seller: str, key: str) -> StoredResponse | None: ...

    def keep_response(self, response: StoredResponse) -> None:
        """Store the row unless one is under its key already (for effects made of several transactions)."""


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


class MemoryApplicationRecorder(POPOApplicationRecorder):
    """The library's in-memory recorder with the stored responses beside the events, under the same lock."""

    def __init__(self) -> None:
        super().__init__()
        self._responses: dict[tuple[str, str], StoredResponse] = {}

    def _insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        responses: Sequence[StoredResponse] = kwargs.pop("stored_responses", ())
        with self._database_lock:
            keys = [(r.seller, r.key) for r in responses]
            if len(set(keys)) != len(keys) or any(k in self._responses for k in keys):
                raise IntegrityError("a response is stored under this idempotency key")
            ids = super()._insert_events(stored_events, **kwargs)
            self._responses.update(zip(keys, responses, strict=True))
            return ids

    def select_response(self, seller: str, key: str) -> StoredResponse | None:
        with self._database_lock:
            return self._responses.get((seller, key))

    def keep_response(self, response: StoredResponse) -> None:
        with self._database_lock:
            self._responses.setdefault((response.seller, response.key), response)

"""Read-your-writes on a streaming replica: where the primary's WAL stands, and whether a replica has replayed it.

A command answers with a log position (`Ledger-Position`) only after its transaction committed. So when a read
carrying that position starts, the primary's WAL write position (`pg_current_wal_lsn()`) is at or past the
commit record of that position, and of every position before it: a replica whose replay position
(`pg_last_wal_replay_lsn()`) has reached that LSN holds everything the write did. This maps a position to an LSN
at read time (one short query on the primary) instead of keeping an LSN beside every position; the LSN is an upper
bound, so a read may wait for a little more WAL than its own write, never less. It relies on commits being
durable before they are visible (`synchronous_commit` on, PostgreSQL's default), which holds for every commit
this ledger makes.

A server that is not in recovery (the URL names the primary itself) counts as caught up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from ledger.eventstore.database import DEFAULT_EVENTS_TABLE

__all__ = ["PrimaryMark", "primary_mark", "replay_lsn", "wait_replayed"]

FIRST_POLL_SECONDS = 0.002
MAX_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class PrimaryMark:
    """The log's head on the primary and the primary's WAL write position, read together (LSN after head)."""

    head: int
    lsn: str


def primary_mark(conn: psycopg.Connection[TupleRow]) -> PrimaryMark:
    """Where the primary stands now. The statement's snapshot is taken before `pg_current_wal_lsn()` runs, so
    every position up to `head` committed at or before `lsn`."""
    row = conn.execute(
        sql.SQL(
            "SELECT (SELECT coalesce(max(notification_id), 0) FROM {}), pg_current_wal_lsn()::text"
        ).format(sql.Identifier(DEFAULT_EVENTS_TABLE))
    ).fetchone()
    if row is None:  # pragma: no cover - a SELECT without FROM always returns its row
        raise RuntimeError("the primary returned no row for its WAL position")
    return PrimaryMark(head=int(row[0]), lsn=str(row[1]))


def replay_lsn(conn: psycopg.Connection[TupleRow]) -> str | None:
    """The replica's replay position; None on a server that is not in recovery."""
    row = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
    return None if row is None or row[0] is None else str(row[0])


def wait_replayed(conn: psycopg.Connection[TupleRow], lsn: str, timeout: float) -> bool:
    """Poll until the server behind `conn` has replayed WAL up to `lsn` (at once on a primary); False once
    `timeout` seconds passed. Polling, because a standby cannot LISTEN; the first polls are a few ms apart, as a
    healthy replica replays within milliseconds."""
    deadline = time.monotonic() + timeout
    pause = FIRST_POLL_SECONDS
    while True:
        row = conn.execute(
            "SELECT NOT pg_is_in_recovery() OR coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)",
            (lsn,),
        ).fetchone()
        if row is not None and row[0]:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, MAX_POLL_SECONDS)

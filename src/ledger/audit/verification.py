"""Tamper evidence, checked from the stored events table itself rather than through the application.

Two independent checks, because each misses what the other catches:

- **Per-order chains.** Every order event stores `prev_hash` and `hash` (aggregates/chain.py). Reading an order's
  rows straight from PostgreSQL, decoding each with the Ledger's mapper and recomputing the chain finds an
  altered row (its content no longer matches its hash), a deleted row in the middle (a missing version, or a
  `prev_hash` that links to nothing) and swapped rows (the version is part of what the hash covers). A chain
  cannot notice that its *last* events, or a whole order, are gone: what remains is self-consistent.
- **Checkpoints** seal ranges of the global notification log: `audit_checkpoints` holds, per range, its first
  and last notification id, its row count and a SHA-256 digest over the digests of its rows
  (notification_id, originator_id, version, topic, state) in order, chained to the previous checkpoint's digest;
  `audit_checkpoint_events` keeps each sealed row's digest, so that a broken range names the order, version and
  notification that were deleted, changed or slipped in. Ranges are sealed by `ledger checkpoint` and by a
  clean `ledger verify --all`; events recorded after the last seal are protected by the chains only.

Sealing reads the log in notification order after the last sealed id: the library's writers serialize on a
table lock, so ids commit in order and no row can appear later below the head it saw.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import Mapper, StoredEvent
from psycopg import sql
from psycopg.rows import TupleRow

from ledger.aggregates.chain import GENESIS_HASH, chain_hash
from ledger.aggregates.order import Order
from ledger.application.errors import OrderNotFoundError
from ledger.eventstore.database import DEFAULT_EVENTS_TABLE

Connection = psycopg.Connection[TupleRow]
Progress = Callable[[str, int, int], None]
"""progress(phase, done, total): phases are "checkpoints", "orders" and "sealing"."""

ORDER_TOPIC_PREFIX = f"{Order.__module__}:Order."
IMPORTED_TOPIC = f"{Order.__module__}:{Order.Imported.__qualname__}"
CHECKPOINT_SIZE = 1000  # rows per sealed range (the last range of a run may be shorter)
FETCH_SIZE = 2000
_LOCK_KEY = 0x6C6564676572_01  # advisory lock: one sealer at a time
_EVENTS = sql.Identifier(DEFAULT_EVENTS_TABLE)


@dataclass(frozen=True)
class Row:
    """One row of the stored events table, as stored."""

    notification_id: int
    originator_id: UUID
    version: int
    topic: str
    state: bytes

    def digest(self) -> bytes:
        """SHA-256 over every column, each length-prefixed so that no two rows encode alike."""
        topic = self.topic.encode()
        h = hashlib.sha256()
        h.update(struct.pack(">qq", self.notification_id, self.version))
        h.update(self.originator_id.bytes)
        h.update(struct.pack(">I", len(topic)))
        h.update(topic)
        h.update(struct.pack(">Q", len(self.state)))
        h.update(self.state)
        return h.digest()


@dataclass(frozen=True)
class VerificationResult:
    """One order's chain: valid, or the first version that breaks it and why."""

    order_id: UUID
    valid: bool
    events_checked: int
    first_invalid_version: int | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Finding:
    """One thing `verify_all` found wrong, naming the order and version when it can."""

    message: str
    order_id: UUID | None = None
    version: int | None = None
    notification_id: int | None = None


@dataclass(frozen=True)
class VerificationSummary:
    valid: bool
    orders_checked: int
    events_checked: int
    checkpoints_checked: int
    checkpoints_written: int
    findings: tuple[Finding, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------------ one order


def verify_order(
    conn: Connection, mapper: Mapper[UUID], order_id: UUID, *, seller: str | None = None
) -> VerificationResult:
    """Recompute the order's chain from its stored rows and compare with the checkpoints that sealed it.

    Raises OrderNotFoundError when no row of the order is stored or sealed, or (with `seller`) when the order
    is not shown to be that seller's."""
    rows = _rows(conn, sql.SQL("WHERE originator_id = %s ORDER BY originator_version"), (order_id,))
    sealed = _sealed_versions(conn, order_id)
    if not rows and not sealed:
        raise OrderNotFoundError(f"no order {order_id}")
    if seller is not None and _seller_of(conn, mapper, order_id, rows) != seller:
        raise OrderNotFoundError(f"no order {order_id}")
    checked, broken = check_chain(mapper, order_id, rows)
    sealed_break = _check_sealed(rows, sealed)
    if sealed_break is not None and (broken is None or sealed_break[0] < broken[0]):
        broken = sealed_break
    if broken is None:
        return VerificationResult(order_id, True, checked)
    return VerificationResult(order_id, False, checked, broken[0], broken[1])


def check_chain(mapper: Mapper[UUID], order_id: UUID, rows: list[Row]) -> tuple[int, tuple[int, str] | None]:
    """(events checked, None) for an intact chain, or (events checked, (first bad version, why))."""
    expected, prev_hash = 1, GENESIS_HASH
    for checked, row in enumerate(rows, start=1):
        version = row.version
        if version != expected:
            return checked, (expected, f"version {expected} is missing (the next stored event is {version})")
        if not row.topic.startswith(ORDER_TOPIC_PREFIX):
            return checked, (version, f"version {version} has topic {row.topic!r}, not an order event")
        if version == 1 and row.topic != IMPORTED_TOPIC:
            return checked, (version, "version 1 is not the order's import")
        try:
            event = mapper.to_domain_event(StoredEvent(order_id, version, row.topic, row.state))
        except Exception as exc:  # any decoding failure means the stored state was changed
            return checked, (version, f"version {version} cannot be decoded: {type(exc).__name__}")
        stored_prev = getattr(event, "prev_hash", None)
        stored_hash = getattr(event, "hash", None)
        if stored_prev != prev_hash:
            link = "the genesis hash" if version == 1 else f"version {version - 1}"
            return checked, (version, f"version {version}'s prev_hash does not link to {link}")
        if chain_hash(prev_hash, event) != stored_hash:
            return checked, (version, f"version {version}'s content does not match its hash")
        prev_hash, expected = str(stored_hash), expected + 1
    return len(rows), None


def _check_sealed(rows: list[Row], sealed: list[tuple[int, int, bytes]]) -> tuple[int, str] | None:
    """The first sealed version of the order that is gone or differs from what its checkpoint saw."""
    by_version = {row.version: row for row in rows}
    for version, notification_id, digest in sealed:
        row = by_version.get(version)
        if row is None:
            return (
                version,
                f"version {version} (notification {notification_id}) was deleted after it was sealed",
            )
        if row.notification_id != notification_id or row.digest() != digest:
            return version, f"version {version} (notification {notification_id}) changed after it was sealed"
    return None


def _seller_of(conn: Connection, mapper: Mapper[UUID], order_id: UUID, rows: list[Row]) -> str | None:
    """The seller the order's import names; if that row is unreadable, the one All Sales knows."""
    for row in rows:
        if row.topic == IMPORTED_TOPIC:
            try:
                event = mapper.to_domain_event(StoredEvent(order_id, row.version, row.topic, row.state))
            except Exception:  # noqa: S112 - a tampered import: fall back to the read model
                continue
            seller = getattr(event, "seller", None)
            if isinstance(seller, str):
                return seller
    if _table_exists(conn, "all_sales_orders"):
        found = conn.execute(
            "SELECT seller FROM all_sales_orders WHERE order_id = %s", (order_id,)
        ).fetchone()
        if found is not None:
            return str(found[0])
    return None


def _rows(conn: Connection, where: sql.Composable, params: tuple[Any, ...]) -> list[Row]:
    query = sql.SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {} {}"
    ).format(_EVENTS, where)
    return [_row(record) for record in conn.execute(query, params).fetchall()]


def _row(record: tuple[Any, ...]) -> Row:
    nid, oid, version, topic, state = record
    return Row(int(nid), oid, int(version), str(topic), bytes(state))


def _sealed_versions(conn: Connection, order_id: UUID) -> list[tuple[int, int, bytes]]:
    if not _table_exists(conn, "audit_checkpoint_events"):
        return []
    records = conn.execute(
        "SELECT originator_version, notification_id, row_digest FROM audit_checkpoint_events"
        " WHERE originator_id = %s ORDER BY originator_version",
        (order_id,),
    ).fetchall()
    return [(int(v), int(n), bytes(d)) for v, n, d in records]


def _table_exists(conn: Connection, name: str) -> bool:
    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(found and found[0])


# ---------------------------------------------------------------------------------- the whole log


def verify_all(
    conn: Connection, mapper: Mapper[UUID], progress: Progress | None = None, *, seal: bool = True
) -> VerificationSummary:
    """Re-verify every checkpoint, then every order's chain; if all is well (and `seal`), seal new ranges.

    `conn` must be in autocommit mode: each step opens the transactions it needs."""
    report = progress or _no_progress
    findings: list[Finding] = []
    checkpoints = check_checkpoints(conn, findings, report)
    orders, events = _check_all_chains(conn, mapper, findings, report)
    written = 0
    if seal and not findings:
        written = write_checkpoints(conn, report)
    return VerificationSummary(not findings, orders, events, checkpoints, written, tuple(findings))


def _no_progress(phase: str, done: int, total: int) -> None:
    return None


def _check_all_chains(
    conn: Connection, mapper: Mapper[UUID], findings: list[Finding], report: Progress
) -> tuple[int, int]:
    """Stream the table grouped by originator; check the chain of every stream that holds order events."""
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_EVENTS)).fetchone()
    total = int(count[0]) if count else 0
    orders = done = 0
    report("orders", 0, total)
    for originator_id, rows in _streams(conn):
        done += len(rows)
        if any(row.topic.startswith(ORDER_TOPIC_PREFIX) for row in rows):
            orders += 1
            _, broken = check_chain(mapper, originator_id, rows)
            if broken is not None:
                findings.append(Finding(f"order {originator_id}: {broken[1]}", originator_id, broken[0]))
        report("orders", done, total)
    return orders, done


def _streams(conn: Connection) -> Iterator[tuple[UUID, list[Row]]]:
    """(originator id, its rows in version order), one stream at a time, through a server-side cursor."""
    query = sql.SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {}"
        " ORDER BY originator_id, originator_version"
    ).format(_EVENTS)
    current: UUID | None = None
    rows: list[Row] = []
    with conn.transaction(), conn.cursor(name="ledger_verify_streams") as cur:
        cur.itersize = FETCH_SIZE
        cur.execute(query)
        for record in cur:
            row = _row(record)
            if row.originator_id != current:
                if current is not None:
                    yield current, rows
                current, rows = row.originator_id, []
            rows.append(row)
    if current is not None:
        yield current, rows


# ------------------------------------------------------------------------------------ checkpoints


def checkpoint_digest(prev_digest: str, row_digests: Iterable[bytes]) -> str:
    h = hashlib.sha256(prev_digest.encode("ascii"))
    for digest in row_digests:
        h.update(digest)
    return h.hexdigest()


def check_checkpoints(conn: Connection, findings: list[Finding], report: Progress | None = None) -> int:
    """Recompute every sealed range from the rows now stored; add a finding per difference."""
    report = report or _no_progress
    checkpoints = conn.execute(
        "SELECT seq, first_id, last_id, row_count, prev_digest, digest FROM audit_checkpoints ORDER BY seq"
    ).fetchall()
    report("checkpoints", 0, len(checkpoints))
    prev_digest, prev_last = GENESIS_HASH, 0
    for done, (seq, first_id, last_id, row_count, stored_prev, digest) in enumerate(checkpoints, start=1):
        where = f"checkpoint {seq} (notifications {first_id}-{last_id})"
        if seq != done:
            findings.append(Finding(f"checkpoint {done} is missing (the next one is {seq})"))
        if stored_prev != prev_digest or first_id <= prev_last:
            findings.append(Finding(f"{where} does not link to the checkpoint before it"))
        manifest = conn.execute(
            "SELECT notification_id, originator_id, originator_version, row_digest FROM audit_checkpoint_events"
            " WHERE seq = %s ORDER BY notification_id",
            (seq,),
        ).fetchall()
        if (
            len(manifest) != row_count
            or checkpoint_digest(stored_prev, (bytes(m[3]) for m in manifest)) != digest
        ):
            findings.append(Finding(f"{where}: its list of sealed events was changed"))
        current = {
            row.notification_id: row
            for row in _rows(conn, sql.SQL("WHERE notification_id BETWEEN %s AND %s"), (first_id, last_id))
        }
        for nid, oid, version, row_digest in manifest:
            row = current.pop(int(nid), None)
            label = f"{oid} version {version} (notification {nid})"
            if row is None:
                findings.append(Finding(f"{where}: {label} was deleted", oid, int(version), int(nid)))
            elif row.digest() != bytes(row_digest):
                findings.append(Finding(f"{where}: {label} was changed", oid, int(version), int(nid)))
        for row in current.values():
            label = f"{row.originator_id} version {row.version} (notification {row.notification_id})"
            findings.append(
                Finding(
                    f"{where}: {label} was added after the range was sealed",
                    row.originator_id,
                    row.version,
                    row.notification_id,
                )
            )
        prev_digest, prev_last = digest, last_id
        report("checkpoints", done, len(checkpoints))
    return len(checkpoints)


def write_checkpoints(conn: Connection, progress: Progress | None = None, size: int = CHECKPOINT_SIZE) -> int:
    """Seal every row after the last sealed one, in ranges of at most `size` rows, one transaction per range
    (under an advisory lock, so concurrent sealers take turns). Returns the number of ranges written."""
    report = progress or _no_progress
    last = conn.execute("SELECT coalesce(max(last_id), 0) FROM audit_checkpoints").fetchone()
    count = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE notification_id > %s").format(_EVENTS),
        (last[0] if last else 0,),
    ).fetchone()
    total = int(count[0]) if count else 0
    report("sealing", 0, total)
    written = done = 0
    while sealed := _seal_next_range(conn, size):
        written += 1
        done += sealed
        report("sealing", min(done, total), max(total, done))
    return written


def _seal_next_range(conn: Connection, size: int) -> int:
    """Seal up to `size` rows after the last checkpoint; returns how many (0: nothing left)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        last = conn.execute(
            "SELECT seq, last_id, digest FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        seq, after, prev_digest = (int(last[0]), int(last[1]), str(last[2])) if last else (0, 0, GENESIS_HASH)
        rows = _rows(
            conn, sql.SQL("WHERE notification_id > %s ORDER BY notification_id LIMIT %s"), (after, size)
        )
        if not rows:
            return 0
        seq += 1
        digests = [row.digest() for row in rows]
        digest = checkpoint_digest(prev_digest, digests)
        conn.execute(
            "INSERT INTO audit_checkpoints (seq, first_id, last_id, row_count, prev_digest, digest)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (seq, rows[0].notification_id, rows[-1].notification_id, len(rows), prev_digest, digest),
        )
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY audit_checkpoint_events"
                " (notification_id, seq, originator_id, originator_version, row_digest) FROM STDIN"
            ) as copy,
        ):
            for row, row_digest in zip(rows, digests, strict=True):
                copy.write_row((row.notification_id, seq, row.originator_id, row.version, row_digest))
    return len(rows)

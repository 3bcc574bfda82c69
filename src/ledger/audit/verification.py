"""Tamper evidence, checked from the stored events table itself rather than through the application.

Two independent checks, because each misses what the other catches:

- **Per-order chains.** Every order event stores `prev_hash` and `hash` (aggregates/chain.py). Reading an order's
  rows straight from PostgreSQL, decoding each with the Ledger's mapper and recomputing the chain finds an
  altered row (its content no longer matches its hash), a deleted row in the middle (a missing version, or a
  `prev_hash` that links to nothing) and swapped rows (the version is part of what the hash covers). A chain
  cannot notice that its *last* events, or a whole order, are gone: what remains is self-consistent.
- **Signed checkpoints** (checkpoints.py) seal ranges of the global notification log with a key that is not in
  the database, and name the order, version and notification that were deleted, changed or slipped in. The
  worker seals at most a minute or LEDGER_AUDIT_CHECKPOINT_EVENTS events behind the head; events recorded
  after the last seal are protected by the chains only until then.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from uuid import UUID

from eventsourcing.persistence import Mapper, StoredEvent
from psycopg import sql

from ledger.aggregates.chain import GENESIS_HASH, chain_hash
from ledger.aggregates.order import Order
from ledger.application.errors import OrderNotFoundError
from ledger.audit.checkpoints import (
    EVENTS,
    CheckpointsChangedError,
    Connection,
    Finding,
    Progress,
    Row,
    SignedCheckpoint,
    check_checkpoints,
    remember_newest,
    rows_where,
    sealed_versions,
    table_exists,
    to_row,
    write_checkpoints,
)
from ledger.audit.keys import AuditTrust

ORDER_TOPIC_PREFIX = f"{Order.__module__}:Order."
IMPORTED_TOPIC = f"{Order.__module__}:{Order.Imported.__qualname__}"
FETCH_SIZE = 2000


@dataclass(frozen=True)
class VerificationResult:
    """One order's chain: valid, or the first version that breaks it and why."""

    order_id: UUID
    valid: bool
    events_checked: int
    first_invalid_version: int | None = None
    problem: str | None = None


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
    rows = rows_where(conn, sql.SQL("WHERE originator_id = %s ORDER BY originator_version"), (order_id,))
    sealed = sealed_versions(conn, order_id)
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
    if table_exists(conn, "all_sales_orders"):
        found = conn.execute(
            "SELECT seller FROM all_sales_orders WHERE order_id = %s", (order_id,)
        ).fetchone()
        if found is not None:
            return str(found[0])
    return None


# ---------------------------------------------------------------------------------- the whole log


def verify_all(
    conn: Connection,
    mapper: Mapper[UUID],
    trust: AuditTrust,
    progress: Progress | None = None,
    *,
    seal: bool = True,
    against: SignedCheckpoint | None = None,
) -> VerificationSummary:
    """Re-verify every checkpoint (signatures, links, ranges, and the checkpoints kept outside the database:
    this host's record and `against`), then every order's chain; if all is well (and `seal`, and `trust` can
    sign), seal new ranges. Nothing is sealed over a finding.

    `conn` must be in autocommit mode: each step opens the transactions it needs."""
    report = progress or _no_progress
    findings: list[Finding] = []
    checkpoints = check_checkpoints(conn, trust, findings, report, against=against)
    orders, events = _check_all_chains(conn, mapper, findings, report)
    written = 0
    if not findings:
        if seal and trust.signer is not None:
            try:
                written = write_checkpoints(conn, trust, report)
            except CheckpointsChangedError as e:  # changed between the check and the seal
                findings.append(Finding(str(e)))
        if not findings:
            remember_newest(conn, trust)
    return VerificationSummary(not findings, orders, events, checkpoints, written, tuple(findings))


def _no_progress(phase: str, done: int, total: int) -> None:
    return None


def _check_all_chains(
    conn: Connection, mapper: Mapper[UUID], findings: list[Finding], report: Progress
) -> tuple[int, int]:
    """Stream the table grouped by originator; check the chain of every stream that holds order events."""
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(EVENTS)).fetchone()
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
    ).format(EVENTS)
    current: UUID | None = None
    rows: list[Row] = []
    with conn.transaction(), conn.cursor(name="ledger_verify_streams") as cur:
        cur.itersize = FETCH_SIZE
        cur.execute(query)
        for record in cur:
            row = to_row(record)
            if row.originator_id != current:
                if current is not None:
                    yield current, rows
                current, rows = row.originator_id, []
            rows.append(row)
    if current is not None:
        yield current, rows

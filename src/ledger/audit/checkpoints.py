"""Signed checkpoints: the global log sealed in ranges, each range signed with a key that is not in the database.

A checkpoint (one row of `audit_checkpoints`) seals the rows after the previous checkpoint up to
`last_position` (a notification id). Its `root` is a Merkle root over the rows' digests, its `digest` is
SHA-256(prev_digest || root), chaining it to the checkpoint before, and its `signature` is an Ed25519 signature
over (seq, last_position, digest, prev_digest, signed_at, key_id) (`signed_message`). `audit_checkpoint_events`
keeps every sealed row's digest and a keyed tag (keys.AuditTrust.row_tag), so that a broken range names the
order, version and notification that were deleted, changed or slipped in, even when the attacker rewrote the
SHA-256 digests too.

What the database alone cannot show (its newest checkpoints deleted) is caught by a record outside it:
this host's record of the newest checkpoint it signed or verified (with that range's rows, so a deleted
event is named), kept in `data_dir/audit/`, and an auditor's saved checkpoint (`--against FILE`). Sealing
refuses to go on when the checkpoints no longer contain, unchanged, the newest one on record.

The tables are the migrations' (0001 created them, 0002 added the signature, root and row tag columns).
Sealing reads the log in notification order after the last sealed id: the library's writers serialize on a
table lock, so ids commit in order and no row can appear later below the head it saw.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from ledger.aggregates.chain import GENESIS_HASH
from ledger.audit.keys import AuditTrust
from ledger.eventstore.database import COMMITTED, DEFAULT_EVENTS_TABLE, settle

Connection = psycopg.Connection[TupleRow]
Progress = Callable[[str, int, int], None]
"""progress(phase, done, total): phases are "checkpoints", "orders" and "sealing"."""

log = logging.getLogger(__name__)

CHECKPOINT_SIZE = 1000  # rows per sealed range (the last range of a run may be shorter)
_LOCK_KEY = 0x6C6564676572_01  # advisory lock: one sealer at a time
EVENTS = sql.Identifier(DEFAULT_EVENTS_TABLE)


class CheckpointsChangedError(Exception):
    """The stored checkpoints shrank or changed: sealing on would seal a doctored log."""


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
        return row_digest(self.notification_id, self.originator_id, self.version, self.topic, self.state)


def row_digest(notification_id: int, originator_id: UUID, version: int, topic: str, state: bytes) -> bytes:
    encoded = topic.encode()
    h = hashlib.sha256()
    h.update(struct.pack(">qq", notification_id, version))
    h.update(originator_id.bytes)
    h.update(struct.pack(">I", len(encoded)))
    h.update(encoded)
    h.update(struct.pack(">Q", len(state)))
    h.update(state)
    return h.digest()


@dataclass(frozen=True)
class Finding:
    """One thing verification found wrong, naming the order and version when it can."""

    message: str
    order_id: UUID | None = None
    version: int | None = None
    notification_id: int | None = None


class SignedCheckpoint(msgspec.Struct, frozen=True):
    """A checkpoint as an auditor keeps it (`GET /v1/audit/checkpoints/latest`, `--against FILE`)."""

    seq: int
    last_position: int
    digest: str
    prev_digest: str
    signed_at: str
    key_id: str | None
    signature: str | None

    def message(self) -> bytes:
        return signed_message(
            self.seq, self.last_position, self.digest, self.prev_digest, self.signed_at, self.key_id
        )


def signed_message(
    seq: int, last_position: int, digest: str, prev_digest: str, signed_at: str, key_id: str | None
) -> bytes:
    """The exact bytes a checkpoint's signature covers."""
    return (
        f"ledger audit checkpoint v1\nseq={seq}\nlast_position={last_position}\ndigest={digest}\n"
        f"prev_digest={prev_digest}\nsigned_at={signed_at}\nkey_id={key_id}\n"
    ).encode()


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


# --------------------------------------------------------------------------------------- hashing


def _leaf(digest: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + digest).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(row_digests: Sequence[bytes]) -> str:
    """Root of the binary Merkle tree over the rows' digests (an odd node is carried up unchanged)."""
    level = [_leaf(d) for d in row_digests]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        level = [
            _node(*level[i : i + 2]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)
        ]
    return level[0].hex()


def merkle_path(row_digests: Sequence[bytes], index: int) -> list[tuple[str, str]]:
    """The siblings from leaf `index` up to the root: (side "L" or "R" of the sibling, its hex)."""
    level = [_leaf(d) for d in row_digests]
    path: list[tuple[str, str]] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(("L" if sibling < index else "R", level[sibling].hex()))
        level = [
            _node(*level[i : i + 2]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)
        ]
        index //= 2
    return path


def root_from_path(digest: bytes, path: Iterable[Sequence[str]]) -> str:
    node = _leaf(digest)
    for side, sibling in path:
        node = _node(bytes.fromhex(sibling), node) if side == "L" else _node(node, bytes.fromhex(sibling))
    return node.hex()


def checkpoint_digest(prev_digest: str, root: str) -> str:
    return hashlib.sha256(f"{prev_digest}\n{root}".encode("ascii")).hexdigest()


def _tag_message(notification_id: int, originator_id: UUID, version: int, digest: bytes) -> bytes:
    return struct.pack(">qq", notification_id, version) + originator_id.bytes + digest


# ----------------------------------------------------------------------------------------- rows


def rows_where(conn: Connection, where: sql.Composable, params: tuple[Any, ...]) -> list[Row]:
    query = sql.SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {} {}"
    ).format(EVENTS, where)
    return [to_row(record) for record in conn.execute(query, params).fetchall()]


def to_row(record: tuple[Any, ...]) -> Row:
    nid, oid, version, topic, state = record
    return Row(int(nid), oid, int(version), str(topic), bytes(state))


def table_exists(conn: Connection, name: str) -> bool:
    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(found and found[0])


def sealed_versions(conn: Connection, order_id: UUID) -> list[tuple[int, int, bytes]]:
    """(version, notification id, row digest) of every sealed row of the order."""
    if not table_exists(conn, "audit_checkpoint_events"):
        return []
    records = conn.execute(
        "SELECT originator_version, notification_id, row_digest FROM audit_checkpoint_events"
        " WHERE originator_id = %s ORDER BY originator_version",
        (order_id,),
    ).fetchall()
    return [(int(v), int(n), bytes(d)) for v, n, d in records]


_CHECKPOINT_COLUMNS = "seq, last_id, digest, prev_digest, signed_at, key_id, signature"


def _signed(record: tuple[Any, ...]) -> SignedCheckpoint:
    seq, last_id, digest, prev_digest, signed_at, kid, signature = record
    at = "" if signed_at is None else iso(signed_at)
    return SignedCheckpoint(int(seq), int(last_id), str(digest), str(prev_digest), at, kid, signature)


def latest_checkpoint(conn: Connection) -> SignedCheckpoint | None:
    if not table_exists(conn, "audit_checkpoints"):
        return None
    record = conn.execute(
        f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"  # noqa: S608 - constant
    ).fetchone()
    return None if record is None else _signed(record)


# ---------------------------------------------------------------------- this host's record, outside the DB


class _RecordedRow(msgspec.Struct, frozen=True, array_like=True):
    notification_id: int
    originator_id: UUID
    version: int
    digest: str


class _Record(msgspec.Struct, frozen=True):
    checkpoint: SignedCheckpoint
    rows: list[_RecordedRow]


def _record_path(conn: Connection, trust: AuditTrust) -> Path | None:
    """One record per database and schema: a data directory may serve several."""
    if trust.state_dir is None:
        return None
    found = conn.execute("SELECT current_schema()").fetchone()
    where = f"{conn.info.host}:{conn.info.port}/{conn.info.dbname}/{found[0] if found else ''}"
    return trust.state_dir / f"checkpoint-{hashlib.sha256(where.encode()).hexdigest()[:16]}.json"


def _read_record(path: Path | None) -> _Record | None:
    """This host's record; CheckpointsChangedError when it exists but cannot be read (it too was tampered
    with, or damaged: either way nothing may be sealed over it until someone looks)."""
    if path is None or not path.exists():
        return None
    try:
        return msgspec.json.decode(path.read_bytes(), type=_Record)
    except (OSError, msgspec.DecodeError) as e:
        msg = f"this host's record of the newest checkpoint, {path}, cannot be read: {e}"
        raise CheckpointsChangedError(msg) from None


def _write_record(path: Path | None, checkpoint: SignedCheckpoint, rows: Sequence[Row]) -> None:
    if path is None:
        return
    record = _Record(
        checkpoint,
        [_RecordedRow(r.notification_id, r.originator_id, r.version, r.digest().hex()) for r in rows],
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_bytes(msgspec.json.encode(record))
        partial.replace(path)  # atomic: a reader sees the old record or the new one
    except OSError as e:  # the checkpoint is signed and stored; only this host's extra evidence is behind
        log.warning("audit checkpoints: could not record checkpoint %s in %s: %s", checkpoint.seq, path, e)


def _compare_outside(
    conn: Connection, kept: SignedCheckpoint, rows: Sequence[_RecordedRow] | None, source: str
) -> list[Finding]:
    """Findings when the log no longer holds, unchanged, what a checkpoint kept outside it covers."""
    stored = conn.execute(
        f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq = %s",  # noqa: S608 - constant
        (kept.seq,),
    ).fetchone()
    label = f"checkpoint {kept.seq} (up to position {kept.last_position}, signed at {kept.signed_at})"
    if stored is None:
        problem = f"{source}: {label} is gone from the database: the checkpoints shrank"
    elif _signed(stored) != kept:
        problem = f"{source}: {label} was replaced in the database"
    else:
        return []
    findings = [Finding(problem)]
    if rows:
        current = {
            row.notification_id: row
            for row in rows_where(
                conn,
                sql.SQL("WHERE notification_id = ANY(%s)"),
                ([r.notification_id for r in rows],),
            )
        }
        for kept_row in rows:
            row = current.get(kept_row.notification_id)
            what = f"{kept_row.originator_id} version {kept_row.version} (notification {kept_row.notification_id})"
            if row is None:
                change = "was deleted"
            elif row.digest().hex() != kept_row.digest:
                change = "was changed"
            else:
                continue
            findings.append(
                Finding(
                    f"{source}: {what}, sealed by checkpoint {kept.seq}, {change}",
                    kept_row.originator_id,
                    kept_row.version,
                    kept_row.notification_id,
                )
            )
    return findings


# ------------------------------------------------------------------------------------------ checking


def check_checkpoints(
    conn: Connection,
    trust: AuditTrust,
    findings: list[Finding],
    report: Progress | None = None,
    *,
    against: SignedCheckpoint | None = None,
) -> int:
    """Check every checkpoint's signature, link and range against the rows now stored, then the checkpoints
    kept outside the database (this host's record, and `against`); add a finding per difference."""
    report = report or _no_progress
    checkpoints = conn.execute(
        "SELECT seq, first_id, last_id, row_count, prev_digest, digest, root, signed_at, key_id, signature"
        " FROM audit_checkpoints ORDER BY seq"
    ).fetchall()
    report("checkpoints", 0, len(checkpoints))
    prev_digest, prev_last = GENESIS_HASH, 0
    for done, record in enumerate(checkpoints, start=1):
        seq, first_id, last_id, row_count, stored_prev, digest, root, signed_at, kid, signature = record
        where = f"checkpoint {seq} (notifications {first_id}-{last_id})"
        if seq != done:
            findings.append(Finding(f"checkpoint {done} is missing (the next one is {seq})"))
        if stored_prev != prev_digest or first_id <= prev_last:
            findings.append(Finding(f"{where} does not link to the checkpoint before it"))
        at = "" if signed_at is None else iso(signed_at)
        why = trust.verify(signed_message(seq, last_id, digest, stored_prev, at, kid), kid, signature)
        if why is not None:
            findings.append(Finding(f"{where} was replaced or rewritten: {why}"))
        manifest = conn.execute(
            "SELECT notification_id, originator_id, originator_version, row_digest, row_tag"
            " FROM audit_checkpoint_events WHERE seq = %s ORDER BY notification_id",
            (seq,),
        ).fetchall()
        sealed_root = merkle_root([bytes(m[3]) for m in manifest])
        if (
            len(manifest) != row_count
            or sealed_root != root
            or checkpoint_digest(stored_prev, sealed_root) != digest
        ):
            findings.append(Finding(f"{where}: its list of sealed events was changed"))
        check_tags = kid is not None and kid == trust.signer_id
        current = {
            row.notification_id: row
            for row in rows_where(
                conn, sql.SQL("WHERE notification_id > %s AND notification_id <= %s"), (prev_last, last_id)
            )
        }
        for nid, oid, version, sealed_digest, tag in manifest:
            row = current.pop(int(nid), None)
            label = f"{oid} version {version} (notification {nid})"
            message = _tag_message(int(nid), oid, int(version), bytes(sealed_digest))
            if check_tags and (tag is None or bytes(tag) != trust.row_tag(message)):
                findings.append(
                    Finding(
                        f"{where}: the sealed entry of {label} was rewritten", oid, int(version), int(nid)
                    )
                )
            elif row is None:
                findings.append(Finding(f"{where}: {label} was deleted", oid, int(version), int(nid)))
            elif row.digest() != bytes(sealed_digest):
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
    findings.extend(_check_outside(conn, trust, against))
    return len(checkpoints)


def _check_outside(conn: Connection, trust: AuditTrust, against: SignedCheckpoint | None) -> list[Finding]:
    findings: list[Finding] = []
    try:
        record = _read_record(_record_path(conn, trust))
    except CheckpointsChangedError as e:
        findings.append(Finding(str(e)))
        record = None
    if record is not None:
        findings.extend(_compare_outside(conn, record.checkpoint, record.rows, "this host's record"))
    if against is not None:
        why = trust.verify(against.message(), against.key_id, against.signature)
        if why is not None:
            findings.append(Finding(f"the saved checkpoint {against.seq} is not valid: {why}"))
        rows = record.rows if record is not None and record.checkpoint == against else None
        findings.extend(_compare_outside(conn, against, rows, "the saved checkpoint"))
    return findings


def remember_newest(conn: Connection, trust: AuditTrust) -> None:
    """After a clean verification: record the newest checkpoint (and its rows) outside the database."""
    newest = latest_checkpoint(conn)
    if newest is not None:
        _write_record(_record_path(conn, trust), newest, _rows_of(conn, newest.seq))


def _rows_of(conn: Connection, seq: int) -> list[Row]:
    return rows_where(
        conn,
        sql.SQL(
            "WHERE notification_id IN (SELECT notification_id FROM audit_checkpoint_events WHERE seq = %s)"
            " ORDER BY notification_id"
        ),
        (seq,),
    )


def _no_progress(phase: str, done: int, total: int) -> None:
    return None


# ------------------------------------------------------------------------------------------ sealing


def write_checkpoints(
    conn: Connection, trust: AuditTrust, progress: Progress | None = None, size: int = CHECKPOINT_SIZE
) -> int:
    """Seal every row after the last sealed one, in signed ranges of at most `size` rows, one transaction per
    range (under an advisory lock, so concurrent sealers take turns). Returns the number of ranges written.

    Raises CheckpointsChangedError, sealing nothing, when the checkpoints no longer hold the newest one on
    this host's record, or the newest stored checkpoint is not validly signed."""
    report = progress or _no_progress
    settle(conn)  # what was committed before this call is sealed by it (unless a transaction stays open)
    path = _record_path(conn, trust)
    record = _read_record(path)
    if record is not None and (
        problems := _compare_outside(conn, record.checkpoint, record.rows, "this host's record")
    ):
        raise CheckpointsChangedError("; ".join(f.message for f in problems))
    last = conn.execute("SELECT coalesce(max(last_id), 0) FROM audit_checkpoints").fetchone()
    count = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE notification_id > %s").format(EVENTS),
        (last[0] if last else 0,),
    ).fetchone()
    total = int(count[0]) if count else 0
    report("sealing", 0, total)
    written = done = 0
    while sealed := _seal_next_range(conn, trust, size):
        checkpoint, rows = sealed
        _write_record(path, checkpoint, rows)
        written += 1
        done += len(rows)
        report("sealing", min(done, total), max(total, done))
    return written


def _seal_next_range(
    conn: Connection, trust: AuditTrust, size: int
) -> tuple[SignedCheckpoint, list[Row]] | None:
    """Seal up to `size` rows after the last checkpoint (None: nothing left)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        last = conn.execute(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"  # noqa: S608 - constant
        ).fetchone()
        seq, after, prev_digest = 0, 0, GENESIS_HASH
        if last is not None:
            previous = _signed(last)
            if (why := trust.verify(previous.message(), previous.key_id, previous.signature)) is not None:
                msg = f"the newest checkpoint {previous.seq} was replaced or rewritten: {why}"
                raise CheckpointsChangedError(msg)
            seq, after, prev_digest = previous.seq, previous.last_position, previous.digest
        # Only below the commit horizon: a transaction still open may yet commit rows inside the range
        rows = rows_where(
            conn,
            sql.SQL("WHERE notification_id > %s AND {} ORDER BY notification_id LIMIT %s").format(
                sql.SQL(COMMITTED)
            ),
            (after, size),
        )
        if not rows:
            return None
        seq += 1
        digests = [row.digest() for row in rows]
        root = merkle_root(digests)
        digest = checkpoint_digest(prev_digest, root)
        signed_at = iso(datetime.now(UTC))
        unsigned = SignedCheckpoint(
            seq, rows[-1].notification_id, digest, prev_digest, signed_at, trust.signer_id, None
        )
        kid, signature = trust.sign(unsigned.message())
        conn.execute(
            "INSERT INTO audit_checkpoints (seq, first_id, last_id, row_count, prev_digest, digest, root,"
            " signed_at, key_id, signature) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                seq,
                rows[0].notification_id,
                rows[-1].notification_id,
                len(rows),
                prev_digest,
                digest,
                root,
                datetime.fromisoformat(signed_at),
                kid,
                signature,
            ),
        )
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY audit_checkpoint_events"
                " (notification_id, seq, originator_id, originator_version, row_digest, row_tag) FROM STDIN"
            ) as copy,
        ):
            for row, digest_of_row in zip(rows, digests, strict=True):
                tag = trust.row_tag(
                    _tag_message(row.notification_id, row.originator_id, row.version, digest_of_row)
                )
                copy.write_row((row.notification_id, seq, row.originator_id, row.version, digest_of_row, tag))
    return msgspec.structs.replace(unsigned, key_id=kid, signature=signature), rows


# ------------------------------------------------------------------------------------------ the worker


class CheckpointWorker:
    """Seals the log as it grows: whenever `every_events` rows, or rows older than `max_age` seconds, are
    unsealed. Stops (with `error` set) when the checkpoints shrank or changed, rather than seal over it.
    `connect` gives autocommit connections."""

    def __init__(
        self,
        connect: Callable[[], AbstractContextManager[Connection]],
        trust: AuditTrust,
        *,
        every_events: int = CHECKPOINT_SIZE,
        max_age: float = 60.0,
        poll: float = 1.0,
    ) -> None:
        self.connect, self.trust = connect, trust
        self.every_events, self.max_age, self.poll = every_events, max_age, poll
        self.error: CheckpointsChangedError | None = None
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        oldest_unsealed: float | None = None
        while not self._stop.wait(self.poll):
            try:
                with self.connect() as conn:
                    unsealed = self._unsealed(conn)
                    now = time.monotonic()
                    if unsealed and oldest_unsealed is None:
                        oldest_unsealed = now
                    if unsealed >= self.every_events or (
                        unsealed and oldest_unsealed is not None and now - oldest_unsealed >= self.max_age
                    ):
                        write_checkpoints(conn, self.trust, size=self.every_events)
                        oldest_unsealed = None
            except CheckpointsChangedError as e:
                log.error("audit checkpoints: sealing stopped: %s (run `ledger verify --all`)", e)
                self.error = e
                return
            except psycopg.Error as e:
                log.warning("audit checkpoints: will retry: %s", e)
            except Exception:  # a sealer that dies silently would leave the log unsealed: say so, go on
                log.exception("audit checkpoints: sealing failed; will retry")

    def _unsealed(self, conn: Connection) -> int:
        found = conn.execute(
            sql.SQL(
                "SELECT count(*) FROM (SELECT 1 FROM {} WHERE notification_id >"
                " (SELECT coalesce(max(last_id), 0) FROM audit_checkpoints) AND {} LIMIT %s) unsealed"
            ).format(EVENTS, sql.SQL(COMMITTED)),
            (self.every_events,),
        ).fetchone()
        return int(found[0]) if found else 0


def load_saved_checkpoint(text: str) -> SignedCheckpoint:
    """An auditor's saved checkpoint (the JSON of GET /v1/audit/checkpoints/latest); ValueError if malformed."""
    try:
        return msgspec.json.decode(text, type=SignedCheckpoint)
    except msgspec.DecodeError as e:
        raise ValueError(f"not a saved checkpoint: {e}") from None


def checkpoint_json(checkpoint: SignedCheckpoint) -> str:
    return json.dumps(msgspec.to_builtins(checkpoint), indent=2) + "\n"

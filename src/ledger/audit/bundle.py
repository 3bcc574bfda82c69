"""An order's audit bundle: everything needed to check its history offline, with only a public key.

The bundle holds the order's stored rows (as stored: topic and state, base64), each with its hash and
prev_hash, the signed checkpoint that sealed it and the Merkle path from the row's digest to that checkpoint's
root. `checkpoint` is the newest of those (it covers every event of the order). `verify_bundle` needs no
database: it recomputes every row digest, climbs every path, recomputes every checkpoint digest and checks
every signature with the auditor's public key.
"""

from __future__ import annotations

import base64
import binascii
import json
from uuid import UUID

import msgspec
from eventsourcing.persistence import Mapper, StoredEvent
from psycopg import sql

from ledger.aggregates.chain import GENESIS_HASH
from ledger.audit.checkpoints import (
    Connection,
    SignedCheckpoint,
    checkpoint_digest,
    iso,
    merkle_path,
    root_from_path,
    row_digest,
    rows_where,
    table_exists,
)
from ledger.audit.keys import AuditTrust

FORMAT = "ledger-audit-bundle/1"


class BundleCheckpoint(msgspec.Struct, frozen=True):
    """A sealing checkpoint with its Merkle root (the digest is SHA-256(prev_digest || root))."""

    signed: SignedCheckpoint
    root: str


class BundleEvent(msgspec.Struct, frozen=True):
    version: int
    position: int
    topic: str
    state: str  # base64 of the stored bytes
    hash: str | None
    prev_hash: str | None
    row_digest: str
    checkpoint_seq: int | None  # None: not sealed yet
    path: list[tuple[str, str]]


class Bundle(msgspec.Struct, frozen=True):
    format: str
    order_id: UUID
    events: list[BundleEvent]
    checkpoints: list[BundleCheckpoint]
    checkpoint: SignedCheckpoint | None  # the newest of `checkpoints`


def build_bundle(conn: Connection, mapper: Mapper[UUID], order_id: UUID) -> Bundle:
    """The bundle of an order whose rows exist (the caller checked the order and its seller)."""
    rows = rows_where(conn, sql.SQL("WHERE originator_id = %s ORDER BY originator_version"), (order_id,))
    sealed: dict[int, int] = {}
    if table_exists(conn, "audit_checkpoint_events"):
        sealed = dict(
            conn.execute(
                "SELECT notification_id, seq FROM audit_checkpoint_events WHERE originator_id = %s",
                (order_id,),
            ).fetchall()
        )
    checkpoints: dict[int, BundleCheckpoint] = {}
    ranges: dict[int, list[int]] = {}  # seq -> its sealed notification ids, in order
    for seq in sorted(set(sealed.values())):
        record = conn.execute(
            "SELECT seq, last_id, digest, prev_digest, signed_at, key_id, signature, root"
            " FROM audit_checkpoints WHERE seq = %s",
            (seq,),
        ).fetchone()
        if record is None:
            continue
        signed = SignedCheckpoint(
            int(record[0]),
            int(record[1]),
            str(record[2]),
            str(record[3]),
            "" if record[4] is None else iso(record[4]),
            record[5],
            record[6],
        )
        checkpoints[seq] = BundleCheckpoint(signed, str(record[7]))
        ranges[seq] = [
            int(nid)
            for (nid,) in conn.execute(
                "SELECT notification_id FROM audit_checkpoint_events WHERE seq = %s ORDER BY notification_id",
                (seq,),
            ).fetchall()
        ]
    digests: dict[int, list[bytes]] = {
        seq: [
            bytes(d)
            for (d,) in conn.execute(
                "SELECT row_digest FROM audit_checkpoint_events WHERE seq = %s ORDER BY notification_id",
                (seq,),
            ).fetchall()
        ]
        for seq in checkpoints
    }
    events = []
    for row in rows:
        try:
            event = mapper.to_domain_event(StoredEvent(order_id, row.version, row.topic, row.state))
            hashes = getattr(event, "hash", None), getattr(event, "prev_hash", None)
        except Exception:  # a tampered row still goes in the bundle: the offline check will say so
            hashes = None, None
        found = sealed.get(row.notification_id)
        sealed_by = found if found in checkpoints else None
        path = (
            []
            if sealed_by is None
            else merkle_path(digests[sealed_by], ranges[sealed_by].index(row.notification_id))
        )
        events.append(
            BundleEvent(
                row.version,
                row.notification_id,
                row.topic,
                base64.b64encode(row.state).decode("ascii"),
                hashes[0],
                hashes[1],
                row.digest().hex(),
                sealed_by,
                path,
            )
        )
    newest = max(checkpoints.values(), key=lambda c: c.signed.seq).signed if checkpoints else None
    return Bundle(FORMAT, order_id, events, list(checkpoints.values()), newest)


def decode_bundle(text: bytes | str) -> Bundle:
    """ValueError when `text` is not a bundle."""
    try:
        return msgspec.json.decode(text, type=Bundle)
    except msgspec.DecodeError as e:
        raise ValueError(f"not an audit bundle: {e}") from None


def verify_bundle(bundle: Bundle, trust: AuditTrust) -> list[str]:
    """Every problem found, naming the version; an empty list when the whole history is proven."""
    problems: list[str] = []
    if bundle.format != FORMAT:
        return [f"unknown bundle format {bundle.format!r}"]
    roots: dict[int, str] = {}
    for c in bundle.checkpoints:
        label = f"checkpoint {c.signed.seq}"
        if (why := trust.verify(c.signed.message(), c.signed.key_id, c.signed.signature)) is not None:
            problems.append(f"{label} is not valid: {why}")
        elif checkpoint_digest(c.signed.prev_digest, c.root) != c.signed.digest:
            problems.append(f"{label}: its root does not give its signed digest")
        else:
            roots[c.signed.seq] = c.root
    expected, prev_hash = 1, GENESIS_HASH
    for e in sorted(bundle.events, key=lambda e: e.version):
        label = f"order {bundle.order_id} version {e.version}"
        if e.version != expected:
            problems.append(f"{label}: version {expected} is missing from the bundle")
        expected = e.version + 1
        try:
            state = base64.b64decode(e.state, validate=True)
        except binascii.Error:
            problems.append(f"{label}: its stored state is not base64")
            continue
        digest = row_digest(e.position, bundle.order_id, e.version, e.topic, state)
        if digest.hex() != e.row_digest:
            problems.append(f"{label}: its content does not match its digest")
        if e.checkpoint_seq is None or e.checkpoint_seq not in roots:
            problems.append(f"{label} is not sealed by a valid checkpoint in the bundle (not proven)")
        elif root_from_path(digest, e.path) != roots[e.checkpoint_seq]:
            problems.append(f"{label} is not what checkpoint {e.checkpoint_seq} sealed")
        if e.prev_hash != prev_hash or _stored_hashes(state) not in ((e.hash, e.prev_hash), None):
            problems.append(f"{label}: its hash chain does not link to the version before")
        prev_hash = e.hash or ""
    if not bundle.events:
        problems.append(f"order {bundle.order_id}: the bundle holds no events")
    return problems


def _stored_hashes(state: bytes) -> tuple[object, object] | None:
    """(hash, prev_hash) as written in the stored JSON state; None when it is not readable JSON."""
    try:
        decoded = json.loads(state)
    except ValueError:
        return None
    if not isinstance(decoded, dict):
        return None
    return decoded.get("hash"), decoded.get("prev_hash")

"""Helpers of the tamper-evidence tests: a shop on a schema of the test's own, and the attacker's edits."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.persistence import StoredEvent
from psycopg import sql

from ledger.aggregates.values import (
    Buyer,
    Carrier,
    Context,
    ImportedOrder,
    LineQuantity,
    Marketplace,
    OrderLine,
    PaymentStatus,
)
from ledger.application.ledger import Ledger
from ledger.audit.checkpoints import (
    checkpoint_digest,
    iso,
    merkle_root,
    rows_where,
    signed_message,
    write_checkpoints,
)
from ledger.audit.keys import AuditTrust
from ledger.audit.verification import verify_order
from ledger.eventstore import database
from ledger.eventstore.database import PostgresTarget

CTX = Context(actor="audit-test")
TRACKING = "1Z999AA10123456784"
OTHER_TRACKING = "1Z999AA10123456792"


@dataclass
class Shop:
    """A Ledger on a schema of the test's own (tampering must not touch other tests' events)."""

    target: PostgresTarget
    ledger: Ledger
    conn: psycopg.Connection[Any]
    account_id: UUID
    seller: str
    rows_besides_orders: int  # the account's events
    trust: AuditTrust  # a signing key of the test's own, and this host's record in the test's directory

    def imported(self) -> ImportedOrder:
        """A paid order of one line of 3 units."""
        return ImportedOrder(
            marketplace_order_id=f"MO-{secrets.token_hex(5)}",
            purchased_at=datetime(2026, 11, 20, 10, tzinfo=UTC),
            currency="USD",
            payment_status=PaymentStatus.PAID,
            buyer=Buyer("Ann Lee", "ann@example.com"),
            lines=(OrderLine("A", "MUG-1", 3, Decimal("12.50")),),
        )

    def order(self, shipments: int = 3) -> UUID:
        """An order of one line of 3 units, shipped one unit at a time: 1 + `shipments` events."""
        imported = self.imported()
        order_id = self.ledger.import_order(CTX, self.account_id, imported).order_id
        for _ in range(shipments):
            self.ledger.ship(
                CTX, order_id, carrier=Carrier.UPS, tracking_number=TRACKING, lines=(LineQuantity("A", 1),)
            )
        return order_id

    def verify(self, order_id: UUID, seller: str | None = None) -> Any:
        return verify_order(self.conn, self.ledger.mapper, order_id, seller=seller)

    def sql(self, statement: str, *params: Any) -> None:
        self.conn.execute(statement, params)


@contextmanager
def open_shop(own_target: PostgresTarget, tmp_path: Path) -> Iterator[Shop]:
    """A seller with an Amazon account, on the test's own schema; this host's record in tmp_path/audit."""
    ledger = Ledger(env=own_target.eventsourcing_env())
    seller = f"seller-{secrets.token_hex(4)}"
    account = ledger.register_account(CTX, seller=seller, marketplace=Marketplace.AMAZON, name="main")
    with database.connect(own_target, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
        trust = AuditTrust.of(Ed25519PrivateKey.generate(), state_dir=tmp_path / "audit")
        yield Shop(own_target, ledger, conn, account.account_id, seller, row[0], trust)
    ledger.close()


def alter_tracking(shop: Shop, order_id: UUID, version: int) -> None:
    """Rewrite the tracking number inside one stored event's JSON state."""
    shop.sql(
        "UPDATE ledger_events SET state = convert_to(replace(convert_from(state, 'UTF8'), %s, %s), 'UTF8')"
        " WHERE originator_id = %s AND originator_version = %s",
        TRACKING,
        OTHER_TRACKING,
        order_id,
        version,
    )


def delete(shop: Shop, order_id: UUID, version: int | None = None) -> None:
    if version is None:
        shop.sql("DELETE FROM ledger_events WHERE originator_id = %s", order_id)
    else:
        shop.sql(
            "DELETE FROM ledger_events WHERE originator_id = %s AND originator_version = %s",
            order_id,
            version,
        )


def swap_states(shop: Shop, order_id: UUID, first: int, second: int) -> None:
    """Exchange the stored states (event content) of two versions: the events now read in another order."""
    shop.sql(
        "UPDATE ledger_events e SET state = o.state FROM ledger_events o"
        " WHERE e.originator_id = %s AND o.originator_id = e.originator_id"
        " AND (e.originator_version, o.originator_version) IN ((%s, %s), (%s, %s))",
        order_id,
        first,
        second,
        second,
        first,
    )


def drop_checkpoint(shop: Shop, seq: int) -> None:
    shop.sql("DELETE FROM audit_checkpoint_events WHERE seq = %s", seq)
    shop.sql("DELETE FROM audit_checkpoints WHERE seq = %s", seq)


def two_sealed_orders(shop: Shop) -> tuple[UUID, UUID]:
    """An order sealed in checkpoint 1, another (4 events) sealed in checkpoint 2, the newest."""
    first = shop.order()
    write_checkpoints(shop.conn, shop.trust)
    second = shop.order()
    write_checkpoints(shop.conn, shop.trust)
    return first, second


def rewrite_chain_without_key(shop: Shop, order_id: UUID, version: int) -> None:
    """The attacker's best without the key: change one event, recompute the order's SHA-256 chain from there,
    then every sealed row digest, Merkle root and checkpoint digest, as the code that seals them does."""
    rows = rows_where(shop.conn, sql.SQL("WHERE originator_id = %s ORDER BY originator_version"), (order_id,))
    prev_hash = None
    for row in rows:
        event = shop.ledger.mapper.to_domain_event(StoredEvent(order_id, row.version, row.topic, row.state))
        if row.version < version:
            prev_hash = event.hash
            continue
        fields = {k: v for k, v in vars(event).items() if k != "hash"}
        fields["prev_hash"] = prev_hash
        if row.version == version:
            fields["tracking_number"] = "1ZFORGED0000000000"
        forged = type(event)(**fields)
        prev_hash = forged.hash
        stored = shop.ledger.mapper.to_stored_event(forged)
        shop.sql(
            "UPDATE ledger_events SET state = %s WHERE originator_id = %s AND originator_version = %s",
            stored.state,
            order_id,
            row.version,
        )
    prev_digest = "0" * 64
    for (seq,) in shop.conn.execute("SELECT seq FROM audit_checkpoints ORDER BY seq").fetchall():
        digests = []
        for (nid,) in shop.conn.execute(
            "SELECT notification_id FROM audit_checkpoint_events WHERE seq = %s ORDER BY notification_id",
            (seq,),
        ).fetchall():
            (row,) = rows_where(shop.conn, sql.SQL("WHERE notification_id = %s"), (nid,))
            digests.append(row.digest())
            shop.sql(
                "UPDATE audit_checkpoint_events SET row_digest = %s WHERE notification_id = %s",
                row.digest(),
                nid,
            )
        root = merkle_root(digests)
        digest = checkpoint_digest(prev_digest, root)
        shop.sql(
            "UPDATE audit_checkpoints SET root = %s, prev_digest = %s, digest = %s WHERE seq = %s",
            root,
            prev_digest,
            digest,
            seq,
        )
        prev_digest = digest


def replace_checkpoint_over_deleted_event(shop: Shop, order_id: UUID, version: int) -> str:
    """Delete a sealed event and its sealed entry, then re-make checkpoint 1 over what is left, signed with the
    attacker's own key. Returns that key's id."""
    delete(shop, order_id, version)
    shop.sql(
        "DELETE FROM audit_checkpoint_events WHERE originator_id = %s AND originator_version = %s",
        order_id,
        version,
    )
    digests = [
        bytes(d)
        for (d,) in shop.conn.execute(
            "SELECT row_digest FROM audit_checkpoint_events WHERE seq = 1 ORDER BY notification_id"
        ).fetchall()
    ]
    attacker = AuditTrust.of(Ed25519PrivateKey.generate())
    root = merkle_root(digests)
    stored = shop.conn.execute(
        "SELECT last_id, prev_digest, signed_at FROM audit_checkpoints WHERE seq = 1"
    ).fetchone()
    digest = checkpoint_digest(stored[1], root)
    kid, signature = attacker.sign(
        signed_message(1, stored[0], digest, stored[1], iso(stored[2]), attacker.signer_id)
    )
    shop.sql(
        "UPDATE audit_checkpoints SET root = %s, digest = %s, row_count = row_count - 1, key_id = %s,"
        " signature = %s WHERE seq = 1",
        root,
        digest,
        kid,
        signature,
    )

    return kid

"""Every tamper of the audit trail tried on a log of its own (the checkpoint tables are global, so one
tamper's damage must not count for another's): each is found, and named by order and version where an event
is involved. The summary prints how many were tried and named."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from audit_support import (
    Shop,
    alter_tracking,
    delete,
    drop_checkpoint,
    open_shop,
    replace_checkpoint_over_deleted_event,
    rewrite_chain_without_key,
    two_sealed_orders,
)
from psycopg import sql
from rel_support import report

from ledger.audit.verification import verify_all
from ledger.eventstore.database import PostgresTarget, ensure_schema

pytestmark = pytest.mark.postgres

Tamper = Callable[[Shop, UUID, UUID], set[tuple[UUID, int]]]
"""tamper(shop, first order, second order) -> the (order, version) pairs the report must name."""


def two_deletes(shop: Shop, first: UUID, second: UUID) -> set[tuple[UUID, int]]:
    delete(shop, second, 4)
    drop_checkpoint(shop, 2)
    return {(second, 4)}


def emptied_tables(shop: Shop, first: UUID, second: UUID) -> set[tuple[UUID, int]]:
    delete(shop, second, 4)
    shop.sql("DELETE FROM audit_checkpoint_events")
    shop.sql("DELETE FROM audit_checkpoints")
    return {(second, 4)}


def chain_rewritten(shop: Shop, first: UUID, second: UUID) -> set[tuple[UUID, int]]:
    rewrite_chain_without_key(shop, first, 2)
    return {(first, 2)}


def checkpoint_replaced(shop: Shop, first: UUID, second: UUID) -> set[tuple[UUID, int]]:
    replace_checkpoint_over_deleted_event(shop, first, 3)
    return {(first, 3)}


def event_altered(shop: Shop, first: UUID, second: UUID) -> set[tuple[UUID, int]]:
    alter_tracking(shop, first, 2)
    return {(first, 2)}


def middle_deleted(shop: Shop, first: UUID, second: UUID) -> set[tuple[UUID, int]]:
    delete(shop, first, 2)
    return {(first, 2)}


def newest_deleted(shop: Shop, first: UUID, second: UUID) -> set[tuple[UUID, int]]:
    delete(shop, second, 3)
    delete(shop, second, 4)
    return {(second, 3), (second, 4)}


TAMPERS: dict[str, Tamper] = {
    "two DELETEs (sealed event, then the newest checkpoint)": two_deletes,
    "both checkpoint tables emptied": emptied_tables,
    "SHA-256 chain rewritten without the key": chain_rewritten,
    "checkpoint replaced (signed with another key)": checkpoint_replaced,
    "event altered": event_altered,
    "middle event deleted": middle_deleted,
    "newest events deleted after a checkpoint": newest_deleted,
}


@contextmanager
def fresh_shop(pg_server: PostgresTarget, directory: Path) -> Iterator[Shop]:
    target = dataclasses.replace(pg_server, schema=f"ledger_tamper_{secrets.token_hex(4)}")
    ensure_schema(target)
    try:
        with open_shop(target, directory) as shop:
            yield shop
    finally:
        with psycopg.connect(target.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema)))


def test_every_tamper_is_found_and_named(pg_server, tmp_path):
    """Each tamper on a fresh log: verification fails and names every event the tamper touched."""
    missed = []
    for number, (name, tamper) in enumerate(TAMPERS.items()):
        with fresh_shop(pg_server, tmp_path / str(number)) as shop:
            first, second = two_sealed_orders(shop)
            expected = tamper(shop, first, second)
            summary = verify_all(shop.conn, shop.ledger.mapper, shop.trust)
            named = {(f.order_id, f.version) for f in summary.findings}
            if summary.valid or summary.checkpoints_written or not expected <= named:
                missed.append(name)

    report(
        f"tampers tried: {len(TAMPERS)}, found and named by order and version: {len(TAMPERS) - len(missed)}"
    )
    assert not missed

"""The feed's index: one row per order event of the log (its position, seller, order, account, marketplace and
type), kept by the `feed` projection, and the feed's reads over it.

Why a projection: only an order's first event (`Order.Imported`) names the seller; the index gives every later
event its seller too, so a seller's page is one index scan. It is also what makes a page safe to hand out: the
log commits in position order (the library locks the events table for every insert), the projection applies it
in that order and commits each batch with its position, so once a row is visible every row before it is too,
and a consumer that resumes after the last position it saw never skips an event that committed late.

The page joins the events table for the stored event itself (`FeedRow.state`), decoded by items.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow, class_row

from ledger.aggregates.order import Order
from ledger.projections import base
from ledger.projections.base import Cursor, Event, Projection, Tables

logger = logging.getLogger(__name__)

NAME = "feed"
TABLE = "feed_events"
ORDER_EVENTS = (Order.Event, Order.Imported)


@dataclass(frozen=True)
class FeedRow:
    """One event of a seller's feed as stored: where it is in the log, whose it is, and the stored event."""

    position: int
    order_id: UUID
    account_id: UUID
    marketplace: str
    type: str
    version: int
    topic: str
    state: bytes


@dataclass(frozen=True)
class Page:
    """A page of the feed and the `after` of the next call (past events of other sellers already read)."""

    rows: list[FeedRow]
    next_after: int


class FeedProjection(Projection):
    name: ClassVar[str] = NAME
    tables: ClassVar[tuple[str, ...]] = (TABLE,)
    handles: ClassVar[tuple[type, ...]] = ORDER_EVENTS

    def create_tables(self, cur: Cursor, t: Tables) -> None:
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (position bigint PRIMARY KEY, seller text NOT NULL,"
                " order_id uuid NOT NULL, account_id uuid NOT NULL, marketplace text NOT NULL, type text NOT NULL)"
            ).format(t[TABLE])
        )

    def create_indexes(self, cur: Cursor, t: Tables) -> None:
        """A seller's page, and an order's events (a page filtered by order, the owner of a batch's events)."""
        base.create_named_indexes(
            cur,
            t,
            NAME,
            (("ix_seller", TABLE, "(seller, position)"), ("ix_order", TABLE, "(order_id, position)")),
        )

    def apply(self, cur: Cursor, t: Tables, events: Sequence[Event]) -> None:
        owners = {
            e.event.originator_id: (e.event.seller, e.event.account_id, e.event.marketplace)
            for e in events
            if isinstance(e.event, Order.Imported)
        }
        missing = {
            e.event.originator_id
            for e in events
            if isinstance(e.event, Order.Event) and e.event.originator_id not in owners
        }
        if missing:
            query = sql.SQL(
                "SELECT order_id, seller, account_id, marketplace FROM {} WHERE order_id = ANY(%s) AND type = %s"
            ).format(t[TABLE])
            for order_id, seller, account_id, marketplace in cur.execute(query, (list(missing), "Imported")):
                owners[order_id] = (seller, account_id, marketplace)
        rows = []
        for e in events:
            if not isinstance(e.event, ORDER_EVENTS):
                continue
            owner = owners.get(e.event.originator_id)
            if owner is None:  # an order's later event without its first: never written by the Ledger
                logger.warning(
                    "feed: event %s of unknown order %s left out", e.position, e.event.originator_id
                )
                continue
            rows.append((e.position, *owner, e.event.originator_id, e.type))
        base.insert_rows(
            cur, t[TABLE], ("position", "seller", "account_id", "marketplace", "order_id", "type"), rows
        )


_PAGE = """
SELECT f.position, f.order_id, f.account_id, f.marketplace, f.type,
       e.originator_version AS version, e.topic, e.state
FROM feed_events f JOIN {events} e ON e.notification_id = f.position
WHERE {where} ORDER BY f.position LIMIT %s
"""


def read_page(
    conn: psycopg.Connection[TupleRow],
    seller: str,
    after: int,
    limit: int,
    *,
    types: Sequence[str] = (),
    order_id: UUID | None = None,
) -> Page:
    """The seller's next `limit` events after position `after`, in log order, optionally of these types or
    this order. A short page's `next_after` is the projection's position: nothing of the seller's up to it is
    left unread, so the next call does not scan other sellers' events again."""
    indexed = indexed_position(conn)
    where = [sql.SQL("f.seller = %s"), sql.SQL("f.position > %s")]
    params: list[Any] = [seller, after]
    if types:
        where.append(sql.SQL("f.type = ANY(%s)"))
        params.append(list(types))
    if order_id is not None:
        where.append(sql.SQL("f.order_id = %s"))
        params.append(order_id)
    query = sql.SQL(_PAGE).format(events=sql.Identifier(base.EVENTS_TABLE), where=base.all_of(where))
    try:
        with conn.cursor(row_factory=class_row(FeedRow)) as cur:
            rows = cur.execute(query, [*params, limit]).fetchall()
    except psycopg.errors.UndefinedTable:  # the projection has not run yet: nothing is indexed
        return Page([], after)
    # Read after the position: every row up to it is visible to the page's query, which ran later.
    last = rows[-1].position if rows else after
    next_after = last if len(rows) == limit else max(last, indexed)
    return Page(rows, next_after)


def indexed_position(conn: psycopg.Connection[TupleRow]) -> int:
    """How far the feed's index has followed the log (0 before the projection first ran)."""
    with conn.cursor() as cur:
        try:
            found = base.active_generation(cur, NAME)
        except psycopg.errors.UndefinedTable:
            return 0
    return found[1] if found else 0


def has_events_after(
    conn: psycopg.Connection[TupleRow], seller: str, after: int, types: Sequence[str]
) -> bool:
    """Whether the seller has an event after `after` (of these types, if any): a webhook with work to do."""
    query = "SELECT EXISTS (SELECT 1 FROM feed_events WHERE seller = %s AND position > %s"
    params: list[Any] = [seller, after]
    if types:
        query += " AND type = ANY(%s)"
        params.append(list(types))
    row = conn.execute(query + ")", params).fetchone()
    return bool(row and row[0])

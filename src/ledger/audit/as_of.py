"""All Sales as it stood at a past moment, rebuilt from the stored events (never from the read model).

The projection only knows the present. An auditor asking "what did the seller's order list say at T" gets every
order the seller had imported by T, each folded (with All Sales' own `fold`, so the columns mean exactly what the
live list means) from the events recorded up to T. Two passes over the events table: the imports, to find the
seller's orders (decoded, so no assumption about the stored encoding), then those orders' events.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple, fields
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.persistence import Mapper, StoredEvent
from psycopg import sql
from psycopg.rows import TupleRow

from ledger.aggregates.errors import InvalidInputError
from ledger.application import csv_export
from ledger.audit.verification import IMPORTED_TOPIC
from ledger.eventstore.database import DEFAULT_EVENTS_TABLE
from ledger.projections.all_sales import OrderRow, fold, reveal_buyers
from ledger.projections.all_sales_view import OrderSummary

Connection = psycopg.Connection[TupleRow]
COLUMNS = tuple(f.name for f in fields(OrderSummary))
_EVENTS = sql.Identifier(DEFAULT_EVENTS_TABLE)
_json = msgspec.json.Encoder(decimal_format="string")


def all_sales_as_of(conn: Connection, mapper: Mapper[UUID], seller: str, at: datetime) -> list[OrderSummary]:
    """The seller's All Sales rows as of `at` (recorded time), newest purchase first, like the live list."""
    if at.utcoffset() is None:
        raise InvalidInputError("as_of needs a time zone", "as_of")
    imports = conn.execute(
        sql.SQL("SELECT originator_id, originator_version, topic, state FROM {} WHERE topic = %s").format(
            _EVENTS
        ),
        (IMPORTED_TOPIC,),
    ).fetchall()
    order_ids = []
    for record in imports:
        event: Any = mapper.to_domain_event(StoredEvent(record[0], record[1], record[2], bytes(record[3])))
        if event.seller == seller and event.timestamp <= at:
            order_ids.append(event.originator_id)
    rows: dict[UUID, OrderRow | None] = {}
    with conn.transaction(), conn.cursor(name="ledger_sales_as_of") as cur:
        cur.execute(
            sql.SQL(
                "SELECT originator_id, originator_version, topic, state FROM {}"
                " WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
            ).format(_EVENTS),
            (order_ids,),
        )
        for oid, version, topic, state in cur:
            event = mapper.to_domain_event(StoredEvent(oid, version, topic, bytes(state)))
            if event.timestamp <= at:  # an order's events are recorded in version order
                rows[oid] = fold(rows.get(oid), event)
    found = [row for row in rows.values() if row is not None]
    with conn.cursor() as keys_cur:
        reveal_buyers(keys_cur, found)
    summaries = [summary_of(row) for row in found]
    summaries.sort(key=lambda s: (s.purchased_at, s.order_id), reverse=True)
    return summaries


def summary_of(row: OrderRow) -> OrderSummary:
    state = row.state
    buyer_cancel_requested, attention, sync_state = row.standing()
    return OrderSummary(
        order_id=row.order_id,
        account_id=row.account_id,
        marketplace=row.marketplace,
        marketplace_order_id=row.marketplace_order_id,
        purchased_at=row.purchased_at,
        buyer_name=row.buyer_name,
        currency=row.currency,
        total=state.total,
        refunded_total=state.refunded_total,
        status=state.status.value,
        payment_status=row.payment_status,
        dispute_status=state.dispute_status,
        third_party_managed=row.third_party_managed,
        open=state.is_open,
        units=state.units,
        shipped_units=state.shipped_units,
        cancelled_units=state.cancelled_units,
        version=row.version,
        updated_at=row.updated_at,
        buyer_cancel_requested=buyer_cancel_requested,
        attention=attention,
        sync_state=sync_state,
        ship_by=row.ship_by,
    )


def to_csv(summaries: Iterable[OrderSummary]) -> str:
    """A header of the summary's column names, then one row per order (decimals exact, times ISO 8601)."""
    return csv_export.rows(COLUMNS, (astuple(summary) for summary in summaries), newline="\n")


def to_json(summaries: Iterable[OrderSummary]) -> str:
    return _json.encode(list(summaries)).decode() + "\n"

"""Restocked quantity per seller and SKU, with the restocks that made it.

Counts what went back into the ledger's own stock (`Order.Restocked`): a cancellation with restocking in the
ledger, or an operator's restock of returned units. A marketplace's own restock (Amazon, Rakuten) is not the
seller's stock and is not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow, class_row
from psycopg.types.json import Jsonb

from ledger.aggregates.order import Order
from ledger.projections import base
from ledger.projections.base import Cursor, Event, Projection, Tables, insert_rows, select_by_order


@dataclass(frozen=True)
class OrderMeta:
    order_id: UUID
    seller: str
    account_id: UUID
    marketplace: str
    skus: dict[str, str]


@dataclass(frozen=True)
class RestockRow:
    restock_id: UUID
    line_id: str
    order_id: UUID
    seller: str
    account_id: UUID
    marketplace: str
    sku: str
    quantity: int
    cause_id: UUID | None
    restocked_at: datetime
    position: int


ORDER_COLUMNS = tuple(f.name for f in fields(OrderMeta))
RESTOCK_COLUMNS = tuple(f.name for f in fields(RestockRow))


class InventoryProjection(Projection):
    name: ClassVar[str] = "inventory"
    tables: ClassVar[tuple[str, ...]] = ("inventory_orders", "inventory_levels", "inventory_restocks")
    topics: ClassVar[tuple[str, ...]] = ()
    handles: ClassVar[tuple[type, ...]] = (Order.Imported, Order.Restocked)

    def create_tables(self, cur: Cursor, t: Tables) -> None:
        statements = [
            """CREATE TABLE IF NOT EXISTS {orders} (
                order_id uuid PRIMARY KEY, seller text NOT NULL, account_id uuid NOT NULL,
                marketplace text NOT NULL, skus jsonb NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS {levels} (
                seller text NOT NULL, sku text NOT NULL, quantity bigint NOT NULL,
                updated_at timestamptz NOT NULL, PRIMARY KEY (seller, sku)
            )""",
            """CREATE TABLE IF NOT EXISTS {restocks} (
                restock_id uuid NOT NULL, line_id text NOT NULL, order_id uuid NOT NULL, seller text NOT NULL,
                account_id uuid NOT NULL, marketplace text NOT NULL, sku text NOT NULL,
                quantity integer NOT NULL, cause_id uuid, restocked_at timestamptz NOT NULL,
                position bigint NOT NULL, PRIMARY KEY (restock_id, line_id)
            )""",
        ]
        base.create_tables_from(
            cur,
            statements,
            orders=t["inventory_orders"],
            levels=t["inventory_levels"],
            restocks=t["inventory_restocks"],
        )

    def create_indexes(self, cur: Cursor, t: Tables) -> None:
        """For a SKU's restocks in log order."""
        base.create_named_indexes(
            cur, t, "inventory", (("ix_sku", "inventory_restocks", "(seller, sku, position)"),)
        )

    def apply(self, cur: Cursor, t: Tables, events: Sequence[Event]) -> None:
        new_orders = {
            e.event.originator_id: _meta(e.event) for e in events if isinstance(e.event, Order.Imported)
        }
        wanted = {
            e.event.originator_id
            for e in events
            if isinstance(e.event, Order.Restocked) and e.event.originator_id not in new_orders
        }
        orders = self._load_orders(cur, t, list(wanted)) | new_orders
        restocks: list[RestockRow] = []
        levels: dict[tuple[str, str], tuple[int, datetime]] = {}
        for item in events:
            event = item.event
            order = orders.get(event.originator_id) if isinstance(event, Order.Restocked) else None
            if order is None:
                continue
            for line in event.lines:
                row = RestockRow(
                    restock_id=event.restock_id,
                    line_id=line.line_id,
                    order_id=order.order_id,
                    seller=order.seller,
                    account_id=order.account_id,
                    marketplace=order.marketplace,
                    sku=order.skus.get(line.line_id, ""),
                    quantity=line.quantity,
                    cause_id=event.cause_id,
                    restocked_at=event.effective_at or event.timestamp,
                    position=item.position,
                )
                restocks.append(row)
                quantity, _ = levels.get((row.seller, row.sku), (0, event.timestamp))
                levels[(row.seller, row.sku)] = (quantity + row.quantity, event.timestamp)
        self._write(cur, t, list(new_orders.values()), restocks, levels)

    def _load_orders(self, cur: Cursor, t: Tables, order_ids: list[UUID]) -> dict[UUID, OrderMeta]:
        rows = select_by_order(cur, t["inventory_orders"], ORDER_COLUMNS, order_ids)
        return {record[0]: OrderMeta(*record) for record in rows}

    def _write(
        self,
        cur: Cursor,
        t: Tables,
        orders: list[OrderMeta],
        restocks: list[RestockRow],
        levels: dict[tuple[str, str], tuple[int, datetime]],
    ) -> None:
        insert_rows(cur, t["inventory_orders"], ORDER_COLUMNS, [_params(o, ORDER_COLUMNS) for o in orders])
        insert_rows(
            cur, t["inventory_restocks"], RESTOCK_COLUMNS, [_params(r, RESTOCK_COLUMNS) for r in restocks]
        )
        if levels:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {0} (seller, sku, quantity, updated_at) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (seller, sku) DO UPDATE SET quantity = {0}.quantity + EXCLUDED.quantity,"
                    " updated_at = EXCLUDED.updated_at"
                ).format(t["inventory_levels"]),
                [(seller, sku, quantity, at) for (seller, sku), (quantity, at) in sorted(levels.items())],
            )


def _meta(event: Order.Imported) -> OrderMeta:
    return OrderMeta(
        order_id=event.originator_id,
        seller=event.seller,
        account_id=event.account_id,
        marketplace=event.marketplace,
        skus={line.line_id: line.sku for line in event.lines},
    )


def _params(row: Any, columns: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(Jsonb(v) if isinstance(v := getattr(row, c), dict) else v for c in columns)


# ------------------------------------------------------------------------------------------ reads


@dataclass(frozen=True)
class InventoryLevel:
    sku: str
    quantity: int
    updated_at: datetime


@dataclass(frozen=True)
class RestockEntry:
    restock_id: UUID
    order_id: UUID
    account_id: UUID
    marketplace: str
    sku: str
    line_id: str
    quantity: int
    cause_id: UUID | None
    restocked_at: datetime
    position: int


class InventoryView:
    """Stock the ledger put back, within one seller."""

    def levels(
        self, conn: psycopg.Connection[TupleRow], seller: str, sku: str | None = None
    ) -> list[InventoryLevel]:
        """Restocked quantity per SKU, by SKU; only `sku` when given."""
        query = "SELECT sku, quantity, updated_at FROM inventory_levels WHERE seller = %s"
        params: list[Any] = [seller]
        if sku is not None:
            query += " AND sku = %s"
            params.append(sku)
        with conn.cursor(row_factory=class_row(InventoryLevel)) as cur:
            return cur.execute(query + " ORDER BY sku", params).fetchall()

    def restocks(self, conn: psycopg.Connection[TupleRow], seller: str, sku: str) -> list[RestockEntry]:
        """The restocks of one SKU, oldest first."""
        columns = sql.SQL(", ").join(sql.Identifier(f.name) for f in fields(RestockEntry))
        query = sql.SQL(
            "SELECT {} FROM inventory_restocks WHERE seller = %s AND sku = %s ORDER BY position, line_id"
        ).format(columns)
        return base.fetch_all(conn, RestockEntry, query, (seller, sku))

"""All Sales: one row per order across every marketplace, with its lines and the page's tab counts.

The projection folds each batch in memory (rows of the orders the batch touches are read once, written once),
so catch-up runs at thousands of events per second. Queries live in `AllSalesView` (all_sales_view.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any, ClassVar
from uuid import UUID

from psycopg import sql

from ledger.aggregates.lines import LineTally, OrderState, order_state, unshipped_in_refund
from ledger.aggregates.order import Order
from ledger.eventstore import keys_store
from ledger.projections.base import Cursor, Event, Projection, Tables, select_by_order

ZERO = Decimal(0)
DISPUTES_OPEN_TAB = "disputes_open"
THIRD_PARTY_TAB = "third_party_managed"


@dataclass
class LineRow:
    order_id: UUID
    line_id: str
    seller: str
    sku: str
    title: str
    quantity: int
    unit_price: Decimal
    tax: Decimal
    shipping: Decimal
    position: int
    shipped: int = 0
    cancelled: int = 0
    pending_cancel: int = 0
    refunded_quantity: int = 0
    refunded_unshipped: int = 0
    refunded_item: Decimal = ZERO
    refunded_tax: Decimal = ZERO
    refunded_shipping: Decimal = ZERO
    restocked: int = 0
    dirty: bool = field(default=True, compare=False)  # changed since loaded: to be written

    @property
    def tally(self) -> LineTally:
        return LineTally(
            self.quantity,
            self.shipped,
            self.cancelled,
            self.refunded_unshipped,
            self.unit_price * self.quantity + self.tax + self.shipping,
            self.refunded_item + self.refunded_tax + self.refunded_shipping,
        )


LINE_COLUMNS = tuple(f.name for f in fields(LineRow) if f.name != "dirty")


@dataclass
class OrderRow:
    order_id: UUID
    seller: str
    account_id: UUID
    marketplace: str
    marketplace_order_id: str
    purchased_at: datetime
    buyer_name: str
    buyer_email: str
    currency: str
    payment_status: str
    third_party_managed: bool
    version: int
    updated_at: datetime
    disputes: int = 0
    pending: dict[str, list[list[Any]]] = field(default_factory=dict)  # open cancellation disputes' lines
    open_claims: int = 0
    lines: dict[str, LineRow] = field(default_factory=dict)

    @property
    def open_disputes(self) -> int:
        return self.open_claims + len(self.pending)

    @property
    def state(self) -> OrderState:
        """The derived columns, stored for filtering and sorting: the same functions as `Order.state`."""
        return order_state(
            (line.tally for line in self.lines.values()),
            disputes=self.disputes,
            open_disputes=self.open_disputes,
        )

    def tabs(self) -> list[str]:
        state = self.state
        tab = tab_of(state.status.value, self.third_party_managed)
        return [tab, DISPUTES_OPEN_TAB] if state.open_disputes else [tab]


def tab_of(status: str, third_party_managed: bool) -> str:
    """The All Sales tab an order is listed under (besides `disputes_open` while it has an open dispute)."""
    return THIRD_PARTY_TAB if third_party_managed else status


ORDER_STORED = (
    "order_id",
    "seller",
    "account_id",
    "marketplace",
    "marketplace_order_id",
    "purchased_at",
    "buyer_name",
    "buyer_email",
    "currency",
    "payment_status",
    "third_party_managed",
    "version",
    "updated_at",
    "disputes",
    "pending",
    "open_claims",
)
ORDER_DERIVED = (
    "status",
    "tab",
    "open",
    "dispute_status",
    "open_disputes",
    "units",
    "shipped_units",
    "cancelled_units",
    "total",
    "refunded_total",
)


_STORED = attrgetter(*ORDER_STORED)
_PENDING = ORDER_STORED.index("pending")
line_values = attrgetter(*LINE_COLUMNS)


def _order_params(row: OrderRow) -> tuple[Any, ...]:
    """The row's columns: stored ones, then the derived ones."""
    stored = list(_STORED(row))
    stored[_PENDING] = json.dumps(row.pending)
    state = row.state
    derived = (
        state.status.value,
        tab_of(state.status.value, row.third_party_managed),
        state.is_open,
        state.dispute_status,
        state.open_disputes,
        state.units,
        state.shipped_units,
        state.cancelled_units,
        state.total,
        state.refunded_total,
    )
    return (*stored, *derived)


# ------------------------------------------------------------------------------------- folding


def fold(row: OrderRow | None, event: Any) -> OrderRow | None:
    """Apply one order event to its row (None before `Imported`). Mirrors the aggregate's own state changes."""
    if isinstance(event, Order.Imported):
        row = OrderRow(
            order_id=event.originator_id,
            seller=event.seller,
            account_id=event.account_id,
            marketplace=event.marketplace,
            marketplace_order_id=event.marketplace_order_id,
            purchased_at=event.purchased_at,
            buyer_name=event.buyer.name,
            buyer_email=event.buyer.email,
            currency=event.currency,
            payment_status=event.payment_status,
            third_party_managed=event.third_party_managed,
            version=event.originator_version,
            updated_at=event.timestamp,
        )
        for position, line in enumerate(event.lines):
            row.lines[line.line_id] = LineRow(
                event.originator_id,
                line.line_id,
                event.seller,
                line.sku,
                line.title,
                line.quantity,
                line.unit_price,
                line.tax,
                line.shipping,
                position,
            )
        return row
    if row is None:  # an order whose import this projection never saw: nothing to attach it to
        return None
    handler = _HANDLERS.get(type(event))
    if handler is not None:
        handler(row, event)
    row.version = event.originator_version
    row.updated_at = event.timestamp
    return row


def _touch(row: OrderRow, line_id: str) -> LineRow:
    line = row.lines[line_id]
    line.dirty = True
    return line


def _payment_cleared(row: OrderRow, event: Any) -> None:
    row.payment_status = "paid"


def _shipped(row: OrderRow, event: Any) -> None:
    for item in event.lines:
        _touch(row, item.line_id).shipped += item.quantity


def _shipment_voided(row: OrderRow, event: Any) -> None:
    for item in event.lines:
        _touch(row, item.line_id).shipped -= item.quantity


def _cancelled(row: OrderRow, event: Any) -> None:
    for item in event.lines:
        _touch(row, item.line_id).cancelled += item.quantity


def _refunded(row: OrderRow, event: Any) -> None:
    for item in event.lines:
        line = _touch(row, item.line_id)
        line.refunded_unshipped += unshipped_in_refund(
            item.quantity, line.shipped, line.refunded_quantity, line.refunded_unshipped
        )
        line.refunded_quantity += item.quantity
        line.refunded_item += item.item_amount
        line.refunded_tax += item.tax_amount
        line.refunded_shipping += item.shipping_amount


def _dispute_opened(row: OrderRow, event: Any) -> None:
    row.disputes += 1
    if event.kind == "cancellation":
        row.pending[str(event.dispute_id)] = [[i.line_id, i.quantity] for i in event.lines]
        for item in event.lines:
            _touch(row, item.line_id).pending_cancel += item.quantity
    else:
        row.open_claims += 1


def _dispute_closed(row: OrderRow, event: Any) -> None:
    held = row.pending.pop(str(event.dispute_id), None)
    if held is None:
        row.open_claims -= 1
        return
    for line_id, quantity in held:
        _touch(row, line_id).pending_cancel -= quantity


def _restocked(row: OrderRow, event: Any) -> None:
    for item in event.lines:
        _touch(row, item.line_id).restocked += item.quantity


_HANDLERS = {
    Order.PaymentCleared: _payment_cleared,
    Order.Shipped: _shipped,
    Order.ShipmentVoided: _shipment_voided,
    Order.Cancelled: _cancelled,
    Order.Refunded: _refunded,
    Order.DisputeOpened: _dispute_opened,
    Order.DisputeClosed: _dispute_closed,
    Order.Restocked: _restocked,
}


def reveal_buyers(cur: Cursor, rows: Sequence[OrderRow]) -> None:
    """Imports store the buyer encrypted (keys_store.py): the read model keeps the plaintext, for the list and its
    search, while the buyer's key lives (`ledger privacy forget` scrubs it), and `[erased]` after."""
    key_ids = keys_store.key_ids_in(value for row in rows for value in (row.buyer_name, row.buyer_email))
    if not key_ids:
        return
    keys = keys_store.fetch_keys(cur, sorted(key_ids))
    for row in rows:
        row.buyer_name = keys_store.decrypt(keys, row.buyer_name)
        row.buyer_email = keys_store.decrypt(keys, row.buyer_email)


# Column -> PostgreSQL type, in the order of _order_params and LINE_COLUMNS.
ORDER_TYPES = dict(
    zip(
        (*ORDER_STORED, *ORDER_DERIVED),
        (
            "uuid", "text", "uuid", "text", "text", "timestamptz", "text", "text", "text", "text", "boolean",
            "integer", "timestamptz", "integer", "jsonb", "integer",
            "text", "text", "boolean", "text", "integer", "integer", "integer", "integer", "numeric", "numeric",
        ),
        strict=True,
    )
)  # fmt: skip
LINE_TYPES = dict(
    zip(
        LINE_COLUMNS,
        (
            "uuid", "text", "text", "text", "text", "integer", "numeric", "numeric", "numeric", "integer",
            "integer", "integer", "integer", "integer", "integer", "numeric", "numeric", "numeric", "integer",
        ),
        strict=True,
    )
)  # fmt: skip


def _upsert(
    cur: Cursor, table: str, types: dict[str, str], key: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    """COPY the rows into a temporary staging table, then one INSERT ... ON CONFLICT from it: the cheapest
    way to write thousands of rows (COPY's row encoding runs in psycopg's C code)."""
    if not rows:
        return
    columns = sql.SQL(", ").join(map(sql.Identifier, types))
    stage = sql.Identifier(f"{table}_stage")
    cur.execute(
        sql.SQL("CREATE TEMPORARY TABLE IF NOT EXISTS {} AS SELECT {} FROM {} WITH NO DATA").format(
            stage, columns, sql.Identifier(table)
        )
    )
    cur.execute(sql.SQL("TRUNCATE {}").format(stage))
    with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, columns)) as copy:
        for row in rows:
            copy.write_row(row)
    cur.execute(
        sql.SQL(
            "INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} ON CONFLICT ({key}) DO UPDATE SET {updates}"
        ).format(
            table=sql.Identifier(table),
            columns=columns,
            stage=stage,
            key=sql.SQL(", ").join(map(sql.Identifier, key)),
            updates=sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in types if c not in key
            ),
        )
    )


# ------------------------------------------------------------------------------------ projection


def _trigram_schema(cur: Cursor) -> str:
    """The schema holding pg_trgm (one per database, whatever schema first created it), installing it in
    public if absent; the index names its operator class with it, so any deployment's schema can use it."""
    cur.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
    row = cur.execute(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'"
    ).fetchone()
    assert row is not None
    return str(row[0]).strip('"')


class AllSalesProjection(Projection):
    name: ClassVar[str] = "all_sales"
    tables: ClassVar[tuple[str, ...]] = ("all_sales_orders", "all_sales_lines", "all_sales_counts")
    topics: ClassVar[tuple[str, ...]] = ()

    def create_tables(self, cur: Cursor, t: Tables) -> None:
        self._ddl(cur, t, indexes=False)

    def create_indexes(self, cur: Cursor, t: Tables) -> None:
        self._ddl(cur, t, indexes=True)

    def _ddl(self, cur: Cursor, t: Tables, *, indexes: bool) -> None:
        orders, lines, counts = t["all_sales_orders"], t["all_sales_lines"], t["all_sales_counts"]
        trgm = _trigram_schema(cur) if indexes else "public"
        statements = [
            """CREATE TABLE IF NOT EXISTS {orders} (
                order_id uuid PRIMARY KEY, seller text NOT NULL, account_id uuid NOT NULL,
                marketplace text NOT NULL, marketplace_order_id text NOT NULL,
                purchased_at timestamptz NOT NULL, buyer_name text NOT NULL, buyer_email text NOT NULL,
                currency text NOT NULL, payment_status text NOT NULL, third_party_managed boolean NOT NULL,
                version integer NOT NULL, updated_at timestamptz NOT NULL, disputes integer NOT NULL,
                pending jsonb NOT NULL, open_claims integer NOT NULL,
                status text NOT NULL, tab text NOT NULL, open boolean NOT NULL, dispute_status text,
                open_disputes integer NOT NULL, units integer NOT NULL, shipped_units integer NOT NULL,
                cancelled_units integer NOT NULL, total numeric NOT NULL, refunded_total numeric NOT NULL
            ) WITH (fillfactor = 85)""",
            """CREATE TABLE IF NOT EXISTS {lines} (
                order_id uuid NOT NULL, line_id text NOT NULL, seller text NOT NULL, sku text NOT NULL,
                title text NOT NULL, quantity integer NOT NULL, unit_price numeric NOT NULL,
                tax numeric NOT NULL, shipping numeric NOT NULL, position integer NOT NULL,
                shipped integer NOT NULL, cancelled integer NOT NULL, pending_cancel integer NOT NULL,
                refunded_quantity integer NOT NULL, refunded_unshipped integer NOT NULL,
                refunded_item numeric NOT NULL, refunded_tax numeric NOT NULL,
                refunded_shipping numeric NOT NULL, restocked integer NOT NULL,
                PRIMARY KEY (order_id, line_id)
            ) WITH (fillfactor = 85)""",
            """CREATE TABLE IF NOT EXISTS {counts} (
                seller text NOT NULL, account_id uuid NOT NULL, marketplace text NOT NULL, tab text NOT NULL,
                orders bigint NOT NULL, PRIMARY KEY (seller, account_id, tab)
            )""",
            "CREATE INDEX IF NOT EXISTS {ix_newest} ON {orders} (seller, purchased_at DESC, order_id DESC)",
            "CREATE INDEX IF NOT EXISTS {ix_tab} ON {orders} (seller, tab, purchased_at DESC, order_id DESC)",
            "CREATE INDEX IF NOT EXISTS {ix_account} ON {orders}"
            " (seller, account_id, purchased_at DESC, order_id DESC)",
            "CREATE INDEX IF NOT EXISTS {ix_marketplace} ON {orders}"
            " (seller, marketplace, purchased_at DESC, order_id DESC)",
            "CREATE INDEX IF NOT EXISTS {ix_open} ON {orders} (seller, purchased_at DESC, order_id DESC)"
            " WHERE open",
            "CREATE INDEX IF NOT EXISTS {ix_disputes} ON {orders} (seller, purchased_at DESC, order_id DESC)"
            " WHERE open_disputes > 0",
            # `sort=updated_at` / `sort=total` (either direction) and `updated_since`.
            "CREATE INDEX IF NOT EXISTS {ix_updated} ON {orders} (seller, updated_at, order_id)",
            "CREATE INDEX IF NOT EXISTS {ix_total} ON {orders} (seller, total, order_id)",
            "CREATE INDEX IF NOT EXISTS {ix_mp_order} ON {orders} (seller, marketplace_order_id)",
            "CREATE INDEX IF NOT EXISTS {ix_email} ON {orders} (seller, lower(buyer_email))",
            "CREATE INDEX IF NOT EXISTS {ix_name} ON {orders} USING gin (lower(buyer_name) {trgm}.gin_trgm_ops)",
            "CREATE INDEX IF NOT EXISTS {ix_sku} ON {lines} (seller, sku, order_id)",
        ]
        names = {
            "trgm": sql.Identifier(trgm),
            "orders": orders,
            "lines": lines,
            "counts": counts,
            **{
                key: sql.Identifier(f"all_sales_g{t.generation}_{key}")
                for key in (
                    "ix_newest",
                    "ix_tab",
                    "ix_account",
                    "ix_marketplace",
                    "ix_open",
                    "ix_disputes",
                    "ix_updated",
                    "ix_total",
                    "ix_mp_order",
                    "ix_email",
                    "ix_name",
                    "ix_sku",
                )
            },
        }
        for statement in statements[:3] if not indexes else statements[3:]:
            cur.execute(sql.SQL(statement).format(**names))

    def apply(self, cur: Cursor, t: Tables, events: Sequence[Event]) -> None:
        by_order: dict[UUID, list[Any]] = {}
        for item in events:
            by_order.setdefault(item.event.originator_id, []).append(item.event)
        existing = [oid for oid, evs in by_order.items() if not isinstance(evs[0], Order.Imported)]
        rows = self._load(cur, t, existing)
        before = {oid: (row.seller, row.account_id, row.marketplace, row.tabs()) for oid, row in rows.items()}
        changed: dict[UUID, OrderRow] = {}
        for order_id, order_events in by_order.items():
            row = rows.get(order_id)
            for event in order_events:
                row = fold(row, event)
            if row is not None:
                changed[order_id] = row
        if not changed:
            return
        reveal_buyers(cur, list(changed.values()))
        self._write(cur, t, list(changed.values()))
        self._count(cur, t, before, changed)

    def _load(self, cur: Cursor, t: Tables, order_ids: list[UUID]) -> dict[UUID, OrderRow]:
        rows: dict[UUID, OrderRow] = {}
        for record in select_by_order(cur, t["all_sales_orders"], ORDER_STORED, order_ids):
            values = dict(zip(ORDER_STORED, record, strict=True))
            rows[values["order_id"]] = OrderRow(**values)
        for record in select_by_order(
            cur, t["all_sales_lines"], LINE_COLUMNS, order_ids, order_by="position"
        ):
            line = LineRow(*record)
            line.dirty = False
            rows[line.order_id].lines[line.line_id] = line
        return rows

    def _write(self, cur: Cursor, t: Tables, rows: list[OrderRow]) -> None:
        """One COPY and one upsert per table for the whole batch; only lines that changed are written."""
        order_values = [_order_params(row) for row in rows]
        lines = [line_values(line) for row in rows for line in row.lines.values() if line.dirty]
        _upsert(cur, t.name("all_sales_orders"), ORDER_TYPES, ("order_id",), order_values)
        _upsert(cur, t.name("all_sales_lines"), LINE_TYPES, ("order_id", "line_id"), lines)

    def _count(
        self,
        cur: Cursor,
        t: Tables,
        before: dict[UUID, tuple[str, UUID, str, list[str]]],
        changed: dict[UUID, OrderRow],
    ) -> None:
        deltas: dict[tuple[str, UUID, str, str], int] = {}
        for order_id, row in changed.items():
            if order_id in before:
                seller, account_id, marketplace, tabs = before[order_id]
                for tab in tabs:
                    key = (seller, account_id, marketplace, tab)
                    deltas[key] = deltas.get(key, 0) - 1
            for tab in row.tabs():
                key = (row.seller, row.account_id, row.marketplace, tab)
                deltas[key] = deltas.get(key, 0) + 1
        changes = [(*key, n) for key, n in sorted(deltas.items()) if n]
        if not changes:
            return
        cur.executemany(
            sql.SQL(
                "INSERT INTO {0} (seller, account_id, marketplace, tab, orders) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (seller, account_id, tab) DO UPDATE SET orders = {0}.orders + EXCLUDED.orders"
            ).format(t["all_sales_counts"]),
            changes,
        )

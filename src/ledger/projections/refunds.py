"""Finance: every refund with its lines, and refund totals per seller, marketplace, currency and UTC day.

A refund counts on the day it took effect (`effective_at`, else when it was recorded), in UTC. Amounts are
`Decimal` in `numeric` columns, in the order's currency; totals are never summed across currencies.
`refunds_daily` is kept incrementally (each batch adds its refunds to the days they fall on), so the finance
totals need no scan of the refunds themselves.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from ledger.aggregates.order import Order
from ledger.aggregates.times import after_day, day_start
from ledger.projections import base
from ledger.projections.base import Cursor, Event, Projection, Tables, insert_rows, select_by_order

ZERO = Decimal(0)
MAX_LIMIT = 500
MAX_CURSOR = 200


@dataclass(frozen=True)
class OrderMeta:
    order_id: UUID
    seller: str
    account_id: UUID
    marketplace: str
    marketplace_order_id: str
    currency: str
    skus: dict[str, str]


ORDER_COLUMNS = tuple(f.name for f in fields(OrderMeta))


@dataclass(frozen=True)
class RefundRow:
    refund_id: UUID
    order_id: UUID
    seller: str
    account_id: UUID
    marketplace: str
    marketplace_order_id: str
    currency: str
    reason: str
    actor: str
    source: str
    refunded_at: datetime
    item_amount: Decimal
    tax_amount: Decimal
    shipping_amount: Decimal
    total: Decimal
    position: int


REFUND_COLUMNS = tuple(f.name for f in fields(RefundRow))
LINE_COLUMNS = ("refund_id", "line_id", "sku", "quantity", "item_amount", "tax_amount", "shipping_amount")
DailyKey = tuple[str, str, str, date]  # seller, marketplace, currency, day


def refund_day(refunded_at: datetime) -> date:
    return refunded_at.astimezone(UTC).date()


# ------------------------------------------------------------------------------------ projection


class RefundsProjection(Projection):
    name: ClassVar[str] = "refunds"
    tables: ClassVar[tuple[str, ...]] = ("refund_orders", "refunds", "refund_lines", "refunds_daily")
    topics: ClassVar[tuple[str, ...]] = ()
    handles: ClassVar[tuple[type, ...]] = (Order.Imported, Order.Refunded)

    def create_tables(self, cur: Cursor, t: Tables) -> None:
        base.create_tables_from(
            cur,
            (
                """CREATE TABLE IF NOT EXISTS {orders} (
                order_id uuid PRIMARY KEY, seller text NOT NULL, account_id uuid NOT NULL,
                marketplace text NOT NULL, marketplace_order_id text NOT NULL, currency text NOT NULL,
                skus jsonb NOT NULL
            )""",
                """CREATE TABLE IF NOT EXISTS {refunds} (
                refund_id uuid PRIMARY KEY, order_id uuid NOT NULL, seller text NOT NULL,
                account_id uuid NOT NULL, marketplace text NOT NULL, marketplace_order_id text NOT NULL,
                currency text NOT NULL, reason text NOT NULL, actor text NOT NULL, source text NOT NULL,
                refunded_at timestamptz NOT NULL, item_amount numeric NOT NULL, tax_amount numeric NOT NULL,
                shipping_amount numeric NOT NULL, total numeric NOT NULL, position bigint NOT NULL
            )""",
                """CREATE TABLE IF NOT EXISTS {lines} (
                refund_id uuid NOT NULL, line_id text NOT NULL, sku text NOT NULL, quantity integer NOT NULL,
                item_amount numeric NOT NULL, tax_amount numeric NOT NULL, shipping_amount numeric NOT NULL,
                PRIMARY KEY (refund_id, line_id)
            )""",
                """CREATE TABLE IF NOT EXISTS {daily} (
                seller text NOT NULL, marketplace text NOT NULL, currency text NOT NULL, day date NOT NULL,
                refunds bigint NOT NULL, item_amount numeric NOT NULL, tax_amount numeric NOT NULL,
                shipping_amount numeric NOT NULL, total numeric NOT NULL,
                PRIMARY KEY (seller, marketplace, currency, day)
            )""",
            ),
            orders=t["refund_orders"],
            refunds=t["refunds"],
            lines=t["refund_lines"],
            daily=t["refunds_daily"],
        )

    def create_indexes(self, cur: Cursor, t: Tables) -> None:
        """For the newest-first listing per seller, an order's refunds, and the days of a seller."""
        base.create_named_indexes(
            cur,
            t,
            "refunds",
            (
                ("ix_newest", "refunds", "(seller, refunded_at DESC, refund_id DESC)"),
                ("ix_order", "refunds", "(order_id)"),
                ("ix_day", "refunds_daily", "(seller, day)"),
            ),
        )

    def apply(self, cur: Cursor, t: Tables, events: Sequence[Event]) -> None:
        new_orders: dict[UUID, OrderMeta] = {}
        for item in events:
            if isinstance(item.event, Order.Imported):
                new_orders[item.event.originator_id] = _meta(item.event)
        wanted = {
            e.event.originator_id
            for e in events
            if isinstance(e.event, Order.Refunded) and e.event.originator_id not in new_orders
        }
        orders = self._load_orders(cur, t, list(wanted)) | new_orders
        refunds: list[RefundRow] = []
        lines: list[tuple[Any, ...]] = []
        daily: dict[DailyKey, list[Any]] = {}
        for item in events:
            event = item.event
            order = orders.get(event.originator_id) if isinstance(event, Order.Refunded) else None
            if order is None:
                continue
            refund, refund_lines = _refund_rows(order, item.position, event)
            refunds.append(refund)
            lines += refund_lines
            key = (refund.seller, refund.marketplace, refund.currency, refund_day(refund.refunded_at))
            sums = daily.get(key, [0, ZERO, ZERO, ZERO, ZERO])
            amounts = (refund.item_amount, refund.tax_amount, refund.shipping_amount, refund.total)
            daily[key] = [sums[0] + 1, *(a + b for a, b in zip(sums[1:], amounts, strict=True))]
        self._write(cur, t, list(new_orders.values()), refunds, lines, daily)

    def _load_orders(self, cur: Cursor, t: Tables, order_ids: list[UUID]) -> dict[UUID, OrderMeta]:
        rows = select_by_order(cur, t["refund_orders"], ORDER_COLUMNS, order_ids)
        return {record[0]: OrderMeta(*record) for record in rows}

    def _write(
        self,
        cur: Cursor,
        t: Tables,
        orders: list[OrderMeta],
        refunds: list[RefundRow],
        lines: list[tuple[Any, ...]],
        daily: dict[DailyKey, list[Any]],
    ) -> None:
        insert_rows(cur, t["refund_orders"], ORDER_COLUMNS, [_order_params(o) for o in orders])
        insert_rows(
            cur, t["refunds"], REFUND_COLUMNS, [tuple(getattr(r, c) for c in REFUND_COLUMNS) for r in refunds]
        )
        insert_rows(cur, t["refund_lines"], LINE_COLUMNS, lines)
        if daily:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {0} (seller, marketplace, currency, day, refunds, item_amount, tax_amount,"
                    " shipping_amount, total) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (seller, marketplace, currency, day) DO UPDATE SET"
                    " refunds = {0}.refunds + EXCLUDED.refunds,"
                    " item_amount = {0}.item_amount + EXCLUDED.item_amount,"
                    " tax_amount = {0}.tax_amount + EXCLUDED.tax_amount,"
                    " shipping_amount = {0}.shipping_amount + EXCLUDED.shipping_amount,"
                    " total = {0}.total + EXCLUDED.total"
                ).format(t["refunds_daily"]),
                [(*key, *sums) for key, sums in sorted(daily.items())],
            )


def _meta(event: Order.Imported) -> OrderMeta:
    return OrderMeta(
        order_id=event.originator_id,
        seller=event.seller,
        account_id=event.account_id,
        marketplace=event.marketplace,
        marketplace_order_id=event.marketplace_order_id,
        currency=event.currency,
        skus={line.line_id: line.sku for line in event.lines},
    )


def _order_params(order: OrderMeta) -> tuple[Any, ...]:
    return tuple(Jsonb(order.skus) if c == "skus" else getattr(order, c) for c in ORDER_COLUMNS)


def _refund_rows(
    order: OrderMeta, position: int, event: Order.Refunded
) -> tuple[RefundRow, list[tuple[Any, ...]]]:
    item = sum((line.item_amount for line in event.lines), ZERO)
    tax = sum((line.tax_amount for line in event.lines), ZERO)
    shipping = sum((line.shipping_amount for line in event.lines), ZERO)
    refund = RefundRow(
        event.refund_id,
        order.order_id,
        order.seller,
        order.account_id,
        order.marketplace,
        order.marketplace_order_id,
        order.currency,
        event.reason or "",
        event.actor,
        event.source,
        event.effective_at or event.timestamp,
        item,
        tax,
        shipping,
        event.total,
        position,
    )
    lines = [
        (
            event.refund_id,
            line.line_id,
            order.skus.get(line.line_id, ""),
            line.quantity,
            line.item_amount,
            line.tax_amount,
            line.shipping_amount,
        )
        for line in event.lines
    ]
    return refund, lines


# ------------------------------------------------------------------------------------------ reads


@dataclass(frozen=True)
class RefundLineEntry:
    line_id: str
    sku: str
    quantity: int
    item_amount: Decimal
    tax_amount: Decimal
    shipping_amount: Decimal

    @property
    def total(self) -> Decimal:
        return self.item_amount + self.tax_amount + self.shipping_amount


@dataclass(frozen=True)
class RefundEntry:
    refund_id: UUID
    order_id: UUID
    account_id: UUID
    marketplace: str
    marketplace_order_id: str
    currency: str
    reason: str
    actor: str
    source: str
    refunded_at: datetime
    item_amount: Decimal
    tax_amount: Decimal
    shipping_amount: Decimal
    total: Decimal
    position: int
    lines: tuple[RefundLineEntry, ...] = ()


@dataclass(frozen=True)
class RefundsPage:
    items: tuple[RefundEntry, ...]
    next_cursor: str | None


@dataclass(frozen=True)
class RefundTotals:
    """Refunds in one currency."""

    currency: str
    refunds: int
    item_amount: Decimal
    tax_amount: Decimal
    shipping_amount: Decimal
    total: Decimal


@dataclass(frozen=True)
class RefundsDay:
    day: date
    marketplace: str
    currency: str
    refunds: int
    item_amount: Decimal
    tax_amount: Decimal
    shipping_amount: Decimal
    total: Decimal


@dataclass(frozen=True)
class RefundedOrder:
    """The refunds of one order within a period, summed."""

    order_id: UUID
    marketplace_order_id: str
    account_id: UUID
    currency: str
    refunds: int
    total: Decimal


class InvalidFilterError(ValueError):
    """An unknown marketplace, a range that ends before it starts, or a limit outside 1 to MAX_LIMIT."""


class InvalidCursorError(ValueError):
    """A page cursor this view did not make."""


_ENTRY_COLUMNS = sql.SQL(", ").join(sql.Identifier(f.name) for f in fields(RefundEntry) if f.name != "lines")
_SUMS = sql.SQL(
    "sum(item_amount) AS item_amount, sum(tax_amount) AS tax_amount,"
    " sum(shipping_amount) AS shipping_amount, sum(total) AS total"
)


@contextmanager
def snapshot(conn: psycopg.Connection[TupleRow]) -> Iterator[None]:
    """One read-only snapshot for several reads (the items and their totals), so the totals are exactly the
    sums of the items read with them even while a worker writes. `conn` must be in autocommit mode."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


class RefundsView:
    """Refunds of one seller. Dates are UTC days, both ends included; no date: no bound."""

    def list_refunds(
        self,
        conn: psycopg.Connection[TupleRow],
        seller: str,
        date_from: date | None = None,
        date_to: date | None = None,
        marketplace: str | None = None,
        currency: str | None = None,
        reason: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        account_id: UUID | None = None,
    ) -> RefundsPage:
        """Newest first, each with its lines; `next_cursor` continues after the page's last refund."""
        where, params = _conditions(
            seller, date_from, date_to, marketplace, currency, reason, "refunded_at", account_id
        )
        if cursor is not None:
            where.append(sql.SQL("(refunded_at, refund_id) < (%s, %s)"))
            params += decode_cursor(cursor)
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidFilterError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
        query = sql.SQL("SELECT {} FROM refunds WHERE {} ORDER BY refunded_at DESC, refund_id DESC LIMIT %s")
        entries = base.fetch_all(
            conn, RefundEntry, query.format(_ENTRY_COLUMNS, base.all_of(where)), (*params, limit + 1)
        )
        page, more = entries[:limit], len(entries) > limit
        lines: dict[UUID, list[RefundLineEntry]] = {}
        if page:
            rows = conn.execute(
                "SELECT refund_id, line_id, sku, quantity, item_amount, tax_amount, shipping_amount"
                " FROM refund_lines WHERE refund_id = ANY(%s) ORDER BY refund_id, line_id",
                ([e.refund_id for e in page],),
            ).fetchall()
            for refund_id, *line in rows:
                lines.setdefault(refund_id, []).append(RefundLineEntry(*line))
        items = tuple(replace(e, lines=tuple(lines.get(e.refund_id, ()))) for e in page)
        next_cursor = encode_cursor(page[-1].refunded_at, page[-1].refund_id) if more else None
        return RefundsPage(items, next_cursor)

    def totals(
        self,
        conn: psycopg.Connection[TupleRow],
        seller: str,
        date_from: date | None = None,
        date_to: date | None = None,
        marketplace: str | None = None,
        currency: str | None = None,
        reason: str | None = None,
        account_id: UUID | None = None,
    ) -> list[RefundTotals]:
        """Per currency, over the refunds `list_refunds` lists with the same filters."""
        if reason is None and account_id is None:  # the daily table has every other filter's grain
            where, params = _conditions(seller, date_from, date_to, marketplace, currency, None, "day")
            source, count = sql.SQL("refunds_daily"), sql.SQL("sum(refunds)::bigint")
        else:
            where, params = _conditions(
                seller, date_from, date_to, marketplace, currency, reason, "refunded_at", account_id
            )
            source, count = sql.SQL("refunds"), sql.SQL("count(*)")
        query = sql.SQL(
            "SELECT currency, {count} AS refunds, {sums} FROM {source} WHERE {where}"
            " GROUP BY currency ORDER BY currency"
        ).format(count=count, sums=_SUMS, source=source, where=base.all_of(where))
        return base.fetch_all(conn, RefundTotals, query, params)

    def daily(
        self,
        conn: psycopg.Connection[TupleRow],
        seller: str,
        date_from: date | None = None,
        date_to: date | None = None,
        marketplace: str | None = None,
        currency: str | None = None,
    ) -> list[RefundsDay]:
        """One row per day, marketplace and currency that had refunds, oldest day first."""
        where, params = _conditions(seller, date_from, date_to, marketplace, currency, None, "day")
        query = sql.SQL(
            "SELECT day, marketplace, currency, refunds, item_amount, tax_amount, shipping_amount, total"
            " FROM refunds_daily WHERE {} ORDER BY day, marketplace, currency"
        ).format(base.all_of(where))
        return base.fetch_all(conn, RefundsDay, query, params)

    def refunded_between(
        self,
        conn: psycopg.Connection[TupleRow],
        seller: str,
        marketplace: str,
        start: datetime,
        end: datetime,
        account_id: UUID | None = None,
    ) -> list[RefundedOrder]:
        """Per order, the refunds that took effect in [start, end): what a settlement should pay back."""
        where, params = _conditions(seller, None, None, marketplace, None, None, "refunded_at", account_id)
        return base.per_order_between(
            conn, RefundedOrder, "refunds", "refunded_at", "refunds", "total", where, params, start, end
        )


def _conditions(
    seller: str,
    date_from: date | None,
    date_to: date | None,
    marketplace: str | None,
    currency: str | None,
    reason: str | None,
    time_column: str,
    account_id: UUID | None = None,
) -> tuple[list[sql.Composable], list[Any]]:
    """WHERE conditions and their parameters; on `refunded_at` a day is [00:00 UTC, next day 00:00 UTC)."""
    base.check_marketplace(marketplace, InvalidFilterError)
    if date_from is not None and date_to is not None and date_to < date_from:
        raise InvalidFilterError(f"the range ends ({date_to}) before it starts ({date_from})")
    where, params = base.seller_conditions(
        seller,
        (
            ("marketplace", marketplace),
            ("currency", currency),
            ("reason", reason),
            ("account_id", account_id),
        ),
    )
    column = sql.Identifier(time_column)
    by_day = time_column == "day"
    if date_from is not None:
        where.append(sql.SQL("{} >= %s").format(column))
        params.append(date_from if by_day else day_start(date_from))
    if date_to is not None:
        if by_day:
            where.append(sql.SQL("{} <= %s").format(column))
            params.append(date_to)
        elif (end := after_day(date_to)) is not None:  # none after 9999-12-31: nothing is later
            where.append(sql.SQL("{} < %s").format(column))
            params.append(end)
    return where, params


def encode_cursor(refunded_at: datetime, refund_id: UUID) -> str:
    """The opaque cursor of the page after this refund (newest first)."""
    raw = f"{refunded_at.isoformat()}|{refund_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    """[refunded_at, refund_id] of the last refund of the previous page."""
    try:
        if len(cursor) > MAX_CURSOR:
            raise ValueError(cursor)
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, refund_id = raw.partition("|")
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError(at)
        return [parsed, UUID(refund_id)]
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursorError(f"cursor {cursor!r} is not one this listing made") from None

"""Queries over the All Sales read model: the `GET /v1/orders` list, one order's summary and lines, tab counts.

Readers query the views `all_sales_orders`, `all_sales_lines` and `all_sales_counts` (the projection points them
at its active generation), on a connection whose search_path starts with the ledger's schema.

Pages are keyset pages on (sort key, order_id), the sort key being `purchased_at` (newest first by default),
`updated_at` or `total`, in either direction; a cursor carries its sort and the last row's key, so it stays
exact whatever the sort. Every filter's first page, and each page after it, is one index range scan of at most
limit + 1 rows, however deep the client pages. Conditions that select a
partial index (`open`, open disputes) are written into the SQL as literals, never as parameters, so that every
plan can use the partial index. List and count queries are never prepared: a prepared statement may switch to
a generic plan, which cannot see the search text and would walk the seller's whole newest-first index for a `q`
that matches one row; planning each query with its values costs well under a millisecond.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow, class_row

from ledger.aggregates.values import OrderStatus
from ledger.projections.all_sales import DISPUTES_OPEN_TAB, THIRD_PARTY_TAB
from ledger.projections.base import all_of, check_marketplace, seller_conditions

Connection = psycopg.Connection[TupleRow]

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
STATUSES: Final = (*(s.value for s in OrderStatus), THIRD_PARTY_TAB)
TABS: Final = (*STATUSES, DISPUTES_OPEN_TAB)
# `sort` values: a column, descending with a leading "-".
SORTS: Final = ("-purchased_at", "purchased_at", "-updated_at", "updated_at", "-total", "total")
DEFAULT_SORT: Final = "-purchased_at"


class InvalidFilterError(ValueError):
    """A filter value the All Sales view does not know (an unknown status, a naive datetime, ...)."""


class InvalidCursorError(ValueError):
    """A cursor this view did not make, or one that was changed on the way."""


@dataclass(frozen=True)
class SalesFilter:
    """The All Sales filters; None means "any". All given filters must hold (AND).

    `status` matches the order's tab: "unshipped" leaves Third Party Managed orders out, and
    "third_party_managed" lists them whatever their fulfillment status. `q` matches the exact marketplace order
    id, the exact buyer email (case-insensitive), or a part of the buyer name (case-insensitive).
    `purchased_from` is inclusive and `purchased_to` exclusive, so consecutive ranges neither overlap nor leave
    gaps.
    """

    account_id: UUID | None = None
    marketplace: str | None = None
    status: str | None = None
    open: bool | None = None
    dispute: Literal["open"] | None = None
    sku: str | None = None
    q: str | None = None
    purchased_from: datetime | None = None
    purchased_to: datetime | None = None
    updated_since: datetime | None = None  # inclusive: orders changed at or after this moment
    buyer_cancel_requested: bool | None = None
    attention: bool | None = None

    def __post_init__(self) -> None:
        check_marketplace(self.marketplace, InvalidFilterError)
        if self.status is not None and self.status not in STATUSES:
            raise InvalidFilterError(f"unknown status {self.status!r}; one of {', '.join(STATUSES)}")
        if self.dispute is not None and self.dispute != "open":
            raise InvalidFilterError(f"dispute filter {self.dispute!r}: only 'open' is supported")
        for name in ("purchased_from", "purchased_to", "updated_since"):
            moment = getattr(self, name)
            if moment is not None and moment.utcoffset() is None:
                raise InvalidFilterError(f"{name} needs a time zone")
        for name in (
            "sku",
            "q",
        ):  # PostgreSQL text cannot hold U+0000: the query would fail, not match nothing
            if "\x00" in (getattr(self, name) or ""):
                raise InvalidFilterError(f"{name} contains a NUL character (U+0000)")


@dataclass(frozen=True)
class OrderSummary:
    """One row of the All Sales list: exactly the fields of the API's order summary."""

    order_id: UUID
    account_id: UUID
    marketplace: str
    marketplace_order_id: str
    purchased_at: datetime
    buyer_name: str
    currency: str
    total: Decimal
    refunded_total: Decimal
    status: str
    payment_status: str
    dispute_status: str | None
    third_party_managed: bool
    open: bool
    units: int
    shipped_units: int
    cancelled_units: int
    version: int
    updated_at: datetime
    buyer_cancel_requested: bool
    attention: bool
    sync_state: str
    ship_by: datetime | None  # the marketplace's latest ship date, when its API gives one


@dataclass(frozen=True)
class LineSummary:
    """One line of an order as All Sales shows it; `refunded_amount` is item, tax and shipping together."""

    line_id: str
    sku: str
    title: str
    quantity: int
    unit_price: Decimal
    tax: Decimal
    shipping: Decimal
    shipped: int
    cancelled: int
    refunded_quantity: int
    refunded_amount: Decimal
    restocked: int


@dataclass(frozen=True)
class SalesPage:
    """One page of orders, newest purchase first; `next_cursor` is None on the last page."""

    items: list[OrderSummary]
    next_cursor: str | None


# ------------------------------------------------------------------------------------- cursors

SortKey = datetime | Decimal
_CURSOR_VERSION: Final = 2
_CURSOR_HEADER: Final = struct.Struct(">BB16s")  # version, sort (index in SORTS), order id; then the sort key
_MICROS: Final = struct.Struct(">q")  # a time key: microseconds since the epoch
_DIGEST_SIZE: Final = 8
_MAX_CURSOR_LENGTH: Final = 100
_CURSOR_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]+")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def _digest(payload: bytes) -> bytes:
    # Detects edited or truncated cursors; it is no secret, and needs none: a cursor only says where a page
    # starts, and every query is scoped to the caller's seller anyway.
    return hashlib.blake2b(payload, digest_size=_DIGEST_SIZE, person=b"ledger-sales").digest()


def check_sort(sort: str) -> str:
    if sort not in SORTS:
        raise InvalidFilterError(f"unknown sort {sort!r}; one of {', '.join(SORTS)}")
    return sort


def encode_cursor(key: SortKey, order_id: UUID, sort: str = DEFAULT_SORT) -> str:
    """The opaque cursor of the page that starts after the row with this sort key and order id."""
    if isinstance(key, datetime):
        value = _MICROS.pack((key - _EPOCH) // _MICROSECOND)
    else:
        value = str(key).encode("ascii")
    payload = _CURSOR_HEADER.pack(_CURSOR_VERSION, SORTS.index(check_sort(sort)), order_id.bytes) + value
    return base64.urlsafe_b64encode(payload + _digest(payload)).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, sort: str = DEFAULT_SORT) -> tuple[SortKey, UUID]:
    """(sort key, order_id) of the last row of the previous page; InvalidCursorError if it is not one of ours
    or was made for another sort."""
    if len(cursor) > _MAX_CURSOR_LENGTH or not _CURSOR_PATTERN.fullmatch(cursor):
        raise InvalidCursorError("malformed cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise InvalidCursorError("malformed cursor") from None
    payload, digest = raw[:-_DIGEST_SIZE], raw[-_DIGEST_SIZE:]
    if len(payload) < _CURSOR_HEADER.size or _digest(payload) != digest:
        raise InvalidCursorError("malformed cursor")
    version, sort_index, order_id = _CURSOR_HEADER.unpack_from(payload)
    if version != _CURSOR_VERSION or sort_index >= len(SORTS):
        raise InvalidCursorError("malformed cursor")
    if SORTS[sort_index] != sort:
        raise InvalidCursorError(f"the cursor was made for sort={SORTS[sort_index]}, not sort={sort}")
    value = payload[_CURSOR_HEADER.size :]
    try:
        if sort.endswith("total"):
            return Decimal(value.decode("ascii")), UUID(bytes=order_id)
        (micros,) = _MICROS.unpack(value)
        return _EPOCH + micros * _MICROSECOND, UUID(bytes=order_id)
    except (ValueError, ArithmeticError, struct.error):  # OverflowError, decimal.InvalidOperation
        raise InvalidCursorError("malformed cursor") from None


# -------------------------------------------------------------------------------------- queries

_SUMMARY_COLUMNS: Final = sql.SQL(", ").join(sql.Identifier("o", f.name) for f in fields(OrderSummary))
_LINE_COLUMNS: Final = sql.SQL(", ").join(
    sql.SQL("refunded_item + refunded_tax + refunded_shipping AS refunded_amount")
    if f.name == "refunded_amount"
    else sql.Identifier(f.name)
    for f in fields(LineSummary)
)


def _order_by(sort: str) -> tuple[sql.Composed, sql.Composed]:
    """The ORDER BY of a sort, and the keyset condition of the rows after a cursor's (two parameters)."""
    column = sql.Identifier("o", sort.lstrip("-"))
    direction, after = (
        (sql.SQL("DESC"), sql.SQL("<")) if sort.startswith("-") else (sql.SQL("ASC"), sql.SQL(">"))
    )
    # A row comparison is one index condition on (seller, key, order_id), scanned either way.
    return (
        sql.SQL("ORDER BY {0} {1}, o.order_id {1}").format(column, direction),
        sql.SQL("({}, o.order_id) {} (%s, %s)").format(column, after),
    )


_COUNT_CONDITIONS: Final = {
    "all": "true",
    **{status: f"o.tab = '{status}'" for status in STATUSES},
    DISPUTES_OPEN_TAB: "o.open_disputes > 0",
    "buyer_cancel_requested": "o.buyer_cancel_requested",
    "attention": "o.attention",
}
COUNTS: Final = tuple(_COUNT_CONDITIONS)
_COUNT_COLUMNS: Final = sql.SQL(", ").join(
    sql.SQL(f"count(*) FILTER (WHERE {condition})")  # the conditions are constants of this module
    for condition in _COUNT_CONDITIONS.values()
)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(seller: str, filters: SalesFilter) -> tuple[sql.Composed, list[Any]]:
    """The WHERE clause (over `all_sales_orders o`) and its parameters, in order."""
    conditions: list[sql.Composable] = [sql.SQL("o.seller = %s")]
    params: list[Any] = [seller]
    if filters.account_id is not None:
        conditions.append(sql.SQL("o.account_id = %s"))
        params.append(filters.account_id)
    if filters.marketplace is not None:
        conditions.append(sql.SQL("o.marketplace = %s"))
        params.append(str(filters.marketplace))
    if filters.status is not None:
        conditions.append(sql.SQL("o.tab = %s"))
        params.append(str(filters.status))
    if filters.open is not None:
        # Literal, not a parameter: the planner must see `open` to pick the partial index (WHERE open).
        conditions.append(sql.SQL("o.open") if filters.open else sql.SQL("NOT o.open"))
    if filters.dispute == "open":
        # Literal, for the partial index (WHERE open_disputes > 0); the same rule as the "disputes_open" tab.
        conditions.append(sql.SQL("o.open_disputes > 0"))
    if filters.sku is not None:
        conditions.append(
            sql.SQL(
                "EXISTS (SELECT 1 FROM all_sales_lines l"
                " WHERE l.seller = o.seller AND l.sku = %s AND l.order_id = o.order_id)"
            )
        )
        params.append(filters.sku)
    q = filters.q.strip() if filters.q is not None else ""
    if q:
        # Three arms, each with an index of its own: the planner ORs their bitmaps.
        conditions.append(
            sql.SQL(
                "(o.marketplace_order_id = %s OR lower(o.buyer_email) = lower(%s)"
                " OR lower(o.buyer_name) ILIKE %s)"
            )
        )
        params.extend([q, q, f"%{_escape_like(q)}%"])
    if filters.purchased_from is not None:
        conditions.append(sql.SQL("o.purchased_at >= %s"))
        params.append(filters.purchased_from)
    if filters.purchased_to is not None:
        conditions.append(sql.SQL("o.purchased_at < %s"))
        params.append(filters.purchased_to)
    if filters.updated_since is not None:
        conditions.append(sql.SQL("o.updated_at >= %s"))
        params.append(filters.updated_since)
    for name in ("buyer_cancel_requested", "attention"):
        wanted = getattr(filters, name)
        if wanted is not None:
            column = sql.Identifier("o", name)
            conditions.append(column if wanted else sql.SQL("NOT {}").format(column))
    return sql.SQL(" AND ").join(conditions), params


def _check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidFilterError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    return limit


class AllSalesView:
    """Read-only queries of the All Sales read model, always scoped to one seller."""

    def list_orders(
        self,
        conn: Connection,
        seller: str,
        filters: SalesFilter,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
        sort: str = DEFAULT_SORT,
    ) -> SalesPage:
        """A page of the seller's orders that match `filters`, in `sort` order (ties: order id, the same way)."""
        _check_limit(limit)
        order_by, after = _order_by(check_sort(sort))
        where, params = _where(seller, filters)
        if cursor is not None:
            where = sql.SQL("{} AND {}").format(where, after)
            params.extend(decode_cursor(cursor, sort))
        query = sql.SQL("SELECT {} FROM all_sales_orders o WHERE {} {} LIMIT %s").format(
            _SUMMARY_COLUMNS, where, order_by
        )
        with conn.cursor(row_factory=class_row(OrderSummary)) as cur:
            rows = cur.execute(query, [*params, limit + 1], prepare=False).fetchall()
        if len(rows) <= limit:
            return SalesPage(rows, None)
        items = rows[:limit]
        last = items[-1]
        return SalesPage(items, encode_cursor(getattr(last, sort.lstrip("-")), last.order_id, sort))

    def count(self, conn: Connection, seller: str, filters: SalesFilter) -> int:
        """How many of the seller's orders match `filters` (a plain count: for arbitrary filters)."""
        where, params = _where(seller, filters)
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM all_sales_orders o WHERE {}").format(where), params, prepare=False
        ).fetchone()
        return int(row[0]) if row else 0

    def counts(self, conn: Connection, seller: str, filters: SalesFilter) -> dict[str, int]:
        """`GET /v1/orders/counts`: how many of the seller's orders match `filters`, in all and per tab (every
        key of COUNTS present), `buyer_cancel_requested` and `attention` as the order's summary has them."""
        where, params = _where(seller, filters)
        query = sql.SQL("SELECT {} FROM all_sales_orders o WHERE {}").format(_COUNT_COLUMNS, where)
        row = conn.execute(query, params, prepare=False).fetchone()
        return {name: int(value) for name, value in zip(COUNTS, row or (), strict=True)}

    def get_summary(self, conn: Connection, seller: str, order_id: UUID) -> OrderSummary | None:
        """The order's summary; None if it is unknown or another seller's."""
        query = sql.SQL("SELECT {} FROM all_sales_orders o WHERE o.order_id = %s AND o.seller = %s").format(
            _SUMMARY_COLUMNS
        )
        with conn.cursor(row_factory=class_row(OrderSummary)) as cur:
            return cur.execute(query, (order_id, seller)).fetchone()

    def lines(self, conn: Connection, seller: str, order_id: UUID) -> list[LineSummary]:
        """The order's lines in the order the marketplace sent them; empty if the order is not the seller's."""
        query = sql.SQL(
            "SELECT {} FROM all_sales_lines WHERE order_id = %s AND seller = %s ORDER BY position"
        ).format(_LINE_COLUMNS)
        with conn.cursor(row_factory=class_row(LineSummary)) as cur:
            return cur.execute(query, (order_id, seller)).fetchall()

    def lines_of(self, conn: Connection, seller: str, order_ids: list[UUID]) -> dict[UUID, list[LineSummary]]:
        """The lines of several orders in one query (a page of the list), each order's in the marketplace's
        order; an order that is not the seller's has none."""
        found: dict[UUID, list[LineSummary]] = {order_id: [] for order_id in order_ids}
        if not order_ids:
            return found
        query = sql.SQL(
            "SELECT order_id, {} FROM all_sales_lines WHERE order_id = ANY(%s) AND seller = %s"
            " ORDER BY order_id, position"
        ).format(_LINE_COLUMNS)
        with conn.cursor() as cur:
            for order_id, *values in cur.execute(query, (order_ids, seller)):
                found[order_id].append(LineSummary(*values))
        return found

    def tab_counts(
        self,
        conn: Connection,
        seller: str,
        account_id: UUID | None = None,
        marketplace: str | None = None,
    ) -> dict[str, int]:
        """Orders per tab of the All Sales page (every tab present), from the incrementally kept counts."""
        check_marketplace(marketplace, InvalidFilterError)
        conditions, params = seller_conditions(
            seller,
            (("account_id", account_id), ("marketplace", None if marketplace is None else str(marketplace))),
        )
        query = sql.SQL("SELECT tab, sum(orders) FROM all_sales_counts WHERE {} GROUP BY tab").format(
            all_of(conditions)
        )
        counts = dict.fromkeys(TABS, 0)
        for tab, orders in conn.execute(query, params).fetchall():
            if tab in counts:
                counts[tab] = int(orders)
        return counts

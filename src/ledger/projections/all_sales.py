"""All Sales: one row per order across every marketplace, with its lines and the page's tab counts.

The projection folds each batch in memory (rows of the orders the batch touches are read once, written once),
so catch-up runs at thousands of events per second. Queries live in `AllSalesView` (all_sales_view.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any, ClassVar
from uuid import UUID

import msgspec
from psycopg import pq, sql

from ledger.aggregates.lines import (
    LineTally,
    OrderFigures,
    OrderState,
    attention,
    change_state,
    open_units,
    order_figures,
    order_state,
    requested_left,
    sync_state,
    unshipped_in_refund,
)
from ledger.aggregates.order import Order
from ledger.aggregates.policies import NotSent, policy_for
from ledger.aggregates.values import DisputeKind, DisputeOutcome, Marketplace, Requester, Source, SyncAction
from ledger.eventstore import keys_store
from ledger.projections.base import Cursor, Event, Projection, Tables, select_by_order

ZERO = Decimal(0)
DISPUTES_OPEN_TAB = "disputes_open"
THIRD_PARTY_TAB = "third_party_managed"


@dataclass(slots=True)
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
    def open_quantity(self) -> int:
        return open_units(self.quantity, self.shipped, self.cancelled, self.refunded_unshipped)

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


@dataclass(slots=True)
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
    ship_by: datetime | None = None  # the marketplace's latest ship date, when it gives one
    disputes: int = 0
    pending: dict[str, list[list[Any]]] = field(default_factory=dict)  # open cancellation disputes' lines
    open_claims: int = 0
    # What the order's standing with its marketplace is derived from, as the aggregate keeps it: `requested`
    # and `marketplace_cancelled` (units per line), `kinds` (dispute kinds), `voided` (shipment ids),
    # `diverged`, and `changes` ("action|reference" -> not_sent reason, accepted, answered, permanent, dead,
    # resolved).
    sync: dict[str, Any] = field(default_factory=dict)
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

    @property
    def figures(self) -> OrderFigures:
        """`state`'s fields as a tuple: what a written row takes (the same function as `order_state`)."""
        return order_figures(
            [line.tally for line in self.lines.values()],
            disputes=self.disputes,
            open_disputes=self.open_disputes,
        )

    @property
    def buyer_cancel_requested(self) -> bool:
        return any(self.sync.get("requested", {}).values())

    @property
    def change_states(self) -> list[tuple[str, str | None]]:
        voided = set(self.sync.get("voided", ()))
        states = []
        for key, change in self.sync.get("changes", {}).items():
            is_voided = bool(voided) and key.partition("|")[2] in voided
            state = change_state(
                not_sent=change["not_sent"] is not None,
                resolved=change["resolved"],
                voided=is_voided,
                accepted=change["accepted"],
                answered=change["answered"],
                permanent=change["permanent"],
                dead=change["dead"],
            )
            states.append((state, change["not_sent"] or (_VOIDED if is_voided else None)))
        return states

    def standing(self) -> tuple[bool, bool, str]:
        """(buyer_cancel_requested, attention, sync_state): the same functions as the aggregate's."""
        states = self.change_states
        diverged = bool(self.sync.get("diverged"))
        requested = self.buyer_cancel_requested
        needs = attention(
            diverged=diverged,
            marketplace_cancelled=any(self.sync.get("marketplace_cancelled", {}).values()),
            buyer_cancel_requested=requested,
            dead=any(state == "dead" for state, _ in states),
        )
        return requested, needs, sync_state(states, diverged=diverged)


_VOIDED = NotSent.VOIDED.value


def _tabs(tab: str, open_disputes: int) -> list[str]:
    """The tabs an order is listed under, from its `tab` and `open_disputes` columns."""
    return [tab, DISPUTES_OPEN_TAB] if open_disputes else [tab]


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
    "sync",
    "ship_by",
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
    "buyer_cancel_requested",
    "attention",
    "sync_state",
)


LISTED = ("tab", "open_disputes")  # where an order is listed, as its row says
Listed = tuple[str, UUID, str, list[str]]  # seller, account, marketplace, tabs
_TAB = len(ORDER_STORED) + ORDER_DERIVED.index("tab")
_OPEN_DISPUTES = len(ORDER_STORED) + ORDER_DERIVED.index("open_disputes")
_STORED = attrgetter(*ORDER_STORED)
_PENDING = ORDER_STORED.index("pending")
_SYNC = ORDER_STORED.index("sync")
line_values = attrgetter(*LINE_COLUMNS)


def line_copy_values(line: LineRow, order_id: str) -> tuple[Any, ...]:
    """A new line's columns (`LINE_COLUMNS`) for a text COPY, as psycopg's text dumpers would write them, made
    here without a call back into Python per value: the order's id as its hex text (made once per order), the
    six amounts as `str` (psycopg's text dumper of a finite Decimal sends the same; amounts are finite, see
    `values.is_valid_amount`). psycopg's formatting of a line row fell from 13.6 to 4.1 us (timeit, loaded)."""
    return (
        order_id, line.line_id, line.seller, line.sku, line.title, line.quantity, str(line.unit_price),
        str(line.tax), str(line.shipping), line.position, line.shipped, line.cancelled, line.pending_cancel,
        line.refunded_quantity, line.refunded_unshipped, str(line.refunded_item), str(line.refunded_tax),
        str(line.refunded_shipping), line.restocked,
    )  # fmt: skip


_to_json = msgspec.json.Encoder().encode  # jsonb keeps the value, not the text: the fastest encoder will do


def _order_params(row: OrderRow, *, binary: bool = False) -> tuple[Any, ...]:
    """The row's columns: stored ones, then the derived ones. `binary`: for a binary COPY (`ORDER_COPY_TYPES`),
    the jsonb columns in jsonb's binary form (version 1, then the JSON text)."""
    stored = list(_STORED(row))
    if binary:
        stored[_PENDING] = b"\x01" + _to_json(row.pending) if row.pending else b"\x01{}"
        stored[_SYNC] = b"\x01" + _to_json(row.sync)
    else:
        stored[_PENDING] = _to_json(row.pending).decode() if row.pending else "{}"
        stored[_SYNC] = _to_json(row.sync).decode()
    units, shipped_units, cancelled_units, total, refunded_total, status, is_open, dispute, open_disputes = (
        row.figures
    )
    derived = (
        status.value,
        tab_of(status.value, row.third_party_managed),
        is_open,
        dispute,
        open_disputes,
        units,
        shipped_units,
        cancelled_units,
        total,
        refunded_total,
        *row.standing(),
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
            ship_by=event.ship_by,
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


_POLICIES = {marketplace.value: policy_for(marketplace) for marketplace in Marketplace}


def _note(
    row: OrderRow,
    event: Any,
    action: SyncAction,
    reference: Any,
    dispute: tuple[DisputeKind, DisputeOutcome] | None = None,
    *,
    by_marketplace: bool = False,
) -> None:
    """A change the marketplace hears about, or why not: the same policy as `Order.note_change`."""
    reason = _POLICIES[row.marketplace].not_sent(
        action,
        third_party_managed=row.third_party_managed,
        from_marketplace=by_marketplace or event.source == Source.MARKETPLACE,
        dispute=dispute,
        sync_off=event.sync_off,
    )
    row.sync.setdefault("changes", {})[f"{action}|{reference}"] = {
        "not_sent": reason.value if reason is not None else None,
        "accepted": False,
        "answered": False,
        "permanent": False,
        "dead": False,
        "resolved": False,
    }


def _requested(row: OrderRow, line_id: str, more: int = 0) -> None:
    """A line's units a buyer asked to cancel, as `Order` keeps them (`lines.requested_left`)."""
    requested = row.sync.setdefault("requested", {})
    left = requested_left(requested.get(line_id, 0) + more, row.lines[line_id].open_quantity)
    if left:
        requested[line_id] = left
    else:
        requested.pop(line_id, None)


def _take(row: OrderRow, lines: Any) -> None:
    cancelled = row.sync.get("marketplace_cancelled", {})
    for item in lines:
        if item.line_id in cancelled:
            cancelled[item.line_id] = max(cancelled[item.line_id] - item.quantity, 0)


def _payment_cleared(row: OrderRow, event: Any) -> None:
    row.payment_status = "paid"


def _shipped(row: OrderRow, event: Any) -> None:
    for item in event.lines:
        _touch(row, item.line_id).shipped += item.quantity
        _requested(row, item.line_id)
    _note(row, event, SyncAction.SHIP, event.shipment_id)


def _shipment_voided(row: OrderRow, event: Any) -> None:
    for item in event.lines:
        _touch(row, item.line_id).shipped -= item.quantity
    row.sync.setdefault("voided", []).append(str(event.shipment_id))


def _cancellation_requested(row: OrderRow, event: Any) -> None:
    for item in event.lines:
        _requested(row, item.line_id, item.quantity)


def _cancelled(row: OrderRow, event: Any) -> None:
    for item in event.lines:
        _touch(row, item.line_id).cancelled += item.quantity
        _requested(row, item.line_id, -item.quantity)
    if event.requested_by == Requester.MARKETPLACE:
        _take(row, event.lines)
    if event.dispute_id is None:
        by_marketplace = event.requested_by == Requester.MARKETPLACE
        _note(row, event, SyncAction.CANCEL, event.cancellation_id, by_marketplace=by_marketplace)


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
        _requested(row, item.line_id)
    _note(row, event, SyncAction.REFUND, event.refund_id)
    row.sync.pop("marketplace_cancelled", None)


def _dispute_opened(row: OrderRow, event: Any) -> None:
    row.disputes += 1
    row.sync.setdefault("kinds", {})[str(event.dispute_id)] = event.kind
    if event.kind == "cancellation":
        row.pending[str(event.dispute_id)] = [[i.line_id, i.quantity] for i in event.lines]
        for item in event.lines:
            _touch(row, item.line_id).pending_cancel += item.quantity
        _note(row, event, SyncAction.CANCEL, event.dispute_id)
    else:
        row.open_claims += 1


def _dispute_closed(row: OrderRow, event: Any) -> None:
    kind = DisputeKind(row.sync.get("kinds", {}).get(str(event.dispute_id), DisputeKind.CLAIM))
    _note(row, event, SyncAction.CLOSE_DISPUTE, event.dispute_id, (kind, DisputeOutcome(event.outcome)))
    held = row.pending.pop(str(event.dispute_id), None)
    if held is None:
        row.open_claims -= 1
        return
    for line_id, quantity in held:
        _touch(row, line_id).pending_cancel -= quantity


def _restocked(row: OrderRow, event: Any) -> None:
    for item in event.lines:
        _touch(row, item.line_id).restocked += item.quantity
    row.sync.pop("marketplace_cancelled", None)


def _answered(row: OrderRow, event: Any, *, accepted: bool, permanent: bool = False) -> None:
    """A marketplace's answer, to the change it answers (a cancellation is answered as `cancel` or
    `open_dispute`; Walmart's order acknowledgement answers no change of the ledger's, and is listed too)."""
    changes = row.sync.setdefault("changes", {})
    action = SyncAction.CANCEL.value if event.action == SyncAction.OPEN_DISPUTE else event.action
    key = f"{action}|{event.reference}"
    if key not in changes and f"{event.action}|{event.reference}" in changes:
        key = f"{event.action}|{event.reference}"
    change = changes.get(key)
    if change is None:
        if event.action != SyncAction.ACKNOWLEDGE:
            return
        change = changes[key] = {"not_sent": None, "accepted": False, "answered": False, "permanent": False,
                                 "dead": False, "resolved": False}  # fmt: skip
    change["accepted"] = change["accepted"] or accepted
    if not change["accepted"]:
        change["permanent"] = permanent
    change["answered"] = True


def _acknowledged(row: OrderRow, event: Any) -> None:
    _answered(row, event, accepted=True)


def _rejected(row: OrderRow, event: Any) -> None:
    _answered(row, event, accepted=False, permanent=event.permanent)


def _sync_item(row: OrderRow, event: Any, *, resolved: bool) -> None:
    change = row.sync.get("changes", {}).get(f"{event.action}|{event.reference}")
    if change is not None:
        change["dead"] = not resolved
        change["resolved"] = change["resolved"] or resolved


def _item_died(row: OrderRow, event: Any) -> None:
    _sync_item(row, event, resolved=False)


def _item_resolved(row: OrderRow, event: Any) -> None:
    _sync_item(row, event, resolved=True)


def _marketplace_cancelled(row: OrderRow, event: Any) -> None:
    cancelled = row.sync.setdefault("marketplace_cancelled", {})
    for item in event.lines:
        cancelled[item.line_id] = cancelled.get(item.line_id, 0) + item.quantity


def _divergence_found(row: OrderRow, event: Any) -> None:
    row.sync["diverged"] = bool(event.divergences)


def _divergence_resolved(row: OrderRow, event: Any) -> None:
    row.sync.pop("diverged", None)


_HANDLERS = {
    Order.PaymentCleared: _payment_cleared,
    Order.Shipped: _shipped,
    Order.ShipmentVoided: _shipment_voided,
    Order.Cancelled: _cancelled,
    Order.Refunded: _refunded,
    Order.DisputeOpened: _dispute_opened,
    Order.DisputeClosed: _dispute_closed,
    Order.Restocked: _restocked,
    Order.CancellationRequested: _cancellation_requested,
    Order.MarketplaceAcknowledged: _acknowledged,
    Order.MarketplaceRejected: _rejected,
    Order.SyncItemDied: _item_died,
    Order.SyncItemResolved: _item_resolved,
    Order.MarketplaceCancelled: _marketplace_cancelled,
    Order.DivergenceFound: _divergence_found,
    Order.DivergenceResolved: _divergence_resolved,
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
            "integer", "timestamptz", "integer", "jsonb", "integer", "jsonb", "timestamptz",
            "text", "text", "boolean", "text", "integer", "integer", "integer", "integer", "numeric", "numeric",
            "boolean", "boolean", "text",
        ),
        strict=True,
    )
)  # fmt: skip
# How a binary COPY of new order rows dumps each column: as the table's type, but the jsonb columns with bytea's
# dumper, which sends `_order_params(binary=True)`'s bytes as they are (jsonb's own dumper would encode a value).
# Binary, because psycopg's binary dumpers of UUIDs and times cost less than their text, and PostgreSQL reads
# binary times and decimals faster than it parses them (measured: psycopg's formatting of an order row 5.9 -> 2.6
# us, PostgreSQL's COPY of a rebuild's 12,000 order rows 112 -> 74 ms, medians). Lines stay text: with six
# decimals a row their binary formatting cost more (1.9 -> 3.6 us) and PostgreSQL's COPY took about as long.
# (A COPY text line written per row by a generated f-string cost more than psycopg's text formatting.)
ORDER_COPY_TYPES = ["bytea" if kind == "jsonb" else kind for kind in ORDER_TYPES.values()]
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


FEW_ROWS = 64  # below this, an upsert per row (pipelined) rather than COPY through a staging table

# Statements by (table, kind), rendered once: composing a 31-column upsert cost more than a live batch's writes.
_STATEMENTS: dict[tuple[str, str], bytes] = {}


def _statement(cur: Cursor, table: str, kind: str, types: dict[str, str], key: tuple[str, ...]) -> bytes:
    found = _STATEMENTS.get((table, kind))
    if found is not None:
        return found
    columns = sql.SQL(", ").join(map(sql.Identifier, types))
    target = sql.Identifier(f"{table}_stage" if kind in ("stage", "stage_copy", "merge") else table)
    on_conflict = sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(
        sql.SQL(", ").join(map(sql.Identifier, key)),
        sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in types if c not in key
        ),
    )
    statements = {
        "copy": "COPY {target} ({columns}) FROM STDIN",
        "copy_binary": "COPY {target} ({columns}) FROM STDIN (FORMAT BINARY)",
        "stage": "CREATE TEMPORARY TABLE IF NOT EXISTS {target} AS SELECT {columns} FROM {table} WITH NO DATA",
        "truncate": "TRUNCATE {target}",
        "stage_copy": "COPY {target} ({columns}) FROM STDIN",
        "merge": "INSERT INTO {table} ({columns}) SELECT {columns} FROM {target}{on_conflict}",
        "upsert": "INSERT INTO {table} ({columns}) VALUES ({values}){on_conflict}",
    }
    statement = sql.SQL(statements[kind]).format(
        target=target if kind != "truncate" else sql.Identifier(f"{table}_stage"),
        table=sql.Identifier(table),
        columns=columns,
        values=sql.SQL(", ").join(sql.Placeholder() * len(types)),
        on_conflict=on_conflict,
    )
    found = _STATEMENTS[(table, kind)] = statement.as_bytes(cur)
    return found


def _can_copy(cur: Cursor) -> bool:
    """COPY cannot run in pipeline mode (a live worker's small batch: see `Projection.pipelined`)."""
    return cur.connection.pgconn.pipeline_status == pq.PipelineStatus.OFF


def _copies_fresh(cur: Cursor, rows: int) -> bool:
    """Whether `_write_rows` COPYs this many fresh rows straight into the table."""
    return rows >= FEW_ROWS and _can_copy(cur)


def _write_rows(
    cur: Cursor,
    table: str,
    types: dict[str, str],
    key: tuple[str, ...],
    fresh: list[tuple[Any, ...]],
    changed: list[tuple[Any, ...]],
    copy_types: list[str] | None = None,
    *,
    copied: bool = False,
) -> None:
    """Write a batch's rows: `fresh` ones (of orders imported in this batch: no row can exist for them) and
    `changed` ones (upserted). Many fresh rows are COPYed straight into the table (a rebuild's usual case:
    no staging table, no conflict check); many changed rows go through a temporary staging table (COPY, then
    one INSERT ... ON CONFLICT from it); a live batch's few rows go in with one pipelined upsert each (the
    staging table's TRUNCATE and COPY cost more than they save). `copy_types`: the fresh rows are made for a
    binary COPY with these dumpers; `copied`: the fresh rows are COPYed as they are, in text. The caller decides
    either by `_copies_fresh`, as it makes the rows for it (`ORDER_COPY_TYPES`, `line_copy_values`)."""
    if copy_types is not None:
        with cur.copy(_statement(cur, table, "copy_binary", types, key)) as copy:
            copy.set_types(copy_types)
            for row in fresh:
                copy.write_row(row)
    elif copied:
        with cur.copy(_statement(cur, table, "copy", types, key)) as copy:
            for row in fresh:
                copy.write_row(row)
    else:
        changed = fresh + changed
    if not changed:
        return
    if len(changed) < FEW_ROWS or not _can_copy(cur):
        cur.executemany(_statement(cur, table, "upsert", types, key), changed)
        return
    cur.execute(_statement(cur, table, "stage", types, key))
    cur.execute(_statement(cur, table, "truncate", types, key))
    with cur.copy(_statement(cur, table, "stage_copy", types, key)) as copy:
        for row in changed:
            copy.write_row(row)
    cur.execute(_statement(cur, table, "merge", types, key))


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


def _upgrade_orders_table(cur: Cursor, orders: sql.Composable) -> None:
    """Bring a generation made before the order's standing with its marketplace was stored to today's shape:
    its rows read not requested, no attention, `in_sync` until their orders change or a rebuild folds them;
    and before `ship_by` was kept: its rows have none (their imports, stored before, carry none either).
    Checked first, so a live table of today's shape is never locked for it."""
    row = cur.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'ship_by' AND NOT attisdropped",
        (orders.as_string(cur),),
    ).fetchone()
    if row is not None:
        return
    cur.execute(
        sql.SQL(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS sync jsonb NOT NULL DEFAULT '{{}}',"
            " ADD COLUMN IF NOT EXISTS buyer_cancel_requested boolean NOT NULL DEFAULT false,"
            " ADD COLUMN IF NOT EXISTS attention boolean NOT NULL DEFAULT false,"
            " ADD COLUMN IF NOT EXISTS sync_state text NOT NULL DEFAULT 'in_sync',"
            " ADD COLUMN IF NOT EXISTS ship_by timestamptz"
        ).format(orders)
    )


UNANALYZED = ("pending", "sync")
"""Columns without planner statistics: JSON only ever returned, never in a condition, a join, a sort or a group;
ANALYZE sorting their jsonb values was about half of its time on the orders table (260 of 470-650 ms for a
rebuild's 13,334 rows, measured with psql), which a rebuild spends before its swap."""


def _no_statistics_for_json(cur: Cursor, orders: sql.Composable) -> None:
    """`SET STATISTICS 0` for the `UNANALYZED` columns. Checked first, so a live table that has it already is
    never locked for it (a table of before takes SHARE UPDATE EXCLUSIVE once, which readers and writers allow)."""
    row = cur.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass AND attname = ANY(%s)"
        " AND attstattarget IS DISTINCT FROM 0",
        (orders.as_string(cur), list(UNANALYZED)),
    ).fetchone()
    if row is None:
        return
    cur.execute(
        sql.SQL("ALTER TABLE {} {}").format(
            orders,
            sql.SQL(", ").join(
                sql.SQL("ALTER COLUMN {} SET STATISTICS 0").format(sql.Identifier(c)) for c in UNANALYZED
            ),
        )
    )


class AllSalesProjection(Projection):
    name: ClassVar[str] = "all_sales"
    tables: ClassVar[tuple[str, ...]] = ("all_sales_orders", "all_sales_lines", "all_sales_counts")
    topics: ClassVar[tuple[str, ...]] = ()
    handles: ClassVar[tuple[type, ...]] = (Order.Event,)  # every order event moves version and updated_at
    pipelined: ClassVar[bool] = True

    def create_tables(self, cur: Cursor, t: Tables) -> None:
        for statement in self._ddl(cur, t, indexes=False):
            cur.execute(statement)
        _upgrade_orders_table(cur, t["all_sales_orders"])
        _no_statistics_for_json(cur, t["all_sales_orders"])

    def create_indexes(self, cur: Cursor, t: Tables) -> None:
        for statement in self._ddl(cur, t, indexes=True):
            cur.execute(statement)

    def index_statements(self, cur: Cursor, t: Tables) -> list[sql.Composed]:
        return self._ddl(cur, t, indexes=True)

    def _ddl(self, cur: Cursor, t: Tables, *, indexes: bool) -> list[sql.Composed]:
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
                cancelled_units integer NOT NULL, total numeric NOT NULL, refunded_total numeric NOT NULL,
                sync jsonb NOT NULL DEFAULT '{{}}', buyer_cancel_requested boolean NOT NULL DEFAULT false,
                attention boolean NOT NULL DEFAULT false, sync_state text NOT NULL DEFAULT 'in_sync',
                ship_by timestamptz
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
            # The longest build first: a rebuild's connections take the next index as they finish one.
            "CREATE INDEX IF NOT EXISTS {ix_name} ON {orders} USING gin (lower(buyer_name) {trgm}.gin_trgm_ops)",
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
        return [
            sql.SQL(statement).format(**names)
            for statement in (statements[3:] if indexes else statements[:3])
        ]

    def apply(self, cur: Cursor, t: Tables, events: Sequence[Event]) -> None:
        by_order: dict[UUID, list[Any]] = {}
        for item in events:
            by_order.setdefault(item.event.originator_id, []).append(item.event)
        existing = [oid for oid, evs in by_order.items() if not isinstance(evs[0], Order.Imported)]
        rows, before = self._load(cur, t, existing)
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
        tabs = self._write(cur, t, list(changed.values()), rows)
        self._count(cur, t, before, changed, tabs)

    def _load(
        self, cur: Cursor, t: Tables, order_ids: list[UUID]
    ) -> tuple[dict[UUID, OrderRow], dict[UUID, Listed]]:
        """The rows of these orders, and where each is listed now (its stored tab columns: what the counts
        counted it under)."""
        rows: dict[UUID, OrderRow] = {}
        listed: dict[UUID, Listed] = {}
        for record in select_by_order(cur, t["all_sales_orders"], (*ORDER_STORED, *LISTED), order_ids):
            values = dict(zip(ORDER_STORED, record, strict=False))
            row = rows[values["order_id"]] = OrderRow(**values)
            listed[row.order_id] = (row.seller, row.account_id, row.marketplace, _tabs(*record[-2:]))
        for record in select_by_order(
            cur, t["all_sales_lines"], LINE_COLUMNS, order_ids, order_by="position"
        ):
            line = LineRow(*record)
            line.dirty = False
            rows[line.order_id].lines[line.line_id] = line
        return rows, listed

    def _write(
        self, cur: Cursor, t: Tables, rows: list[OrderRow], loaded: dict[UUID, OrderRow]
    ) -> list[list[str]]:
        """At most one COPY and one upsert per table for the whole batch; only lines that changed are written.
        Rows not `loaded` are of orders imported in this batch: new rows. Returns each row's tabs, read from
        the derived columns written (the state is derived once)."""
        fresh_rows = [row for row in rows if row.order_id not in loaded]
        binary = _copies_fresh(cur, len(fresh_rows))
        lines_copied = _copies_fresh(cur, sum(len(row.lines) for row in fresh_rows))
        order_values: list[tuple[Any, ...]] = []
        fresh_orders: list[tuple[Any, ...]] = []
        changed_orders: list[tuple[Any, ...]] = []
        fresh_lines: list[tuple[Any, ...]] = []
        changed_lines: list[tuple[Any, ...]] = []
        for row in rows:
            if row.order_id in loaded:
                values = _order_params(row)
                changed_orders.append(values)
                changed_lines.extend(line_values(line) for line in row.lines.values() if line.dirty)
            else:
                values = _order_params(row, binary=binary)
                fresh_orders.append(values)
                if lines_copied:
                    order_id = row.order_id.hex
                    fresh_lines.extend(line_copy_values(line, order_id) for line in row.lines.values())
                else:
                    fresh_lines.extend(map(line_values, row.lines.values()))
            order_values.append(values)
        copy_types = ORDER_COPY_TYPES if binary else None
        orders = t.name("all_sales_orders")
        _write_rows(cur, orders, ORDER_TYPES, ("order_id",), fresh_orders, changed_orders, copy_types)
        lines_key = ("order_id", "line_id")
        lines = t.name("all_sales_lines")
        _write_rows(cur, lines, LINE_TYPES, lines_key, fresh_lines, changed_lines, copied=lines_copied)
        return [_tabs(values[_TAB], values[_OPEN_DISPUTES]) for values in order_values]

    def _count(
        self,
        cur: Cursor,
        t: Tables,
        before: dict[UUID, Listed],
        changed: dict[UUID, OrderRow],
        tabs_now: list[list[str]],
    ) -> None:
        deltas: dict[tuple[str, UUID, str, str], int] = {}
        for (order_id, row), now in zip(changed.items(), tabs_now, strict=True):
            if order_id in before:
                seller, account_id, marketplace, tabs = before[order_id]
                for tab in tabs:
                    key = (seller, account_id, marketplace, tab)
                    deltas[key] = deltas.get(key, 0) - 1
            for tab in now:
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

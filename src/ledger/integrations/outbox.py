"""The outbound queue (`outbound_items`): the one module that writes its rows, and the typed messages in them.

Who calls what:

- the outbound projection (`outbound.py`) folds events into new items and hands them to `enqueue`,
  and the marketplace's answers (recorded as events) to `lock_answered`, `settle` and `record_answers`, inside
  its own batch transaction, so each event is applied exactly once; `carry_over` at a rebuild's swap;
- the dispatcher `claim`s a due item, and `finish`es it with the marketplace's answer; `skip_historic` on a
  first install; `replay_order` for `ledger sync replay`;
- the API and the CLI read through `OutboundView` (always within one seller), and an operator retries a
  failed or dead item with `OutboundView.retry`.

One message type per action (`Ship`, `Cancel`, `Refund`, `CloseDispute`, `Acknowledge`), stored as the row's
JSON `payload` and decoded here, once, into the Struct the adapters take.

One clock. The dispatcher's claim and its `finish` are fenced by the claim's own stamp (`updated_at` as the
database set it), compared for equality only. Whether a marketplace's answer (an event) may still change an
item never compares times: an item the dispatcher has claimed (`attempts > 0`) is the dispatcher's, and an
answer settles it only while it is in flight (its dispatcher recorded the answer and died before finishing
the row); an item never claimed (a rebuild's new generation) follows the answers in log order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import TupleRow, class_row
from psycopg.types.json import Jsonb

from ledger.aggregates.errors import RuleViolationError
from ledger.aggregates.order import Order
from ledger.aggregates.values import SyncAction
from ledger.projections import base
from ledger.projections.base import Cursor, insert_rows, select_by_order

Connection = psycopg.Connection[TupleRow]

PENDING, IN_FLIGHT, SUCCEEDED, FAILED, DEAD = "pending", "in_flight", "succeeded", "failed", "dead"
RESOLVED = "resolved"  # dead, then settled by an operator by hand (the marketplace was told some other way)
STATES = (PENDING, IN_FLIGHT, SUCCEEDED, FAILED, DEAD, RESOLVED)
RETRIABLE = (FAILED, DEAD)  # what an operator may put back in the queue
MAX_LIMIT = 500

# ------------------------------------------------------------------------------------------ messages

ZERO = Decimal(0)


class Line(msgspec.Struct, frozen=True, kw_only=True):
    """Units of one order line: the marketplace's line id, the seller's SKU."""

    line_id: str
    sku: str = ""
    quantity: int


class RefundLine(Line, frozen=True, kw_only=True):
    item_amount: Decimal = ZERO
    tax_amount: Decimal = ZERO
    shipping_amount: Decimal = ZERO
    total: Decimal = ZERO


class Ship(msgspec.Struct, frozen=True, kw_only=True):
    marketplace_order_id: str
    shipment_id: str = ""
    carrier: str = ""
    tracking_number: str
    shipping_class: str | None = None
    shipped_at: datetime
    lines: tuple[Line, ...] = ()


class Cancel(msgspec.Struct, frozen=True, kw_only=True):
    """A seller's cancellation (`cancellation_id`), or the request that opens an eBay cancellation dispute
    (`dispute_id`). `restock`: put the units back in the marketplace's stock (only Rakuten takes it)."""

    marketplace_order_id: str
    cancellation_id: str | None = None
    dispute_id: str | None = None
    reason: str | None = None
    requested_by: str = "seller"
    restock: bool = False
    lines: tuple[Line, ...] = ()


class Refund(msgspec.Struct, frozen=True, kw_only=True):
    marketplace_order_id: str
    refund_id: str = ""
    reason: str | None = None
    currency: str
    item_amount: Decimal = ZERO
    tax_amount: Decimal = ZERO
    shipping_amount: Decimal = ZERO
    total: Decimal = ZERO
    lines: tuple[RefundLine, ...] = ()


class CloseDispute(msgspec.Struct, frozen=True, kw_only=True):
    marketplace_order_id: str
    dispute_id: str = ""
    kind: str | None = None
    marketplace_dispute_id: str | None = None
    outcome: str | None = None


class Acknowledge(msgspec.Struct, frozen=True, kw_only=True):
    """Walmart: the seller has the order (it cancels orders left unacknowledged)."""

    marketplace_order_id: str
    lines: tuple[Line, ...] = ()


Message = Ship | Cancel | Refund | CloseDispute | Acknowledge

MESSAGES: dict[str, type[Message]] = {
    SyncAction.SHIP.value: Ship,
    SyncAction.CANCEL.value: Cancel,
    SyncAction.REFUND.value: Refund,
    SyncAction.CLOSE_DISPUTE.value: CloseDispute,
    SyncAction.ACKNOWLEDGE.value: Acknowledge,
}


def decode(action: str, payload: Any) -> Message:
    """A row's payload as its action's message (unknown fields ignored: rows written by older releases)."""
    return msgspec.convert(payload, MESSAGES[action])


def payload_of(message: Message) -> dict[str, Any]:
    """The message as the row's JSON: amounts as decimal strings, times as `isoformat` writes them."""
    data: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(message))
    for name in message.__struct_fields__:  # msgspec writes UTC as "Z"; stored rows have "+00:00"
        value = getattr(message, name)
        if isinstance(value, datetime):
            data[name] = value.isoformat()
    return data


# ------------------------------------------------------------------------------------- dependencies


def waits_for(later: Message, earlier: Message) -> bool:
    """THE dependency rule: whether `later` may go out only once the marketplace has `earlier`, an older item
    of the same order. Nothing else waits: a slow, failing or dead item holds back only what depends on it.

    - after an acknowledgement, everything (Walmart takes nothing about an order it was not told the seller has);
    - a refund after the shipment it refunds (lines in common; a refund without lines refunds the whole order);
    - a cancellation after an earlier cancellation of the same lines;
    - closing a cancellation dispute after the request that opened it.
    """
    if isinstance(earlier, Acknowledge):
        return True
    if isinstance(later, Refund) and isinstance(earlier, Ship):
        return _share_lines(later.lines, earlier.lines)
    if isinstance(later, Cancel) and isinstance(earlier, Cancel):
        return _share_lines(later.lines, earlier.lines)
    if isinstance(later, CloseDispute) and isinstance(earlier, Cancel):
        return earlier.dispute_id is not None and earlier.dispute_id == later.dispute_id
    return False


def _share_lines(a: tuple[Line, ...], b: tuple[Line, ...]) -> bool:
    """Whether two changes touch a line in common (no lines: the whole order)."""
    return not a or not b or not {line.line_id for line in a}.isdisjoint(line.line_id for line in b)


# An item that no longer holds back what depends on it: the marketplace has it, an operator resolved it by
# hand, or it was skipped at first install (never sent, on purpose). `{e}`: the item's alias.
_DONE = (
    "({e}.state IN ('succeeded', 'resolved')"
    " OR ({e}.state = 'dead' AND {e}.attempts = 0 AND {e}.last_error LIKE 'skipped:%%'))"
)


# ---------------------------------------------------------------------------------- the projection's side


@dataclass
class ItemRow:
    """One row of the queue as the projection makes it; `payload` decoded."""

    id: UUID
    idempotency_key: str
    order_id: UUID
    seller: str
    account_id: UUID
    marketplace: str
    action: str
    reference: str
    payload: Message
    sequence: int
    position: int
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    marketplace_reference: str | None
    created_at: datetime
    updated_at: datetime
    depends_on: list[UUID] = field(
        default_factory=list
    )  # earlier items of the order it waits for (`waits_for`)


ITEM_COLUMNS = tuple(f.name for f in fields(ItemRow))
# What a marketplace's answer, or the dispatcher, changes; the rest is fixed when the item is made.
OUTCOME_COLUMNS = (
    "state",
    "attempts",
    "next_attempt_at",
    "last_error",
    "marketplace_reference",
    "updated_at",
)


@dataclass
class OrderRow:
    """What the queue needs to know about an order to build its items (a row of `outbound_orders`)."""

    order_id: UUID
    seller: str
    account_id: UUID
    marketplace: str
    marketplace_order_id: str
    currency: str
    third_party_managed: bool
    skus: dict[str, str]
    disputes: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> kind, marketplace id
    next_sequence: int = 1


ORDER_COLUMNS = tuple(f.name for f in fields(OrderRow))


def create_tables(cur: Cursor, orders: sql.Identifier, items: sql.Identifier) -> None:
    """The queue's tables of one generation of the outbound projection (IF NOT EXISTS)."""
    states = sql.SQL(", ").join(map(sql.Literal, STATES))
    for statement in (
        """CREATE TABLE IF NOT EXISTS {orders} (
            order_id uuid PRIMARY KEY, seller text NOT NULL, account_id uuid NOT NULL,
            marketplace text NOT NULL, marketplace_order_id text NOT NULL, currency text NOT NULL,
            third_party_managed boolean NOT NULL, skus jsonb NOT NULL, disputes jsonb NOT NULL,
            next_sequence integer NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS {items} (
            id uuid PRIMARY KEY, idempotency_key text NOT NULL UNIQUE, order_id uuid NOT NULL,
            seller text NOT NULL, account_id uuid NOT NULL, marketplace text NOT NULL,
            action text NOT NULL, reference text NOT NULL, payload jsonb NOT NULL,
            sequence integer NOT NULL, position bigint NOT NULL,
            state text NOT NULL DEFAULT 'pending' CHECK (state IN ({states})),
            attempts integer NOT NULL DEFAULT 0, next_attempt_at timestamptz NOT NULL,
            last_error text, marketplace_reference text,
            created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
            depends_on uuid[] NOT NULL DEFAULT '{{}}',
            UNIQUE (order_id, sequence)
        )""",
    ):
        cur.execute(sql.SQL(statement).format(orders=orders, items=items, states=states))
    _upgrade_items_table(cur, items, states)


def _upgrade_items_table(cur: Cursor, items: sql.Identifier, states: sql.Composable) -> None:
    """Bring a generation made by release 0.1.0 (no `depends_on`, no `resolved` state) to today's shape.

    Each unfinished item then depends on every earlier unfinished item of its order: the head-of-line rule it
    was queued under, so nothing goes out of order across the upgrade (a rebuild computes the finer
    dependencies). Checked first, so a live table of today's shape is never locked for it.
    """
    table = items.as_string(cur)
    row = cur.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'depends_on'"
        " AND NOT attisdropped",
        (table,),
    ).fetchone()
    if row is not None:
        return
    checks = cur.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c'"
        " AND pg_get_constraintdef(oid) LIKE %s",
        (table, "%state%"),
    ).fetchall()
    for (name,) in checks:
        cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(items, sql.Identifier(name)))
    cur.execute(
        sql.SQL(
            "ALTER TABLE {items} ADD COLUMN depends_on uuid[] NOT NULL DEFAULT '{{}}',"
            " ADD CHECK (state IN ({states}))"
        ).format(items=items, states=states)
    )
    cur.execute(
        sql.SQL(
            "UPDATE {items} i SET depends_on = coalesce((SELECT array_agg(e.id ORDER BY e.sequence)"
            " FROM {items} e WHERE e.order_id = i.order_id AND e.sequence < i.sequence AND NOT {done}), '{{}}')"
            " WHERE NOT {done_i}"
        ).format(items=items, done=sql.SQL(_DONE.format(e="e")), done_i=sql.SQL(_DONE.format(e="i")))
    )


def load_orders(cur: Cursor, order_ids: list[UUID], table: sql.Identifier) -> dict[UUID, OrderRow]:
    rows = select_by_order(cur, table, ORDER_COLUMNS, order_ids)
    return {record[0]: OrderRow(*record) for record in rows}


def save_orders(cur: Cursor, orders: list[OrderRow], table: sql.Identifier) -> None:
    """Insert new orders, or update the disputes and next sequence of known ones, in the caller's transaction."""
    insert_rows(
        cur,
        table,
        ORDER_COLUMNS,
        [_order_params(row) for row in orders],
        on_conflict=("order_id",),
        update=("disputes", "next_sequence"),
    )


def _order_params(row: OrderRow) -> tuple[Any, ...]:
    values = [getattr(row, c) for c in ORDER_COLUMNS]
    values[ORDER_COLUMNS.index("skus")] = Jsonb(row.skus)
    values[ORDER_COLUMNS.index("disputes")] = Jsonb(row.disputes)
    return tuple(values)


def enqueue(cur: Cursor, items: list[ItemRow], table: sql.Identifier) -> None:
    """Insert new items, in the caller's transaction (the projection's batch)."""
    insert_rows(cur, table, ITEM_COLUMNS, [_item_params(item) for item in items])


def _item_params(item: ItemRow) -> tuple[Any, ...]:
    values = [getattr(item, c) for c in ITEM_COLUMNS]
    values[ITEM_COLUMNS.index("payload")] = Jsonb(payload_of(item.payload))
    return tuple(values)


def lock_answered(cur: Cursor, ids: list[UUID], table: sql.Identifier) -> dict[UUID, ItemRow]:
    """The items answers in a batch are about, locked: the dispatcher waits rather than interleaves."""
    if not ids:
        return {}
    cur.execute(
        sql.SQL("SELECT {} FROM {} WHERE id = ANY(%s) ORDER BY id FOR UPDATE").format(
            sql.SQL(", ").join(map(sql.Identifier, ITEM_COLUMNS)), table
        ),
        (ids,),
    )
    return {item.id: item for item in map(_item_row, cur.fetchall())}


def load_order_items(cur: Cursor, order_ids: list[UUID], table: sql.Identifier) -> dict[UUID, list[ItemRow]]:
    """The orders' items, each order's in sequence: what a new item of theirs may wait for."""
    found: dict[UUID, list[ItemRow]] = {order_id: [] for order_id in order_ids}
    for record in select_by_order(cur, table, ITEM_COLUMNS, order_ids, order_by="sequence"):
        item = _item_row(record)
        found[item.order_id].append(item)
    return found


def _item_row(record: tuple[Any, ...]) -> ItemRow:
    values = list(record)
    payload = ITEM_COLUMNS.index("payload")
    values[payload] = decode(values[ITEM_COLUMNS.index("action")], values[payload])
    return ItemRow(*values)


def settle(item: ItemRow, event: Any) -> bool:
    """Record a marketplace's answer (MarketplaceAcknowledged or MarketplaceRejected) on its item; whether
    anything changed.

    An item the dispatcher has claimed is the dispatcher's: it marks what it was answered itself, and an
    operator's retry or `ledger sync replay` after an answer means "send it again" (the marketplace's dedupe
    key makes that safe). So an answer changes a claimed item only while it is still in flight (its dispatcher
    died between recording the answer and finishing the row). Otherwise an acceptance wins (it is the
    marketplace's word); a rejection never overrides a success; a transient rejection marks a waiting item
    failed. Attempts are the dispatcher's count, left alone.
    """
    if item.attempts > 0 and item.state != IN_FLIGHT:
        return False
    if isinstance(event, Order.MarketplaceAcknowledged):
        if item.state == SUCCEEDED:
            return False
        item.state = SUCCEEDED
        item.marketplace_reference = event.marketplace_reference
    elif item.state == SUCCEEDED:
        return False
    elif event.permanent:
        item.state = DEAD
        item.last_error = f"{event.error_code}: {event.message}"
    elif item.state in (PENDING, FAILED):
        item.state = FAILED
        item.last_error = f"{event.error_code}: {event.message}"
    else:
        return False
    item.updated_at = event.timestamp
    return True


def record_answers(cur: Cursor, items: list[ItemRow], table: sql.Identifier) -> None:
    """Write what `settle` changed on existing items, in the caller's transaction."""
    if not items:
        return
    cur.executemany(
        sql.SQL("UPDATE {} SET {} WHERE id = %s").format(
            table,
            sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in OUTCOME_COLUMNS),
        ),
        [(*(getattr(item, c) for c in OUTCOME_COLUMNS), item.id) for item in items],
    )


def carry_over(cur: Cursor, old: sql.Identifier, new: sql.Identifier) -> None:
    """At a rebuild's swap, keep what the dispatcher did: its row wins, unless it never touched the item, or
    the item is still in flight there while the answers (events) settled it (succeeded, dead)."""
    assignments = sql.SQL(", ").join(
        sql.SQL("{0} = o.{0}").format(sql.Identifier(c)) for c in OUTCOME_COLUMNS
    )
    cur.execute(
        sql.SQL(
            "UPDATE {new} AS n SET {assignments} FROM {old} AS o WHERE n.id = o.id"
            " AND NOT (o.state = 'pending' AND o.attempts = 0)"
            " AND NOT (n.state IN ('succeeded', 'dead') AND o.state = 'in_flight')"
        ).format(new=new, old=old, assignments=assignments)
    )


# ---------------------------------------------------------------------------------- the dispatcher's side


@dataclass(frozen=True)
class Claimed:
    """An item a dispatcher holds: `claimed_at` (its updated_at, the database's time) fences later writes."""

    id: UUID
    order_id: UUID
    account_id: UUID
    marketplace: str
    action: str
    reference: str
    idempotency_key: str
    payload: dict[str, Any]
    attempts: int
    marketplace_reference: str | None
    claimed_at: datetime

    def message(self) -> Message:
        """The payload as its action's message (a row it cannot decode raises, as an adapter error would)."""
        return decode(self.action, self.payload)


_CLAIM = """
WITH candidate AS (
    SELECT i.id FROM outbound_items i
    WHERE i.state = %(state)s AND i.next_attempt_at <= now()
      AND i.marketplace <> ALL(%(unconfigured)s)
      AND NOT (ARRAY[
          concat_ws('|', i.account_id::text, i.marketplace || '.' || i.action, {mode}),
          concat_ws('|', '*', i.marketplace || '.' || i.action, {mode})
      ] && %(blocked)s::text[])
      AND NOT EXISTS (SELECT 1 FROM outbound_items e WHERE e.id = ANY(i.depends_on) AND NOT {done})
    ORDER BY i.next_attempt_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE outbound_items u SET
    state = 'in_flight',
    attempts = u.attempts + CASE WHEN u.state = 'in_flight' AND u.marketplace_reference IS NOT NULL
                                 THEN 0 ELSE 1 END,
    next_attempt_at = now() + make_interval(secs => %(lease)s),
    updated_at = now()
FROM candidate c WHERE u.id = c.id
RETURNING u.id, u.order_id, u.account_id, u.marketplace, u.action, u.reference, u.idempotency_key,
          u.payload, u.attempts, u.marketplace_reference, u.updated_at
""".replace("{mode}", "CASE WHEN i.marketplace_reference IS NULL THEN 'send' ELSE 'poll' END").replace(
    "{done}", _DONE.format(e="e")
)

_FINISH = """
UPDATE outbound_items SET state = %(state)s, next_attempt_at = now() + make_interval(secs => %(delay)s),
    last_error = coalesce(%(error)s, last_error), marketplace_reference = %(reference)s, updated_at = now()
WHERE id = %(id)s AND state = 'in_flight' AND updated_at = %(claimed_at)s
"""

_SKIP_HISTORIC = """
UPDATE outbound_items SET state = 'dead', updated_at = now(),
    last_error = 'skipped: made before LEDGER_SYNC_SINCE (' || %(since)s || '); retry it to send it'
WHERE state = 'pending' AND attempts = 0 AND created_at < %(since_at)s AND updated_at < %(since_at)s
"""


def claim_key(account: str, marketplace: str, action: str, *, polling: bool) -> str:
    """How `claim` names the items `blocked` holds back: `account|marketplace.action|send` (or `|poll`, an
    item the marketplace took for later, asked after with another call); account `*`: every account's."""
    return f"{account}|{marketplace}.{action}|{'poll' if polling else 'send'}"


def claim(
    conn: Connection, state: str, unconfigured: list[str], blocked: list[str], lease: float
) -> Claimed | None:
    """Take the due item in `state` with the earliest `next_attempt_at` none of whose dependencies
    (`depends_on`, by `waits_for`) is unfinished, whose marketplace is not `unconfigured`, and that `blocked` (`claim_key`s: the rate limiter's
    empty buckets) does not hold back; None: none is due.

    One state per query, so the scan follows the queue's index on (state, next_attempt_at) and stops at the
    first item it may take, however long the backlog. The claim counts one attempt (not a poll's) and holds the
    item for `lease` seconds: a dispatcher that dies holding it lets another take it once the lease runs out.
    """
    try:
        with conn.transaction():
            params = {"state": state, "unconfigured": unconfigured, "blocked": blocked, "lease": lease}
            row = conn.execute(_CLAIM, params).fetchone()
    except pg_errors.UndefinedTable:  # the outbound projection has not run yet: no queue, nothing due
        return None
    return None if row is None else Claimed(*row)


def finish(
    conn: Connection,
    item: Claimed,
    state: str,
    *,
    delay: float = 0.0,
    error: str | None = None,
    reference: str | None = None,
) -> bool:
    """Record how a claimed item ended (or, `in_flight`, when to look again); False: the item changed since
    the claim (an answer settled it, or the lease ran out and another dispatcher took it)."""
    with conn.transaction():
        cur = conn.execute(
            _FINISH,
            {
                "state": state,
                "delay": delay,
                "error": error,
                "reference": reference,
                "id": item.id,
                "claimed_at": item.claimed_at,
            },
        )
        return cur.rowcount == 1


def skip_historic(conn: Connection, since: datetime) -> int:
    """First install: pending items of changes made before `since` and untouched since are dead, "skipped"."""
    try:
        with conn.transaction():
            cur = conn.execute(_SKIP_HISTORIC, {"since": since.isoformat(), "since_at": since})
            return cur.rowcount
    except pg_errors.UndefinedTable:
        return 0


def replay_order(conn: Connection, order_id: UUID) -> int:
    """Put every item of the order that is not in flight back in the queue, due now, with the same keys.

    The marketplace dedupes by those keys, so what it has is not applied twice; what it lost is applied again.
    Attempts are kept. Returns how many items were put back.
    """
    with conn.transaction():
        cur = conn.execute(
            "UPDATE outbound_items SET state = 'pending', next_attempt_at = now(), updated_at = now(),"
            " marketplace_reference = NULL WHERE order_id = %s AND state <> 'in_flight'",
            (order_id,),
        )
        return cur.rowcount


# ------------------------------------------------------------------------------------------ reads


class InvalidFilterError(ValueError):
    """A filter value the queue does not know, or a limit outside 1 to MAX_LIMIT."""


class NotRetriableError(RuleViolationError):
    """Only a failed or dead item goes back in the queue (HTTP 409)."""

    code = "not-retriable"

    def __init__(self, item_id: UUID, state: str) -> None:
        super().__init__(f"item {item_id} is {state}: only a {' or '.join(RETRIABLE)} item can be retried")
        self.state = state


@dataclass(frozen=True)
class Backlog:
    """Unfinished and dead items of one (marketplace, action, polling): what the dispatcher's metrics show."""

    marketplace: str
    action: str
    polling: bool
    unfinished: int
    oldest_seconds: float
    dead: int


class NotResolvableError(RuleViolationError):
    """Only a dead item is resolved by hand (HTTP 409): anything else is still the dispatcher's."""

    code = "not-resolvable"

    def __init__(self, item_id: UUID, state: str) -> None:
        super().__init__(f"item {item_id} is {state}: only a {DEAD} item can be resolved by hand")
        self.state = state


@dataclass(frozen=True)
class OutboundItem:
    """One item of the queue as the API and the CLI read it (`payload` as stored)."""

    id: UUID
    order_id: UUID
    marketplace: str
    action: str
    reference: str
    sequence: int
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    idempotency_key: str
    marketplace_reference: str | None
    payload: dict[str, Any]
    position: int
    created_at: datetime
    updated_at: datetime
    blocked_by: UUID | None  # the earlier item of the order it waits for (the first unfinished one), if any

    @property
    def polling(self) -> bool:
        """Whether its next call asks after what the marketplace took for later (an Amazon feed's result)."""
        return self.state in (IN_FLIGHT, FAILED) and self.marketplace_reference is not None


_READ_COLUMNS = sql.SQL(", ").join(
    [
        *(sql.Identifier(f.name) for f in fields(OutboundItem) if f.name != "blocked_by"),
        sql.SQL(
            "(SELECT e.id FROM outbound_items e WHERE e.id = ANY(outbound_items.depends_on) AND NOT {done}"
            " ORDER BY e.sequence LIMIT 1) AS blocked_by"
        ).format(done=sql.SQL(_DONE.format(e="e"))),
    ]
)


class OutboundView:
    """Reads of the queue, always within one seller (another seller's item is as absent as a missing one)."""

    def list_items(
        self,
        conn: Connection,
        seller: str,
        state: str | None = None,
        marketplace: str | None = None,
        order_id: UUID | None = None,
        limit: int = 50,
        after_id: UUID | None = None,
    ) -> list[OutboundItem]:
        """Items oldest first (log order); `after_id`: the last item of the previous page."""
        if state is not None and state not in STATES:
            raise InvalidFilterError(f"state must be one of {', '.join(STATES)}, not {state!r}")
        base.check_marketplace(marketplace, InvalidFilterError)
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidFilterError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
        conditions, params = base.seller_conditions(
            seller, (("state", state), ("marketplace", marketplace), ("order_id", order_id))
        )
        if after_id is not None:
            conditions.append(
                sql.SQL(
                    "(position, id) > (SELECT position, id FROM outbound_items WHERE id = %s AND seller = %s)"
                )
            )
            params += [after_id, seller]
        query = sql.SQL("SELECT {} FROM outbound_items WHERE {} ORDER BY position, id LIMIT %s").format(
            _READ_COLUMNS, base.all_of(conditions)
        )
        with conn.cursor(row_factory=class_row(OutboundItem)) as cur:
            return cur.execute(query, (*params, limit)).fetchall()

    def get_item(self, conn: Connection, seller: str, item_id: UUID) -> OutboundItem | None:
        query = sql.SQL("SELECT {} FROM outbound_items WHERE id = %s AND seller = %s").format(_READ_COLUMNS)
        with conn.cursor(row_factory=class_row(OutboundItem)) as cur:
            return cur.execute(query, (item_id, seller)).fetchone()

    def retry(self, conn: Connection, seller: str, item_id: UUID) -> OutboundItem | None:
        """An operator's retry: a failed or dead item is pending again and due now, its attempts kept.

        A direct change like the dispatcher's (a marketplace answer recorded before it never undoes it).
        None: no such item of the seller's; NotRetriableError: any other state.
        """
        query = sql.SQL(
            "UPDATE outbound_items SET state = %s, next_attempt_at = now(), updated_at = now()"
            " WHERE id = %s AND seller = %s AND state = ANY(%s) RETURNING {}"
        ).format(_READ_COLUMNS)
        with conn.cursor(row_factory=class_row(OutboundItem)) as cur:
            item = cur.execute(query, (PENDING, item_id, seller, list(RETRIABLE))).fetchone()
            if item is not None:
                return item
        current = self.get_item(conn, seller, item_id)
        if current is None:
            return None
        raise NotRetriableError(item_id, current.state)

    def resolve(self, conn: Connection, seller: str, item_id: UUID, reason: str) -> OutboundItem | None:
        """An operator settled a dead item by hand (its order's `SyncItemResolved` says how): `resolved`, which
        no longer holds back what depends on it. None: no such item of the seller's; NotResolvableError: it
        is not dead (an operator's retry or the dispatcher changed it)."""
        query = sql.SQL(
            "UPDATE outbound_items SET state = %s, last_error = %s, updated_at = now()"
            " WHERE id = %s AND seller = %s AND state = %s RETURNING {}"
        ).format(_READ_COLUMNS)
        with conn.cursor(row_factory=class_row(OutboundItem)) as cur:
            item = cur.execute(
                query, (RESOLVED, f"resolved by hand: {reason}", item_id, seller, DEAD)
            ).fetchone()
            if item is not None:
                return item
        current = self.get_item(conn, seller, item_id)
        if current is None:
            return None
        raise NotResolvableError(item_id, current.state)

    def backlog(self, conn: Connection) -> list[Backlog]:
        """Every seller's unfinished and dead items by what their next call is (marketplace, action, poll or
        send): how many, and how long the oldest unfinished one has waited (the database's clock)."""
        query = """
            SELECT marketplace, action,
                   state IN ('in_flight', 'failed') AND marketplace_reference IS NOT NULL,
                   count(*) FILTER (WHERE state IN ('pending', 'failed', 'in_flight')),
                   coalesce(extract(epoch FROM now() - min(created_at)
                            FILTER (WHERE state IN ('pending', 'failed', 'in_flight'))), 0),
                   count(*) FILTER (WHERE state = 'dead')
            FROM outbound_items
            WHERE state IN ('pending', 'failed', 'in_flight')
               OR (state = 'dead' AND NOT (attempts = 0 AND last_error LIKE 'skipped:%%'))
            GROUP BY 1, 2, 3
        """
        return [
            Backlog(str(m), str(a), bool(p), int(n), float(age), int(d))
            for m, a, p, n, age, d in conn.execute(query)
        ]

    def count_by_state(self, conn: Connection) -> dict[str, int]:
        """How many items are in each state, every seller together (0 for a state with none)."""
        counts = dict.fromkeys(STATES, 0)
        for state, count in conn.execute("SELECT state, count(*) FROM outbound_items GROUP BY state"):
            counts[str(state)] = int(count)
        return counts

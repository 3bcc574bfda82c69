"""The outbound sync queue: what each marketplace must be told about an order, in the order it happened.

One item per change the ledger made that a marketplace has to hear about: a shipment, a cancellation, a
refund, a dispute the seller closed, and (Walmart) the acknowledgement of a new order. Nothing for Third Party
Managed orders, and nothing for facts that came from the marketplace itself: telling it back would be an echo.

An item's id is a uuid5 of (order, action, reference), so it is the same in every generation, and its
`idempotency_key` (the id as text) is what the dispatcher hands to the marketplace: a rebuild never makes a
second request for the same change.

Who writes what: this projection makes items and records the marketplace's answers that arrive as events
(`MarketplaceAcknowledged`, `MarketplaceRejected`); the dispatcher changes `state`, `attempts`,
`next_attempt_at`, `last_error` and `updated_at` directly as it works, setting `updated_at` on every change.
An answer never undoes a later direct change (an operator's retry of a dead item, say), and `carry_over` keeps
the dispatcher's work across a rebuild, so a rebuild never re-sends what was sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID, uuid5

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow, class_row
from psycopg.types.json import Jsonb

from ledger.aggregates.errors import RuleViolationError
from ledger.aggregates.order import Order
from ledger.aggregates.policies import policy_for
from ledger.aggregates.values import DisputeKind, Requester, Source, SyncAction
from ledger.integrations.marketplaces import entry_for
from ledger.projections import base
from ledger.projections.base import Cursor, Event, Projection, Tables, insert_rows, select_by_order

PENDING, IN_FLIGHT, SUCCEEDED, FAILED, DEAD = "pending", "in_flight", "succeeded", "failed", "dead"
STATES = (PENDING, IN_FLIGHT, SUCCEEDED, FAILED, DEAD)
RETRIABLE = (FAILED, DEAD)  # what an operator may put back in the queue
MAX_LIMIT = 500


class InvalidFilterError(ValueError):
    """A filter value the queue does not know, or a limit outside 1 to MAX_LIMIT."""


class NotRetriableError(RuleViolationError):
    """Only a failed or dead item goes back in the queue (HTTP 409)."""

    code = "not-retriable"

    def __init__(self, item_id: UUID, state: str) -> None:
        super().__init__(f"item {item_id} is {state}: only a {' or '.join(RETRIABLE)} item can be retried")
        self.state = state


# The sync action an answer may name for an item of another action: the aggregate accepts answers about a
# cancellation dispute only as `open_dispute`, while the queue asks for it with `cancel`.
ANSWER_ALIASES = {SyncAction.OPEN_DISPUTE.value: SyncAction.CANCEL.value}


def item_id(order_id: UUID, action: str, reference: str) -> UUID:
    """The id of the item that tells the marketplace `action` about `reference` (stable forever)."""
    return uuid5(order_id, f"{action}:{reference}")


# ------------------------------------------------------------------------------------------ rows


@dataclass
class OrderRow:
    """What the queue needs to know about an order to build its items."""

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


@dataclass
class ItemRow:
    id: UUID
    idempotency_key: str
    order_id: UUID
    seller: str
    account_id: UUID
    marketplace: str
    action: str
    reference: str
    payload: dict[str, Any]
    sequence: int
    position: int
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    marketplace_reference: str | None
    created_at: datetime
    updated_at: datetime


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


def _lines(row: OrderRow, lines: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"line_id": i.line_id, "sku": row.skus.get(i.line_id, ""), "quantity": i.quantity} for i in lines]


def _restock_choice(row: OrderRow, restocks_on_marketplace: bool) -> bool:
    """The restock flag of a cancellation: only marketplaces that take the choice are ever asked to restock."""
    return entry_for(row.marketplace).takes_restock_choice and restocks_on_marketplace


# --------------------------------------------------------------------------------------- folding


class Batch:
    """One batch's folding: the orders and items it touches, and the items it makes."""

    def __init__(self, orders: dict[UUID, OrderRow], items: dict[UUID, ItemRow]) -> None:
        self.orders = orders
        self.items = items
        self.new_orders: set[UUID] = set()
        self.changed_orders: set[UUID] = set()
        self.new_items: list[ItemRow] = []
        self.changed_items: set[UUID] = set()

    def fold(self, position: int, event: Any) -> None:
        if isinstance(event, Order.MarketplaceAcknowledged | Order.MarketplaceRejected):
            self._answer(event)
            return
        if isinstance(event, Order.Imported):
            self._imported(position, event)
            return
        row = self.orders.get(event.originator_id)
        if row is None or row.third_party_managed:
            return
        if isinstance(event, Order.DisputeOpened):
            row.disputes[str(event.dispute_id)] = {
                "kind": event.kind,
                "marketplace_dispute_id": event.marketplace_dispute_id,
            }
            self.changed_orders.add(row.order_id)
        if event.source == Source.MARKETPLACE:
            return  # a fact the marketplace told us
        made = _item_for(row, event)
        if made is not None:
            self._make(row, position, event, *made)

    def _imported(self, position: int, event: Order.Imported) -> None:
        row = OrderRow(
            order_id=event.originator_id,
            seller=event.seller,
            account_id=event.account_id,
            marketplace=event.marketplace,
            marketplace_order_id=event.marketplace_order_id,
            currency=event.currency,
            third_party_managed=event.third_party_managed,
            skus={line.line_id: line.sku for line in event.lines},
        )
        self.orders[row.order_id] = row
        self.new_orders.add(row.order_id)
        # Acknowledging is the answer to the marketplace's own message, so whatever brought the order in.
        if not row.third_party_managed and entry_for(row.marketplace).acknowledges_orders:
            payload = {"lines": _lines(row, event.lines)}
            self._make(row, position, event, SyncAction.ACKNOWLEDGE.value, str(row.order_id), payload)

    def _make(
        self, row: OrderRow, position: int, event: Any, action: str, reference: str, payload: dict[str, Any]
    ) -> None:
        new_id = item_id(row.order_id, action, reference)
        if new_id in self.items:
            return  # the same change twice cannot happen; keep the first if it ever does
        item = ItemRow(
            id=new_id,
            idempotency_key=str(new_id),
            order_id=row.order_id,
            seller=row.seller,
            account_id=row.account_id,
            marketplace=row.marketplace,
            action=action,
            reference=reference,
            payload={"marketplace_order_id": row.marketplace_order_id, **payload},
            sequence=row.next_sequence,
            position=position,
            state=PENDING,
            attempts=0,
            next_attempt_at=event.timestamp,
            last_error=None,
            marketplace_reference=None,
            created_at=event.timestamp,
            updated_at=event.timestamp,
        )
        row.next_sequence += 1
        self.changed_orders.add(row.order_id)
        self.items[new_id] = item
        self.new_items.append(item)

    def _answer(self, event: Any) -> None:
        for target in answer_targets(event.originator_id, event.action, event.reference):
            item = self.items.get(target)
            if item is not None and settle(item, event):
                self.changed_items.add(item.id)


def answer_targets(order_id: UUID, action: str, reference: str) -> list[UUID]:
    """The ids of the items a marketplace's answer about (action, reference) may be about."""
    targets = [item_id(order_id, action, reference)]
    if action in ANSWER_ALIASES:
        targets.append(item_id(order_id, ANSWER_ALIASES[action], reference))
    return targets


def settle(item: ItemRow, event: Any) -> bool:
    """Record a marketplace's answer on its item; whether anything changed.

    No answer overrides a change the dispatcher or an operator made after the answer was recorded
    (`updated_at` later than it): an operator's retry or `ledger sync replay` that came after an acceptance
    means "send it again" (the marketplace's dedupe key makes that safe, and the new answer settles it), and the
    dispatcher marks what it was answered itself. Otherwise an acceptance wins (it is the marketplace's word);
    a rejection never overrides a success; a transient rejection marks a waiting item failed. Attempts are the
    dispatcher's count, left alone.
    """
    at: datetime = event.timestamp
    if isinstance(event, Order.MarketplaceAcknowledged):
        if item.state == SUCCEEDED or item.updated_at > at:
            return False
        item.state = SUCCEEDED
        item.marketplace_reference = event.marketplace_reference
    elif item.state == SUCCEEDED or item.updated_at > at:
        return False
    elif event.permanent:
        item.state = DEAD
        item.last_error = f"{event.error_code}: {event.message}"
    elif item.state in (PENDING, FAILED):
        item.state = FAILED
        item.last_error = f"{event.error_code}: {event.message}"
    else:
        return False
    item.updated_at = at
    return True


Made = tuple[str, str, dict[str, Any]]  # action, reference, payload


def _item_for(row: OrderRow, event: Any) -> Made | None:
    """(action, reference, payload) of the item a change of the seller's makes, if any."""
    build = _BUILDERS.get(type(event))
    return None if build is None else build(row, event)


def _shipped(row: OrderRow, event: Order.Shipped) -> Made:
    return (
        SyncAction.SHIP.value,
        str(event.shipment_id),
        {
            "shipment_id": str(event.shipment_id),
            "carrier": event.carrier,
            "tracking_number": event.tracking_number,
            "shipping_class": event.shipping_class,
            "shipped_at": event.shipped_at.isoformat(),
            "lines": _lines(row, event.lines),
        },
    )


def _cancelled(row: OrderRow, event: Order.Cancelled) -> Made | None:
    # After an accepted cancellation dispute, the request went out when the dispute opened; a
    # cancellation the marketplace made itself needs no request.
    if event.dispute_id is not None or event.requested_by == Requester.MARKETPLACE:
        return None
    restock = _restock_choice(row, event.restocked_on_marketplace)
    return (
        SyncAction.CANCEL.value,
        str(event.cancellation_id),
        {
            "cancellation_id": str(event.cancellation_id),
            "dispute_id": None,
            **_cancel_request(row, event.reason, event.requested_by, restock, event.lines),
        },
    )


def _dispute_opened(row: OrderRow, event: Order.DisputeOpened) -> Made | None:
    if event.kind != DisputeKind.CANCELLATION:
        return None  # a claim starts at the marketplace
    # eBay: a seller's cancellation of a paid order is a request the marketplace answers; this is it.
    restock = _restock_choice(row, policy_for(row.marketplace).cancellation_restocks_on_marketplace)
    return (
        SyncAction.CANCEL.value,
        str(event.dispute_id),
        {
            "cancellation_id": None,
            "dispute_id": str(event.dispute_id),
            **_cancel_request(row, event.reason, Requester.SELLER.value, restock, event.lines),
        },
    )


def _cancel_request(
    row: OrderRow, reason: str | None, requested_by: str, restock: bool, lines: Sequence[Any]
) -> dict[str, Any]:
    return {"reason": reason, "requested_by": requested_by, "restock": restock, "lines": _lines(row, lines)}


def _refunded(row: OrderRow, event: Order.Refunded) -> Made:
    lines = [
        {
            "line_id": line.line_id,
            "sku": row.skus.get(line.line_id, ""),
            "quantity": line.quantity,
            "item_amount": str(line.item_amount),
            "tax_amount": str(line.tax_amount),
            "shipping_amount": str(line.shipping_amount),
            "total": str(line.total),
        }
        for line in event.lines
    ]
    return (
        SyncAction.REFUND.value,
        str(event.refund_id),
        {
            "refund_id": str(event.refund_id),
            "reason": event.reason,
            "currency": row.currency,
            "item_amount": str(sum(line.item_amount for line in event.lines)),
            "tax_amount": str(sum(line.tax_amount for line in event.lines)),
            "shipping_amount": str(sum(line.shipping_amount for line in event.lines)),
            "total": str(event.total),
            "lines": lines,
        },
    )


def _dispute_closed(row: OrderRow, event: Order.DisputeClosed) -> Made:
    dispute = row.disputes.get(str(event.dispute_id), {})
    return (
        SyncAction.CLOSE_DISPUTE.value,
        str(event.dispute_id),
        {
            "dispute_id": str(event.dispute_id),
            "kind": dispute.get("kind"),
            "marketplace_dispute_id": dispute.get("marketplace_dispute_id"),
            "outcome": event.outcome,
        },
    )


_BUILDERS: dict[type[Any], Callable[[OrderRow, Any], Made | None]] = {
    Order.Shipped: _shipped,
    Order.Cancelled: _cancelled,
    Order.DisputeOpened: _dispute_opened,
    Order.Refunded: _refunded,
    Order.DisputeClosed: _dispute_closed,
}


# Events that may make an item, or change what later items need to know: these need the order's row.
_NEEDS_ORDER = tuple(_BUILDERS)
_ANSWERS = (Order.MarketplaceAcknowledged, Order.MarketplaceRejected)


# ------------------------------------------------------------------------------------ projection


class OutboundProjection(Projection):
    name: ClassVar[str] = "outbound"
    tables: ClassVar[tuple[str, ...]] = ("outbound_orders", "outbound_items")
    topics: ClassVar[tuple[str, ...]] = ()

    def create_tables(self, cur: Cursor, t: Tables) -> None:
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
                UNIQUE (order_id, sequence)
            )""",
        ):
            cur.execute(
                sql.SQL(statement).format(
                    orders=t["outbound_orders"], items=t["outbound_items"], states=states
                )
            )

    def create_indexes(self, cur: Cursor, t: Tables) -> None:
        """For the dispatcher (due items), the per-marketplace counts, and the API's listing per seller."""
        items = "outbound_items"
        base.create_named_indexes(
            cur,
            t,
            "outbound",
            (
                ("ix_due", items, "(state, next_attempt_at) WHERE state IN ('pending', 'failed')"),
                ("ix_marketplace", items, "(marketplace, state)"),
                ("ix_seller", items, "(seller, position)"),
                ("ix_seller_state", items, "(seller, state, position)"),
            ),
        )

    def apply(self, cur: Cursor, t: Tables, events: Sequence[Event]) -> None:
        imported = {e.event.originator_id for e in events if isinstance(e.event, Order.Imported)}
        order_ids = {
            e.event.originator_id
            for e in events
            if isinstance(e.event, _NEEDS_ORDER) and e.event.originator_id not in imported
        }
        answered = [
            target
            for e in events
            if isinstance(e.event, _ANSWERS)
            for target in answer_targets(e.event.originator_id, e.event.action, e.event.reference)
        ]
        batch = Batch(self._load_orders(cur, t, list(order_ids)), self._load_items(cur, t, answered))
        for item in events:
            batch.fold(item.position, item.event)
        self._write(cur, t, batch)

    def _load_orders(self, cur: Cursor, t: Tables, order_ids: list[UUID]) -> dict[UUID, OrderRow]:
        rows = select_by_order(cur, t["outbound_orders"], ORDER_COLUMNS, order_ids)
        return {record[0]: OrderRow(*record) for record in rows}

    def _load_items(self, cur: Cursor, t: Tables, ids: list[UUID]) -> dict[UUID, ItemRow]:
        """The items answers in this batch are about, locked: the dispatcher waits rather than interleaves."""
        if not ids:
            return {}
        cur.execute(
            sql.SQL("SELECT {} FROM {} WHERE id = ANY(%s) ORDER BY id FOR UPDATE").format(
                sql.SQL(", ").join(map(sql.Identifier, ITEM_COLUMNS)), t["outbound_items"]
            ),
            (ids,),
        )
        return {record[0]: ItemRow(*record) for record in cur.fetchall()}

    def _write(self, cur: Cursor, t: Tables, batch: Batch) -> None:
        insert_rows(
            cur,
            t["outbound_orders"],
            ORDER_COLUMNS,
            [
                _order_params(batch.orders[order_id])
                for order_id in sorted(batch.changed_orders | batch.new_orders)
            ],
            on_conflict=("order_id",),
            update=("disputes", "next_sequence"),
        )
        insert_rows(cur, t["outbound_items"], ITEM_COLUMNS, [_item_params(item) for item in batch.new_items])
        made = {item.id for item in batch.new_items}
        changed = [batch.items[i] for i in sorted(batch.changed_items - made)]
        if changed:
            cur.executemany(
                sql.SQL("UPDATE {} SET {} WHERE id = %s").format(
                    t["outbound_items"],
                    sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in OUTCOME_COLUMNS),
                ),
                [(*(getattr(item, c) for c in OUTCOME_COLUMNS), item.id) for item in changed],
            )

    def carry_over(self, cur: Cursor, old: Tables, new: Tables) -> None:
        """Keep what the dispatcher did: its state wins unless the item was never touched, or the events
        settled the item (succeeded, dead) after the dispatcher's last change."""
        assignments = sql.SQL(", ").join(
            sql.SQL("{0} = o.{0}").format(sql.Identifier(c)) for c in OUTCOME_COLUMNS
        )
        cur.execute(
            sql.SQL(
                "UPDATE {new} AS n SET {assignments} FROM {old} AS o WHERE n.id = o.id"
                " AND NOT (o.state = 'pending' AND o.attempts = 0)"
                " AND NOT (n.state IN ('succeeded', 'dead') AND n.updated_at > o.updated_at)"
            ).format(new=new["outbound_items"], old=old["outbound_items"], assignments=assignments)
        )


def _order_params(row: OrderRow) -> tuple[Any, ...]:
    values = [getattr(row, c) for c in ORDER_COLUMNS]
    values[ORDER_COLUMNS.index("skus")] = Jsonb(row.skus)
    values[ORDER_COLUMNS.index("disputes")] = Jsonb(row.disputes)
    return tuple(values)


def _item_params(item: ItemRow) -> tuple[Any, ...]:
    values = [getattr(item, c) for c in ITEM_COLUMNS]
    values[ITEM_COLUMNS.index("payload")] = Jsonb(item.payload)
    return tuple(values)


# ------------------------------------------------------------------------------------------ reads


@dataclass(frozen=True)
class OutboundItem:
    """One item of the queue as the API and the dispatcher read it."""

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


_READ_COLUMNS = sql.SQL(", ").join(sql.Identifier(f.name) for f in fields(OutboundItem))


class OutboundView:
    """Reads of the queue, always within one seller (another seller's item is as absent as a missing one)."""

    def list_items(
        self,
        conn: psycopg.Connection[TupleRow],
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

    def get_item(self, conn: psycopg.Connection[TupleRow], seller: str, item_id: UUID) -> OutboundItem | None:
        query = sql.SQL("SELECT {} FROM outbound_items WHERE id = %s AND seller = %s").format(_READ_COLUMNS)
        with conn.cursor(row_factory=class_row(OutboundItem)) as cur:
            return cur.execute(query, (item_id, seller)).fetchone()

    def retry(self, conn: psycopg.Connection[TupleRow], seller: str, item_id: UUID) -> OutboundItem | None:
        """An operator's retry: a failed or dead item is pending again and due now, its attempts kept.

        A direct change like the dispatcher's, so `updated_at` is stamped (a marketplace answer recorded
        before it never undoes it). None: no such item of the seller's; NotRetriableError: any other state.
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

    def count_by_state(self, conn: psycopg.Connection[TupleRow]) -> dict[str, int]:
        """How many items are in each state, every seller together (0 for a state with none)."""
        counts = dict.fromkeys(STATES, 0)
        for state, count in conn.execute("SELECT state, count(*) FROM outbound_items GROUP BY state"):
            counts[str(state)] = int(count)
        return counts

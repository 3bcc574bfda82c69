"""Finance: payment exposure, the value shipped that the marketplace has not yet confirmed.

A seller is paid for a shipment only once the marketplace has the shipment confirmation; until its
`MarketplaceAcknowledged(action=ship)` arrives, the shipment's value is exposure. One row per shipment keeps its
value (in the order's currency), and whether and when the marketplace confirmed it; the exposure per marketplace
and currency is the sum over the unconfirmed rows, so every figure can be re-derived from the rows. Third Party
Managed orders are fulfilled and paid outside the ledger: their shipments are kept (reconciliation matches
them) but are never exposure.

The value of a shipment is what the buyer was charged for the units it carries: per line, the units times the
unit price, plus the line's tax and shipping in proportion to the units (rounded to the currency's minor unit,
banker's rounding); the shipment that ships a line's last units takes whatever rounding left, so a fully shipped
line is worth exactly its total. Settlement reconciliation compares these values with the marketplace's charges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from ledger.aggregates.lines import share
from ledger.aggregates.order import Order
from ledger.aggregates.values import SyncAction
from ledger.projections import base
from ledger.projections.base import Cursor, Event, Projection, Tables, insert_rows, select_by_order

ZERO = Decimal(0)


class InvalidExposureFilterError(ValueError):
    """A filter value the exposure view does not know (an unknown marketplace, a naive time)."""


@dataclass
class LineValue:
    """What a line is worth and how much of it has shipped so far."""

    quantity: int
    unit_price: Decimal
    extras: Decimal  # the line's tax and shipping together
    shipped: int = 0
    extras_shipped: Decimal = ZERO

    def ship(self, units: int, currency: str) -> Decimal:
        """The value of `units` more units of this line, and count them as shipped."""
        if units <= 0:
            return ZERO
        extras = share(
            self.extras,
            of=self.quantity,
            done=self.shipped,
            units=units,
            left=self.extras - self.extras_shipped,
            currency=currency,
        )
        self.shipped += units
        self.extras_shipped += extras
        return self.unit_price * units + extras

    def encode(self) -> dict[str, Any]:
        return {
            "quantity": self.quantity,
            "unit_price": str(self.unit_price),
            "extras": str(self.extras),
            "shipped": self.shipped,
            "extras_shipped": str(self.extras_shipped),
        }

    @classmethod
    def decode(cls, raw: dict[str, Any]) -> LineValue:
        return cls(
            int(raw["quantity"]),
            Decimal(raw["unit_price"]),
            Decimal(raw["extras"]),
            int(raw["shipped"]),
            Decimal(raw["extras_shipped"]),
        )


@dataclass
class OrderRow:
    order_id: UUID
    seller: str
    account_id: UUID
    marketplace: str
    marketplace_order_id: str
    currency: str
    third_party_managed: bool
    lines: dict[str, LineValue] = field(default_factory=dict)


ORDER_COLUMNS = tuple(f.name for f in fields(OrderRow))


@dataclass
class ShipmentRow:
    shipment_id: UUID
    order_id: UUID
    seller: str
    account_id: UUID
    marketplace: str
    marketplace_order_id: str
    currency: str
    third_party_managed: bool
    shipped_at: datetime
    units: int
    value: Decimal
    confirmed: bool
    confirmed_at: datetime | None
    position: int


SHIPMENT_COLUMNS = tuple(f.name for f in fields(ShipmentRow))


def order_row(event: Order.Imported) -> OrderRow:
    return OrderRow(
        order_id=event.originator_id,
        seller=event.seller,
        account_id=event.account_id,
        marketplace=event.marketplace,
        marketplace_order_id=event.marketplace_order_id,
        currency=event.currency,
        third_party_managed=event.third_party_managed,
        lines={
            line.line_id: LineValue(line.quantity, line.unit_price, line.tax + line.shipping)
            for line in event.lines
        },
    )


def shipment_row(order: OrderRow, position: int, event: Order.Shipped) -> ShipmentRow:
    """The shipment's row; counts its units as shipped on the order's lines."""
    value = sum((order.lines[item.line_id].ship(item.quantity, order.currency) for item in event.lines), ZERO)
    return ShipmentRow(
        shipment_id=event.shipment_id,
        order_id=order.order_id,
        seller=order.seller,
        account_id=order.account_id,
        marketplace=order.marketplace,
        marketplace_order_id=order.marketplace_order_id,
        currency=order.currency,
        third_party_managed=order.third_party_managed,
        shipped_at=event.shipped_at,
        units=sum(item.quantity for item in event.lines),
        value=value,
        confirmed=False,
        confirmed_at=None,
        position=position,
    )


def is_ship_acknowledgement(event: Any) -> bool:
    return isinstance(event, Order.MarketplaceAcknowledged) and event.action == SyncAction.SHIP.value


# ------------------------------------------------------------------------------------ projection


class ExposureProjection(Projection):
    name: ClassVar[str] = "exposure"
    tables: ClassVar[tuple[str, ...]] = ("exposure_orders", "exposure_shipments")
    topics: ClassVar[tuple[str, ...]] = ()
    handles: ClassVar[tuple[type, ...]] = (
        Order.Imported,
        Order.Shipped,
        Order.ShipmentVoided,
        Order.MarketplaceAcknowledged,
    )

    def create_tables(self, cur: Cursor, t: Tables) -> None:
        base.create_tables_from(
            cur,
            (
                """CREATE TABLE IF NOT EXISTS {orders} (
                order_id uuid PRIMARY KEY, seller text NOT NULL, account_id uuid NOT NULL,
                marketplace text NOT NULL, marketplace_order_id text NOT NULL, currency text NOT NULL,
                third_party_managed boolean NOT NULL, lines jsonb NOT NULL
            )""",
                """CREATE TABLE IF NOT EXISTS {shipments} (
                shipment_id uuid PRIMARY KEY, order_id uuid NOT NULL, seller text NOT NULL,
                account_id uuid NOT NULL, marketplace text NOT NULL, marketplace_order_id text NOT NULL,
                currency text NOT NULL, third_party_managed boolean NOT NULL, shipped_at timestamptz NOT NULL,
                units integer NOT NULL, value numeric NOT NULL, confirmed boolean NOT NULL,
                confirmed_at timestamptz, position bigint NOT NULL
            )""",
            ),
            orders=t["exposure_orders"],
            shipments=t["exposure_shipments"],
        )

    def create_indexes(self, cur: Cursor, t: Tables) -> None:
        """For the exposure per seller (unconfirmed only) and the shipments of a reconciliation period."""
        shipments = "exposure_shipments"
        base.create_named_indexes(
            cur,
            t,
            "exposure",
            (
                (
                    "ix_open",
                    shipments,
                    "(seller, marketplace, currency) WHERE NOT confirmed AND NOT third_party_managed",
                ),
                ("ix_shipped", shipments, "(seller, marketplace, shipped_at)"),
            ),
        )

    def apply(self, cur: Cursor, t: Tables, events: Sequence[Event]) -> None:
        new_orders = {
            e.event.originator_id: order_row(e.event) for e in events if isinstance(e.event, Order.Imported)
        }
        wanted = {
            e.event.originator_id
            for e in events
            if isinstance(e.event, Order.Shipped) and e.event.originator_id not in new_orders
        }
        orders = self._load_orders(cur, t, sorted(wanted)) | new_orders
        changed_orders: set[UUID] = set()
        shipments: dict[UUID, ShipmentRow] = {}
        confirmations: dict[UUID, datetime] = {}
        voided: list[UUID] = []
        for item in events:
            event = item.event
            if isinstance(event, Order.ShipmentVoided):  # never shipped after all: nothing is owed for it
                if shipments.pop(event.shipment_id, None) is None:
                    voided.append(event.shipment_id)
            elif isinstance(event, Order.Shipped) and event.originator_id in orders:
                order = orders[event.originator_id]
                shipments[event.shipment_id] = shipment_row(order, item.position, event)
                changed_orders.add(order.order_id)
            elif is_ship_acknowledgement(event) and _is_uuid(event.reference):
                shipment_id = UUID(event.reference)
                at = event.effective_at or event.timestamp
                if shipment_id in shipments:
                    row = shipments[shipment_id]
                    if not row.confirmed:
                        row.confirmed, row.confirmed_at = True, at
                else:
                    confirmations.setdefault(shipment_id, at)  # the first acknowledgement counts
        insert_rows(
            cur,
            t["exposure_orders"],
            ORDER_COLUMNS,
            [_order_params(orders[i]) for i in sorted(changed_orders | set(new_orders))],
            on_conflict=("order_id",),
            update=("lines",),
        )
        insert_rows(
            cur,
            t["exposure_shipments"],
            SHIPMENT_COLUMNS,
            [tuple(getattr(s, c) for c in SHIPMENT_COLUMNS) for s in shipments.values()],
        )
        if voided:
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE shipment_id = ANY(%s)").format(t["exposure_shipments"]),
                (voided,),
            )
        if confirmations:
            cur.executemany(
                sql.SQL(
                    "UPDATE {} SET confirmed = true, confirmed_at = %s WHERE shipment_id = %s AND NOT confirmed"
                ).format(t["exposure_shipments"]),
                [(at, shipment_id) for shipment_id, at in sorted(confirmations.items())],
            )

    def _load_orders(self, cur: Cursor, t: Tables, order_ids: list[UUID]) -> dict[UUID, OrderRow]:
        rows = select_by_order(cur, t["exposure_orders"], ORDER_COLUMNS, order_ids)
        orders = {}
        for *head, lines in rows:
            order = OrderRow(*head)
            order.lines = {k: LineValue.decode(v) for k, v in lines.items()}
            orders[order.order_id] = order
        return orders


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


def _order_params(order: OrderRow) -> tuple[Any, ...]:
    values = [getattr(order, c) for c in ORDER_COLUMNS]
    values[ORDER_COLUMNS.index("lines")] = Jsonb({k: v.encode() for k, v in order.lines.items()})
    return tuple(values)


# ------------------------------------------------------------------------------------------ reads


@dataclass(frozen=True)
class ExposureEntry:
    """Unconfirmed shipments of one marketplace in one currency."""

    marketplace: str
    currency: str
    shipments: int
    units: int
    value: Decimal
    oldest_shipped_at: datetime


@dataclass(frozen=True)
class ShippedOrder:
    """What the ledger shipped on one order within a period: the charge a settlement should carry."""

    order_id: UUID
    marketplace_order_id: str
    account_id: UUID
    currency: str
    shipments: int
    value: Decimal


class ExposureView:
    """Reads of the shipments, always within one seller."""

    def exposure(
        self,
        conn: psycopg.Connection[TupleRow],
        seller: str,
        marketplace: str | None = None,
        account_id: UUID | None = None,
    ) -> list[ExposureEntry]:
        """Per marketplace and currency, the shipments not yet confirmed (Third Party Managed excluded)."""
        where, params = _where(seller, marketplace, account_id)
        query = sql.SQL(
            "SELECT marketplace, currency, count(*) AS shipments, sum(units) AS units, sum(value) AS value,"
            " min(shipped_at) AS oldest_shipped_at FROM exposure_shipments"
            " WHERE {} AND NOT confirmed AND NOT third_party_managed"
            " GROUP BY marketplace, currency ORDER BY marketplace, currency"
        ).format(base.all_of(where))
        return base.fetch_all(conn, ExposureEntry, query, params)

    def shipped_between(
        self,
        conn: psycopg.Connection[TupleRow],
        seller: str,
        marketplace: str,
        start: datetime,
        end: datetime,
        account_id: UUID | None = None,
    ) -> list[ShippedOrder]:
        """Per order, the value shipped in [start, end), by when the shipment left (`shipped_at`)."""
        where, params = _where(seller, marketplace, account_id)
        return base.per_order_between(
            conn,
            ShippedOrder,
            "exposure_shipments",
            "shipped_at",
            "shipments",
            "value",
            where,
            params,
            start,
            end,
        )

    def orders_named(
        self,
        conn: psycopg.Connection[TupleRow],
        seller: str,
        marketplace: str,
        marketplace_order_ids: list[str],
    ) -> dict[str, tuple[UUID, str]]:
        """(order id, currency) of the seller's orders on `marketplace` with these marketplace order ids."""
        rows = conn.execute(
            "SELECT marketplace_order_id, order_id, currency FROM exposure_orders"
            " WHERE seller = %s AND marketplace = %s AND marketplace_order_id = ANY(%s)",
            (seller, marketplace, marketplace_order_ids),
        ).fetchall()
        return {str(r[0]): (r[1], str(r[2])) for r in rows}


def _where(
    seller: str, marketplace: str | None, account_id: UUID | None
) -> tuple[list[sql.Composable], list[Any]]:
    base.check_marketplace(marketplace, InvalidExposureFilterError)
    return base.seller_conditions(seller, (("marketplace", marketplace), ("account_id", account_id)))

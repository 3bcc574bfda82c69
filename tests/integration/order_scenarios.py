"""Random orders and commands for the projection tests, on a Ledger persisted in the test run's PostgreSQL.

`Scenario` imports a few orders for one seller (every marketplace, Third Party Managed or not, paid or not,
several currencies) and runs random commands on them through the application, as the API, the importer, the
marketplaces and the dispatcher would. A command the rules refuse is simply skipped. The tests then compare a
projection with a fold of each order's stored events.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import psycopg
from hypothesis import strategies as st

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.values import (
    Buyer,
    CancelReason,
    Carrier,
    Context,
    DisputeOutcome,
    ImportedOrder,
    LineQuantity,
    Marketplace,
    OrderLine,
    PaymentStatus,
    RefundReason,
    RefundRequestLine,
    Requester,
    Source,
    SyncAction,
)
from ledger.application.ledger import Ledger
from ledger.eventstore.database import settle
from ledger.projections import base

UPS_TRACKING = "1Z999AA10123456784"
ZERO = Decimal(0)
# Amounts valid in every currency used (JPY has no minor unit).
PRICES = {"USD": Decimal("12.50"), "EUR": Decimal("7.25"), "JPY": Decimal("1200")}
TAXES = {"USD": Decimal("1.05"), "EUR": Decimal("0.70"), "JPY": Decimal("96")}
SHIPPING = {"USD": Decimal("3.00"), "EUR": Decimal("2.50"), "JPY": Decimal("300")}
# When a refund took effect: none (when recorded), either side of a UTC midnight, and in another zone.
REFUND_TIMES: list[datetime | None] = [
    None,
    datetime(2024, 5, 1, 23, 30, tzinfo=UTC),
    datetime(2024, 5, 2, 0, 30, tzinfo=UTC),
    datetime(2024, 5, 2, 3, 30, tzinfo=timezone(timedelta(hours=5))),  # 2024-05-01 22:30 UTC
    datetime(2024, 5, 4, 12, 0, tzinfo=UTC),
]
# Repeats make the commands that most often succeed or settle items more likely; hypothesis starts from the
# first ones.
COMMANDS = (
    "ship",
    "refund_line",
    "answer",
    "cancel_line",
    "close_dispute",
    "restock",
    "ship",
    "pay",
    "reject",
    "cancel",
    "buyer_cancel",
    "marketplace_cancel",
    "refund",
    "refund_shipping",
    "claim",
    "answer",
    "close_dispute",
    "restock",
    "ship_line",
)
SOURCES = (Source.API, Source.API, Source.WEB, Source.BULK, Source.MARKETPLACE, Source.SYSTEM)
MAX_ORDERS = 4


@dataclass(frozen=True)
class OrderSpec:
    marketplace: Marketplace
    fulfillment_managed: bool
    restock_in_ledger: bool
    paid: bool
    currency: str
    quantities: tuple[int, ...]
    recent: bool  # bought 10 minutes ago (inside Amazon's buyer cancellation window) rather than 3 hours
    source: Source  # through what the order came in


@dataclass(frozen=True)
class Step:
    order: int
    command: str
    seed: int
    source: Source


order_specs = st.lists(
    st.builds(
        OrderSpec,
        marketplace=st.sampled_from(Marketplace),
        fulfillment_managed=st.sampled_from([True, True, False]),
        restock_in_ledger=st.booleans(),
        paid=st.sampled_from([True, True, False]),
        currency=st.sampled_from(sorted(PRICES)),
        quantities=st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple),
        recent=st.booleans(),
        source=st.sampled_from([Source.IMPORT, Source.IMPORT, Source.API, Source.MARKETPLACE]),
    ),
    min_size=2,
    max_size=MAX_ORDERS,
)
steps = st.lists(
    st.builds(
        Step,
        order=st.integers(0, MAX_ORDERS - 1),
        command=st.sampled_from(COMMANDS),
        seed=st.integers(0, 10_000),
        source=st.sampled_from(SOURCES),
    ),
    min_size=12,
    max_size=40,
)


def new_seller(prefix: str) -> str:
    """A seller name no other test uses (the schema is shared by the whole run)."""
    return f"{prefix}-{uuid4().hex[:12]}"


def settled(conn: psycopg.Connection[Any], timeout: float = 10.0) -> None:
    """Wait until every event committed so far is readable (the commit horizon passed them), or fail naming the
    sessions whose open transactions hold the horizon back (any database of the cluster)."""
    if settle(conn, timeout):
        return
    holders = conn.execute(
        "SELECT pid, datname, application_name, state, backend_xid::text, now() - xact_start, left(query, 120)"
        " FROM pg_stat_activity WHERE backend_xid IS NOT NULL ORDER BY xact_start"
    ).fetchall()
    raise AssertionError(
        f"the log's horizon stayed behind for {timeout:g} s; transactions holding it: {holders}"
    )


def catch_up(projection: base.Projection, connect: base.Connect, app: Ledger, batch_size: int) -> None:
    """Apply what the projection has not seen, `batch_size` events a transaction, as a worker would."""
    with connect() as conn:
        generation, position = base.install(conn, projection)
        settled(conn)
        while True:
            notifications = app.recorder.select_notifications(
                start=position, limit=batch_size, inclusive_of_start=False
            )
            if not notifications:
                return
            with conn.transaction(), conn.cursor() as cur:
                events = base.decode(app.mapper, notifications)
                base.apply_batch(cur, projection, base.Tables(generation), events)
            position = notifications[-1].id


def rows(connect: base.Connect, query: str, *params: object) -> list[tuple[object, ...]]:
    with connect() as conn:
        return conn.execute(query, params).fetchall()


@dataclass
class Placed:
    """An order the scenario imported, and what the marketplace could be told about it."""

    order_id: UUID
    spec: OrderSpec
    references: list[tuple[SyncAction, str]] = field(default_factory=list)


class Scenario:
    """One seller's orders and the commands run on them."""

    def __init__(self, app: Ledger, seller: str) -> None:
        self.app = app
        self.seller = seller
        self.now = datetime.now(UTC)
        self.accounts: dict[tuple[Marketplace, bool, bool], UUID] = {}
        self.orders: list[Placed] = []

    def ctx(self, source: Source = Source.API, effective_at: datetime | None = None) -> Context:
        return Context(actor="tester", source=source, effective_at=effective_at)

    def account(self, marketplace: Marketplace, fulfillment_managed: bool, restock: bool) -> UUID:
        key = (marketplace, fulfillment_managed, restock)
        if key not in self.accounts:
            self.accounts[key] = self.app.register_account(
                self.ctx(),
                seller=self.seller,
                marketplace=marketplace,
                name=f"{marketplace.value}-{fulfillment_managed}-{restock}",
                fulfillment_managed=fulfillment_managed,
                restock_in_ledger=restock,
            ).account_id
        return self.accounts[key]

    def place(self, spec: OrderSpec) -> Placed:
        account_id = self.account(spec.marketplace, spec.fulfillment_managed, spec.restock_in_ledger)
        purchased_at = self.now - (timedelta(minutes=10) if spec.recent else timedelta(hours=3))
        currency = spec.currency
        lines = tuple(
            OrderLine(
                f"L{i}",
                f"SKU-{i}",
                n,
                PRICES[currency],
                TAXES[currency],
                SHIPPING[currency] if i == 1 else ZERO,
            )
            for i, n in enumerate(spec.quantities, start=1)
        )
        imported = ImportedOrder(
            marketplace_order_id=f"MO-{len(self.orders) + 1}",
            purchased_at=purchased_at,
            currency=currency,
            payment_status=PaymentStatus.PAID if spec.paid else PaymentStatus.PENDING,
            buyer=Buyer("Ada Buyer", "ada@example.com"),
            lines=lines,
            paid_at=purchased_at if spec.paid else None,
        )
        result = self.app.import_order(self.ctx(spec.source), account_id, imported)
        placed = Placed(result.order_id, spec, [(SyncAction.ACKNOWLEDGE, str(result.order_id))])
        self.orders.append(placed)
        return placed

    def run(self, specs: list[OrderSpec], commands: list[Step]) -> list[UUID]:
        for spec in specs:
            self.place(spec)
        for step in commands:
            placed = self.orders[step.order % len(self.orders)]
            with contextlib.suppress(LedgerError):  # refused by the rules: nothing recorded
                self.step(placed, step)
        return [p.order_id for p in self.orders]

    def step(self, placed: Placed, step: Step) -> None:
        rng = random.Random(step.seed)
        order_id, ctx = placed.order_id, self.ctx(step.source)
        details = self.app.get_order(order_id)
        line = rng.choice(details.lines)
        if step.command == "pay":
            result = self.app.record_payment(ctx, order_id)
        elif step.command in ("ship", "ship_line"):
            lines = (LineQuantity(line.line_id, 1),) if step.command == "ship_line" else None
            result = self.app.ship(
                ctx, order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING, lines=lines
            )
        elif step.command in ("cancel", "cancel_line", "buyer_cancel", "marketplace_cancel"):
            requested_by = {"buyer_cancel": Requester.BUYER, "marketplace_cancel": Requester.MARKETPLACE}.get(
                step.command, Requester.SELLER
            )
            result = self.app.cancel(
                ctx,
                order_id,
                reason=rng.choice(list(CancelReason)),
                lines=(LineQuantity(line.line_id, 1),) if step.command == "cancel_line" else None,
                restock_in_ledger=rng.choice([None, True, False]),
                requested_by=requested_by,
            )
        elif step.command in ("refund", "refund_line", "refund_shipping"):
            currency = placed.spec.currency
            ctx = self.ctx(step.source, rng.choice(REFUND_TIMES))
            result = self.app.refund(
                ctx,
                order_id,
                reason=rng.choice(list(RefundReason)),
                lines=(RefundRequestLine(line.line_id, 1),) if step.command == "refund_line" else None,
                shipping_amount=SHIPPING[currency] if step.command == "refund_shipping" else ZERO,
                tax_amount=TAXES[currency]
                if step.command == "refund_shipping" and rng.random() < 0.3
                else ZERO,
            )
        elif step.command == "claim":
            result = self.app.open_dispute(
                ctx, order_id, reason="item not received", marketplace_dispute_id=f"C-{step.seed}"
            )
        elif step.command == "close_dispute":
            open_disputes = [d.dispute_id for d in details.disputes if d.is_open]
            if not open_disputes:
                return
            result = self.app.close_dispute(
                ctx, order_id, dispute_id=rng.choice(open_disputes), outcome=rng.choice(list(DisputeOutcome))
            )
        elif step.command == "restock":
            restockable = [s for s in details.lines if s.cancelled + s.refunded_quantity - s.restocked > 0]
            if not restockable:
                return
            result = self.app.restock(
                ctx, order_id, lines=(LineQuantity(rng.choice(restockable).line_id, 1),)
            )
        else:  # the dispatcher records a marketplace's answer
            action, reference = rng.choice(placed.references)
            result = self.app.record_sync_outcome(
                ctx,
                order_id,
                action=action,
                reference=reference,
                accepted=step.command == "answer" and rng.random() < 0.8,
                marketplace_reference=f"MP-{step.seed}",
                error_code="E42",
                message="the marketplace said no",
                permanent=rng.random() < 0.5,
            )
        self._remember(placed, result.ids, step.command)

    def _remember(self, placed: Placed, ids: dict[str, UUID], command: str) -> None:
        """Note what the marketplace could now be told, so that answers name real references."""
        for name, action in (
            ("shipment_id", SyncAction.SHIP),
            ("cancellation_id", SyncAction.CANCEL),
            ("refund_id", SyncAction.REFUND),
            ("restock_id", SyncAction.RESTOCK),
        ):
            if name in ids:
                placed.references.append((action, str(ids[name])))
        if "dispute_id" in ids:
            action = SyncAction.CLOSE_DISPUTE if command == "close_dispute" else SyncAction.OPEN_DISPUTE
            placed.references.append((action, str(ids["dispute_id"])))

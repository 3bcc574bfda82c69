"""Fixtures of the unit tests: a `Ledger` on in-memory persistence with a clock the test controls, and a `shop`
that registers accounts, imports orders and runs commands in one line each.

Nothing here needs PostgreSQL: the persistence module is forced to the in-memory one, whatever the
environment says.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from ledger.aggregates.values import (
    Buyer,
    CancelReason,
    Carrier,
    Context,
    ImportedOrder,
    LineQuantity,
    Marketplace,
    OrderLine,
    PaymentStatus,
    RefundReason,
    Source,
    SyncAction,
)
from ledger.application.ledger import Ledger
from ledger.application.queries import CommandResult, LineDetails, OrderDetails

PURCHASED_AT = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
# A UPS example number with a correct 1Z check digit.
UPS_TRACKING = "1Z999AA10123456784"
IN_MEMORY = {"PERSISTENCE_MODULE": "eventsourcing.popo", "LEDGER_PERSISTENCE_MODULE": "eventsourcing.popo"}

# Line A: 2 units with tax and shipping; line B: 3 units whose tax does not split evenly per unit.
DEFAULT_LINES = (
    OrderLine("A", "SKU-A", 2, Decimal("10.00"), Decimal("1.60"), Decimal("3.00"), "Mug"),
    OrderLine("B", "SKU-B", 3, Decimal("5.00"), Decimal("1.00"), Decimal("1.50"), "Spoon"),
)


class Clock:
    """The application's "now", moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Shop:
    """One seller's accounts and orders on a `Ledger`, with short forms of the commands."""

    seller = "seller-1"
    purchased_at = PURCHASED_AT
    tracking_number = UPS_TRACKING
    default_lines = DEFAULT_LINES

    def __init__(self, ledger: Ledger, clock: Clock) -> None:
        self.ledger = ledger
        self.clock = clock
        self.ctx = Context(actor="tester", source=Source.API)
        self._accounts: dict[tuple[str, Marketplace, bool, bool], UUID] = {}
        self._orders = 0

    # ------------------------------------------------------------------------ accounts, orders

    def account(
        self,
        marketplace: Marketplace,
        *,
        fulfillment_managed: bool = True,
        restock_in_ledger: bool = False,
        seller: str | None = None,
    ) -> UUID:
        """An account with these settings (registered once, then reused)."""
        key = (seller or self.seller, marketplace, fulfillment_managed, restock_in_ledger)
        if key not in self._accounts:
            details = self.ledger.register_account(
                self.ctx,
                seller=key[0],
                marketplace=marketplace,
                name=f"{marketplace.value} account {len(self._accounts) + 1}",
                fulfillment_managed=fulfillment_managed,
                restock_in_ledger=restock_in_ledger,
            )
            self._accounts[key] = details.account_id
        return self._accounts[key]

    def imported(
        self,
        marketplace_order_id: str | None = None,
        *,
        lines: tuple[OrderLine, ...] = DEFAULT_LINES,
        paid: bool = True,
        purchased_at: datetime = PURCHASED_AT,
        currency: str = "USD",
        **fields: Any,
    ) -> ImportedOrder:
        """The marketplace's view of an order (a fresh marketplace order id unless one is given)."""
        if marketplace_order_id is None:
            self._orders += 1
            marketplace_order_id = f"ORDER-{self._orders}"
        fields.setdefault("paid_at", purchased_at + timedelta(minutes=1) if paid else None)
        return ImportedOrder(
            marketplace_order_id=marketplace_order_id,
            purchased_at=purchased_at,
            currency=currency,
            payment_status=PaymentStatus.PAID if paid else PaymentStatus.PENDING,
            buyer=fields.pop("buyer", Buyer("Ada Buyer", "ada@example.com")),
            lines=lines,
            **fields,
        )

    def order(
        self,
        marketplace: Marketplace,
        *,
        paid: bool = True,
        lines: tuple[OrderLine, ...] = DEFAULT_LINES,
        fulfillment_managed: bool = True,
        restock_in_ledger: bool = False,
        purchased_at: datetime = PURCHASED_AT,
    ) -> UUID:
        """Import a new order into an account with these settings; returns the order id."""
        account_id = self.account(
            marketplace, fulfillment_managed=fulfillment_managed, restock_in_ledger=restock_in_ledger
        )
        order = self.imported(lines=lines, paid=paid, purchased_at=purchased_at)
        return self.ledger.import_order(self.ctx, account_id, order).order_id

    def shipped_order(self, marketplace: Marketplace, **order_kwargs: Any) -> UUID:
        """A paid order with every unit shipped, the shipment acknowledged by the marketplace."""
        order_id = self.order(marketplace, **order_kwargs)
        result = self.ship(order_id)
        self.acknowledge(order_id, result.ids["shipment_id"])
        return order_id

    # ------------------------------------------------------------------------------- commands

    @staticmethod
    def units(lines: Mapping[str, int] | None) -> tuple[LineQuantity, ...] | None:
        return None if lines is None else tuple(LineQuantity(k, q) for k, q in lines.items())

    def ship(self, order_id: UUID, lines: Mapping[str, int] | None = None, **kwargs: Any) -> CommandResult:
        kwargs.setdefault("carrier", Carrier.UPS)
        kwargs.setdefault("tracking_number", UPS_TRACKING)
        ctx = kwargs.pop("ctx", self.ctx)
        return self.ledger.ship(ctx, order_id, lines=self.units(lines), **kwargs)

    def cancel(
        self,
        order_id: UUID,
        lines: Mapping[str, int] | None = None,
        *,
        reason: CancelReason = CancelReason.OUT_OF_STOCK,
        **kwargs: Any,
    ) -> CommandResult:
        ctx = kwargs.pop("ctx", self.ctx)
        return self.ledger.cancel(ctx, order_id, reason=reason, lines=self.units(lines), **kwargs)

    def refund(
        self, order_id: UUID, *, reason: RefundReason = RefundReason.CUSTOMER_RETURN, **kwargs: Any
    ) -> CommandResult:
        ctx = kwargs.pop("ctx", self.ctx)
        return self.ledger.refund(ctx, order_id, reason=reason, **kwargs)

    def restock(self, order_id: UUID, lines: Mapping[str, int], **kwargs: Any) -> CommandResult:
        ctx = kwargs.pop("ctx", self.ctx)
        units = self.units(lines)
        assert units is not None
        return self.ledger.restock(ctx, order_id, lines=units, **kwargs)

    def acknowledge(self, order_id: UUID, shipment_id: UUID) -> CommandResult:
        """The marketplace accepted the shipment confirmation."""
        return self.ledger.record_sync_outcome(
            self.ctx, order_id, action=SyncAction.SHIP, reference=str(shipment_id), accepted=True
        )

    # -------------------------------------------------------------------------------- queries

    def details(self, order_id: UUID) -> OrderDetails:
        return self.ledger.get_order(order_id)

    def line(self, order_id: UUID, line_id: str) -> LineDetails:
        return next(line for line in self.details(order_id).lines if line.line_id == line_id)

    def events(self, order_id: UUID) -> list[Any]:
        """The order's stored events, oldest first."""
        return list(self.ledger.events.get(order_id))

    def event_types(self, order_id: UUID) -> list[str]:
        return [type(event).__name__ for event in self.events(order_id)]

    def version(self, order_id: UUID) -> int:
        return self.details(order_id).version


@pytest.fixture
def clock() -> Clock:
    """A day after the default purchase time."""
    return Clock(PURCHASED_AT + timedelta(days=1))


@pytest.fixture
def ledger(clock: Clock) -> Ledger:
    return Ledger(env=IN_MEMORY, clock=clock)


@pytest.fixture
def shop(ledger: Ledger, clock: Clock) -> Shop:
    return Shop(ledger, clock)

"""The Ledger: the event-sourced application that records what happens to orders, accounts and API keys.

It is put together from one class per concern, each built on `LedgerCore` (core.py: the generic command path,
load, call, save, with bounded retries, If-Match and idempotent replay), itself built on
ledger.eventstore's `EventStoreApplication` (persistence):
- orders.py: the order commands' handlers and the queries of one order;
- imports.py: importing orders from marketplaces, one or many;
- accounts.py: marketplace accounts;
- keys.py: API keys and the cache of recently authenticated ones.

Order commands are objects (commands.py) run by `execute`, which picks each one's handler from one table. The
keyword methods (`ship(ctx, order_id, carrier=...)`, ...) build the same objects, for tests and scripts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, overload
from uuid import UUID

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.values import Context, ImportedOrder
from ledger.application.accounts import Accounts
from ledger.application.commands import (
    Cancel,
    CloseDispute,
    ImportItem,
    ImportOrder,
    ImportOrders,
    OpenDispute,
    OrderCommand,
    RecordPayment,
    RecordSyncOutcome,
    Refund,
    Restock,
    Ship,
    VoidShipment,
)
from ledger.application.core import utcnow
from ledger.application.imports import Imports
from ledger.application.keys import ApiKeys, KeyCache
from ledger.application.orders import ORDER_HANDLERS, OrderQueries
from ledger.application.queries import CommandResult, ImportResult


class Ledger(OrderQueries, Imports, Accounts, ApiKeys):
    """Commands and small queries over orders, marketplace accounts and API keys."""

    name = "Ledger"

    def __init__(
        self,
        env: dict[str, str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(env, clock)
        self.keys = KeyCache(monotonic)

    @overload
    def execute(self, cmd: OrderCommand) -> CommandResult: ...
    @overload
    def execute(self, cmd: ImportOrder) -> ImportResult: ...
    @overload
    def execute(self, cmd: ImportOrders) -> list[ImportResult | LedgerError]: ...
    def execute(
        self, cmd: OrderCommand | ImportOrder | ImportOrders
    ) -> CommandResult | ImportResult | list[ImportResult | LedgerError]:
        """Run one command: an order command through the generic path with its handler, or an import."""
        if isinstance(cmd, ImportOrder):
            return self.import_one(cmd)
        if isinstance(cmd, ImportOrders):
            return self.import_many(cmd)
        return self._run(cmd, ORDER_HANDLERS[type(cmd)])

    # The same commands by keyword (fields as in commands.py).

    def ship(self, ctx: Context, order_id: UUID, **fields: Any) -> CommandResult:
        return self.execute(Ship(ctx=ctx, order_id=order_id, **fields))

    def cancel(self, ctx: Context, order_id: UUID, **fields: Any) -> CommandResult:
        return self.execute(Cancel(ctx=ctx, order_id=order_id, **fields))

    def refund(self, ctx: Context, order_id: UUID, **fields: Any) -> CommandResult:
        return self.execute(Refund(ctx=ctx, order_id=order_id, **fields))

    def record_payment(self, ctx: Context, order_id: UUID, **fields: Any) -> CommandResult:
        return self.execute(RecordPayment(ctx=ctx, order_id=order_id, **fields))

    def open_dispute(self, ctx: Context, order_id: UUID, **fields: Any) -> CommandResult:
        return self.execute(OpenDispute(ctx=ctx, order_id=order_id, **fields))

    def close_dispute(self, ctx: Context, order_id: UUID, **fields: Any) -> CommandResult:
        return self.execute(CloseDispute(ctx=ctx, order_id=order_id, **fields))

    def restock(self, ctx: Context, order_id: UUID, **fields: Any) -> CommandResult:
        return self.execute(Restock(ctx=ctx, order_id=order_id, **fields))

    def void_shipment(self, ctx: Context, order_id: UUID, **fields: Any) -> CommandResult:
        return self.execute(VoidShipment(ctx=ctx, order_id=order_id, **fields))

    def record_sync_outcome(self, ctx: Context, order_id: UUID, **fields: Any) -> CommandResult:
        return self.execute(RecordSyncOutcome(ctx=ctx, order_id=order_id, **fields))

    def import_order(
        self, ctx: Context, account_id: UUID, order: ImportedOrder, *, seller: str | None = None
    ) -> ImportResult:
        return self.execute(ImportOrder(ctx=ctx, account_id=account_id, order=order, seller=seller))

    def import_orders(
        self, ctx: Context, items: Sequence[ImportItem | LedgerError], *, seller: str | None = None
    ) -> list[ImportResult | LedgerError]:
        return self.execute(ImportOrders(ctx=ctx, items=items, seller=seller))

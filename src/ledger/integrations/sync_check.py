"""Reconciliation: compare what each marketplace holds for recently changed orders with the ledger, and record
every difference on the order (`DivergenceFound`, and `DivergenceResolved` once they agree again), which
raises the order's `attention` and lists it at `GET /v1/sync/discrepancies`.

`ledger sync check` runs one round; `ledger serve` and `ledger worker` run one per account every
LEDGER_SYNC_CHECK_INTERVAL (default hourly) beside the importer and the dispatcher.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import TupleRow

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.values import Context, Divergence, OrderStatus, Source
from ledger.application.commands import RecordSyncCheck
from ledger.application.ledger import Ledger
from ledger.eventstore import import_state
from ledger.eventstore.database import DatabaseUnavailableError
from ledger.integrations.base import MarketplaceClient, MarketplaceError
from ledger.integrations.marketplaces import (
    ClientFactory,
    MarketplaceNotConfiguredError,
    SyncSettings,
    client_for,
)

logger = logging.getLogger(__name__)

Connect = Callable[[], psycopg.Connection[TupleRow]]
ACTOR = "sync-check"


@dataclass(frozen=True)
class Difference:
    account_id: UUID
    marketplace: str
    marketplace_order_id: str
    order_id: UUID
    field: str
    ledger: str
    marketplace_value: str


@dataclass
class CheckReport:
    checked: int = 0
    differences: list[Difference] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def compare(order: Any, remote: Any) -> list[tuple[str, str, str]]:
    """(field, ledger, marketplace) for every difference between the ledger's order and the marketplace's."""
    found: list[tuple[str, str, str]] = []
    if (
        remote.status in {s.value for s in OrderStatus}
        and remote.status != order.status
        and not _refunded_before_shipment(order, remote.status)
    ):
        found.append(("status", order.status, remote.status))
    for line in order.lines:
        for name, mine, theirs in (
            ("shipped", line.shipped, remote.shipped.get(line.line_id, 0)),
            ("cancelled", line.cancelled, remote.cancelled.get(line.line_id, 0)),
        ):
            if int(mine) != int(theirs):
                found.append((f"line {line.line_id} {name}", str(mine), str(theirs)))
    try:
        refunded = Decimal(remote.refunded_total)
    except InvalidOperation:
        refunded = None
    if refunded is None or refunded != Decimal(order.refunded_total):
        found.append(("refunded_total", str(order.refunded_total), str(remote.refunded_total)))
    return found


def _refunded_before_shipment(order: Any, remote_status: str) -> bool:
    """Whether the marketplace's status is the ledger's units seen without their refunds. eBay takes a refund
    of a paid order before it ships without cancelling anything: the ledger closes the refunded units (an
    order refunded whole is `canceled`, one whose other units shipped is `shipped`), eBay keeps them open
    (NOT_STARTED, IN_PROGRESS). Not a difference: the lines and the refunded total are compared as well."""
    open_units = sum(line.quantity - line.cancelled for line in order.lines)
    shipped = sum(line.shipped for line in order.lines)
    if open_units == 0:
        status = OrderStatus.CANCELED
    elif shipped >= open_units:
        status = OrderStatus.SHIPPED
    else:
        status = OrderStatus.PARTIALLY_SHIPPED if shipped else OrderStatus.UNSHIPPED
    return any(line.refunded_quantity for line in order.lines) and remote_status == status.value


class SyncChecker:
    """Check rounds, on demand (`check`) or on a schedule (`run`)."""

    def __init__(
        self,
        ledger: Ledger,
        connect: Connect,
        settings: SyncSettings,
        *,
        client_factory: ClientFactory = client_for,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ledger = ledger
        self.connect = connect
        self.settings = settings
        self.client_factory = client_factory
        self.clock = clock
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """A round every LEDGER_SYNC_CHECK_INTERVAL (the first after one interval: imports come first)."""
        while not self.stopping.wait(self.settings.sync_check_interval):
            try:
                report = self.check()
                if report.differences or report.problems:
                    logger.warning("sync check: %d orders, %d differences, %d not checked", report.checked,
                                   len(report.differences), len(report.problems))  # fmt: skip
            except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnavailableError) as e:
                logger.warning("sync check: database unavailable (%s); next round in a while", e)
            except Exception:  # a bug in one round must not end the checks for good
                logger.exception("sync check: the round failed")

    def check(self, account_id: UUID | None = None, days: float = 7.0) -> CheckReport:
        """Compare every order the importer saw change in the last `days` (of one account, or all) with its
        marketplace, and record what each comparison found on the order."""
        report = CheckReport()
        since = self.clock() - timedelta(days=days)
        with self.connect() as conn:
            rows = import_state.recent_orders(conn, since, account_id)
        report.checked = len(rows)
        clients: dict[UUID, MarketplaceClient | None] = {}
        try:
            for account, moid, order_id in rows:
                if self.stopping.is_set():
                    break
                order = self.ledger.get_order(order_id)
                if order.third_party_managed:
                    continue  # fulfilled elsewhere: the ledger does not keep the marketplace up to date
                if account not in clients:
                    details = self.ledger.get_account(account)
                    if not details.sync_enabled:  # the ledger does not talk to its marketplace
                        report.problems.append(f"account {account}: sync is off")
                        clients[account] = None
                        continue
                    try:
                        clients[account] = self.client_factory(details, self.settings)
                    except (MarketplaceNotConfiguredError, MarketplaceError) as e:
                        report.problems.append(f"account {account}: {e.message}")
                        clients[account] = None
                client = clients[account]
                if client is None:
                    continue
                try:
                    remote = client.order_state(moid)
                except MarketplaceError as e:
                    report.problems.append(f"{order.marketplace} {moid}: cannot ask the marketplace: {e}")
                    continue
                found = compare(order, remote)
                report.differences += [
                    Difference(account, order.marketplace, moid, order_id, name, mine, theirs)
                    for name, mine, theirs in found
                ]
                self._record(order_id, tuple(Divergence(*f) for f in found), report)
        finally:
            for c in clients.values():
                if c is not None:
                    c.close()
        return report

    def _record(self, order_id: UUID, divergences: tuple[Divergence, ...], report: CheckReport) -> None:
        ctx = Context(actor=ACTOR, source=Source.SYSTEM)
        try:
            self.ledger.execute(RecordSyncCheck(ctx=ctx, order_id=order_id, divergences=divergences))
        except LedgerError as e:
            report.problems.append(f"order {order_id}: not recorded: {e.message}")

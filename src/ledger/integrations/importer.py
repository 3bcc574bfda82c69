"""Pull new and changed orders from each marketplace account into the ledger, once and only once.

A round, per account: ask the marketplace for orders updated after the account's cursor (less
LEDGER_IMPORT_OVERLAP, for marketplaces' clocks and their indexing lag), page through, and for each order:
import it (`Ledger.import_order` is idempotent: the order id is a uuid5 of the marketplace's id, and a re-sent
order changes nothing or records that it was paid), turn the facts the marketplace reports into commands
(payment cleared, a buyer's cancellation, disputes opened and closed), each under an idempotency key made
from the marketplace's own ids so a re-delivered fact changes nothing, then acknowledge the order where the
marketplace expects it. Orders of accounts with `fulfillment_managed = false` import as Third Party Managed
(the ledger decides that from the account) and are never acknowledged: someone else fulfils them.

The cursor (`integration_cursors`) only moves past orders that are stored: after a page when the pages so far
came in time order, otherwise at the end of the round. A crash between pages re-imports, never skips. An order
the ledger refuses (bad data, a conflicting re-import) is reported and logged, and does not hold the cursor:
it is asked for again when the marketplace changes it.

Accounts are found in the event log (MarketplaceAccount.Registered), read incrementally from the last position
seen, so a round costs nothing more as the log grows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.utils import get_topic
from psycopg.rows import TupleRow

from ledger.aggregates.account import MarketplaceAccount
from ledger.aggregates.errors import DisputeAlreadyClosedError, LedgerError, NothingToCancelError
from ledger.aggregates.values import CancelReason, Context, Requester, Source
from ledger.application.commands import Cancel, CloseDispute, ImportOrder, OpenDispute, RecordPayment
from ledger.application.ledger import Ledger
from ledger.application.queries import AccountDetails
from ledger.eventstore import import_state
from ledger.eventstore.database import DatabaseUnavailableError
from ledger.integrations.base import (
    BuyerCancelled,
    CancelledRemotely,
    DisputeClosedRemotely,
    DisputeOpenedRemotely,
    Gated,
    MarketplaceClient,
    MarketplaceError,
    MarketplaceFact,
    PaymentCleared,
    PermanentMarketplaceError,
    RemoteOrder,
    TransientMarketplaceError,
)
from ledger.integrations.dispatcher import RateLimiter
from ledger.integrations.marketplaces import (
    RATE_LIMITS,
    ClientFactory,
    MarketplaceNotConfiguredError,
    SyncSettings,
    client_for,
    entry_for,
)

logger = logging.getLogger(__name__)

Connect = Callable[[], psycopg.Connection[TupleRow]]
ACTOR = "importer"
_REGISTERED = get_topic(MarketplaceAccount.Registered)  # type: ignore[attr-defined]


@dataclass
class AccountReport:
    """What one round did for one account."""

    account_id: UUID
    marketplace: str
    pages: int = 0
    orders: int = 0
    created: int = 0
    updated: int = 0
    facts: int = 0
    acknowledged: int = 0
    refused: list[dict[str, str]] = field(default_factory=list)
    new_orders: list[dict[str, str]] = field(default_factory=list)  # marketplace_order_id, order_id
    error: str | None = None
    cursor: datetime | None = None


def fact_key(marketplace: str, marketplace_order_id: str, fact: MarketplaceFact) -> str:
    """An idempotency key for a fact, from the marketplace's own ids: a re-delivery replays, never repeats."""
    base = f"mp:{marketplace}:{marketplace_order_id}"
    if isinstance(fact, PaymentCleared):
        return f"{base}:payment"
    if isinstance(fact, BuyerCancelled):
        lines = "all" if fact.lines is None else ",".join(f"{q.line_id}x{q.quantity}" for q in fact.lines)
        # Not the time: marketplaces restamp it as the order changes (Amazon reports its LastUpdateDate).
        # A request and the cancellation that may follow it are two facts.
        return f"{base}:buyer-cancel:{lines}" + ("" if fact.applied else ":request")
    if isinstance(fact, CancelledRemotely):
        return f"{base}:cancelled"
    if isinstance(fact, DisputeOpenedRemotely):
        return f"{base}:dispute-open:{fact.marketplace_dispute_id}"
    return f"{base}:dispute-close:{fact.marketplace_dispute_id}"


class _ImportGate:
    """Paces one account's reads by the per-operation buckets the dispatcher uses (`RateLimiter`): each call
    waits for its operation's token; a 429 pauses the operation for the marketplace's Retry-After."""

    def __init__(self, limiter: RateLimiter, account: AccountDetails, stopping: threading.Event) -> None:
        self.limiter, self.account, self.stopping = limiter, account, stopping

    def before(self, operation: str) -> None:
        name = f"{self.account.marketplace}.{operation}"
        if not self.limiter.acquire(self.account.marketplace, self.account.account_id, name, self.stopping):
            raise TransientMarketplaceError("stopping", f"{name}: the importer is stopping")

    def throttled(self, operation: str, seconds: float) -> None:
        logger.info("importer: %s.%s throttled for account %s: waiting %.1f s", self.account.marketplace,
                    operation, self.account.account_id, seconds)  # fmt: skip
        name = f"{self.account.marketplace}.{operation}"
        self.limiter.pause_operation(self.account.marketplace, self.account.account_id, name, seconds)


class Importer:
    """Import rounds over every account (or one), on demand or on a schedule. Its reads of the marketplaces
    keep to their published limits per operation (`RATE_LIMITS`, with `limiter`: the buckets of the process,
    shared with its dispatcher), and a 429 backs off for the marketplace's Retry-After."""

    def __init__(
        self,
        ledger: Ledger,
        connect: Connect,
        settings: SyncSettings,
        *,
        client_factory: ClientFactory = client_for,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        limiter: RateLimiter | None = None,
    ) -> None:
        self.ledger = ledger
        self.connect = connect
        self.settings = settings
        self.client_factory = client_factory
        self.limiter = limiter or RateLimiter(RATE_LIMITS | settings.rate_limits, settings.processes)
        self.clock = clock
        self.stopping = threading.Event()
        self.error: Exception | None = None

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """A round now, then every LEDGER_IMPORT_INTERVAL, until stopped (between two orders at the latest)."""
        while not self.stopping.is_set():
            try:
                for report in self.run_round():
                    _log(report)
            except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnavailableError) as e:
                logger.warning("importer: database unavailable (%s); next round in a while", e)
            except Exception as e:  # a bug in one round must not end imports for good: said, then next round
                self.error = e
                logger.exception("importer: the round failed")
            self.stopping.wait(self.settings.import_interval)

    # ------------------------------------------------------------------------------- rounds

    def run_round(self, account_id: UUID | None = None) -> list[AccountReport]:
        with self.connect() as conn:
            conn.autocommit = True  # each statement, or `transaction()` block, commits on its own
            if account_id is not None:
                accounts = [self.ledger.get_account(account_id)]
            else:
                accounts = [self.ledger.get_account(a) for a in self.discover_accounts(conn)]
            reports = []
            for account in accounts:
                if self.stopping.is_set():
                    break
                reports.append(self.import_account(conn, account))
        return reports

    def discover_accounts(self, conn: psycopg.Connection[TupleRow]) -> list[UUID]:
        """Every registered account: those seen before, and those registered since (read from the log)."""
        position = import_state.accounts_position(conn)
        while True:
            notifications = self.ledger.recorder.select_notifications(
                start=position, limit=500, topics=[_REGISTERED], inclusive_of_start=False
            )
            if not notifications:
                break
            found = []
            for n in notifications:
                event: Any = self.ledger.mapper.to_domain_event(n)
                found.append((n.originator_id, event.marketplace, event.timestamp))
            position = notifications[-1].id
            import_state.record_accounts(conn, found, position)
        return import_state.account_ids(conn)

    def import_account(self, conn: psycopg.Connection[TupleRow], account: AccountDetails) -> AccountReport:
        """One account's round, unless another process is importing it right now (then it is skipped)."""
        report = AccountReport(account.account_id, account.marketplace)
        if not account.sync_enabled:  # the ledger does not talk to its marketplace; the cursor waits
            report.error = "skipped: sync is off for this account"
            return report
        with import_state.account_lock(conn, account.account_id) as taken:
            if not taken:
                report.error = "skipped: another process is importing this account"
                return report
            return self._import_account(conn, account, report)

    def _import_account(
        self, conn: psycopg.Connection[TupleRow], account: AccountDetails, report: AccountReport
    ) -> AccountReport:
        try:
            client = self.client_factory(account, self.settings)
        except (MarketplaceNotConfiguredError, MarketplaceError) as e:  # no URL, or bad credentials
            report.error = f"{e.code}: {e.message}"
            return report
        if isinstance(client, Gated):
            client.set_gate(_ImportGate(self.limiter, account, self.stopping))
        try:
            self._pages(conn, account, client, report)
        except MarketplaceError as e:
            report.error = f"{e.code}: {e.message}"
        finally:
            client.close()
        import_state.end_round(conn, account.account_id, report.error)
        return report

    def _pages(
        self, conn: psycopg.Connection[TupleRow], account: AccountDetails, client: MarketplaceClient,
        report: AccountReport,
    ) -> None:  # fmt: skip
        cursor = self._cursor(conn, account)
        since = cursor - timedelta(seconds=self.settings.import_overlap)
        newest, in_order, previous = cursor, True, None
        page: str | None = None
        while not self.stopping.is_set():
            result = client.list_orders(since, page)
            report.pages += 1
            for remote in result.orders:
                if self.stopping.is_set():
                    return  # between two orders; the cursor stays before this page
                self._store(conn, account, client, remote, report)
                if previous is not None and remote.updated_at < previous:
                    in_order = False
                previous = remote.updated_at
                newest = max(newest, remote.updated_at)
            if in_order or result.next_page is None:
                self._advance(conn, account, newest)  # every order up to here is stored
                report.cursor = newest
            if result.next_page is None:
                return
            page = result.next_page

    def _cursor(self, conn: psycopg.Connection[TupleRow], account: AccountDetails) -> datetime:
        found = import_state.cursor(conn, account.account_id)
        if found is not None:
            return found
        start = self.clock() - timedelta(seconds=self.settings.import_lookback)
        import_state.start_cursor(conn, account.account_id, account.marketplace, start)
        return start

    def _advance(self, conn: psycopg.Connection[TupleRow], account: AccountDetails, to: datetime) -> None:
        import_state.advance_cursor(conn, account.account_id, to)

    # ------------------------------------------------------------------------------ one order

    def _store(
        self, conn: psycopg.Connection[TupleRow], account: AccountDetails, client: MarketplaceClient,
        remote: RemoteOrder, report: AccountReport,
    ) -> None:  # fmt: skip
        moid = remote.order.marketplace_order_id
        report.orders += 1
        ctx = Context(
            actor=f"{ACTOR}:{account.marketplace}", source=Source.MARKETPLACE, effective_at=remote.updated_at
        )
        try:
            result = self.ledger.execute(
                ImportOrder(ctx=ctx, account_id=account.account_id, order=remote.order)
            )
        except LedgerError as e:
            report.refused.append({"marketplace_order_id": moid, "code": e.code, "message": e.message})
            logger.warning(
                "importer: %s order %s refused: %s: %s", account.marketplace, moid, e.code, e.message
            )
            return
        if result.created:
            report.created += 1
            report.new_orders.append({"marketplace_order_id": moid, "order_id": str(result.order_id)})
        elif result.events:
            report.updated += 1
        for fact in remote.facts:
            if self._fact(account, result.order_id, moid, fact, report):
                report.facts += 1
        acknowledged_at = import_state.record_order(
            conn, account.account_id, moid, result.order_id, remote.updated_at
        )
        if (
            remote.needs_acknowledgement
            and account.fulfillment_managed
            # Walmart's acknowledgements go through the outbound queue, so they are on the order's record.
            and not entry_for(account.marketplace).acknowledges_orders
            and acknowledged_at is None
        ):
            try:
                client.acknowledge(moid)
            except PermanentMarketplaceError as e:  # reported; a transient error ends the round instead
                report.refused.append(
                    {"marketplace_order_id": moid, "code": e.code, "message": f"acknowledgement: {e.message}"}
                )
                return
            import_state.mark_acknowledged(conn, account.account_id, moid)
            report.acknowledged += 1

    def _fact(
        self, account: AccountDetails, order_id: UUID, moid: str, fact: MarketplaceFact, report: AccountReport
    ) -> bool:
        """Record one fact the marketplace reports; whether anything new was recorded."""
        key = fact_key(account.marketplace, moid, fact)
        actor = f"{ACTOR}:{account.marketplace}"
        try:
            if isinstance(fact, PaymentCleared):
                ctx = Context(
                    actor=actor, source=Source.MARKETPLACE, idempotency_key=key, effective_at=fact.paid_at
                )
                result = self.ledger.execute(RecordPayment(ctx=ctx, order_id=order_id, paid_at=fact.paid_at))
            elif isinstance(fact, BuyerCancelled):
                ctx = Context(
                    actor=actor,
                    source=Source.MARKETPLACE,
                    idempotency_key=key,
                    effective_at=fact.requested_at,
                )
                # Applied: the marketplace's own act. Asked: the buyer's request, which the order's policy
                # records as a cancellation request for the seller (or applies, inside a cancel window).
                requested_by = Requester.MARKETPLACE if fact.applied else Requester.BUYER
                result = self.ledger.execute(Cancel(
                    ctx=ctx, order_id=order_id, reason=CancelReason.BUYER_CANCELLED, lines=fact.lines,
                    requested_by=requested_by,
                ))  # fmt: skip
            elif isinstance(fact, CancelledRemotely):
                # The marketplace's own act on the whole order: what is unshipped is cancelled; what the ledger
                # shipped and the marketplace never had is recorded as its word (MarketplaceCancelled, attention).
                ctx = Context(
                    actor=actor,
                    source=Source.MARKETPLACE,
                    idempotency_key=key,
                    effective_at=fact.cancelled_at,
                )
                result = self.ledger.execute(Cancel(
                    ctx=ctx, order_id=order_id, reason=fact.reason, requested_by=Requester.MARKETPLACE,
                ))  # fmt: skip
            elif isinstance(fact, DisputeOpenedRemotely):
                ctx = Context(
                    actor=actor, source=Source.MARKETPLACE, idempotency_key=key, effective_at=fact.opened_at
                )
                result = self.ledger.execute(
                    OpenDispute(
                        ctx=ctx,
                        order_id=order_id,
                        reason=fact.reason,
                        marketplace_dispute_id=fact.marketplace_dispute_id,
                    )
                )
            else:
                ctx = Context(
                    actor=actor, source=Source.MARKETPLACE, idempotency_key=key, effective_at=fact.closed_at
                )
                dispute_id = self._dispute_id(order_id, fact)
                if dispute_id is None:
                    raise _UnknownDispute(fact.marketplace_dispute_id)
                result = self.ledger.execute(
                    CloseDispute(ctx=ctx, order_id=order_id, dispute_id=dispute_id, outcome=fact.outcome)
                )
        except (NothingToCancelError, DisputeAlreadyClosedError):
            return False  # the ledger has it already (e.g. cancelled by the seller first): nothing to record
        except LedgerError as e:
            report.refused.append({"marketplace_order_id": moid, "code": e.code, "message": e.message})
            logger.warning("importer: %s order %s: %s refused: %s", account.marketplace, moid, type(fact).__name__,
                           e.message)  # fmt: skip
            return False
        return bool(result.events) and not result.replayed

    def _dispute_id(self, order_id: UUID, fact: DisputeClosedRemotely) -> UUID | None:
        """The ledger's dispute the marketplace's id names: a buyer's dispute by its marketplace id, or a
        seller's cancellation dispute by the reference the marketplace gave its cancel request (eBay cancelId)."""
        order = self.ledger.get_order(order_id)
        for dispute in order.disputes:
            if dispute.marketplace_dispute_id == fact.marketplace_dispute_id:
                return dispute.dispute_id
        for outcome in order.sync_answers:
            if (
                outcome.accepted
                and outcome.action == "cancel"
                and (outcome.marketplace_reference == fact.marketplace_dispute_id)
            ):
                for dispute in order.disputes:
                    if str(dispute.dispute_id) == outcome.reference:
                        return dispute.dispute_id
        return None


def _log(r: AccountReport) -> None:
    """One line per account of a scheduled round that did something or failed (a quiet round says nothing)."""
    if r.error:
        logger.warning("importer: %s account %s: %s", r.marketplace, r.account_id, r.error)
    if r.created or r.updated or r.facts or r.refused:
        logger.info("importer: %s account %s: %d new, %d updated, %d facts, %d refused", r.marketplace,
                    r.account_id, r.created, r.updated, r.facts, len(r.refused))  # fmt: skip


class _UnknownDispute(LedgerError):
    code = "dispute-not-found"

    def __init__(self, marketplace_dispute_id: str) -> None:
        super().__init__(
            f"the marketplace closed dispute {marketplace_dispute_id}, which the ledger never opened"
        )

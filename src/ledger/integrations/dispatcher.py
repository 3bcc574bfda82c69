"""Take due items off the outbound queue, tell the marketplace, record its answer on the order.

The queue's rows are read and written through `outbox.py` (claim, finish, skip, replay); this module decides
what to send when, and what an answer means.

How an item moves (the columns the dispatcher owns: state, attempts, next_attempt_at, last_error, updated_at,
and marketplace_reference while a change is `Submitted`):

1. Claim, in one short transaction: the due item with the earliest `next_attempt_at` (retries first, then new
   items) none of whose dependencies is unfinished (the earlier items of its order it waits for, by the one
   rule `outbox.waits_for`; an independent later item never waits) and whose operation's bucket has a token,
   locked with `FOR UPDATE SKIP LOCKED` so several dispatchers never take the same item.
   Due means pending or failed with `next_attempt_at` passed, or in flight with `next_attempt_at` passed: a
   claim sets `next_attempt_at` to now + the lease, so an item whose dispatcher died (kill -9 between the
   marketplace call and recording the answer) is taken again once the lease runs out. Re-sending it is safe:
   every request carries the item's idempotency key, which the adapter maps to the marketplace's own dedupe
   key (Amazon packageReferenceId, eBay's tracking number...). A claim counts one attempt; attempts are never
   reset, not even by an operator's retry.
2. Call the adapter outside any transaction, after taking a token from its operation's bucket (RateLimiter).
3. Record the answer as an event (`Ledger.record_sync_outcome`: MarketplaceAcknowledged or
   MarketplaceRejected), then update the row (succeeded; failed with a retry time; dead). The outbound
   projection applies the same events; `outbox.settle` never lets them undo the dispatcher's own work.
   `Submitted` (an Amazon feed, an eBay refund): the item stays in flight with the marketplace's reference and
   `next_attempt_at` at the poll time; the claim that follows polls rather than sends.
   A refusal that may mean "this is so already" (`MarketplaceEntry.in_effect_codes`: Amazon's 18041 on a
   cancellation) is checked against the marketplace's own state of the order (`in_effect.py`) before the item
   dies: held already, the item succeeds as acknowledged, the event's `reason` saying so.

Retries: exponential backoff from LEDGER_SYNC_BACKOFF, doubled per attempt up to LEDGER_SYNC_BACKOFF_MAX, with
"equal jitter" (a random point in the upper half), never sooner than the marketplace's Retry-After, which
also pauses that marketplace's bucket. After LEDGER_SYNC_MAX_ATTEMPTS sends, or on a permanent error, the
item is dead with the reason in `last_error`; `POST /v1/sync/outbound/{id}/retry` puts it back.

First install over existing history: with LEDGER_SYNC_SINCE set, pending items of changes made before that
time and untouched since are marked dead with `last_error` "skipped: ..." instead of being sent, and they do
not hold back what depends on them. An operator's retry sends one anyway. Without the setting, everything
in the queue is sent.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import TupleRow

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.values import Context, Marketplace, Source, SyncAction
from ledger.application.commands import RecordSyncItemDied, RecordSyncOutcome
from ledger.application.ledger import Ledger
from ledger.eventstore.database import DatabaseUnavailableError
from ledger.integrations import in_effect, outbox
from ledger.integrations.base import (
    Accepted,
    MarketplaceClient,
    MarketplaceError,
    Outcome,
    PermanentMarketplaceError,
    Submitted,
    SyncRequest,
    TransientMarketplaceError,
)
from ledger.integrations.marketplaces import (
    MARKETPLACES,
    RATE_LIMITS,
    ClientFactory,
    MarketplaceNotConfiguredError,
    SyncSettings,
    client_for,
    entry_for,
    operation_for,
)
from ledger.integrations.outbox import Claimed

logger = logging.getLogger(__name__)

Connect = Callable[[], psycopg.Connection[TupleRow]]
ACTOR = "dispatcher"
SYNC_OFF_REASON = "sync off: the account's sync was turned off before this was sent; retry it to send it"
# In-flight items (a poll due, a dead dispatcher's lease run out) are looked for every STALE_CHECK seconds.
STALE_CHECK = 5.0


class TokenBucket:
    """`rate` tokens a second up to `burst`; `pause` empties it for a while (a 429's Retry-After)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.updated = clock()
        self.paused_until = 0.0

    def _refill(self) -> float:
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return now

    def available(self) -> bool:
        now = self._refill()
        return now >= self.paused_until and self.tokens >= 1

    def take(self) -> None:
        self._refill()
        self.tokens -= 1

    def pause(self, seconds: float) -> None:
        """The marketplace's bucket is empty and has a token again in `seconds` (its Retry-After): ours waits
        that long and then has one token (not a whole refill at our rate, which for getOrders is a minute)."""
        now = self._refill()
        self.paused_until = max(self.paused_until, now + seconds)
        self.tokens = 1 - self.rate * seconds  # below zero for a long pause: one token when it ends

    def wait_seconds(self) -> float:
        """How long until a token is there (0 when one is)."""
        now = self._refill()
        short = 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate if self.rate > 0 else 1.0
        return max(self.paused_until - now, short, 0.0)


class RateLimiter:
    """The token buckets of one dispatcher process: one per marketplace operation (`amazon.confirmShipment`),
    and per seller account where the marketplace limits each seller; the process's dispatchers share them.

    An item waits only for its own operation's bucket: `blocked()` names the empty ones for the claim to pass
    over, and `take` spends a token as the call is made (a poll on the operation it polls with). Two threads
    that each claim an item for the last token both send it: the bucket goes below zero and its next token
    comes that much later, so the rate holds over time. With `processes` dispatcher processes on one database,
    each takes 1/processes of every rate and burst.
    """

    def __init__(
        self,
        limits: Mapping[str, tuple[float, int]],
        processes: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = {
            op: (rate / processes, max(1, burst // processes)) for op, (rate, burst) in limits.items()
        }
        self.clock = clock
        self.buckets: dict[tuple[str, str], TokenBucket] = {}
        self.lock = threading.Lock()

    def bucket(self, marketplace: str, account_id: UUID | str, operation: str) -> TokenBucket | None:
        """The bucket of `operation` (`amazon.createFeed`) for the account; None: the call is not limited."""
        limit = self.limits.get(operation)
        if limit is None:
            return None
        key = (str(account_id) if entry_for(marketplace).limits_per_account else ANY_ACCOUNT, operation)
        with self.lock:
            if key not in self.buckets:
                self.buckets[key] = TokenBucket(*limit, clock=self.clock)
            return self.buckets[key]

    def take(self, item: Claimed) -> None:
        bucket = self.bucket(item.marketplace, item.account_id, _operation(item))
        if bucket is not None:
            with self.lock:
                bucket.take()

    def pause(self, item: Claimed, seconds: float) -> None:
        """The marketplace said 429 to this item's call: that bucket waits `seconds` (its Retry-After)."""
        self.pause_operation(item.marketplace, item.account_id, _operation(item), seconds)

    def pause_operation(
        self, marketplace: str, account_id: UUID | str, operation: str, seconds: float
    ) -> None:
        bucket = self.bucket(marketplace, account_id, operation)
        if bucket is not None:
            with self.lock:
                bucket.pause(seconds)

    def acquire(
        self, marketplace: str, account_id: UUID | str, operation: str, stopping: threading.Event
    ) -> bool:
        """Wait for a token of `operation` (`amazon.getOrders`) and take it: the importer's calls, which have
        nothing else to do meanwhile. False if `stopping` was set while waiting (nothing taken)."""
        bucket = self.bucket(marketplace, account_id, operation)
        if bucket is None:
            return True
        while True:
            with self.lock:
                wait = bucket.wait_seconds()
                if wait <= 0:
                    bucket.take()
                    return True
            if stopping.wait(min(wait, 1.0)):
                return False

    def blocked(self) -> list[str]:
        """What may not be sent now, as `outbox.claim` names items (`outbox.claim_key`)."""
        with self.lock:
            empty = [key for key, bucket in self.buckets.items() if not bucket.available()]
        return [name for scope, operation in empty for name in _claim_keys(scope, operation)]


ANY_ACCOUNT = "*"  # the scope of a bucket an application's calls share, whichever account they are for


def _operation(item: Claimed) -> str:
    return operation_for(item.marketplace, item.action, polling=item.marketplace_reference is not None)


def _claim_keys(scope: str, operation: str) -> list[str]:
    """The items an empty bucket holds back, by `outbox.claim_key`: each action that makes the call."""
    marketplace, call = operation.split(".", 1)
    entry = entry_for(marketplace)
    return [
        outbox.claim_key(scope, marketplace, action, polling=polling)
        for polling, calls in ((False, entry.sends), (True, entry.polls))
        for action, made in calls.items()
        if made == call
    ]


def backoff_delay(
    attempts: int, settings: SyncSettings, retry_after: float | None, rng: random.Random
) -> float:
    """Seconds until the next try after `attempts` sends: exponential, jittered, at least Retry-After."""
    delay = min(settings.sync_backoff_max, settings.sync_backoff * 2 ** max(attempts - 1, 0))
    jittered = rng.uniform(delay / 2, delay)
    return max(jittered, retry_after or 0.0)


class Dispatcher:
    """One dispatcher: a loop over due items. Run several (threads or processes) to go faster."""

    def __init__(
        self,
        ledger: Ledger,
        connect: Connect,
        settings: SyncSettings,
        *,
        client_factory: ClientFactory = client_for,
        rng: random.Random | None = None,
        before_pass: Callable[[], None] | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.before_pass = before_pass  # e.g. bring the queue up to date when no worker does
        self.ledger = ledger
        self.connect = connect
        self.settings = settings
        self.client_factory = client_factory
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        # One limiter per process: dispatchers of one process are given the same one.
        self.limiter = limiter or RateLimiter(RATE_LIMITS | settings.rate_limits, settings.processes)
        self.clients: dict[UUID, MarketplaceClient] = {}
        self.misconfigured: set[UUID] = set()  # accounts whose configuration error was logged
        self.unconfigured = [m.value for m in Marketplace if not self._configured(m)]
        self._conn: psycopg.Connection[TupleRow] | None = None
        self._in_flight_checked = float("-inf")
        self.stopping = threading.Event()
        self.error: Exception | None = None

    def _configured(self, marketplace: Marketplace) -> bool:
        if self.client_factory is not client_for:
            return True
        if not self.settings.url_for(marketplace):
            return False
        try:
            __import__(MARKETPLACES[marketplace].adapter[0])
        except ImportError:
            return False
        return True

    # --------------------------------------------------------------------------------- loop

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Dispatch until stopped, each item to the end (a stop waits for the call in progress)."""
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                sent = self.dispatch_due()
            except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnavailableError) as e:
                logger.warning("dispatcher: database unavailable (%s); retrying", e)
                self._close_connection()
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            except Exception as e:  # not the marketplace's doing (handle() deals with that): said, then again
                self.error = e
                logger.exception("dispatcher: a pass failed; trying again in %ss", backoff)
                self._close_connection()
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            backoff = 0.5
            if sent == 0:
                self.stopping.wait(self.settings.dispatch_interval)
        self.close()

    def dispatch_due(self, limit: int = 1000) -> int:
        """Handle due items until none is due (or `limit`, or a stop); how many were handled."""
        if self.before_pass is not None:
            self.before_pass()
        self.skip_historic()
        handled = 0
        while handled < limit and not self.stopping.is_set():
            item = self.claim()
            if item is None:
                break
            self.handle(item)
            handled += 1
        return handled

    def close(self) -> None:
        self._close_connection()
        for client in self.clients.values():
            client.close()
        self.clients.clear()

    # ------------------------------------------------------------------------------ storage

    def _connection(self) -> psycopg.Connection[TupleRow]:
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
            self._conn.autocommit = True  # each statement, or `transaction()` block, commits on its own
        return self._conn

    def _close_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def skip_historic(self) -> int:
        since = self.settings.sync_since
        return 0 if since is None else outbox.skip_historic(self._connection(), since)

    def claim(self) -> Claimed | None:
        """Failed items whose retry is due first, then pending ones; in flight ones every STALE_CHECK."""
        now = time.monotonic()
        if now - self._in_flight_checked >= STALE_CHECK:
            item = self._claim(outbox.IN_FLIGHT)
            # Found one: more may be waiting, look again at the next claim; none: not for a while.
            self._in_flight_checked = float("-inf") if item is not None else now
            if item is not None:
                return item
        return self._claim(outbox.FAILED) or self._claim(outbox.PENDING)

    def _claim(self, state: str) -> Claimed | None:
        return outbox.claim(
            self._connection(), state, self.unconfigured, self.limiter.blocked(), self.settings.sync_lease
        )

    def _finish(
        self,
        item: Claimed,
        state: str,
        *,
        delay: float = 0.0,
        error: str | None = None,
        reference: str | None = None,
    ) -> bool:
        return outbox.finish(self._connection(), item, state, delay=delay, error=error, reference=reference)

    # ----------------------------------------------------------------------------- sending

    def handle(self, item: Claimed) -> None:
        """Send (or poll) one claimed item and record what came of it."""
        polling = item.marketplace_reference is not None
        # Queued before sync was turned off: never sent by itself, even once sync is on again (the change may
        # be stale by then); dead, so the order needs attention and an operator retries it (sends it) or
        # resolves it by hand. A feed already submitted is asked after as usual.
        if not polling and not self.ledger.get_account(item.account_id).sync_enabled:
            self._give_up(item, SYNC_OFF_REASON)
            return
        try:
            client = self._client(item.account_id)
        except MarketplaceNotConfiguredError as e:  # no URL or no credentials: retrying cannot help
            self._misconfigured(item, e)
            return
        except Exception as e:  # a bad credentials file: the marketplace was never reached, so no event
            self._local_failure(item, f"no client for account {item.account_id}: {e}")
            return
        self.limiter.take(item)  # after the credentials: a call never made spends nothing
        try:
            if polling:
                assert item.marketplace_reference is not None
                outcome: Outcome = client.poll(_request(item), item.marketplace_reference)
            else:
                outcome = client.send(_request(item))
        except PermanentMarketplaceError as e:
            if not self._held_already(item, client, e):
                self._rejected(item, e, permanent=True)
        except TransientMarketplaceError as e:
            if e.retry_after:
                self.limiter.pause(item, e.retry_after)
            if polling:  # the status check failed, not the change: ask again later
                delay = backoff_delay(1, self.settings, e.retry_after, self.rng)
                self._finish(
                    item, "in_flight", delay=delay, error=str(e), reference=item.marketplace_reference
                )
                return
            self._rejected(item, e, permanent=False)
        except MarketplaceError as e:
            self._rejected(item, e, permanent=False)
        except Exception as e:  # an adapter bug: ours, not the marketplace's answer, so no event
            logger.exception("dispatcher: item %s: the adapter failed", item.id)
            self._local_failure(item, f"local error: {e}")
        else:
            self._answered(item, outcome)

    def _client(self, account_id: UUID) -> MarketplaceClient:
        client = self.clients.get(account_id)
        if client is None:
            client = self.client_factory(self.ledger.get_account(account_id), self.settings)
            self.clients[account_id] = client
        return client

    def _answered(self, item: Claimed, outcome: Outcome) -> None:
        if isinstance(outcome, Submitted):
            logger.info("dispatcher: %s %s of order %s submitted as %s", item.action, item.reference,
                        item.order_id, outcome.marketplace_reference)  # fmt: skip
            self._finish(
                item, "in_flight", delay=outcome.poll_after_seconds, reference=outcome.marketplace_reference
            )
            return
        assert isinstance(outcome, Accepted)
        self._record(item, accepted=True, marketplace_reference=outcome.marketplace_reference)
        self._finish(item, "succeeded", reference=outcome.marketplace_reference)
        logger.info("dispatcher: %s %s of order %s accepted", item.action, item.reference, item.order_id)

    def _held_already(self, item: Claimed, client: MarketplaceClient, error: MarketplaceError) -> bool:
        """A refusal that may mean the marketplace has the change already (`in_effect.py`): read the order from
        the marketplace and, if it holds the change, finish the item as acknowledged, saying so. False: it does
        not, or the read failed (the refusal stands; an operator's retry asks again)."""
        if not in_effect.may_be_in_effect(item.marketplace, item.action, error.code):
            return False
        message = item.message()
        try:
            remote = client.order_state(message.marketplace_order_id)
            held = in_effect.in_effect(message, self.ledger.get_order(item.order_id).cancellations, remote)
        except (MarketplaceError, LedgerError) as e:
            logger.warning("dispatcher: item %s: cannot tell whether %s holds it already: %s", item.id,
                           item.marketplace, e)  # fmt: skip
            return False
        except Exception:  # an adapter bug: ours; the refusal stands
            logger.exception(
                "dispatcher: item %s: reading the order from %s failed", item.id, item.marketplace
            )
            return False
        if not held:
            return False
        note = f"{item.marketplace} had it already: it refused the change ({error.code}: {error.message})"
        self._record(item, accepted=True, marketplace_reference=item.marketplace_reference, reason=note)
        self._finish(item, "succeeded", reference=item.marketplace_reference)
        logger.info("dispatcher: %s %s of order %s: %s", item.action, item.reference, item.order_id, note)
        return True

    def _rejected(self, item: Claimed, error: MarketplaceError, *, permanent: bool) -> None:
        self._record(item, accepted=False, error_code=error.code, message=error.message, permanent=permanent)
        reason = f"{error.code}: {error.message}"
        if permanent:
            self._give_up(item, reason)
        elif item.attempts >= self.settings.sync_max_attempts:
            self._give_up(item, f"gave up after {item.attempts} attempts: {reason}")
        else:
            retry_after = error.retry_after if isinstance(error, TransientMarketplaceError) else None
            delay = backoff_delay(item.attempts, self.settings, retry_after, self.rng)
            self._finish(item, "failed", delay=delay, error=reason)
        logger.info("dispatcher: %s %s of order %s rejected (%s)", item.action, item.reference,
                    item.order_id, reason)  # fmt: skip

    def _misconfigured(self, item: Claimed, error: MarketplaceNotConfiguredError) -> None:
        """The account is not configured for its marketplace: the item is dead at once with the reason (an
        operator retries it once the configuration is fixed), and the error is logged once per account."""
        if item.account_id not in self.misconfigured:
            self.misconfigured.add(item.account_id)
            logger.error("dispatcher: configuration error: %s", error.message)
        self._finish(item, "dead", error=f"configuration error ({error.code}): {error.message}")

    def _local_failure(self, item: Claimed, reason: str) -> None:
        """The marketplace said nothing (we never reached it): failed and retried, or dead, without an event."""
        if item.attempts >= self.settings.sync_max_attempts:
            self._give_up(item, f"gave up after {item.attempts} attempts: {reason}")
        else:
            delay = backoff_delay(item.attempts, self.settings, None, self.rng)
            self._finish(item, "failed", delay=delay, error=reason, reference=item.marketplace_reference)

    def _give_up(self, item: Claimed, reason: str) -> None:
        """Dead: first an event on the order (`SyncItemDied`: the order needs attention, and an operator
        retries or resolves the item), then the row. What does not depend on the item still goes out."""
        self._record(item, RecordSyncItemDied, reason=reason)
        self._finish(item, "dead", error=reason)

    def _record(self, item: Claimed, command: type[RecordSyncOutcome | RecordSyncItemDied] = RecordSyncOutcome,
                **fields: Any) -> None:  # fmt: skip
        """The marketplace's answer (or the dispatcher's giving up) as an event on the order: its history says
        what each marketplace was told."""
        ctx = Context(actor=ACTOR, source=Source.SYSTEM)
        try:
            self.ledger.execute(
                command(
                    ctx=ctx,
                    order_id=item.order_id,
                    action=SyncAction(item.action),
                    reference=item.reference,
                    **fields,
                )
            )
        except LedgerError as e:  # cannot happen for an item the projection made; keep going if it does
            logger.error("dispatcher: cannot record on the order of item %s: %s", item.id, e)


def _request(item: Claimed) -> SyncRequest:
    message = item.message()
    return SyncRequest(
        item_id=item.id,
        order_id=item.order_id,
        marketplace_order_id=message.marketplace_order_id,
        action=item.action,
        reference=item.reference,
        idempotency_key=item.idempotency_key,
        message=message,
    )

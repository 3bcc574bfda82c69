"""The webhook delivery worker: signed POSTs of feed items, at least once, in position order per webhook.

Each worker thread claims a due webhook (webhooks.py: a session advisory lock, no open transaction), POSTs its
next events one by one, in position order, then records each attempt and moves the webhook's cursor in one short
transaction. A 2xx within `TIMEOUT` is a
success; anything else (another status, a timeout, a refused or unresolvable address) is retried with
exponential backoff and jitter until `RETRY_BUDGET` after the first failure, then the event is dead (listed in
the delivery log) and the webhook goes on with its next one. Idle threads wait for the feed projection's
progress notification (or `poll_interval`). The clock and the randomness are injectable for tests.

Signature: `Ledger-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import httpx
import msgspec
import psycopg
from eventsourcing.persistence import Mapper
from psycopg import sql
from psycopg.rows import TupleRow

from ledger.eventstore.database import DatabaseUnavailableError
from ledger.eventstore.keys_store import PersonalData
from ledger.feed import index, webhooks
from ledger.feed.items import encode, items_of
from ledger.feed.urls import UrlPolicy, WebhookUrlError, check_url
from ledger.feed.webhooks import Outcome, Webhook
from ledger.projections import base

logger = logging.getLogger(__name__)

Connect = Callable[[], psycopg.Connection[TupleRow]]
Clock = Callable[[], datetime]
TIMEOUT = 10.0
"""Seconds a receiver has to answer 2xx."""
RETRY_BUDGET = timedelta(hours=24)
FIRST_RETRY = timedelta(seconds=10)
LONGEST_WAIT = timedelta(hours=1)
BATCH = 100
BATCH_SECONDS = 1.0
"""Most events, and about the longest time, one claim of a webhook delivers before it records them."""
TEST_EVENT_TYPE = "WebhookTest"
USER_AGENT = "ledger-webhooks/1"


def utcnow() -> datetime:
    return datetime.now(UTC)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Ledger-Signature` header's value for `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def retry_delay(attempt: int, rng: random.Random) -> timedelta:
    """The wait after failed attempt number `attempt` (1, 2, ...): doubling from FIRST_RETRY up to
    LONGEST_WAIT, each drawn between half and all of it (jitter: receivers that failed together do not all
    come back at once)."""
    full = min(FIRST_RETRY * 2 ** min(attempt - 1, 20), LONGEST_WAIT)
    jittered: timedelta = full * (0.5 + rng.random() / 2)
    return jittered


def retry_at(webhook: Webhook, outcome: Outcome, now: datetime, rng: random.Random) -> datetime | None:
    """When to try the webhook's event again after this failed attempt; None once the budget is spent (dead)."""
    first_failed = webhook.first_failed_at or now
    deadline = first_failed + RETRY_BUDGET
    if now >= deadline:
        return None
    return min(now + retry_delay(webhook.attempts + 1, rng), deadline)


def send(
    client: httpx.Client,
    url: str,
    policy: UrlPolicy,
    secret: str,
    event_id: UUID,
    event_type: str,
    position: int | None,
    body: bytes,
    clock: Clock,
) -> Outcome:
    """POST `body` to `url`, signed, to the address the SSRF guard checked just now; never raises."""
    started = time.monotonic()

    def outcome(status_code: int | None, error: str | None) -> Outcome:
        duration = int((time.monotonic() - started) * 1000)
        return Outcome(position, event_id, event_type, status_code, error, duration)

    try:
        target = check_url(url, policy)
    except WebhookUrlError as e:
        return outcome(None, f"refused: {e}")
    pinned = httpx.URL(url).copy_with(host=str(target.address))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Host": httpx.URL(url).netloc.decode("ascii"),
        "Ledger-Event-Id": str(event_id),
        "Ledger-Event-Type": event_type,
        "Ledger-Signature": signature(secret, int(clock().timestamp()), body),
    }
    try:
        with client.stream(
            "POST", pinned, content=body, headers=headers, extensions={"sni_hostname": target.host}
        ) as response:
            status = response.status_code
    except httpx.TimeoutException:
        return outcome(None, f"no answer within {TIMEOUT:g} s")
    except httpx.HTTPError as e:
        return outcome(None, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
    if time.monotonic() - started > TIMEOUT:
        return outcome(status, f"answered after more than {TIMEOUT:g} s")
    return outcome(status, None if 200 <= status < 300 else f"HTTP {status}")


def new_client() -> httpx.Client:
    return httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False)


class TestEvent(msgspec.Struct, kw_only=True, frozen=True):
    """The body of `POST /v1/webhooks/{id}/test`."""

    event_id: UUID
    type: str
    webhook_id: UUID
    created_at: datetime


def send_test(hook: Webhook, secret: str, policy: UrlPolicy) -> Outcome:
    """Deliver a test event (`POST /v1/webhooks/{id}/test`) to the webhook now, once."""
    event = TestEvent(event_id=uuid4(), type=TEST_EVENT_TYPE, webhook_id=hook.webhook_id, created_at=utcnow())
    body = msgspec.json.encode(event)
    with new_client() as client:
        return send(client, hook.url, policy, secret, event.event_id, event.type, None, body, utcnow)


class WebhookDispatcher:
    """Worker threads that deliver due webhook events until stopped."""

    def __init__(
        self,
        connect: Connect,
        mapper: Mapper[UUID],
        personal_data: PersonalData,
        policy: UrlPolicy,
        *,
        threads: int = 4,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        poll_interval: float = 1.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.connect = connect
        self.mapper = mapper
        self.personal_data = personal_data
        self.policy = policy
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self.poll_interval = poll_interval
        self.client = client or new_client()
        self.stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"webhook-dispatcher-{n}", daemon=True)
            for n in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop the threads (a delivery in progress finishes first) and close the HTTP client."""
        self.stopping.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()
        self.client.close()

    def deliver_due(self, conn: psycopg.Connection[TupleRow]) -> int:
        """Deliver until nothing is due at the clock's now; return the attempts made (tests)."""
        count = 0
        while not self.stopping.is_set() and (made := self.deliver_one(conn)):
            count += made
        return count

    def deliver_one(self, conn: psycopg.Connection[TupleRow]) -> int:
        """Claim one due webhook and deliver its next events in position order: up to BATCH events or
        BATCH_SECONDS, stopping at the first failure (that event is due again later); then record each attempt
        and move the cursor past each success, in one short transaction. Returns the attempts made (0: none
        due). `conn` is in autocommit: no transaction is open while a receiver answers (webhooks.py).

        Why a batch: a claim, a page read and a key read per event cost more than the POST to a nearby receiver;
        one webhook's events go out one after another, so that cost was its throughput. A crash mid-batch
        records nothing of it, and its events are sent again (at least once)."""
        if not conn.autocommit:
            raise ValueError(
                "deliver_one needs a connection in autocommit (no transaction open during a POST)"
            )
        with webhooks.claim_due(conn, self.clock()) as claimed:
            if claimed is None:
                return 0
            hook = claimed.webhook
            page = index.read_page(conn, hook.seller, hook.position, BATCH, types=hook.types)
            started = time.monotonic()
            made: list[tuple[Webhook, Outcome, datetime, datetime | None]] = []
            for item in items_of(page.rows, self.mapper, self.personal_data):
                outcome = send(
                    self.client,
                    hook.url,
                    self.policy,
                    claimed.secret,
                    item.event_id,
                    item.type,
                    item.position,
                    encode(item),
                    self.clock,
                )
                now = self.clock()
                retry = None if outcome.succeeded else retry_at(hook, outcome, now, self.rng)
                made.append((hook, outcome, now, retry))
                if retry is not None:
                    break
                hook = dataclasses.replace(hook, position=item.position, attempts=0, first_failed_at=None)
                if time.monotonic() - started >= BATCH_SECONDS:
                    break
            for attempt in webhooks.record_batch(conn, made):
                if attempt.outcome == webhooks.DEAD:
                    logger.warning(
                        "webhook %s: event %s dead after %d attempts",
                        attempt.webhook_id,
                        attempt.position,
                        attempt.attempt,
                    )
        return len(made)

    def _work(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                with self.connect() as conn:
                    conn.autocommit = True
                    base.install(conn, index.FeedProjection())  # a fresh database, before its worker ran
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(base.PROGRESS_CHANNEL)))
                    while not self.stopping.is_set():
                        if not self.deliver_one(conn):
                            for _ in conn.notifies(timeout=self.poll_interval, stop_after=1):
                                pass
                        backoff = 0.5
            except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnavailableError) as e:
                logger.warning("webhook dispatcher: database unavailable (%s); retrying", e)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception:
                logger.exception("webhook dispatcher: unexpected error; retrying")
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

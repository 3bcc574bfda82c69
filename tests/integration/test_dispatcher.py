"""The dispatcher's handling of the outbound queue on real PostgreSQL: which item it takes, in what order, under
concurrency, after a dispatcher died, before the first-install cut-off, and how a replay puts items back.

These tests stop at the claim: what the marketplace answers, and how that is recorded, is tested end to end
against the sandbox in tests/e2e/test_sync_flow.py."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from order_scenarios import UPS_TRACKING, catch_up
from prometheus_client import CollectorRegistry

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
)
from ledger.application.ledger import Ledger
from ledger.eventstore import database
from ledger.eventstore.database import PostgresTarget
from ledger.integrations.dispatcher import Dispatcher, RateLimiter, TokenBucket, backoff_delay
from ledger.integrations.marketplaces import RATE_LIMITS, SyncSettings
from ledger.integrations.metrics import QueueCollector
from ledger.integrations.outbound import OutboundProjection
from ledger.integrations.outbox import replay_order

pytestmark = pytest.mark.postgres
CTX = Context(actor="test", source=Source.API)


@pytest.fixture
def own_app(own_target: PostgresTarget) -> Iterator[Ledger]:
    """A Ledger in a schema of the test's own: the dispatcher takes items of every seller there."""
    ledger = Ledger(env=own_target.eventsourcing_env())
    yield ledger
    ledger.close()


def _connect(target: PostgresTarget) -> Any:
    return lambda: database.connect(target, autocommit=True)


def _dispatcher(app: Ledger, target: PostgresTarget, **settings: Any) -> Dispatcher:
    return Dispatcher(
        app,
        _connect(target),
        SyncSettings(marketplace_url="http://127.0.0.1:9", **settings),
        client_factory=lambda account, s: pytest.fail("these tests never reach a marketplace"),
    )


def _order(app: Ledger, marketplace: Marketplace = Marketplace.EBAY, managed: bool = True) -> UUID:
    seller = f"disp-{uuid4().hex[:10]}"
    account = app.register_account(CTX, seller=seller, marketplace=marketplace, name="main",
                                   fulfillment_managed=managed)  # fmt: skip
    order = ImportedOrder(
        marketplace_order_id=f"111-{uuid4().hex[:7]}",
        purchased_at=datetime.now(UTC) - timedelta(hours=2),
        currency="USD",
        payment_status=PaymentStatus.PAID,
        buyer=Buyer("Ann Lee", "ann@example.com"),
        lines=(OrderLine("1", "MUG-1", 2, Decimal("12.50"), Decimal("1.00"), title="Mug"),),
        paid_at=datetime.now(UTC) - timedelta(hours=2),
    )
    return app.import_order(CTX, account.account_id, order).order_id


def _ship_and_refund(app: Ledger, order_id: UUID) -> None:
    app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    app.refund(CTX, order_id, reason=RefundReason.DAMAGED)


def _queue(app: Ledger, target: PostgresTarget) -> None:
    catch_up(OutboundProjection(), _connect(target), app, 500)


def _states(target: PostgresTarget, order_id: UUID) -> list[tuple[Any, ...]]:
    with database.connect(target) as conn:
        return conn.execute(
            "SELECT sequence, action, state, attempts FROM outbound_items WHERE order_id = %s ORDER BY sequence",
            (order_id,),
        ).fetchall()


def _set(target: PostgresTarget, order_id: UUID, sequence: int, **columns: Any) -> None:
    assignments = ", ".join(f"{name} = %s" for name in columns)
    with database.connect(target, autocommit=True) as conn:
        conn.execute(
            f"UPDATE outbound_items SET {assignments} WHERE order_id = %s AND sequence = %s",
            (*columns.values(), order_id, sequence),
        )


def test_takes_an_orders_items_one_after_the_other(own_app: Ledger, own_target: PostgresTarget) -> None:
    """A later item of an order is not taken while an earlier one is unfinished, by this or another dispatcher."""
    order_id = _order(own_app)
    _ship_and_refund(own_app, order_id)
    _queue(own_app, own_target)
    first, second = _dispatcher(own_app, own_target), _dispatcher(own_app, own_target)
    claimed = first.claim()
    assert claimed is not None
    assert claimed.order_id == order_id
    assert claimed.action == "ship"
    assert claimed.attempts == 1
    assert second.claim() is None  # the refund waits for the shipment
    assert _states(own_target, order_id) == [(1, "ship", "in_flight", 1), (2, "refund", "pending", 0)]
    _set(own_target, order_id, 1, state="failed", next_attempt_at=datetime.now(UTC) + timedelta(hours=1))
    assert second.claim() is None  # still unfinished: a failed shipment holds the refund back too
    _set(own_target, order_id, 1, state="succeeded")
    later = second.claim()
    assert later is not None
    assert later.action == "refund"


def test_a_dead_item_holds_back_only_what_depends_on_it(own_app: Ledger, own_target: PostgresTarget) -> None:
    """With the shipment dead, the refund of its units waits, while a cancellation of the order goes out."""
    order_id = _order(own_app)
    own_app.ship(
        CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING, lines=(LineQuantity("1", 1),)
    )
    own_app.cancel(CTX, order_id, reason=CancelReason.OUT_OF_STOCK)
    own_app.refund(CTX, order_id, reason=RefundReason.DAMAGED)
    _queue(own_app, own_target)
    assert [row[:2] for row in _states(own_target, order_id)] == [(1, "ship"), (2, "cancel"), (3, "refund")]
    _set(own_target, order_id, 1, state="dead", attempts=8, last_error="gave up")
    dispatcher = _dispatcher(own_app, own_target)
    claimed = dispatcher.claim()
    assert claimed is not None
    assert claimed.action == "cancel"
    assert dispatcher.claim() is None  # the refund waits for its shipment, dead or not


def test_concurrent_dispatchers_skip_locked_items(own_app: Ledger, own_target: PostgresTarget) -> None:
    """An item another transaction holds is skipped, and the next due order's item is taken instead."""
    busy, free = _order(own_app), _order(own_app)
    for order_id in (busy, free):
        own_app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    _queue(own_app, own_target)
    with database.connect(own_target) as holder:
        holder.execute("SELECT id FROM outbound_items WHERE order_id = %s FOR UPDATE", (busy,))
        claimed = _dispatcher(own_app, own_target).claim()
        assert claimed is not None
        assert claimed.order_id == free
        assert _dispatcher(own_app, own_target).claim() is None
        holder.rollback()


def test_an_in_flight_item_past_its_lease_is_taken_again(own_app: Ledger, own_target: PostgresTarget) -> None:
    """A dispatcher that died leaves its item in flight; after the lease it is due again, one more attempt."""
    order_id = _order(own_app)
    own_app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    _queue(own_app, own_target)
    dead = _dispatcher(own_app, own_target, sync_lease=3600)
    assert dead.claim() is not None
    assert _dispatcher(own_app, own_target).claim() is None  # the lease holds
    _set(own_target, order_id, 1, next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
    again = _dispatcher(own_app, own_target).claim()
    assert again is not None
    assert again.order_id == order_id
    assert again.attempts == 2
    assert again.idempotency_key == str(again.id)


def test_items_made_before_the_cut_off_are_skipped_not_sent(
    own_app: Ledger, own_target: PostgresTarget
) -> None:
    """With LEDGER_SYNC_SINCE, older untouched items are dead as skipped and hold back nothing later."""
    order_id = _order(own_app)
    own_app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    _queue(own_app, own_target)
    cut_off = datetime.now(UTC) + timedelta(milliseconds=50)
    while datetime.now(UTC) <= cut_off:
        pass
    own_app.refund(CTX, order_id, reason=RefundReason.DAMAGED)
    _queue(own_app, own_target)
    dispatcher = _dispatcher(own_app, own_target, sync_since=cut_off)
    assert dispatcher.skip_historic() == 1
    with database.connect(own_target) as conn:
        row = conn.execute(
            "SELECT state, last_error FROM outbound_items WHERE order_id = %s AND sequence = 1", (order_id,)
        ).fetchone()
    assert row is not None
    assert row[0] == "dead"
    assert row[1].startswith("skipped: made before LEDGER_SYNC_SINCE")
    claimed = dispatcher.claim()
    assert claimed is not None
    assert claimed.action == "refund"


def test_third_party_managed_orders_have_nothing_to_take(own_app: Ledger, own_target: PostgresTarget) -> None:
    """A Third Party Managed order's changes never reach the queue, so no dispatcher sends them."""
    order_id = _order(own_app, managed=False)
    own_app.cancel(CTX, order_id, reason=CancelReason.OUT_OF_STOCK)
    _queue(own_app, own_target)
    assert _states(own_target, order_id) == []
    assert _dispatcher(own_app, own_target).claim() is None


def test_replay_puts_an_orders_items_back_with_the_same_keys(
    own_app: Ledger, own_target: PostgresTarget
) -> None:
    """`sync replay`: finished items are pending again and due, keys and attempts kept, in-flight ones left."""
    order_id = _order(own_app)
    _ship_and_refund(own_app, order_id)
    _queue(own_app, own_target)
    _set(own_target, order_id, 1, state="succeeded", attempts=1)
    _set(own_target, order_id, 2, state="dead", attempts=8)
    with database.connect(own_target) as conn:
        keys = conn.execute(
            "SELECT idempotency_key FROM outbound_items WHERE order_id = %s ORDER BY sequence", (order_id,)
        ).fetchall()
        assert replay_order(conn, order_id) == 2
        assert (
            conn.execute(
                "SELECT idempotency_key FROM outbound_items WHERE order_id = %s ORDER BY sequence",
                (order_id,),
            ).fetchall()
            == keys
        )
    assert _states(own_target, order_id) == [(1, "ship", "pending", 1), (2, "refund", "pending", 8)]
    claimed = _dispatcher(own_app, own_target).claim()
    assert claimed is not None
    assert claimed.action == "ship"
    assert claimed.attempts == 2


def test_no_queue_yet_means_nothing_due(own_target: PostgresTarget, own_app: Ledger) -> None:
    """Before the outbound projection ever ran there is no queue: the dispatcher finds nothing, no error."""
    assert _dispatcher(own_app, own_target).dispatch_due() == 0


def test_backoff_doubles_with_jitter_and_honours_retry_after() -> None:
    """Retry delays grow exponentially within their jitter band, capped, never below Retry-After."""
    settings = SyncSettings(sync_backoff=2.0, sync_backoff_max=60.0)
    rng = random.Random(7)
    for attempts, full in ((1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)):
        delay = backoff_delay(attempts, settings, None, rng)
        assert full / 2 <= delay <= full
    assert backoff_delay(1, settings, 30.0, rng) == 30.0


def test_token_bucket_limits_the_rate_and_pauses() -> None:
    """A bucket gives its burst at once, then `rate` a second; a pause (Retry-After) empties it for a while."""
    now = [0.0]
    bucket = TokenBucket(2.0, 3, clock=lambda: now[0])
    for _ in range(3):
        assert bucket.available()
        bucket.take()
    assert not bucket.available()
    now[0] += 0.5
    assert bucket.available()
    bucket.pause(10)
    now[0] += 5
    assert not bucket.available()
    now[0] += 5.1
    assert bucket.available()


def test_an_empty_bucket_holds_back_its_operation_only(own_app: Ledger, own_target: PostgresTarget) -> None:
    """With Amazon's createFeed bucket empty, its cancellation waits while its shipment and Jet's are taken."""
    amazon, jet = _order(own_app, Marketplace.AMAZON), _order(own_app, Marketplace.JET)
    own_app.cancel(CTX, amazon, reason=CancelReason.OUT_OF_STOCK, lines=(LineQuantity("1", 1),))
    for order_id in (amazon, jet):
        own_app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    _queue(own_app, own_target)
    dispatcher = _dispatcher(own_app, own_target, rate_limits={"amazon.createFeed": (0.001, 1)})
    account = own_app.get_order(amazon).account_id
    feeds = dispatcher.limiter.bucket("amazon", account, "amazon.createFeed")
    assert feeds is not None
    feeds.take()
    claimed = [dispatcher.claim(), dispatcher.claim()]
    assert {(c.order_id, c.action) for c in claimed if c is not None} == {(amazon, "ship"), (jet, "ship")}
    assert dispatcher.claim() is None  # the cancellation waits for a createFeed token


def test_buckets_are_per_account_where_the_marketplace_limits_each_seller() -> None:
    """Amazon's buckets are each seller's; eBay's one application's, shared by every account."""
    limiter = RateLimiter(RATE_LIMITS)
    assert limiter.bucket("amazon", "a", "amazon.createFeed") is not limiter.bucket(
        "amazon", "b", "amazon.createFeed"
    )
    assert limiter.bucket("ebay", "a", "ebay.issueRefund") is limiter.bucket("ebay", "b", "ebay.issueRefund")
    assert limiter.bucket("amazon", "a", "amazon.close_dispute") is None  # no call, no limit


def test_processes_split_every_bucket() -> None:
    """Two dispatcher processes each take half of a rate and of a burst (at least one)."""
    limiter = RateLimiter({"amazon.createFeed": (0.0083, 15), "jet.shipOrder": (1.0, 1)}, processes=2)
    assert limiter.limits == {"amazon.createFeed": (0.00415, 7), "jet.shipOrder": (0.5, 1)}


def test_metrics_show_the_queue_by_operation_and_the_dead(
    own_app: Ledger, own_target: PostgresTarget
) -> None:
    """The dispatcher's /metrics: depth and oldest age per operation, and the dead, read from the queue."""
    order_id = _order(own_app, Marketplace.AMAZON)
    own_app.cancel(CTX, order_id, reason=CancelReason.OUT_OF_STOCK, lines=(LineQuantity("1", 1),))
    own_app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    other = _order(own_app, Marketplace.AMAZON)
    own_app.ship(CTX, other, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    _queue(own_app, own_target)
    _set(own_target, other, 1, state="dead", attempts=8, last_error="gave up")
    registry = CollectorRegistry()
    registry.register(QueueCollector(_connect(own_target)))

    def sample(name: str, operation: str) -> float | None:
        return registry.get_sample_value(name, {"operation": operation})

    assert sample("ledger_sync_queue_depth", "amazon.createFeed") == 1
    assert sample("ledger_sync_queue_depth", "amazon.confirmShipment") == 1
    assert sample("ledger_sync_dead_items", "amazon.confirmShipment") == 1
    age = sample("ledger_sync_oldest_pending_age_seconds", "amazon.confirmShipment")
    assert age is not None
    assert age >= 0
    assert registry.get_sample_value("ledger_sync_metrics_database_up") == 1


def test_an_account_without_credentials_is_a_configuration_error_said_once(
    own_app: Ledger, own_target: PostgresTarget, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Items of an account with no credentials are dead at their first attempt, with the configuration reason
    (never retried as if temporary), and the error is logged once for the account."""
    first = _order(own_app)
    account_id = own_app.get_order(first).account_id
    second = own_app.import_order(
        CTX,
        account_id,
        ImportedOrder(
            marketplace_order_id=f"111-{uuid4().hex[:7]}",
            purchased_at=datetime.now(UTC) - timedelta(hours=1),
            currency="USD",
            payment_status=PaymentStatus.PAID,
            buyer=Buyer("Bo Chan", "bo@example.com"),
            lines=(OrderLine("1", "CUP-1", 1, Decimal("5.00"), Decimal(0)),),
            paid_at=datetime.now(UTC) - timedelta(hours=1),
        ),
    ).order_id
    for order_id in (first, second):
        own_app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    _queue(own_app, own_target)
    credentials = tmp_path / "credentials.json"
    credentials.write_text('{"some-other-account": {"access_token": "t"}}')
    dispatcher = Dispatcher(
        own_app,
        _connect(own_target),
        SyncSettings(marketplace_url="http://127.0.0.1:9", credentials_file=credentials),
    )
    with caplog.at_level("ERROR", logger="ledger"):
        for _ in range(2):
            item = dispatcher.claim()
            assert item is not None
            dispatcher.handle(item)
    for order_id in (first, second):
        assert _states(own_target, order_id) == [(1, "ship", "dead", 1)]
    with database.connect(own_target) as conn:
        errors = [row[0] for row in conn.execute("SELECT last_error FROM outbound_items").fetchall()]
    assert all(e and "configuration error" in e and "has no credentials" in e for e in errors)
    logged = [r for r in caplog.records if "configuration error" in r.getMessage()]
    assert len(logged) == 1
    assert str(account_id) in logged[0].getMessage()

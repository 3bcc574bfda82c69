"""The projection runner's batches: a failure mid-batch, skipped event types, and waking on new events."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from eventsourcing.persistence import Mapper, Notification
from order_scenarios import settled

from ledger.aggregates.order import Order
from ledger.aggregates.values import (
    Buyer,
    Carrier,
    Context,
    ImportedOrder,
    LineQuantity,
    Marketplace,
    OrderLine,
    PaymentStatus,
    RefundReason,
)
from ledger.application.ledger import Ledger
from ledger.eventstore.database import BUSY_FOR_SECONDS, PostgresTarget, connect
from ledger.projections import base
from ledger.projections.all_sales import AllSalesProjection
from ledger.projections.refunds import RefundsProjection

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CTX = Context(actor="tester")


@pytest.fixture
def app(own_target: PostgresTarget) -> Iterator[Ledger]:
    ledger = Ledger(env=own_target.eventsourcing_env(), clock=lambda: NOW)
    yield ledger
    ledger.close()


def _orders(app: Ledger, count: int, prefix: str = "o") -> None:
    """Imported orders, each shipped, every third refunded: about 2.3 events an order."""
    account = app.register_account(CTX, seller="acme", marketplace=Marketplace.WALMART, name=f"w-{prefix}")
    orders = []
    for i in range(count):
        order = Order.import_order(
            CTX,
            seller="acme",
            account_id=account.account_id,
            marketplace=Marketplace.WALMART,
            order=ImportedOrder(
                f"{prefix}-{i}",
                NOW,
                "USD",
                PaymentStatus.PAID,
                Buyer(f"Buyer {i}", f"b{i}@example.com"),
                (OrderLine("1", f"SKU-{i % 5}", 2, Decimal("9.99"), Decimal("0.80")),),
            ),
            third_party_managed=False,
        )
        order.ship(CTX, carrier=Carrier.UPS, tracking_number="1Z999AA10123456784", shipped_at=NOW, now=NOW,
                   lines=(LineQuantity("1", 1),))  # fmt: skip
        if i % 3 == 0:
            order.refund(CTX, reason=RefundReason.DAMAGED)
        orders.append(order)
    app.save(*orders)


def _snapshot(target: PostgresTarget) -> dict[str, list[tuple[Any, ...]]]:
    with connect(target) as conn:
        return {
            "orders": conn.execute("SELECT * FROM all_sales_orders ORDER BY order_id").fetchall(),
            "lines": conn.execute("SELECT * FROM all_sales_lines ORDER BY order_id, line_id").fetchall(),
            "counts": conn.execute(
                "SELECT seller, account_id, tab, orders FROM all_sales_counts WHERE orders <> 0 ORDER BY 1, 2, 3"
            ).fetchall(),
        }


def _head(target: PostgresTarget) -> int:
    """The head of the log once every event committed so far is readable: a transaction open anywhere in the
    cluster (another test run's, an autovacuum's) holds the commit horizon back for a while, and the head below
    it would leave out events the test just saved."""
    with connect(target, autocommit=True) as conn:
        settled(conn)
        return base.head_position(conn.cursor())


def _status(target: PostgresTarget, projection: base.Projection) -> base.ProjectionStatus:
    with connect(target) as conn:
        [row] = base.status(conn, [projection])
    return row


class _FailingAllSales(AllSalesProjection):
    """All Sales that writes a batch's rows and then fails, once, on the batch holding position `at`."""

    at: ClassVar[int] = 0
    failed: ClassVar[list[int]] = []

    def apply(self, cur: base.Cursor, t: base.Tables, events: Sequence[base.Event]) -> None:
        super().apply(cur, t, events)
        if not self.failed and events[0].position <= self.at <= events[-1].position:
            self.failed.append(events[-1].position)
            raise RuntimeError("failed mid-batch")


def _run(worker: base.ProjectionWorker) -> threading.Thread:
    thread = threading.Thread(target=worker.run)
    thread.start()
    assert worker.is_active.wait(30)
    return thread


def test_a_failure_mid_batch_rolls_back_its_rows_and_position(
    app: Ledger, own_target: PostgresTarget
) -> None:
    """A batch that fails after writing rows leaves neither its rows nor its position; a worker started again
    resumes at the last whole batch and the view equals a fresh rebuild (each event applied exactly once)."""
    _orders(app, 300)
    head = _head(own_target)
    positions = [n.id for n in app.recorder.select_notifications(start=0, limit=10_000)]
    _FailingAllSales.at = positions[len(positions) // 2]  # positions are not dense: a real one, mid-log
    _FailingAllSales.failed = []  # not failed yet (in this run of the test, should the process run it again)
    connect_ = lambda: connect(own_target)  # noqa: E731
    failing = base.ProjectionWorker(_FailingAllSales(), connect_, app.recorder, app.mapper, batch_size=64)
    thread = _run(failing)
    thread.join(timeout=60)
    failing.stop()  # should it not have failed
    thread.join()
    assert isinstance(failing.error, RuntimeError)
    stopped_at = _status(own_target, AllSalesProjection()).position
    assert 0 < stopped_at < _FailingAllSales.at <= _FailingAllSales.failed[0]
    with connect(own_target) as conn:
        written = conn.execute("SELECT count(*) FROM all_sales_orders").fetchone()
        partial = _snapshot(own_target)
    assert written is not None
    assert 0 < written[0] < 300

    worker = base.ProjectionWorker(AllSalesProjection(), connect_, app.recorder, app.mapper, batch_size=64)
    thread = _run(worker)
    try:
        with connect(own_target) as conn:
            assert base.wait_for(conn, "all_sales", head, timeout=60)
    finally:
        worker.stop()
        thread.join()
    assert worker.error is None
    resumed = _snapshot(own_target)
    assert len(resumed["orders"]) == 300
    assert resumed != partial
    base.rebuild(AllSalesProjection(), connect_, app.recorder, app.mapper)
    assert _snapshot(own_target) == resumed


class _CountingMapper(Mapper[Any]):
    """The application's mapper, counting the events it decodes by class name."""

    def __init__(self, inner: Mapper[Any]) -> None:
        self.__dict__.update(inner.__dict__)
        self.decoded: Counter[str] = Counter()

    def to_domain_event(self, stored_event: Any) -> Any:
        event = super().to_domain_event(stored_event)
        self.decoded[type(event).__name__] += 1
        return event


def test_events_a_projection_does_not_handle_are_not_decoded_and_still_passed(
    app: Ledger, own_target: PostgresTarget
) -> None:
    """Refunds decodes only imports and refunds, yet its position reaches the head of the log even when the
    last events are of other types (here an account registration after the orders)."""
    _orders(app, 30)
    app.register_account(CTX, seller="acme", marketplace=Marketplace.EBAY, name="last")
    mapper = _CountingMapper(app.mapper)
    head = _head(own_target)
    with connect(own_target, autocommit=True) as conn:
        base.catch_up_unless_followed(conn, RefundsProjection(), app.recorder, mapper, batch_size=16)
    assert set(mapper.decoded) == {"Imported", "Refunded"}
    assert mapper.decoded["Refunded"] == 10
    assert _status(own_target, RefundsProjection()).position == head


def _started_without_polling(
    app: Ledger, own_target: PostgresTarget
) -> tuple[base.ProjectionWorker, threading.Thread]:
    """A running All Sales worker whose polling is all but off (an hour): only notifications wake it."""
    worker = base.ProjectionWorker(
        AllSalesProjection(), lambda: connect(own_target), app.recorder, app.mapper, poll_interval=3600
    )
    return worker, _run(worker)


def test_a_worker_wakes_on_a_new_event_without_polling(app: Ledger, own_target: PostgresTarget) -> None:
    """With polling all but off, a live worker still applies a new event at once: the recorder's
    notification wakes it."""
    _orders(app, 3)
    worker, thread = _started_without_polling(app, own_target)
    try:
        with connect(own_target) as conn:
            assert base.wait_for(conn, "all_sales", _head(own_target), timeout=30)
        _orders(app, 1, prefix="late")
        with connect(own_target) as conn:
            assert base.wait_for(conn, "all_sales", _head(own_target), timeout=30)
    finally:
        worker.stop()
        thread.join(timeout=3700)
    assert worker.error is None


def test_a_worker_applies_what_a_long_transaction_held_back_once_it_ends(
    app: Ledger, own_target: PostgresTarget
) -> None:
    """With polling all but off, an event saved while an older transaction stays open longer than the worker's
    busy window after the notification (the event is not readable yet) is applied as soon as that transaction
    ends, which sends no notification: the worker keeps looking while events are recorded past its position."""
    _orders(app, 1)
    worker, thread = _started_without_polling(app, own_target)
    try:
        with connect(own_target) as conn:
            assert base.wait_for(conn, "all_sales", _head(own_target), timeout=30)
        with connect(own_target) as holder, holder.transaction():
            holder.execute("SELECT pg_current_xact_id()")  # holds the horizon below what follows
            _orders(app, 1, prefix="held")
            with connect(own_target) as conn, conn.cursor() as cur:
                recorded = base.last_position(cur)
            time.sleep(2 * BUSY_FOR_SECONDS)  # the notification's busy window passes (ordering only)
        with connect(own_target) as conn:
            assert base.wait_for(conn, "all_sales", recorded, timeout=30)
    finally:
        worker.stop()
        thread.join(timeout=3700)
    assert worker.error is None


def test_skipped_notifications_alone_move_the_position(app: Ledger, own_target: PostgresTarget) -> None:
    """A batch of only events the projection skips commits nothing but its new position."""
    _orders(app, 2)
    with connect(own_target) as conn:
        generation, _ = base.install(conn, RefundsProjection())
    before = _head(own_target)
    app.register_account(CTX, seller="acme", marketplace=Marketplace.EBAY, name="only-accounts")
    _head(own_target)  # the registration readable
    notifications: list[Notification] = app.recorder.select_notifications(
        start=before, limit=100, inclusive_of_start=False
    )
    wanted = base.topic_filter(RefundsProjection())
    assert notifications
    assert wanted is not None
    assert base.decode(app.mapper, notifications, wanted) == []
    with connect(own_target) as conn, conn.transaction(), conn.cursor() as cur:
        base.apply_batch(cur, RefundsProjection(), base.Tables(generation), [], notifications[-1].id)
    assert _status(own_target, RefundsProjection()).position == notifications[-1].id

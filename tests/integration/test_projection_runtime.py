"""Projection workers on real PostgreSQL: crash and resume, standby takeover, rebuild beside the live view."""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.order import Order
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
)
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget, connect
from ledger.projections import base
from ledger.projections.all_sales import AllSalesProjection

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CTX = Context(actor="tester")
SUMMARY = (
    "status, open, units, shipped_units, cancelled_units, total, refunded_total, version, dispute_status, tab"
)


@pytest.fixture
def app(own_target: PostgresTarget) -> Iterator[Ledger]:
    ledger = Ledger(env=own_target.eventsourcing_env(), clock=lambda: NOW)
    yield ledger
    ledger.close()


def _fill(app: Ledger, orders: int, seed: int = 7) -> list[UUID]:
    """Orders across marketplaces with shipments, cancellations and refunds, saved in large batches."""
    rng = random.Random(seed)
    accounts = [
        app.register_account(
            CTX, seller="acme", marketplace=m, name=f"{m.value}-{seed}", fulfillment_managed=i != 2
        )
        for i, m in enumerate([Marketplace.WALMART, Marketplace.EBAY, Marketplace.RAKUTEN])
    ]
    ids: list[UUID] = []
    pending: list[Order] = []
    for i in range(orders):
        account = accounts[i % len(accounts)]
        order = Order.import_order(
            CTX,
            seller="acme",
            account_id=account.account_id,
            marketplace=Marketplace(account.marketplace),
            order=ImportedOrder(
                f"{seed}-{i}",
                NOW - timedelta(minutes=rng.randint(60, 60 * 24 * 30)),
                "USD",
                PaymentStatus.PAID if i % 7 else PaymentStatus.PENDING,
                Buyer(f"Buyer {i}", f"b{i}@example.com"),
                (
                    OrderLine("1", f"SKU-{i % 13}", rng.randint(1, 4), Decimal("9.99"), Decimal("0.80")),
                    OrderLine("2", "SKU-X", 1, Decimal("20.00"), shipping=Decimal("4.99")),
                ),
            ),
            third_party_managed=not account.fulfillment_managed,
        )
        if i % 7:
            order.ship(
                CTX,
                carrier=Carrier.FEDEX,
                tracking_number="123456789012",
                shipped_at=NOW,
                now=NOW,
                lines=(LineQuantity("1", 1),),
            )
            if i % 3 == 0 and account.marketplace != "ebay":
                order.cancel(CTX, reason=CancelReason.OUT_OF_STOCK, now=NOW, lines=(LineQuantity("2", 1),))
            if i % 5 == 0:
                order.refund(CTX, reason=RefundReason.DAMAGED)
        pending.append(order)
        ids.append(order.id)
        if len(pending) == 200:
            app.save(*pending)
            pending = []
    app.save(*pending)
    return ids


def _snapshot(target: PostgresTarget) -> dict[str, list[tuple[Any, ...]]]:
    with connect(target) as conn:
        return {
            "orders": conn.execute("SELECT * FROM all_sales_orders ORDER BY order_id").fetchall(),
            "lines": conn.execute("SELECT * FROM all_sales_lines ORDER BY order_id, line_id").fetchall(),
            "counts": conn.execute(
                "SELECT seller, account_id, tab, orders FROM all_sales_counts WHERE orders <> 0 ORDER BY 1, 2, 3"
            ).fetchall(),
        }


def _position(target: PostgresTarget) -> tuple[int, int]:
    with connect(target) as conn:
        [row] = base.status(conn, [AllSalesProjection()])
    return row.position, row.head


def _wait_until(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _start_worker(cli_env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", "worker", "--projection", "all_sales", *args],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _wait_active(worker: subprocess.Popen[str]) -> None:
    assert worker.stdout is not None
    for line in worker.stdout:
        if "all_sales active" in line:
            return
    pytest.fail("the worker exited before it became active")


def _assert_matches_aggregates(app: Ledger, target: PostgresTarget, order_ids: list[UUID]) -> None:
    with connect(target) as conn:
        for order_id in order_ids:
            row = conn.execute(
                f"SELECT {SUMMARY} FROM all_sales_orders WHERE order_id = %s", (order_id,)
            ).fetchone()
            order = app.get_order(order_id)
            tab = "third_party_managed" if order.third_party_managed else order.status
            expected = (
                order.status, order.open, order.units, order.shipped_units, order.cancelled_units, order.total,
                order.refunded_total, order.version, order.dispute_status, tab,
            )  # fmt: skip
            assert row == expected, order_id


@pytest.mark.slow
def test_kill_9_mid_catch_up_resumes_without_duplicate_or_gap(
    app: Ledger, own_target: PostgresTarget, cli_env: dict[str, str]
) -> None:
    """A worker killed with SIGKILL mid catch-up resumes where it stopped; the view equals a fresh rebuild."""
    order_ids = _fill(app, 1200)
    worker = _start_worker(cli_env, "--batch-size", "1")
    try:
        _wait_active(worker)
        _wait_until(lambda: _position(own_target)[0] > 200)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    finally:
        worker.kill()
    position, head = _position(own_target)
    assert 0 < position < head, "the worker must be killed in the middle of catching up"
    worker = _start_worker(cli_env)
    try:
        _wait_active(worker)
        _wait_until(lambda: _position(own_target)[0] == head)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    resumed = _snapshot(own_target)
    base.rebuild(AllSalesProjection(), lambda: connect(own_target), app.recorder, app.mapper)
    assert _snapshot(own_target) == resumed
    assert len(resumed["orders"]) == len(order_ids)
    _assert_matches_aggregates(app, own_target, order_ids[::37])


@pytest.mark.slow
def test_standby_takes_over_when_the_active_worker_dies(
    app: Ledger, own_target: PostgresTarget, cli_env: dict[str, str]
) -> None:
    """Two workers: one is elected, the other waits; when the first is killed the standby takes over."""
    order_ids = _fill(app, 50)
    first = _start_worker(cli_env)
    second = None
    try:
        _wait_active(first)
        second = _start_worker(cli_env)
        _wait_until(lambda: _position(own_target)[0] == _position(own_target)[1])
        with connect(own_target) as conn:
            [row] = base.status(conn, [AllSalesProjection()])
            assert row.active_worker
        first.send_signal(signal.SIGKILL)
        first.wait()
        _wait_active(second)
        result = app.cancel(CTX, order_ids[1], reason=CancelReason.OTHER, lines=(LineQuantity("2", 1),))
        assert result.notification_id is not None
        with connect(own_target) as conn:
            assert base.wait_for(conn, "all_sales", result.notification_id, timeout=30)
        _assert_matches_aggregates(app, own_target, [order_ids[1]])
    finally:
        first.kill()
        if second is not None:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0


def test_rebuild_beside_live_worker_equals_live(app: Ledger, own_target: PostgresTarget) -> None:
    """A rebuild while the live worker follows new commands swaps in a view equal to the aggregates."""
    order_ids = _fill(app, 300)

    def connect_target() -> psycopg.Connection[Any]:
        return connect(own_target)

    worker = base.ProjectionWorker(AllSalesProjection(), connect_target, app.recorder, app.mapper)
    thread = threading.Thread(target=worker.run)
    thread.start()
    stop_writing = threading.Event()
    rng = random.Random(3)

    def write() -> None:
        writer = Ledger(env=own_target.eventsourcing_env(), clock=lambda: NOW)
        try:
            while not stop_writing.is_set():
                order_id = rng.choice(order_ids)
                with contextlib.suppress(LedgerError):  # refused when the line shipped already
                    writer.ship(CTX, order_id, carrier=Carrier.FEDEX, tracking_number="123456789012",
                                lines=(LineQuantity("2", 1),))  # fmt: skip
        finally:
            writer.close()

    writer_thread = threading.Thread(target=write)
    writer_thread.start()
    try:
        assert worker.is_active.wait(10)
        generation, _ = base.rebuild(AllSalesProjection(), connect_target, app.recorder, app.mapper)
        assert generation == 2
        time.sleep(0.5)  # the live worker follows the new generation
    finally:
        stop_writing.set()
        writer_thread.join()
    _, head = _position(own_target)
    with connect(own_target) as conn:
        assert base.wait_for(conn, "all_sales", head, timeout=30)
    worker.stop()
    thread.join()
    _assert_matches_aggregates(app, own_target, order_ids)
    with connect(own_target) as conn:
        by_tab = conn.execute(
            "SELECT seller, account_id, tab, count(*) FROM all_sales_orders GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).fetchall()
        counted = conn.execute(
            "SELECT seller, account_id, tab, orders FROM all_sales_counts"
            " WHERE tab <> 'disputes_open' AND orders <> 0 ORDER BY 1, 2, 3"
        ).fetchall()
    assert by_tab == counted


def test_live_worker_writes_an_order_of_many_lines_without_copy(
    app: Ledger, own_target: PostgresTarget
) -> None:
    """A live batch runs in pipeline mode, where COPY cannot: an import of more lines than a COPY is used for
    is written row by row, and the order's row and lines match the aggregate."""
    account = app.register_account(CTX, seller="acme", marketplace=Marketplace.WALMART, name="many-lines")
    lines = tuple(OrderLine(str(n), f"SKU-{n}", 2, Decimal("1.25")) for n in range(1, 71))
    order = Order.import_order(
        CTX,
        seller="acme",
        account_id=account.account_id,
        marketplace=Marketplace.WALMART,
        order=ImportedOrder("many-1", NOW, "USD", PaymentStatus.PAID, Buyer("B", "b@example.com"), lines),
        third_party_managed=False,
    )
    worker = base.ProjectionWorker(
        AllSalesProjection(), lambda: connect(own_target), app.recorder, app.mapper
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert worker.is_active.wait(10)
        app.save(order)
        app.ship(CTX, order.id, carrier=Carrier.FEDEX, tracking_number="123456789012",
                 lines=tuple(LineQuantity(str(n), 1) for n in range(1, 71)))  # fmt: skip
        _, head = _position(own_target)
        with connect(own_target) as conn:
            assert base.wait_for(conn, "all_sales", head, timeout=30)
    finally:
        worker.stop()
        thread.join()
    assert worker.error is None
    _assert_matches_aggregates(app, own_target, [order.id])
    with connect(own_target) as conn:
        row = conn.execute(
            "SELECT count(*), sum(shipped) FROM all_sales_lines WHERE order_id = %s", (order.id,)
        ).fetchone()
    assert row == (70, 70)


def test_wait_for_times_out_when_nothing_follows(app: Ledger, own_target: PostgresTarget) -> None:
    """Read-your-writes waits report False when no worker applies the position in time."""
    [order_id] = _fill(app, 1)
    with connect(own_target) as conn:
        base.install(conn, AllSalesProjection())
        result = app.cancel(CTX, order_id, reason=CancelReason.OTHER, lines=(LineQuantity("2", 1),))
        assert result.notification_id is not None
        assert not base.wait_for(conn, "all_sales", result.notification_id, timeout=0.3)


def test_worker_exits_cleanly_on_sigterm(cli_env: dict[str, str], app: Ledger) -> None:
    """`ledger worker` stops at a transaction boundary on SIGTERM and exits 0."""
    _fill(app, 5)
    worker = _start_worker(cli_env)
    try:
        _wait_active(worker)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    assert worker.stdout is not None
    assert "worker stopped" in worker.stdout.read()


@pytest.mark.postgres
def test_starting_another_worker_takes_no_lock_on_the_live_tables(own_target: PostgresTarget) -> None:
    """A second process installing a live projection (a worker, a dispatcher starting) neither waits for nor
    blocks the writers of its tables: no index is asked for again and no view is replaced."""
    from ledger.integrations.outbound import OutboundProjection  # noqa: PLC0415

    for projection in (AllSalesProjection(), OutboundProjection()):
        with connect(own_target) as conn:
            first = base.install(conn, projection)
        with connect(own_target) as writer, connect(own_target) as starter:
            writer.autocommit = False
            for table in projection.tables:  # a writer in the middle of a transaction on every table
                writer.execute(f"LOCK TABLE {table}_g{first[0]} IN ROW EXCLUSIVE MODE")
            starter.execute("SET lock_timeout = '2s'")
            assert base.install(starter, projection) == first
            writer.rollback()
        with connect(own_target) as conn:
            for table in projection.tables:
                (definition,) = conn.execute("SELECT pg_get_viewdef(%s::regclass)", (table,)).fetchone()
                assert f"{table}_g{first[0]}" in definition


@pytest.mark.postgres
def test_deployments_sharing_a_database_elect_their_workers_apart(
    own_target: PostgresTarget, pg_target: PostgresTarget
) -> None:
    """Two deployments (schemas) of one database: each elects its own active worker for a projection; one
    deployment's worker never holds the other's projection in standby."""
    ledgers = [Ledger(env=target.eventsourcing_env()) for target in (own_target, pg_target)]
    workers = [
        base.ProjectionWorker(
            AllSalesProjection(),
            lambda t=target: connect(t),
            ledger.recorder,
            ledger.mapper,
            standby_interval=0.1,
        )
        for target, ledger in zip((own_target, pg_target), ledgers, strict=True)
    ]
    threads = [threading.Thread(target=worker.run, daemon=True) for worker in workers]
    try:
        threads[0].start()
        assert workers[0].is_active.wait(10)
        threads[1].start()
        assert workers[1].is_active.wait(10)
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(10)
        for ledger in ledgers:
            ledger.close()

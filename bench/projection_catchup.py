"""All Sales projection: catch-up rate against the library's one-transaction-per-event runner, and live lag.

    python bench/projection_catchup.py [--events 100000] [--library-events 5000] [--runs 3]
                                       [--lag-seconds 10] [--lag-rate 500] [--schema NAME]
                                       [--lag-worker thread|process|both] [--lag-clients thread|process]

Uses LEDGER_DATABASE_URL when set, else an embedded PostgreSQL in a temporary directory. Works in a schema of
its own, dropped at the end; with `--schema` in that schema, kept, adding events only up to `--events`
(`projection_ab.py` runs builds one after another over one log this way). `--library-events 0` skips the
library's runner. `--lag-worker` says where the live-lag phase's worker runs: `thread` (default) in this
process beside the 16 client threads, as `ledger serve` runs its workers beside the API; `process` as
`ledger worker --projection all_sales` in a process of its own, as beside `ledger serve --no-workers`; `both`
measures one after the other (`live_lag`, then `live_lag_worker_process`). `--lag-clients process` runs the 16
client threads in a process of their own, so that the watcher timing the lag (a thread of this process) does not
wait for the clients' GIL: commit and sighting times are both `time.perf_counter`, one clock for every process on
Linux. Prints one JSON object with every
figure (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import multiprocessing
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from _common import database_url
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection as LibraryProjection
from eventsourcing.projection import ProjectionRunner
from psycopg import sql
from psycopg.rows import tuple_row

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
from ledger.application.queries import AccountDetails
from ledger.config import Settings
from ledger.eventstore.database import (
    EmbeddedPostgres,
    PostgresTarget,
    connect,
    ensure_schema,
    parse_database_url,
)
from ledger.projections import base
from ledger.projections.all_sales import AllSalesProjection

CTX = Context(actor="bench")
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def bench_accounts(app: Ledger) -> list[AccountDetails]:
    """Three sellers' accounts, one each on Walmart, eBay and Rakuten."""
    return [
        app.register_account(CTX, seller=f"seller-{i % 3}", marketplace=m, name="bench")
        for i, m in enumerate([Marketplace.WALMART, Marketplace.EBAY, Marketplace.RAKUTEN])
    ]


def sample_order(account: AccountDetails, i: int) -> Order:
    """The benchmark's `i`th order, not yet saved: imported with two lines, one unit shipped, every fourth
    refunded."""
    order = Order.import_order(
        CTX,
        seller=account.seller,
        account_id=account.account_id,
        marketplace=Marketplace(account.marketplace),
        order=ImportedOrder(
            f"B-{i}",
            NOW - timedelta(minutes=i % 50_000),
            "USD",
            PaymentStatus.PAID,
            Buyer(f"Buyer {i}", f"buyer{i}@example.com"),
            (
                OrderLine("1", f"SKU-{i % 500}", 2, Decimal("19.99"), Decimal("1.60")),
                OrderLine("2", f"SKU-{i % 77}", 1, Decimal("5.00")),
            ),
        ),
        third_party_managed=False,
    )
    order.ship(CTX, carrier=Carrier.FEDEX, tracking_number="123456789012", shipped_at=NOW, now=NOW,
               lines=(LineQuantity("1", 1),))  # fmt: skip
    if i % 4 == 0:
        order.refund(CTX, reason=RefundReason.DAMAGED, lines=None)
    return order


def generate(app: Ledger, events: int) -> int:
    """Orders (import, ship, some refunds) over three marketplaces until about `events` events exist."""
    accounts = bench_accounts(app)
    written, i, batch = 0, secrets.randbelow(10**9), []  # order ids of their own in a kept schema
    while written < events:
        order = sample_order(accounts[i % 3], i)
        written += len(order.pending_events)
        batch.append(order)
        i += 1
        if len(batch) >= 100:
            app.save(*batch)
            batch = []
    if batch:
        app.save(*batch)
    return written


# ------------------------------------------------------------------------------- the library


class LibraryAllSalesView(PostgresTrackingRecorder):
    """The same fold as AllSalesProjection, applied the library's way: one transaction per event."""

    generation = 1
    schema = "public"

    def apply(self, event: Any, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            cur = curs.connection.cursor(row_factory=tuple_row)
            cur.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(self.schema)))
            AllSalesProjection().apply(
                cur, base.Tables(self.generation), [base.Event(tracking.notification_id, event)]
            )
            self._insert_tracking(curs, tracking)


class LibraryAllSalesProjection(LibraryProjection[LibraryAllSalesView]):
    name = "library_all_sales"

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.apply(domain_event, tracking)


def library_rate(target: PostgresTarget, app: Ledger, events: int) -> float:
    with connect(target) as conn:
        generation, _ = base.install(conn, AllSalesProjection())
        conn.execute(
            sql.SQL("TRUNCATE {}, {}, {}").format(
                *(base.Tables(generation)[t] for t in AllSalesProjection.tables)
            )
        )
        conn.execute("DROP TABLE IF EXISTS library_all_sales_tracking")
        conn.commit()
        row = conn.execute(
            "SELECT notification_id FROM ledger_events ORDER BY notification_id OFFSET %s LIMIT 1",
            (events - 1,),
        ).fetchone()
    assert row is not None
    last = int(row[0])
    LibraryAllSalesView.generation = generation
    LibraryAllSalesView.schema = target.schema
    env = target.eventsourcing_env()
    started = time.perf_counter()
    with ProjectionRunner(
        application_class=Ledger,
        projection_class=LibraryAllSalesProjection,
        view_class=LibraryAllSalesView,
        env=env,
    ) as runner:
        runner.wait(last, timeout=3600)
    return events / (time.perf_counter() - started)


# ------------------------------------------------------------------------------------- ours


def our_rate(target: PostgresTarget, app: Ledger, total: int) -> tuple[float, float]:
    """(events/s, this process's CPU ms per 1,000 events) of a rebuild from position 0."""
    started, cpu = time.perf_counter(), time.process_time()
    base.rebuild(AllSalesProjection(), lambda: connect(target), app.recorder, app.mapper)
    return total / (time.perf_counter() - started), (time.process_time() - cpu) * 1e6 / total


def live_lag(
    target: PostgresTarget,
    app: Ledger,
    seconds: float,
    rate: float,
    *,
    worker_process: bool = False,
    clients_process: bool = False,
) -> dict[str, Any]:
    """Commands at a steady rate while the worker follows; lag = event committed -> row visible. The worker
    is a thread of this process, or (`worker_process`) `ledger worker` in a process of its own."""
    seen: list[tuple[float, int]] = []
    watching = threading.Event()
    stop = threading.Event()

    def watch() -> None:
        with connect(target, autocommit=True) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(base.PROGRESS_CHANNEL)))
            watching.set()
            while not stop.is_set():
                for note in conn.notifies(timeout=0.2, stop_after=50):
                    name, _, position = note.payload.partition(":")
                    if name == "all_sales":
                        seen.append((time.perf_counter(), int(position)))

    watcher = threading.Thread(target=watch)
    with ExitStack() as stack:  # whatever happens, the threads and the worker end, so the process does too
        if worker_process:
            stack.enter_context(_worker_process(target))
        else:
            worker = base.ProjectionWorker(
                AllSalesProjection(), lambda: connect(target), app.recorder, app.mapper
            )
            thread = threading.Thread(target=worker.run)
            thread.start()
            stack.callback(thread.join)
            stack.callback(worker.stop)
            assert worker.is_active.wait(30), worker.error
        watcher.start()
        stack.callback(watcher.join)
        stack.callback(stop.set)
        assert watching.wait(10)
        return {
            "worker": "process" if worker_process else "thread",
            **_load(app, target, seconds, rate, seen, clients_process=clients_process),
        }
    raise AssertionError("unreachable")  # for mypy: the with block returns


@contextlib.contextmanager
def _worker_process(target: PostgresTarget) -> Iterator[None]:
    """`ledger worker --projection all_sales` (no sync, no webhooks) on this schema, until it is active."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | {
        "LEDGER_DATABASE_URL": database_url(target),
        "LEDGER_DATABASE_SCHEMA": target.schema,
        "LEDGER_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "ledger.cli", "worker", "--projection", "all_sales", "--no-sync",
               "--no-webhooks"]  # fmt: skip
    log = tempfile.TemporaryFile()  # noqa: SIM115 - the worker's stderr, told when it fails to start
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        command, env=env, stdout=subprocess.PIPE, stderr=log, text=True
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # until elected: "ledger: all_sales active"
            if "all_sales active" in line:
                break
        else:
            log.seek(0)
            raise RuntimeError(f"ledger worker exited ({proc.wait()}): {log.read()[-2000:].decode()}")
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # drained: the worker never blocks
        yield
    finally:
        proc.terminate()  # SIGTERM: the worker stops at a transaction boundary
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _load(
    app: Ledger,
    target: PostgresTarget,
    seconds: float,
    rate: float,
    seen: list[tuple[float, int]],
    *,
    clients_process: bool = False,
) -> dict[str, Any]:
    order_ids = _load_targets(app, int(seconds * rate) + 10)
    env = target.eventsourcing_env()
    if clients_process:  # the clients' GIL is not the watcher's (nor the worker's, when it is a thread here)
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            committed = pool.submit(_drive, env, order_ids, seconds, rate).result()
    else:
        committed = _drive(env, order_ids, seconds, rate)
    time.sleep(1.0)
    lags = []
    from_sent = []  # from the command's start: an upper bound that also counts the command's own time
    for at, position, sent in committed:
        visible = next((t for t, p in seen if p >= position), None)
        if visible is not None:
            lags.append(max(visible - at, 0.0) * 1000)
            from_sent.append((visible - sent) * 1000)
    lags.sort()
    from_sent.sort()
    return {
        "clients": "process" if clients_process else "thread",
        "commands": len(committed),
        "achieved_rate": round(len(committed) / seconds, 1),
        "lag_ms_p50": round(statistics.median(lags), 2) if lags else None,
        "lag_ms_p99": round(lags[int(len(lags) * 0.99) - 1], 2) if lags else None,
        "lag_samples": len(lags),
        "sent_to_visible_ms_p50": round(statistics.median(from_sent), 2) if from_sent else None,
        "sent_to_visible_ms_p99": round(from_sent[int(len(from_sent) * 0.99) - 1], 2) if from_sent else None,
    }


def _drive(
    env: dict[str, str], order_ids: list[Any], seconds: float, rate: float
) -> list[tuple[float, int, float]]:
    """16 client threads shipping one unit each at `rate` in all, for `seconds`: (commit returned, position,
    command sent) per command, in `time.perf_counter` (CLOCK_MONOTONIC on Linux: the same clock in every process)."""
    committed: list[tuple[float, int, float]] = []
    lock = threading.Lock()
    clients = 16
    interval = clients / rate
    deadline = time.perf_counter() + seconds

    def client(k: int) -> None:
        writer = Ledger(env=env)
        next_at = time.perf_counter() + k * interval / clients
        j = k
        while next_at < deadline:
            time.sleep(max(next_at - time.perf_counter(), 0))
            sent = time.perf_counter()
            result = writer.ship(CTX, order_ids[j % len(order_ids)], carrier=Carrier.UPS,
                                 tracking_number="1Z999AA10123456784", lines=(LineQuantity("1", 1),))  # fmt: skip
            with lock:
                committed.append((time.perf_counter(), result.notification_id or 0, sent))
            next_at += interval
            j += clients
        writer.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return committed


def _load_targets(app: Ledger, commands: int) -> list[Any]:
    """Orders with enough unshipped units for `commands` one-unit shipments."""
    account = app.register_account(
        CTX, seller="lag", marketplace=Marketplace.WALMART, name=secrets.token_hex(3)
    )
    orders = []
    prefix = secrets.token_hex(3)  # a kept schema gets orders of its own on every run
    for i in range(commands // 50 + 1):
        order = Order.import_order(
            CTX,
            seller="lag",
            account_id=account.account_id,
            marketplace=Marketplace.WALMART,
            order=ImportedOrder(
                f"L-{prefix}-{i}",
                NOW,
                "USD",
                PaymentStatus.PAID,
                Buyer("B", "b@example.com"),
                (OrderLine("1", "SKU", 60, Decimal("1.00")),),
            ),
            third_party_managed=False,
        )
        orders.append(order)
    app.save(*orders)
    return [o.id for o in orders]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--library-events", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lag-seconds", type=float, default=10.0)
    parser.add_argument("--lag-rate", type=float, default=500.0)
    parser.add_argument("--schema", help="work in this schema and keep it (default: a throw-away one)")
    parser.add_argument(
        "--lag-worker",
        choices=("thread", "process", "both"),
        default="thread",
        help="the live-lag worker: a thread of this process, `ledger worker` in its own process, or both",
    )
    parser.add_argument(
        "--lag-clients",
        choices=("thread", "process"),
        default="thread",
        help="the live-lag load's 16 client threads: in this process, or in a process of their own",
    )
    args = parser.parse_args()
    settings = Settings.from_env()
    with ExitStack() as stack:
        schema = args.schema or f"bench_{secrets.token_hex(4)}"
        if settings.database_url:
            target = parse_database_url(settings.database_url, schema)
        else:
            data = Path(tempfile.mkdtemp(prefix="ledger-bench-", dir="/tmp"))
            target = dataclasses.replace(stack.enter_context(EmbeddedPostgres(data)), schema=schema)
        ensure_schema(target)
        if not args.schema:
            stack.callback(_drop_schema, target)
        app = Ledger(env=target.eventsourcing_env())
        stack.callback(app.close)
        t0 = time.perf_counter()
        with connect(target) as conn:
            row = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
        present = int(row[0]) if row else 0
        if args.events > present:
            generate(app, args.events - present)
        generated_in = time.perf_counter() - t0
        with connect(target) as conn:
            row = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
        total = int(row[0]) if row else 0
        ours_runs = [our_rate(target, app, total) for _ in range(args.runs)]
        ours = [rate for rate, _ in ours_runs]
        library_events = min(args.library_events, total)
        library = (
            [library_rate(target, app, library_events) for _ in range(args.runs)] if library_events else []
        )
        base.rebuild(AllSalesProjection(), lambda: connect(target), app.recorder, app.mapper)
        lags = {}
        if args.lag_seconds > 0:
            for mode in ("thread", "process") if args.lag_worker == "both" else (args.lag_worker,):
                lags[mode] = live_lag(
                    target,
                    app,
                    args.lag_seconds,
                    args.lag_rate,
                    worker_process=mode == "process",
                    clients_process=args.lag_clients == "process",
                )
        with connect(target) as conn:
            server = conn.execute("SHOW server_version").fetchone()
        result = {
            "benchmark": "all_sales catch-up and live lag",
            "machine": {
                "cpus": _cpus(),
                "python": platform.python_version(),
                "postgres": server[0] if server else None,
            },
            "events": total,
            "generated_in_s": round(generated_in, 1),
            "ours_events_per_s_runs": [round(r) for r in ours],
            "ours_events_per_s_median": round(statistics.median(ours)),
            "ours_cpu_ms_per_1000_events_median": round(statistics.median(c for _, c in ours_runs), 1),
            "library_events": library_events,
            "library_events_per_s_runs": [round(r) for r in library],
            "library_events_per_s_median": round(statistics.median(library)) if library else None,
            "ratio_ours_to_library": (
                round(statistics.median(ours) / statistics.median(library), 1) if library else None
            ),
            "target_events_per_s": 25_000,
            "live_lag": lags.get("thread") or lags.get("process"),
            "live_lag_worker_process": lags.get("process"),
        }
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")


def _cpus() -> int:
    return os.cpu_count() or 0


def _drop_schema(target: PostgresTarget) -> None:
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema)))


if __name__ == "__main__":
    main()

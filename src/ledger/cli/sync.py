"""The marketplace side of the `ledger` command: `dispatch`, `sync replay|check`, and the importer and dispatcher
threads that `ledger serve` and `ledger worker` run (`ledger import` from the marketplaces is in imports.py)."""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any, TextIO

import msgspec

from ledger.aggregates.policies import NotSent
from ledger.application.ledger import Ledger
from ledger.cli.common import EXIT_FAILED, Command, print_json, relay, stop_on_signals, time_arg, uuid_arg
from ledger.config import Settings
from ledger.eventstore.database import PostgresTarget, connect, open_database
from ledger.integrations.dispatcher import Dispatcher, RateLimiter
from ledger.integrations.importer import Importer
from ledger.integrations.marketplaces import RATE_LIMITS, SyncSettings
from ledger.integrations.metrics import serve_metrics
from ledger.integrations.outbound import OutboundProjection
from ledger.integrations.outbox import replay_order
from ledger.integrations.sync_check import SyncChecker
from ledger.projections.base import catch_up_unless_followed

# ----------------------------------------------------------------------- threads in serve/worker


class SyncThreads:
    """The importer (every LEDGER_IMPORT_INTERVAL) and a dispatcher, each in a thread, stopped together.

    A stop lets the importer finish the order it is storing and the dispatcher the item it is sending."""

    def __init__(self, target: PostgresTarget, settings: SyncSettings) -> None:
        self.ledger = Ledger(env=target.eventsourcing_env())
        # One set of buckets per process: the importer's reads and the dispatcher's sends share them.
        limiter = RateLimiter(RATE_LIMITS | settings.rate_limits, settings.processes)
        self.importer = Importer(self.ledger, lambda: connect(target), settings, limiter=limiter)
        self.dispatcher = Dispatcher(
            self.ledger,
            lambda: connect(target),
            settings,
            before_pass=QueueKeeper(target, self.ledger),
            limiter=limiter,
        )
        self.checker = SyncChecker(self.ledger, lambda: connect(target, autocommit=True), settings)
        self.threads = [
            threading.Thread(target=self.importer.run, name="importer"),
            threading.Thread(target=self.dispatcher.run, name="dispatcher"),
            threading.Thread(target=self.checker.run, name="sync-check"),
        ]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.importer.stop()
        self.dispatcher.stop()
        self.checker.stop()
        for thread in self.threads:
            thread.join()
        self.ledger.close()


def start_sync(target: PostgresTarget, args: argparse.Namespace, out: TextIO) -> SyncThreads | None:
    """Start the sync threads unless `--no-sync` or no marketplace URL is set (said in one line)."""
    if getattr(args, "no_sync", False):
        return None
    settings = SyncSettings.from_env()
    if not settings.marketplace_url and not settings.marketplace_urls:
        out.write("ledger: marketplace sync off (set LEDGER_MARKETPLACE_URL to turn it on)\n")
        return None
    threads = SyncThreads(target, settings)
    out.write(
        f"ledger: marketplace sync on: import every {settings.import_interval:g}s, dispatcher running\n"
    )
    out.flush()
    return threads


# --------------------------------------------------------------------------------- dispatch


def cmd_dispatch(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Send due outbound items: once (`--once`: until none is due now) or until SIGINT/SIGTERM."""
    sync = SyncSettings.from_env()
    if args.since is not None:
        sync = msgspec.structs.replace(sync, sync_since=args.since)
    if args.metrics_port is not None:
        sync = msgspec.structs.replace(sync, metrics_port=args.metrics_port)
    with open_database(settings) as target:
        app = Ledger(env=target.eventsourcing_env())
        if sync.metrics_port is not None and not args.once:
            serve_metrics(lambda: connect(target, autocommit=True), sync.metrics_port, sync.metrics_host)
            out.write(
                f"ledger: dispatcher metrics at http://{sync.metrics_host}:{sync.metrics_port}/metrics\n"
            )
        keeper = QueueKeeper(target, app)
        dispatcher = Dispatcher(app, lambda: connect(target), sync, before_pass=keeper)
        try:
            if args.once:
                handled = dispatcher.dispatch_due()
                out.write(f"ledger: {handled} outbound items handled\n")
                return 0
            relay(stop_on_signals(), dispatcher.stop)
            out.write("ledger: dispatcher running; Ctrl-C stops\n")
            out.flush()
            dispatcher.run()
        finally:
            dispatcher.close()
            app.close()
    out.write("ledger: dispatcher stopped\n")
    return 0


class QueueKeeper:
    """Before a dispatcher's pass, at most every `interval` seconds: `catch_up_queue`."""

    def __init__(self, target: PostgresTarget, app: Ledger, interval: float = 5.0) -> None:
        self.target = target
        self.app = app
        self.interval = interval
        self.last = float("-inf")

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            catch_up_queue(self.target, self.app)


def catch_up_queue(target: PostgresTarget, app: Ledger) -> None:
    """Bring the outbound queue up to the head of the log, unless a worker keeps it (holds its lock): so that
    `ledger dispatch` sends what was just recorded even when no `ledger worker` runs."""
    with connect(target, autocommit=True) as conn:
        catch_up_unless_followed(conn, OutboundProjection(), app.recorder, app.mapper)


# ------------------------------------------------------------------------------------- sync


def cmd_sync_replay(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    with open_database(settings) as target:
        app = Ledger(env=target.eventsourcing_env())
        try:
            order = app.get_order(args.order)  # OrderNotFoundError for an unknown order
            # Answers recorded but not yet in the queue would settle the replayed items again when applied.
            catch_up_queue(target, app)
        finally:
            app.close()
        with connect(target, autocommit=True) as conn:
            count = replay_order(conn, args.order)
    out.write(f"{args.order}: {count} outbound items back in the queue (same idempotency keys)\n")
    # Changes made while the account's sync was off were never queued, so a replay never sends them: name
    # them, so the seller tells the marketplace (or not) knowingly.
    for entry in order.sync:
        if entry.reason == NotSent.SYNC_OFF:
            out.write(f"not sent, sync was off: {entry.action} {entry.reference} ({entry.at.isoformat()})\n")
    return 0


def cmd_sync_check(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Compare what the marketplaces hold for recently imported orders with the ledger; exit 1 on a difference."""
    with open_database(settings) as target:
        app = Ledger(env=target.eventsourcing_env())
        try:
            checker = SyncChecker(app, lambda: connect(target, autocommit=True), SyncSettings.from_env())
            report = checker.check(args.account, args.days)
        finally:
            app.close()
    differences, problems = report.differences, report.problems
    if args.json:
        print_json({"checked": report.checked, "differences": differences, "problems": problems}, out)
    else:
        for d in differences:
            out.write(
                f"{d.marketplace} {d.marketplace_order_id} (order {d.order_id}): {d.field}: "
                f"ledger {d.ledger}, marketplace {d.marketplace_value}\n"
            )
        for p in problems:
            out.write(f"not checked: {p}\n")
        out.write(f"{report.checked} orders checked, {len(differences)} differences\n")
    return EXIT_FAILED if differences or problems else 0


# ----------------------------------------------------------------------------------- parser


def add_commands(sub: Any, command: Command) -> None:
    """`dispatch` and `sync replay|check`."""
    dispatch = command(sub, "dispatch", None, "send due outbound items to the marketplaces")
    dispatch.set_defaults(settings_handler=cmd_dispatch)
    dispatch.add_argument("--once", action="store_true", help="until nothing is due now, then exit")
    dispatch.add_argument(
        "--since",
        type=time_arg,
        help="never send changes made before this time (ISO 8601 with zone; default LEDGER_SYNC_SINCE)",
    )
    dispatch.add_argument(
        "--metrics-port",
        type=int,
        help="serve the queue's Prometheus metrics at /metrics on this port (default LEDGER_DISPATCHER_METRICS_PORT)",
    )
    sync = command(sub, "sync", None, "the marketplaces' copy of orders: replay and check")
    sync_sub = sync.add_subparsers(dest="sync_command", metavar="COMMAND", required=True)
    replay = command(sync_sub, "replay", None, "re-send an order's history, idempotently")
    replay.set_defaults(settings_handler=cmd_sync_replay)
    replay.add_argument("--order", type=uuid_arg, required=True, help="the order's id")
    check = command(sync_sub, "check", None, "list differences between the marketplaces and the ledger")
    check.set_defaults(settings_handler=cmd_sync_check)
    check.add_argument("--account", type=uuid_arg, help="only this account")
    check.add_argument("--days", type=int, default=7, help="orders the marketplace changed in this many days")

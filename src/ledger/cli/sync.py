"""The marketplace side of the `ledger` command: import, dispatch, sync replay and check, and the threads that
`ledger serve` and `ledger worker` run. Wired into cli.py's parser; kept here so cli.py stays readable."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO
from uuid import UUID

import msgspec

from ledger.aggregates.values import OrderStatus
from ledger.application.ledger import Ledger
from ledger.config import Settings
from ledger.eventstore.database import PostgresTarget, connect, open_database
from ledger.integrations.base import MarketplaceClient, MarketplaceError
from ledger.integrations.dispatcher import Dispatcher, replay_order
from ledger.integrations.importer import AccountReport, Importer, ensure_tables
from ledger.integrations.marketplaces import MarketplaceNotConfiguredError, SyncSettings, client_for
from ledger.projections.base import Tables, active_generation, apply_batch, decode, install, projection_lock
from ledger.projections.outbound import OutboundProjection

logger = logging.getLogger(__name__)
_json = msgspec.json.Encoder(decimal_format="string")
SHOWN_ORDERS = 20  # new orders listed by `ledger import --once` in text


def _print_json(value: Any, out: TextIO) -> None:
    out.write(_json.encode(value).decode() + "\n")


def _stop_on_signals() -> threading.Event:
    import signal  # noqa: PLC0415

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _relay(stop: threading.Event, then: Callable[[], None]) -> None:
    """Call `then` once `stop` is set (by a signal)."""

    def wait() -> None:
        stop.wait()
        then()

    threading.Thread(target=wait, name="stop-relay", daemon=True).start()


# ----------------------------------------------------------------------- threads in serve/worker


class SyncThreads:
    """The importer (every LEDGER_IMPORT_INTERVAL) and a dispatcher, each in a thread, stopped together.

    A stop lets the importer finish the order it is storing and the dispatcher the item it is sending."""

    def __init__(self, target: PostgresTarget, settings: SyncSettings) -> None:
        self.ledger = Ledger(env=target.eventsourcing_env())
        self.importer = Importer(self.ledger, lambda: connect(target), settings)
        self.dispatcher = Dispatcher(
            self.ledger, lambda: connect(target), settings, before_pass=QueueKeeper(target, self.ledger)
        )
        self.threads = [
            threading.Thread(target=self.importer.run, name="importer"),
            threading.Thread(target=self.dispatcher.run, name="dispatcher"),
        ]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.importer.stop()
        self.dispatcher.stop()
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


# ----------------------------------------------------------------------------------- import


def cmd_import(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """`ledger import FILE` imports a file; without FILE, a round of marketplace imports (--once), or rounds
    on the schedule until SIGINT/SIGTERM."""
    if args.file is not None:
        from ledger.cli.main import cmd_import as import_file  # noqa: PLC0415 - cli imports this module
        from ledger.cli.main import open_ledger  # noqa: PLC0415

        if args.once or args.account:
            print(
                "ledger: --once and --account are for marketplace imports: drop them, or FILE",
                file=sys.stderr,
            )
            return 2  # usage

        with open_ledger(settings) as app:
            return import_file(args, app, out)
    sync = SyncSettings.from_env()
    with open_database(settings) as target:
        app = Ledger(env=target.eventsourcing_env())
        try:
            importer = Importer(app, lambda: connect(target), sync)
            if not args.once:
                stop = _stop_on_signals()
                _relay(stop, importer.stop)
                out.write(f"ledger: importing every {sync.import_interval:g}s; Ctrl-C stops\n")
                out.flush()
                importer.run()
                return 0
            reports = importer.run_round(args.account)
        finally:
            app.close()
    if args.json:
        _print_json([asdict(r) for r in reports], out)
    else:
        for report in reports:
            out.write(_report_line(report))
        if not reports:
            out.write("no marketplace accounts to import from\n")
    return 1 if any(r.error or r.refused for r in reports) else 0


def _report_line(r: AccountReport) -> str:
    head = f"{r.marketplace} account {r.account_id}: "
    body = (
        f"{r.orders} orders in {r.pages} pages ({r.created} new, {r.updated} updated), {r.facts} facts, "
        f"{r.acknowledged} acknowledged"
    )
    shown = r.new_orders[:SHOWN_ORDERS]
    new = "".join(f"\n  new {x['order_id']} ({x['marketplace_order_id']})" for x in shown)
    if len(r.new_orders) > len(shown):
        new += f"\n  ... and {len(r.new_orders) - len(shown)} more (--json lists them all)"
    refused = "".join(
        f"\n  refused {x['marketplace_order_id']}: {x['code']}: {x['message']}" for x in r.refused
    )
    error = f"\n  stopped: {r.error} (the cursor stays where it was)" if r.error else ""
    return head + body + new + refused + error + "\n"


# --------------------------------------------------------------------------------- dispatch


def cmd_dispatch(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Send due outbound items: once (`--once`: until none is due now) or until SIGINT/SIGTERM."""
    sync = SyncSettings.from_env()
    if args.since is not None:
        sync = msgspec.structs.replace(sync, sync_since=args.since)
    with open_database(settings) as target:
        app = Ledger(env=target.eventsourcing_env())
        keeper = QueueKeeper(target, app)
        dispatcher = Dispatcher(app, lambda: connect(target), sync, before_pass=keeper)
        try:
            if args.once:
                handled = dispatcher.dispatch_due()
                out.write(f"ledger: {handled} outbound items handled\n")
                return 0
            stop = _stop_on_signals()
            _relay(stop, dispatcher.stop)
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
    projection = OutboundProjection()
    with connect(target, autocommit=True) as conn:
        key = projection_lock(conn, projection.name)
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if not (got and got[0]):
            return
        try:
            generation, position = install(conn, projection)
            while notifications := app.recorder.select_notifications(
                start=position, limit=2000, topics=projection.topics, inclusive_of_start=False
            ):
                with conn.transaction(), conn.cursor() as cur:
                    current = active_generation(cur, projection.name, lock="share")
                    if current is None or current[0] != generation:
                        return  # a rebuild swapped generations: its own catch-up covers the rest
                    events = decode(app.mapper, [n for n in notifications if n.id > current[1]])
                    if events:
                        apply_batch(cur, projection, Tables(generation), events)
                position = notifications[-1].id
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


# ------------------------------------------------------------------------------------- sync


def cmd_sync_replay(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    with open_database(settings) as target:
        app = Ledger(env=target.eventsourcing_env())
        try:
            app.get_order(args.order)  # OrderNotFoundError for an unknown order
            # Answers recorded but not yet in the queue would settle the replayed items again when applied.
            catch_up_queue(target, app)
        finally:
            app.close()
        with connect(target, autocommit=True) as conn:
            count = replay_order(conn, args.order)
    out.write(f"{args.order}: {count} outbound items back in the queue (same idempotency keys)\n")
    return 0


@dataclass(frozen=True)
class Difference:
    account_id: UUID
    marketplace: str
    marketplace_order_id: str
    order_id: UUID
    field: str
    ledger: str
    marketplace_value: str


def compare(order: Any, remote: Any) -> list[tuple[str, str, str]]:
    """(field, ledger, marketplace) for every difference between the ledger's order and the marketplace's."""
    found: list[tuple[str, str, str]] = []
    if remote.status in {s.value for s in OrderStatus} and remote.status != order.status:
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


def cmd_sync_check(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Compare what the marketplaces hold for recently imported orders with the ledger; exit 1 on a difference."""
    sync = SyncSettings.from_env()
    since = datetime.now(UTC) - timedelta(days=args.days)
    differences: list[Difference] = []
    problems: list[str] = []
    with open_database(settings) as target:
        app = Ledger(env=target.eventsourcing_env())
        try:
            with connect(target, autocommit=True) as conn:
                ensure_tables(conn)
                rows = conn.execute(
                    "SELECT account_id, marketplace_order_id, order_id FROM integration_orders"
                    " WHERE remote_updated_at >= %s AND (%s::uuid IS NULL OR account_id = %s)"
                    " ORDER BY account_id, remote_updated_at DESC",
                    (since, args.account, args.account),
                ).fetchall()
            clients: dict[UUID, MarketplaceClient | None] = {}
            for account_id, moid, order_id in rows:
                order = app.get_order(order_id)
                if order.third_party_managed:
                    continue  # fulfilled elsewhere: the ledger does not keep the marketplace up to date
                if account_id not in clients:
                    try:
                        clients[account_id] = client_for(app.get_account(account_id), sync)
                    except MarketplaceNotConfiguredError as e:
                        problems.append(f"account {account_id}: {e.message}")
                        clients[account_id] = None
                client = clients[account_id]
                if client is None:
                    continue
                try:
                    remote = client.order_state(moid)
                except MarketplaceError as e:
                    problems.append(f"{order.marketplace} {moid}: cannot ask the marketplace: {e}")
                    continue
                differences += [
                    Difference(account_id, order.marketplace, moid, order_id, name, mine, theirs)
                    for name, mine, theirs in compare(order, remote)
                ]
            for c in clients.values():
                if c is not None:
                    c.close()
        finally:
            app.close()
    if args.json:
        _print_json({"checked": len(rows), "differences": differences, "problems": problems}, out)
    else:
        for d in differences:
            out.write(
                f"{d.marketplace} {d.marketplace_order_id} (order {d.order_id}): {d.field}: "
                f"ledger {d.ledger}, marketplace {d.marketplace_value}\n"
            )
        for p in problems:
            out.write(f"not checked: {p}\n")
        out.write(f"{len(rows)} orders checked, {len(differences)} differences\n")
    return 1 if differences or problems else 0


# ----------------------------------------------------------------------------------- parser


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. 2026-11-20T10:00:00Z")
    return value


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an id (a UUID)") from None


def add_commands(
    sub: Any,
    command: Any,
    imp: argparse.ArgumentParser,
    serve: argparse.ArgumentParser,
    worker: argparse.ArgumentParser,
) -> None:
    """The marketplace commands: `import` without FILE, `dispatch`, `sync replay|check`, `--no-sync`."""
    imp.set_defaults(handler=None, settings_handler=cmd_import)
    imp.add_argument(
        "--once", action="store_true", help="without FILE: one round over the accounts, then exit"
    )
    imp.add_argument("--account", type=_uuid, help="without FILE: only this account")
    for parser in (serve, worker):
        parser.add_argument(
            "--no-sync", action="store_true", help="don't import from or send to marketplaces in this process"
        )
    dispatch = command(sub, "dispatch", None, "send due outbound items to the marketplaces")
    dispatch.set_defaults(settings_handler=cmd_dispatch)
    dispatch.add_argument("--once", action="store_true", help="until nothing is due now, then exit")
    dispatch.add_argument(
        "--since",
        type=_time,
        help="never send changes made before this time (ISO 8601 with zone; default LEDGER_SYNC_SINCE)",
    )
    sync = command(sub, "sync", None, "the marketplaces' copy of orders: replay and check")
    sync_sub = sync.add_subparsers(dest="sync_command", metavar="COMMAND", required=True)
    replay = command(sync_sub, "replay", None, "re-send an order's history, idempotently")
    replay.set_defaults(settings_handler=cmd_sync_replay)
    replay.add_argument("--order", type=_uuid, required=True, help="the order's id")
    check = command(sync_sub, "check", None, "list differences between the marketplaces and the ledger")
    check.set_defaults(settings_handler=cmd_sync_check)
    check.add_argument("--account", type=_uuid, help="only this account")
    check.add_argument("--days", type=int, default=7, help="orders the marketplace changed in this many days")

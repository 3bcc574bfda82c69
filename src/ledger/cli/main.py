"""The `ledger` command. With cli.py's sibling api/app.py, the one place where things are wired together."""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.persistence import PersistenceError

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.values import (
    CancelReason,
    Carrier,
    Context,
    DisputeOutcome,
    LineQuantity,
    Marketplace,
    RefundReason,
    RefundRequestLine,
    Role,
    Source,
)
from ledger.api.bodies.schemas import decode_orders
from ledger.application.ledger import ImportItem, Ledger
from ledger.application.queries import HistoryEntry, OrderDetails
from ledger.cli import audit as audit_cli
from ledger.cli import bulk as cli_bulk
from ledger.cli import sync as sync_cli
from ledger.cli.progress import progress as progress_bar
from ledger.config import ConfigError, Settings
from ledger.eventstore.database import (
    DatabaseUnavailableError,
    PostgresTarget,
    check_connection,
    connect,
    open_database,
)
from ledger.projections.base import Projection, ProjectionWorker, rebuild
from ledger.projections.base import status as projection_status
from ledger.projections.registry import all_projections, projection_named

EXIT_FAILED = 1  # the ledger refused something, or some rows of a file failed
EXIT_USAGE = 2  # bad arguments or input file
EXIT_UNAVAILABLE = 3  # configuration or database problem

_json = msgspec.json.Encoder(decimal_format="string")


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


@contextmanager
def open_ledger(settings: Settings) -> Iterator[Ledger]:
    with open_database(settings) as target:
        app = Ledger(env=target.eventsourcing_env())
        try:
            yield app
        finally:
            app.close()


def _context(args: argparse.Namespace, source: Source = Source.SYSTEM) -> Context:
    return Context(actor=args.actor, source=source, idempotency_key=getattr(args, "idempotency_key", None))


def _print_json(value: Any, out: TextIO) -> None:
    out.write(_json.encode(value).decode() + "\n")


# ------------------------------------------------------------------------------------ db


def cmd_status(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """The default action: where the ledger keeps its data, and what to do next."""
    with open_database(settings) as target:
        Ledger(env=target.eventsourcing_env()).close()  # creates the tables on a first run
        info = check_connection(target)
    if args.json:
        _print_json(info, out)
        return 0
    where = (
        "embedded PostgreSQL in " + str(settings.embedded_pgdata)
        if not settings.database_url
        else "configured server"
    )
    out.write(
        f"ledger is ready: {where}\n"
        f"  server   {info.version.split(' on ')[0]} at {info.url}\n"
        f"  schema   {info.schema} (events table {info.events_table}: "
        f"{'present' if info.has_events_table else 'missing'})\n\n"
        "Next steps:\n"
        "  ledger accounts add --seller SELLER --marketplace amazon --name main\n"
        "  ledger import orders.json\n"
        "  ledger orders show ORDER_ID\n"
        "  ledger --help\n"
    )
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Serve the HTTP API (uvicorn, main thread) with the projection workers in threads, until SIGINT/SIGTERM."""
    import uvicorn  # noqa: PLC0415 - only `serve` needs the HTTP server
    from uvicorn.supervisors import Multiprocess  # noqa: PLC0415

    from ledger.api.app import create_app  # noqa: PLC0415
    from ledger.api.observability import configure_logging  # noqa: PLC0415
    from ledger.api.serving import export_target, graceful_seconds  # noqa: PLC0415

    configure_logging(settings.log_level)  # JSON lines to stderr; the app logs one line per request
    stop = threading.Event()
    server: uvicorn.Server | None = None

    def on_signal(*_: object) -> None:
        stop.set()
        if server is not None:
            server.should_exit = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    with open_database(settings) as target:
        Ledger(env=target.eventsourcing_env()).close()
        info = check_connection(target)
        url = f"http://{_url_host(args.host)}:{args.port}"
        out.write(
            f"ledger: serving {url} on {info.version.split(' on ')[0]} at {info.url} (schema {info.schema})\n"
            f"ledger: web page {url}/ (sign in with an API key); API docs {url}/schema; Ctrl-C stops\n"
            "ledger: first key: ledger keys create --seller SELLER --role admin\n"
        )
        out.flush()
        processes = max(args.processes, 1)
        if processes > 1:  # each worker process builds its own app on the database exported here
            export_target(target)
        config = uvicorn.Config(
            create_app(target) if processes == 1 else "ledger.api.serving:app_from_env",
            factory=processes > 1,
            workers=processes,
            host=args.host,
            port=args.port,
            log_level=settings.log_level.lower(),
            log_config=None,  # keep the JSON logging above
            access_log=False,  # the app's own request line replaces uvicorn's
            lifespan="on",
            timeout_graceful_shutdown=graceful_seconds(),  # SIGTERM: in-flight requests finish first
        )
        # uvicorn captures SIGINT/SIGTERM while it runs, then re-raises them to the handlers it found:
        # ours, so that a signal stops the workers too and never kills the process mid-cleanup.
        server = uvicorn.Server(config)
        server.should_exit = stop.is_set()
        workers: threading.Thread | None = None
        if not args.no_workers:
            workers = threading.Thread(
                target=_run_workers,
                args=(target, all_projections(), 2000, stop, out),
                name="projection-workers",
            )
            workers.start()
        sync: sync_cli.SyncThreads | None = None
        try:
            sync = sync_cli.start_sync(target, args, out)  # a bad sync setting stops the workers too
            if processes > 1:  # the supervisor forwards SIGINT/SIGTERM to the workers and waits for them
                Multiprocess(config, sockets=[config.bind_socket()]).run()
            else:
                server.run()  # handles SIGINT/SIGTERM itself: returns once the open requests are done
        finally:
            stop.set()
            if sync is not None:
                sync.stop()
            if workers is not None:
                workers.join()
        if processes == 1 and not server.started:
            out.write(f"ledger: could not listen on {args.host}:{args.port}\n")
            return EXIT_UNAVAILABLE
    out.write("ledger: stopped\n")
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# --------------------------------------------------------------------------- projections


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def cmd_worker(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Run projection workers until SIGINT/SIGTERM; each stops at a transaction boundary."""
    names = args.projection or [p.name for p in all_projections()]
    try:
        projections = [projection_named(name) for name in names]
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    stop = _stop_on_signals()
    with open_database(settings) as target:
        sync = sync_cli.start_sync(target, args, out)
        try:
            failed = _run_workers(target, projections, args.batch_size, stop, out)
        finally:
            if sync is not None:
                sync.stop()
    out.write("ledger: worker stopped\n")
    return EXIT_FAILED if failed else 0


def _run_workers(
    target: PostgresTarget, projections: list[Projection], batch_size: int, stop: threading.Event, out: TextIO
) -> bool:
    """One thread per projection, each elected by its advisory lock, until `stop` is set or one fails.
    Returns whether a worker failed (it said why on stderr)."""
    app = Ledger(env=target.eventsourcing_env())
    lock = threading.Lock()

    def announce(name: str) -> None:
        with lock:
            out.write(f"ledger: {name} active\n")
            out.flush()

    workers = [
        ProjectionWorker(
            p, lambda: connect(target), app.recorder, app.mapper, batch_size=batch_size, on_active=announce
        )
        for p in projections
    ]
    threads = [threading.Thread(target=w.run, name=f"worker-{w.projection.name}") for w in workers]
    for thread in threads:
        thread.start()
    names = ", ".join(p.name for p in projections)
    out.write(f"ledger: workers for {names} started (standby until elected)\n")
    out.flush()
    while not stop.wait(0.5):
        if any(worker.error for worker in workers):
            break
    for worker in workers:
        worker.stop()
    for thread in threads:
        thread.join()
    app.close()
    for worker in workers:
        if worker.error is not None:
            print(f"ledger: projection {worker.projection.name} stopped: {worker.error}", file=sys.stderr)
    return any(worker.error for worker in workers)


def cmd_projections_status(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    with open_database(settings) as target, connect(target) as conn:
        rows = projection_status(conn, all_projections())
    if args.json:
        _print_json([{**vars(r), "lag": r.lag} for r in rows], out)
        return 0
    out.write("projection   generation  position      head       lag  worker\n")
    for r in rows:
        worker = "active" if r.active_worker else "none"
        out.write(
            f"{r.name:<12} {r.generation or '-':>10} {r.position:>9} {r.head:>9} {r.lag:>9}  {worker}\n"
        )
    return 0


def cmd_projections_rebuild(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    try:
        projection = projection_named(args.name)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    label = f"rebuild {projection.name}"
    with (
        open_database(settings) as target,
        progress_bar(label, None, unit="events", out=out, tty=sys.stderr) as bar,
    ):
        app = Ledger(env=target.eventsourcing_env())
        try:
            generation, position = rebuild(
                projection, lambda: connect(target), app.recorder, app.mapper, progress=bar.update
            )
        finally:
            app.close()
    out.write(f"{projection.name}: generation {generation} is live at position {position}\n")
    return 0


# ------------------------------------------------------------------------------ accounts


def cmd_accounts_add(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    account = app.register_account(
        _context(args),
        seller=args.seller,
        marketplace=Marketplace(args.marketplace),
        name=args.name,
        fulfillment_managed=not args.third_party_managed,
        restock_in_ledger=args.restock_in_ledger,
    )
    if args.json:
        _print_json(account, out)
    else:
        out.write(
            f"{account.account_id}  {account.marketplace} account {account.name!r} of {account.seller}\n"
        )
    return 0


def cmd_accounts_list(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    accounts = app.list_accounts(args.seller)
    if args.json:
        _print_json(accounts, out)
        return 0
    if not accounts:
        out.write(f"seller {args.seller} has no accounts yet\n")
    for a in accounts:
        flags = [] if a.fulfillment_managed else ["third party managed"]
        flags += ["restock in ledger"] if a.restock_in_ledger else []
        out.write(f"{a.account_id}  {a.marketplace:<8} {a.name}  {', '.join(flags)}\n")
    return 0


def cmd_accounts_update(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    account = app.update_account(
        _context(args),
        args.account_id,
        name=args.name,
        fulfillment_managed=args.fulfillment_managed,
        restock_in_ledger=args.restock_in_ledger,
    )
    _print_json(account, out) if args.json else out.write(
        f"{account.account_id} is at version {account.version}\n"
    )
    return 0


# ---------------------------------------------------------------------------------- keys


def cmd_keys_create(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    """Make an API key; its secret is printed once and never stored."""
    secret, key = app.create_api_key(_context(args), seller=args.seller, role=Role(args.role), name=args.name)
    if args.json:
        _print_json({"key": secret, **msgspec.to_builtins(key)}, out)
        return 0
    label = f" {key.name!r}" if key.name else ""
    out.write(
        f"{secret}\n"
        f"  key {key.key_id}{label}: role {key.role} for seller {key.seller}\n"
        "  shown once: the ledger keeps only its hash. Send it as `Authorization: Bearer <key>`.\n"
    )
    return 0


def cmd_keys_list(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    keys = app.list_api_keys(args.seller)
    if args.json:
        _print_json(keys, out)
        return 0
    if not keys:
        out.write(f"seller {args.seller} has no API keys yet\n")
    for k in keys:
        state = "active" if k.active else f"revoked {k.revoked_at.isoformat() if k.revoked_at else ''}"
        out.write(f"{k.key_id}  {k.role:<11} {state:<8} created {k.created_at.isoformat()}  {k.name}\n")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    key = app.revoke_api_key(_context(args), args.key_id)
    if args.json:
        _print_json(key, out)
    else:
        out.write(f"{key.key_id} revoked\n")
    return 0


# -------------------------------------------------------------------------------- import


IMPORT_BATCH = 500  # orders per `Ledger.import_orders` call (its new orders are saved in one transaction)


def cmd_import(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    """Import orders from a JSON file in the API's import shape; one line of report per order."""
    try:
        data = Path(args.file).read_bytes() if args.file != "-" else sys.stdin.buffer.read()
    except OSError as e:
        raise UsageError(f"cannot read {args.file}: {e.strerror}") from None
    try:
        orders = decode_orders(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise UsageError(f"{args.file} is not a valid order file: {e}") from None
    ctx = _context(args, Source.IMPORT)
    report: list[dict[str, Any]] = []
    with progress_bar("import", len(orders), unit="orders", out=sys.stderr, tty=sys.stderr) as bar:
        for start in range(0, len(orders), IMPORT_BATCH):
            batch = orders[start : start + IMPORT_BATCH]
            items: list[ImportItem | LedgerError] = []
            for order in batch:
                try:
                    items.append(ImportItem(order.account_id, order.to_domain()))
                except LedgerError as e:
                    items.append(e)
            for offset, (order, result) in enumerate(
                zip(batch, app.import_orders(ctx, items, seller=args.seller), strict=True)
            ):
                row: dict[str, Any] = {
                    "index": start + offset,
                    "marketplace_order_id": order.marketplace_order_id,
                }
                if isinstance(result, LedgerError):
                    row["error"] = {"code": result.code, "message": result.message}
                else:
                    row |= {"order_id": result.order_id, "created": result.created, "events": result.events}
                report.append(row)
                bar.advance()
    failed = sum(1 for row in report if "error" in row)
    if args.json:
        _print_json(report, out)
    else:
        for row in report:
            out.write(_import_line(row))
        out.write(f"{len(orders) - failed} imported or unchanged, {failed} failed\n")
    return EXIT_FAILED if failed else 0


def _import_line(row: dict[str, Any]) -> str:
    head = f"[{row['index']}] {row['marketplace_order_id']}"
    if "error" in row:
        return f"{head}: error {row['error']['code']}: {row['error']['message']}\n"
    if row["created"]:
        return f"{head}: created {row['order_id']}\n"
    if row["events"]:
        return f"{head}: updated {row['order_id']} ({', '.join(row['events'])})\n"
    return f"{head}: unchanged {row['order_id']}\n"


# -------------------------------------------------------------------------------- orders


def cmd_orders_show(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    if args.version is not None or args.as_of is not None:
        order = app.order_as_of(args.order_id, version=args.version, at=args.as_of)
    else:
        order = app.get_order(args.order_id)
    if args.json:
        _print_json(order, out)
    else:
        _write_order(order, out)
    return 0


def cmd_orders_history(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    history = app.order_history(args.order_id)
    if args.json:
        _print_json(history, out)
        return 0
    for entry in history:
        _write_history_entry(entry, out)
    return 0


def _write_order(o: OrderDetails, out: TextIO) -> None:
    flags = [o.status, f"payment {o.payment_status}", "open" if o.open else "closed"]
    flags += ["third party managed"] if o.third_party_managed else []
    flags += [f"dispute {o.dispute_status}"] if o.dispute_status else []
    out.write(
        f"order {o.order_id}  {o.marketplace} {o.marketplace_order_id}  version {o.version}\n"
        f"  {', '.join(flags)}\n"
        f"  purchased {o.purchased_at.isoformat()} by {o.buyer.name} <{o.buyer.email}>\n"
        f"  total {o.total} {o.currency}, refunded {o.refunded_total} {o.currency}\n"
        "  line        sku                 qty  shipped  cancelled  refunded  restocked\n"
    )
    for line in o.lines:
        out.write(
            f"  {line.line_id:<11} {line.sku:<18} {line.quantity:>4} {line.shipped:>8} {line.cancelled:>10}"
            f" {line.refunded_quantity:>9} {line.restocked:>10}\n"
        )
    for s in o.shipments:
        out.write(
            f"  shipment {s.shipment_id}: {s.carrier} {s.tracking_number}{' (confirmed)' if s.confirmed else ''}\n"
        )
    for d in o.disputes:
        out.write(f"  dispute {d.dispute_id}: {d.kind}, {d.outcome or 'open'}\n")


def _write_history_entry(e: HistoryEntry, out: TextIO) -> None:
    when = e.recorded_at.isoformat()
    why = f" reason={e.reason}" if e.reason else ""
    out.write(f"v{e.version:<3} {when}  {e.type:<24} by {e.actor} via {e.source}{why}\n")
    out.write(f"     hash {e.hash} prev {e.prev_hash[:16]}...\n")


# -------------------------------------------------------------------------- order commands


def parse_line(text: str) -> LineQuantity:
    line_id, sep, quantity = text.rpartition(":")
    if not sep or not line_id:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LINE_ID:QUANTITY")
    try:
        return LineQuantity(line_id, int(quantity))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: quantity must be a whole number") from None


def parse_amount(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount") from None


def _report(result: Any, args: argparse.Namespace, out: TextIO) -> int:
    if args.json:
        _print_json(result, out)
        return 0
    replay = " (replayed: nothing new recorded)" if result.replayed else ""
    ids = "".join(f" {k}={v}" for k, v in result.ids.items())
    out.write(f"{result.order_id} version {result.version}: {', '.join(result.events)}{ids}{replay}\n")
    return 0


def cmd_ship(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    result = app.ship(
        _context(args),
        args.order_id,
        carrier=Carrier(args.carrier),
        tracking_number=args.tracking_number,
        shipping_class=args.shipping_class,
        shipped_at=args.shipped_at,
        lines=tuple(args.line) if args.line else None,
        expected_version=args.expected_version,
    )
    return _report(result, args, out)


def cmd_cancel(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    result = app.cancel(
        _context(args),
        args.order_id,
        reason=CancelReason(args.reason),
        lines=tuple(args.line) if args.line else None,
        restock_in_ledger=args.restock_in_ledger,
        expected_version=args.expected_version,
    )
    return _report(result, args, out)


def cmd_refund(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    lines = tuple(RefundRequestLine(item.line_id, item.quantity) for item in args.line) if args.line else None
    result = app.refund(
        _context(args),
        args.order_id,
        reason=RefundReason(args.reason),
        lines=lines,
        shipping_amount=args.shipping_amount,
        tax_amount=args.tax_amount,
        expected_version=args.expected_version,
    )
    return _report(result, args, out)


def cmd_dispute_open(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    result = app.open_dispute(
        _context(args), args.order_id, reason=args.reason, marketplace_dispute_id=args.marketplace_dispute_id
    )
    return _report(result, args, out)


def cmd_dispute_close(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    result = app.close_dispute(
        _context(args), args.order_id, dispute_id=args.dispute_id, outcome=DisputeOutcome(args.outcome)
    )
    return _report(result, args, out)


def cmd_restock(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    result = app.restock(_context(args), args.order_id, lines=tuple(args.line))
    return _report(result, args, out)


# -------------------------------------------------------------------------------- parser


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an id (a UUID)") from None


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. 2026-11-20T10:00:00Z")
    return value


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"port {port} is out of range")
    return port


def _processes(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes (1 to 64)")
    return int(text)


def _yes_no(text: str) -> bool:
    if text.lower() in {"yes", "true", "on", "1"}:
        return True
    if text.lower() in {"no", "false", "off", "0"}:
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: use yes or no")


Handler = Callable[[argparse.Namespace, Ledger, TextIO], int]


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - one declaration per option
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    common.add_argument("--actor", default=f"cli:{_user()}", help="who is acting (recorded on every event)")

    parser = argparse.ArgumentParser(
        prog="ledger",
        description="Event-sourced order ledger for multi-marketplace sellers. "
        "Without a command: start (or reach) the database and show its status.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(parent: Any, name: str, handler: Handler | None, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=help_text, parents=[common]
        )
        if handler is not None:
            p.set_defaults(handler=handler)
        return p

    serve = command(
        sub, "serve", None, "run the ledger in the foreground: the HTTP API, the database, projection workers"
    )
    serve.set_defaults(serve=True)
    serve.add_argument(
        "--no-workers", action="store_true", help="don't run projection workers in this process"
    )
    serve.add_argument(
        "--host",
        default=os.environ.get("LEDGER_HTTP_HOST") or "127.0.0.1",
        help="address to listen on (default: LEDGER_HTTP_HOST or 127.0.0.1)",
    )
    serve.add_argument(
        "--port",
        type=_port,
        default=os.environ.get("LEDGER_HTTP_PORT") or "8000",
        help="port to listen on (default: LEDGER_HTTP_PORT or 8000)",
    )
    serve.add_argument(
        "--processes",
        type=_processes,
        default=os.environ.get("LEDGER_HTTP_PROCESSES") or "1",
        help="HTTP server processes (default: LEDGER_HTTP_PROCESSES or 1); projection workers run once",
    )
    worker = command(sub, "worker", None, "run the projection workers (all, or --projection NAME...)")
    worker.set_defaults(settings_handler=cmd_worker)
    worker.add_argument("--projection", action="append", help="run only this projection (repeatable)")
    worker.add_argument("--batch-size", type=int, default=2000, help="most events per transaction")
    projections = command(sub, "projections", None, "the read models and their progress")
    proj_sub = projections.add_subparsers(dest="projections_command", metavar="COMMAND", required=True)
    command(proj_sub, "status", None, "position, head of the log and lag of each projection").set_defaults(
        settings_handler=cmd_projections_status
    )
    rebuild_parser = command(
        proj_sub, "rebuild", None, "rebuild a projection from the start, then swap it in"
    )
    rebuild_parser.set_defaults(settings_handler=cmd_projections_rebuild)
    rebuild_parser.add_argument("name", help="all_sales, outbound, refunds or inventory")
    db = command(sub, "db", None, "the PostgreSQL the ledger uses")
    db_sub = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    command(db_sub, "status", None, "where the data lives, server version, tables").set_defaults(status=True)

    accounts = command(sub, "accounts", None, "marketplace accounts of a seller")
    acc_sub = accounts.add_subparsers(dest="accounts_command", metavar="COMMAND", required=True)
    add = command(acc_sub, "add", cmd_accounts_add, "register a marketplace account")
    add.add_argument("--seller", required=True)
    add.add_argument("--marketplace", required=True, choices=[m.value for m in Marketplace])
    add.add_argument("--name", required=True)
    add.add_argument(
        "--third-party-managed",
        action="store_true",
        help="fulfilment happens outside the ledger: orders import as Third Party Managed, nothing is sent",
    )
    add.add_argument(
        "--restock-in-ledger", action="store_true", help="cancellations restock the ledger by default"
    )
    lst = command(acc_sub, "list", cmd_accounts_list, "list a seller's accounts")
    lst.add_argument("--seller", required=True)
    upd = command(acc_sub, "update", cmd_accounts_update, "change an account's settings")
    upd.add_argument("account_id", type=_uuid)
    upd.add_argument("--name")
    upd.add_argument("--fulfillment-managed", type=_yes_no, metavar="yes|no")
    upd.add_argument("--restock-in-ledger", type=_yes_no, metavar="yes|no")

    keys = command(sub, "keys", None, "API keys of a seller (the HTTP API's Bearer keys)")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    kcreate = command(keys_sub, "create", cmd_keys_create, "make a key; prints its secret once")
    kcreate.add_argument("--seller", required=True)
    kcreate.add_argument("--role", required=True, choices=[r.value for r in Role])
    kcreate.add_argument("--name", default="", help="a label (recorded as the actor of the key's changes)")
    klist = command(keys_sub, "list", cmd_keys_list, "list a seller's keys (never their secrets)")
    klist.add_argument("--seller", required=True)
    krevoke = command(keys_sub, "revoke", cmd_keys_revoke, "revoke a key: it stops working at once")
    krevoke.add_argument("key_id", type=_uuid)

    imp = command(sub, "import", cmd_import, "import orders from a JSON file in the API's import shape")
    imp.add_argument("file", nargs="?", help="path to the JSON file, or - for standard input")
    imp.add_argument("--seller", help="refuse accounts of any other seller")

    orders = command(sub, "orders", None, "read and change orders")
    ord_sub = orders.add_subparsers(dest="orders_command", metavar="COMMAND", required=True)
    show = command(ord_sub, "show", cmd_orders_show, "an order's current (or past) state")
    show.add_argument("order_id", type=_uuid)
    show.add_argument("--version", type=int, help="the order as it stood at this version")
    show.add_argument("--as-of", type=_time, help="the order as it stood at this time (ISO 8601 with zone)")
    hist = command(ord_sub, "history", cmd_orders_history, "every event of an order, with its hash chain")
    hist.add_argument("order_id", type=_uuid)

    def order_command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = command(ord_sub, name, handler, help_text)
        p.add_argument("order_id", type=_uuid)
        p.add_argument("--idempotency-key", help="the same key again replays the first result")
        p.add_argument("--expected-version", type=int, help="refuse if the order is not at this version")
        return p

    ship = order_command("ship", cmd_ship, "record a shipment")
    ship.add_argument("--carrier", required=True, choices=[c.value for c in Carrier])
    ship.add_argument("--tracking-number", required=True)
    ship.add_argument("--shipping-class", default="")
    ship.add_argument("--shipped-at", type=_time, help="default: now")
    ship.add_argument(
        "--line", type=parse_line, action="append", help="LINE_ID:QUANTITY (default: all unshipped)"
    )
    cancel = order_command("cancel", cmd_cancel, "cancel unshipped units")
    cancel.add_argument("--reason", required=True, choices=[r.value for r in CancelReason])
    cancel.add_argument(
        "--line", type=parse_line, action="append", help="LINE_ID:QUANTITY (default: all unshipped)"
    )
    cancel.add_argument(
        "--restock-in-ledger", type=_yes_no, metavar="yes|no", help="default: the account's setting"
    )
    refund = order_command("refund", cmd_refund, "refund shipped units or amounts")
    refund.add_argument("--reason", required=True, choices=[r.value for r in RefundReason])
    refund.add_argument(
        "--line", type=parse_line, action="append", help="LINE_ID:QUANTITY (default: everything)"
    )
    refund.add_argument("--shipping-amount", type=parse_amount, default=Decimal(0))
    refund.add_argument("--tax-amount", type=parse_amount, default=Decimal(0))
    dopen = order_command("open-dispute", cmd_dispute_open, "record a buyer's dispute")
    dopen.add_argument("--reason", required=True)
    dopen.add_argument("--marketplace-dispute-id")
    dclose = order_command("close-dispute", cmd_dispute_close, "close a dispute with its outcome")
    dclose.add_argument("dispute_id", type=_uuid)
    dclose.add_argument("--outcome", required=True, choices=[o.value for o in DisputeOutcome])
    restock = order_command("restock", cmd_restock, "put cancelled or returned units back in stock")
    restock.add_argument("--line", type=parse_line, action="append", required=True, help="LINE_ID:QUANTITY")

    # --- auditing ---
    verify = command(sub, "verify", None, "recompute hash chains and checkpoints from the stored events")
    verify.set_defaults(settings_handler=audit_cli.cmd_verify)
    scope = verify.add_mutually_exclusive_group()
    scope.add_argument("--order", type=_uuid, help="verify one order's chain")
    scope.add_argument("--all", action="store_true", help="every order and checkpoint (the default)")
    verify.add_argument(
        "--no-checkpoint", action="store_true", help="don't seal new checkpoints after a clean --all"
    )
    command(sub, "checkpoint", None, "seal the events recorded since the last checkpoint").set_defaults(
        settings_handler=audit_cli.cmd_checkpoint
    )
    report = command(sub, "report", None, "reports rebuilt from the events")
    report_sub = report.add_subparsers(dest="report_command", metavar="COMMAND", required=True)
    as_of = command(
        report_sub, "all-sales", None, "a seller's All Sales list as it stood at a time, from the events"
    )
    as_of.set_defaults(settings_handler=audit_cli.cmd_report_all_sales)
    as_of.add_argument("--seller", required=True)
    as_of.add_argument("--as-of", type=_time, help="ISO 8601 time with a zone (default: now)")
    as_of.add_argument("--format", choices=["csv", "json"], default="csv")
    privacy = command(sub, "privacy", None, "buyers' personal data")
    privacy_sub = privacy.add_subparsers(dest="privacy_command", metavar="COMMAND", required=True)
    forget = command(
        privacy_sub, "forget", None, "destroy a buyer's key: their name, email and address read as erased"
    )
    forget.set_defaults(settings_handler=audit_cli.cmd_privacy_forget)
    forget.add_argument("--buyer", required=True, metavar="EMAIL")
    forget.add_argument("--seller", required=True)
    # --- finance ---
    from ledger.cli.finance import add_finance_commands  # noqa: PLC0415 - the finance commands' own module

    add_finance_commands(sub, command, _uuid)
    # --- web page and bulk shipping ---
    cli_bulk.add_parser(sub, command)
    # --- marketplaces: import, dispatch, sync ---
    sync_cli.add_commands(sub, command, imp, serve, worker)
    # --- sandbox marketplaces: a development tool outside the product's import graph, loaded here only ---
    from ledger_sandbox import cli as sandbox_cli  # noqa: PLC0415

    sandbox_cli.add_command(sub)
    return parser


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        handler: Handler | None = getattr(args, "handler", None)
        if getattr(args, "serve", False):
            return cmd_serve(args, settings, out)
        settings_handler = getattr(args, "settings_handler", None)
        if settings_handler is not None:
            return int(settings_handler(args, settings, out))
        if handler is None:
            return cmd_status(args, settings, out)
        with open_ledger(settings) as app:
            return handler(args, app, out)
    except LedgerError as e:
        print(f"ledger: {e.code}: {e.message}", file=sys.stderr)
        return EXIT_FAILED
    except UsageError as e:
        print(f"ledger: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, DatabaseUnavailableError) as e:
        print(f"ledger: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (PersistenceError, psycopg.OperationalError) as e:
        print(f"ledger: the database is unavailable: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader (e.g. `| head`) went away: nothing left to say
        sys.stderr.close()
        return 0

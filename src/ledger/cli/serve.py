"""`ledger serve` (the HTTP API with the projection workers and the marketplace sync in threads) and
`ledger worker` (the projection workers alone)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any, TextIO

from ledger.application.ledger import Ledger
from ledger.audit.keys import load_trust
from ledger.cli.audit import no_sealer, start_sealer
from ledger.cli.common import EXIT_FAILED, EXIT_UNAVAILABLE, Command, UsageError, stop_on_signals
from ledger.cli.sync import SyncThreads, start_sync
from ledger.config import Settings
from ledger.eventstore.database import (
    PostgresTarget,
    ServerInfo,
    check_connection,
    connect,
    open_database,
    read_replica,
)
from ledger.eventstore.supervisor import supervised
from ledger.feed.dispatcher import WebhookDispatcher
from ledger.feed.urls import UrlPolicy
from ledger.projections.base import Projection, ProjectionWorker
from ledger.projections.registry import all_projections, projection_named

HTTP_PARSER = "httptools"
EVENT_LOOP = "uvloop"
"""`ledger serve`'s HTTP stack: uvicorn with httptools and uvloop (not h11 and asyncio's loop), measured the
cheapest per command of the stacks compared (BENCHMARKS.md, issue 17 target 1)."""


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
    trust = load_trust(settings)  # the first start makes the signing key, outside the database
    with open_database(settings) as target, supervised(settings):  # a dead embedded server is restarted
        Ledger(env=target.eventsourcing_env()).close()
        info = check_connection(target)
        replica = read_replica(settings)
        url = f"http://{_url_host(args.host)}:{args.port}"
        _announce(out, url, info, replica)
        processes = max(args.processes, 1)
        if processes > 1:  # each worker process builds its own app on the database exported here
            export_target(target)
        config = uvicorn.Config(
            create_app(
                target,
                audit_trust=trust,
                web_session_ttl=settings.web_session_ttl,
                webhook_urls=UrlPolicy.of(settings),
                replica=replica,
                settle_heap=True,
            )
            if processes == 1
            else "ledger.api.serving:app_from_env",
            factory=processes > 1,
            workers=processes,
            host=args.host,
            port=args.port,
            http=HTTP_PARSER,
            loop=EVENT_LOOP,
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
        stop_sealer = no_sealer if args.no_workers else start_sealer(target, settings, trust, out)
        if not args.no_workers:
            workers = threading.Thread(
                target=run_workers,
                args=(target, all_projections(), 2000, stop, out, webhook_policy(args, settings)),
                name="projection-workers",
            )
            workers.start()
        sync: SyncThreads | None = None
        try:
            sync = start_sync(target, args, out)  # a bad sync setting stops the workers too
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
            stop_sealer()
        if processes == 1 and not server.started:
            out.write(f"ledger: could not listen on {args.host}:{args.port}\n")
            return EXIT_UNAVAILABLE
    out.write("ledger: stopped\n")
    return 0


def _announce(out: TextIO, url: str, info: ServerInfo, replica: PostgresTarget | None) -> None:
    out.write(
        f"ledger: serving {url} on {info.version.split(' on ')[0]} at {info.url} (schema {info.schema})\n"
    )
    if replica is not None:
        out.write(f"ledger: All Sales, order reads and the change feed read from {replica.redacted_url()}\n")
    out.write(
        f"ledger: web page {url}/ (sign in with an API key); API docs {url}/schema; Ctrl-C stops\n"
        "ledger: first key: ledger keys create --seller SELLER --role admin\n"
    )
    out.flush()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def cmd_worker(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Run projection workers until SIGINT/SIGTERM; each stops at a transaction boundary."""
    names = args.projection or [p.name for p in all_projections()]
    try:
        projections = [projection_named(name) for name in names]
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    stop = stop_on_signals()
    trust = load_trust(settings)
    with open_database(settings) as target:
        sync = start_sync(target, args, out)
        stop_sealer = start_sealer(target, settings, trust, out)
        try:
            failed = run_workers(
                target, projections, args.batch_size, stop, out, webhook_policy(args, settings)
            )
        finally:
            stop_sealer()
            if sync is not None:
                sync.stop()
    out.write("ledger: worker stopped\n")
    return EXIT_FAILED if failed else 0


def webhook_policy(args: argparse.Namespace, settings: Settings) -> UrlPolicy | None:
    """The webhook URLs the dispatcher may call; None with `--no-webhooks` (no dispatcher in this process)."""
    return None if args.no_webhooks else UrlPolicy.of(settings)


def run_workers(
    target: PostgresTarget,
    projections: list[Projection],
    batch_size: int,
    stop: threading.Event,
    out: TextIO,
    webhooks: UrlPolicy | None = None,
) -> bool:
    """One thread per projection, each elected by its advisory lock, and (given a URL policy) the webhook
    dispatcher's threads, until `stop` is set or a worker fails. Returns whether a worker failed (it said why
    on stderr)."""
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
    dispatcher = None
    if webhooks is not None:  # it decodes events as the workers do, with their Ledger
        dispatcher = WebhookDispatcher(lambda: connect(target), app.mapper, app.personal_data, webhooks)
        dispatcher.start()
        out.write("ledger: webhook dispatcher running\n")
    out.flush()
    while not stop.wait(0.5):
        if any(worker.error for worker in workers):
            break
    if dispatcher is not None:
        dispatcher.stop()
    for worker in workers:
        worker.stop()
    for thread in threads:
        thread.join()
    app.close()
    for worker in workers:
        if worker.error is not None:
            print(f"ledger: projection {worker.projection.name} stopped: {worker.error}", file=sys.stderr)
    return any(worker.error for worker in workers)


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


def add_commands(sub: Any, command: Command) -> None:
    """`serve` and `worker`."""
    serve = command(
        sub, "serve", None, "run the ledger in the foreground: the HTTP API, the database, projection workers"
    )
    serve.set_defaults(settings_handler=cmd_serve)
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
    for parser in (serve, worker):
        parser.add_argument(
            "--no-sync", action="store_true", help="don't import from or send to marketplaces in this process"
        )
        parser.add_argument(
            "--no-webhooks",
            action="store_true",
            help="don't deliver webhooks from this process (serve --no-workers never does)",
        )

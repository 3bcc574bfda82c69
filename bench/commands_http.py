"""Order commands over HTTP: ship/cancel/refund through `ledger serve`, beside the stack's ceiling and the
library's straightforward path, in the same run, on the same server settings.

    python bench/commands_http.py [--commands 1500] [--runs 3] [--clients 16] [--processes 1] [--server NAME]

Variants (each its own server process, one process unless --processes, the same DB pool size):
- `ceiling`: a minimal Litestar endpoint that does one durable INSERT per request (autocommit).
- `library`: a minimal Litestar endpoint doing the library's straightforward path: load the order with the
  repository, run the command, `Application.save` (one transaction and one table lock per request).
- `ledger`: `ledger serve --no-workers` (auth, validation, idempotency checks, metrics, group commit).
- `ledger-no-group`: the same with LEDGER_GROUP_COMMIT=n (the design's "before").
- `ledger-2p` (only when named in --variants): `ledger serve --no-workers --processes 2`, so that one and two
  server processes are measured interleaved in the same run.
The clients are asyncio tasks speaking HTTP/1.1 keep-alive over raw sockets (cheap, so they steal little CPU
from the server); every request gets a fresh order, so commands do not conflict. synchronous_commit stays on
(checked and reported). Besides commands/s, each variant's server CPU (user + system of the process and its
children, from /proc) per request is reported, and its ratio to the ceiling's: on a shared machine it moves
much less than the rate. `--server` runs every variant on one HTTP stack (`h11`: uvicorn with h11 and asyncio;
`httptools`: uvicorn with httptools and uvloop; `granian`), the ledger app through `ledger.api.serving`; without
it, the ceiling and library run on `ledger serve`'s own stack and `ledger` is `ledger serve`. Uses LEDGER_DATABASE_URL when set, else an embedded PostgreSQL in a temporary
directory; works in a schema of its own, dropped at the end. Prints one JSON object (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID

import psycopg
from psycopg import sql

from ledger.aggregates.order import Order
from ledger.aggregates.values import (
    Buyer,
    CancelReason,
    Carrier,
    Context,
    ImportedOrder,
    Marketplace,
    OrderLine,
    PaymentStatus,
    RefundReason,
    Role,
)
from ledger.application.ledger import Ledger
from ledger.config import Settings
from ledger.eventstore.database import EmbeddedPostgres, PostgresTarget, ensure_schema, parse_database_url

CTX = Context(actor="bench")
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
UPS = "1Z999AA10123456784"
POOL_SIZE = 16
VARIANTS = ("ceiling", "library", "ledger", "ledger-no-group")
EXTRA_VARIANTS = ("ledger-2p",)  # `ledger serve --processes 2`, beside one process in the same run
SERVERS = ("h11", "httptools", "granian")
LEDGER_SERVE_STACK = "httptools"  # the stack `ledger serve` runs on (ledger.cli.serve.HTTP_PARSER)
SHIP = json.dumps({"carrier": "ups", "tracking_number": UPS}).encode()
CANCEL = json.dumps({"reason": "buyer_cancelled"}).encode()
REFUND = json.dumps({"reason": "customer_return"}).encode()


# ------------------------------------------------------------------------------------------ servers


def ceiling_app(target: PostgresTarget) -> Any:
    """One durable INSERT per request, through a pool of the same size, nothing else."""
    from litestar import Litestar, post  # noqa: PLC0415
    from psycopg_pool import ConnectionPool  # noqa: PLC0415

    from ledger.api.app import read_pool  # noqa: PLC0415

    pool: ConnectionPool[Any] = read_pool(target)

    @post("/ceiling/{order_id:uuid}", sync_to_thread=True, status_code=201)
    def insert(order_id: UUID, data: dict[str, Any]) -> dict[str, Any]:
        with pool.connection() as conn:
            conn.execute(
                "INSERT INTO bench_ceiling (order_id, body) VALUES (%s, %s)", (order_id, json.dumps(data))
            )
        return {"order_id": str(order_id)}

    return Litestar([insert], on_startup=[pool.open], on_shutdown=[pool.close])


def library_app(target: PostgresTarget) -> Any:
    """The library's straightforward path: repository.get, the command, Application.save, per request."""
    from litestar import Litestar, post  # noqa: PLC0415

    env = {**target.eventsourcing_env(), "LEDGER_GROUP_COMMIT": "n"}
    app = Ledger(env=env)
    assert app.committer is None
    restock = {}

    @post("/library/{order_id:uuid}/{command:str}", sync_to_thread=True, status_code=201)
    def run(order_id: UUID, command: str, data: dict[str, Any]) -> dict[str, Any]:
        order: Order = app.repository.get(order_id)
        now = datetime.now(UTC)
        if command == "shipments":
            order.ship(
                CTX,
                carrier=Carrier(data["carrier"]),
                tracking_number=data["tracking_number"],
                shipped_at=now,
                now=now,
            )
        elif command == "cancellations":
            if order.account_id not in restock:
                restock[order.account_id] = app.repository.get(order.account_id).restock_in_ledger
            order.cancel(
                CTX, reason=CancelReason(data["reason"]), now=now, restock_in_ledger=restock[order.account_id]
            )
        else:
            order.refund(CTX, reason=RefundReason(data["reason"]), lines=None)
        recordings = app.save(order)
        return {
            "order_id": str(order_id),
            "version": order.version,
            "position": recordings[-1].notification.id,
        }

    return Litestar([run], on_shutdown=[app.close])


def app_for(variant: str) -> Any:
    """The ASGI app of one variant, from the environment `start_server` prepared."""
    if variant.startswith("ledger"):
        from ledger.api.observability import configure_logging  # noqa: PLC0415
        from ledger.api.serving import app_from_env  # noqa: PLC0415

        configure_logging("WARNING")
        return app_from_env()
    settings = Settings.from_env()
    assert settings.database_url
    target = parse_database_url(settings.database_url, settings.database_schema, pool_size=settings.pool_size)
    return ceiling_app(target) if variant == "ceiling" else library_app(target)


def granian_app() -> Any:
    """Granian's factory (it imports its target in its worker process): the variant in BENCH_VARIANT."""
    return app_for(os.environ["BENCH_VARIANT"])


def serve(variant: str, port: int, server: str) -> None:
    """Run one variant's server (a subprocess of the benchmark) on one HTTP stack until SIGTERM."""
    if server == "granian":
        from granian.constants import Interfaces  # noqa: PLC0415
        from granian.server import Server  # noqa: PLC0415

        os.environ["BENCH_VARIANT"] = variant
        sys.path.insert(0, str(Path(__file__).parent))
        Server(
            "commands_http:granian_app",
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGI,
            factory=True,
            log_access=False,
        ).serve()
        return
    import uvicorn  # noqa: PLC0415

    fast = server == "httptools"
    uvicorn.run(
        app_for(variant),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        log_config=None,
        http="httptools" if fast else "h11",
        loop="uvloop" if fast else "asyncio",
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its direct children (the server's workers), from /proc."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0.0
    for p in [pid, *map(int, children)]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


# ------------------------------------------------------------------------------------------ clients


@dataclasses.dataclass
class Request:
    path: str
    body: bytes
    headers: str


async def client(
    port: int, requests: asyncio.Queue[Request], latencies: list[float], errors: list[str]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            try:
                req = requests.get_nowait()
            except asyncio.QueueEmpty:
                return
            head = (
                f"POST {req.path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(req.body)}\r\n{req.headers}\r\n"
            )
            t0 = time.perf_counter()
            writer.write(head.encode() + req.body)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            status = int(status_line.split()[1])
            if status >= 300:
                errors.append(f"{status} {body[:200]!r}")
    finally:
        writer.close()


async def load(port: int, requests: list[Request], clients: int) -> dict[str, Any]:
    queue: asyncio.Queue[Request] = asyncio.Queue()
    for req in requests:
        queue.put_nowait(req)
    latencies: list[float] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    await asyncio.gather(*(client(port, queue, latencies, errors) for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "requests": len(latencies),
        "per_s": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(int(len(latencies) * 0.99), len(latencies) - 1)] * 1000,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


# ------------------------------------------------------------------------------------------ data


def make_orders(app: Ledger, count: int, seller: str) -> list[tuple[UUID, str]]:
    """`count` paid orders, each with the command it will get: 3 in 5 shipped, 1 cancelled, 1 refunded
    (orders to refund are shipped here first)."""
    account = app.register_account(
        CTX, seller=seller, marketplace=Marketplace.WALMART, name=f"bench-{secrets.token_hex(3)}"
    )
    plan: list[tuple[UUID, str]] = []
    batch: list[Order] = []
    for i in range(count):
        order = Order.import_order(
            CTX,
            seller=seller,
            account_id=account.account_id,
            marketplace=Marketplace.WALMART,
            order=ImportedOrder(
                f"C-{secrets.token_hex(6)}",
                NOW - timedelta(minutes=i),
                "USD",
                PaymentStatus.PAID,
                Buyer(f"Buyer {i}", f"buyer{i}@example.com"),
                (OrderLine("1", f"SKU-{i % 50}", 1, Decimal("19.99"), Decimal("1.60")),),
            ),
            third_party_managed=False,
        )
        kind = ("shipments", "shipments", "shipments", "cancellations", "refunds")[i % 5]
        if kind == "refunds":
            order.ship(CTX, carrier=Carrier.UPS, tracking_number=UPS, shipped_at=NOW, now=NOW)
        plan.append((order.id, kind))
        batch.append(order)
        if len(batch) == 500:
            app.save(*batch)
            batch = []
    if batch:
        app.save(*batch)
    return plan


def requests_for(variant: str, plan: list[tuple[UUID, str]], auth: str) -> list[Request]:
    bodies = {"shipments": SHIP, "cancellations": CANCEL, "refunds": REFUND}
    if variant == "ceiling":
        return [Request(f"/ceiling/{o}", bodies[k], "") for o, k in plan]
    if variant == "library":
        return [Request(f"/library/{o}/{k}", bodies[k], "") for o, k in plan]
    headers = f"Authorization: Bearer {auth}\r\n"
    return [Request(f"/v1/orders/{o}/{k}", bodies[k], headers) for o, k in plan]


# ------------------------------------------------------------------------------------------ runs


def database_url(target: PostgresTarget) -> str:
    auth = (
        quote(target.user, safe="") + (f":{quote(target.password, safe='')}" if target.password else "") + "@"
    )
    if target.is_unix_socket:
        return f"postgresql://{auth}/{quote(target.dbname, safe='')}?host={target.host}&port={target.port}"
    return f"postgresql://{auth}{target.host}:{target.port}/{quote(target.dbname, safe='')}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    variant: str, target: PostgresTarget, processes: int, server: str | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """`server` None: the ceiling and library on `ledger serve`'s stack, `ledger` as `ledger serve`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | {
        "LEDGER_DATABASE_URL": database_url(target),
        "LEDGER_DATABASE_SCHEMA": target.schema,
        "LEDGER_DB_POOL_SIZE": str(POOL_SIZE),
        "LEDGER_LOG_LEVEL": "WARNING",
    }
    if variant == "ledger-no-group":
        env["LEDGER_GROUP_COMMIT"] = "n"
    if variant == "ledger-2p" and server is not None:
        raise ValueError("ledger-2p is `ledger serve --processes 2`, on its own stack: no --server or @STACK")
    if variant in ("ceiling", "library") or server is not None:
        stack = server or LEDGER_SERVE_STACK
        cmd = [sys.executable, __file__, "--serve", variant, "--server", stack, "--port", str(port)]
    else:
        cmd = [sys.executable, "-m", "ledger.cli", "serve", "--no-workers", "--port", str(port)]
        if variant == "ledger-2p":
            processes = 2
        if processes > 1:
            cmd += ["--processes", str(processes)]
    log = tempfile.TemporaryFile()  # noqa: SIM115 - the server's stderr, told when it does not start
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        cmd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                time.sleep(0.5)  # the lifespan opens the pools
                return proc, port
        except OSError:
            if proc.poll() is not None:
                log.seek(0)
                tail = log.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"the {variant} server exited with {proc.returncode}:\n{tail}") from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the {variant} server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_variant(
    variant: str, target: PostgresTarget, args: argparse.Namespace, plan: list[tuple[UUID, str]], secret: str
) -> dict[str, Any]:
    """One variant's server under the load: 100 requests of warm-up, then the rest, timed and CPU-counted.
    A variant may name its stack after `@` (`ledger@granian`), overriding --server."""
    kind, _, stack = variant.partition("@")
    proc, port = start_server(kind, target, args.processes, stack or args.server)
    try:
        asyncio.run(load(port, requests_for(kind, plan[:100], secret), args.clients))
        before = cpu_seconds(proc.pid)
        figures = asyncio.run(load(port, requests_for(kind, plan[100:], secret), args.clients))
        figures["cpu_ms"] = (cpu_seconds(proc.pid) - before) / figures["requests"] * 1000
    finally:
        stop_server(proc)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=1500, help="requests per variant per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--processes", type=int, default=1, help="server processes of `ledger serve`")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated; VARIANT@STACK picks the stack of one"
    )
    parser.add_argument(
        "--server", choices=SERVERS, help="run every variant on this HTTP stack (default: ledger serve's)"
    )
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)  # one process each
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.server or LEDGER_SERVE_STACK)
        return
    if args.server is not None and args.processes > 1:
        parser.error("--server runs one process; --processes is for `ledger serve`")
    variants = [v for v in args.variants.split(",") if v]
    settings = Settings.from_env()
    with ExitStack() as stack:
        schema = f"bench_{secrets.token_hex(4)}"
        if settings.database_url:
            target = parse_database_url(settings.database_url, schema, pool_size=POOL_SIZE)
        else:
            data = Path(tempfile.mkdtemp(prefix="ledger-bench-", dir="/tmp"))
            stack.callback(shutil.rmtree, data, ignore_errors=True)  # after the server below has stopped
            target = dataclasses.replace(stack.enter_context(EmbeddedPostgres(data)), schema=schema)
        ensure_schema(target)
        stack.callback(_drop_schema, target)
        app = Ledger(env=target.eventsourcing_env())
        stack.callback(app.close)
        seller = f"bench-{secrets.token_hex(3)}"
        secret, _ = app.create_api_key(CTX, seller=seller, role=Role.OPERATOR, name="bench")
        with psycopg.connect(target.conninfo(), autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {}.bench_ceiling (id bigserial PRIMARY KEY, order_id uuid, body jsonb)"
                ).format(sql.Identifier(schema))
            )
            sync_commit = conn.execute("SHOW synchronous_commit").fetchone()
            fsync = conn.execute("SHOW fsync").fetchone()
            version = conn.execute("SHOW server_version").fetchone()
        results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        for run in range(args.runs):
            for variant in variants:  # interleaved, so that the machine's noise spreads over all of them
                plan = make_orders(app, args.commands, seller)
                figures = run_variant(variant, target, args, plan, secret)
                results[variant].append(figures)
                print(f"run {run} {variant}: {figures}", file=sys.stderr)

        summary, ratios = summarize(results, variants)
        result = {
            "benchmark": "order commands over HTTP",
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "postgres": version[0] if version else None,
                "synchronous_commit": sync_commit[0] if sync_commit else None,
                "fsync": fsync[0] if fsync else None,
            },
            "clients": args.clients,
            "processes": args.processes,
            "server": args.server or f"ledger serve's ({LEDGER_SERVE_STACK})",
            "commands_per_run": args.commands - 100,
            "runs": args.runs,
            "mix": "3/5 ship, 1/5 cancel, 1/5 refund; one order per request",
            "summary": summary,
            "ratios": ratios,
            "target": "ledger >= 0.75 x ceiling's commands/s; ledger's CPU per request <= 1.5 x ceiling's",
            "raw": results,
        }
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")


def summarize(
    results: dict[str, list[dict[str, Any]]], variants: list[str]
) -> tuple[dict[str, Any], dict[str, float]]:
    """Medians per variant, and each variant's median rate over the ceiling's and the library's."""

    def med(variant: str, key: str) -> float:
        return round(statistics.median(r[key] for r in results[variant]), 1)

    summary = {
        v: {
            "per_s_median": med(v, "per_s"),
            "per_s_runs": [round(r["per_s"], 1) for r in results[v]],
            "p50_ms_median": med(v, "p50_ms"),
            "p99_ms_median": med(v, "p99_ms"),
            "cpu_ms_per_request_median": round(statistics.median(r["cpu_ms"] for r in results[v]), 3),
            "cpu_ms_per_request_runs": [round(r["cpu_ms"], 3) for r in results[v]],
            "errors": sum(r["errors"] for r in results[v]),
        }
        for v in variants
    }
    ratios: dict[str, float] = {}
    for v in variants:  # each variant beside the ceiling on the same stack
        _, at, stack = v.partition("@")
        ceiling = summary.get(f"ceiling{at}{stack}")
        if ceiling is not None:
            ratios[f"{v}_to_ceiling"] = round(summary[v]["per_s_median"] / ceiling["per_s_median"], 3)
            ratios[f"{v}_cpu_to_ceiling"] = round(
                summary[v]["cpu_ms_per_request_median"] / ceiling["cpu_ms_per_request_median"], 3
            )
    if "library" in summary:
        for v in variants:
            ratios[f"{v}_to_library"] = round(
                summary[v]["per_s_median"] / summary["library"]["per_s_median"], 3
            )
    return summary, ratios


def _drop_schema(target: PostgresTarget) -> None:
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema)))


if __name__ == "__main__":
    main()

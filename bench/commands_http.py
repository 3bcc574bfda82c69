"""Order commands over HTTP: ship/cancel/refund through `ledger serve`, beside the stack's ceiling and the
library's straightforward path, in the same run, on the same server settings.

    python bench/commands_http.py [--commands 1500] [--runs 3] [--clients 16] [--processes 1]

Variants (each its own server process: uvicorn, one process unless --processes, the same DB pool size):
- `ceiling`: a minimal Litestar endpoint that does one durable INSERT per request (autocommit).
- `library`: a minimal Litestar endpoint doing the library's straightforward path: load the order with the
  repository, run the command, `Application.save` (one transaction and one table lock per request).
- `ledger`: `ledger serve --no-workers` (auth, validation, idempotency checks, metrics, group commit).
- `ledger-no-group`: the same with LEDGER_GROUP_COMMIT=n (the design's "before").
- `ledger-2p` (only when named in --variants): `ledger serve --no-workers --processes 2`, so that one and two
  server processes are measured interleaved in the same run.
The clients are asyncio tasks speaking HTTP/1.1 keep-alive over raw sockets (cheap, so they steal little CPU
from the server); every request gets a fresh order, so commands do not conflict. synchronous_commit stays on
(checked and reported). Uses LEDGER_DATABASE_URL when set, else an embedded PostgreSQL in a temporary
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


def serve(variant: str, port: int) -> None:
    """Run one of the minimal servers (a subprocess of the benchmark) until SIGTERM."""
    import uvicorn  # noqa: PLC0415

    settings = Settings.from_env()
    assert settings.database_url
    target = parse_database_url(settings.database_url, settings.database_schema, pool_size=settings.pool_size)
    app = ceiling_app(target) if variant == "ceiling" else library_app(target)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


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


def start_server(variant: str, target: PostgresTarget, processes: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | {
        "LEDGER_DATABASE_URL": database_url(target),
        "LEDGER_DATABASE_SCHEMA": target.schema,
        "LEDGER_DB_POOL_SIZE": str(POOL_SIZE),
        "LEDGER_LOG_LEVEL": "WARNING",
    }
    if variant in ("ceiling", "library"):
        cmd = [sys.executable, __file__, "--serve", variant, "--port", str(port)]
    else:
        cmd = [sys.executable, "-m", "ledger.cli", "serve", "--no-workers", "--port", str(port)]
        if variant == "ledger-2p":
            processes = 2
        if processes > 1:
            cmd += ["--processes", str(processes)]
        if variant == "ledger-no-group":
            env["LEDGER_GROUP_COMMIT"] = "n"
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        cmd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                time.sleep(0.5)  # the lifespan opens the pools
                return proc, port
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the {variant} server exited with {proc.returncode}") from None
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=1500, help="requests per variant per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--processes", type=int, default=1, help="server processes of `ledger serve`")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--serve", choices=["ceiling", "library"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
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
                proc, port = start_server(variant, target, args.processes)
                try:
                    warm = requests_for(variant, plan[:100], secret)
                    asyncio.run(load(port, warm, args.clients))
                    figures = asyncio.run(load(port, requests_for(variant, plan[100:], secret), args.clients))
                finally:
                    stop_server(proc)
                figures["run"] = run
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
            "commands_per_run": args.commands - 100,
            "runs": args.runs,
            "mix": "3/5 ship, 1/5 cancel, 1/5 refund; one order per request",
            "summary": summary,
            "ratios": ratios,
            "target": "ledger >= 0.75 x ceiling",
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
            "errors": sum(r["errors"] for r in results[v]),
        }
        for v in variants
    }
    ratios: dict[str, float] = {}
    if "ceiling" in summary:
        for v in variants:
            ratios[f"{v}_to_ceiling"] = round(
                summary[v]["per_s_median"] / summary["ceiling"]["per_s_median"], 3
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

"""Bulk import over HTTP (`POST /v1/orders/import`, batches of 500) against the machine's raw insert rate.

    python bench/import_http.py [--orders 20000] [--batch 500] [--clients 4] [--runs 3] [--processes 1]

In the same run, on the same PostgreSQL:
- ours: `ledger serve --no-workers` (--processes server processes); --clients threads post batches of --batch orders until
  --orders are imported (every one created: 201-equivalent `created: true` in the report);
- the baseline: psycopg `executemany` of the same number of rows per transaction (--batch) into a plain table
  (uuid key, two text columns, the order as jsonb), one connection: the machine's limit for the rows alone;
- the library's straightforward path: `Ledger.import_order` in-process, one order per call (--library-orders);
- CPU per order: the server's (its processes' user + system time from /proc over the HTTP run, divided by the
  orders), and in-process: `decode_batch`, `to_domain` and `Ledger.import_orders` for --orders orders in batches
  of --batch, this process's CPU time (`time.process_time`) divided by the orders (PostgreSQL's CPU is in
  neither).
Medians of --runs runs. Uses LEDGER_DATABASE_URL when set, else an embedded PostgreSQL in a temporary
directory; a schema of its own, dropped at the end. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from _common import bench_target, database_url, drop_schema, machine
from psycopg.types.json import Jsonb

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.values import Context, Marketplace, Role
from ledger.api.bodies.schemas import decode_batch, decode_orders
from ledger.application.commands import ImportItem
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget, connect

CTX = Context(actor="bench")
TARGET_ORDERS_PER_S = 5_000
TARGET_CPU_US_PER_ORDER = 120


def order(account_id: str, marketplace_order_id: str, i: int) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "marketplace_order_id": marketplace_order_id,
        "purchased_at": "2026-11-20T10:00:00Z",
        "currency": "USD",
        "payment_status": "paid",
        "buyer": {"name": f"Buyer {i}", "email": f"buyer{i}@example.com"},
        "ship_to": {"name": f"Buyer {i}", "line1": f"{i} Main St", "city": "Springfield", "country": "US"},
        "lines": [
            {
                "line_id": "1",
                "sku": f"SKU-{i % 500}",
                "title": "Mug",
                "quantity": 2,
                "unit_price": "12.50",
                "tax": "2.00",
            },
            {"line_id": "2", "sku": f"SKU-{i % 77}", "quantity": 1, "unit_price": "5.00", "shipping": "4.99"},
        ],
    }


def http_run(url: str, headers: dict[str, str], account_id: str, args: argparse.Namespace, tag: str) -> float:
    batches = [
        [order(account_id, f"{tag}-{b}-{k}", b * args.batch + k) for k in range(args.batch)]
        for b in range(args.orders // args.batch)
    ]
    lock = threading.Lock()
    created = [0]
    failures: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=300) as http:
            while True:
                with lock:
                    if not batches:
                        return
                    batch = batches.pop()
                response = http.post("/v1/orders/import", json={"orders": batch})
                if response.status_code != 200:
                    failures.append(response.text[:300])
                    return
                done = sum(1 for r in response.json()["results"] if r.get("created"))
                with lock:
                    created[0] += done

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if failures or created[0] != (args.orders // args.batch) * args.batch:
        raise SystemExit(f"import failed: created {created[0]}; {failures[:1]}")
    return created[0] / seconds


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of the process and its descendants (the workers of `--processes N`), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def inprocess_run(target: PostgresTarget, account_id: str, args: argparse.Namespace, tag: str) -> float:
    """CPU microseconds per order of the import path without HTTP (decode, to_domain, import_orders)."""
    app = Ledger(env=target.eventsourcing_env())
    try:
        bodies = [
            json.dumps(
                {
                    "orders": [
                        order(account_id, f"{tag}-{b}-{k}", b * args.batch + k) for k in range(args.batch)
                    ]
                }
            ).encode()
            for b in range(args.orders // args.batch)
        ]
        started = time.process_time()
        created = 0
        for body in bodies:
            items: list[ImportItem | LedgerError] = []
            for o in decode_batch(body):
                assert not isinstance(o, LedgerError)
                items.append(ImportItem(o.account_id, o.to_domain(), None))
            created += sum(
                1
                for r in app.import_orders(CTX, items, seller="bench")
                if not isinstance(r, LedgerError) and r.created
            )
        if created != len(bodies) * args.batch:
            raise SystemExit(f"in-process import failed: created {created}")
        return (time.process_time() - started) / created * 1e6
    finally:
        app.close()


def executemany_run(target: PostgresTarget, account_id: str, args: argparse.Namespace, tag: str) -> float:
    rows = [
        (uuid.uuid4(), "bench", f"{tag}-{i}", Jsonb(order(account_id, f"{tag}-{i}", i)))
        for i in range(args.orders)
    ]
    with connect(target) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS baseline_orders"
            " (id uuid PRIMARY KEY, seller text NOT NULL, marketplace_order_id text NOT NULL, body jsonb NOT NULL)"
        )
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur:
            for i in range(0, len(rows), args.batch):
                cur.executemany(
                    "INSERT INTO baseline_orders VALUES (%s, %s, %s, %s)", rows[i : i + args.batch]
                )
                conn.commit()
        return len(rows) / (time.perf_counter() - started)


def library_run(target: PostgresTarget, account_id: str, args: argparse.Namespace, tag: str) -> float:
    app = Ledger(env=target.eventsourcing_env())
    try:
        body = json.dumps([order(account_id, f"{tag}-{i}", i) for i in range(args.library_orders)]).encode()
        orders = decode_orders(body)
        started = time.perf_counter()
        for o in orders:
            app.import_order(CTX, o.account_id, o.to_domain())
        return len(orders) / (time.perf_counter() - started)
    finally:
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--library-orders", type=int, default=2_000)
    parser.add_argument("--port", type=int, default=18_766)
    parser.add_argument("--processes", type=int, default=1, help="server processes of `ledger serve`")
    args = parser.parse_args()
    schema = f"bench_import_{secrets.token_hex(3)}"
    with bench_target(schema, None, pool_size=max(args.clients + 1, 5)) as target:
        try:
            result = run(target, args)
        finally:
            drop_schema(target)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


def run(target: PostgresTarget, args: argparse.Namespace) -> dict[str, Any]:
    app = Ledger(env=target.eventsourcing_env())
    try:
        secret, _ = app.create_api_key(CTX, seller="bench", role=Role.ADMIN, name="bench")
        account_id = str(
            app.register_account(CTX, seller="bench", marketplace=Marketplace.WALMART, name="main").account_id
        )
    finally:
        app.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | {
        "LEDGER_DATABASE_URL": database_url(target),
        "LEDGER_DATABASE_SCHEMA": target.schema,
        "LEDGER_LOG_LEVEL": "WARNING",
        "LEDGER_DB_POOL_SIZE": str(target.pool_size),
    }
    server = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "ledger.cli", "serve", "--no-workers", "--port", str(args.port),
         "--processes", str(args.processes)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{args.port}"
    ours, baseline, library, server_cpu, inprocess = [], [], [], [], []
    try:
        deadline = time.monotonic() + 60
        while True:
            time.sleep(0.2)
            if server.poll() is not None:  # another server on the port would answer 401 to our key
                raise SystemExit(f"ledger serve exited ({server.returncode}): is port {args.port} taken?")
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    time.sleep(0.5)  # still ours (not another server's on a taken port)?
                    if server.poll() is None:
                        break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("ledger serve did not start")
        headers = {"Authorization": f"Bearer {secret}"}
        for run_no in range(args.runs):
            cpu_before = process_cpu_seconds(server.pid)
            ours.append(http_run(url, headers, account_id, args, f"H{run_no}"))
            server_cpu.append(
                (process_cpu_seconds(server.pid) - cpu_before)
                / (args.orders // args.batch * args.batch)
                * 1e6
            )
            inprocess.append(inprocess_run(target, account_id, args, f"I{run_no}"))
            baseline.append(executemany_run(target, account_id, args, f"E{run_no}"))
            library.append(library_run(target, account_id, args, f"L{run_no}"))
            print(f"import: run {run_no + 1}: ours {ours[-1]:,.0f}/s, executemany {baseline[-1]:,.0f} rows/s,"
                  f" library {library[-1]:,.0f}/s; CPU per order: server {server_cpu[-1]:.0f} us,"
                  f" in-process {inprocess[-1]:.0f} us", file=sys.stderr)  # fmt: skip
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    median = statistics.median
    return {
        "benchmark": "bulk import over HTTP",
        "machine": machine(target),
        "orders_per_run": (args.orders // args.batch) * args.batch,
        "batch": args.batch,
        "clients": args.clients,
        "server_processes": args.processes,
        "ours_orders_per_s_runs": [round(x) for x in ours],
        "ours_orders_per_s_median": round(median(ours)),
        "executemany_rows_per_s_runs": [round(x) for x in baseline],
        "executemany_rows_per_s_median": round(median(baseline)),
        "ratio_ours_to_executemany": round(median(ours) / median(baseline), 3),
        "library_import_order_per_s_runs": [round(x) for x in library],
        "library_import_order_per_s_median": round(median(library)),
        "target_orders_per_s": TARGET_ORDERS_PER_S,
        "server_cpu_us_per_order_runs": [round(x) for x in server_cpu],
        "server_cpu_us_per_order_median": round(median(server_cpu)),
        "inprocess_cpu_us_per_order_runs": [round(x) for x in inprocess],
        "inprocess_cpu_us_per_order_median": round(median(inprocess)),
        "target_inprocess_cpu_us_per_order": TARGET_CPU_US_PER_ORDER,
    }


if __name__ == "__main__":
    main()

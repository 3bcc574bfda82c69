"""Dispatcher throughput against the sandbox marketplaces (no faults), beside raw HTTP to the same server.

    python bench/dispatcher_throughput.py [--items 2000] [--runs 3] [--dispatchers 4] [--limited-seconds 20]

Each run, interleaved so that the machine's noise spreads over all of them:

- lifted: `--items` queue items made the way production makes them (orders generated in the sandbox through
  its control API, pulled in by the `Importer`, shipped, cancelled and refunded through the `Ledger`, the
  outbound projection caught up), then `--dispatchers` `Dispatcher`s (threads, one process) drain the queue
  with the per-marketplace token buckets lifted (1,000,000 requests/s): the dispatcher's own cost.
- ceiling (measured after the lifted run's queue is made, so on the same sandbox state): plain httpx POSTs
  of Amazon `confirmShipment` (the body the adapter sends) from `--dispatchers` threads, one request per
  order of an account of its own, no database: what the sandbox server answers at this concurrency.
- limited: the same with the default published limits (`marketplaces.RATE_LIMITS`, each bucket per
  dispatcher), for `--limited-seconds`: rate-bound; the bound the buckets allow is reported beside it.

The mix over four accounts: Amazon shipments (`confirmShipment`); Walmart acknowledgements (one per imported
order), shipments, cancellations and refunds; Rakuten and Jet shipments, cancellations and refunds. (Amazon
cancellations and refunds are feeds polled after 30 s, and eBay refunds are polled too: they would measure
the poll delay, not the dispatcher.)

The sandbox runs as `ledger sandbox` in a process of its own, a fresh one per run. Uses LEDGER_DATABASE_URL
when set, else an embedded PostgreSQL in a temporary directory; works in a schema of its own, dropped at the
end. Prints one JSON object with every figure (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
from psycopg import sql

from ledger.aggregates.values import CancelReason, Carrier, Context, Marketplace, RefundReason
from ledger.application.ledger import Ledger
from ledger.config import Settings
from ledger.eventstore.database import (
    EmbeddedPostgres,
    PostgresTarget,
    connect,
    ensure_schema,
    parse_database_url,
)
from ledger.integrations.dispatcher import Dispatcher
from ledger.integrations.importer import Importer
from ledger.integrations.marketplaces import RATE_LIMITS, SyncSettings
from ledger.integrations.outbound import OutboundProjection
from ledger.projections import base

CTX = Context(actor="bench")
UPS = "1Z999AA10123456784"
MARKETPLACES = (Marketplace.AMAZON, Marketplace.WALMART, Marketplace.RAKUTEN, Marketplace.JET)
# Queue items per order on average with the plan of `commands` (see there): Amazon 1, Walmart 17/8 (one
# acknowledgement each), Rakuten and Jet 9/8.
ITEMS_PER_ORDER = (1 + 17 / 8 + 9 / 8 + 9 / 8) / 4
LIFTED = dict.fromkeys(RATE_LIMITS, (1000000.0, 1000000))
SANDBOX_SETTINGS = {"feed_processing_seconds": 0.2, "refund_processing_seconds": 0.2}
UNFINISHED = "SELECT count(*) FROM outbound_items WHERE state NOT IN ('succeeded', 'dead')"


# --------------------------------------------------------------------------------- the sandbox


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_sandbox() -> tuple[subprocess.Popen[str], str]:
    """`ledger sandbox` on a free port, in a process of its own; (process, base URL)."""
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "ledger.cli", "sandbox", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "sandbox marketplaces" not in line:
        proc.kill()
        raise RuntimeError(f"the sandbox did not start: {line!r}")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.put(f"{url}/_sandbox/settings", json=SANDBOX_SETTINGS, timeout=2).raise_for_status()
            return proc, url
        except httpx.TransportError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)


def stop_sandbox(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def generate_orders(url: str, marketplace: str, account: str, count: int) -> list[dict[str, Any]]:
    """`count` paid orders of one or two lines, bought three hours ago, in the sandbox; their views."""
    made: list[dict[str, Any]] = []
    purchased_at = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    with httpx.Client(base_url=url, timeout=60) as http:
        while len(made) < count:
            body = {"count": min(500, count - len(made)), "purchased_at": purchased_at, "max_lines": 2}
            answer = http.post(f"/_sandbox/{marketplace}/accounts/{account}/orders", json=body)
            answer.raise_for_status()
            made += answer.json()["orders"]
    return made


# ------------------------------------------------------------------------------------ the queue


@dataclasses.dataclass
class Bench:
    target: PostgresTarget
    app: Ledger
    url: str
    credentials: Path
    known: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

    def connect(self) -> psycopg.Connection[Any]:
        return connect(self.target, autocommit=True)

    def settings(self, **changes: Any) -> SyncSettings:
        return SyncSettings(marketplace_url=self.url, credentials_file=self.credentials, **changes)

    def make_queue(self, items: int) -> dict[str, Any]:
        """About `items` new queue items over four fresh accounts; what it took."""
        tag = secrets.token_hex(3)
        orders = max(len(MARKETPLACES), math.ceil(items / ITEMS_PER_ORDER))
        started = time.perf_counter()
        imported: list[tuple[Marketplace, list[UUID]]] = []
        for k, marketplace in enumerate(MARKETPLACES):
            token = f"bench-{tag}-{marketplace.value}"
            account = self.app.register_account(
                CTX, seller=f"bench-{tag}", marketplace=marketplace, name=marketplace.value
            )
            self.known[str(account.account_id)] = {
                "access_token": token, "token": token, "service_secret": "s", "license_key": token,
            }  # fmt: skip
            self.credentials.write_text(json.dumps(self.known))
            share = orders // len(MARKETPLACES) + (1 if k < orders % len(MARKETPLACES) else 0)
            generate_orders(self.url, marketplace.value, token, share)
            [report] = Importer(self.app, self.connect, self.settings()).run_round(account.account_id)
            if report.error or report.refused or report.created != share:
                raise RuntimeError(f"import of {marketplace.value}: {report}")
            imported.append((marketplace, [UUID(o["order_id"]) for o in report.new_orders]))
        imported_at = time.perf_counter()
        commands = 0
        for marketplace, order_ids in imported:
            commands += self.commands(marketplace, order_ids)
        commanded_at = time.perf_counter()
        self.queue()
        with self.connect() as conn:
            row = conn.execute(UNFINISHED).fetchone()
        return {
            "orders": orders,
            "commands": commands,
            "items": int(row[0]) if row else 0,
            "import_s": round(imported_at - started, 1),
            "commands_s": round(commanded_at - imported_at, 1),
            "projection_s": round(time.perf_counter() - commanded_at, 1),
        }

    def commands(self, marketplace: Marketplace, order_ids: list[UUID]) -> int:
        """Amazon orders are shipped; of the others, one in eight is cancelled, one in four shipped and
        refunded, the rest shipped."""
        done = 0
        for i, order_id in enumerate(order_ids):
            if marketplace is not Marketplace.AMAZON and i % 8 == 0:
                self.app.cancel(CTX, order_id, reason=CancelReason.OUT_OF_STOCK)
                done += 1
                continue
            self.app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS)
            done += 1
            if marketplace is not Marketplace.AMAZON and i % 4 == 1:
                self.app.refund(CTX, order_id, reason=RefundReason.DAMAGED)
                done += 1
        return done

    def queue(self) -> None:
        """The outbound projection catches up (a worker does this in `ledger serve`)."""
        with self.connect() as conn:
            generation, position = base.install(conn, OutboundProjection())
            while notifications := self.app.recorder.select_notifications(
                start=position, limit=1000, inclusive_of_start=False
            ):
                with conn.transaction(), conn.cursor() as cur:
                    events = base.decode(self.app.mapper, notifications)
                    base.apply_batch(cur, OutboundProjection(), base.Tables(generation), events)
                position = notifications[-1].id

    def drain(self, dispatchers: int, settings: SyncSettings, seconds: float | None) -> dict[str, Any]:
        """`dispatchers` Dispatchers (threads) take items until none is left, or for `seconds`."""
        workers = [Dispatcher(self.app, self.connect, settings) for _ in range(dispatchers)]
        handled = [0] * dispatchers
        stop = threading.Event()

        def work(k: int) -> None:
            with self.connect() as conn:
                while not stop.is_set():
                    sent = workers[k].dispatch_due()
                    handled[k] += sent
                    if sent == 0:
                        row = conn.execute(UNFINISHED).fetchone()
                        if row is not None and row[0] == 0:
                            return
                        stop.wait(0.005)  # earlier items of the same orders are with the others

        threads = [threading.Thread(target=work, args=(k,)) for k in range(dispatchers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        if seconds is not None:
            stop.wait(seconds)
            stop.set()  # each finishes its pass (dispatch_due checks the dispatcher's own stop)
            for worker in workers:
                worker.stop()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        for worker in workers:
            worker.close()
        with self.connect() as conn:
            states = dict(
                conn.execute("SELECT state, count(*) FROM outbound_items GROUP BY state").fetchall()
            )
            if seconds is not None:  # what the window left is not for the next phase
                conn.execute(
                    "UPDATE outbound_items SET state = 'dead', last_error = 'bench: window over'"
                    " WHERE state NOT IN ('succeeded', 'dead')"
                )
        return {"handled": sum(handled), "seconds": round(elapsed, 2), "states": states,
                "items_per_s": sum(handled) / elapsed}  # fmt: skip


def limited_bound(dispatchers: int, seconds: float) -> float:
    """Items/s the default buckets allow for this mix over `seconds` (burst plus rate, per dispatcher)."""
    names = {"amazon.confirmShipment", "walmart.acknowledgeOrders", "walmart.shippingUpdates",
             "rakuten.updateOrderShipping", "jet.shipOrder"}  # fmt: skip
    allowed = sum(burst + rate * seconds for name, (rate, burst) in RATE_LIMITS.items() if name in names)
    return dispatchers * allowed / seconds


# ------------------------------------------------------------------------------- the ceiling


def ceiling(url: str, dispatchers: int, count: int) -> dict[str, Any]:
    """Plain httpx POSTs of confirmShipment, one per sandbox order, from `dispatchers` threads."""
    token = f"bench-ceiling-{secrets.token_hex(3)}"
    orders = generate_orders(url, "amazon", token, count)
    shipped_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    bodies = [
        (
            o["order_id"],
            {
                "marketplaceId": "ATVPDKIKX0DER",
                "packageDetail": {
                    "packageReferenceId": str(secrets.randbits(48) + 1),  # numeric, as Amazon asks
                    "carrierCode": "UPS",
                    "trackingNumber": UPS,
                    "shipDate": shipped_at,
                    "orderItems": [
                        {"orderItemId": line["line_id"], "quantity": line["quantity"]} for line in o["lines"]
                    ],
                },
            },
        )
        for o in orders
    ]
    failures = [0]
    lock = threading.Lock()

    def work(k: int) -> None:
        with httpx.Client(base_url=url, headers={"x-amz-access-token": token}, timeout=30) as http:
            for order_id, body in bodies[k::dispatchers]:
                answer = http.post(f"/orders/v0/orders/{order_id}/shipmentConfirmation", json=body)
                if answer.status_code >= 300:
                    with lock:
                        failures[0] += 1
                        print(answer.status_code, answer.text[:500], file=sys.stderr)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(dispatchers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures[0]:
        raise RuntimeError(f"ceiling: {failures[0]} of {count} confirmShipment calls failed")
    return {"requests": count, "seconds": round(elapsed, 2), "requests_per_s": count / elapsed}


# ------------------------------------------------------------------------------------- main


def run(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    ceilings, lifted, limited, queues = [], [], [], []
    violations = 0
    for _ in range(args.runs):
        # A fresh sandbox per run: it does work per request that grows with what it holds (Amazon's feeds),
        # so later runs would otherwise measure a slower server. The ceiling is measured on the same state
        # as the drain: after this run's imports.
        sandbox, bench.url = start_sandbox()
        try:
            made = bench.make_queue(args.items)
            ceilings.append(ceiling(bench.url, args.dispatchers, args.items))
            drained = bench.drain(args.dispatchers, bench.settings(rate_limits=LIFTED), None)
            left = {k: v for k, v in drained["states"].items() if k not in ("succeeded", "dead")}
            if left or drained["handled"] != made["items"]:  # (dead: what earlier windows left)
                raise RuntimeError(f"lifted run: {made['items']} items made, {drained}")
            queues.append(made)
            lifted.append(drained)
            if args.limited_seconds > 0:
                wanted = math.ceil(
                    limited_bound(args.dispatchers, args.limited_seconds) * args.limited_seconds * 1.2
                )
                bench.make_queue(min(args.items, wanted))
                limited.append(bench.drain(args.dispatchers, bench.settings(), args.limited_seconds))
            with httpx.Client(base_url=bench.url) as http:
                violations += len(http.get("/_sandbox/violations").json()["violations"])
        finally:
            stop_sandbox(sandbox)
    with bench.connect() as conn:
        server = conn.execute("SHOW server_version").fetchone()
    ceiling_median = statistics.median(c["requests_per_s"] for c in ceilings)
    lifted_median = statistics.median(d["items_per_s"] for d in lifted)
    return {
        "benchmark": "dispatcher throughput against the sandbox marketplaces (no faults)",
        "machine": {
            "cpus": os.cpu_count() or 0,
            "python": platform.python_version(),
            "postgres": server[0] if server else None,
            "sandbox": "ledger sandbox, one uvicorn process on the same machine",
        },
        "dispatchers": args.dispatchers,
        "items": args.items,
        "queues": queues,
        "ceiling_requests_per_s_runs": [round(c["requests_per_s"]) for c in ceilings],
        "ceiling_requests_per_s_median": round(ceiling_median),
        "lifted_items_per_s_runs": [round(d["items_per_s"]) for d in lifted],
        "lifted_items_per_s_median": round(lifted_median),
        "lifted_seconds_runs": [d["seconds"] for d in lifted],
        "ratio_lifted_to_ceiling": round(lifted_median / ceiling_median, 2),
        "limited_seconds": args.limited_seconds,
        "limited_items_per_s_runs": [round(d["items_per_s"], 1) for d in limited],
        "limited_items_per_s_median": (
            round(statistics.median(d["items_per_s"] for d in limited), 1) if limited else None
        ),
        "limited_bound_items_per_s": (
            round(limited_bound(args.dispatchers, args.limited_seconds), 1) if limited else None
        ),
        "rate_limits_default": {k: list(v) for k, v in RATE_LIMITS.items()},
        "sandbox_violations": violations,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=2_000, help="queue items per run (default 2,000)")
    parser.add_argument("--runs", type=int, default=3, help="repeats; medians are reported (default 3)")
    parser.add_argument("--dispatchers", type=int, default=4, help="dispatcher threads (default 4)")
    parser.add_argument(
        "--limited-seconds", type=float, default=20.0,
        help="length of the default-limits window (0: skip it; default 20)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    with ExitStack() as stack:
        schema = f"bench_{secrets.token_hex(4)}"
        if settings.database_url:
            target = parse_database_url(settings.database_url, schema)
        else:
            data = Path(tempfile.mkdtemp(prefix="ledger-bench-", dir="/tmp"))
            stack.callback(shutil.rmtree, data, True)
            target = dataclasses.replace(stack.enter_context(EmbeddedPostgres(data)), schema=schema)
        ensure_schema(target)
        stack.callback(_drop_schema, target)
        work = Path(tempfile.mkdtemp(prefix="ledger-bench-dispatch-"))
        stack.callback(shutil.rmtree, work, True)
        app = Ledger(env=target.eventsourcing_env())
        stack.callback(app.close)
        result = run(args, Bench(target, app, "", work / "credentials.json"))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return result


def _drop_schema(target: PostgresTarget) -> None:
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema)))


if __name__ == "__main__":
    main()

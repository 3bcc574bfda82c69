"""The change feed and webhooks: feed throughput over HTTP beside its SQL alone; webhook end-to-end latency.

    python bench/feed.py [--events 20000] [--page 1000] [--runs 3] [--rate 200] [--seconds 20]

In the same run, on the same PostgreSQL, with `ledger serve` (projection workers and the webhook dispatcher in
its process) started as a user starts it:
- feed over HTTP: one client pages through a seller's --events order events (`GET /v1/events`, `limit` = --page),
  interleaved in the log with another seller's quarter as many; events/s, median of --runs;
- the SQL alone: the same pages read in-process by the feed's own query (`feed.index.read_page`: the index scan
  joined with the events table, rows fetched, nothing decoded), and the same plus decoding into feed items
  (`feed.items.items_of`: what the HTTP path adds before JSON and HTTP);
- webhook latency: a receiver on 127.0.0.1 behind one webhook; orders are imported in-process at --rate events/s
  for --seconds; latency is the receiver's clock at arrival minus the event's `recorded_at` (taken by the
  Ledger before its commit): commit, the feed worker's indexing, the dispatcher's claim, signing and the POST.
Uses LEDGER_DATABASE_URL when set, else an embedded PostgreSQL in a temporary directory; a schema of its own,
dropped at the end. Prints one JSON object.
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
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID

import httpx
from _common import bench_target, database_url, drop_schema, machine, summary_ms

from ledger.aggregates.values import (
    Buyer,
    Context,
    ImportedOrder,
    Marketplace,
    OrderLine,
    PaymentStatus,
    Role,
)
from ledger.application.ledger import ImportItem, Ledger
from ledger.eventstore.database import PostgresTarget, connect
from ledger.feed import index
from ledger.feed.items import items_of

CTX = Context(actor="bench")
SELLER = "bench"
OTHER = "bench-other"


def order(marketplace_order_id: str) -> ImportedOrder:
    return ImportedOrder(
        marketplace_order_id=marketplace_order_id,
        purchased_at=datetime(2026, 11, 20, 10, tzinfo=UTC),
        currency="USD",
        payment_status=PaymentStatus.PAID,
        buyer=Buyer("Ann Lee", "ann@example.com"),
        lines=(OrderLine("1", "MUG-1", 2, Decimal("12.50")), OrderLine("2", "CUP-1", 1, Decimal("5.00"))),
    )


def fill(app: Ledger, accounts: dict[str, UUID], events: int) -> None:
    """`events` imports of SELLER's, a quarter as many of OTHER's interleaved, in batches of 500."""
    made = 0
    while made < events:
        batch = min(500, events - made)
        app.import_orders(CTX, [ImportItem(accounts[SELLER], order(f"F{made + i}")) for i in range(batch)])
        app.import_orders(
            CTX, [ImportItem(accounts[OTHER], order(f"O{made + i}")) for i in range(batch // 4)]
        )
        made += batch


def http_pass(url: str, headers: dict[str, str], page: int, events: int) -> float:
    """Events/s of one client paging through the seller's feed from the start."""
    seen, after = 0, 0
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        started = time.perf_counter()
        while seen < events:
            body = client.get("/v1/events", params={"after": after, "limit": page}).json()
            seen += len(body["items"])
            after = body["next_after"]
        return seen / (time.perf_counter() - started)


def sql_pass(target: PostgresTarget, app: Ledger | None, page: int, events: int) -> float:
    """Events/s of the feed's query alone (and, given the Ledger, with the items decoded)."""
    seen, after = 0, 0
    with connect(target, autocommit=True) as conn:
        started = time.perf_counter()
        while seen < events:
            found = index.read_page(conn, SELLER, after, page)
            if app is not None:
                items_of(found.rows, app.mapper, app.personal_data)
            seen += len(found.rows)
            after = found.next_after
        return seen / (time.perf_counter() - started)


class Receiver:
    """A webhook receiver that notes each event's latency (arrival minus the event's recorded_at)."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.positions: list[int] = []
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                arrived = datetime.now(UTC)
                item = json.loads(body)
                if "position" in item:
                    state.positions.append(item["position"])
                    recorded = datetime.fromisoformat(item["recorded_at"])
                    state.latencies.append((arrived - recorded).total_seconds())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def paced_imports(app: Ledger, account_id: UUID, rate: float, seconds: float) -> int:
    """Import one order (one event) every 1/rate seconds from 4 threads; return how many were imported."""
    threads = 4
    total = int(rate * seconds)
    started = time.perf_counter()

    def writer(offset: int) -> None:
        for n in range(offset, total, threads):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            app.import_order(CTX, account_id, order(f"L{n}"))

    pool = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return total


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("ledger serve did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=18_767)
    args = parser.parse_args()
    schema = f"bench_feed_{secrets.token_hex(3)}"
    with bench_target(schema, None, pool_size=8) as target:
        try:
            result = run(target, args)
        finally:
            drop_schema(target)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


def run(target: PostgresTarget, args: argparse.Namespace) -> dict[str, Any]:
    app = Ledger(env=target.eventsourcing_env())
    secret, _ = app.create_api_key(CTX, seller=SELLER, role=Role.ADMIN, name="bench")
    accounts = {
        seller: app.register_account(
            CTX, seller=seller, marketplace=Marketplace.WALMART, name="main"
        ).account_id
        for seller in (SELLER, OTHER)
    }
    fill(app, accounts, args.events)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | {
        "LEDGER_DATABASE_URL": database_url(target),
        "LEDGER_DATABASE_SCHEMA": target.schema,
        "LEDGER_LOG_LEVEL": "WARNING",
        "LEDGER_DB_POOL_SIZE": str(target.pool_size),
        "LEDGER_WEBHOOK_ALLOW_HTTP": "1",
        "LEDGER_WEBHOOK_ALLOW_PRIVATE": "1",
    }
    server = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "ledger.cli", "serve", "--no-sync", "--port", str(args.port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{args.port}"
    headers = {"Authorization": f"Bearer {secret}"}
    http, plain_sql, decoded = [], [], []
    try:
        wait_ready(url)
        for run_no in range(args.runs):
            http.append(http_pass(url, headers, args.page, args.events))
            plain_sql.append(sql_pass(target, None, args.page, args.events))
            decoded.append(sql_pass(target, app, args.page, args.events))
            print(f"feed: run {run_no + 1}: HTTP {http[-1]:,.0f}/s, SQL {plain_sql[-1]:,.0f}/s,"
                  f" SQL+decode {decoded[-1]:,.0f}/s", file=sys.stderr)  # fmt: skip
        receiver = Receiver()
        created = httpx.post(f"{url}/v1/webhooks", json={"url": receiver.url}, headers=headers, timeout=30)
        created.raise_for_status()
        sent = paced_imports(app, accounts[SELLER], args.rate, args.seconds)
        deadline = time.monotonic() + 120
        while len(receiver.latencies) < sent and time.monotonic() < deadline:
            time.sleep(0.2)
        receiver.server.shutdown()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        app.close()
    median = statistics.median
    return {
        "benchmark": "change feed and webhooks",
        "machine": machine(target),
        "feed_events": args.events,
        "page": args.page,
        "http_events_per_s_runs": [round(x) for x in http],
        "http_events_per_s_median": round(median(http)),
        "sql_events_per_s_runs": [round(x) for x in plain_sql],
        "sql_events_per_s_median": round(median(plain_sql)),
        "sql_and_decode_events_per_s_median": round(median(decoded)),
        "ratio_http_to_sql": round(median(http) / median(plain_sql), 3),
        "webhook_rate_events_per_s": args.rate,
        "webhook_events_sent": sent,
        "webhook_events_received": len(receiver.latencies),
        "webhook_in_order": receiver.positions == sorted(receiver.positions),
        "webhook_latency": summary_ms(receiver.latencies),
    }


if __name__ == "__main__":
    main()

"""Shipment confirmations behind a wall of Amazon cancellations: how long tracking takes to reach Amazon.

`--cancellations` (500) Amazon orders are cancelled and queued first: their feeds spend the createFeed bucket
(burst 15, then one every two minutes, as Amazon publishes), so almost all of them wait. Then new shipment
confirmations of other orders arrive at Amazon's published confirmShipment rate (2 a second; `--shipments`,
default 120) while one dispatcher with the default limits runs, and the outbound projection catches up every
`--queue-interval` seconds (a `ledger worker` follows the log the same way). Reported: the time from each
shipment command to the sandbox applying its confirmShipment (the sandbox's effect time), p50/p99/max, and
the state of the cancellations at the end (the ones beyond the burst still wait for their bucket).

The sandbox runs as `ledger sandbox` in a process of its own. Uses LEDGER_DATABASE_URL when set, else an
embedded PostgreSQL in a temporary directory; works in a schema of its own, dropped at the end. Prints one
JSON object (see BENCHMARKS.md, "Sync latency").
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from _common import bench_target, drop_schema, machine, summary_ms
from dispatcher_throughput import CTX, UPS, Bench, generate_orders, start_sandbox, stop_sandbox

from ledger.aggregates.values import CancelReason, Carrier, Marketplace
from ledger.application.ledger import Ledger
from ledger.integrations.dispatcher import Dispatcher
from ledger.integrations.importer import Importer

TARGET_P99_S = 5.0


def run(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    token = f"bench-latency-{secrets.token_hex(3)}"
    account = bench.app.register_account(CTX, seller=token, marketplace=Marketplace.AMAZON, name="amazon")
    bench.known[str(account.account_id)] = {"access_token": token}
    bench.credentials.write_text(json.dumps(bench.known))
    generate_orders(bench.url, "amazon", token, args.cancellations + args.shipments)
    [report] = Importer(bench.app, bench.connect, bench.settings()).run_round(account.account_id)
    order_ids = [UUID(o["order_id"]) for o in report.new_orders]
    if len(order_ids) != args.cancellations + args.shipments:
        raise RuntimeError(f"import: {report}")
    cancelled, shipped = order_ids[: args.cancellations], order_ids[args.cancellations :]
    for order_id in cancelled:
        bench.app.cancel(CTX, order_id, reason=CancelReason.OUT_OF_STOCK)
    bench.queue()

    stop = threading.Event()
    dispatcher = Dispatcher(bench.app, bench.connect, bench.settings())
    threads = [
        threading.Thread(target=dispatcher.run, name="dispatcher"),
        threading.Thread(target=_follow, args=(bench, stop, args.queue_interval), name="queue"),
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2.0)  # the createFeed burst goes out; the rest of the cancellations wait for the bucket
        made: dict[str, datetime] = {}  # marketplace order id -> when the seller shipped it
        for order_id in shipped:
            started = time.monotonic()
            made[bench.app.get_order(order_id).marketplace_order_id] = datetime.now(UTC)
            bench.app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS)
            time.sleep(max(0.0, 1 / args.rate - (time.monotonic() - started)))
        latencies = _wait_for_confirmations(bench.url, token, made, args.wait)
    finally:
        dispatcher.stop()
        stop.set()
        for thread in threads:
            thread.join()
    with bench.connect() as conn:
        states = dict(
            conn.execute(
                "SELECT action || ':' || state, count(*) FROM outbound_items GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
    summary = summary_ms(latencies)
    return {
        "benchmark": "sync_latency",
        "cancellations": args.cancellations,
        "shipments": args.shipments,
        "confirmed": len(latencies),
        "shipment_rate_per_s": args.rate,
        "queue_interval_s": args.queue_interval,
        "dispatch_interval_s": bench.settings().dispatch_interval,
        "latency": summary,
        "target_p99_ms": TARGET_P99_S * 1000,
        "within_target": len(latencies) == args.shipments and summary["p99_ms"] <= TARGET_P99_S * 1000,
        "queue_states": states,
        "machine": machine(bench.target),
    }


def _follow(bench: Bench, stop: threading.Event, interval: float) -> None:
    """The outbound projection follows the log (what `ledger worker` does in production)."""
    while not stop.is_set():
        bench.queue()
        stop.wait(interval)


def _wait_for_confirmations(url: str, token: str, made: dict[str, datetime], wait: float) -> list[float]:
    """Seconds from each shipment's event to the sandbox applying its confirmShipment."""
    deadline = time.monotonic() + wait
    applied: dict[str, datetime] = {}
    with httpx.Client(base_url=url, timeout=30) as http:
        while len(applied) < len(made) and time.monotonic() < deadline:
            answer = http.get(f"/_sandbox/amazon/accounts/{token}/effects")
            answer.raise_for_status()
            for effect in answer.json()["effects"]:
                if effect["operation"] == "confirmShipment" and effect["order_id"] in made:
                    applied[effect["order_id"]] = datetime.fromisoformat(effect["applied_at"])
            time.sleep(0.5)
    return [(applied[moid] - made[moid]).total_seconds() for moid in applied]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cancellations", type=int, default=500, help="Amazon cancellations queued first")
    parser.add_argument("--shipments", type=int, default=120, help="shipment confirmations measured")
    parser.add_argument("--rate", type=float, default=2.0, help="shipments a second (confirmShipment's rate)")
    parser.add_argument("--queue-interval", type=float, default=0.2, help="projection catch-up interval, s")
    parser.add_argument("--wait", type=float, default=60.0, help="longest wait for the last confirmation, s")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        target = stack.enter_context(bench_target(f"bench_latency_{secrets.token_hex(4)}"))
        stack.callback(drop_schema, target)
        proc, url = start_sandbox()
        stack.callback(stop_sandbox, proc)
        work = Path(tempfile.mkdtemp(prefix="ledger-bench-latency-"))
        stack.callback(shutil.rmtree, work, True)
        app = Ledger(env=target.eventsourcing_env())
        stack.callback(app.close)
        result = run(args, Bench(target, app, url, work / "credentials.json"))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return result


if __name__ == "__main__":
    main()

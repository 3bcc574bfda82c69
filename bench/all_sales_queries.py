"""All Sales queries over HTTP on a generated book (bench/generate_orders.py), with the SQL alone beside them.

    python bench/all_sales_queries.py [--schema bench_orders] [--data-dir /tmp/ledger-bench-pg]
                                      [--requests 200] [--deep-rows 10000]

For every filter of `GET /v1/orders` (seller-00, the largest seller): the first page and a deep keyset page
(the cursor after --deep-rows rows), each asked --requests times in a row by one client over keep-alive HTTP
against `ledger serve`; the same page through the view's query method on a direct connection (the read
model's SQL without HTTP, auth and JSON); order detail of random orders; the history of a 50-event order.
Peak RSS of the `ledger serve` process and of a `ledger worker` (all_sales, following the live log) are read
from the kernel when they exit. Targets (issue 8): list pages p99 <= 25 ms, detail p99 <= 10 ms, history
p99 <= 15 ms. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from _common import DEFAULT_DATA_DIR, bench_target, database_url, machine, summary_ms

from ledger.aggregates.values import (
    Buyer,
    Carrier,
    Context,
    ImportedOrder,
    LineQuantity,
    Marketplace,
    OrderLine,
    PaymentStatus,
    Role,
)
from ledger.application.errors import OrderNotFoundError
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget, connect
from ledger.projections.all_sales_view import AllSalesView, SalesFilter

CTX = Context(actor="bench")
SELLER = "seller-00"
TARGET_LIST_MS, TARGET_DETAIL_MS, TARGET_HISTORY_MS = 25, 10, 15
VIEW = AllSalesView()


def _history_order(app: Ledger) -> str:
    """An order of seller-00 with exactly 50 events (an import and 49 one-unit shipments); made once."""
    account = (
        next(a for a in app.list_accounts(SELLER) if a.marketplace == "walmart" and a.fulfillment_managed)
        if any(a.marketplace == "walmart" and a.fulfillment_managed for a in app.list_accounts(SELLER))
        else next(a for a in app.list_accounts(SELLER) if a.fulfillment_managed)
    )
    try:
        return str(app.find_order(SELLER, Marketplace(account.marketplace), "HISTORY-50").order_id)
    except OrderNotFoundError:
        pass
    purchased = app.clock() - timedelta(days=2)
    order = ImportedOrder(
        "HISTORY-50", purchased, "USD", PaymentStatus.PAID, Buyer("Hist Ory", "history@example.com"),
        (OrderLine("1", "SKU-HIST", 60, Decimal("3.00")),),
    )  # fmt: skip
    result = app.import_order(CTX, account.account_id, order)
    for _ in range(49):
        app.ship(CTX, result.order_id, carrier=Carrier.UPS, tracking_number="1Z999AA10123456784",
                 lines=(LineQuantity("1", 1),))  # fmt: skip
    return str(result.order_id)


def _filters(app: Ledger, target: PostgresTarget) -> dict[str, dict[str, str]]:
    accounts = {a.marketplace: a for a in app.list_accounts(SELLER)}
    with connect(target) as conn:
        sample = VIEW.list_orders(conn, SELLER, SalesFilter(), limit=500).items[-1]
    newest = sample.purchased_at
    return {
        "none": {},
        "account_id": {"account_id": str(accounts["amazon"].account_id)},
        "marketplace": {"marketplace": "ebay"},
        "status=unshipped": {"status": "unshipped"},
        "status=partially_shipped": {"status": "partially_shipped"},
        "status=shipped": {"status": "shipped"},
        "status=canceled": {"status": "canceled"},
        "status=third_party_managed": {"status": "third_party_managed"},
        "open=true": {"open": "true"},
        "dispute=open": {"dispute": "open"},
        "sku": {"sku": "SKU-00042"},
        "q=buyer name": {"q": "Tanaka"},
        "q=marketplace order id": {"q": sample.marketplace_order_id},
        "purchased 30 days": {
            "purchased_from": (newest - timedelta(days=60)).isoformat(),
            "purchased_to": (newest - timedelta(days=30)).isoformat(),
        },
    }


def _sales_filter(params: dict[str, str]) -> SalesFilter:
    from datetime import datetime  # noqa: PLC0415
    from uuid import UUID  # noqa: PLC0415

    return SalesFilter(
        account_id=UUID(params["account_id"]) if "account_id" in params else None,
        marketplace=params.get("marketplace"),
        status=params.get("status"),
        open=params["open"] == "true" if "open" in params else None,
        dispute=params.get("dispute"),  # type: ignore[arg-type]
        sku=params.get("sku"),
        q=params.get("q"),
        purchased_from=datetime.fromisoformat(params["purchased_from"])
        if "purchased_from" in params
        else None,
        purchased_to=datetime.fromisoformat(params["purchased_to"]) if "purchased_to" in params else None,
    )


def _time(call: Callable[[], Any], requests: int) -> list[float]:
    call()  # warm: plans cached, pages in shared buffers
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        command = [sys.executable, "-m", "ledger.cli", *args]
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603


def _stop_rss_kb(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM the process and return its peak resident set (kB) as the kernel reports it at exit."""
    process.send_signal(signal.SIGTERM)
    _, _, usage = os.wait4(process.pid, 0)
    process.returncode = 0
    return int(usage.ru_maxrss)


def run(target: PostgresTarget, args: argparse.Namespace) -> dict[str, Any]:  # noqa: PLR0915
    app = Ledger(env=target.eventsourcing_env())
    try:
        secret, _ = app.create_api_key(CTX, seller=SELLER, role=Role.ADMIN, name="bench")
        history_id = _history_order(app)
        filters = _filters(app, target)
    finally:
        app.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | {
        "LEDGER_DATABASE_URL": database_url(target),
        "LEDGER_DATABASE_SCHEMA": target.schema,
        "LEDGER_LOG_LEVEL": "WARNING",
    }
    logs = Path(args.log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    port = args.port
    server = _start(["serve", "--no-workers", "--port", str(port)], env, logs / "serve.log")
    worker = _start(["worker", "--projection", "all_sales"], env, logs / "worker.log")
    headers = {"Authorization": f"Bearer {secret}"}
    result: dict[str, Any] = {"list": {}}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("ledger serve did not start: see " + str(logs / "serve.log"))
                time.sleep(0.2)
            detail_ids: list[str] = []
            with connect(target, autocommit=True) as conn:
                for name, params in filters.items():
                    first = http.get("/v1/orders", params=params | {"limit": "50"})
                    first.raise_for_status()
                    detail_ids += [item["order_id"] for item in first.json()["items"][:10]]
                    cursor, walked = None, 0
                    while walked < args.deep_rows:
                        page = http.get(
                            "/v1/orders",
                            params=params | {"limit": "500"} | ({"cursor": cursor} if cursor else {}),
                        )
                        body = page.json()
                        walked += len(body["items"])
                        cursor = body["next_cursor"]
                        if cursor is None:
                            break
                    entry: dict[str, Any] = {
                        "first_page": summary_ms(
                            _time(
                                lambda p=params: http.get(
                                    "/v1/orders", params=p | {"limit": "50"}
                                ).raise_for_status(),
                                args.requests,
                            )
                        ),
                        "first_page_sql": summary_ms(
                            _time(
                                lambda p=params: VIEW.list_orders(conn, SELLER, _sales_filter(p), limit=50),
                                args.requests,
                            )
                        ),
                    }
                    if cursor is not None:
                        entry["deep_page_after_rows"] = walked
                        entry["deep_page"] = summary_ms(
                            _time(
                                lambda p=params, c=cursor: http.get(
                                    "/v1/orders", params=p | {"limit": "50", "cursor": c}
                                ).raise_for_status(),
                                args.requests,
                            )
                        )
                        entry["deep_page_sql"] = summary_ms(
                            _time(
                                lambda p=params, c=cursor: VIEW.list_orders(
                                    conn, SELLER, _sales_filter(p), limit=50, cursor=c
                                ),
                                args.requests,
                            )
                        )
                    else:
                        entry["deep_page"] = f"fewer than {args.deep_rows} rows match ({walked})"
                    result["list"][name] = entry
                    print(f"queries: {name}: {json.dumps(entry)}", file=sys.stderr)
            rng = random.Random(1)  # noqa: S311
            ids = [rng.choice(detail_ids) for _ in range(args.requests)]
            it = iter(ids * 2)
            result["order_detail"] = summary_ms(
                _time(lambda: http.get(f"/v1/orders/{next(it)}").raise_for_status(), args.requests)
            )
            history = http.get(f"/v1/orders/{history_id}/history").json()["events"]
            result["history_events"] = len(history)
            result["history"] = summary_ms(
                _time(lambda: http.get(f"/v1/orders/{history_id}/history").raise_for_status(), args.requests)
            )
    finally:
        result["peak_rss_mb"] = {
            "ledger serve": round(_stop_rss_kb(server) / 1024, 1),
            "ledger worker (all_sales)": round(_stop_rss_kb(worker) / 1024, 1),
        }
    lists = [
        v
        for e in result["list"].values()
        for k, v in e.items()
        if k in {"first_page", "deep_page"} and isinstance(v, dict)
    ]
    result["worst_list_p99_ms"] = max(s["p99_ms"] for s in lists)
    result["targets_ms"] = {
        "list_p99": TARGET_LIST_MS,
        "detail_p99": TARGET_DETAIL_MS,
        "history_p99": TARGET_HISTORY_MS,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--schema", default="bench_orders")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--deep-rows", type=int, default=10_000)
    parser.add_argument("--port", type=int, default=18_765)
    parser.add_argument("--log-dir", default="/tmp/ledger-bench-logs")  # noqa: S108
    args = parser.parse_args()
    with bench_target(args.schema, args.data_dir) as target:
        with connect(target) as conn:
            row = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
        result = {"benchmark": "all_sales queries", "machine": machine(target), "schema": target.schema,
                  "events": int(row[0]) if row else 0, "seller": SELLER, "requests_per_query": args.requests}  # fmt: skip
        result |= run(target, args)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

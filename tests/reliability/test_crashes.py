"""Crashes: `kill -9` of the API in the middle of a burst of commands, and of a projection worker mid-batch.

An acknowledged command must be in the store afterwards, and a command that records several events (a
cancellation restocked in the ledger: `Cancelled` + `Restocked`) is there whole or not at all. A worker killed
mid-batch resumes to a view equal to a rebuild from the log.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from psycopg import sql
from rel_support import CTX, UPS_TRACKING, Seller, assert_no_500, order_body, report, served, start_service

from ledger.aggregates.order import Order
from ledger.aggregates.values import (
    Buyer,
    CancelReason,
    Carrier,
    ImportedOrder,
    LineQuantity,
    Marketplace,
    OrderLine,
    PaymentStatus,
    RefundReason,
    Role,
)
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget, connect
from ledger.projections import base
from ledger.projections.registry import all_projections

CLIENTS = 8
ACKS_BEFORE_KILL = 150
ID_OF = {"Shipped": "shipment_id", "Cancelled": "cancellation_id"}


@pytest.mark.slow
def test_kill_9_of_the_api_loses_no_acknowledged_command(
    cli_env: dict[str, str], store: Ledger, seller: Seller, tmp_path: Path
) -> None:
    """SIGKILL mid-burst: every acknowledged import and command is stored, and none is half-applied."""
    service = start_service(cli_env, tmp_path)
    try:
        with service.client() as http:
            targets = []
            for _ in range(12):
                body = order_body(seller.accounts[Marketplace.WALMART])
                body["lines"][0]["quantity"], body["lines"][1]["quantity"] = 200, 200
                response = http.post("/v1/orders", json=body, headers=seller.auth())
                assert response.status_code == 201, response.text
                targets.append(response.json()["order_id"])
        acked: list[tuple[str, dict[str, Any]]] = []
        sent = [0]
        unknown = [0]
        unexpected: list[str] = []
        lock = threading.Lock()
        enough = threading.Event()

        def client(k: int) -> None:
            rng = random.Random(k)
            with service.client(timeout=10) as own:
                while True:
                    kind = rng.choice(["import", "ship", "cancel"])
                    if kind == "import":
                        path, body = "/v1/orders", order_body(seller.accounts[Marketplace.AMAZON])
                    elif kind == "ship":
                        path = f"/v1/orders/{rng.choice(targets)}/shipments"
                        body = {"carrier": "ups", "tracking_number": UPS_TRACKING,
                                "lines": [{"line_id": "1", "quantity": 1}]}  # fmt: skip
                    else:
                        path = f"/v1/orders/{rng.choice(targets)}/cancellations"
                        body = {"reason": "out_of_stock", "restock_in_ledger": True,
                                "lines": [{"line_id": "2", "quantity": 1}]}  # fmt: skip
                    with lock:
                        sent[0] += 1
                    try:
                        response = own.post(path, json=body, headers=seller.auth(Role.OPERATOR))
                    except httpx.HTTPError:
                        with lock:
                            unknown[0] += 1  # the process died under this request: no answer, no promise
                        return
                    if response.status_code not in {200, 201, 409}:
                        with lock:
                            unexpected.append(f"{response.status_code} {response.text[:200]}")
                    if response.status_code == 201:
                        with lock:
                            acked.append((kind, response.json()))
                            if len(acked) >= ACKS_BEFORE_KILL:
                                enough.set()

        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        for thread in threads:
            thread.start()
        assert enough.wait(60), "the burst never got going"
        service.kill()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        service.kill()
    assert service.process.returncode == -signal.SIGKILL
    assert not unexpected, unexpected

    found = 0
    for kind, data in acked:
        history = {e.version: e for e in store.order_history(UUID(data["order_id"]), seller.name)}
        first = data["version"] - len(data["events"]) + 1
        for offset, event_type in enumerate(data["events"]):
            assert history[first + offset].type == event_type, (kind, data)
        if kind != "import":
            assert str(history[first].data[ID_OF[data["events"][0]]]) == data[ID_OF[data["events"][0]]]
        found += 1
    half_applied = 0
    for order_id in targets:
        history = store.order_history(UUID(order_id), seller.name)
        assert [e.version for e in history] == list(range(1, len(history) + 1))
        for event, following in zip(history, [*history[1:], None], strict=True):
            if event.type == "Cancelled":  # always sent with restock_in_ledger: its Restocked must follow
                if following is None or following.type != "Restocked":
                    half_applied += 1
                else:
                    assert following.data["cause_id"] == event.data["cancellation_id"]
    assert half_applied == 0
    assert found == len(acked)

    with (
        served(cli_env, tmp_path) as again,
        again.client() as http,
    ):  # the service starts again on the same data
        for _, data in acked[:: max(len(acked) // 20, 1)]:
            response = http.get(f"/v1/orders/{data['order_id']}", headers=seller.auth())
            assert response.status_code == 200
            assert response.json()["version"] >= data["version"]
    assert_no_500(service.log)
    report(
        f"kill -9 of the API mid-burst ({CLIENTS} clients): {sent[0]} commands sent, {len(acked)} acknowledged,"
        f" {found} found afterwards, lost 0, half-applied 0 ({unknown[0]} cut off unanswered by the kill)"
    )


# --------------------------------------------------------------------------------------------- workers

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _fill(store: Ledger, orders: int, seed: int) -> list[UUID]:
    """Orders with shipments, cancellations (restocked), refunds and disputes, saved in batches."""
    rng = random.Random(seed)
    seller = f"crash-{seed}"
    accounts = [
        store.register_account(
            CTX, seller=seller, marketplace=m, name="main", fulfillment_managed=m != Marketplace.JET
        )
        for m in (Marketplace.WALMART, Marketplace.RAKUTEN, Marketplace.JET)
    ]
    ids, batch = [], []
    for i in range(orders):
        account = accounts[i % len(accounts)]
        order = Order.import_order(
            CTX,
            seller=seller,
            account_id=account.account_id,
            marketplace=Marketplace(account.marketplace),
            order=ImportedOrder(
                f"C-{seed}-{i}",
                NOW - timedelta(hours=rng.randint(1, 500)),
                "USD",
                PaymentStatus.PAID,
                Buyer(f"Buyer {i}", f"b{i}@example.com"),
                (
                    OrderLine("1", f"SKU-{i % 7}", 3, Decimal("9.99"), Decimal("0.80")),
                    OrderLine("2", f"SKU-{i % 5}", 2, Decimal("20.00"), shipping=Decimal("4.99")),
                ),
            ),
            third_party_managed=not account.fulfillment_managed,
        )
        if account.fulfillment_managed:
            order.ship(CTX, carrier=Carrier.FEDEX, tracking_number="123456789012", shipped_at=NOW, now=NOW,
                       lines=(LineQuantity("1", rng.randint(1, 3)),))  # fmt: skip
            if i % 3 == 0:
                order.cancel(CTX, reason=CancelReason.OUT_OF_STOCK, now=NOW, lines=(LineQuantity("2", 1),),
                             restock_in_ledger=True)  # fmt: skip
            if i % 4 == 0:
                order.refund(CTX, reason=RefundReason.DAMAGED)
            if i % 11 == 0:
                order.open_dispute(CTX, reason="not received")
        batch.append(order)
        ids.append(order.id)
        if len(batch) == 100:
            store.save(*batch)
            batch = []
    store.save(*batch)
    return ids


def _snapshot(target: PostgresTarget) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every projection's live tables (rows sorted, generation left out of the names)."""
    result: dict[str, list[tuple[Any, ...]]] = {}
    with connect(target) as conn:
        for projection in all_projections():
            [status] = base.status(conn, [projection])
            assert status.generation is not None
            for name in projection.tables:
                table = base.Tables(status.generation)[name]
                # A count that went back to zero stays as a row live; a rebuild never writes it.
                where = sql.SQL(" WHERE orders <> 0" if name == "all_sales_counts" else "")
                rows = conn.execute(sql.SQL("SELECT * FROM {}{}").format(table, where)).fetchall()
                result[name] = sorted(rows, key=repr)
    return result


def _positions(target: PostgresTarget) -> dict[str, tuple[int, int]]:
    with connect(target) as conn:
        return {row.name: (row.position, row.head) for row in base.status(conn, all_projections())}


def _wait(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", "worker", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _wait_active(worker: subprocess.Popen[str], names: set[str]) -> None:
    assert worker.stdout is not None
    waiting = set(names)
    for line in worker.stdout:
        waiting.discard(line.removeprefix("ledger: ").removesuffix(" active\n"))
        if not waiting:
            return
    pytest.fail(f"the worker exited before {waiting} became active")


@pytest.mark.slow
def test_kill_9_of_a_worker_mid_batch_resumes_to_a_rebuild(
    cli_env: dict[str, str], own_target: PostgresTarget, store: Ledger
) -> None:
    """Every projection's worker killed mid-batch while commands arrive: after a restart each view equals a rebuild."""
    names = {p.name for p in all_projections()}
    _fill(store, 250, seed=1)
    worker = _start_worker(cli_env, "--batch-size", "40")
    stop = threading.Event()
    written = [0]

    def write() -> None:  # commands keep arriving while the worker works and dies
        writer = Ledger(env=own_target.eventsourcing_env())
        try:
            seed = 2
            while not stop.is_set() and written[0] < 100:
                _fill(writer, 20, seed=seed)
                written[0] += 20
                seed += 1
        finally:
            writer.close()

    writer = threading.Thread(target=write)
    writer.start()
    killed_at: dict[str, tuple[int, int]] = {}
    try:
        _wait_active(worker, names)
        _wait(lambda: _positions(own_target)["all_sales"][0] > 120)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        killed_at = _positions(own_target)
        worker = _start_worker(cli_env)
        _wait_active(worker, names)
    finally:
        stop.set()
        writer.join()
    try:
        head = max(h for _, h in _positions(own_target).values())
        _wait(lambda: all(p == head for p, _ in _positions(own_target).values()))
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    assert any(0 < p < h for p, h in killed_at.values()), f"killed after catching up: {killed_at}"
    resumed = _snapshot(own_target)
    for projection in all_projections():
        base.rebuild(projection, lambda: connect(own_target), store.recorder, store.mapper)
    rebuilt = _snapshot(own_target)
    for name in resumed:
        assert resumed[name] == rebuilt[name], f"{name} differs from a rebuild"
    behind = ", ".join(f"{name} at {p}/{h}" for name, (p, h) in sorted(killed_at.items()))
    report(
        f"kill -9 of a worker mid-batch ({behind}; {250 + written[0]} orders, {head} events):"
        f" resumed views equal a rebuild in all {sum(len(p.tables) for p in all_projections())} tables"
    )

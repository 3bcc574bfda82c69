"""`ledger serve` as a process over real HTTP: SIGTERM lets an in-flight request finish, then exits 0.

The slow request is a read-your-writes list waiting for a log position no projection worker has applied: the
server runs without workers, and the test starts `ledger worker` only after SIGTERM, so the answer (200 with the
new order) proves that the request stayed in flight through the shutdown and was answered in full.
"""

from __future__ import annotations

import json
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import msgspec
import pytest

from ledger.aggregates.values import Context, Marketplace, Role
from ledger.api.bodies.schemas import OrderIn
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget, connect
from ledger.projections.all_sales import AllSalesProjection
from ledger.projections.base import install

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
CTX = Context(actor="e2e")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _wait_waiting(target: PostgresTarget, application_name: str) -> None:
    """Until a session of the server (by its application_name) waits for a projection to apply a position: its
    last statement reads projection_state, which only a read-your-writes wait does in a server without workers."""
    deadline = time.monotonic() + 60
    with connect(target, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND query LIKE %s",
                (application_name, "SELECT position FROM projection_state %"),
            ).fetchone()
            if row and row[0]:
                return
            assert time.monotonic() < deadline, "the list never started waiting on the server"
            time.sleep(0.05)


def _order(account_id: Any) -> Any:
    body = {
        "account_id": str(account_id),
        "marketplace_order_id": f"MO-{secrets.token_hex(5)}",
        "purchased_at": "2026-11-20T10:00:00Z",
        "currency": "USD",
        "payment_status": "paid",
        "buyer": {"name": "Ann Lee", "email": "ann@example.com"},
        "lines": [{"line_id": "1", "sku": "MUG-1", "quantity": 1, "unit_price": "12.50"}],
    }
    return msgspec.convert(body, OrderIn).to_domain()


def test_sigterm_lets_the_in_flight_request_finish_and_exits_zero(
    own_target: PostgresTarget, cli_env: dict[str, str]
) -> None:
    """A list waiting on min_position when SIGTERM comes still answers 200 with the order; exit status 0."""
    ledger = Ledger(env=own_target.eventsourcing_env())
    try:
        seller = f"seller-{secrets.token_hex(4)}"
        secret, _ = ledger.create_api_key(CTX, seller=seller, role=Role.ADMIN)
        account = ledger.register_account(CTX, seller=seller, marketplace=Marketplace.JET, name="main")
        port = _free_port()
        with connect(own_target) as conn:  # the view exists (empty) before the server reads it
            install(conn, AllSalesProjection())
        env = cli_env | {
            "PYTHONPATH": ":".join(sys.path),
            "LEDGER_GRACEFUL_TIMEOUT": "60",
            "LEDGER_READ_MAX_WAIT": "50",  # the worker starting below must beat the read's bound, however slow
        }
        server_name = f"ledger-shutdown-test-{secrets.token_hex(4)}"
        server = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "serve", "--no-workers", "--port", str(port)],
            env=env | {"PGAPPNAME": server_name},  # its sessions, found in pg_stat_activity
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        worker: subprocess.Popen[str] | None = None
        try:
            _wait_ready(f"http://127.0.0.1:{port}/healthz")
            imported = ledger.import_order(CTX, account.account_id, _order(account.account_id))
            position = imported.notification_id
            answer: dict[str, Any] = {}

            def slow_list() -> None:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/orders?min_position={position}",
                    headers={"Authorization": f"Bearer {secret}"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=90) as response:
                        answer["status"] = response.status
                        answer["body"] = json.loads(response.read())
                except urllib.error.HTTPError as e:
                    answer["status"] = e.code
                    answer["body"] = e.read().decode()

            reader = threading.Thread(target=slow_list)
            reader.start()
            _wait_waiting(own_target, server_name)  # the request is in flight, waiting, before SIGTERM
            server.send_signal(signal.SIGTERM)
            worker = subprocess.Popen(
                [sys.executable, "-m", "ledger.cli", "worker", "--projection", "all_sales"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            reader.join(timeout=90)
            assert answer.get("status") == 200, answer
            assert str(imported.order_id) in {item["order_id"] for item in answer["body"]["items"]}
            assert server.wait(timeout=60) == 0
            assert server.stdout is not None
            assert "ledger: stopped" in server.stdout.read()
        finally:
            for process in (server, worker):
                if process is not None and process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
    finally:
        ledger.close()


def test_serve_with_two_processes_answers_and_stops_on_sigterm(
    own_target: PostgresTarget, cli_env: dict[str, str]
) -> None:
    """`ledger serve --processes 2`: both workers serve the same database; SIGTERM stops them all, exit 0."""
    ledger = Ledger(env=own_target.eventsourcing_env())
    try:
        seller = f"seller-{secrets.token_hex(4)}"
        secret, _ = ledger.create_api_key(CTX, seller=seller, role=Role.ADMIN)
        port = _free_port()
        env = cli_env | {"PYTHONPATH": ":".join(sys.path)}
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ledger.cli",
                "serve",
                "--no-workers",
                "--processes",
                "2",
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_ready(f"http://127.0.0.1:{port}/healthz")
            created = []
            for name in ("one", "two", "three", "four"):
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/accounts",
                    data=json.dumps({"marketplace": "jet", "name": name}).encode(),
                    headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
                    method="POST",
                )
                with urllib.request.urlopen(request, timeout=30) as response:
                    assert response.status == 201
                    created.append(json.loads(response.read())["account_id"])
            assert sorted(str(a.account_id) for a in ledger.list_accounts(seller)) == sorted(created)
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=60) == 0
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    finally:
        ledger.close()

"""Database faults under load: PostgreSQL stopped and started again, and the API's connections terminated.

While the server is down the API answers 503 with Retry-After (never a 500) and fails fast; once it is back the
same `ledger serve` process recovers by itself (no restart), its projection workers catch up, and no
acknowledged write is lost. `pg_terminate_backend` of the API's connections mid-load gives clean answers
(retried, or 503) and loses nothing. The restart test runs an embedded PostgreSQL of its own: the session's
server is never stopped.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from rel_support import (
    PROBLEM,
    UPS_TRACKING,
    assert_no_500,
    database_url,
    make_seller,
    order_body,
    report,
    served,
)

from ledger.aggregates.values import Marketplace, Role
from ledger.application.ledger import Ledger
from ledger.eventstore.database import EmbeddedPostgres, PostgresTarget, ensure_schema

LOAD_CLIENTS = 4


@pytest.fixture
def private_server() -> Iterator[tuple[EmbeddedPostgres, PostgresTarget]]:
    """An embedded PostgreSQL of this test's own (its handle, and a target in schema `rel`)."""
    data_dir = Path(tempfile.mkdtemp(prefix="ledger-test-pg-rel-"))
    server = EmbeddedPostgres(data_dir)
    try:
        target = dataclasses.replace(server.start(), schema="rel")
        ensure_schema(target)
        yield server, target
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _env(target: PostgresTarget) -> dict[str, str]:
    return {"LEDGER_DATABASE_URL": database_url(target), "LEDGER_DATABASE_SCHEMA": target.schema}


class Load:
    """Clients importing new orders (and reading the list) until stopped; every answer is kept."""

    def __init__(self, url: str, headers: dict[str, str], account_id: UUID) -> None:
        self.url, self.headers, self.account_id = url, headers, account_id
        self.answers: list[tuple[float, str, int, dict[str, str], Any]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.errors: list[str] = []  # a client that failed outside HTTP (a bad answer body, a timeout)
        self.threads = [threading.Thread(target=self._guarded, args=(k,)) for k in range(LOAD_CLIENTS)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _guarded(self, k: int) -> None:
        try:
            self._client(k)
        except Exception as e:
            self.errors.append(repr(e))

    def _client(self, k: int) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                if n % 4 == 0:
                    kind, response = "list", http.get("/v1/orders?limit=5", headers=self.headers)
                else:
                    body = order_body(self.account_id)
                    kind, response = "import", http.post("/v1/orders", json=body, headers=self.headers)
                with self.lock:
                    self.answers.append(
                        (
                            time.monotonic(),
                            kind,
                            response.status_code,
                            dict(response.headers),
                            response.json(),
                        )
                    )
                if response.status_code == 503:
                    time.sleep(0.05)

    def since(self, moment: float) -> list[tuple[float, str, int, dict[str, str], Any]]:
        with self.lock:
            return [a for a in self.answers if a[0] >= moment]

    def wait_for(self, moment: float, status: int, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while sum(1 for a in self.since(moment) if a[2] == status) < count:
            assert time.monotonic() < deadline, Counter(a[2] for a in self.since(moment))
            time.sleep(0.05)


@pytest.mark.slow
def test_postgres_restart_under_load(
    private_server: tuple[EmbeddedPostgres, PostgresTarget], tmp_path: Path
) -> None:
    """PostgreSQL stops mid-load: 503 + Retry-After while down; the same process recovers; nothing acked is lost."""
    server, target = private_server
    setup = Ledger(env=target.eventsourcing_env())
    seller = make_seller(setup)
    setup.close()
    account_id = seller.accounts[Marketplace.WALMART]
    with served(_env(target), tmp_path, workers=True) as service:
        with Load(service.url, seller.auth(), account_id) as load:
            load.wait_for(0, 201, 100)
            down_at = time.monotonic()
            server.stop()  # ours is the only handle: the server shuts down
            load.wait_for(down_at, 503, 10)
            server.start()
            up_at = time.monotonic()
            load.wait_for(up_at, 201, 50)
            recovered_after = min(a[0] for a in load.since(up_at) if a[2] == 201) - up_at
        assert service.process.poll() is None, "the service died: it must recover without a restart"
        assert not load.errors, load.errors
        statuses = Counter(a[2] for a in load.answers)
        assert set(statuses) <= {200, 201, 503}, statuses
        for _, _, status, headers, body in load.answers:
            if status == 503:
                assert int(headers["retry-after"]) > 0
                assert body["type"] in {PROBLEM + "database-unavailable", PROBLEM + "read-model-unavailable"}
        acked = {
            body["order_id"]
            for _, kind, status, _, body in load.answers
            if kind == "import" and status in {200, 201}
        }
        with httpx.Client(base_url=service.url, timeout=30) as http:
            found = sum(
                1
                for order_id in acked
                if http.get(f"/v1/orders/{order_id}", headers=seller.auth()).status_code == 200
            )
            newest = max((a for a in load.answers if a[1] == "import" and a[2] == 201), key=lambda a: a[0])[
                4
            ]["order_id"]
            deadline = time.monotonic() + 30
            while True:  # the workers in the same process catch up by themselves
                listed = http.get("/v1/orders?limit=500", headers=seller.auth(Role.AUDITOR)).json()
                if newest in {item["order_id"] for item in listed.get("items", [])}:
                    break
                assert time.monotonic() < deadline, "the All Sales view never caught up after the restart"
                time.sleep(0.2)
    assert found == len(acked)
    assert_no_500(service.log)
    sent = len(load.answers)
    report(
        f"PostgreSQL stopped and restarted under load ({LOAD_CLIENTS} clients): {sent} requests,"
        f" {statuses[201] + statuses[200]} acknowledged, {statuses[503]} x 503 with Retry-After while down,"
        f" 0 x 500; same process served again {recovered_after:.1f} s after the restart;"
        f" {len(acked)} acknowledged imports, {found} found afterwards, lost 0"
    )


@pytest.mark.slow
def test_terminated_backends_mid_load(cli_env: dict[str, str], store: Ledger, tmp_path: Path) -> None:
    """pg_terminate_backend of every API connection, again and again, mid-load: no 500, nothing acked lost."""
    seller = make_seller(store)
    app_name = f"ledger-rel-{secrets.token_hex(4)}"
    env = cli_env | {"PGAPPNAME": app_name}
    conninfo = store.recorder.datastore.pool.kwargs  # type: ignore[attr-defined]
    admin = {k: v for k, v in conninfo.items() if k != "row_factory"}
    with served(env, tmp_path) as service, httpx.Client(base_url=service.url, timeout=60) as http:
        targets = []
        for _ in range(6):
            body = order_body(seller.accounts[Marketplace.RAKUTEN])
            body["lines"][0]["quantity"] = 500
            response = http.post("/v1/orders", json=body, headers=seller.auth())
            assert response.status_code == 201, response.text
            targets.append(response.json()["order_id"])
        answers: list[tuple[str, str, int, Any]] = []
        lock = threading.Lock()
        stop = threading.Event()

        errors: list[str] = []

        def client(k: int) -> None:
            try:
                load(k)
            except Exception as e:
                errors.append(repr(e))

        def load(k: int) -> None:
            with httpx.Client(base_url=service.url, timeout=60) as own:
                n = 0
                while not stop.is_set():
                    n += 1
                    key = f"rel-{k}-{n}"
                    if n % 2:
                        order_id = targets[(k + n) % len(targets)]
                        body: dict[str, Any] = {"carrier": "ups", "tracking_number": UPS_TRACKING,
                                                "lines": [{"line_id": "1", "quantity": 1}]}  # fmt: skip
                        response = own.post(f"/v1/orders/{order_id}/shipments", json=body,
                                            headers=seller.auth(Role.OPERATOR) | {"Idempotency-Key": key})  # fmt: skip
                        kind = "ship"
                    else:
                        body = order_body(seller.accounts[Marketplace.RAKUTEN])
                        response = own.post(
                            "/v1/orders", json=body, headers=seller.auth() | {"Idempotency-Key": key}
                        )
                        kind = "import"
                    with lock:
                        answers.append((kind, key, response.status_code, response.json()))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(LOAD_CLIENTS)]
        for thread in threads:
            thread.start()
        terminated = 0
        try:
            with psycopg.connect(**admin, autocommit=True) as conn:
                deadline = time.monotonic() + 4
                while time.monotonic() < deadline:
                    rows = conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                        (app_name,),
                    ).fetchall()
                    terminated += sum(1 for (done,) in rows if done)
                    time.sleep(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert not errors, errors
        statuses = Counter(status for _, _, status, _ in answers)
        assert set(statuses) <= {200, 201, 503}, statuses
        assert terminated > 0
        acked_ships = [body for kind, _, status, body in answers if kind == "ship" and status == 201]
        acked_imports = [
            body for kind, _, status, body in answers if kind == "import" and status in {200, 201}
        ]
        found = 0
        for body in acked_ships:
            history = {e.version: e for e in store.order_history(UUID(body["order_id"]), seller.name)}
            first = body["version"] - len(body["events"]) + 1
            assert history[first].type == "Shipped"
            assert str(history[first].data["shipment_id"]) == body["shipment_id"]
            found += 1
        for body in acked_imports:
            store.get_order(UUID(body["order_id"]), seller.name)
            found += 1
        shipped = sum(
            1
            for order_id in targets
            for e in store.order_history(UUID(order_id), seller.name)
            if e.type == "Shipped"
        )
        sent_ships = sum(1 for kind, _, _, _ in answers if kind == "ship")
        assert (
            len(acked_ships) <= shipped <= sent_ships
        )  # an unanswered (503) ship may have committed: never more
    assert_no_500(service.log)
    report(
        f"pg_terminate_backend x {terminated} of the API's connections mid-load: {len(answers)} commands sent,"
        f" {len(acked_ships) + len(acked_imports)} acknowledged, {found} found afterwards, lost 0;"
        f" {statuses[503]} x 503, 0 x 500"
    )

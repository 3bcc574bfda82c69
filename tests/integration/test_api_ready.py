"""`/readyz`: ready while every projection is within the lag bounds; 503 naming each one behind otherwise."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import Seller, order_body
from litestar.testing import TestClient
from order_scenarios import catch_up

from ledger.aggregates.values import Marketplace
from ledger.application.ledger import Ledger
from ledger.projections import base
from ledger.projections.registry import all_projections

pytestmark = pytest.mark.postgres
NAMES = {p.name for p in all_projections()}


def _catch_up_all(connect: base.Connect, ledger: Ledger) -> None:
    for projection in all_projections():
        catch_up(projection, connect, ledger, 2000)


def _import(client: TestClient[Any], seller: Seller, count: int) -> None:
    for _ in range(count):
        body = order_body(seller.accounts[Marketplace.WALMART])
        assert client.post("/v1/orders", json=body, headers=seller.auth()).status_code == 201


def test_ready_within_the_event_bound_and_503_past_it(
    client: TestClient[Any], seller: Seller, connect: base.Connect, api_ledger: Ledger
) -> None:
    """Caught up: 200 with each lag; past LEDGER_READY_MAX_LAG events: 503 naming every projection behind."""
    client.app.state.ready_max_lag = 3
    _catch_up_all(connect, api_ledger)
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["projections"] == dict.fromkeys(NAMES, 0)
    _import(client, seller, 4)
    behind = client.get("/readyz")
    assert behind.status_code == 503
    assert behind.headers["Retry-After"] == "5"
    body = behind.json()
    assert body["status"] == "unavailable"
    assert body["database"] == "reachable"
    assert set(body["behind"]) == NAMES
    assert all("events behind (bound 3)" in why for why in body["behind"].values())
    _catch_up_all(connect, api_ledger)
    assert client.get("/readyz").status_code == 200


def test_a_projection_without_progress_past_the_seconds_bound_is_not_ready(
    client: TestClient[Any], seller: Seller, connect: base.Connect, api_ledger: Ledger
) -> None:
    """Few events behind but no progress for longer than LEDGER_READY_MAX_LAG_SECONDS: 503, and why."""
    client.app.state.ready_max_lag = 10**9
    client.app.state.ready_max_lag_seconds = 0.001
    _catch_up_all(connect, api_ledger)
    assert client.get("/readyz").status_code == 200
    _import(client, seller, 1)
    behind = client.get("/readyz")
    assert behind.status_code == 503
    assert all("no progress for" in why for why in behind.json()["behind"].values())

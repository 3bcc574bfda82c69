"""Reads from a real streaming replica (LEDGER_READ_DATABASE_URL): All Sales, order reads and the change feed come
from the replica, and a read carrying `min_position` waits for the replica's replay, then answers 503."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from api_support import UPS_TRACKING, Seller, make_seller, order_body
from litestar.testing import TestClient
from order_scenarios import catch_up
from replica_support import Pair, primary_and_replica

from ledger.aggregates.values import Marketplace
from ledger.api.app import create_app
from ledger.application.ledger import Ledger
from ledger.eventstore import database
from ledger.feed.index import FeedProjection
from ledger.projections.all_sales import AllSalesProjection

pytestmark = pytest.mark.slow  # starts two PostgreSQL servers of its own (not the run's server)
PROBLEM = "https://ledger.dev/problems/"


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with primary_and_replica("ledger_replica") as servers:
        database.ensure_schema(servers.primary)
        yield servers


@pytest.fixture
def ledger(pair: Pair) -> Iterator[Ledger]:
    app = Ledger(env=pair.primary.eventsourcing_env())
    yield app
    app.close()


@pytest.fixture
def client(pair: Pair, ledger: Ledger) -> Iterator[TestClient[Any]]:
    with TestClient(create_app(pair.primary, ledger=ledger, replica=pair.replica)) as test_client:
        yield test_client


def _project(pair: Pair, ledger: Ledger) -> None:
    """The workers' part, on the primary: bring All Sales and the feed's index up to the log's head."""
    for projection in (AllSalesProjection(), FeedProjection()):
        catch_up(projection, lambda: database.connect(pair.primary), ledger, 500)


def _command(client: TestClient[Any], seller: Seller, path: str, body: dict[str, Any]) -> tuple[str, int]:
    response = client.post(path, json=body, headers=seller.auth())
    assert response.status_code == 201, response.text
    return response.json()["order_id"], int(response.headers["Ledger-Position"])


def _replay(pair: Pair, action: str) -> None:
    with psycopg.connect(pair.replica.conninfo(), autocommit=True) as conn:
        conn.execute(f"SELECT pg_wal_replay_{action}()")


def test_reads_with_a_position_see_the_write_and_wait_for_a_paused_replica(
    pair: Pair, ledger: Ledger, client: TestClient[Any]
) -> None:
    """A write then a read with its position sees the write on the replica (order, All Sales, feed); with replay
    paused the read waits and answers 503 replica-behind with Retry-After (a read without a position shows the
    replica's older state); once replay resumes the same read answers 200 with the write."""
    seller = make_seller(ledger)
    order_id, _ = _command(client, seller, "/v1/orders", order_body(seller.accounts[Marketplace.EBAY]))
    _, shipped_at = _command(
        client,
        seller,
        f"/v1/orders/{order_id}/shipments",
        {"carrier": "ups", "tracking_number": UPS_TRACKING},
    )
    _project(pair, ledger)

    order = client.get(f"/v1/orders/{order_id}?min_position={shipped_at}", headers=seller.auth())
    assert order.status_code == 200, order.text
    assert order.json()["status"] == "shipped"
    listed = client.get(f"/v1/orders?min_position={shipped_at}", headers=seller.auth())
    assert listed.status_code == 200, listed.text
    assert [i["status"] for i in listed.json()["items"] if i["order_id"] == order_id] == ["shipped"]
    feed = client.get(f"/v1/events?min_position={shipped_at}", headers=seller.auth())
    assert feed.status_code == 200, feed.text
    assert [i["type"] for i in feed.json()["items"]] == ["Imported", "Shipped"]

    _replay(pair, "pause")
    try:
        client.app.state.read_wait_seconds = 0.5
        second = order_body(seller.accounts[Marketplace.EBAY])
        later_id, later_at = _command(client, seller, "/v1/orders", second)
        behind = client.get(f"/v1/orders/{later_id}?min_position={later_at}", headers=seller.auth())
        assert behind.status_code == 503, behind.text
        assert behind.headers["Retry-After"] == "1"
        assert behind.json()["type"] == PROBLEM + "replica-behind"
        stale = client.get(f"/v1/orders/{later_id}", headers=seller.auth())
        assert stale.status_code == 404, "without a position the read is the paused replica's, which lacks it"
        _project(pair, ledger)
        listed_behind = client.get(f"/v1/orders?min_position={later_at}", headers=seller.auth())
        assert listed_behind.status_code == 503
        assert listed_behind.json()["type"] == PROBLEM + "replica-behind"
    finally:
        _replay(pair, "resume")

    client.app.state.read_wait_seconds = 30
    caught_up = client.get(f"/v1/orders/{later_id}?min_position={later_at}", headers=seller.auth())
    assert caught_up.status_code == 200, caught_up.text
    assert caught_up.json()["marketplace_order_id"] == second["marketplace_order_id"]
    listed = client.get(f"/v1/orders?min_position={later_at}", headers=seller.auth())
    assert listed.status_code == 200, listed.text
    assert later_id in {i["order_id"] for i in listed.json()["items"]}


def test_a_position_past_the_log_is_422_with_a_replica(
    pair: Pair, ledger: Ledger, client: TestClient[Any]
) -> None:
    """A position no command gave (past the primary's head) is refused at once, as without a replica."""
    seller = make_seller(ledger)
    beyond = (ledger.recorder.max_notification_id() or 0) + 1_000_000
    response = client.get(f"/v1/orders?min_position={beyond}", headers=seller.auth())
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "min_position"

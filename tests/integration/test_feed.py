"""The change feed over HTTP: every event of the seller's exactly once and in log order under concurrent writers,
seller isolation, filters, long polls, the event stream's resume, and erased buyer fields."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx
import pytest
import uvicorn
from api_support import CTX, UPS_TRACKING, Seller, make_seller, order_body
from litestar.testing import TestClient
from order_scenarios import catch_up

from ledger.aggregates.values import (
    Buyer,
    Carrier,
    ImportedOrder,
    Marketplace,
    OrderLine,
    PaymentStatus,
    Role,
)
from ledger.api.app import create_app
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget
from ledger.eventstore.keys_store import ERASED, forget
from ledger.feed.index import FeedProjection
from ledger.projections import base
from ledger.projections.base import ProjectionWorker

pytestmark = pytest.mark.postgres

FEED = FeedProjection()


def _import(client: TestClient[Any], seller: Seller, **changes: Any) -> UUID:
    response = client.post(
        "/v1/orders", json=order_body(seller.accounts[Marketplace.AMAZON], **changes), headers=seller.auth()
    )
    assert response.status_code == 201, response.text
    return UUID(response.json()["order_id"])


def _ship(client: TestClient[Any], seller: Seller, order_id: UUID) -> None:
    response = client.post(
        f"/v1/orders/{order_id}/shipments",
        json={"carrier": "ups", "tracking_number": UPS_TRACKING},
        headers=seller.auth(),
    )
    assert response.status_code == 201, response.text


def _page(client: TestClient[Any], seller: Seller, query: str, role: Role = Role.AUDITOR) -> dict[str, Any]:
    response = client.get(f"/v1/events?{query}", headers=seller.auth(role))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _seller_positions(connect: base.Connect, order_ids: set[UUID]) -> list[int]:
    """The log positions of these orders' events, read from the events table itself."""
    with connect() as conn:
        found = conn.execute(
            "SELECT notification_id FROM ledger_events WHERE originator_id = ANY(%s) ORDER BY notification_id",
            (list(order_ids),),
        ).fetchall()
    return [int(row[0]) for row in found]


def test_every_event_once_in_order_under_concurrent_writers(
    client: TestClient[Any], api_ledger: Ledger, connect: base.Connect
) -> None:
    """Writers in threads while a worker indexes and a consumer pages with random sizes and restarts: the
    consumer sees each of its seller's events exactly once, in log order, and none of another seller's."""
    rng = random.Random(15)
    seller, other = make_seller(api_ledger), make_seller(api_ledger)
    worker = ProjectionWorker(FEED, connect, api_ledger.recorder, api_ledger.mapper, batch_size=7)
    worker_thread = threading.Thread(target=worker.run, daemon=True)
    worker_thread.start()
    order_ids: dict[str, set[UUID]] = {seller.name: set(), other.name: set()}
    lock = threading.Lock()

    def write(who: Seller, seed: int) -> None:
        local = random.Random(seed)
        for n in range(12):
            result = api_ledger.import_order(CTX, who.accounts[Marketplace.EBAY], _imported(f"W{seed}-{n}"))
            with lock:
                order_ids[who.name].add(result.order_id)
            if local.random() < 0.6:
                api_ledger.ship(CTX, result.order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)

    writers = [
        threading.Thread(target=write, args=(who, n)) for n, who in enumerate([seller, other, seller, seller])
    ]
    for thread in writers:
        thread.start()
    seen: list[dict[str, Any]] = []
    after = 0
    try:
        while any(t.is_alive() for t in writers) or len(seen) < len(
            _seller_positions(connect, order_ids[seller.name])
        ):
            if rng.random() < 0.2:  # a restart: the consumer keeps only the position it stored
                after = seen[-1]["position"] if seen and rng.random() < 0.5 else after
            page = _page(
                client, seller, f"after={after}&limit={rng.randint(1, 9)}&wait={rng.choice([0, 0, 1])}"
            )
            seen += page["items"]
            after = page["next_after"]
    finally:
        worker.stop()
        worker_thread.join()
    positions = [item["position"] for item in seen]
    assert positions == _seller_positions(connect, order_ids[seller.name])
    assert {UUID(item["order_id"]) for item in seen} == order_ids[seller.name]
    assert len({item["event_id"] for item in seen}) == len(seen)


def _imported(marketplace_order_id: str) -> ImportedOrder:
    return ImportedOrder(
        marketplace_order_id=marketplace_order_id,
        purchased_at=datetime(2026, 11, 20, 10, tzinfo=UTC),
        currency="USD",
        payment_status=PaymentStatus.PAID,
        buyer=Buyer("Ann Lee", "ann@example.com"),
        lines=(OrderLine("1", "MUG-1", 1, Decimal("12.50")),),
    )


def test_items_carry_the_event_as_history_shows_it(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger, connect: base.Connect
) -> None:
    """An item has its position, a stable event id, the order's account and marketplace, and the history's fields."""
    order_id = _import(client, seller)
    _ship(client, seller, order_id)
    catch_up(FEED, connect, api_ledger, 500)
    page = _page(client, seller, f"order_id={order_id}", Role.FINANCE)
    history = client.get(f"/v1/orders/{order_id}/history", headers=seller.auth()).json()["events"]
    again = _page(client, seller, f"order_id={order_id}")

    assert [i["type"] for i in page["items"]] == ["Imported", "Shipped"]
    first = page["items"][0]
    assert first["account_id"] == str(seller.accounts[Marketplace.AMAZON])
    assert first["marketplace"] == "amazon"
    assert first["data"]["buyer"] == {"name": "Ann Lee", "email": "ann@example.com"}
    for item, entry in zip(page["items"], history, strict=True):
        assert {k: item[k] for k in ("version", "type", "actor", "source", "data")} == {
            k: entry[k] for k in ("version", "type", "actor", "source", "data")
        }
    assert [i["event_id"] for i in again["items"]] == [i["event_id"] for i in page["items"]]
    assert page["next_after"] >= page["items"][-1]["position"]


def test_the_feed_is_the_sellers_own(
    client: TestClient[Any], seller: Seller, other_seller: Seller, api_ledger: Ledger, connect: base.Connect
) -> None:
    """Another seller's events never appear, not even when asked for by order id; roles that read orders may read."""
    mine = _import(client, seller)
    theirs = _import(client, other_seller)
    catch_up(FEED, connect, api_ledger, 500)
    start = max(0, _seller_positions(connect, {mine, theirs})[0] - 1)

    page = _page(client, seller, f"after={start}&limit=1000")
    foreign = _page(client, seller, f"order_id={theirs}")
    denied = client.get("/v1/events", headers=seller.auth(Role.INTEGRATION))

    assert {i["order_id"] for i in page["items"]} == {str(mine)}
    assert foreign["items"] == []
    assert denied.status_code == 403


def test_types_filter_and_bad_parameters(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger, connect: base.Connect
) -> None:
    """`types` keeps only those types; an unknown type is 422, a limit or wait out of range is refused."""
    order_id = _import(client, seller)
    _ship(client, seller, order_id)
    catch_up(FEED, connect, api_ledger, 500)

    shipped = _page(client, seller, f"order_id={order_id}&types=Shipped")
    unknown = client.get("/v1/events?types=Shipped,Teleported", headers=seller.auth())
    statuses = {
        client.get(f"/v1/events?{query}", headers=seller.auth()).status_code
        for query in ("limit=0", "limit=1001", "wait=31", "after=-1")
    }

    assert [i["type"] for i in shipped["items"]] == ["Shipped"]
    assert unknown.status_code == 422
    assert "Teleported" in unknown.json()["detail"]
    assert statuses <= {400, 422}


def test_long_poll_answers_when_an_event_arrives(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger, connect: base.Connect
) -> None:
    """A `wait` request with nothing new is held and answers with the event indexed meanwhile."""
    catch_up(FEED, connect, api_ledger, 500)
    after = _page(client, seller, "limit=1000")["next_after"]
    answer: dict[str, Any] = {}

    def poll() -> None:
        answer.update(_page(client, seller, f"after={after}&wait=20"))

    poller = threading.Thread(target=poll)
    poller.start()
    order_id = _import(client, seller)
    catch_up(FEED, connect, api_ledger, 500)
    poller.join()

    assert [i["order_id"] for i in answer["items"]] == [str(order_id)]


def test_erased_buyer_fields_read_erased(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger, connect: base.Connect
) -> None:
    """After the buyer is forgotten, the import's buyer and address read [erased] in the feed."""
    email = f"gone-{seller.name}@example.com"
    order_id = _import(client, seller, buyer={"name": "Gone Buyer", "email": email})
    catch_up(FEED, connect, api_ledger, 500)
    before = _page(client, seller, f"order_id={order_id}")["items"][0]
    with connect() as conn:
        forget(conn, seller.name, email)

    after = _page(client, seller, f"order_id={order_id}")["items"][0]

    assert before["data"]["buyer"]["name"] == "Gone Buyer"
    assert after["data"]["buyer"] == {"name": ERASED, "email": ERASED}
    assert after["data"]["ship_to"]["line1"] == ERASED


# ------------------------------------------------------------------------------ the event stream


@pytest.fixture
def server_url(pg_target: PostgresTarget, api_ledger: Ledger) -> Iterator[str]:
    """The API served by uvicorn on a free local port (the stream needs a real HTTP connection)."""
    config = uvicorn.Config(
        create_app(pg_target, ledger=api_ledger), host="127.0.0.1", port=0, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive(), "the API server stopped"
        assert time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _stream(
    url: str, seller: Seller, count: int, headers: dict[str, str], query: str = ""
) -> list[dict[str, str]]:
    """The first `count` events of the stream, each as its SSE fields."""
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    with httpx.stream(
        "GET", f"{url}/v1/events/stream{query}", headers=seller.auth() | headers, timeout=20
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "data" in fields:
                    events.append(fields)
                    if len(events) == count:
                        return events
                fields = {}
                continue
            name, _, value = line.partition(":")
            if name:
                fields[name] = value.strip()
    return events


def test_the_stream_resumes_after_last_event_id(
    server_url: str, client: TestClient[Any], seller: Seller, api_ledger: Ledger, connect: base.Connect
) -> None:
    """Reconnecting with Last-Event-ID gives the events after it, none again; `?after=` starts alike."""
    order_ids = [_import(client, seller) for _ in range(3)]
    catch_up(FEED, connect, api_ledger, 500)
    start = _seller_positions(connect, set(order_ids))[0] - 1

    first = _stream(server_url, seller, 2, {}, f"?after={start}")
    rest = _stream(server_url, seller, 1, {"Last-Event-ID": first[-1]["id"]})
    _ship(client, seller, order_ids[0])
    catch_up(FEED, connect, api_ledger, 500)
    live = _stream(server_url, seller, 1, {"Last-Event-ID": rest[-1]["id"]})

    assert [e["event"] for e in first + rest] == ["Imported"] * 3
    assert [json.loads(e["data"])["order_id"] for e in first + rest] == [str(o) for o in order_ids]
    assert [int(e["id"]) for e in first + rest] == _seller_positions(connect, set(order_ids))[:3]
    assert live[0]["event"] == "Shipped"

"""Webhooks against a real receiver on 127.0.0.1: signed deliveries in position order, retries after 5xx and
timeouts, death after 24 h (an injected clock), a crash mid-delivery, SSRF refusals, isolation and the API."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from api_support import UPS_TRACKING, Seller, order_body
from litestar.testing import TestClient
from order_scenarios import catch_up

from ledger.aggregates.values import Marketplace, Role
from ledger.api.app import create_app
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget
from ledger.feed import webhooks
from ledger.feed.dispatcher import WebhookDispatcher
from ledger.feed.index import FeedProjection
from ledger.feed.urls import UrlPolicy
from ledger.projections import base

pytestmark = pytest.mark.postgres

LOCAL = UrlPolicy(allow_http=True, allow_private=True)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def item(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """A webhook receiver: answers each POST by the next action of `plan` (a status, ("sleep", s),
    ("probe", backend pid): note that session's transaction id and state in `probes`, then answer 200,
    ("delete", webhook id): delete that webhook, then answer 200, or
    ("kill", backend pid): end that database session, then answer 200), then `default`."""

    url: str
    received: list[Received] = field(default_factory=list)
    plan: list[Any] = field(default_factory=list)
    default: int = 200
    kill: Any = None
    probes: list[Any] = field(default_factory=list)


DATABASE_ACTIONS = {
    "probe": "SELECT backend_xid::text, state FROM pg_stat_activity WHERE pid = %s",
    "delete": 'DELETE FROM "{schema}".webhooks WHERE webhook_id = %s',
    "kill": "SELECT pg_terminate_backend(%s)",
}
# The receiver's plan actions that run a statement on the database before answering 200.


@pytest.fixture
def receiver(pg_target: PostgresTarget) -> Iterator[Receiver]:
    """A local HTTP receiver that records every request."""
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            action = state.plan.pop(0) if state.plan else state.default
            if isinstance(action, tuple) and action[0] == "sleep":
                time.sleep(action[1])
                action = 200
            if isinstance(action, tuple) and action[0] in DATABASE_ACTIONS:
                statement = DATABASE_ACTIONS[action[0]].format(schema=pg_target.schema)
                with psycopg.connect(pg_target.conninfo(), autocommit=True) as conn:
                    cursor = conn.execute(statement, (action[1],))
                    if action[0] == "probe":
                        state.probes.append(cursor.fetchone())
                action = 200
            self.send_response(action)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


class Clock:
    """The dispatcher's clock, moved by the test. It starts a little after the webhooks are made, in real time
    (a webhook is due from its creation, by the API's clock): 5 s leaves room for a slow machine."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC) + timedelta(seconds=5)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def local_client(pg_target: PostgresTarget, api_ledger: Ledger) -> Iterator[TestClient[Any]]:
    """The API with LEDGER_WEBHOOK_ALLOW_HTTP and _PRIVATE on (a receiver on 127.0.0.1)."""
    with TestClient(create_app(pg_target, ledger=api_ledger, webhook_urls=LOCAL)) as test_client:
        yield test_client
    with psycopg.connect(pg_target.conninfo(), autocommit=True) as conn:  # other tests' dispatchers skip them
        conn.execute(f'DELETE FROM "{pg_target.schema}".webhooks')


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_dispatcher(
    api_ledger: Ledger, connect: base.Connect, clock: Clock, timeout: float
) -> WebhookDispatcher:
    """A dispatcher on the injected clock, driven by the test (no threads), waiting `timeout` s for an answer."""
    return WebhookDispatcher(
        connect,
        api_ledger.mapper,
        api_ledger.personal_data,
        LOCAL,
        clock=clock,
        rng=random.Random(7),
        client=httpx.Client(timeout=timeout, trust_env=False),
    )


@pytest.fixture
def dispatcher(api_ledger: Ledger, connect: base.Connect, clock: Clock) -> Iterator[WebhookDispatcher]:
    """A dispatcher that waits 10 s for an answer: the receiver answers at once, but some of its actions open a
    database session first, which on a loaded machine took longer than the 0.5 s this used to allow."""
    hooks = make_dispatcher(api_ledger, connect, clock, 10.0)
    yield hooks
    hooks.stop()


def deliver(dispatcher: WebhookDispatcher, connect: base.Connect) -> int:
    with connect() as conn:
        conn.autocommit = True
        return dispatcher.deliver_due(conn)


def create_hook(client: TestClient[Any], seller: Seller, url: str, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/webhooks", json={"url": url, **body}, headers=seller.auth())
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def record_orders(
    client: TestClient[Any], seller: Seller, count: int, *, ship_first: bool = False
) -> list[str]:
    order_ids = []
    for _ in range(count):
        response = client.post(
            "/v1/orders", json=order_body(seller.accounts[Marketplace.WALMART]), headers=seller.auth()
        )
        assert response.status_code == 201, response.text
        order_ids.append(response.json()["order_id"])
    if ship_first:
        shipped = client.post(
            f"/v1/orders/{order_ids[0]}/shipments",
            json={"carrier": "ups", "tracking_number": UPS_TRACKING},
            headers=seller.auth(),
        )
        assert shipped.status_code == 201, shipped.text
    return order_ids


def deliveries(
    client: TestClient[Any], seller: Seller, webhook_id: str, query: str = ""
) -> list[dict[str, Any]]:
    response = client.get(f"/v1/webhooks/{webhook_id}/deliveries{query}", headers=seller.auth())
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def signature_ok(secret: str, received: Received) -> bool:
    parts = dict(part.split("=", 1) for part in received.headers["ledger-signature"].split(","))
    expected = hmac.new(
        secret.encode(), f"{parts['t']}.".encode() + received.body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


def test_deliveries_are_signed_in_order_and_retried_after_5xx(
    local_client: TestClient[Any],
    seller: Seller,
    receiver: Receiver,
    dispatcher: WebhookDispatcher,
    clock: Clock,
    connect: base.Connect,
    api_ledger: Ledger,
) -> None:
    """A 500 is retried later (not before its time); every event then arrives once more, in position order, signed."""
    hook = create_hook(local_client, seller, receiver.url, description="orders")
    receiver.plan = [500]
    record_orders(local_client, seller, 2, ship_first=True)
    catch_up(FeedProjection(), connect, api_ledger, 500)

    first_pass = deliver(dispatcher, connect)
    too_early = deliver(dispatcher, connect)
    failed = deliveries(local_client, seller, hook["webhook_id"])
    clock.advance(hours=1)
    second_pass = deliver(dispatcher, connect)

    assert (first_pass, too_early, second_pass) == (1, 0, 3)
    assert [(d["outcome"], d["status_code"], d["attempt"]) for d in failed] == [("failed", 500, 1)]
    items = [r.item for r in receiver.received]
    assert items[0]["event_id"] == items[1]["event_id"]
    positions = [i["position"] for i in items[1:]]
    assert positions == sorted(positions)
    assert len(set(positions)) == 3
    assert [i["type"] for i in items[1:]] == ["Imported", "Imported", "Shipped"]
    for received in receiver.received:
        assert signature_ok(hook["secret"], received)
        assert received.headers["ledger-event-id"] == received.item["event_id"]
        assert received.headers["ledger-event-type"] == received.item["type"]
        assert received.headers["content-type"] == "application/json"
    shown = local_client.get(f"/v1/webhooks/{hook['webhook_id']}", headers=seller.auth()).json()
    assert shown["position"] == positions[-1]
    assert "secret" not in shown


def test_a_timeout_is_a_failure_and_is_retried(
    local_client: TestClient[Any],
    seller: Seller,
    receiver: Receiver,
    clock: Clock,
    connect: base.Connect,
    api_ledger: Ledger,
) -> None:
    """A receiver that does not answer in time gets the same event again later."""
    hook = create_hook(local_client, seller, receiver.url)
    receiver.plan = [("sleep", 4.0)]  # twice the timeout: a slow machine only makes the answer later still
    record_orders(local_client, seller, 1)
    catch_up(FeedProjection(), connect, api_ledger, 500)
    dispatcher = make_dispatcher(api_ledger, connect, clock, 2.0)

    try:
        deliver(dispatcher, connect)
        clock.advance(minutes=30)
        deliver(dispatcher, connect)
    finally:
        dispatcher.stop()

    log = deliveries(local_client, seller, hook["webhook_id"])
    assert [(d["outcome"], d["status_code"]) for d in log] == [("succeeded", 200), ("failed", None)]
    assert "no answer" in log[1]["error"]
    assert len({r.item["event_id"] for r in receiver.received}) == 1


def test_an_event_is_dead_after_24_hours_and_the_next_one_goes(
    local_client: TestClient[Any],
    seller: Seller,
    receiver: Receiver,
    dispatcher: WebhookDispatcher,
    clock: Clock,
    connect: base.Connect,
    api_ledger: Ledger,
) -> None:
    """Failures back off with growing waits for 24 h; then the event is dead, listed, and the next one is sent."""
    hook = create_hook(local_client, seller, receiver.url)
    receiver.default = 503
    record_orders(local_client, seller, 2)
    catch_up(FeedProjection(), connect, api_ledger, 500)
    started = clock()

    for _ in range(200):
        deliver(dispatcher, connect)
        if deliveries(local_client, seller, hook["webhook_id"], "?outcome=dead"):
            break
        clock.advance(minutes=10)
    receiver.default = 200
    clock.advance(minutes=1)
    deliver(dispatcher, connect)

    [dead] = deliveries(local_client, seller, hook["webhook_id"], "?outcome=dead")
    failed = deliveries(local_client, seller, hook["webhook_id"], "?outcome=failed&limit=500")
    assert datetime.fromisoformat(dead["attempted_at"]) - started >= timedelta(hours=24)
    assert datetime.fromisoformat(dead["attempted_at"]) - started < timedelta(hours=25)
    times = sorted(datetime.fromisoformat(d["attempted_at"]) for d in failed)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[-1] > gaps[0]
    events = [r.item["event_id"] for r in receiver.received]
    assert list(dict.fromkeys(events)) == [dead["event_id"], events[-1]]
    assert events.count(dead["event_id"]) == dead["attempt"]


def test_a_crash_mid_delivery_redelivers_and_loses_nothing(
    local_client: TestClient[Any],
    seller: Seller,
    receiver: Receiver,
    dispatcher: WebhookDispatcher,
    connect: base.Connect,
    api_ledger: Ledger,
) -> None:
    """The dispatcher's session dies while a receiver answers: nothing of that claim was recorded, so its events
    are sent again (at least once), in order, each then recorded as delivered exactly once."""
    hook = create_hook(local_client, seller, receiver.url)
    record_orders(local_client, seller, 3)
    catch_up(FeedProjection(), connect, api_ledger, 500)

    with connect() as conn:
        conn.autocommit = True
        receiver.plan = [("kill", conn.info.backend_pid)]
        with pytest.raises(psycopg.OperationalError):
            dispatcher.deliver_one(conn)
    delivered = deliver(dispatcher, connect)

    events = [r.item["event_id"] for r in receiver.received]
    log = deliveries(local_client, seller, hook["webhook_id"])
    assert delivered == 3
    assert len(set(events)) == 3
    assert events[3:] == events[:3]
    assert sorted(d["event_id"] for d in log) == sorted(set(events))
    assert {d["outcome"] for d in log} == {"succeeded"}


def test_no_transaction_is_open_while_a_receiver_answers(
    local_client: TestClient[Any],
    seller: Seller,
    receiver: Receiver,
    dispatcher: WebhookDispatcher,
    connect: base.Connect,
    api_ledger: Ledger,
) -> None:
    """While a receiver takes its time, the dispatcher's session holds no transaction id: an open one would hold
    the log's commit horizon back, and with it every projection and the feed, for as long as receivers take."""
    hook = create_hook(local_client, seller, receiver.url)
    record_orders(local_client, seller, 2)
    catch_up(FeedProjection(), connect, api_ledger, 500)

    with connect() as conn:
        conn.autocommit = True
        receiver.plan = [("probe", conn.info.backend_pid), ("probe", conn.info.backend_pid)]
        delivered = dispatcher.deliver_one(conn)

    assert delivered == 2
    assert receiver.probes == [(None, "idle"), (None, "idle")]
    log = deliveries(local_client, seller, hook["webhook_id"])
    assert [d["outcome"] for d in log] == ["succeeded", "succeeded"]


def test_a_webhook_deleted_during_its_delivery_is_gone_for_good(
    local_client: TestClient[Any],
    seller: Seller,
    receiver: Receiver,
    dispatcher: WebhookDispatcher,
    connect: base.Connect,
    api_ledger: Ledger,
) -> None:
    """Deleting a webhook while its events are being delivered (nothing blocks the delete) records nothing of
    that claim, raises nothing, and nothing more is sent."""
    hook = create_hook(local_client, seller, receiver.url)
    record_orders(local_client, seller, 2)
    catch_up(FeedProjection(), connect, api_ledger, 500)
    receiver.plan = [("delete", hook["webhook_id"])]

    first = deliver(dispatcher, connect)
    sent = len(receiver.received)
    record_orders(local_client, seller, 1)
    catch_up(FeedProjection(), connect, api_ledger, 500)
    later = deliver(dispatcher, connect)

    assert (first, sent, later) == (2, 2, 0)
    gone = local_client.get(f"/v1/webhooks/{hook['webhook_id']}", headers=seller.auth())
    assert gone.status_code == 404
    with connect() as conn:
        logged = conn.execute(
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = %s", (hook["webhook_id"],)
        ).fetchone()
    assert logged == (0,)


def test_a_claimed_webhook_is_skipped_by_another_dispatcher(
    local_client: TestClient[Any],
    seller: Seller,
    receiver: Receiver,
    connect: base.Connect,
    api_ledger: Ledger,
) -> None:
    """While one dispatcher holds a webhook, another does not get it (its events wait: order per webhook); the hold
    is no transaction (no transaction id holds the log's horizon back), and ends with the block."""
    create_hook(local_client, seller, receiver.url)
    record_orders(local_client, seller, 1)
    catch_up(FeedProjection(), connect, api_ledger, 500)
    now = datetime.now(UTC) + timedelta(days=1)

    with connect() as first, connect() as second:
        first.autocommit = second.autocommit = True
        with webhooks.claim_due(first, now) as claimed:
            with webhooks.claim_due(second, now) as other:
                pass
            open_transactions = first.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = pg_backend_pid() AND backend_xid IS NOT NULL"
            ).fetchone()
        with webhooks.claim_due(second, now) as after:
            again = (
                after is not None
                and claimed is not None
                and after.webhook.webhook_id == claimed.webhook.webhook_id
            )

    assert claimed is not None
    assert other is None or other.webhook.webhook_id != claimed.webhook.webhook_id
    assert open_transactions == (0,)
    assert again


def test_types_filter_and_delete(
    local_client: TestClient[Any],
    seller: Seller,
    receiver: Receiver,
    dispatcher: WebhookDispatcher,
    clock: Clock,
    connect: base.Connect,
    api_ledger: Ledger,
) -> None:
    """A webhook for `Shipped` gets only shipments; a deleted webhook gets nothing more and is 404."""
    hook = create_hook(local_client, seller, receiver.url, types=["Shipped"])
    record_orders(local_client, seller, 2, ship_first=True)
    catch_up(FeedProjection(), connect, api_ledger, 500)
    deliver(dispatcher, connect)
    deleted = local_client.delete(f"/v1/webhooks/{hook['webhook_id']}", headers=seller.auth())
    record_orders(local_client, seller, 1, ship_first=True)
    catch_up(FeedProjection(), connect, api_ledger, 500)
    clock.advance(hours=1)
    deliver(dispatcher, connect)

    assert [r.item["type"] for r in receiver.received] == ["Shipped"]
    assert deleted.status_code == 204
    gone = local_client.get(f"/v1/webhooks/{hook['webhook_id']}", headers=seller.auth())
    assert gone.status_code == 404


def test_the_test_endpoint_sends_a_signed_ping(
    local_client: TestClient[Any], seller: Seller, receiver: Receiver
) -> None:
    """POST /test delivers a signed WebhookTest at once and answers with the logged attempt."""
    hook = create_hook(local_client, seller, receiver.url)

    response = local_client.post(f"/v1/webhooks/{hook['webhook_id']}/test", headers=seller.auth())

    assert response.status_code == 200, response.text
    assert (response.json()["outcome"], response.json()["status_code"]) == ("succeeded", 200)
    [received] = receiver.received
    assert received.item["type"] == "WebhookTest"
    assert signature_ok(hook["secret"], received)
    assert deliveries(local_client, seller, hook["webhook_id"])[0]["event_type"] == "WebhookTest"


def test_webhooks_are_the_sellers_own_and_admin_only(
    local_client: TestClient[Any], seller: Seller, other_seller: Seller, receiver: Receiver
) -> None:
    """Another seller's webhook is 404 everywhere; other roles are 403; listings never show the secret."""
    hook = create_hook(local_client, seller, receiver.url)
    path = f"/v1/webhooks/{hook['webhook_id']}"

    foreign = [
        local_client.get(path, headers=other_seller.auth()).status_code,
        local_client.get(f"{path}/deliveries", headers=other_seller.auth()).status_code,
        local_client.post(f"{path}/test", headers=other_seller.auth()).status_code,
        local_client.delete(path, headers=other_seller.auth()).status_code,
    ]
    operator = local_client.post(
        "/v1/webhooks", json={"url": receiver.url}, headers=seller.auth(Role.OPERATOR)
    )
    listed = local_client.get("/v1/webhooks", headers=seller.auth()).json()["items"]

    assert foreign == [404, 404, 404, 404]
    assert operator.status_code == 403
    assert [h["webhook_id"] for h in listed] == [hook["webhook_id"]]
    assert "secret" not in listed[0]
    assert hook["secret"].startswith("whsec_")
    assert receiver.received == []


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://127.0.0.1/hooks", "loopback"),
        ("https://10.0.0.8/hooks", "private"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
        ("https://localhost/hooks", "loopback"),
        ("http://hooks.example.com/in", "https://"),
    ],
)
def test_ssrf_refusals_when_made(client: TestClient[Any], seller: Seller, url: str, says: str) -> None:
    """Without the LEDGER_WEBHOOK_ALLOW_* settings, local addresses and http:// are 422 naming the reason."""
    response = client.post("/v1/webhooks", json={"url": url}, headers=seller.auth())

    assert response.status_code == 422, response.text
    assert says in response.text


def test_ssrf_refusal_at_delivery(
    local_client: TestClient[Any],
    seller: Seller,
    receiver: Receiver,
    clock: Clock,
    connect: base.Connect,
    api_ledger: Ledger,
) -> None:
    """A dispatcher under the strict policy does not call a URL that resolves to loopback: a failed attempt."""
    hook = create_hook(local_client, seller, receiver.url)
    record_orders(local_client, seller, 1)
    catch_up(FeedProjection(), connect, api_ledger, 500)
    strict = WebhookDispatcher(
        connect, api_ledger.mapper, api_ledger.personal_data, UrlPolicy(), clock=clock, rng=random.Random(1)
    )
    try:
        deliver(strict, connect)
    finally:
        strict.stop()

    [attempt] = deliveries(local_client, seller, hook["webhook_id"])
    assert attempt["outcome"] == "failed"
    assert attempt["error"].startswith("refused")
    assert receiver.received == []
    assert UUID(attempt["event_id"])


def test_the_dispatcher_threads_deliver_on_their_own(
    local_client: TestClient[Any],
    seller: Seller,
    receiver: Receiver,
    connect: base.Connect,
    api_ledger: Ledger,
) -> None:
    """Started, the dispatcher's threads wake on the feed's progress and deliver; stop() ends them."""
    create_hook(local_client, seller, receiver.url)
    hooks = WebhookDispatcher(connect, api_ledger.mapper, api_ledger.personal_data, LOCAL, threads=2)
    hooks.start()
    try:
        record_orders(local_client, seller, 2)
        catch_up(FeedProjection(), connect, api_ledger, 500)
        deadline = time.monotonic() + 30
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        hooks.stop()

    assert [r.item["type"] for r in receiver.received] == ["Imported", "Imported"]

"""Read-your-writes over HTTP: commands answer with `Ledger-Position`; lists wait for `min_position`, bounded."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from api_support import UPS_TRACKING, Seller, order_body
from litestar.testing import TestClient
from order_scenarios import catch_up

from ledger.aggregates.values import Marketplace, Role
from ledger.application.ledger import Ledger
from ledger.integrations.outbound import OutboundProjection
from ledger.projections import base
from ledger.projections.all_sales import AllSalesProjection

pytestmark = pytest.mark.postgres
PROBLEM = "https://ledger.dev/problems/"


def _ship(client: TestClient[Any], seller: Seller) -> tuple[str, int]:
    imported = client.post(
        "/v1/orders", json=order_body(seller.accounts[Marketplace.EBAY]), headers=seller.auth()
    )
    assert imported.status_code == 201, imported.text
    order_id = imported.json()["order_id"]
    shipped = client.post(
        f"/v1/orders/{order_id}/shipments",
        json={"carrier": "ups", "tracking_number": UPS_TRACKING},
        headers=seller.auth(),
    )
    assert shipped.status_code == 201, shipped.text
    assert int(imported.headers["Ledger-Position"]) < int(shipped.headers["Ledger-Position"])
    return order_id, int(shipped.headers["Ledger-Position"])


def _catch_up_soon(projection: base.Projection, connect: base.Connect, app: Ledger) -> threading.Thread:
    """A worker that starts late: the read must wait for it, not answer from a stale view."""
    thread = threading.Timer(0.3, catch_up, (projection, connect, app, 500))
    thread.start()
    return thread


def test_all_sales_waits_for_the_commands_position(
    client: TestClient[Any], seller: Seller, connect: base.Connect, api_ledger: Ledger
) -> None:
    """GET /v1/orders?min_position=P returns only once the view includes the shipment at P."""
    catch_up(AllSalesProjection(), connect, api_ledger, 500)
    order_id, position = _ship(client, seller)
    worker = _catch_up_soon(AllSalesProjection(), connect, api_ledger)
    listed = client.get(f"/v1/orders?min_position={position}", headers=seller.auth(Role.AUDITOR))
    worker.join()
    assert listed.status_code == 200, listed.text
    [item] = [i for i in listed.json()["items"] if i["order_id"] == order_id]
    assert item["status"] == "shipped"


def test_the_header_form_and_the_outbound_queue(
    client: TestClient[Any], seller: Seller, connect: base.Connect, api_ledger: Ledger
) -> None:
    """`Ledger-Min-Position` works like the query parameter, on the outbound queue too."""
    order_id, position = _ship(client, seller)
    worker = _catch_up_soon(OutboundProjection(), connect, api_ledger)
    listed = client.get(
        f"/v1/sync/outbound?order_id={order_id}",
        headers=seller.auth() | {"Ledger-Min-Position": str(position)},
    )
    worker.join()
    assert listed.status_code == 200, listed.text
    assert "ship" in {i["action"] for i in listed.json()["items"]}


def test_a_position_not_reached_in_time_is_503_with_retry_after(
    client: TestClient[Any], seller: Seller, connect: base.Connect, api_ledger: Ledger
) -> None:
    """A view that does not reach the position within the bound answers 503 projection-behind, never stale data."""
    catch_up(AllSalesProjection(), connect, api_ledger, 500)
    client.app.state.read_wait_seconds = 0.2
    _, position = _ship(client, seller)  # nobody projects it
    response = client.get(f"/v1/orders?min_position={position}", headers=seller.auth())
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json()["type"] == PROBLEM + "projection-behind"
    assert "all_sales" in response.json()["detail"]


def test_a_position_past_the_log_is_422(client: TestClient[Any], seller: Seller, api_ledger: Ledger) -> None:
    """A position no command answered with (past the log's end) is refused at once, not waited for."""
    beyond = (api_ledger.recorder.max_notification_id() or 0) + 1_000_000
    response = client.get(f"/v1/sync/outbound?min_position={beyond}", headers=seller.auth())
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "min_position"


@pytest.mark.parametrize(
    ("query", "header"), [("min_position=0", None), ("min_position=x", None), ("", "-3")]
)
def test_a_bad_position_is_refused(
    client: TestClient[Any], seller: Seller, query: str, header: str | None
) -> None:
    """A position that is not a whole number >= 1 is a client error, not a wait."""
    headers = seller.auth() | ({"Ledger-Min-Position": header} if header else {})
    response = client.get(f"/v1/orders?{query}", headers=headers)
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_replayed_command_still_gives_a_position(client: TestClient[Any], seller: Seller) -> None:
    """A replay records nothing; its position is the log head then, which covers the first response's events."""
    order_id, _ = _ship(client, seller)
    body = {"reason": "customer_return"}
    headers = seller.auth() | {"Idempotency-Key": "refund-1"}
    first = client.post(f"/v1/orders/{order_id}/refunds", json=body, headers=headers)
    again = client.post(f"/v1/orders/{order_id}/refunds", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert int(again.headers["Ledger-Position"]) >= int(first.headers["Ledger-Position"])


def test_a_replay_covers_the_first_responses_events_while_an_older_transaction_is_open(
    client: TestClient[Any], seller: Seller, connect: base.Connect
) -> None:
    """A replay's position is the last position recorded, not the commit horizon's head: with a transaction
    that began before the first response still open (anywhere in the cluster), the head is below that response's
    events, and a read given the replay's position would not have waited for them."""
    order_id, _ = _ship(client, seller)
    body = {"reason": "customer_return"}
    headers = seller.auth() | {"Idempotency-Key": "refund-held"}
    with connect() as holder, holder.transaction():
        holder.execute("SELECT pg_current_xact_id()")  # a transaction id, held until the block ends
        first = client.post(f"/v1/orders/{order_id}/refunds", json=body, headers=headers)
        again = client.post(f"/v1/orders/{order_id}/refunds", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert int(again.headers["Ledger-Position"]) >= int(first.headers["Ledger-Position"])

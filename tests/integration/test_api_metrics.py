"""`/metrics`, `X-Request-Id` and the request log line, over HTTP on real PostgreSQL."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest
from api_support import API_MAX_BODY, Seller, order_body
from litestar.testing import TestClient
from order_scenarios import catch_up
from prometheus_client.parser import text_string_to_metric_families

from ledger.aggregates.values import Marketplace, Role
from ledger.api.app import create_app
from ledger.api.observability import JsonFormatter
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget
from ledger.integrations.outbound import OutboundProjection
from ledger.projections import base
from ledger.projections.registry import all_projections

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(client: TestClient[Any]) -> Samples:
    response = client.get("/metrics")  # no key
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_request_counts_and_latency_by_route_template(client: TestClient[Any], seller: Seller) -> None:
    route = "/v1/accounts/{account_id}"
    account = seller.accounts[Marketplace.AMAZON]
    before = _scrape(client)
    for _ in range(3):
        assert client.get(f"/v1/accounts/{account}", headers=seller.auth()).status_code == 200
    assert client.get(f"/v1/accounts/{account}", headers=seller.auth(Role.AUDITOR)).status_code == 200
    assert client.get(f"/v1/accounts/{account}").status_code == 401

    after = _scrape(client)
    ok = {"route": route, "method": "GET", "status": "200"}
    assert (
        _value(after, "ledger_http_requests_total", **ok) - _value(before, "ledger_http_requests_total", **ok)
        == 4
    )
    unauthorized = ok | {"status": "401"}
    assert (
        _value(after, "ledger_http_requests_total", **unauthorized)
        - _value(before, "ledger_http_requests_total", **unauthorized)
        == 1
    )
    count = "ledger_http_request_duration_seconds_count"
    assert _value(after, count, **ok) - _value(before, count, **ok) == 4
    assert _value(after, "ledger_http_request_duration_seconds_sum", **ok) > 0
    # the template, never the raw path: no series names an account id
    assert not any(str(account) in dict(labels).get("route", "") for _, labels in after)


def test_command_outcomes(client: TestClient[Any], seller: Seller) -> None:
    body = order_body(seller.accounts[Marketplace.EBAY])
    before = _scrape(client)
    assert client.post("/v1/orders", json=body, headers=seller.auth()).status_code == 201
    assert client.post("/v1/orders", json=body, headers=seller.auth()).status_code == 200
    conflict = body | {"buyer": {"name": "Somebody Else", "email": "else@example.com"}}
    assert client.post("/v1/orders", json=conflict, headers=seller.auth()).status_code == 409
    assert client.post("/v1/orders", json=body, headers=seller.auth(Role.AUDITOR)).status_code == 403

    after = _scrape(client)

    def delta(outcome: str) -> float:
        labels = {"command": "importOrder", "outcome": outcome}
        return _value(after, "ledger_commands_total", **labels) - _value(
            before, "ledger_commands_total", **labels
        )

    assert (delta("ok"), delta("import-conflict"), delta("forbidden")) == (2, 1, 1)
    # reads are not commands
    assert not any(dict(labels).get("command") == "listAccounts" for _, labels in after)


def test_projection_lag_and_queue_depth_are_read_at_scrape_time(
    client: TestClient[Any], seller: Seller, connect: base.Connect, api_ledger: Ledger
) -> None:
    catch_up(OutboundProjection(), connect, api_ledger, 500)
    before = _scrape(client)
    response = client.post(
        "/v1/orders", json=order_body(seller.accounts[Marketplace.WALMART]), headers=seller.auth()
    )
    assert response.status_code == 201, response.text
    head = _value(before, "ledger_projection_lag_events", projection="outbound") + _value(
        before, "ledger_projection_position", projection="outbound"
    )
    samples = _scrape(client)
    lag = _value(samples, "ledger_projection_lag_events", projection="outbound")
    position = _value(samples, "ledger_projection_position", projection="outbound")
    assert lag >= 1  # the import is recorded, not yet applied
    assert lag + position > head
    catch_up(OutboundProjection(), connect, api_ledger, 500)
    caught_up = _scrape(client)
    assert _value(caught_up, "ledger_projection_lag_events", projection="outbound") < lag
    pending = _value(caught_up, "ledger_outbound_items", state="pending")
    assert pending - _value(samples, "ledger_outbound_items", state="pending") == 1  # the acknowledgement
    assert _value(samples, "ledger_metrics_database_up") == 1
    for projection in all_projections():
        assert ("ledger_projection_lag_events", (("projection", projection.name),)) in samples
        assert _value(samples, "ledger_projection_lag_events", projection=projection.name) >= 0
    for state in ("pending", "in_flight", "succeeded", "failed", "dead"):
        assert ("ledger_outbound_items", (("state", state),)) in samples


def test_lag_counts_events_an_older_transaction_holds_back(
    client: TestClient[Any], seller: Seller, connect: base.Connect, api_ledger: Ledger
) -> None:
    """An import recorded while a transaction that began before it is still open (anywhere in the cluster: it
    holds back the log's commit horizon, so no worker can apply the import yet) counts in the lag at once: the
    scrape shows the projection held back rather than a lag of 0 with the work still to do."""
    catch_up(OutboundProjection(), connect, api_ledger, 500)
    before = _scrape(client)
    with connect() as holder, holder.transaction():
        holder.execute("SELECT pg_current_xact_id()")  # a transaction id, held until the block ends
        response = client.post(
            "/v1/orders", json=order_body(seller.accounts[Marketplace.WALMART]), headers=seller.auth()
        )
        assert response.status_code == 201, response.text
        held = _scrape(client)
    outbound = {"projection": "outbound"}
    assert _value(held, "ledger_projection_position", **outbound) == _value(
        before, "ledger_projection_position", **outbound
    )
    assert _value(held, "ledger_projection_lag_events", **outbound) >= (
        _value(before, "ledger_projection_lag_events", **outbound) + 1
    )
    catch_up(OutboundProjection(), connect, api_ledger, 500)
    assert _value(_scrape(client), "ledger_projection_lag_events", **outbound) == 0


def test_each_app_has_its_own_registry(pg_target: PostgresTarget, api_ledger: Ledger, seller: Seller) -> None:
    with TestClient(create_app(pg_target, ledger=api_ledger, max_body_size=API_MAX_BODY)) as first:
        for _ in range(2):
            first.get("/v1/accounts", headers=seller.auth())
        with TestClient(create_app(pg_target, ledger=api_ledger, max_body_size=API_MAX_BODY)) as second:
            ok = {"route": "/v1/accounts", "method": "GET", "status": "200"}
            assert _value(_scrape(first), "ledger_http_requests_total", **ok) == 2
            assert _value(_scrape(second), "ledger_http_requests_total", **ok) == 0


def test_request_id_is_echoed_or_made(client: TestClient[Any], seller: Seller) -> None:
    given = client.get("/v1/accounts", headers={**seller.auth(), "X-Request-Id": "req-42"})
    assert given.headers["x-request-id"] == "req-42"
    made = client.get("/v1/accounts", headers=seller.auth())
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    problem = client.get("/v1/accounts", headers={"X-Request-Id": "req-43"})
    assert (problem.status_code, problem.headers["x-request-id"]) == (401, "req-43")
    unprintable = client.get("/healthz", headers={"X-Request-Id": "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", unprintable.headers["x-request-id"])


def test_one_log_line_a_request_without_secrets(
    client: TestClient[Any], seller: Seller, caplog: pytest.LogCaptureFixture
) -> None:
    account = seller.accounts[Marketplace.JET]
    body = {"name": "secret-name-in-body"}
    with caplog.at_level(logging.INFO, logger="ledger.api"):
        response = client.patch(
            f"/v1/accounts/{account}", json=body, headers={**seller.auth(), "X-Request-Id": "req-log-1"}
        )
        assert response.status_code == 200, response.text
    records = [r for r in caplog.records if r.name == "ledger.api" and hasattr(r, "fields")]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["level"] == "INFO"
    assert line["logger"] == "ledger.api"
    assert {k: line[k] for k in ("method", "route", "status", "request_id", "seller")} == {
        "method": "PATCH",
        "route": "/v1/accounts/{account_id}",
        "status": 200,
        "request_id": "req-log-1",
        "seller": seller.name,
    }
    assert line["duration_ms"] >= 0
    text = JsonFormatter().format(records[0])
    assert seller.keys[Role.ADMIN] not in text
    assert "Bearer" not in text
    assert "secret-name-in-body" not in text


def test_log_line_without_a_key_has_no_seller(
    client: TestClient[Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ledger.api"):
        assert client.get("/v1/accounts").status_code == 401
    [record] = [r for r in caplog.records if r.name == "ledger.api" and hasattr(r, "fields")]
    line = json.loads(JsonFormatter().format(record))
    assert (line["status"], line["route"]) == (401, "/v1/accounts")
    assert "seller" not in line


def test_the_service_serves_the_dispatchers_queue_metrics_by_operation(
    client: TestClient[Any], seller: Seller, connect: base.Connect, api_ledger: Ledger
) -> None:
    """`ledger serve`'s /metrics carries the in-process dispatcher's series (queue depth, oldest pending age and
    dead items per marketplace operation), read from the queue as `ledger dispatch --metrics-port` reads it."""
    operation = {"operation": "walmart.acknowledgeOrders"}
    catch_up(OutboundProjection(), connect, api_ledger, 500)
    before = _scrape(client)
    response = client.post(
        "/v1/orders", json=order_body(seller.accounts[Marketplace.WALMART]), headers=seller.auth()
    )
    assert response.status_code == 201, response.text
    catch_up(OutboundProjection(), connect, api_ledger, 500)
    after = _scrape(client)
    depth = _value(after, "ledger_sync_queue_depth", **operation)
    # the new order's acknowledgement
    assert depth - _value(before, "ledger_sync_queue_depth", **operation) == 1
    assert ("ledger_sync_oldest_pending_age_seconds", (("operation", operation["operation"]),)) in after
    assert _value(after, "ledger_sync_oldest_pending_age_seconds", **operation) >= 0
    assert ("ledger_sync_dead_items", (("operation", operation["operation"]),)) in after
    assert _value(after, "ledger_sync_metrics_database_up") == 1

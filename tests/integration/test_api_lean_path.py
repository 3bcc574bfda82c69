"""The order commands' lean path (api/lean.py) answers exactly as Litestar's own path: the same status, headers
and body shape for a command, its replay and its refusals; what it does not handle (no body) falls back to
Litestar."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from api_support import API_MAX_BODY, UPS_TRACKING, Seller, order_body
from litestar.testing import TestClient

from ledger.aggregates.values import Marketplace, Role
from ledger.api import lean
from ledger.api.observability import direct_send

SHIP = {"carrier": "ups", "tracking_number": UPS_TRACKING}
JSON = {"Content-Type": "application/json"}
VOLATILE = ("x-request-id", "ledger-position", "date")
GIVEN_ID = "given-"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _import(client: TestClient[Any], seller: Seller) -> str:
    response = client.post(
        "/v1/orders", json=order_body(seller.accounts[Marketplace.AMAZON]), headers=seller.auth()
    )
    assert response.status_code == 201, response.text
    order_id: str = response.json()["order_id"]
    return order_id


def _answer(response: Any) -> tuple[int, list[tuple[str, str]], str]:
    """Status, headers in their order (volatile values blanked, except a request id the client gave) and the
    body with its ids blanked."""
    headers = [
        (k.lower(), "*" if k.lower() in VOLATILE and not v.startswith(GIVEN_ID) else v)
        for k, v in response.headers.multi_items()
    ]
    return response.status_code, headers, UUID_RE.sub("<id>", response.text)


def _counts(client: TestClient[Any]) -> dict[str, float]:
    """The request and command counters of /metrics, by their labels."""
    text = client.get("/metrics").text
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines())
        if name.startswith(("ledger_http_requests_total", "ledger_commands_total")) and "/metrics" not in name
    }


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def _requests(client: TestClient[Any], seller: Seller, run: str) -> list[tuple[int, dict[str, str], str]]:
    """A command, its replay under an Idempotency-Key, and the refusals a command can meet."""
    answers = []
    order_id = _import(client, seller)
    url = f"/v1/orders/{order_id}/shipments"
    keyed = seller.auth() | {"Idempotency-Key": f"key-{run}"}
    answers.append(_answer(client.post(url, json=SHIP, headers=keyed)))
    answers.append(
        _answer(client.post(url, json=SHIP, headers=keyed | {"X-Request-Id": f"{GIVEN_ID}request"}))
    )
    answers.append(_answer(client.post(url, json=SHIP, headers=seller.auth())))  # 409 nothing to ship
    other = _import(client, seller)
    other_url = f"/v1/orders/{other}/shipments"
    answers.append(_answer(client.post(other_url, json=SHIP)))  # 401
    answers.append(  # a body over the app's limit: 413
        _answer(client.post(other_url, content=b" " * (API_MAX_BODY + 1), headers=seller.auth() | JSON))
    )
    answers.append(  # 422 a replay under the key with another body
        _answer(client.post(url, json={**SHIP, "carrier_name": "x"}, headers=keyed))
    )
    answers.append(_answer(client.post(other_url, json=SHIP, headers=seller.auth(Role.AUDITOR))))  # 403
    answers.append(_answer(client.post(other_url, json={"carrier": 5}, headers=seller.auth())))  # 422
    answers.append(  # 415
        _answer(client.post(other_url, content=b"{}", headers=seller.auth() | {"Content-Type": "text/plain"}))
    )
    answers.append(
        _answer(client.post(other_url, content=b"{", headers=seller.auth() | JSON))
    )  # 400 not JSON
    answers.append(_answer(client.post(f"{other_url}?x=1", json=SHIP, headers=seller.auth())))  # 400 query
    answers.append(_answer(client.post(other_url, headers=seller.auth() | JSON)))  # 422 no body
    answers.append(_answer(client.post(other_url, json=SHIP, headers=seller.auth() | {"If-Match": "x"})))
    answers.append(_answer(client.post(other_url, json=SHIP, headers=seller.auth() | {"If-Match": '"99"'})))
    etag = client.get(f"/v1/orders/{other}", headers=seller.auth()).headers["etag"]
    answers.append(  # 201 with If-Match of the current version, a cancellation, a refund (409), 404
        _answer(client.post(other_url, json=SHIP, headers=seller.auth() | {"If-Match": etag}))
    )
    third = _import(client, seller)
    answers.append(
        _answer(
            client.post(
                f"/v1/orders/{third}/cancellations", json={"reason": "buyer_cancelled"}, headers=seller.auth()
            )
        )
    )
    answers.append(
        _answer(
            client.post(
                f"/v1/orders/{other}/refunds", json={"reason": "customer_return"}, headers=seller.auth()
            )
        )
    )
    answers.append(
        _answer(
            client.post(
                "/v1/orders/00000000-0000-4000-8000-000000000000/shipments", json=SHIP, headers=seller.auth()
            )
        )
    )
    return [(status, headers, body.replace(f"key-{run}", "key-<run>")) for status, headers, body in answers]


def test_the_lean_path_answers_as_litestars_path(
    client: TestClient[Any], seller: Seller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each request, sent once on the lean path and once with it turned off, gets the same answer."""
    ran: list[object] = []
    pool = lean._executor

    class Counting(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            ran.append(fn)
            return pool.submit(fn, *args, **kwargs)

    sent: list[int] = []

    async def counting_send(scope: Any, send: Any, status: int, headers: Any, body: bytes) -> None:
        sent.append(status)
        await direct_send(scope, send, status, headers, body)

    monkeypatch.setattr(lean, "_executor", Counting(max_workers=1))
    monkeypatch.setattr(lean, "direct_send", counting_send)
    before = _counts(client)
    on_lean = _requests(client, seller, "lean")
    lean_counts = _delta(before, _counts(client))
    # every request that passed the checks ran there: 201, replay, 422 reused key, 409, 412, 201 x2, 409, 404
    assert len(ran) == 9
    assert sent == [201, 201, 201, 201]  # the answers the lean path made itself
    monkeypatch.setattr(lean, "_functions", {})
    monkeypatch.setattr(lean, "_routes", {})
    before = _counts(client)
    on_litestar = _requests(client, seller, "full")  # a run name as long as "lean"
    assert _delta(before, _counts(client)) == lean_counts  # the same requests, statuses and outcomes counted
    assert len(sent) == 4
    assert [a[0] for a in on_lean] == [
        201,
        201,
        409,
        401,
        413,
        422,
        403,
        422,
        415,
        400,
        400,
        422,
        400,
        412,
        201,
        201,
        409,
        404,
    ]
    assert on_lean == on_litestar


def test_a_command_header_sent_twice_is_left_to_litestar() -> None:
    """The lean path reads a command header only when it is sent once (else Litestar's path answers)."""
    scope: Any = {"headers": [(b"if-match", b'"1"'), (b"idempotency-key", b"a"), (b"idempotency-key", b"b")]}
    assert lean._header(scope, b"if-match") == '"1"'
    assert lean._header(scope, b"idempotency-key") is lean._ONCE
    assert lean._header(scope, b"authorization") is None

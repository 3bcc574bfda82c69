"""Many clients, real HTTP, conflicting commands on the same few orders: the ledger's rules hold under contention.

`ledger serve` runs as a process on the test's own schema; a dozen threads fire ship, cancel and refund commands
(some with a possibly stale `If-Match`) at four orders. Afterwards, per line, nothing is over-shipped,
over-cancelled or over-refunded; every 201 a client saw is exactly one recorded event (matched by version and
by the id the response gave), there is no recorded event nobody was told about, and every refusal was a
clean 409 or 412.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rel_support import PROBLEM, UPS_TRACKING, Seller, assert_no_500, order_body, report, served

from ledger.aggregates.values import Marketplace, Role

CLIENTS = 12
COMMANDS_PER_CLIENT = 25
ID_OF = {"Shipped": "shipment_id", "Cancelled": "cancellation_id", "Refunded": "refund_id"}


def _command(rng: random.Random) -> tuple[str, dict[str, Any]]:
    kind = rng.choice(["shipments", "cancellations", "refunds"])
    line = {"line_id": rng.choice(["1", "2"]), "quantity": rng.randint(1, 2)}
    if kind == "shipments":
        return kind, {"carrier": "ups", "tracking_number": UPS_TRACKING, "lines": [line]}
    if kind == "cancellations":
        return kind, {"reason": "out_of_stock", "lines": [line]}
    return kind, {"reason": "damaged", "lines": [{"line_id": line["line_id"], "quantity": 1}]}


@pytest.mark.slow
def test_conflicting_commands_never_break_an_invariant(
    cli_env: dict[str, str], seller: Seller, tmp_path: Path
) -> None:
    """Concurrent ship/cancel/refund on four orders: invariants hold, each 201 is one event, refusals 409/412."""
    with served(cli_env, tmp_path) as service, service.client() as http:
        order_ids = []
        for marketplace in (
            Marketplace.WALMART,
            Marketplace.WALMART,
            Marketplace.AMAZON,
            Marketplace.RAKUTEN,
        ):
            body = order_body(seller.accounts[marketplace])
            body["lines"][0]["quantity"], body["lines"][1]["quantity"] = 40, 25  # room for many commands
            response = http.post("/v1/orders", json=body, headers=seller.auth())
            assert response.status_code == 201, response.text
            order_ids.append(response.json()["order_id"])

        results: list[tuple[str, str, int, dict[str, Any], str]] = []
        lock = threading.Lock()

        def client(k: int) -> None:
            rng = random.Random(k)
            seen_version: dict[str, int] = {}
            with service.client() as own:
                for _ in range(COMMANDS_PER_CLIENT):
                    order_id = rng.choice(order_ids)
                    kind, body = _command(rng)
                    headers = seller.auth(Role.OPERATOR)
                    if order_id in seen_version and rng.random() < 0.25:
                        headers = headers | {"If-Match": f'"{seen_version[order_id]}"'}
                    response = own.post(f"/v1/orders/{order_id}/{kind}", json=body, headers=headers)
                    data = response.json()
                    if response.status_code == 201:
                        seen_version[order_id] = data["version"]
                    with lock:
                        results.append(
                            (order_id, kind, response.status_code, data, response.headers["content-type"])
                        )

        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        statuses = Counter(status for _, _, status, _, _ in results)
        assert len(results) == CLIENTS * COMMANDS_PER_CLIENT
        assert set(statuses) <= {201, 409, 412}, statuses
        for _, _, status, data, content_type in results:
            if status != 201:
                assert content_type.startswith("application/problem+json")
                assert data["type"].startswith(PROBLEM)
                assert data["status"] == status

        acknowledged_events = 0
        for order_id in order_ids:
            order = http.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()
            history = http.get(f"/v1/orders/{order_id}/history", headers=seller.auth()).json()["events"]
            by_version = {event["version"]: event for event in history}
            assert sorted(by_version) == list(range(1, len(history) + 1))
            for line in order["lines"]:
                assert line["shipped"] + line["cancelled"] <= line["quantity"], line
                assert line["refunded_quantity"] <= line["shipped"], line
                assert line["shipped"] >= 0
                assert line["cancelled"] >= 0

            # Each 201 is exactly the events at its versions, carrying the id the client was given.
            claimed: set[int] = set()
            for _, _, status, data, _ in (r for r in results if r[0] == order_id):
                if status != 201:
                    continue
                first = data["version"] - len(data["events"]) + 1
                for offset, event_type in enumerate(data["events"]):
                    version = first + offset
                    assert version not in claimed, f"two clients were told about version {version}"
                    claimed.add(version)
                    assert by_version[version]["type"] == event_type
                id_field = ID_OF[data["events"][0]]
                assert by_version[first]["data"][id_field] == data[id_field]
            recorded = {e["version"] for e in history if e["type"] != "Imported"}
            assert claimed == recorded, "an event was recorded that no client was told about, or the reverse"
            acknowledged_events += len(claimed)

            # The order's counters are the sum of its events.
            shipped = Counter[str]()
            cancelled = Counter[str]()
            for event in history:
                for item in event["data"].get("lines") or []:
                    if event["type"] == "Shipped":
                        shipped[item["line_id"]] += item["quantity"]
                    elif event["type"] == "Cancelled":
                        cancelled[item["line_id"]] += item["quantity"]
            for line in order["lines"]:
                assert (line["shipped"], line["cancelled"]) == (
                    shipped[line["line_id"]],
                    cancelled[line["line_id"]],
                )
        assert statuses[201] > 0
        assert statuses[409] > 0
    assert_no_500(service.log)
    report(
        f"concurrency: {CLIENTS} clients, {len(results)} conflicting commands on {len(order_ids)} orders:"
        f" {statuses[201]} acknowledged = {acknowledged_events} events recorded, {statuses[409]} x 409,"
        f" {statuses[412]} x 412, 0 x 5xx; no line over-shipped, over-cancelled or over-refunded"
    )


BURST = 16
BURST_ROUNDS = 3


def _at_once(service: Any, path: str, body: dict[str, Any], headers: dict[str, str]) -> list[Any]:
    """BURST clients post the same request at the same moment; their answers."""
    start = threading.Barrier(BURST)
    answers: list[Any] = [None] * BURST

    def send(index: int) -> None:
        with service.client() as own:
            start.wait()
            answers[index] = own.post(path, json=body, headers=headers)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(BURST)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


@pytest.mark.slow
def test_identical_requests_under_one_key_all_replay(
    cli_env: dict[str, str], seller: Seller, tmp_path: Path
) -> None:
    """16 identical requests at once under one Idempotency-Key and one If-Match, a few rounds: each round records
    one event and all 16 answer its 201 (one first, 15 replayed, none 412); the key on another order is 422."""
    with served(cli_env, tmp_path) as service, service.client() as http:
        body = order_body(seller.accounts[Marketplace.WALMART])
        body["lines"][0]["quantity"] = 40
        order_id = http.post("/v1/orders", json=body, headers=seller.auth()).json()["order_id"]
        other_id = http.post(
            "/v1/orders", json=order_body(seller.accounts[Marketplace.WALMART]), headers=seller.auth()
        ).json()["order_id"]
        statuses: Counter[int] = Counter()
        replayed = 0
        for round_ in range(BURST_ROUNDS):
            etag = http.get(f"/v1/orders/{order_id}", headers=seller.auth()).headers["etag"]
            headers = seller.auth(Role.OPERATOR) | {"Idempotency-Key": f"burst-{round_}", "If-Match": etag}
            ship = {
                "carrier": "ups",
                "tracking_number": UPS_TRACKING,
                "lines": [{"line_id": "1", "quantity": 1}],
            }
            answers = _at_once(service, f"/v1/orders/{order_id}/shipments", ship, headers)
            statuses.update(a.status_code for a in answers)
            assert [a.status_code for a in answers] == [201] * BURST, [a.text for a in answers]
            assert len({a.content for a in answers}) == 1
            round_replays = sum(1 for a in answers if a.headers.get("idempotent-replayed") == "true")
            assert round_replays == BURST - 1
            replayed += round_replays
            reused = http.post(f"/v1/orders/{other_id}/shipments", json=ship, headers=headers)
            assert reused.status_code == 422
            assert reused.json()["type"] == PROBLEM + "idempotency-key-reused"
        order = http.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()
        assert (order["version"], order["lines"][0]["shipped"]) == (1 + BURST_ROUNDS, BURST_ROUNDS)
        assert http.get(f"/v1/orders/{other_id}", headers=seller.auth()).json()["version"] == 1
    assert_no_500(service.log)
    report(
        f"idempotency: {BURST_ROUNDS} bursts of {BURST} identical requests under one key and one If-Match:"
        f" {BURST_ROUNDS} events recorded, {replayed} replays, {statuses[412]} x 412, 0 x 5xx;"
        f" the key on another order is 422 idempotency-key-reused"
    )

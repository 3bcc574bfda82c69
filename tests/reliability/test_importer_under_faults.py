"""The importer over many rounds while the marketplaces repeat list entries across pages, reset connections and
answer 5xx and 429: every order the marketplace has ends up in the ledger exactly once, none missed.

Orders keep arriving between rounds (so the cursor moves while rounds fail half-way), pages are small (so a
round has many pages to go wrong on), and the faults are armed afresh for each round on the list call and on
every other call (order items, Amazon's acknowledgement feed). The counts of a run are printed (`-s`) and
recorded in BENCHMARKS.md, "Reliability"."""

from __future__ import annotations

import importlib
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest
from sync_support import Flow

from ledger.aggregates.values import Marketplace
from ledger.integrations.base import MarketplaceClient
from ledger.integrations.importer import Importer
from ledger.integrations.marketplaces import MARKETPLACES, SyncSettings, endpoint_for

pytestmark = pytest.mark.postgres
ROUNDS = 10
NEW_PER_ROUND = 4
PAGE_SIZE = 3
FAULTS_PER_ROUND = 4
LIST_CALLS = {
    Marketplace.AMAZON: "getOrders",
    Marketplace.WALMART: "getAllOrders",
    Marketplace.JET: "listOrders",
    Marketplace.RAKUTEN: "searchOrder",
}
# The marketplaces' published read limits (Amazon getOrders: a burst of 20, then one a minute) would make ten
# rounds of small pages take an hour: this test is about faults, not pacing (tests/integration covers that).
UNPACED = {
    f"{m.value}.{operation}": (1000.0, 1000)
    for m, operations in {
        Marketplace.AMAZON: ("getOrders", "getOrderItems"),
        Marketplace.WALMART: ("getAllOrders",),
        Marketplace.JET: ("listOrders",),
        Marketplace.RAKUTEN: ("searchOrder",),
    }.items()
    for operation in operations
}
FAULTS: list[dict[str, Any]] = [
    {"kind": "reset"},
    {"kind": "server_error", "status": 503},
    {"kind": "server_error", "status": 500},
    {"kind": "throttle", "retry_after": 0.05},
    {"kind": "lost"},
]


def _arm_during_round(flow: Flow, rng: random.Random) -> None:
    """While a round runs: a few faults at moments chosen at random, so they land on a round's first page,
    its later pages, an order's items or an acknowledgement."""
    for _ in range(FAULTS_PER_ROUND):
        time.sleep(rng.uniform(0.0, 0.15))
        marketplace = rng.choice(list(LIST_CALLS))
        operation = rng.choice([LIST_CALLS[marketplace], "*"])
        flow.sandbox.fault(marketplace.value, operation, **rng.choice(FAULTS))


def small_pages(account: Any, settings: SyncSettings) -> MarketplaceClient:
    """The account's adapter as `client_for` makes it, asking for pages of PAGE_SIZE orders."""
    marketplace = Marketplace(account.marketplace)
    module, name = MARKETPLACES[marketplace].adapter
    adapter = getattr(importlib.import_module(module), name)
    client: MarketplaceClient = adapter(
        endpoint_for(str(account.account_id), marketplace, settings), page_size=PAGE_SIZE
    )
    return client


def test_every_order_is_imported_exactly_once_through_duplicate_pages_resets_and_5xx(flow: Flow) -> None:
    """Ten rounds with duplicate pages, resets, lost answers, 5xx and 429 on four marketplaces, orders arriving
    between them, then one round without faults: each sandbox order has one order in the ledger with one
    Imported event, the rounds created each once, and nothing else was imported."""
    rng = random.Random(8)
    # No overlap: a cursor moved past an order not stored would lose it for good.
    importer = Importer(
        flow.app,
        flow.connect,
        flow.settings(import_overlap=0.0, rate_limits=UNPACED),
        client_factory=small_pages,
    )
    made: dict[Marketplace, list[str]] = {m: [] for m in LIST_CALLS}
    created: Counter[Marketplace] = Counter()
    failed_rounds = pages = 0
    for _ in range(ROUNDS):
        for marketplace, list_call in LIST_CALLS.items():
            made[marketplace] += [o["order_id"] for o in flow.make_orders(marketplace, NEW_PER_ROUND)]
            flow.sandbox.fault(marketplace.value, list_call, "duplicate", count=rng.randint(1, 3))
        arming = threading.Thread(target=_arm_during_round, args=(flow, random.Random(rng.random())))
        arming.start()
        reports = importer.run_round()
        arming.join()
        for report in reports:
            created[Marketplace(report.marketplace)] += report.created
            failed_rounds += report.error is not None
            pages += report.pages
            assert report.refused == [], report.refused
    fired = Counter(f["kind"] for f in flow.sandbox.faults()["fired"])
    flow.sandbox.clear_faults()
    for report in importer.run_round():  # the marketplaces behave again
        assert report.error is None, report.error
        created[Marketplace(report.marketplace)] += report.created
        pages += report.pages

    assert failed_rounds >= ROUNDS // 2  # the faults did end rounds half-way
    assert fired["duplicate"] >= ROUNDS // 2, fired
    assert fired["reset"] + fired["server_error"] >= ROUNDS // 2, fired
    imported_events = 0
    for marketplace, moids in made.items():
        assert len(set(moids)) == len(moids) == ROUNDS * NEW_PER_ROUND
        assert created[marketplace] == len(moids), marketplace  # each created once, over all the rounds
        for moid in moids:
            history = flow.app.order_history(flow.order_id(marketplace, moid))
            imported = [e for e in history if e.type == "Imported"]
            assert len(imported) == 1, (marketplace, moid)
            imported_events += 1
        with flow.connect() as conn:
            rows = conn.execute(
                "SELECT marketplace_order_id FROM integration_orders WHERE account_id = %s",
                (flow.accounts[marketplace],),
            ).fetchall()
        assert sorted(r[0] for r in rows) == sorted(moids)  # none missed, none extra
    with flow.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger_events WHERE topic LIKE %s", ("%Order.Imported",)
        ).fetchone()
    assert row is not None
    assert row[0] == imported_events == sum(len(m) for m in made.values())
    print(  # the counts for BENCHMARKS.md, "Reliability"
        f"\nimporter under faults: {imported_events} orders at the marketplaces, {ROUNDS + 1} rounds,"
        f" {pages} pages asked, {failed_rounds} account rounds ended by a fault, faults fired {dict(fired)},"
        f" {imported_events} imported, 0 twice, 0 missed"
    )

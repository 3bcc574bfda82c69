"""All Sales as of a time, rebuilt from the events: now it equals the live projection, in the past the replay."""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from datetime import UTC, datetime

import pytest
from order_scenarios import COMMANDS, PRICES, SOURCES, OrderSpec, Scenario, Step, catch_up, new_seller

from ledger.aggregates.values import Marketplace, Source
from ledger.application.errors import OrderNotFoundError
from ledger.audit.as_of import COLUMNS, all_sales_as_of
from ledger.cli.main import main
from ledger.eventstore import database
from ledger.projections.all_sales import AllSalesProjection
from ledger.projections.all_sales_view import AllSalesView, OrderSummary, SalesFilter

pytestmark = pytest.mark.postgres


def specs(rng: random.Random) -> list[OrderSpec]:
    """One order on every marketplace, varied like the projection property tests' orders."""
    return [
        OrderSpec(
            marketplace=marketplace,
            fulfillment_managed=rng.random() > 0.2,
            restock_in_ledger=rng.random() > 0.5,
            paid=rng.random() > 0.3,
            currency=rng.choice(sorted(PRICES)),
            quantities=tuple(rng.randint(1, 3) for _ in range(rng.randint(1, 3))),
            recent=rng.random() > 0.5,
            source=Source.IMPORT,
        )
        for marketplace in Marketplace
    ]


def steps(rng: random.Random, count: int) -> list[Step]:
    return [
        Step(
            rng.randrange(len(Marketplace)), rng.choice(COMMANDS), rng.randrange(10_000), rng.choice(SOURCES)
        )
        for _ in range(count)
    ]


@pytest.fixture
def history(app, connect):
    """A seller's orders with commands before and after a cutoff time: (scenario, cutoff, order ids)."""
    rng = random.Random(6)
    shop = Scenario(app, new_seller("as-of"))
    first = specs(rng)
    order_ids = shop.run(first[:3], steps(rng, 15))
    cutoff = datetime.now(UTC)
    order_ids = shop.run(first[3:], steps(rng, 25))
    catch_up(AllSalesProjection(), connect, app, 500)
    return shop, cutoff, order_ids


def test_as_of_now_equals_the_live_projection(app, connect, history):
    """Rebuilt as of now, every row equals the All Sales projection's, in the same order."""
    shop, _, order_ids = history

    with connect() as conn:
        rebuilt = all_sales_as_of(conn, app.mapper, shop.seller, datetime.now(UTC))
        live = AllSalesView().list_orders(conn, shop.seller, SalesFilter(), limit=500).items

    assert len(rebuilt) == len(order_ids) == 5
    assert rebuilt == live


def test_as_of_a_past_time_equals_the_replay_of_each_order(app, connect, history):
    """As of the cutoff, each order is as order_as_of rebuilt it then; orders imported later are absent."""
    shop, cutoff, order_ids = history
    expected = {}
    for order_id in order_ids:
        try:
            then = app.order_as_of(order_id, at=cutoff)
        except OrderNotFoundError:
            continue
        expected[order_id] = OrderSummary(
            **{name: getattr(then, name) for name in COLUMNS if name != "buyer_name"},
            buyer_name=then.buyer.name,
        )

    with connect() as conn:
        rebuilt = all_sales_as_of(conn, app.mapper, shop.seller, cutoff)

    assert len(expected) == 3
    assert {s.order_id: s for s in rebuilt} == expected
    assert [s.version for s in rebuilt] != [app.get_order(s.order_id).version for s in rebuilt]


def test_report_command_writes_csv_and_json(app, history, pg_target, pg_url, monkeypatch):
    """`ledger report all-sales --as-of T` prints the summary columns, one row per order as of T."""
    shop, cutoff, _ = history
    monkeypatch.setenv("LEDGER_DATABASE_URL", pg_url)
    monkeypatch.setenv("LEDGER_DATABASE_SCHEMA", pg_target.schema)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    as_of = cutoff.isoformat()

    as_csv, as_json = io.StringIO(), io.StringIO()
    csv_status = main(["report", "all-sales", "--seller", shop.seller, "--as-of", as_of], out=as_csv)
    json_status = main(
        ["report", "all-sales", "--seller", shop.seller, "--as-of", as_of, "--format", "json"], out=as_json
    )

    with database.connect(pg_target) as conn:
        expected = all_sales_as_of(conn, app.mapper, shop.seller, cutoff)
    records = list(csv.DictReader(io.StringIO(as_csv.getvalue())))
    assert (csv_status, json_status) == (0, 0)
    assert tuple(records[0]) == COLUMNS
    assert [r["order_id"] for r in records] == [str(s.order_id) for s in expected]
    assert [r["total"] for r in records] == [str(s.total) for s in expected]
    assert [(o["order_id"], o["status"], o["version"]) for o in json.loads(as_json.getvalue())] == [
        (str(s.order_id), s.status, s.version) for s in expected
    ]

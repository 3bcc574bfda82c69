"""Orders in from the sandbox marketplace, updates out to it, end to end: the importer and the dispatcher (in
process and as `ledger dispatch` processes) against the sandbox over HTTP and the ledger on PostgreSQL.

Each test has a schema of its own (a dispatcher takes every due item in its schema) and an Amazon account of
its own in the sandbox. Time is never waited out: where a retry or a feed's poll is scheduled later, the test
moves the item's `next_attempt_at` to now, as the clock would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from litestar.testing import TestClient

# The sandbox's test server and control client live with the integration tests.
sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from order_scenarios import settled
from sandbox_support import (  # noqa: F401
    Sandbox,
    sandbox_fixture,
    sandbox_url_fixture,
    sync_request,
    whole_lines,
)

import ledger
from ledger.aggregates.errors import LedgerError
from ledger.aggregates.values import (
    CancelReason,
    Carrier,
    Context,
    LineQuantity,
    Marketplace,
    RefundReason,
    Role,
    Source,
)
from ledger.api.app import create_app
from ledger.application.ledger import Ledger
from ledger.eventstore import database
from ledger.eventstore.database import PostgresTarget
from ledger.integrations.amazon import AmazonClient
from ledger.integrations.base import Accepted, Endpoint
from ledger.integrations.dispatcher import Dispatcher
from ledger.integrations.importer import Importer
from ledger.integrations.marketplaces import SyncSettings
from ledger.integrations.outbound import OutboundProjection
from ledger.integrations.outbox import OutboundView
from ledger.integrations.sync_check import SyncChecker
from ledger.projections import base

pytestmark = pytest.mark.postgres
CTX = Context(actor="test", source=Source.API)
UPS = "1Z999AA10123456784"


@dataclass
class World:
    target: PostgresTarget
    app: Ledger
    sandbox: Sandbox
    account_id: UUID
    seller: str
    token: str
    env: dict[str, str]
    settings: SyncSettings
    marketplace: Marketplace = Marketplace.AMAZON

    def connect(self) -> psycopg.Connection[Any]:
        return database.connect(self.target, autocommit=True)

    def import_orders(self, count: int, **options: Any) -> list[UUID]:
        """`count` new paid orders at the marketplace, imported into the ledger; their ledger ids."""
        options.setdefault("purchased_at", (datetime.now(UTC) - timedelta(hours=3)).isoformat())
        made = self.sandbox.orders(self.marketplace.value, self.token, count=count, **options)
        Importer(self.app, self.connect, self.settings).run_round(self.account_id)
        return [self.order_id(o["order_id"]) for o in made]

    def order_id(self, marketplace_order_id: str) -> UUID:
        return self.app.find_order(self.seller, self.marketplace, marketplace_order_id).order_id

    def remote(self, order_id: UUID) -> dict[str, Any]:
        moid = self.app.get_order(order_id).marketplace_order_id
        return self.sandbox.order(self.marketplace.value, self.token, moid)

    def queue(self) -> None:
        """The outbound projection catches up (a worker does this in `ledger serve`)."""
        with self.connect() as conn:
            generation, position = base.install(conn, OutboundProjection())
            settled(conn)  # every event committed so far readable (an open transaction holds it back)
            while notifications := self.app.recorder.select_notifications(
                start=position, limit=500, inclusive_of_start=False
            ):
                with conn.transaction(), conn.cursor() as cur:
                    events = base.decode(self.app.mapper, notifications)
                    base.apply_batch(cur, OutboundProjection(), base.Tables(generation), events)
                position = notifications[-1].id

    def dispatch(self, **changes: Any) -> int:
        """One in-process dispatcher pass over what is due now."""
        settings = SyncSettings(**{**_fields(self.settings), **changes})
        dispatcher = Dispatcher(self.app, self.connect, settings)
        try:
            return dispatcher.dispatch_due()
        finally:
            dispatcher.close()

    def items(self, order_id: UUID) -> list[dict[str, Any]]:
        with self.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            return cur.execute(
                "SELECT * FROM outbound_items WHERE order_id = %s ORDER BY sequence", (order_id,)
            ).fetchall()

    def due_now(self, order_id: UUID, states: tuple[str, ...] = ("failed", "in_flight")) -> None:
        """Time passes: whatever the order's items wait for (a retry, a feed's poll) is due."""
        with self.connect() as conn:
            conn.execute(
                "UPDATE outbound_items SET next_attempt_at = now() WHERE order_id = %s AND state = ANY(%s)",
                (order_id, list(states)),
            )

    def hold(self, order_id: UUID) -> None:
        """The order's pending items are not due for an hour."""
        with self.connect() as conn:
            conn.execute(
                "UPDATE outbound_items SET next_attempt_at = now() + interval '1 hour'"
                " WHERE order_id = %s AND state = 'pending'",
                (order_id,),
            )

    def settle(self, order_id: UUID, rounds: int = 40) -> list[dict[str, Any]]:
        """Dispatch until every item of the order is finished (succeeded or dead)."""
        for _ in range(rounds):
            self.queue()
            self.dispatch()
            items = self.items(order_id)
            if items and all(i["state"] in ("succeeded", "dead") for i in items):
                return items
            self.due_now(order_id)
            time.sleep(0.1)  # the sandbox processes feeds in the background
        return self.items(order_id)

    def history(self, order_id: UUID) -> list[Any]:
        return self.app.order_history(order_id)


def _fields(settings: SyncSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__struct_fields__}


@pytest.fixture
def world(
    own_target: PostgresTarget, cli_env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> Iterator[World]:
    """A ledger in its own schema with a managed Amazon account, pointed at the sandbox."""
    yield from _world(own_target, cli_env, sandbox, tmp_path, Marketplace.AMAZON)


@pytest.fixture(params=[Marketplace.WALMART, Marketplace.RAKUTEN, Marketplace.JET], ids=lambda m: m.value)
def other_world(
    request: pytest.FixtureRequest,
    own_target: PostgresTarget,
    cli_env: dict[str, str],
    sandbox: Sandbox,
    tmp_path: Path,
) -> Iterator[World]:
    """The same with a managed Walmart, Rakuten or Jet account."""
    yield from _world(own_target, cli_env, sandbox, tmp_path, request.param)


@pytest.fixture
def ebay_world(
    own_target: PostgresTarget, cli_env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> Iterator[World]:
    """The same with a managed eBay account."""
    yield from _world(own_target, cli_env, sandbox, tmp_path, Marketplace.EBAY)


def _world(
    own_target: PostgresTarget,
    cli_env: dict[str, str],
    sandbox: Sandbox,
    tmp_path: Path,
    marketplace: Marketplace,
) -> Iterator[World]:
    app = Ledger(env=own_target.eventsourcing_env())
    seller = f"flow-{os.urandom(4).hex()}"
    account = app.register_account(CTX, seller=seller, marketplace=marketplace, name="main")
    token = sandbox.new_account()
    credentials = tmp_path / "credentials.json"
    # Each adapter reads its own names (Rakuten's account is its license key); the sandbox keys sellers by them.
    secrets = {"access_token": token, "token": token, "service_secret": "s", "license_key": token}
    credentials.write_text(json.dumps({str(account.account_id): secrets}))
    src = str(Path(ledger.__file__).parents[1])
    env = cli_env | {
        "LEDGER_MARKETPLACE_URL": sandbox.url,
        "LEDGER_MARKETPLACE_CREDENTIALS": str(credentials),
        "LEDGER_SYNC_BACKOFF": "0.05",
        "LEDGER_SYNC_LEASE": "2",
        "LEDGER_DISPATCH_INTERVAL": "0.1",
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    settings = SyncSettings.from_env(env)
    yield World(own_target, app, sandbox, account.account_id, seller, token, env, settings, marketplace)
    app.close()


def _effects(world: World, order_id: UUID, operation: str) -> list[dict[str, Any]]:
    moid = world.app.get_order(order_id).marketplace_order_id
    return [
        e for e in world.sandbox.effects("amazon", world.token, order_id=moid) if e["operation"] == operation
    ]


def test_updates_reach_the_marketplace_once_in_order_and_every_answer_is_recorded(world: World) -> None:
    """A shipment whose answer is lost, then a refund; and a cancellation: each applied once, in order, with
    every answer (the lost one as a rejection) an event in the order's history."""
    shipped, cancelled = world.import_orders(2)
    world.app.ship(CTX, shipped, carrier=Carrier.UPS, tracking_number=UPS)
    world.app.cancel(CTX, cancelled, reason=CancelReason.OUT_OF_STOCK)
    world.queue()
    world.sandbox.fault("amazon", "confirmShipment", "lost")
    items = world.settle(shipped)
    assert [(i["action"], i["state"]) for i in items] == [("ship", "succeeded")]
    assert items[0]["attempts"] == 2
    [confirmation] = _effects(world, shipped, "confirmShipment")
    assert confirmation["attempts"] == 2  # re-sent under the same packageReferenceId, applied once
    assert world.remote(shipped)["status"] == "shipped"
    world.app.refund(CTX, shipped, reason=RefundReason.DAMAGED)
    items = world.settle(shipped)
    assert [(i["action"], i["state"]) for i in items] == [("ship", "succeeded"), ("refund", "succeeded")]
    keys = [refund["key"] for refund in world.remote(shipped)["refunds"]]  # one adjustment per line
    assert len(keys) == len(set(keys)) == len(world.app.get_order(shipped).lines)
    assert all(key.startswith(items[1]["idempotency_key"] + ":") for key in keys)
    items = world.settle(cancelled)
    assert [(i["action"], i["state"]) for i in items] == [("cancel", "succeeded")]
    assert world.remote(cancelled)["status"] == "canceled"
    types = [e.type for e in world.history(shipped)]
    assert (
        types.index("Shipped") < types.index("MarketplaceRejected") < types.index("MarketplaceAcknowledged")
    )
    assert Counter(types)["MarketplaceAcknowledged"] == 2
    assert "MarketplaceAcknowledged" in [e.type for e in world.history(cancelled)]
    assert world.sandbox.violations() == []


def test_a_dispatcher_killed_between_the_call_and_the_record_is_made_good(world: World) -> None:
    """`ledger dispatch` is SIGKILLed after Amazon applied a shipment but before the answer was recorded: the
    item is taken again after its lease, re-sent under the same key, applied once, recorded once."""
    [order_id] = world.import_orders(1)
    world.app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS)
    world.queue()
    world.hold(order_id)
    dispatcher = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", "dispatch"], env=world.env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert dispatcher.stdout is not None
        assert "dispatcher running" in dispatcher.stdout.readline()
        # Hold the event store's table lock: the dispatcher can call Amazon but not record the answer.
        with world.connect() as holder:
            holder.autocommit = False
            holder.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
            world.due_now(order_id, states=("pending",))
            applied = world.sandbox.wait_for(lambda: _effects(world, order_id, "confirmShipment"), timeout=30)
            assert applied, "the dispatcher never reached the marketplace"
            dispatcher.send_signal(signal.SIGKILL)
            dispatcher.wait(timeout=10)
            # Its save is one autocommit INSERT, waiting on the lock in its server process, which would
            # finish it once the lock goes: the process died before the answer was recorded, so its
            # statement dies with it (what a crash before the INSERT reached the server leaves).
            holder.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
            )
            holder.rollback()
    finally:
        if dispatcher.poll() is None:
            dispatcher.kill()
            dispatcher.wait(timeout=10)
    [item] = world.items(order_id)
    assert item["state"] == "in_flight"
    assert "MarketplaceAcknowledged" not in [e.type for e in world.history(order_id)]
    assert world.dispatch() == 0  # the lease still holds
    world.due_now(order_id)  # the lease runs out
    assert world.dispatch() == 1
    [item] = world.items(order_id)
    assert (item["state"], item["attempts"]) == ("succeeded", 2)
    [confirmation] = _effects(world, order_id, "confirmShipment")
    assert confirmation["attempts"] == 2
    assert Counter(e.type for e in world.history(order_id))["MarketplaceAcknowledged"] == 1


def test_a_429_delays_the_retry_by_its_retry_after(world: World) -> None:
    """A throttled shipment is failed with the 429 recorded, not due before Retry-After, then goes through."""
    [order_id] = world.import_orders(1)
    world.app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS)
    world.queue()
    world.sandbox.fault("amazon", "confirmShipment", "throttle", retry_after=120)
    before = datetime.now(UTC)
    assert world.dispatch() == 1
    [item] = world.items(order_id)
    assert item["state"] == "failed"
    assert item["next_attempt_at"] >= before + timedelta(seconds=120)
    assert "429" in item["last_error"]
    assert world.dispatch() == 0  # not due yet
    rejected = [e for e in world.history(order_id) if e.type == "MarketplaceRejected"]
    assert len(rejected) == 1
    world.due_now(order_id)
    assert world.dispatch() == 1
    assert world.items(order_id)[0]["state"] == "succeeded"


def test_dead_items_are_listed_and_an_operator_retry_sends_them(world: World) -> None:
    """After LEDGER_SYNC_MAX_ATTEMPTS failures the item is dead with its reason at GET /v1/sync/outbound, and
    POST /v1/sync/outbound/{id}/retry makes it go again, attempts kept."""
    [order_id] = world.import_orders(1)
    world.app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS)
    world.queue()
    world.sandbox.fault("amazon", "confirmShipment", "server_error", count=2, status=503)
    world.dispatch(sync_max_attempts=2)
    world.due_now(order_id)
    world.dispatch(sync_max_attempts=2)
    [item] = world.items(order_id)
    assert item["state"] == "dead"
    assert item["last_error"].startswith("gave up after 2 attempts")
    key, _ = world.app.create_api_key(CTX, seller=world.seller, role=Role.OPERATOR)
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(world.target, ledger=world.app)) as client:
        listed = client.get("/v1/sync/outbound", params={"state": "dead"}, headers=auth)
        assert listed.status_code == 200, listed.text
        [dead] = [i for i in listed.json()["items"] if i["order_id"] == str(order_id)]
        assert dead["last_error"].startswith("gave up after 2 attempts")
        retried = client.post(f"/v1/sync/outbound/{dead['id']}/retry", headers=auth)
        assert retried.status_code == 200, retried.text
    assert world.dispatch(sync_max_attempts=2) == 1
    [item] = world.items(order_id)
    assert (item["state"], item["attempts"]) == ("succeeded", 3)
    [confirmation] = _effects(world, order_id, "confirmShipment")
    assert confirmation["attempts"] == 1  # the 503s applied nothing


def test_import_and_dispatch_commands_and_sync_check(world: World) -> None:
    """`ledger import --once`, `ledger dispatch --once` and `ledger sync check` as a user runs them; a change
    made directly in the marketplace shows as a difference, and `sync replay` re-sends idempotently."""
    made = [
        *world.sandbox.orders(
            "amazon", world.token, purchased_at=(datetime.now(UTC) - timedelta(hours=3)).isoformat()
        ),
        # bought minutes ago: a buyer may still cancel it at once on Amazon
        *world.sandbox.orders(
            "amazon", world.token, purchased_at=(datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        ),
    ]

    def ledger_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ledger.cli", *args],
            check=False,
            env=world.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    imported = ledger_cli("import", "--once", "--account", str(world.account_id))
    assert imported.returncode == 0, imported.stderr
    assert "2 new" in imported.stdout
    first, second = (world.order_id(o["order_id"]) for o in made)
    world.app.ship(CTX, first, carrier=Carrier.UPS, tracking_number=UPS)
    dispatched = ledger_cli("dispatch", "--once")  # brings the queue up to date itself: no worker runs
    assert dispatched.returncode == 0, dispatched.stderr
    assert world.items(first)[0]["state"] == "succeeded"
    checked = ledger_cli("sync", "check", "--account", str(world.account_id))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 orders checked, 0 differences" in checked.stdout
    # The buyer cancels the second order on Amazon; the ledger has not heard yet.
    line = world.app.get_order(second).lines[0].line_id
    world.sandbox.event("amazon", world.token, made[1]["order_id"], "buyer_cancel")
    checked = ledger_cli("sync", "check", "--account", str(world.account_id), "--json")
    assert checked.returncode == 1
    report = json.loads(checked.stdout)
    assert {d["field"] for d in report["differences"]} >= {f"line {line} cancelled"}
    replayed = ledger_cli("sync", "replay", "--order", str(first))
    assert replayed.returncode == 0, replayed.stderr
    assert world.items(first)[0]["state"] == "pending"
    assert ledger_cli("dispatch", "--once").returncode == 0
    assert world.items(first)[0]["state"] == "succeeded"
    [confirmation] = _effects(world, first, "confirmShipment")
    assert confirmation["attempts"] == 2  # sent again, applied once


@pytest.mark.slow
def test_serve_imports_and_dispatches_until_sigterm(world: World, tmp_path: Path) -> None:
    """`ledger serve` with a marketplace URL: orders flow in on the schedule and a shipment flows out."""
    [made] = world.sandbox.orders(
        "amazon", world.token, purchased_at=(datetime.now(UTC) - timedelta(hours=3)).isoformat()
    )
    env = world.env | {"LEDGER_IMPORT_INTERVAL": "0.5"}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=(errors := tmp_path / "serve.stderr").open("w"),
        text=True,
    )
    # The waits are generous (they return as soon as the condition holds): a loaded CI machine runs the
    # server, its importer and its dispatcher on the same two CPUs as the rest of the suite.
    try:
        assert server.stdout is not None
        lines: list[str] = []
        while not any("marketplace sync on" in line for line in lines):
            line = server.stdout.readline()  # the workers' lines come in any order
            if not line:  # the server exited before saying so
                break
            lines.append(line)
        assert any("marketplace sync on" in line for line in lines), (lines, errors.read_text())
        order_id = world.sandbox.wait_for(lambda: _found(world, made["order_id"]), timeout=90)
        assert order_id is not None, ("the order was never imported", errors.read_text())
        world.app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS)
        shipped = world.sandbox.wait_for(lambda: world.remote(order_id)["status"] == "shipped", timeout=90)
        assert shipped, ("the shipment never reached the marketplace", errors.read_text())
        acknowledged = world.sandbox.wait_for(
            lambda: "MarketplaceAcknowledged" in [e.type for e in world.history(order_id)], timeout=90
        )
        assert acknowledged, ("the acknowledgement was never recorded", errors.read_text())
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, errors.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


def _found(world: World, marketplace_order_id: str) -> UUID | None:
    try:
        return world.order_id(marketplace_order_id)
    except LedgerError:
        return None


def test_ebay_disputes_and_a_sellers_cancellation_come_back_as_events_once(ebay_world: World) -> None:
    """eBay: a buyer's payment dispute opened and closed on the marketplace is recorded once each; a seller's
    cancellation of a paid order goes out as a cancellation request, and the buyer's approval, imported, closes
    the ledger's cancellation dispute and cancels the units, without echoing anything back."""
    world = ebay_world
    claimed, cancelled = world.import_orders(2)
    importer = Importer(world.app, world.connect, world.settings)
    moid = world.app.get_order(claimed).marketplace_order_id
    opened = world.sandbox.event("ebay", world.token, moid, "open_dispute", reason="ITEM_NOT_RECEIVED")
    [dispute] = opened["disputes"]
    importer.run_round(world.account_id)
    importer.run_round(world.account_id)
    world.sandbox.event("ebay", world.token, moid, "close_dispute", dispute_id=dispute["dispute_id"],
                        outcome="rejected")  # fmt: skip
    importer.run_round(world.account_id)
    importer.run_round(world.account_id)
    counts = Counter(e.type for e in world.history(claimed))
    assert (counts["DisputeOpened"], counts["DisputeClosed"]) == (1, 1)
    [recorded] = world.app.get_order(claimed).disputes
    assert (recorded.marketplace_dispute_id, recorded.outcome) == (dispute["dispute_id"], "rejected")

    world.app.cancel(CTX, cancelled, reason=CancelReason.OUT_OF_STOCK)  # paid on eBay: a cancellation request
    items = world.settle(cancelled)
    assert [(i["action"], i["state"]) for i in items] == [("cancel", "succeeded")]
    cancel_moid = world.app.get_order(cancelled).marketplace_order_id
    world.sandbox.event("ebay", world.token, cancel_moid, "approve_cancellation")
    importer.run_round(world.account_id)
    importer.run_round(world.account_id)
    order = world.app.get_order(cancelled)
    assert order.status == "canceled"
    assert [d.outcome for d in order.disputes] == ["accepted"]
    world.queue()
    assert len(world.items(cancelled)) == 1  # nothing echoed back
    assert world.sandbox.violations() == []


def test_walmart_rakuten_and_jet_cancellations_go_out_once_after_walmarts_acknowledgement(
    other_world: World,
) -> None:
    """A seller's cancellation reaches Walmart, Rakuten and Jet once; Walmart first hears the order acknowledged."""
    world = other_world
    [order_id] = world.import_orders(1)
    world.app.cancel(CTX, order_id, reason=CancelReason.OUT_OF_STOCK)
    items = world.settle(order_id)
    expected = [("cancel", "succeeded")]
    if world.marketplace is Marketplace.WALMART:
        expected.insert(0, ("acknowledge", "succeeded"))
        assert world.remote(order_id)["acknowledged_at"] is not None
    assert [(i["action"], i["state"]) for i in items] == expected
    assert world.remote(order_id)["status"] == "canceled"
    moid = world.app.get_order(order_id).marketplace_order_id
    effects = world.sandbox.effects(world.marketplace.value, world.token, order_id=moid)
    assert all(effect["attempts"] == 1 for effect in effects)
    types = Counter(e.type for e in world.history(order_id))
    assert types["MarketplaceAcknowledged"] == len(expected)


def test_a_missing_credential_is_a_configuration_error_without_inventing_an_answer(world: World) -> None:
    """Without the account's credentials the marketplace is never reached: the item is dead at once with the
    configuration reason (not retried as if temporary) and no MarketplaceRejected is recorded; once the
    credentials are back, an operator's retry sends it."""
    [order_id] = world.import_orders(1)
    world.app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS)
    world.queue()
    assert world.settings.credentials_file is not None
    saved = world.settings.credentials_file.read_text()
    world.settings.credentials_file.write_text("{}")
    assert world.dispatch() == 1
    [item] = world.items(order_id)
    assert (item["state"], item["attempts"]) == ("dead", 1)
    assert item["last_error"].startswith("configuration error (marketplace-credentials-missing)")
    assert str(world.account_id) in item["last_error"]
    assert "MarketplaceRejected" not in [e.type for e in world.history(order_id)]
    world.settings.credentials_file.write_text(saved)
    with world.connect() as conn:
        assert OutboundView().retry(conn, item["seller"], item["id"]) is not None
    assert world.dispatch() == 1
    assert world.items(order_id)[0]["state"] == "succeeded"


def test_the_buyer_cancels_on_amazon_while_the_seller_ships_and_the_seller_can_resolve_it(
    world: World,
) -> None:
    """The race: the buyer cancels on Amazon (inside its 30 minutes) while the seller ships, before the next
    import. Amazon refuses the confirmation ("order is canceled"): the ledger records the marketplace's
    cancellation with attention, the seller voids the shipment (the order is then cancelled as Amazon has it),
    and the next import records nothing more."""
    [order_id] = world.import_orders(1, purchased_at=(datetime.now(UTC) - timedelta(minutes=5)).isoformat())
    moid = world.app.get_order(order_id).marketplace_order_id
    shipment_id = world.app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS).ids["shipment_id"]
    world.sandbox.event("amazon", world.token, moid, "buyer_cancel", reason="changed my mind")

    items = world.settle(order_id)

    assert [(i["action"], i["state"]) for i in items] == [("ship", "dead")]
    order = world.app.get_order(order_id)
    assert order.attention
    assert sum(i.quantity for i in order.marketplace_cancelled) == order.units
    assert "MarketplaceCancelled" in [e.type for e in world.history(order_id)]
    world.app.void_shipment(CTX, order_id, shipment_id=shipment_id, reason="the buyer cancelled on Amazon")
    order = world.app.get_order(order_id)
    assert (order.status, order.open, order.attention) == ("canceled", False, False)
    version = order.version
    Importer(world.app, world.connect, world.settings).run_round(world.account_id)
    assert world.app.get_order(order_id).version == version  # the import's report is the ledger's already
    world.queue()
    assert [(i["action"], i["state"]) for i in world.items(order_id)] == [
        ("ship", "resolved")
    ]  # withdrawn; nothing echoed
    assert world.remote(order_id)["status"] == "canceled"
    assert world.sandbox.violations() == []


def _acknowledgements(world: World, order_id: UUID) -> list[Any]:
    return [e for e in world.history(order_id) if e.type == "MarketplaceAcknowledged"]


def _queued(world: World, order_id: UUID, action: str) -> None:
    """The queue catches up until it holds the order's `action` item (another session's open transaction on the
    shared server may hold the log's commit horizon back for a moment; `settle` would stop at the items there)."""

    def found() -> bool:
        world.queue()
        return any(i["action"] == action for i in world.items(order_id))

    assert world.sandbox.wait_for(found, timeout=30), f"the {action} item was never queued"


def test_a_cancellation_the_buyer_made_on_amazon_meanwhile_finishes_by_itself(world: World) -> None:
    """The race: the seller cancels units while the buyer cancels the order on Amazon (inside its 30
    minutes); the import records the buyer's cancellation; then the seller's goes out and Amazon refuses it
    (`18041`, cancelled already). Amazon holds what the ledger holds: the item succeeds, the order's history
    says Amazon had it already, and nothing needs attention."""
    [order_id] = world.import_orders(1, purchased_at=(datetime.now(UTC) - timedelta(minutes=5)).isoformat())
    order = world.app.get_order(order_id)
    first = order.lines[0]
    world.app.cancel(CTX, order_id, reason=CancelReason.OUT_OF_STOCK, lines=(LineQuantity(first.line_id, 1),))
    _queued(world, order_id, "cancel")
    world.sandbox.event(
        "amazon", world.token, order.marketplace_order_id, "buyer_cancel", reason="changed mind"
    )
    Importer(world.app, world.connect, world.settings).run_round(world.account_id)
    assert world.app.get_order(order_id).status == "canceled"  # the buyer's cancellation, imported

    items = world.settle(order_id)

    assert [(i["action"], i["state"]) for i in items] == [("cancel", "succeeded")]
    assert items[0]["marketplace_reference"]  # the feed Amazon refused it in
    [acknowledged] = _acknowledgements(world, order_id)
    assert acknowledged.data["action"] == "cancel"
    assert acknowledged.reason is not None
    assert "had it already" in acknowledged.reason
    assert "18041" in acknowledged.reason
    types = [e.type for e in world.history(order_id)]
    assert "MarketplaceRejected" not in types
    assert "SyncItemDied" not in types
    order = world.app.get_order(order_id)
    assert (order.status, order.attention, order.sync_state) == ("canceled", False, "in_sync")
    # the seller's cancellation is sent; the buyer's, the marketplace's own word, is never sent back
    assert [(e.action, e.state, e.reason) for e in order.sync] == [
        ("cancel", "sent", None),
        ("cancel", "not_sent", "from_marketplace"),
    ]
    assert world.remote(order_id)["status"] == "canceled"
    assert world.sandbox.violations() == []


def test_a_cancellation_refused_for_units_amazon_shipped_still_dies(world: World) -> None:
    """Not in effect: the seller cancels in the ledger while the units ship at Amazon (confirmed in Seller
    Central); Amazon refuses the cancellation (`18041`, shipped already) and its order shows no cancelled
    unit, so the item is dead with the refusal, as before, and the order needs attention."""
    [order_id] = world.import_orders(1)
    world.app.cancel(CTX, order_id, reason=CancelReason.OUT_OF_STOCK)
    _queued(world, order_id, "cancel")
    view = world.sandbox.order("amazon", world.token, world.app.get_order(order_id).marketplace_order_id)
    elsewhere = AmazonClient(Endpoint(world.sandbox.url, {"access_token": world.token}))
    try:
        shipment = {
            "shipment_id": str(uuid4()),
            "carrier": "ups",
            "tracking_number": UPS,
            "shipped_at": datetime.now(UTC).isoformat(),
            "lines": whole_lines(view),
        }
        assert isinstance(elsewhere.send(sync_request(view, "ship", shipment)), Accepted)
    finally:
        elsewhere.close()

    items = world.settle(order_id)

    assert [(i["action"], i["state"]) for i in items] == [("cancel", "dead")]
    assert items[0]["last_error"].startswith("18041: ")
    types = [e.type for e in world.history(order_id)]
    assert "MarketplaceAcknowledged" not in types
    assert types.index("MarketplaceRejected") < types.index("SyncItemDied")
    assert world.app.get_order(order_id).attention
    assert world.remote(order_id)["status"] == "shipped"


def test_a_cancellation_whose_order_cannot_be_read_keeps_its_refusal(world: World) -> None:
    """When the marketplace's order cannot be read after the refusal (getOrder fails), nothing is assumed:
    the item is dead with the refusal, and an operator's retry asks again."""
    [order_id] = world.import_orders(1, purchased_at=(datetime.now(UTC) - timedelta(minutes=5)).isoformat())
    order = world.app.get_order(order_id)
    world.app.cancel(CTX, order_id, reason=CancelReason.OUT_OF_STOCK)
    _queued(world, order_id, "cancel")
    world.sandbox.event("amazon", world.token, order.marketplace_order_id, "buyer_cancel")
    world.sandbox.fault("amazon", "getOrder", "server_error", count=100, status=503)
    try:
        items = world.settle(order_id)
    finally:
        world.sandbox.clear_faults()
    assert [(i["action"], i["state"]) for i in items] == [("cancel", "dead")]
    assert items[0]["last_error"].startswith("18041: ")
    assert world.app.get_order(order_id).attention
    with world.connect() as conn:
        assert OutboundView().retry(conn, items[0]["seller"], items[0]["id"]) is not None
    items = world.settle(order_id)
    assert [(i["action"], i["state"]) for i in items] == [("cancel", "succeeded")]
    assert not world.app.get_order(order_id).attention


def test_a_cancellation_the_marketplace_made_itself_meanwhile_finishes_by_itself(other_world: World) -> None:
    """Walmart, Rakuten, Jet: the marketplace cancels the order itself while the seller's cancellation waits;
    the seller's is refused (no units left to cancel, or already cancelled), the marketplace's order shows every
    unit cancelled, and the item succeeds, its acknowledgement saying the marketplace had it already."""
    world = other_world
    [order_id] = world.import_orders(1)
    world.settle(order_id)  # Walmart: the order's acknowledgement goes first
    world.app.cancel(CTX, order_id, reason=CancelReason.OUT_OF_STOCK)
    _queued(world, order_id, "cancel")
    moid = world.app.get_order(order_id).marketplace_order_id
    world.sandbox.event(world.marketplace.value, world.token, moid, "marketplace_cancel")

    items = world.settle(order_id)

    assert [(i["action"], i["state"]) for i in items if i["action"] == "cancel"] == [("cancel", "succeeded")]
    [acknowledged] = [e for e in _acknowledgements(world, order_id) if e.data["action"] == "cancel"]
    assert acknowledged.reason is not None
    assert "had it already" in acknowledged.reason
    assert "SyncItemDied" not in [e.type for e in world.history(order_id)]
    assert not world.app.get_order(order_id).attention
    assert world.sandbox.violations() == []


def test_a_late_amazon_buyer_request_is_recorded_and_answered_by_cancelling_or_shipping(world: World) -> None:
    """Case 6: past Amazon's 30 minutes a buyer can only ask (`BuyerRequestedCancel` on an open order): the
    import records the request (buyer_cancel_requested, attention); cancelling accepts it and goes to Amazon
    as a cancellation, shipping declines it; a re-import records nothing twice."""
    accepted, declined = world.import_orders(2)
    importer = Importer(world.app, world.connect, world.settings)
    for order_id in (accepted, declined):
        moid = world.app.get_order(order_id).marketplace_order_id
        world.sandbox.event("amazon", world.token, moid, "buyer_cancel", reason="found it cheaper")
    importer.run_round(world.account_id)
    importer.run_round(world.account_id)

    for order_id in (accepted, declined):
        order = world.app.get_order(order_id)
        assert (order.buyer_cancel_requested, order.attention, order.status) == (True, True, "unshipped")
        assert Counter(e.type for e in world.history(order_id))["CancellationRequested"] == 1
    world.app.cancel(CTX, accepted, reason=CancelReason.BUYER_CANCELLED)
    world.app.ship(CTX, declined, carrier=Carrier.UPS, tracking_number=UPS)
    for order_id in (accepted, declined):
        assert not world.app.get_order(order_id).buyer_cancel_requested
    assert [(i["action"], i["state"]) for i in world.settle(accepted)] == [("cancel", "succeeded")]
    assert world.remote(accepted)["status"] == "canceled"
    assert [(i["action"], i["state"]) for i in world.settle(declined)] == [("ship", "succeeded")]
    assert world.sandbox.violations() == []


def test_a_check_records_each_divergence_found_and_resolved_on_the_order(world: World) -> None:
    """Reconciliation: a shipment the marketplace has not heard of yet is a divergence found (an event,
    attention, listed as an open discrepancy); once the dispatcher sends it, the next check resolves it; a
    check that finds nothing new records nothing."""
    [order_id] = world.import_orders(1)
    world.app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS)
    checker = SyncChecker(world.app, world.connect, world.settings)

    report = checker.check(world.account_id)

    assert report.differences
    order = world.app.get_order(order_id)
    assert order.attention
    [found] = world.app.discrepancies(world.seller, open_only=True)
    assert (found.order_id, found.open) == (order_id, True)
    assert ("status", "shipped", "unshipped") in {
        (d.field, d.ledger, d.marketplace) for d in found.divergences
    }
    version = order.version
    checker.check(world.account_id)
    assert world.app.get_order(order_id).version == version  # nothing new found: nothing recorded

    world.settle(order_id)
    assert not checker.check(world.account_id).differences
    order = world.app.get_order(order_id)
    assert not order.attention
    assert world.app.discrepancies(world.seller, open_only=True) == []
    [resolved] = world.app.discrepancies(world.seller, marketplace=Marketplace.AMAZON, open_only=False)
    assert resolved.resolved_at is not None
    assert [e.type for e in world.history(order_id)].count("DivergenceFound") == 1

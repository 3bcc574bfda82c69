"""The importer against the sandbox marketplaces over HTTP and the ledger on PostgreSQL: every order once, the
cursor only past stored orders, marketplace facts as events exactly once, acknowledgements once, and Third
Party Managed accounts left alone."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from order_scenarios import catch_up
from sandbox_support import Sandbox, sandbox_fixture, sandbox_url_fixture  # noqa: F401

from ledger.aggregates.values import Context, Marketplace, Source
from ledger.application.ledger import Ledger
from ledger.application.queries import AccountDetails
from ledger.integrations.amazon import AmazonClient
from ledger.integrations.base import MarketplaceClient, OrderPage
from ledger.integrations.importer import Importer
from ledger.integrations.marketplaces import SyncSettings, endpoint_for
from ledger.integrations.outbound import OutboundProjection
from ledger.projections import base

pytestmark = pytest.mark.postgres
CTX = Context(actor="test", source=Source.API)


class FailAfterFirstPage:
    """The real adapter, and once its first page is in, the sandbox is told to fail the next getOrders (503):
    the importer dies between two pages, as a crashed process would."""

    def __init__(self, client: MarketplaceClient, sandbox: Sandbox) -> None:
        self.client = client
        self.sandbox = sandbox
        self.armed = False

    def list_orders(self, updated_after: datetime, page: str | None = None) -> OrderPage:
        result = self.client.list_orders(updated_after, page)
        if not self.armed:
            self.armed = True
            self.sandbox.fault("amazon", "getOrders", "server_error", status=503)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.fixture
def amazon(app: Ledger, sandbox: Sandbox, tmp_path: Path) -> dict[str, Any]:
    """A managed Amazon account of a fresh seller, its sandbox token, and sync settings pointing at the sandbox."""
    return _account(app, sandbox, tmp_path, managed=True)


def _account(app: Ledger, sandbox: Sandbox, tmp_path: Path, *, managed: bool) -> dict[str, Any]:
    account = app.register_account(
        CTX, seller=f"imp-{uuid4().hex[:10]}", marketplace=Marketplace.AMAZON, name="main",
        fulfillment_managed=managed,
    )  # fmt: skip
    token = sandbox.new_account()
    credentials = tmp_path / f"credentials-{account.account_id}.json"
    credentials.write_text(json.dumps({str(account.account_id): {"access_token": token}}))
    settings = SyncSettings(marketplace_url=sandbox.url, credentials_file=credentials, import_overlap=60)
    return {"account": account, "token": token, "settings": settings}


def _importer(app: Ledger, connect: base.Connect, settings: SyncSettings, **kwargs: Any) -> Importer:
    return Importer(app, connect, settings, **kwargs)


def _small_pages(account: AccountDetails, settings: SyncSettings) -> MarketplaceClient:
    endpoint = endpoint_for(str(account.account_id), Marketplace.AMAZON, settings)
    return AmazonClient(endpoint, page_size=3)


def _history(app: Ledger, order_id: UUID) -> list[str]:
    return [entry.type for entry in app.order_history(order_id)]


def _order_id(app: Ledger, account: AccountDetails, marketplace_order_id: str) -> UUID:
    return app.find_order(account.seller, Marketplace.AMAZON, marketplace_order_id).order_id


def test_every_order_once_despite_duplicate_pages_and_a_crash_between_pages(
    app: Ledger, connect: base.Connect, sandbox: Sandbox, amazon: dict[str, Any]
) -> None:
    """7 orders in pages of 3, a page repeated and a failure after page 1: each order imported exactly once."""
    account, token, settings = amazon["account"], amazon["token"], amazon["settings"]
    orders = sandbox.orders(
        "amazon", token, count=7, purchased_at=(datetime.now(UTC) - timedelta(hours=3)).isoformat()
    )
    sandbox.fault("amazon", "getOrders", "duplicate", count=2)

    def crashing(a: AccountDetails, s: SyncSettings) -> MarketplaceClient:
        return FailAfterFirstPage(_small_pages(a, s), sandbox)  # type: ignore[return-value]

    [first] = _importer(app, connect, settings, client_factory=crashing).run_round(account.account_id)
    assert first.error is not None
    assert "503" in first.error
    assert first.created == 3
    [second] = _importer(app, connect, settings, client_factory=_small_pages).run_round(account.account_id)
    assert second.error is None
    assert second.created == 4
    assert second.orders > 7  # page 1 again, and the duplicated orders
    [third] = _importer(app, connect, settings, client_factory=_small_pages).run_round(account.account_id)
    assert (third.created, third.updated, third.facts) == (0, 0, 0)
    for order in orders:
        history = Counter(_history(app, _order_id(app, account, order["order_id"])))
        assert history["Imported"] == 1
    assert sandbox.violations() == []


def test_the_cursor_moves_only_past_stored_orders(
    app: Ledger, connect: base.Connect, sandbox: Sandbox, amazon: dict[str, Any]
) -> None:
    """A round that fails on its first page leaves the cursor; one that succeeds moves it to the newest order."""
    account, token, settings = amazon["account"], amazon["token"], amazon["settings"]
    sandbox.orders("amazon", token, count=2)
    importer = _importer(app, connect, settings)
    sandbox.fault("amazon", "getOrders", "server_error", status=500)
    [failed] = importer.run_round(account.account_id)
    assert failed.error is not None
    assert failed.cursor is None
    with connect() as conn:
        start = conn.execute(
            "SELECT updated_after, last_error FROM integration_cursors WHERE account_id = %s",
            (account.account_id,),
        ).fetchone()
    assert start is not None
    assert start[1] == failed.error
    [done] = importer.run_round(account.account_id)
    assert done.created == 2
    assert done.cursor is not None
    assert done.cursor > start[0]
    with connect() as conn:
        row = conn.execute(
            "SELECT updated_after, last_error FROM integration_cursors WHERE account_id = %s",
            (account.account_id,),
        ).fetchone()
    assert row == (done.cursor, None)


def test_marketplace_facts_become_events_once(
    app: Ledger, connect: base.Connect, sandbox: Sandbox, amazon: dict[str, Any]
) -> None:
    """Payment and a buyer's cancellation reported by the marketplace are recorded once, from the marketplace,
    and a buyer's cancellation is not echoed back to it."""
    account, token, settings = amazon["account"], amazon["token"], amazon["settings"]
    recent = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    [unpaid] = sandbox.orders("amazon", token, count=1, paid=False, purchased_at=recent)
    importer = _importer(app, connect, settings)
    importer.run_round(account.account_id)
    order_id = _order_id(app, account, unpaid["order_id"])
    assert app.get_order(order_id).payment_status == "pending"
    sandbox.event("amazon", token, unpaid["order_id"], "pay")
    importer.run_round(account.account_id)
    assert app.get_order(order_id).payment_status == "paid"
    sandbox.event("amazon", token, unpaid["order_id"], "buyer_cancel")
    importer.run_round(account.account_id)
    importer.run_round(account.account_id)  # the same facts again
    sandbox.event("amazon", token, unpaid["order_id"], "pay", at=datetime.now(UTC).isoformat())  # restamped
    [again] = importer.run_round(account.account_id)
    assert again.refused == []
    assert again.facts == 0
    history = app.order_history(order_id)
    counts = Counter(entry.type for entry in history)
    assert counts["PaymentCleared"] == 1
    assert counts["Cancelled"] == 1
    cancelled = next(entry for entry in history if entry.type == "Cancelled")
    assert cancelled.source == "marketplace"
    assert cancelled.reason == "buyer_cancelled"
    assert app.get_order(order_id).status == "canceled"
    catch_up(OutboundProjection(), connect, app, 500)
    with connect() as conn:
        actions = conn.execute(
            "SELECT action FROM outbound_items WHERE order_id = %s", (order_id,)
        ).fetchall()
    assert ("cancel",) not in actions


def test_orders_are_acknowledged_once_after_they_are_stored(
    app: Ledger, connect: base.Connect, sandbox: Sandbox, amazon: dict[str, Any]
) -> None:
    """Amazon's acknowledgement is sent once per order, whatever the number of rounds that see it."""
    account, token, settings = amazon["account"], amazon["token"], amazon["settings"]
    orders = sandbox.orders(
        "amazon", token, count=2, purchased_at=(datetime.now(UTC) - timedelta(hours=3)).isoformat()
    )
    importer = _importer(app, connect, settings)
    [report] = importer.run_round(account.account_id)
    importer.run_round(account.account_id)
    assert report.acknowledged == 2
    for order in orders:
        acks = sandbox.wait_for(
            lambda o=order: [e for e in sandbox.effects("amazon", token, order_id=o["order_id"])
                             if e["operation"] == "acknowledgeOrder"]
        )  # fmt: skip
        assert len(acks) == 1
        assert acks[0]["attempts"] == 1


def test_third_party_managed_orders_import_and_never_reach_the_marketplace(
    app: Ledger, connect: base.Connect, sandbox: Sandbox, tmp_path: Path
) -> None:
    """An account the seller fulfils elsewhere: orders import as Third Party Managed, nothing is sent back."""
    tpm = _account(app, sandbox, tmp_path, managed=False)
    account, token = tpm["account"], tpm["token"]
    [order] = sandbox.orders(
        "amazon", token, count=1, purchased_at=(datetime.now(UTC) - timedelta(hours=3)).isoformat()
    )
    [report] = _importer(app, connect, tpm["settings"]).run_round(account.account_id)
    assert report.created == 1
    assert report.acknowledged == 0
    order_id = _order_id(app, account, order["order_id"])
    assert app.get_order(order_id).third_party_managed
    catch_up(OutboundProjection(), connect, app, 500)
    with connect() as conn:
        assert conn.execute(
            "SELECT count(*) FROM outbound_items WHERE order_id = %s", (order_id,)
        ).fetchone() == (0,)
    assert sandbox.effects("amazon", token) == []


def test_accounts_are_found_in_the_log(app: Ledger, connect: base.Connect, amazon: dict[str, Any]) -> None:
    """A round without --account covers every registered account, including ones registered since the last."""
    importer = _importer(app, connect, amazon["settings"])
    with connect() as conn:
        conn.autocommit = True
        found = importer.discover_accounts(conn)
        assert amazon["account"].account_id in found
        later = app.register_account(
            CTX, seller=f"imp-{uuid4().hex[:10]}", marketplace=Marketplace.JET, name="x"
        )
        assert later.account_id in importer.discover_accounts(conn)


def test_an_account_another_process_is_importing_is_skipped(
    app: Ledger, connect: base.Connect, sandbox: Sandbox, amazon: dict[str, Any]
) -> None:
    """Two importers (two `ledger worker`s) never import one account at the same time: the second skips it."""
    account, token, settings = amazon["account"], amazon["token"], amazon["settings"]
    sandbox.orders("amazon", token, count=1)
    key = zlib.crc32(f"ledger-import:{account.account_id}".encode()) & 0x7FFFFFFF
    with connect() as other:
        other.execute("SELECT pg_advisory_lock(%s)", (key,))
        [skipped] = _importer(app, connect, settings).run_round(account.account_id)
        other.execute("SELECT pg_advisory_unlock(%s)", (key,))
    assert skipped.error == "skipped: another process is importing this account"
    assert skipped.orders == 0
    [done] = _importer(app, connect, settings).run_round(account.account_id)
    assert done.created == 1


def test_the_importer_keeps_to_amazons_published_limits_per_operation(
    app: Ledger, connect: base.Connect, sandbox: Sandbox, amazon: dict[str, Any]
) -> None:
    """With the sandbox enforcing Amazon's limits (getOrderItems: 0.5/s, burst 30), an import of 33 orders waits
    for its own getOrderItems tokens (the dispatcher's table): past the burst it is paced, not refused (a 429
    that two clocks' skew still causes is waited out), and the round imports every order."""
    sandbox.settings(rate_limits=1)
    sandbox.orders("amazon", amazon["token"], 33, paid=False)  # unpaid: no acknowledgement feeds
    fired_before = len(sandbox.faults()["fired"])

    (report,) = _importer(app, connect, amazon["settings"]).run_round(amazon["account"].account_id)

    assert (report.error, report.created) == (None, 33)
    fired = sandbox.faults()["fired"][fired_before:]
    refused = [f["operation"] for f in fired if f["kind"] == "rate_limit"]
    assert len(refused) <= 3  # never the flood of a client that does not pace itself


def test_a_429_backs_the_importer_off_and_the_page_is_asked_again(
    app: Ledger, connect: base.Connect, sandbox: Sandbox, amazon: dict[str, Any]
) -> None:
    """Two 429s with Retry-After on getOrders pause that operation and the page is asked again: the round
    imports everything; a marketplace that keeps refusing ends the round with the error (cursor unmoved)."""
    sandbox.orders("amazon", amazon["token"], 2, paid=False)
    sandbox.fault("amazon", "getOrders", "throttle", count=2, retry_after=0.2)

    (report,) = _importer(app, connect, amazon["settings"]).run_round(amazon["account"].account_id)

    assert (report.error, report.created) == (None, 2)
    throttled = [f for f in sandbox.faults()["fired"] if f["kind"] == "throttle"]
    assert [f["operation"] for f in throttled][-2:] == ["getOrders", "getOrders"]

    sandbox.orders("amazon", amazon["token"], 1, paid=False)
    sandbox.fault("amazon", "getOrders", "throttle", count=10, retry_after=0.1)
    (refused,) = _importer(app, connect, amazon["settings"]).run_round(amazon["account"].account_id)
    assert refused.error is not None
    assert "429" in refused.error
    assert refused.created == 0

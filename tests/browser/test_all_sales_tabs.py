"""All Sales in headless Chromium with orders that came from the Amazon sandbox over HTTP: the Buyer cancel
requests tab lists an order whose buyer asked to cancel too late for Amazon to apply it, the Needs attention
tab lists an order the sync check found diverged from Amazon, both with counts that follow the other filters;
the Ship by column marks an order past Amazon's LatestShipDate as overdue in words."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from browser_support import CTX, UPS_TRACKING, look
from playwright.sync_api import expect

# The sandbox's test server and control client live with the integration tests.
sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from sandbox_support import Sandbox, sandbox_fixture, sandbox_url_fixture  # noqa: F401

from ledger.aggregates.values import Carrier, Marketplace
from ledger.eventstore import database
from ledger.integrations.importer import Importer
from ledger.integrations.marketplaces import SyncSettings
from ledger.integrations.sync_check import SyncChecker

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.slow]


@dataclass
class AmazonWorld:
    """The shop's Amazon account, pointed at the sandbox: orders made there and imported as `ledger import`
    imports them; the sync check as `ledger sync check` runs it."""

    shop: Any
    sandbox: Sandbox
    token: str
    settings: SyncSettings

    @property
    def account_id(self) -> UUID:
        return UUID(str(self.shop.accounts[Marketplace.AMAZON]))

    def connect(self) -> psycopg.Connection[Any]:
        return database.connect(self.shop.target, autocommit=True)

    def make(self, purchased_ago: timedelta) -> str:
        """A paid order at Amazon; its Amazon order id."""
        purchased_at = (datetime.now(UTC) - purchased_ago).isoformat()
        [made] = self.sandbox.orders("amazon", self.token, 1, purchased_at=purchased_at, max_lines=1)
        return str(made["order_id"])

    def import_round(self) -> None:
        Importer(self.shop.ledger, self.connect, self.settings).run_round(self.account_id)

    def order_id(self, moid: str) -> UUID:
        order_id: UUID = self.shop.ledger.find_order(self.shop.seller, Marketplace.AMAZON, moid).order_id
        return order_id


@pytest.fixture
def amazon(shop: Any, sandbox: Sandbox, tmp_path: Path) -> Iterator[AmazonWorld]:
    token = sandbox.new_account()
    credentials = tmp_path / "credentials.json"
    account_id = shop.accounts[Marketplace.AMAZON]
    credentials.write_text(json.dumps({str(account_id): {"access_token": token}}))
    settings = SyncSettings(marketplace_url=sandbox.url, credentials_file=credentials, import_overlap=60)
    yield AmazonWorld(shop, sandbox, token, settings)
    assert sandbox.violations() == []  # every request the adapter sent validated against Amazon's schemas


def _sign_in_and_wait(page: Any, shop: Any, results: int) -> None:
    page.goto(shop.url + "/signin")
    page.get_by_label("API key").fill(shop.key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="All Sales")).to_be_visible()
    deadline = time.monotonic() + 15
    while page.locator("#results").inner_text() != f"{results} results" and time.monotonic() < deadline:
        time.sleep(0.2)
        page.reload()
    expect(page.locator("#results")).to_have_text(f"{results} results")


def _listed(page: Any) -> list[str]:
    return [
        row.get_attribute("id").removeprefix("order-") for row in page.locator("table.orders tbody tr").all()
    ]


def _count(page: Any, tab: str) -> Any:
    return page.locator(f'.tabs .count[data-tab="{tab}"]')


def test_buyer_requests_and_needs_attention_tabs_list_orders_from_amazon(
    page: Any, shop: Any, amazon: AmazonWorld, tmp_path: Path
) -> None:
    """A buyer's cancellation asked on Amazon three hours after purchase is a request: the order is under Buyer
    cancel requests (and Needs attention); an order shipped in the ledger that Amazon still has unshipped is
    found diverged by the sync check and is under Needs attention only; the counts follow a search; an order
    past Amazon's ship-by date is marked Overdue in words."""
    asked = amazon.make(timedelta(hours=3))
    diverged = amazon.make(timedelta(hours=3))
    late = amazon.make(timedelta(days=5))  # Amazon's LatestShipDate is three days after purchase
    amazon.import_round()
    amazon.sandbox.event("amazon", amazon.token, asked, "buyer_cancel", reason="found it cheaper")
    amazon.import_round()
    assert amazon.shop.ledger.get_order(amazon.order_id(asked)).buyer_cancel_requested
    shop.ledger.ship(CTX, amazon.order_id(diverged), carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    report = SyncChecker(shop.ledger, amazon.connect, amazon.settings).check(amazon.account_id)
    assert {d.marketplace_order_id for d in report.differences} == {diverged}  # status, shipped units
    _sign_in_and_wait(page, shop, 3)

    late_row = page.locator(f"#order-{late}")
    expect(late_row.locator(".ship-by .overdue")).to_have_text("\N{WARNING SIGN} Overdue by 2 days")
    expect(page.locator(f"#order-{asked} .ship-by .due")).to_have_text("due in 2 days")
    expect(page.locator(f"#order-{diverged} .ship-by .overdue")).to_have_count(0)  # shipped: nothing due
    expect(_count(page, "buyer_cancel_requested")).to_have_text("1")
    expect(_count(page, "attention")).to_have_text("2")

    page.get_by_role("link", name="Needs attention").click()
    expect(page.locator("#results")).to_have_text("2 results")
    assert sorted(_listed(page)) == sorted([asked, diverged])
    expect(page.locator(f"#order-{diverged} .status")).to_contain_text("needs attention")
    look(page, tmp_path, "needs-attention")

    page.get_by_role("link", name="Buyer cancel requests").click()
    expect(page.locator("#results")).to_have_text("1 result")
    assert _listed(page) == [asked]
    expect(page.locator(f"#order-{asked} .status")).to_contain_text("buyer asked to cancel")
    look(page, tmp_path, "buyer-cancel-requests")

    page.get_by_label("Search").fill(diverged)  # the counts follow the other filters
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#results")).to_have_text("0 results")
    expect(_count(page, "buyer_cancel_requested")).to_have_text("0")
    expect(_count(page, "attention")).to_have_text("1")
    page.get_by_role("link", name="Needs attention").click()
    assert _listed(page) == [diverged]

    page.goto(f"{shop.url}/orders/{amazon.order_id(late)}")
    expect(page.locator("#ship-by .overdue")).to_have_text("\N{WARNING SIGN} Overdue by 2 days")
    look(page, tmp_path, "order-overdue")

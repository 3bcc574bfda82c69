"""The screenshots of docs/web.md, taken from a seeded demo at 1366 px: All Sales and an order page.

They go to the test's directory; with LEDGER_DOC_IMAGES set to a directory (docs/images) they are written there
too, which is how the docs' images are made again."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from browser_support import CTX, UPS_TRACKING, look
from playwright.sync_api import expect

from ledger.aggregates.values import CancelReason, Carrier, LineQuantity, Marketplace, SyncAction

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.slow]
BUYERS = ("Ann Lee", "Bob Ray", "Cy Doe", "Dee Park", "Eli Moss", "Fay Wu", "Gus Hale", "Ivy Tan")


def test_docs_screenshots_of_all_sales_and_an_order(page: Any, shop: Any, width: int, tmp_path: Path) -> None:
    """A demo seller's All Sales page lists every seeded order and the shipped order's page shows its address,
    shipments and timeline; both are saved as the docs' screenshots."""
    if width != 1366:
        pytest.skip("the docs show the desktop width")
    # Amazon and eBay give a ship-by date (three days after purchase here); Walmart's is not imported.
    marketplaces = (Marketplace.EBAY, Marketplace.WALMART, Marketplace.AMAZON)
    ids = [
        shop.import_order(
            marketplaces[n % 3],
            f"{1080 + n}-DEMO",
            buyer,
            days_ago=n + 1,
            ship_within=None if n % 3 == 1 else 3,
        )
        for n, buyer in enumerate(BUYERS)
    ]
    shipped = ids[1]
    shipment = shop.ledger.ship(
        CTX, shipped, carrier=Carrier.UPS, tracking_number=UPS_TRACKING, lines=(LineQuantity("1", 2),)
    ).ids["shipment_id"]
    shop.ledger.record_sync_outcome(
        CTX, shipped, action=SyncAction.SHIP, reference=str(shipment), accepted=True
    )
    shop.ledger.ship(
        CTX, ids[2], carrier=Carrier.OTHER, carrier_name="Local Courier", tracking_number="LOCAL-5521"
    )
    shop.ledger.cancel(CTX, ids[4], reason=CancelReason.OUT_OF_STOCK)
    shop.ledger.cancel(CTX, ids[3], reason=CancelReason.BUYER_CANCELLED)
    page.goto(shop.url + "/signin")
    page.get_by_label("API key").fill(shop.key)
    page.get_by_role("button", name="Sign in").click()
    deadline = time.monotonic() + 15
    while page.locator("#results").inner_text() != f"{len(BUYERS)} results" and time.monotonic() < deadline:
        time.sleep(0.2)
        page.reload()
    expect(page.locator("#results")).to_have_text(f"{len(BUYERS)} results")
    expect(page.locator(".ship-by .overdue")).not_to_have_count(0)  # the demo shows an overdue order
    look(page, tmp_path, "all-sales")
    page.goto(f"{shop.url}/orders/{shipped}")
    expect(page.locator("#shipments")).to_contain_text("Sent: Walmart accepted it")
    look(page, tmp_path, "order")
    if target := os.environ.get("LEDGER_DOC_IMAGES"):
        for name in ("all-sales", "order"):
            shutil.copyfile(tmp_path / f"{name}.png", Path(target) / f"web-{name}.png")

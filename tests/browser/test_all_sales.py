"""All Sales in headless Chromium: the result count, the items, account and age columns, the CSV export of the
current filter, and the bulk actions on ticked rows (ship with a tracking number per row, cancel with one
reason, by keyboard too) with the per-row report."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import pytest
from browser_support import look
from playwright.sync_api import expect

from ledger.aggregates.values import Marketplace

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.slow]


def _sign_in_and_wait(page: Any, shop: Any, results: int) -> None:
    """Sign in, then reload until the projection lists every imported order."""
    page.goto(shop.url + "/signin")
    page.get_by_label("API key").fill(shop.key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="All Sales")).to_be_visible()
    deadline = time.monotonic() + 15
    while page.locator("#results").inner_text() != f"{results} results" and time.monotonic() < deadline:
        time.sleep(0.2)
        page.reload()
    expect(page.locator("#results")).to_have_text(f"{results} results")


def test_results_columns_and_csv_export_of_the_filter(page: Any, shop: Any, tmp_path: Path) -> None:
    """The list says how many orders match, shows each order's items, account and age, sorts as chosen, and
    exports exactly the filtered orders, in that order, as CSV."""
    shop.import_order(Marketplace.WALMART, "W-1", "Ann Lee", days_ago=3)
    shop.import_order(Marketplace.WALMART, "W-2", "Bob Ray", days_ago=2)
    shop.import_order(Marketplace.EBAY, "E-3", "Cy Doe", days_ago=1)
    _sign_in_and_wait(page, shop, 3)
    row = page.locator("#order-W-1")
    expect(row.locator(".items")).to_have_text(
        "MUG-1 \N{MULTIPLICATION SIGN} 2, CUP-1 \N{MULTIPLICATION SIGN} 1"
    )
    expect(row.locator(".account")).to_have_text("Walmart · main")
    expect(row.locator(".age")).to_have_text("3 days old")
    expect(page.locator("#order-E-3 .account")).to_have_text("eBay · main")
    look(page, tmp_path, "all-sales")
    order_links = page.locator("table.orders tbody tr td:nth-child(3) a")
    expect(order_links).to_have_text(["E-3", "W-2", "W-1"])  # newest purchase first
    page.get_by_label("Sort").select_option("purchased_at")
    page.get_by_role("button", name="Apply").click()
    expect(order_links).to_have_text(["W-1", "W-2", "E-3"])  # a sort changes the order

    page.get_by_label("Marketplace").select_option("walmart")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#results")).to_have_text("2 results")
    with page.expect_download() as info:
        page.get_by_role("link", name="Export to CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
    assert [r["marketplace_order_id"] for r in rows] == ["W-1", "W-2"]  # the export keeps the sort
    assert {r["buyer_name"] for r in rows} == {"Ann Lee", "Bob Ray"}


def test_bulk_ship_and_cancel_ticked_rows(page: Any, shop: Any, tmp_path: Path) -> None:
    """Ticked rows ship with their own tracking numbers (one shipment per row; a row without a number is
    rejected and blocks no other), a second submit of the same form records nothing twice, and ticked rows
    cancel with one reason."""
    ids = {
        moid: shop.import_order(Marketplace.WALMART, moid, "Ann Lee") for moid in ("S-1", "S-2", "S-3", "S-4")
    }
    _sign_in_and_wait(page, shop, 4)
    page.get_by_label("Select order S-1").check()
    page.get_by_label("Tracking number for S-1").fill("TRK-10001")
    page.get_by_label("Select order S-2").check()
    page.get_by_label("Tracking number for S-2").fill("TRK-10002")
    page.get_by_label("Select order S-3").check()  # no tracking number: rejected
    page.get_by_label("Carrier", exact=True).select_option("other")
    page.get_by_label("Carrier name (with Other)").fill("Local Courier")
    form = page.locator("#bulk")
    posted = form.evaluate("f => new URLSearchParams(new FormData(f)).toString()") + "&action=ship"
    look(page, tmp_path, "all-sales-ticked")
    page.get_by_role("button", name="Ship selected").click()
    expect(page.locator("#summary")).to_have_text("4 row(s) accepted, 1 rejected.")
    expect(page.locator("tr.rejected")).to_contain_text("a tracking number is needed")
    look(page, tmp_path, "bulk-ship-report")
    for moid, number in (("S-1", "TRK-10001"), ("S-2", "TRK-10002")):
        shipments = shop.ledger.get_order(ids[moid]).shipments
        assert [s.tracking_number for s in shipments] == [number]
    assert shop.ledger.get_order(ids["S-3"]).shipments == ()

    again = page.request.post(
        shop.url + "/orders/bulk",
        data=posted,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": shop.url},
    )
    assert again.ok
    assert "already recorded by an earlier upload" in again.text()
    assert len(shop.ledger.get_order(ids["S-1"]).shipments) == 1

    page.goto(shop.url + "/")
    page.get_by_label("Select order S-3").check()
    page.get_by_label("Select order S-4").focus()  # by keyboard: tick, choose the reason, press the button
    page.keyboard.press("Space")
    expect(page.get_by_label("Select order S-4")).to_be_checked()
    page.get_by_label("Cancellation reason").select_option("out_of_stock")
    page.get_by_role("button", name="Cancel selected").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#summary")).to_have_text("2 row(s) accepted, 0 rejected.")
    look(page, tmp_path, "bulk-cancel-report")
    assert shop.ledger.get_order(ids["S-3"]).status == "canceled"
    assert shop.ledger.get_order(ids["S-4"]).cancelled_units == 3

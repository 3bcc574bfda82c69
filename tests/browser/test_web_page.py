"""The web page in headless Chromium: sign in, All Sales, an order's actions and timeline, bulk shipping."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from browser_support import INJECTION, UPS_TRACKING, look
from playwright.sync_api import expect

from ledger.aggregates.values import Marketplace

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.slow]


def _sign_in(page: Any, shop: Any) -> None:
    page.goto(shop.url + "/")
    expect(page).to_have_url(shop.url + "/signin")
    page.get_by_label("API key").fill(shop.key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="All Sales")).to_be_visible()


def _until_listed(page: Any, text: str) -> None:
    """The list reads the projection, which a worker keeps up: reload until the order is there."""
    deadline = time.monotonic() + 15
    while page.get_by_role("link", name=text).count() == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        page.reload()
    expect(page.get_by_role("link", name=text)).to_be_visible()


def test_sign_in_filter_ship_cancel_and_timeline(page: Any, shop: Any, tmp_path: Path) -> None:
    """An operator signs in, filters, opens an order, ships one line, cancels another with a reason, and
    sees the timeline and the lines change; a refusal is shown in words and buyer text is never markup."""
    shop.import_order(Marketplace.WALMART, "W-100", INJECTION, days_ago=2)
    shop.import_order(Marketplace.WALMART, "W-200", "Ann Lee", days_ago=1)
    ebay_id = shop.import_order(Marketplace.EBAY, "E-300", "Bob Ray", days_ago=3)
    page.goto(shop.url + "/signin")
    page.get_by_label("API key").fill("lk_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That API key is unknown or revoked.")
    look(page, tmp_path, "signin")
    _sign_in(page, shop)
    assert shop.key not in page.url
    _until_listed(page, "E-300")
    expect(page.locator("td.buyer", has_text="<script>")).to_have_count(1)  # shown as text, not run
    assert page.evaluate("window.pwned") is None
    expect(page.locator('.count[data-tab="unshipped"]')).to_have_text("3")
    look(page, tmp_path, "all-sales")

    page.get_by_label("Marketplace").select_option("ebay")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("link", name="E-300")).to_be_visible()
    expect(page.get_by_role("link", name="W-200")).to_have_count(0)
    page.get_by_role("link", name="E-300").click()
    expect(page.get_by_text("cancelling it opens a cancellation dispute")).to_be_visible()
    expect(page.get_by_role("button", name="Refund")).to_be_visible()
    assert str(ebay_id) in page.url

    page.goto(shop.url + "/")
    page.get_by_label("Search").fill("W-200")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("table.orders tbody tr")).to_have_count(1)
    page.get_by_role("link", name="W-200").click()
    expect(page.get_by_role("heading", name="Order W-200")).to_be_visible()

    ship = page.locator("form", has=page.get_by_role("heading", name="Ship"))
    ship.get_by_label("Tracking number").fill("123")
    ship.get_by_label("Line 2 (CUP-1), up to 1").fill("0")
    ship.get_by_role("button", name="Ship").click()
    expect(page.locator("#ship-error")).to_contain_text("is not a valid ups tracking number")
    ship = page.locator("form", has=page.get_by_role("heading", name="Ship"))
    ship.get_by_label("Carrier", exact=True).select_option("ups")
    ship.get_by_label("Tracking number").fill(UPS_TRACKING)
    ship.get_by_label("Line 2 (CUP-1), up to 1").fill("0")
    ship.get_by_role("button", name="Ship").click()
    expect(page.get_by_role("status")).to_have_text("Shipment recorded.")
    expect(page.locator("#line-1 .shipped")).to_have_text("2")
    expect(page.locator("#timeline li").first).to_contain_text("Shipped")

    cancel = page.locator("form", has=page.get_by_role("heading", name="Cancel Sale"))
    cancel.get_by_label("Reason (required)").select_option("out_of_stock")
    cancel.get_by_label("Line 2 (CUP-1), up to 1").fill("1")
    cancel.get_by_role("button", name="Cancel Sale").click()
    expect(page.get_by_role("status")).to_have_text("Cancellation recorded.")
    expect(page.locator("#line-2 .cancelled")).to_have_text("1")
    latest = page.locator("#timeline li").first
    expect(latest).to_contain_text("Cancelled")
    expect(latest.locator(".reason")).to_have_text("Out of stock")
    expect(latest.locator(".source")).to_have_text("web")
    expect(latest.locator(".actor")).to_have_text("Olive Operator")
    expect(page.get_by_role("heading", name="Ship", exact=True)).to_have_count(0)  # nothing is left to ship
    expect(page.locator("#order-status")).to_contain_text("Shipped")
    look(page, tmp_path, "order")
    page.goto(shop.url + "/orders/00000000-0000-4000-8000-000000000000")
    expect(page.get_by_role("heading", name="No such order")).to_be_visible()
    look(page, tmp_path, "no-such-order")


def test_bulk_upload_report_and_failed_rows(page: Any, shop: Any, tmp_path: Path) -> None:
    """A CSV with good and bad rows: the report gives each row's verdict, the failed rows download as a
    file, and uploading the same file again ships nothing twice."""
    shop.import_order(Marketplace.WALMART, "B-1", "Cy Doe")
    header = "marketplace_order_id,line_id,quantity,carrier,tracking_number,shipping_class,shipped_at\n"
    bad = [f"B-1,1,lots,ups,{UPS_TRACKING},,", f"NOPE-9,1,1,ups,{UPS_TRACKING},,"]
    path = tmp_path / "shipments.csv"
    path.write_text(header + f"B-1,1,2,ups,{UPS_TRACKING},Ground,\n" + "\n".join(bad) + "\n")
    _sign_in(page, shop)
    page.get_by_role("link", name="Bulk shipping").click()
    look(page, tmp_path, "bulk")
    page.get_by_label("CSV file").set_input_files(str(path))
    page.get_by_role("button", name="Upload and ship").click()
    expect(page.locator("#summary")).to_have_text("1 row(s) accepted, 2 rejected.")
    expect(page.locator("#row-2 .status")).to_have_text("Accepted")
    expect(page.locator("#row-3")).to_contain_text("quantity 'lots' is not a whole number")
    expect(page.locator("#row-4")).to_contain_text("unknown order 'NOPE-9'")
    look(page, tmp_path, "bulk-report")
    with page.expect_download() as info:
        page.get_by_role("button", name="Download failed rows").click()
    failed = Path(info.value.path()).read_text()
    assert failed.splitlines() == [header.strip(), *bad]

    page.get_by_label("CSV file").set_input_files(str(path))
    page.get_by_role("button", name="Upload and ship").click()
    expect(page.locator("#row-2")).to_contain_text("already recorded by an earlier upload")
    assert len(shop.ledger.get_order(shop.orders["B-1"]).shipments) == 1

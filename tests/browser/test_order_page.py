"""The order page in headless Chromium: the address, the shipments and what the marketplace said of each, the
human timeline in the viewer's zone, closing an eBay cancellation dispute and restocking."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from browser_support import CTX, UPS_TRACKING, look
from playwright.sync_api import expect

from ledger.aggregates.values import CancelReason, Carrier, LineQuantity, Marketplace, Requester, SyncAction

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.slow]
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ISO_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def _sign_in(page: Any, shop: Any) -> None:
    page.goto(shop.url + "/signin")
    page.get_by_label("API key").fill(shop.key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="All Sales")).to_be_visible()


def test_address_shipments_and_a_human_timeline(page: Any, shop: Any, tmp_path: Path) -> None:
    """The ship-to address is shown; each shipment has its carrier, a tracking link to the carrier and what
    the marketplace said (sent, refused with its message, pending); the timeline speaks words, times are in the
    viewer's zone with UTC on hover, and the raw fields and version are behind a disclosure."""
    order_id = shop.import_order(Marketplace.WALMART, "W-700", "Ann Lee")
    sent = shop.ledger.ship(
        CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING, lines=(LineQuantity("1", 1),)
    ).ids["shipment_id"]
    refused = shop.ledger.ship(
        CTX,
        order_id,
        carrier=Carrier.OTHER,
        carrier_name="Local Courier",
        tracking_number="LOCAL-42",
        lines=(LineQuantity("1", 1),),
    ).ids["shipment_id"]
    shop.ledger.ship(
        CTX, order_id, carrier=Carrier.OTHER, carrier_name="Local Courier", tracking_number="LOCAL-43"
    )
    shop.ledger.record_sync_outcome(CTX, order_id, action=SyncAction.SHIP, reference=str(sent), accepted=True)
    shop.ledger.record_sync_outcome(
        CTX,
        order_id,
        action=SyncAction.SHIP,
        reference=str(refused),
        accepted=False,
        error_code="invalid-carrier",
        message="Carrier not supported",
        permanent=True,
    )
    _sign_in(page, shop)
    page.goto(f"{shop.url}/orders/{order_id}")
    expect(page.locator("#ship-to")).to_contain_text("12 Harbour Road")
    expect(page.locator("#ship-to")).to_contain_text("Portland, OR, 97201")
    rows = page.locator("#shipments tbody tr")
    expect(rows).to_have_count(3)
    link = rows.nth(0).get_by_role("link")
    expect(link).to_contain_text(UPS_TRACKING)
    assert link.get_attribute("href") == f"https://www.ups.com/track?tracknum={UPS_TRACKING}"
    expect(rows.nth(0)).to_contain_text("Sent: Walmart accepted it")
    expect(rows.nth(1)).to_contain_text("Refused by Walmart: Carrier not supported")
    expect(rows.nth(2)).to_contain_text("Pending")
    expect(rows.nth(2).get_by_role("link")).to_have_count(0)  # "other" has no tracking page
    expect(rows.nth(2)).to_contain_text("Local Courier")

    timeline = page.locator("#timeline")
    main_text = timeline.evaluate(
        "t => [...t.querySelectorAll('li')].map(li => { const c = li.cloneNode(true);"
        " c.querySelector('details').remove(); return c.textContent; }).join(' ')"
    )
    assert not UUID_TEXT.search(main_text), main_text
    assert not ISO_TEXT.search(main_text), main_text
    assert "False" not in main_text
    assert "Ebay" not in main_text
    expect(timeline.locator("li").last).to_contain_text("Order imported from Walmart: 3 unit(s).")
    expect(timeline.locator("li").first).to_contain_text(
        "Walmart refused the shipment: Carrier not supported."
    )
    first_time = timeline.locator("time").first
    assert first_time.get_attribute("title").endswith("UTC")  # the UTC time on hover
    assert "UTC" not in first_time.inner_text()  # shown in the viewer's zone
    details = timeline.locator("li").first.locator("details")
    expect(details.locator(".version")).not_to_be_visible()
    details.locator("summary").click()
    expect(details.locator(".version")).to_be_visible()
    expect(details).to_contain_text(str(refused))
    look(page, tmp_path, "order-shipments")


def test_an_open_ebay_cancellation_dispute_is_closed_then_restocked(
    page: Any, shop: Any, tmp_path: Path
) -> None:
    """Cancelling a paid eBay order opens a dispute; the page offers closing it (not "nothing can be done"),
    accepting it cancels the units, and then a restock puts them back in stock, after which none is offered."""
    order_id = shop.import_order(Marketplace.EBAY, "E-800", "Bob Ray")
    _sign_in(page, shop)
    page.goto(f"{shop.url}/orders/{order_id}")
    cancel = page.locator("form", has=page.get_by_role("heading", name="Cancel Sale"))
    cancel.get_by_label("Reason (required)").select_option("out_of_stock")
    cancel.get_by_label("Line 1 (MUG-1), up to 2").fill("2")
    cancel.get_by_label("Line 2 (CUP-1), up to 1").fill("1")
    cancel.get_by_role("button", name="Cancel Sale").click()
    expect(page.get_by_role("status")).to_contain_text("a dispute is open")
    expect(page.get_by_text("Nothing can be done on this order now")).to_have_count(0)
    close = page.locator("form", has=page.get_by_role("heading", name="Close the cancellation dispute"))
    expect(close).to_be_visible()
    look(page, tmp_path, "order-dispute-open")
    close.get_by_label("Accepted").check()
    close.get_by_role("button", name="Close dispute").click()
    expect(page.get_by_role("status")).to_have_text("Dispute closed.")
    expect(page.locator("#line-1 .cancelled")).to_have_text("2")
    expect(page.locator("#timeline li").first).to_contain_text("Cancelled")
    restock = page.locator("form", has=page.get_by_role("heading", name="Restock"))
    expect(restock.get_by_label("Line 1 (MUG-1), up to 2")).to_have_value("2")
    restock.get_by_role("button", name="Restock").click()
    expect(page.get_by_role("status")).to_have_text("Restock recorded.")
    expect(page.get_by_role("heading", name="Restock")).to_have_count(0)
    expect(page.get_by_text("Nothing can be done on this order now")).to_be_visible()
    assert [line.restocked for line in shop.ledger.get_order(order_id).lines] == [2, 1]
    look(page, tmp_path, "order-restocked")


def test_a_dead_change_is_retried_then_resolved_by_hand(page: Any, shop: Any, tmp_path: Path) -> None:
    """A shipment Amazon refused for good shows on the order with Retry and Resolve by hand; a retry puts it
    back in the queue, and a resolve with how Amazon was told clears it and is in the timeline."""
    order_id = shop.import_order(Marketplace.AMAZON, "A-900", "Ann Lee")
    shop.ledger.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    shop.sync_queue()
    dead = (
        "UPDATE outbound_items SET state = 'dead', attempts = 8, last_error = 'HTTP 400: bad tracking'"
        " WHERE order_id = %s RETURNING id"
    )
    assert len(shop.sql(dead, order_id)) == 1
    _sign_in(page, shop)
    page.goto(f"{shop.url}/orders/{order_id}")
    stuck = page.locator(".stuck")
    expect(stuck).to_contain_text("Not accepted by Amazon")
    expect(stuck).to_contain_text("HTTP 400: bad tracking")
    look(page, tmp_path, "order-dead-sync")
    stuck.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status")).to_have_text("The change goes to the marketplace again.")
    expect(page.locator(".stuck")).to_have_count(0)
    assert shop.sql("SELECT state FROM outbound_items WHERE order_id = %s", order_id) == [("pending",)]

    shop.sql(dead, order_id)
    page.reload()
    page.get_by_label("How was Amazon told (or why it need not be)?").fill("confirmed in Seller Central")
    page.get_by_role("button", name="Resolve by hand").click()
    expect(page.get_by_role("status")).to_have_text("Marked as resolved by hand.")
    expect(page.locator("#timeline li").first).to_contain_text("Resolved by hand")
    expect(page.locator("#timeline li").first.locator(".reason")).to_have_text("confirmed in Seller Central")
    assert shop.sql("SELECT state FROM outbound_items WHERE order_id = %s", order_id) == [("resolved",)]


def test_a_refused_shipment_is_voided_and_a_buyers_request_is_accepted(
    page: Any, shop: Any, tmp_path: Path
) -> None:
    """A shipment Amazon refused for good offers Void, which unships its units; the buyer's cancellation request
    shows a banner whose Accept (cancel) cancels the asked-for units."""
    order_id = shop.import_order(Marketplace.AMAZON, "A-950", "Ann Lee")
    shipment = shop.ledger.ship(
        CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING, lines=(LineQuantity("1", 2),)
    ).ids["shipment_id"]
    shop.ledger.record_sync_outcome(
        CTX, order_id, action=SyncAction.SHIP, reference=str(shipment), accepted=False,
        error_code="invalid-tracking", message="Tracking number not found", permanent=True,
    )  # fmt: skip
    shop.ledger.cancel(
        CTX, order_id, reason=CancelReason.BUYER_CANCELLED, lines=(LineQuantity("2", 1),),
        requested_by=Requester.BUYER,
    )  # fmt: skip
    assert shop.ledger.get_order(order_id).buyer_cancel_requested
    _sign_in(page, shop)
    page.goto(f"{shop.url}/orders/{order_id}")
    expect(page.locator("#shipments")).to_contain_text("Refused by Amazon: Tracking number not found")
    banner = page.locator("#buyer-cancel")
    expect(banner).to_contain_text("The buyer asked to cancel")
    expect(banner).to_contain_text("line 2 (CUP-1)")
    look(page, tmp_path, "order-void-and-request")
    page.get_by_label(f"Why void the shipment {UPS_TRACKING}").fill("wrong label printed")
    page.get_by_role("button", name="Void").click()
    expect(page.get_by_role("status")).to_have_text("Shipment voided: its units may ship again.")
    expect(page.locator("#line-1 .shipped")).to_have_text("0")
    expect(page.locator("#timeline li").first).to_contain_text("Shipment voided")
    page.locator("#buyer-cancel").get_by_role("button", name="Accept (cancel)").click()
    expect(page.get_by_role("status")).to_have_text("Cancellation recorded.")
    expect(page.locator("#line-2 .cancelled")).to_have_text("1")
    expect(page.locator("#buyer-cancel")).to_have_count(0)

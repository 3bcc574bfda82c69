"""The web page's server side over HTTP on PostgreSQL: sign-in and its cookie, roles, seller scoping, escaping,
foreign-origin refusals, and the actions each order allows (the browser tests drive the same pages)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from api_support import CTX, UPS_TRACKING, Seller, make_seller, order_body
from litestar.testing import TestClient
from order_scenarios import catch_up

from ledger.aggregates.values import (
    Buyer,
    CancelReason,
    Carrier,
    Divergence,
    ImportedOrder,
    LineQuantity,
    Marketplace,
    OrderLine,
    PaymentStatus,
    Requester,
    Role,
)
from ledger.api.app import create_app
from ledger.application.commands import RecordSyncCheck
from ledger.application.ledger import Ledger
from ledger.eventstore.database import connect
from ledger.integrations.outbound import OutboundProjection
from ledger.projections import base
from ledger.projections.all_sales import AllSalesProjection
from ledger.projections.all_sales_view import AllSalesView

pytestmark = pytest.mark.postgres

INJECTION = "<script>alert(1)</script>Eve"


def _import(
    client: Any, seller: Seller, marketplace: Marketplace = Marketplace.WALMART, **changes: Any
) -> str:
    body = order_body(seller.accounts[marketplace], **changes)
    response = client.post("/v1/orders", json=body, headers=seller.auth())
    assert response.status_code == 201, response.text
    return str(response.json()["order_id"])


def _sign_in(client: Any, seller: Seller, role: Role = Role.OPERATOR) -> Any:
    return client.post("/signin", data={"api_key": seller.keys[role]}, follow_redirects=False)


def _token(html: str, form: str) -> dict[str, str]:
    """The hidden fields of one of the order page's forms."""
    part = html.split('action="/orders/')[1:]
    chosen = next(p for p in part if p.split('"')[0].endswith(f"/{form}"))
    version = re.search(r'name="version" value="(\d+)"', chosen)
    token = re.search(r'name="token" value="([0-9a-f]+)"', chosen)
    assert version
    assert token
    return {"version": version.group(1), "token": token.group(1)}


def test_sign_in_sets_a_strict_http_only_session_cookie(client: Any, seller: Seller, connect: Any) -> None:
    """Without a session the page sends you to sign in; a wrong key is refused in words; a right one sets a
    session cookie that scripts cannot read and other sites cannot send."""
    with connect() as conn:
        base.install(conn, AllSalesProjection())  # the list reads its tables (empty for a new seller)
    response = client.get("/", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/signin")
    response = client.post("/signin", data={"api_key": "lk_wrong"}, follow_redirects=False)
    assert response.status_code == 401
    assert "unknown or revoked" in response.text
    response = _sign_in(client, seller)
    assert (response.status_code, response.headers["location"]) == (303, "/")
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "max-age" not in cookie
    assert "expires" not in cookie
    page = client.get("/")
    assert page.status_code == 200
    assert "All Sales" in page.text
    assert seller.keys[Role.OPERATOR] not in page.text
    client.post("/signout", follow_redirects=False)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_user_text_is_escaped(client: Any, seller: Seller) -> None:
    """A buyer name with markup is shown as text on the order page, never as HTML."""
    order_id = _import(client, seller, buyer={"name": INJECTION, "email": "eve@example.com"})
    _sign_in(client, seller)
    html = client.get(f"/orders/{order_id}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;Eve" in html
    assert "<script>alert(1)" not in html


def test_roles_decide_what_the_page_offers(client: Any, seller: Seller) -> None:
    """An auditor sees the order and its timeline but no actions, and cannot post one; finance sees no
    timeline; nobody sees another seller's order."""
    order_id = _import(client, seller)
    _sign_in(client, seller, Role.AUDITOR)
    html = client.get(f"/orders/{order_id}").text
    assert "Timeline" in html
    assert "Cancel Sale" not in html
    response = client.post(
        f"/orders/{order_id}/ship", data={"carrier": "ups", "tracking_number": UPS_TRACKING}
    )
    assert response.status_code == 403
    _sign_in(client, seller, Role.FINANCE)
    html = client.get(f"/orders/{order_id}").text
    assert "Timeline" not in html
    assert client.get("/shipments").status_code == 403


def test_another_sellers_order_is_not_found(client: Any, seller: Seller, other_seller: Seller) -> None:
    """Another seller's order is a 404 page, and a form posted at it changes nothing."""
    order_id = _import(client, other_seller)
    _sign_in(client, seller)
    assert client.get(f"/orders/{order_id}").status_code == 404
    response = client.post(
        f"/orders/{order_id}/ship", data={"carrier": "ups", "tracking_number": UPS_TRACKING, "qty:1": "1"}
    )
    assert response.status_code == 404


def test_foreign_origin_posts_are_refused(client: Any, seller: Seller, api_ledger: Any) -> None:
    """A form posted from another site is refused even with the session cookie, and records nothing."""
    order_id = _import(client, seller)
    _sign_in(client, seller)
    response = client.post(
        f"/orders/{order_id}/ship",
        data={"carrier": "ups", "tracking_number": UPS_TRACKING, "qty:1": "1"},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert api_ledger.get_order(order_id).shipments == ()


def test_ebay_paid_unshipped_offers_cancel_or_refund(client: Any, seller: Seller, api_ledger: Any) -> None:
    """A paid unshipped eBay order offers both ways; cancelling opens a dispute and says so, after which
    nothing can ship and a stale form is refused in words."""
    order_id = _import(client, seller, Marketplace.EBAY)
    _sign_in(client, seller)
    html = client.get(f"/orders/{order_id}").text
    assert "opens a cancellation dispute" in html
    assert 'action="/orders/' + order_id + '/refund"' in html
    fields = _token(html, "cancel")
    response = client.post(
        f"/orders/{order_id}/cancel", data={**fields, "reason": "buyer_cancelled", "qty:1": "2", "qty:2": "1"}
    )
    assert response.status_code == 200
    assert "a dispute is open" in response.text
    assert 'action="/orders/' + order_id + '/ship"' not in response.text
    assert api_ledger.get_order(order_id).dispute_status == "open"
    stale = client.post(
        f"/orders/{order_id}/refund", data={**_token(html, "refund"), "reason": "goodwill", "qty:1": "1"}
    )
    assert stale.status_code == 412
    assert "The order changed since this page was opened" in stale.text


def test_double_submit_acts_once(client: Any, seller: Seller, api_ledger: Any) -> None:
    """The same form posted twice (its one-time token) records one shipment."""
    order_id = _import(client, seller)
    _sign_in(client, seller)
    fields = _token(client.get(f"/orders/{order_id}").text, "ship")
    form = {**fields, "carrier": "ups", "tracking_number": UPS_TRACKING, "qty:1": "1", "qty:2": "0"}
    assert client.post(f"/orders/{order_id}/ship", data=form).status_code == 200
    assert client.post(f"/orders/{order_id}/ship", data=form).status_code == 200
    assert len(api_ledger.get_order(order_id).shipments) == 1


def test_refund_from_the_page(client: Any, seller: Seller, api_ledger: Any) -> None:
    """After a shipment the page offers Refund; refunding one unit records it with source `web`."""
    order_id = _import(client, seller)
    _sign_in(client, seller)
    fields = _token(client.get(f"/orders/{order_id}").text, "ship")
    ship = {**fields, "carrier": "ups", "tracking_number": UPS_TRACKING, "qty:1": "2", "qty:2": "1"}
    html = client.post(f"/orders/{order_id}/ship", data=ship).text
    assert "Shipment recorded." in html
    refund = {**_token(html, "refund"), "reason": "damaged", "qty:1": "1", "amount:1": ""}
    html = client.post(f"/orders/{order_id}/refund", data=refund).text
    assert "Refund recorded." in html
    order = api_ledger.get_order(order_id)
    assert order.lines[0].refunded_quantity == 1
    assert api_ledger.order_history(order_id)[-1].source == "web"
    empty = client.post(f"/orders/{order_id}/refund", data={**_token(html, "refund"), "reason": "damaged"})
    assert empty.status_code == 422
    assert "choose at least one unit or amount to refund" in empty.text


def test_upload_that_is_not_csv_is_said_in_words(client: Any, seller: Seller) -> None:
    """A binary file on the upload page is refused with a message, not a problem document."""
    _sign_in(client, seller)
    response = client.post("/shipments", files={"file": ("x.csv", b"\x00\x01", "text/csv")})
    assert response.status_code == 400
    assert "That file cannot be used: the file is binary" in response.text


def test_a_shipping_refund_from_the_page_refunds_only_shipping(
    client: Any, seller: Seller, api_ledger: Any
) -> None:
    """The refund form with only a shipping amount refunds that amount and no unit, as the API and CLI do."""
    order_id = _import(client, seller)
    _sign_in(client, seller)
    fields = _token(client.get(f"/orders/{order_id}").text, "ship")
    ship = {**fields, "carrier": "ups", "tracking_number": UPS_TRACKING, "qty:1": "2", "qty:2": "1"}
    html = client.post(f"/orders/{order_id}/ship", data=ship).text
    refund = {
        **_token(html, "refund"),
        "reason": "shipping_adjustment",
        "qty:1": "0",
        "shipping_amount": "1.00",
    }
    assert "Refund recorded." in client.post(f"/orders/{order_id}/refund", data=refund).text
    order = api_ledger.get_order(order_id)
    assert str(order.refunded_total) == "1.00"
    assert [line.refunded_quantity for line in order.lines] == [0, 0]


def test_an_upload_repeating_a_row_with_other_details_shows_the_report(client: Any, seller: Seller) -> None:
    """A file whose row an earlier upload recorded with another shipped_at shows the report with that row
    rejected in words (never problem JSON), and the file's other rows shipped."""
    first, second = _import(client, seller), _import(client, seller)
    header = "order_id,line_id,quantity,carrier,tracking_number,shipping_class,shipped_at\n"
    _sign_in(client, seller)
    earlier = header + f"{first},1,2,ups,{UPS_TRACKING},Ground,2026-11-20T12:00:00Z\n"
    assert (
        client.post("/shipments", files={"file": ("a.csv", earlier.encode(), "text/csv")}).status_code == 200
    )
    text = header + (
        f"{first},1,2,ups,{UPS_TRACKING},Ground,2026-11-21T12:00:00Z\n{second},1,2,ups,{UPS_TRACKING},Ground,\n"
    )

    response = client.post("/shipments", files={"file": ("b.csv", text.encode(), "text/csv")})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "1 row(s) accepted, 1 rejected." in response.text
    assert "already recorded with different details" in response.text


def test_tab_counts_follow_the_active_filters(own_target: Any) -> None:
    """With a search active, each tab counts only the orders the search finds (`GET /v1/orders/counts`)."""
    # A schema of its own: All Sales is rebuilt over its whole log.
    ledger = Ledger(env=own_target.eventsourcing_env())
    try:
        seller = make_seller(ledger)
        with TestClient(create_app(own_target, ledger=ledger)) as client:
            _import(client, seller, buyer={"name": "Zed Found", "email": "zed@example.com"})
            for _ in range(2):
                _import(client, seller)
            base.rebuild(AllSalesProjection(), lambda: connect(own_target), ledger.recorder, ledger.mapper)
            _sign_in(client, seller)

            def unshipped_count(html: str) -> int:
                found = re.search(r'data-tab="unshipped">(\d+)<', html)
                assert found
                return int(found.group(1))

            assert unshipped_count(client.get("/").text) == 3
            assert unshipped_count(client.get("/", params={"q": "Zed"}).text) == 1
    finally:
        ledger.close()


def test_bulk_actions_refuse_other_sites_other_roles_and_other_sellers(
    client: Any, seller: Seller, other_seller: Seller, api_ledger: Any
) -> None:
    """The All Sales bulk form ships nothing when posted from another site or by an auditor, and another
    seller's order in it is a rejected row, not a shipment."""
    order_id = _import(client, seller)
    theirs = _import(client, other_seller)
    form = {
        "order": [order_id, theirs, "not-an-id"],
        f"tracking:{order_id}": UPS_TRACKING,
        f"lines:{order_id}": "1:1",
        f"tracking:{theirs}": UPS_TRACKING,
        f"lines:{theirs}": "1:1",
        "carrier": "ups",
        "action": "ship",
    }
    _sign_in(client, seller, Role.AUDITOR)
    assert client.post("/orders/bulk", data=form).status_code == 403
    _sign_in(client, seller)
    assert (
        client.post("/orders/bulk", data=form, headers={"Origin": "https://evil.example"}).status_code == 403
    )
    assert api_ledger.get_order(order_id).shipments == ()
    response = client.post("/orders/bulk", data=form)
    assert response.status_code == 200
    assert "1 row(s) accepted, 2 rejected." in response.text
    assert len(api_ledger.get_order(order_id).shipments) == 1
    assert api_ledger.get_order(theirs).shipments == ()
    assert "unknown order" in response.text
    assert "not an order of this list" in response.text


def test_export_needs_a_session_and_says_a_bad_filter_in_words(
    client: Any, seller: Seller, connect: Any, api_ledger: Any
) -> None:
    """The CSV export sends a visitor without a session to sign in, a filter it cannot read is a 400 page, and a
    buyer's text that a spreadsheet would run as a formula is neutralized."""
    with connect() as conn:
        base.install(conn, AllSalesProjection())
    assert client.get("/orders.csv", follow_redirects=False).status_code == 303
    _sign_in(client, seller)
    response = client.get("/orders.csv?from=yesterday")
    assert response.status_code == 400
    assert "is not a day" in response.text
    _import(client, seller, buyer={"name": "=HYPERLINK(1)", "email": "eve@example.com"})
    catch_up(AllSalesProjection(), connect, api_ledger, 500)  # the export reads the projection
    text = client.get("/orders.csv").text
    assert text.startswith("order_id,")
    assert "'=HYPERLINK(1)" in text  # a spreadsheet shows the buyer's text and runs nothing


def test_a_dead_change_is_retried_or_resolved_from_the_order_page(
    client: Any, seller: Seller, connect: Any, api_ledger: Any
) -> None:
    """A change the marketplace refused for good shows on its order with Retry (back in the queue) and Resolve
    by hand (with how, recorded on the order); a resolve without a reason is refused in words."""
    order_id = _import(client, seller, Marketplace.AMAZON)
    _sign_in(client, seller)
    fields = _token(client.get(f"/orders/{order_id}").text, "ship")
    ship = {**fields, "carrier": "ups", "tracking_number": UPS_TRACKING, "qty:1": "2", "qty:2": "1"}
    client.post(f"/orders/{order_id}/ship", data=ship)
    catch_up(OutboundProjection(), connect, api_ledger, 500)

    def die() -> str:
        with connect() as conn:
            [(item_id,)] = conn.execute(
                "UPDATE outbound_items SET state = 'dead', attempts = 8, last_error = 'HTTP 400: bad tracking'"
                " WHERE order_id = %s AND action = 'ship' RETURNING id",
                (UUID(order_id),),
            ).fetchall()
        return str(item_id)

    item_id = die()
    html = client.get(f"/orders/{order_id}").text
    assert "Not accepted by Amazon" in html
    assert "HTTP 400: bad tracking" in html
    response = client.post(f"/orders/{order_id}/sync/{item_id}", data={"do": "retry"})
    assert "The change goes to the marketplace again." in response.text
    assert "Not accepted by Amazon" not in response.text
    die()
    response = client.post(f"/orders/{order_id}/sync/{item_id}", data={"do": "resolve", "reason": " "})
    assert response.status_code == 422
    assert "say how the marketplace was told" in response.text
    resolve = {"do": "resolve", "reason": "confirmed in Seller Central", "token": "t1"}
    response = client.post(f"/orders/{order_id}/sync/{item_id}", data=resolve)
    assert "Marked as resolved by hand." in response.text
    history = api_ledger.order_history(UUID(order_id))
    assert (history[-1].type, history[-1].reason) == ("SyncItemResolved", "confirmed in Seller Central")
    with connect() as conn:
        [(state,)] = conn.execute(
            "SELECT state FROM outbound_items WHERE id = %s", (UUID(item_id),)
        ).fetchall()
    assert state == "resolved"


def _dated_order(moid: str, ship_by: datetime | None, days_ago: int = 2) -> ImportedOrder:
    purchased_at = datetime.now(UTC) - timedelta(days=days_ago)
    return ImportedOrder(
        marketplace_order_id=moid, purchased_at=purchased_at, currency="USD",
        payment_status=PaymentStatus.PAID, buyer=Buyer("Ann Lee", "ann@example.com"),
        lines=(OrderLine("1", "MUG-1", 2, Decimal("12.50")), OrderLine("2", "CUP-1", 1, Decimal("5.00"))),
        paid_at=purchased_at, ship_by=ship_by,
    )  # fmt: skip


def _row(html: str, moid: str) -> str:
    found = re.search(rf'<tr id="order-{moid}">(.*?)</tr>', html, re.DOTALL)
    assert found, moid
    return found.group(1)


def test_the_list_shows_ship_by_marks_overdue_orders_and_reads_lines_in_one_query(
    client: Any, seller: Seller, connect: Any, api_ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each row shows the marketplace's ship-by date: an unshipped order past it is marked Overdue in words, one
    before it says when it is due, a shipped one is not overdue, one without a date says so; the order page
    says the same; the page's lines come from one query for the whole page, not one per row."""
    amazon = seller.accounts[Marketplace.AMAZON]
    now = datetime.now(UTC)
    ids = {
        moid: api_ledger.import_order(CTX, amazon, _dated_order(moid, ship_by), seller=seller.name).order_id
        for moid, ship_by in (
            ("LATE-1", now - timedelta(days=1)),
            ("SOON-1", now + timedelta(hours=30)),
            ("DONE-1", now - timedelta(days=1)),
            ("NONE-1", None),
        )
    }
    api_ledger.ship(CTX, ids["DONE-1"], carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    catch_up(AllSalesProjection(), connect, api_ledger, 500)
    monkeypatch.setattr(AllSalesView, "lines", _one_query_only)
    _sign_in(client, seller)
    html = client.get("/").text
    late, soon, done, none = (_row(html, m) for m in ("LATE-1", "SOON-1", "DONE-1", "NONE-1"))
    assert "Overdue by 24 hours" in late
    assert "MUG-1 \N{MULTIPLICATION SIGN} 2, CUP-1 \N{MULTIPLICATION SIGN} 1" in late  # lines, in one query
    assert "due in 29 hours" in soon or "due in 30 hours" in soon
    assert "Overdue" not in soon
    assert "Overdue" not in done
    assert "not given" in none
    page = client.get(f"/orders/{ids['LATE-1']}").text
    ship_by = re.search(r'<dd id="ship-by">(.*?)</dd>', page, re.DOTALL)
    assert ship_by
    assert "Overdue by 24 hours" in ship_by.group(1)
    summary = client.get(f"/v1/orders/{ids['LATE-1']}", headers=seller.auth()).json()
    assert summary["ship_by"] == (now - timedelta(days=1)).isoformat().replace("+00:00", "Z")


def _one_query_only(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the list read one order's lines: one query per row")


def test_buyer_cancel_request_and_attention_tabs_list_their_orders_with_counts(
    client: Any, seller: Seller, connect: Any, api_ledger: Ledger
) -> None:
    """The Buyer cancel requests tab lists the orders a buyer asked to cancel and Needs attention the orders
    that need the seller (a buyer's request, a marketplace that disagrees); both count what the other filters
    let through, and the other tabs still list every order."""
    amazon = seller.accounts[Marketplace.AMAZON]
    ids = {
        moid: api_ledger.import_order(CTX, amazon, _dated_order(moid, None), seller=seller.name).order_id
        for moid in ("ASKED-1", "DIVERGED-1", "CALM-1")
    }
    api_ledger.cancel(
        CTX, ids["ASKED-1"], reason=CancelReason.BUYER_CANCELLED, lines=(LineQuantity("2", 1),),
        requested_by=Requester.BUYER,
    )  # fmt: skip
    divergence = Divergence("status", "unshipped", "shipped")  # what `ledger sync check` records
    api_ledger.execute(RecordSyncCheck(ctx=CTX, order_id=ids["DIVERGED-1"], divergences=(divergence,)))
    catch_up(AllSalesProjection(), connect, api_ledger, 500)
    _sign_in(client, seller)

    def listed(**params: str) -> tuple[set[str], dict[str, int]]:
        html = client.get("/", params=params).text
        counts = {tab: int(n) for tab, n in re.findall(r'data-tab="(\w+)">(\d+)<', html)}
        return set(re.findall(r'<tr id="order-([\w-]+)">', html)), counts

    asked, counts = listed(tab="buyer_cancel_requested")
    assert asked == {"ASKED-1"}
    assert (counts["buyer_cancel_requested"], counts["attention"], counts["unshipped"]) == (1, 2, 3)
    attention, _ = listed(tab="attention")
    assert attention == {"ASKED-1", "DIVERGED-1"}
    assert listed(tab="unshipped")[0] == set(ids)
    _, searched = listed(tab="attention", q="CALM-1")
    assert (searched["buyer_cancel_requested"], searched["attention"], searched["unshipped"]) == (0, 0, 1)
    html = client.get("/", params={"tab": "attention"}).text
    assert 'aria-current="page">Needs attention' in html

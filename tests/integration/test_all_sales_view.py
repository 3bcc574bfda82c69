"""The All Sales queries on real PostgreSQL: filters, keyset pages, cursors, seller scoping, tab counts.

One data set for the module, made with the Ledger's own commands and projected by a rebuild; the expected
answer to every query is computed from `app.get_order(...)`, the write side's own state.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID, uuid4

import psycopg
import pytest
from order_scenarios import catch_up
from psycopg import sql
from psycopg.rows import TupleRow

from ledger.aggregates.values import (
    Buyer,
    CancelReason,
    Carrier,
    Context,
    DisputeOutcome,
    ImportedOrder,
    LineQuantity,
    Marketplace,
    OrderLine,
    PaymentStatus,
    RefundReason,
    RefundRequestLine,
)
from ledger.application.ledger import Ledger
from ledger.application.queries import OrderDetails
from ledger.eventstore.database import PostgresTarget, connect
from ledger.projections import base
from ledger.projections.all_sales import AllSalesProjection
from ledger.projections.all_sales_view import (
    MAX_LIMIT,
    TABS,
    AllSalesView,
    InvalidCursorError,
    InvalidFilterError,
    LineSummary,
    OrderSummary,
    SalesFilter,
    decode_cursor,
    encode_cursor,
)
from ledger.projections.base import rebuild

CTX = Context(actor="all-sales-test")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ORDERS = 62
# Buyer names with LIKE's wildcards and its escape character in them, to show q matches them literally.
NAMES = ("Ann Lee", "Bob Stone", "Promo 100% Off", "snake_case Sam", "Back\\slash Bo", "Dee Annable")
VIEW = AllSalesView()


@dataclass(frozen=True)
class Shop:
    """The module's data: one seller's orders as the write side sees them, and a second seller beside it."""

    seller: str
    other_seller: str
    accounts: dict[str, UUID]
    orders: dict[UUID, OrderDetails]
    other_orders: dict[UUID, OrderDetails]


def _order(i: int) -> ImportedOrder:
    lines = [OrderLine("A", f"SKU-{i % 5}", 2, Decimal("10.00"), Decimal("1.00"), title=f"Item {i}")]
    if i % 2 == 0:
        lines.append(OrderLine("B", "SKU-SHARED", 1, Decimal("4.50"), shipping=Decimal("2.00")))
    return ImportedOrder(
        marketplace_order_id=f"MO-{i:04d}",
        # Three orders to each purchase time: ties that pages must break by order id.
        purchased_at=T0 - timedelta(hours=i // 3),
        currency="USD",
        payment_status=PaymentStatus.PENDING if i % 24 == 0 else PaymentStatus.PAID,
        buyer=Buyer(f"{NAMES[i % len(NAMES)]} {i}", f"Buyer{i}@Example.com"),
        lines=tuple(lines),
    )


def _play(app: Ledger, order_id: UUID, marketplace: str, i: int) -> None:
    """Move the order to one of six states, depending on i (each account sees each state)."""
    scenario = (i // 4) % 6
    ship = {"carrier": Carrier.UPS, "tracking_number": "1Z999AA10123456784"}
    if scenario == 1:
        app.ship(CTX, order_id, lines=(LineQuantity("A", 1),), **ship)
    elif scenario in (2, 3, 5):
        app.ship(CTX, order_id, **ship)
    if scenario == 3 and marketplace != Marketplace.AMAZON:  # Amazon refunds wait for the marketplace's ack
        app.refund(CTX, order_id, reason=RefundReason.DAMAGED, lines=(RefundRequestLine("A", 1),))
    if scenario == 4:  # eBay: opens a cancellation dispute; elsewhere: canceled at once
        made = app.cancel(CTX, order_id, reason=CancelReason.OUT_OF_STOCK)
        if "dispute_id" in made.ids and i >= 24:
            app.close_dispute(
                CTX, order_id, dispute_id=made.ids["dispute_id"], outcome=DisputeOutcome.ACCEPTED
            )
    if scenario == 5:
        made = app.open_dispute(CTX, order_id, reason="not_received")
        if i >= 24:
            app.close_dispute(
                CTX, order_id, dispute_id=made.ids["dispute_id"], outcome=DisputeOutcome.REJECTED
            )


@pytest.fixture(scope="module")
def shop(pg_target: PostgresTarget) -> Iterator[Shop]:
    """Fill the ledger through its commands, then rebuild All Sales from the log."""
    token = secrets.token_hex(4)
    seller, other_seller = f"sales-{token}", f"sales-other-{token}"
    app = Ledger(env=pg_target.eventsourcing_env())
    try:
        accounts = {
            name: app.register_account(
                CTX, seller=seller, marketplace=marketplace, name=name, fulfillment_managed=managed
            ).account_id
            for name, marketplace, managed in (
                ("eb", Marketplace.EBAY, True),
                ("az", Marketplace.AMAZON, True),
                ("wm", Marketplace.WALMART, True),
                ("wm-3p", Marketplace.WALMART, False),
            )
        }
        marketplaces = {"eb": "ebay", "az": "amazon", "wm": "walmart", "wm-3p": "walmart"}
        order_ids = []
        for i in range(ORDERS):
            name = list(accounts)[i % len(accounts)]
            order_id = app.import_order(CTX, accounts[name], _order(i)).order_id
            if i % 24 != 0:  # pending orders stay as imported
                _play(app, order_id, marketplaces[name], i)
            order_ids.append(order_id)
        # The other seller reuses order ids, emails, names and SKUs, and buys at the same times.
        other_account = app.register_account(
            CTX, seller=other_seller, marketplace=Marketplace.EBAY, name="eb"
        ).account_id
        other_ids = [app.import_order(CTX, other_account, _order(i)).order_id for i in range(12)]
        rebuild(AllSalesProjection(), lambda: connect(pg_target), app.recorder, app.mapper)
        yield Shop(
            seller=seller,
            other_seller=other_seller,
            accounts=accounts,
            orders={oid: app.get_order(oid) for oid in order_ids},
            other_orders={oid: app.get_order(oid) for oid in other_ids},
        )
    finally:
        app.close()


@pytest.fixture(scope="module")
def conn(pg_target: PostgresTarget) -> Iterator[psycopg.Connection[TupleRow]]:
    """A reader's connection (autocommit, as the API's pool hands them out)."""
    with connect(pg_target, autocommit=True) as connection:
        yield connection


# ------------------------------------------------------------------------------------- helpers


def tab_of(d: OrderDetails) -> str:
    return "third_party_managed" if d.third_party_managed else d.status


def matches(d: OrderDetails, f: SalesFilter) -> bool:
    """The filters' meaning, written over the write side's state."""
    q = (f.q or "").strip()
    return (
        (f.account_id is None or d.account_id == f.account_id)
        and (f.marketplace is None or d.marketplace == f.marketplace)
        and (f.status is None or tab_of(d) == f.status)
        and (f.open is None or d.open == f.open)
        and (f.dispute is None or d.dispute_status == "open")
        and (f.sku is None or any(line.sku == f.sku for line in d.lines))
        and (
            not q
            or d.marketplace_order_id == q
            or d.buyer.email.lower() == q.lower()
            or q.lower() in d.buyer.name.lower()
        )
        and (f.purchased_from is None or d.purchased_at >= f.purchased_from)
        and (f.purchased_to is None or d.purchased_at < f.purchased_to)
    )


def expected_ids(shop: Shop, f: SalesFilter) -> list[UUID]:
    """Matching orders, newest purchase first, ties by order id descending."""
    hits = [d for d in shop.orders.values() if matches(d, f)]
    return [d.order_id for d in sorted(hits, key=lambda d: (d.purchased_at, d.order_id), reverse=True)]


def walk(conn: psycopg.Connection[TupleRow], seller: str, f: SalesFilter, limit: int) -> list[list[UUID]]:
    """Every page of the filter, following next_cursor to the end."""
    pages: list[list[UUID]] = []
    cursor: str | None = None
    while True:
        page = VIEW.list_orders(conn, seller, f, limit=limit, cursor=cursor)
        assert len(page.items) <= limit
        pages.append([item.order_id for item in page.items])
        if page.next_cursor is None:
            return pages
        assert len(page.items) == limit
        cursor = page.next_cursor
        assert len(pages) <= ORDERS + 1, "pages never end"


def summary_of(d: OrderDetails) -> OrderSummary:
    values = {f.name: getattr(d, f.name) for f in fields(OrderSummary) if f.name != "buyer_name"}
    return OrderSummary(buyer_name=d.buyer.name, **values)


# Filters as functions of the shop (account ids are known only once it exists).
FILTERS: dict[str, Callable[[Shop], SalesFilter]] = {
    "none": lambda s: SalesFilter(),
    "account": lambda s: SalesFilter(account_id=s.accounts["eb"]),
    "third-party account": lambda s: SalesFilter(account_id=s.accounts["wm-3p"]),
    "marketplace": lambda s: SalesFilter(marketplace="walmart"),
    "status unshipped": lambda s: SalesFilter(status="unshipped"),
    "status partially_shipped": lambda s: SalesFilter(status="partially_shipped"),
    "status shipped": lambda s: SalesFilter(status="shipped"),
    "status canceled": lambda s: SalesFilter(status="canceled"),
    "status third_party_managed": lambda s: SalesFilter(status="third_party_managed"),
    "open": lambda s: SalesFilter(open=True),
    "not open": lambda s: SalesFilter(open=False),
    "dispute open": lambda s: SalesFilter(dispute="open"),
    "sku on some lines": lambda s: SalesFilter(sku="SKU-3"),
    "sku on every other order": lambda s: SalesFilter(sku="SKU-SHARED"),
    "q marketplace order id": lambda s: SalesFilter(q="MO-0017"),
    "q email in other case": lambda s: SalesFilter(q="BUYER23@example.COM"),
    "q part of a name": lambda s: SalesFilter(q="ANN"),
    "q name with spaces around": lambda s: SalesFilter(q="  lee 1"),
    "purchased range": lambda s: SalesFilter(purchased_from=T0 - timedelta(hours=10), purchased_to=T0),
    "purchased from": lambda s: SalesFilter(purchased_from=T0 - timedelta(hours=3)),
    "purchased to": lambda s: SalesFilter(purchased_to=T0 - timedelta(hours=15)),
    "status and account": lambda s: SalesFilter(status="shipped", account_id=s.accounts["wm"]),
    "open and marketplace": lambda s: SalesFilter(open=True, marketplace="ebay"),
    "dispute and status": lambda s: SalesFilter(dispute="open", status="shipped"),
    "sku and open": lambda s: SalesFilter(sku="SKU-SHARED", open=True),
    "q and status": lambda s: SalesFilter(q="ann", status="unshipped"),
    "range and tab and marketplace": lambda s: SalesFilter(
        purchased_from=T0 - timedelta(hours=18), status="third_party_managed", marketplace="walmart"
    ),
    "everything": lambda s: SalesFilter(
        account_id=s.accounts["eb"],
        marketplace="ebay",
        status="shipped",
        open=True,
        dispute="open",
        sku="SKU-SHARED",
        q="Sam",
        purchased_from=T0 - timedelta(days=1),
        purchased_to=T0 + timedelta(days=1),
    ),
}


# ------------------------------------------------------------------------------------- filters


def test_first_page_is_the_fifty_newest_orders(shop: Shop, conn: psycopg.Connection[TupleRow]) -> None:
    """Without filters or limit, the first page is the 50 newest purchases and a cursor to the rest."""
    page = VIEW.list_orders(conn, shop.seller, SalesFilter())

    assert [item.order_id for item in page.items] == expected_ids(shop, SalesFilter())[:50]
    assert page.next_cursor is not None


@pytest.mark.parametrize("case", FILTERS)
def test_filter_lists_exactly_the_matching_orders(
    case: str, shop: Shop, conn: psycopg.Connection[TupleRow]
) -> None:
    """Each filter, and filters together, list exactly the orders they describe, in order, and count them."""
    f = FILTERS[case](shop)
    expected = expected_ids(shop, f)
    assert expected or case == "everything", "the data set should give every filter something to find"

    pages = walk(conn, shop.seller, f, limit=7)

    assert [oid for page in pages for oid in page] == expected
    assert VIEW.count(conn, shop.seller, f) == len(expected)


def test_single_filters_narrow_the_list(shop: Shop) -> None:
    """The data set is varied enough that no single filter lists every order (else its test proves little)."""
    for case, make in FILTERS.items():
        if case != "none":
            assert len(expected_ids(shop, make(shop))) < ORDERS, case


def test_status_filters_match_the_tab(shop: Shop, conn: psycopg.Connection[TupleRow]) -> None:
    """ "unshipped" leaves Third Party Managed orders out; "third_party_managed" lists them in every status."""
    third_party = {oid for oid, d in shop.orders.items() if d.third_party_managed}
    unshipped_3p = {oid for oid in third_party if shop.orders[oid].status == "unshipped"}
    assert unshipped_3p, "the data set needs an unshipped Third Party Managed order"

    unshipped = walk(conn, shop.seller, SalesFilter(status="unshipped"), limit=MAX_LIMIT)[0]
    listed_3p = walk(conn, shop.seller, SalesFilter(status="third_party_managed"), limit=MAX_LIMIT)[0]

    assert not unshipped_3p & set(unshipped)
    assert set(listed_3p) == third_party
    assert len({shop.orders[oid].status for oid in listed_3p}) > 1


@pytest.mark.parametrize(
    ("q", "hits"),
    [
        ("MO-0017", {17}),
        ("mo-0017", set()),  # marketplace order ids match exactly
        ("MO-001", set()),  # ... and whole
        ("buyer9@example.com", {9}),
        ("Buyer9@Example", set()),  # emails match whole
        ("100%", {i for i in range(ORDERS) if i % 6 == 2}),
        ("%", {i for i in range(ORDERS) if i % 6 == 2}),  # % is a percent sign, not a wildcard
        ("_", {i for i in range(ORDERS) if i % 6 == 3}),  # _ is an underscore
        ("\\", {i for i in range(ORDERS) if i % 6 == 4}),  # \ is a backslash, not LIKE's escape
        ("a_e", set()),  # would match "snake" if _ were a wildcard
        ("ann", {i for i in range(ORDERS) if i % 6 in (0, 5)}),
        ("Sam 9", {9}),
        ("nobody", set()),
    ],
)
def test_q_matches_order_id_email_or_part_of_the_name(
    q: str, hits: set[int], shop: Shop, conn: psycopg.Connection[TupleRow]
) -> None:
    """q: the exact marketplace order id, the exact email in any case, or any part of the name, literally."""
    by_number = {int(d.marketplace_order_id[3:]): oid for oid, d in shop.orders.items()}

    listed = walk(conn, shop.seller, SalesFilter(q=q), limit=MAX_LIMIT)[0]

    assert set(listed) == {by_number[i] for i in hits}


def test_blank_q_filters_nothing(shop: Shop, conn: psycopg.Connection[TupleRow]) -> None:
    """A q of only spaces is no search at all."""
    assert VIEW.count(conn, shop.seller, SalesFilter(q="   ")) == ORDERS


def test_purchase_range_includes_its_start_and_excludes_its_end(
    shop: Shop, conn: psycopg.Connection[TupleRow]
) -> None:
    """purchased_from is inclusive and purchased_to exclusive: the three orders bought at T0-1h, exactly."""
    f = SalesFilter(purchased_from=T0 - timedelta(hours=1), purchased_to=T0)

    listed = walk(conn, shop.seller, f, limit=MAX_LIMIT)[0]

    assert sorted(shop.orders[oid].marketplace_order_id for oid in listed) == [
        "MO-0003",
        "MO-0004",
        "MO-0005",
    ]


@pytest.mark.parametrize(
    "make",
    [
        lambda: SalesFilter(status="pending"),
        lambda: SalesFilter(status="disputes_open"),
        lambda: SalesFilter(marketplace="etsy"),
        lambda: SalesFilter(dispute="closed"),  # type: ignore[arg-type]
        lambda: SalesFilter(purchased_from=datetime(2024, 5, 1)),
        lambda: SalesFilter(purchased_to=datetime(2024, 5, 1)),
    ],
)
def test_unknown_filter_values_are_refused(make: Callable[[], SalesFilter]) -> None:
    """An unknown status, marketplace or dispute state, or a time without a zone, is an InvalidFilterError."""
    with pytest.raises(InvalidFilterError):
        make()


# ---------------------------------------------------------------------------------------- pages


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 50, MAX_LIMIT])
def test_pages_cover_every_order_once_in_order(
    limit: int, shop: Shop, conn: psycopg.Connection[TupleRow]
) -> None:
    """Following next_cursor lists every order once, newest first, with ties split across pages correctly."""
    expected = expected_ids(shop, SalesFilter())
    purchased = [shop.orders[oid].purchased_at for oid in expected]
    assert len(set(purchased)) < len(purchased), "the data set needs orders bought at the same time"

    pages = walk(conn, shop.seller, SalesFilter(), limit=limit)
    listed = [oid for page in pages for oid in page]

    assert listed == expected
    assert len(set(listed)) == len(listed)
    assert len(pages) == -(-ORDERS // limit)


def test_pages_of_a_filter_stay_within_the_filter(shop: Shop, conn: psycopg.Connection[TupleRow]) -> None:
    """The cursor of a filtered page continues that filter's list, whatever rows lie between."""
    f = SalesFilter(status="shipped")

    pages = walk(conn, shop.seller, f, limit=2)

    assert [oid for page in pages for oid in page] == expected_ids(shop, f)


def test_last_full_page_has_no_cursor(shop: Shop, conn: psycopg.Connection[TupleRow]) -> None:
    """When the orders end exactly at a page's end, that page has no next cursor (never an empty page)."""
    f = SalesFilter(account_id=shop.accounts["az"])
    total = len(expected_ids(shop, f))

    whole = VIEW.list_orders(conn, shop.seller, f, limit=total)
    short = VIEW.list_orders(conn, shop.seller, f, limit=total - 1)
    assert short.next_cursor is not None
    rest = VIEW.list_orders(conn, shop.seller, f, limit=total - 1, cursor=short.next_cursor)

    assert (len(whole.items), whole.next_cursor) == (total, None)
    assert (len(rest.items), rest.next_cursor) == (1, None)


def test_an_empty_list_is_one_page_without_cursor(shop: Shop, conn: psycopg.Connection[TupleRow]) -> None:
    """A filter that matches nothing gives no items and no cursor."""
    page = VIEW.list_orders(conn, shop.seller, SalesFilter(q="no such order"))

    assert (page.items, page.next_cursor) == ([], None)


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1])
def test_limit_outside_one_to_max_is_refused(
    limit: int, shop: Shop, conn: psycopg.Connection[TupleRow]
) -> None:
    """limit must be 1 to 500."""
    with pytest.raises(InvalidFilterError):
        VIEW.list_orders(conn, shop.seller, SalesFilter(), limit=limit)


def _tampered(cursor: str) -> str:
    middle = len(cursor) // 2
    return cursor[:middle] + ("A" if cursor[middle] != "A" else "B") + cursor[middle + 1 :]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: "",
        lambda c: "not-a-cursor",
        lambda c: c[:-1],
        lambda c: c + "A",
        lambda c: c + "==",
        lambda c: c.replace(c[0], "!"),
        lambda c: "é" * len(c),
        lambda c: c[:-4] + "+/+/",
        lambda c: "A" * len(c),
        lambda c: "A" * 100_000,
        _tampered,
    ],
    ids=[
        "empty",
        "word",
        "truncated",
        "extended",
        "padded",
        "bad character",
        "not ascii",
        "standard alphabet",
        "zeros",
        "huge",
        "one character changed",
    ],
)
def test_malformed_cursor_is_refused(
    mangle: Callable[[str], str], shop: Shop, conn: psycopg.Connection[TupleRow]
) -> None:
    """A cursor the view did not make, or one changed on the way, raises InvalidCursorError (a ValueError)."""
    cursor = VIEW.list_orders(conn, shop.seller, SalesFilter(), limit=5).next_cursor
    assert cursor is not None

    with pytest.raises(InvalidCursorError) as raised:
        VIEW.list_orders(conn, shop.seller, SalesFilter(), limit=5, cursor=mangle(cursor))
    assert isinstance(raised.value, ValueError)


def test_cursor_keeps_its_position_exactly() -> None:
    """A cursor decodes to the very microsecond and order id it was made from, in UTC, and is URL-safe."""
    moment = datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=-5)))
    order_id = uuid4()

    cursor = encode_cursor(moment, order_id)

    assert decode_cursor(cursor) == (moment, order_id)
    assert decode_cursor(cursor)[0].utcoffset() == timedelta(0)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)


# ----------------------------------------------------------------------------- seller scoping


def test_another_sellers_orders_are_never_listed(shop: Shop, conn: psycopg.Connection[TupleRow]) -> None:
    """Orders of another seller with the same order ids, emails, names and SKUs stay out of every list."""
    for f in (
        SalesFilter(),
        SalesFilter(q="MO-0002"),
        SalesFilter(q="buyer2@example.com"),
        SalesFilter(q="Promo"),
        SalesFilter(sku="SKU-SHARED"),
        SalesFilter(marketplace="ebay", status="unshipped"),
    ):
        listed = {oid for page in walk(conn, shop.seller, f, limit=MAX_LIMIT) for oid in page}
        assert listed == set(expected_ids(shop, f))
        assert not listed & shop.other_orders.keys()
    other = walk(conn, shop.other_seller, SalesFilter(), limit=MAX_LIMIT)[0]
    assert set(other) == set(shop.other_orders)


def test_another_sellers_order_has_no_summary_or_lines(
    shop: Shop, conn: psycopg.Connection[TupleRow]
) -> None:
    """Asked for another seller's order, the view answers as for an unknown one: None and no lines."""
    foreign = next(iter(shop.other_orders))

    assert VIEW.get_summary(conn, shop.seller, foreign) is None
    assert VIEW.lines(conn, shop.seller, foreign) == []
    assert VIEW.get_summary(conn, shop.seller, uuid4()) is None
    assert VIEW.get_summary(conn, shop.other_seller, foreign) == summary_of(shop.other_orders[foreign])


# ------------------------------------------------------------------------------------ tab counts


def test_tab_counts_equal_counts_by_filter(shop: Shop, conn: psycopg.Connection[TupleRow]) -> None:
    """Each tab's kept count equals a count of its filter, for the seller, per account and per marketplace."""
    scopes: list[tuple[UUID | None, str | None]] = [(None, None)]
    scopes += [(account_id, None) for account_id in shop.accounts.values()]
    scopes += [(None, m) for m in ("ebay", "amazon", "walmart", "jet")]
    scopes += [(shop.accounts["wm"], "walmart"), (shop.accounts["wm"], "ebay")]
    for account_id, marketplace in scopes:
        counts = VIEW.tab_counts(conn, shop.seller, account_id=account_id, marketplace=marketplace)
        scope = SalesFilter(account_id=account_id, marketplace=marketplace)
        by_filter = {
            tab: VIEW.count(
                conn, shop.seller, SalesFilter(account_id=account_id, marketplace=marketplace, status=tab)
            )
            for tab in TABS
            if tab != "disputes_open"
        }
        by_filter["disputes_open"] = VIEW.count(
            conn, shop.seller, SalesFilter(account_id=account_id, marketplace=marketplace, dispute="open")
        )
        expected = dict.fromkeys(TABS, 0)
        for d in shop.orders.values():
            if matches(d, scope):
                expected[tab_of(d)] += 1
                expected["disputes_open"] += int(d.dispute_status == "open")

        assert counts == by_filter == expected, (account_id, marketplace)


def test_every_tab_is_counted(shop: Shop, conn: psycopg.Connection[TupleRow]) -> None:
    """The data set fills every tab, and the seller's tabs (bar disputes) add up to all its orders."""
    counts = VIEW.tab_counts(conn, shop.seller)

    assert all(counts[tab] > 0 for tab in TABS), counts
    assert sum(n for tab, n in counts.items() if tab != "disputes_open") == ORDERS


def test_tab_counts_refuse_an_unknown_marketplace(shop: Shop, conn: psycopg.Connection[TupleRow]) -> None:
    """Counting by a marketplace the ledger does not know is an InvalidFilterError, as listing by it is."""
    with pytest.raises(InvalidFilterError):
        VIEW.tab_counts(conn, shop.seller, marketplace="etsy")


def test_tab_counts_of_a_seller_without_orders_are_zero(
    shop: Shop, conn: psycopg.Connection[TupleRow]
) -> None:
    """Every tab is present, at zero, for a seller with no orders."""
    assert VIEW.tab_counts(conn, f"nobody-{secrets.token_hex(4)}") == dict.fromkeys(TABS, 0)


# ------------------------------------------------------------------------- summaries and lines


def test_summaries_equal_the_orders_own_state(shop: Shop, conn: psycopg.Connection[TupleRow]) -> None:
    """Each summary, listed or fetched alone, has exactly the fields and values of app.get_order(...)."""
    listed = {
        item.order_id: item for item in VIEW.list_orders(conn, shop.seller, SalesFilter(), limit=500).items
    }

    for order_id, details in shop.orders.items():
        expected = summary_of(details)
        assert VIEW.get_summary(conn, shop.seller, order_id) == expected
        assert listed[order_id] == expected
    assert {s.dispute_status for s in listed.values()} == {None, "open", "closed"}
    assert any(s.refunded_total > 0 for s in listed.values())


def test_lines_equal_the_orders_own_lines(shop: Shop, conn: psycopg.Connection[TupleRow]) -> None:
    """Each order's lines, in the marketplace's order, with what was shipped, cancelled, refunded, restocked."""
    names = [f.name for f in fields(LineSummary)]

    for order_id, details in shop.orders.items():
        expected = [LineSummary(**{n: getattr(line, n) for n in names}) for line in details.lines]
        assert VIEW.lines(conn, shop.seller, order_id) == expected


def test_a_generation_made_before_ship_by_gains_it_and_lists_the_ship_by_of_new_imports(
    own_target: PostgresTarget,
) -> None:
    """A live All Sales table without `ship_by` (an earlier release made it) gets the column when a worker
    starts, with no rebuild: its rows read no ship-by, an order imported after it lists the marketplace's date,
    and a page's lines are read for every order of the page at once."""
    app = Ledger(env=own_target.eventsourcing_env())

    def connect_own() -> psycopg.Connection[TupleRow]:
        return connect(own_target)

    try:
        account = app.register_account(CTX, seller="s-ship", marketplace=Marketplace.AMAZON, name="main")
        moment = datetime(2026, 11, 20, 10, tzinfo=UTC)
        old = ImportedOrder(
            "OLD-1", moment, "USD", PaymentStatus.PAID, Buyer("Ann", "ann@example.com"),
            (OrderLine("1", "MUG-1", 2, Decimal("12.50")), OrderLine("2", "CUP-1", 1, Decimal("5.00"))),
        )  # fmt: skip
        app.import_order(CTX, account.account_id, old, seller="s-ship")
        catch_up(AllSalesProjection(), connect_own, app, 50)
        table = base.Tables(1)["all_sales_orders"]
        with connect_own() as conn:
            conn.execute("DROP VIEW all_sales_orders")
            conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN ship_by").format(table))
            conn.execute(sql.SQL("CREATE VIEW all_sales_orders AS SELECT * FROM {}").format(table))
            conn.commit()
        new = dataclasses.replace(old, marketplace_order_id="NEW-1", ship_by=moment + timedelta(days=3))
        app.import_order(CTX, account.account_id, new, seller="s-ship")
        catch_up(AllSalesProjection(), connect_own, app, 50)  # installs (upgrades) first, then applies
        with connect_own() as conn:
            page = VIEW.list_orders(conn, "s-ship", SalesFilter(), sort="purchased_at")
            lines = VIEW.lines_of(conn, "s-ship", [s.order_id for s in page.items])
            foreign = VIEW.lines_of(conn, "another-seller", [s.order_id for s in page.items])
        assert {s.marketplace_order_id: s.ship_by for s in page.items} == {
            "OLD-1": None,
            "NEW-1": moment + timedelta(days=3),
        }
        assert [[(ln.line_id, ln.sku) for ln in lines[s.order_id]] for s in page.items] == [
            [("1", "MUG-1"), ("2", "CUP-1")]
        ] * 2
        assert foreign == {s.order_id: [] for s in page.items}
    finally:
        app.close()

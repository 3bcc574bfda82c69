"""Settlement reconciliation on real PostgreSQL: crafted Amazon and eBay reports matched against the refunds and
exposure read models, every mismatch kind, bad rows per line, and each run stored and read back."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from order_scenarios import UPS_TRACKING, OrderSpec, Scenario, catch_up, new_seller

from ledger.aggregates.values import Carrier, Marketplace, RefundReason, RefundRequestLine, Source, SyncAction
from ledger.application.errors import IdempotencyKeyReusedError
from ledger.application.ledger import Ledger
from ledger.finance.reconcile import (
    AMOUNT_DIFFERS,
    MATCHED,
    MISSING_IN_LEDGER,
    MISSING_IN_MARKETPLACE,
    ReconciliationDetails,
    ReconciliationNotFoundError,
    Reconciliations,
    Upload,
    totals_of,
)
from ledger.finance.settlements import CHARGE, REFUND, SettlementFormatError
from ledger.projections import base
from ledger.projections.exposure import ExposureProjection
from ledger.projections.refunds import RefundsProjection

RECONCILIATIONS = Reconciliations()
AMAZON_COLUMNS = [
    "settlement-id", "settlement-start-date", "settlement-end-date", "deposit-date", "total-amount", "currency",
    "transaction-type", "order-id", "merchant-order-id", "adjustment-id", "shipment-id", "marketplace-name",
    "amount-type", "amount-description", "amount", "fulfillment-id", "posted-date", "posted-date-time",
    "order-item-code", "merchant-order-item-id", "merchant-adjustment-item-id", "sku", "quantity-purchased",
    "promotion-id",
]  # fmt: skip


def spec(marketplace: Marketplace = Marketplace.AMAZON, **changes: Any) -> OrderSpec:
    """A paid order of two lines (3 and 1 units) in USD, total 55.10: items 50.00, tax 2.10, shipping 3.00."""
    return replace(OrderSpec(marketplace, True, False, True, "USD", (3, 1), False, Source.IMPORT), **changes)


def amazon_report(
    start: datetime, end: datetime, rows: list[tuple[str, ...]], currency: str = "USD"
) -> bytes:
    """A V2 flat file: the summary row, then (transaction-type, order-id, amount-type, description, amount) rows."""

    def line(**values: str) -> str:
        return "\t".join(values.get(c.replace("-", "_"), "") for c in AMAZON_COLUMNS)

    stamp = "%Y-%m-%d %H:%M:%S UTC"
    text = [
        "\t".join(AMAZON_COLUMNS),
        line(
            settlement_id="9001",
            settlement_start_date=start.strftime(stamp),
            settlement_end_date=end.strftime(stamp),
            total_amount="0.00",
            currency=currency,
        ),
    ]
    for row in rows:
        if len(row) != 5:
            text.append("\t".join(row))  # a row as given: wrong columns
            continue
        kind, order_id, amount_type, description, amount = row
        text.append(
            line(
                settlement_id="9001",
                transaction_type=kind,
                order_id=order_id,
                amount_type=amount_type,
                amount_description=description,
                amount=amount,
                posted_date=start.strftime("%Y-%m-%d"),
            )
        )
    return ("\n".join(text) + "\n").encode()


def charge_rows(
    order_id: str, principal: str, tax: str = "2.10", shipping: str = "3.00"
) -> list[tuple[str, ...]]:
    return [
        ("Order", order_id, "ItemPrice", "Principal", principal),
        ("Order", order_id, "ItemPrice", "Tax", tax),
        ("Order", order_id, "ItemPrice", "Shipping", shipping),
        ("Order", order_id, "ItemFees", "Commission", "-7.50"),
    ]


@pytest.fixture
def shop(app: Ledger) -> Scenario:
    return Scenario(app, new_seller("reconcile"))


def period(shop: Scenario) -> tuple[datetime, datetime]:
    """The settlement period of the tests: it holds what `ship_all` and `refund_one` do, not later changes."""
    return shop.now - timedelta(hours=1), shop.now - timedelta(minutes=10)


def ship_all(shop: Scenario, order_id: UUID, at: timedelta | None = timedelta(minutes=30)) -> None:
    """Ship everything, `at` before the scenario's start (None: now, after the period); the marketplace
    acknowledges it (Amazon charges, and so takes refunds, only then)."""
    shipped_at = None if at is None else shop.now - at
    result = shop.app.ship(
        shop.ctx(), order_id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING, shipped_at=shipped_at
    )
    shop.app.record_sync_outcome(
        shop.ctx(Source.MARKETPLACE),
        order_id,
        action=SyncAction.SHIP,
        reference=str(result.ids["shipment_id"]),
        accepted=True,
    )


def refund_one(shop: Scenario, order_id: UUID) -> Decimal:
    """Refund a unit of L1, effective within the period; the order's refunded total."""
    ctx = shop.ctx(effective_at=shop.now - timedelta(minutes=20))
    shop.app.refund(ctx, order_id, reason=RefundReason.DAMAGED, lines=(RefundRequestLine("L1", 1),))
    return shop.app.get_order(order_id).refunded_total


def project(shop: Scenario, connect: base.Connect) -> None:
    for projection in (ExposureProjection(), RefundsProjection()):
        catch_up(projection, connect, shop.app, 500)


def run(
    connect: base.Connect, seller: str, data: bytes, marketplace: str = "amazon", **kwargs: Any
) -> ReconciliationDetails:
    kwargs.setdefault("file_name", "settlement.txt")
    upload = Upload(
        seller=seller, marketplace=marketplace, data=data, actor="fin-key", source="api", **kwargs
    )
    with connect() as conn:
        conn.autocommit = True
        return RECONCILIATIONS.run(conn, upload, datetime.now(UTC))


def outcomes(details: ReconciliationDetails) -> dict[tuple[str, str], tuple[Any, ...]]:
    return {
        (i.kind, i.marketplace_order_id): (i.outcome, i.ledger_amount, i.marketplace_amount, i.report_lines)
        for i in details.items
    }


def test_every_mismatch_kind_with_both_amounts(shop: Scenario, connect: base.Connect) -> None:
    """Matched, amount_differs, missing_in_marketplace and missing_in_ledger, for charges and refunds alike."""
    matched, differs, unreported, refunded, refund_unreported, refund_unknown = (
        shop.place(spec()).order_id for _ in range(6)
    )
    for order_id in (matched, differs, unreported, refunded, refund_unreported, refund_unknown):
        ship_all(shop, order_id)
    refund_total = refund_one(shop, refunded)
    refund_one(shop, refund_unreported)
    ship_all(
        shop, shop.place(spec()).order_id, at=None
    )  # MO-7, after the period: the report rightly lacks it
    project(shop, connect)
    start, end = period(shop)
    ledger_total = shop.app.get_order(matched).total
    assert ledger_total == Decimal("55.10")
    rows = [
        *charge_rows("MO-1", "50.00"),
        *charge_rows("MO-2", "45.00"),
        *charge_rows("MO-4", "50.00"),
        *charge_rows("MO-5", "50.00"),
        *charge_rows("MO-6", "50.00"),
        *charge_rows("999-0000001", "10.00", tax="0.80", shipping="0"),
        ("Refund", "MO-4", "ItemPrice", "Principal", f"-{refund_total - Decimal('0.35')}"),
        ("Refund", "MO-4", "ItemPrice", "Tax", "-0.35"),
        ("Refund", "MO-6", "ItemPrice", "Principal", "-12.50"),
        ("Refund", "MO-6", "ItemFees", "RefundCommission", "2.00"),
    ]
    data = amazon_report(start, end + timedelta(days=1), rows)
    end_outside = amazon_report(start, end, rows)

    details = run(connect, shop.seller, end_outside)

    got = outcomes(details)
    order_ids = {o.order_id: f"MO-{n}" for n, o in enumerate(shop.orders, start=1)}
    assert order_ids[refunded] == "MO-4"
    assert got[(CHARGE, "MO-1")] == (MATCHED, ledger_total, ledger_total, (3, 4, 5))
    assert got[(CHARGE, "MO-2")] == (AMOUNT_DIFFERS, ledger_total, Decimal("50.10"), (7, 8, 9))
    assert got[(CHARGE, "MO-3")] == (MISSING_IN_MARKETPLACE, ledger_total, None, ())
    assert got[(CHARGE, "999-0000001")] == (MISSING_IN_LEDGER, None, Decimal("10.80"), (23, 24, 25))
    assert got[(REFUND, "MO-4")][:3] == (MATCHED, refund_total, refund_total)
    assert got[(REFUND, "MO-5")][:3] == (MISSING_IN_MARKETPLACE, refund_total, None)
    assert got[(REFUND, "MO-6")][:3] == (MISSING_IN_LEDGER, None, Decimal("12.50"))
    assert (CHARGE, "MO-7") not in got  # shipped after the report's period ended
    assert (
        details.items[[i.marketplace_order_id for i in details.items].index("999-0000001")].order_id is None
    )
    differs_item = next(i for i in details.items if i.marketplace_order_id == "MO-2")
    assert differs_item.difference == Decimal("-5.00")
    assert (details.run.matched, details.run.amount_differs) == (5, 1)
    assert (details.run.missing_in_marketplace, details.run.missing_in_ledger) == (2, 2)
    assert details.bad_rows == ()
    assert details.run.ignored_rows == 7  # six commissions and a refund commission
    # A longer period takes the order shipped later in: its charge is then missing in the marketplace.
    assert outcomes(run(connect, shop.seller, data))[(CHARGE, "MO-7")][0] == MISSING_IN_MARKETPLACE


def test_totals_re_derive_from_the_items(shop: Scenario, connect: base.Connect) -> None:
    """Per currency and kind, each side's total is the sum of the items' amounts, exactly."""
    for _ in range(3):
        ship_all(shop, shop.place(spec()).order_id)
    refund_one(shop, shop.orders[0].order_id)
    project(shop, connect)
    data = amazon_report(
        *period(shop),
        [
            *charge_rows("MO-1", "50.00"),
            *charge_rows("MO-2", "49.99"),
            ("Refund", "MO-9", "ItemPrice", "Tax", "-0.01"),
        ],
    )

    details = run(connect, shop.seller, data)

    [charges, refunds] = details.totals
    assert (charges.kind, charges.items, charges.ledger_amount) == (CHARGE, 3, Decimal("165.30"))
    assert charges.marketplace_amount == sum(
        (i.marketplace_amount or Decimal(0) for i in details.items if i.kind == CHARGE), Decimal(0)
    )
    assert charges.marketplace_amount == Decimal("110.19")
    assert (refunds.kind, refunds.marketplace_amount) == (REFUND, Decimal("0.01"))
    assert refunds.ledger_amount == shop.app.get_order(shop.orders[0].order_id).refunded_total
    assert details.totals == totals_of(details.items)


def test_bad_rows_are_reported_per_line_and_the_rest_is_matched(
    shop: Scenario, connect: base.Connect
) -> None:
    """Wrong columns, a bad number, another currency, an unknown type, an order the ledger keeps in EUR."""
    ship_all(shop, shop.place(spec()).order_id)
    ship_all(shop, shop.place(spec(currency="EUR")).order_id)
    project(shop, connect)
    rows = [
        *charge_rows("MO-1", "50.00"),
        ("Order", "MO-1", "ItemPrice"),
        ("Order", "MO-1", "ItemPrice", "Principal", "fifty"),
        ("Bonus", "MO-1", "ItemPrice", "Principal", "1.00"),
        ("Order", "MO-2", "ItemPrice", "Principal", "7.25"),
    ]
    data = amazon_report(*period(shop), rows)

    details = run(connect, shop.seller, data)

    assert [(b.line, b.field) for b in details.bad_rows] == [
        (7, "row"),
        (8, "amount"),
        (9, "transaction-type"),
        (10, "currency"),
    ]
    assert "EUR" in details.bad_rows[3].message
    assert outcomes(details)[(CHARGE, "MO-1")][0] == MATCHED
    # The EUR order is not in a USD settlement: its shipment is still listed, in its own currency.
    assert outcomes(details)[(CHARGE, "MO-2")][0] == MISSING_IN_MARKETPLACE
    assert next(i for i in details.items if i.marketplace_order_id == "MO-2").currency == "EUR"
    assert details.run.bad_rows == 4


def test_ebay_transaction_report(shop: Scenario, connect: base.Connect) -> None:
    """Order rows against shipped value, Refund rows against refunds, on the report's days."""
    first, second = (shop.place(spec(Marketplace.EBAY)).order_id for _ in range(2))
    ship_all(shop, first)
    ship_all(shop, second)
    refunded = refund_one(shop, second)
    project(shop, connect)
    # eBay's period is whole UTC days: from the first row's day (an hour before the start) to the last's.
    before, day = (shop.now - timedelta(hours=1)).strftime("%Y-%m-%d"), shop.now.strftime("%Y-%m-%d")
    data = (
        '"Transaction report"\n\n'
        '"Transaction creation date","Type","Order number","Net amount","Gross transaction amount",'
        '"Transaction currency","Item ID","Reference ID"\n'
        f'"{day}","Order","MO-1","50.00","55.10","USD","1",""\n'
        f'"{day}","Order","MO-2","50.00","55.10","USD","1",""\n'
        f'"{day}","Refund","MO-2","-1.00","-{refunded + 1}","USD","1",""\n'
        f'"{before}","Payout","--","-100.00","-100.00","USD","",""\n'
    ).encode()

    details = run(connect, shop.seller, data, marketplace="ebay")

    got = outcomes(details)
    assert got[(CHARGE, "MO-1")][0] == got[(CHARGE, "MO-2")][0] == MATCHED
    assert got[(REFUND, "MO-2")][:3] == (AMOUNT_DIFFERS, refunded, refunded + 1)
    assert details.run.format == "ebay-transaction-report"
    assert details.run.ignored_rows == 1


def test_a_run_is_stored_with_who_what_and_when(shop: Scenario, connect: base.Connect) -> None:
    """The run keeps its actor, file name, size and SHA-256, period and counts; another seller cannot see it."""
    ship_all(shop, shop.place(spec()).order_id)
    project(shop, connect)
    data = amazon_report(*period(shop), charge_rows("MO-1", "50.00"))

    made = run(connect, shop.seller, data, file_name="nov.txt")

    with connect() as conn:
        read = RECONCILIATIONS.get(conn, shop.seller, made.run.reconciliation_id)
        listed = RECONCILIATIONS.list(conn, shop.seller)
        with pytest.raises(ReconciliationNotFoundError):
            RECONCILIATIONS.get(conn, new_seller("someone-else"), made.run.reconciliation_id)
        with pytest.raises(ReconciliationNotFoundError):
            RECONCILIATIONS.get(conn, shop.seller, uuid4())
    assert read == made
    run_ = read.run
    assert (run_.created_by, run_.source, run_.file_name, run_.file_size) == (
        "fin-key",
        "api",
        "nov.txt",
        len(data),
    )
    assert run_.file_sha256 == hashlib.sha256(data).hexdigest()
    assert (run_.settlement_id, run_.currency, run_.matched) == ("9001", "USD", 1)
    assert [r.reconciliation_id for r in listed.items] == [run_.reconciliation_id]


def test_idempotency_key_replays_the_first_run(shop: Scenario, connect: base.Connect) -> None:
    """The same key and file give back the first run; the same key with another file is refused."""
    ship_all(shop, shop.place(spec()).order_id)
    project(shop, connect)
    start, end = period(shop)
    data = amazon_report(start, end, charge_rows("MO-1", "50.00"))

    first = run(connect, shop.seller, data, idempotency_key="nov-1")
    again = run(connect, shop.seller, data, idempotency_key="nov-1")

    assert again.run == first.run
    assert again.replayed
    with pytest.raises(IdempotencyKeyReusedError):
        run(
            connect,
            shop.seller,
            amazon_report(start, end, charge_rows("MO-1", "49.00")),
            idempotency_key="nov-1",
        )
    with connect() as conn:
        assert len(RECONCILIATIONS.list(conn, shop.seller).items) == 1


def test_account_filter_and_unreadable_files(shop: Scenario, connect: base.Connect) -> None:
    """With an account, only its orders are the ledger's side; a file that is no report is refused, not stored."""
    ship_all(shop, shop.place(spec()).order_id)
    ship_all(shop, shop.place(spec(restock_in_ledger=True)).order_id)  # another Amazon account
    project(shop, connect)
    account = shop.app.get_order(shop.orders[0].order_id).account_id
    data = amazon_report(*period(shop), charge_rows("MO-1", "50.00"))

    details = run(connect, shop.seller, data, account_id=account)

    assert [(i.marketplace_order_id, i.outcome) for i in details.items] == [("MO-1", MATCHED)]
    with pytest.raises(SettlementFormatError):
        run(connect, shop.seller, b"order,amount\n1,2\n")
    with connect() as conn:
        assert len(RECONCILIATIONS.list(conn, shop.seller).items) == 1


def test_runs_are_listed_newest_first_in_pages(shop: Scenario, connect: base.Connect) -> None:
    """Three runs, two per page: every run once, newest first; a marketplace filter narrows them."""
    ship_all(shop, shop.place(spec()).order_id)
    project(shop, connect)
    data = amazon_report(*period(shop), charge_rows("MO-1", "50.00"))
    made = [run(connect, shop.seller, data, file_name=f"run-{n}.txt").run.reconciliation_id for n in range(3)]

    with connect() as conn:
        first = RECONCILIATIONS.list(conn, shop.seller, limit=2)
        assert first.next_cursor is not None
        second = RECONCILIATIONS.list(conn, shop.seller, limit=2, cursor=first.next_cursor)
        ebay = RECONCILIATIONS.list(conn, shop.seller, marketplace="ebay")

    assert [r.reconciliation_id for r in (*first.items, *second.items)] == made[::-1]
    assert second.next_cursor is None
    assert ebay.items == ()

"""The `Ledger` on a real PostgreSQL: what a second process reads back, and what concurrent writers do.

Every test uses `ledger_env` (the run's own schema) and a seller name of its own, so tests share the
schema without seeing each other's orders. Writers that race each get their own `Ledger` (their own
connection pool), as separate processes would.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from ledger.aggregates.account import MarketplaceAccount, SellerAccounts
from ledger.aggregates.chain import GENESIS_HASH, chain_hash
from ledger.aggregates.errors import LedgerError, NothingToShipError, OverShipmentError
from ledger.aggregates.order import Order
from ledger.aggregates.values import (
    Address,
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
    Requester,
    SyncAction,
)
from ledger.application.errors import ConcurrentUpdateError, IdempotencyKeyReusedError, VersionMismatchError
from ledger.application.ledger import Ledger
from ledger.application.queries import AccountDetails, CommandResult

NOW = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)
PURCHASED_AT = NOW - timedelta(hours=2)
UPS = "1Z999AA10123456784"
FEDEX = "123456789012"
THREAD_TIMEOUT_SECONDS = 60
ORDER_EVENT_TYPES = {
    "Imported",
    "PaymentCleared",
    "Shipped",
    "CancellationRequested",
    "Cancelled",
    "Refunded",
    "DisputeOpened",
    "DisputeClosed",
    "Restocked",
    "MarketplaceAcknowledged",
    "MarketplaceRejected",
}

LedgerFactory = Callable[..., Ledger]


@pytest.fixture
def make_ledger(ledger_env: dict[str, str]) -> Iterator[LedgerFactory]:
    """Ledger instances on the run's schema (small pools, fixed clock), all closed after the test."""
    made: list[Ledger] = []

    def make(pool_size: int = 2) -> Ledger:
        env = {**ledger_env, "POSTGRES_POOL_SIZE": str(pool_size), "POSTGRES_MAX_OVERFLOW": "2"}
        app = Ledger(env=env, clock=lambda: NOW)
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


@pytest.fixture
def seller() -> str:
    return f"seller-{uuid4().hex[:12]}"


def ctx(
    key: str | None = None, *, effective_at: datetime | None = None, digest: str | None = None
) -> Context:
    return Context(actor="tester", idempotency_key=key, effective_at=effective_at, request_digest=digest)


def an_order(
    marketplace_order_id: str = "MO-1",
    *,
    paid: bool = True,
    lines: tuple[OrderLine, ...] | None = None,
    currency: str = "USD",
) -> ImportedOrder:
    return ImportedOrder(
        marketplace_order_id=marketplace_order_id,
        purchased_at=PURCHASED_AT,
        currency=currency,
        payment_status=PaymentStatus.PAID if paid else PaymentStatus.PENDING,
        buyer=Buyer("Ada Buyer", "ada@example.com"),
        lines=lines
        or (OrderLine("L1", "SKU-1", 3, Decimal("10.50"), Decimal("1.05"), Decimal("4.00"), "Mug"),),
        ship_to=Address(name="Ada", line1="1 Main St", city="Springfield", country="US"),
        paid_at=PURCHASED_AT if paid else None,
    )


def register(
    app: Ledger, seller: str, marketplace: Marketplace = Marketplace.WALMART, **settings: Any
) -> AccountDetails:
    return app.register_account(ctx(), seller=seller, marketplace=marketplace, name="main", **settings)


def event_types(app: Ledger, order_id: UUID) -> list[str]:
    return [type(e).__name__ for e in app.events.get(order_id)]


def assert_chain_intact(app: Ledger, order_id: UUID) -> None:
    """Every stored event's hash recomputes from what was read back, and links to the one before it."""
    previous = GENESIS_HASH
    for event in app.events.get(order_id):
        assert event.prev_hash == previous
        assert chain_hash(event.prev_hash, event) == event.hash
        previous = event.hash


def run_together(workers: list[Callable[[], Any]]) -> list[tuple[str, Any]]:
    """Start every worker at once (a barrier); ("ok", result) or ("error", exception) for each, in order."""
    barrier = threading.Barrier(len(workers))
    outcomes: list[tuple[str, Any]] = [("missing", None)] * len(workers)

    def run(index: int, work: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            outcomes[index] = ("ok", work())
        except Exception as error:  # collected and checked by the caller
            outcomes[index] = ("error", error)

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT_SECONDS)
    assert not any(thread.is_alive() for thread in threads), "a worker hung"
    return outcomes


def ship_before_save(app: Ledger, other: Ledger, order_id: UUID, **ship: Any) -> None:
    """Make `other` ship on `order_id` after `app` loaded the order and before `app` saves (once).

    Commands save through `Ledger._save` (grouped with other threads' saves), so that is where to step in."""
    original_save = app._save
    done = False

    def save(*args: Any, **kwargs: Any) -> Any:
        nonlocal done
        if not done:
            done = True
            other.ship(ctx(), order_id, **ship)
        return original_save(*args, **kwargs)

    app._save = save  # type: ignore[method-assign]


# --------------------------------------------------------------------------------- round trip


def test_every_event_type_reads_back_identically_from_a_fresh_instance(
    make_ledger: LedgerFactory, seller: str
) -> None:
    """Every order and account event written by one Ledger is read back by another: same order, same
    history, hashes that recompute, decimals with their exact scale."""
    writer = make_ledger()
    amazon = register(writer, seller, Marketplace.AMAZON, restock_in_ledger=False)
    writer.update_account(ctx(), amazon.account_id, restock_in_ledger=True)
    ebay = writer.register_account(ctx(), seller=seller, marketplace=Marketplace.EBAY, name="ebay")
    lines = (
        OrderLine("L1", "SKU-1", 3, Decimal("10.50"), Decimal("1.05"), Decimal("4.00"), "Mug"),
        OrderLine("L2", "SKU-2", 2, Decimal("7.10"), Decimal("0.90"), Decimal("0.00"), "Spoon"),
    )
    order_id = writer.import_order(ctx(), amazon.account_id, an_order(paid=False, lines=lines)).order_id
    writer.record_payment(ctx(), order_id, paid_at=NOW - timedelta(hours=1))
    shipped = writer.ship(
        ctx(), order_id, carrier=Carrier.UPS, tracking_number=UPS, lines=(LineQuantity("L1", 2),)
    )
    shipment_id = shipped.ids["shipment_id"]
    writer.cancel(
        ctx(effective_at=PURCHASED_AT + timedelta(hours=1)),
        order_id,
        reason=CancelReason.BUYER_CANCELLED,
        requested_by=Requester.BUYER,
        lines=(LineQuantity("L2", 1),),
    )  # outside Amazon's 30 minutes: a request
    writer.cancel(ctx(), order_id, reason=CancelReason.OUT_OF_STOCK, lines=(LineQuantity("L2", 2),))
    writer.record_sync_outcome(
        ctx(),
        order_id,
        action=SyncAction.SHIP,
        reference=str(shipment_id),
        accepted=True,
        marketplace_reference="AMZ-9",
    )
    refund = writer.refund(
        ctx(),
        order_id,
        reason=RefundReason.DAMAGED,
        lines=(RefundRequestLine("L1", 1),),
        shipping_amount=Decimal("4.00"),
    )
    writer.record_sync_outcome(
        ctx(),
        order_id,
        action=SyncAction.REFUND,
        reference=str(refund.ids["refund_id"]),
        accepted=False,
        error_code="Throttled",
        message="try later",
        permanent=False,
    )
    claim = writer.open_dispute(ctx(), order_id, reason="item not received", marketplace_dispute_id="CASE-7")
    writer.close_dispute(
        ctx(), order_id, dispute_id=claim.ids["dispute_id"], outcome=DisputeOutcome.WITHDRAWN
    )
    writer.restock(ctx(), order_id, lines=(LineQuantity("L1", 1),))
    # eBay: a paid order's cancellation goes through a cancellation dispute; accepted, it cancels.
    ebay_id = writer.import_order(ctx(), ebay.account_id, an_order("MO-2")).order_id
    opened = writer.cancel(ctx(), ebay_id, reason=CancelReason.PRICING_ERROR, restock_in_ledger=True)
    writer.close_dispute(ctx(), ebay_id, dispute_id=opened.ids["dispute_id"], outcome=DisputeOutcome.ACCEPTED)

    reader = make_ledger()
    recorded = set(event_types(reader, order_id)) | set(event_types(reader, ebay_id))
    assert recorded == ORDER_EVENT_TYPES
    for oid in (order_id, ebay_id):
        assert reader.get_order(oid) == writer.get_order(oid)
        assert reader.order_history(oid) == writer.order_history(oid)
        assert_chain_intact(reader, oid)
    details = reader.get_order(order_id)
    assert [str(line.unit_price) for line in details.lines] == ["10.50", "7.10"]
    assert [str(line.shipping) for line in details.lines] == ["4.00", "0.00"]
    assert str(details.total) == "51.65"
    imported = next(iter(reader.events.get(order_id)))
    assert [(str(x.unit_price), str(x.tax), str(x.shipping)) for x in imported.lines] == [
        ("10.50", "1.05", "4.00"),
        ("7.10", "0.90", "0.00"),
    ]
    (stored_refund,) = details.refunds
    assert [(str(x.item_amount), str(x.tax_amount), str(x.shipping_amount)) for x in stored_refund.lines] == [
        ("10.50", "0.35", "4.00")
    ]
    assert str(stored_refund.total) == "14.85"

    account_events = [type(e).__name__ for e in reader.events.get(amazon.account_id)]
    index_events = [type(e).__name__ for e in reader.events.get(SellerAccounts.create_id(seller))]
    assert account_events == ["Registered", "SettingsChanged"]
    assert index_events == ["Started", "AccountAdded", "AccountAdded"]
    assert reader.get_account(amazon.account_id) == writer.get_account(amazon.account_id)
    assert reader.get_account(amazon.account_id).restock_in_ledger is True
    assert reader.list_accounts(seller) == writer.list_accounts(seller)


def test_three_decimal_currency_keeps_its_scale(make_ledger: LedgerFactory, seller: str) -> None:
    """Amounts in a three-decimal currency (KWD) come back with all three digits, and hash the same."""
    writer = make_ledger()
    account = register(writer, seller)
    lines = (OrderLine("L1", "SKU-1", 2, Decimal("2.500"), Decimal("0.125"), Decimal("1.000")),)
    order_id = writer.import_order(ctx(), account.account_id, an_order(lines=lines, currency="KWD")).order_id
    writer.ship(ctx(), order_id, carrier=Carrier.FEDEX, tracking_number=FEDEX)
    writer.refund(
        ctx(), order_id, reason=RefundReason.GOODWILL, lines=(RefundRequestLine("L1", 0, Decimal("0.750")),)
    )

    reader = make_ledger()
    details = reader.get_order(order_id)
    assert (str(details.lines[0].unit_price), str(details.lines[0].tax)) == ("2.500", "0.125")
    assert str(details.total) == "6.125"
    assert str(details.refunded_total) == "0.750"
    assert_chain_intact(reader, order_id)


# ------------------------------------------------------------------------------ idempotent import


def test_concurrent_duplicate_imports_create_the_order_once(make_ledger: LedgerFactory, seller: str) -> None:
    """Eight writers importing the same order at once: one creates it, one Imported event is stored."""
    account = register(make_ledger(), seller)
    apps = [make_ledger(pool_size=1) for _ in range(8)]
    order = an_order("MO-RACE")

    outcomes = run_together(
        [lambda app=app: app.import_order(ctx(), account.account_id, order) for app in apps]
    )

    assert all(kind == "ok" for kind, _ in outcomes), outcomes
    results = [result for _, result in outcomes]
    assert sum(result.created for result in results) == 1
    assert len({result.order_id for result in results}) == 1
    assert event_types(make_ledger(), results[0].order_id) == ["Imported"]


def test_concurrent_imports_with_one_paid_record_the_payment_once(
    make_ledger: LedgerFactory, seller: str
) -> None:
    """Seven pending and one paid copy imported at once: the order ends paid, and exactly one event says so."""
    account = register(make_ledger(), seller)
    apps = [make_ledger(pool_size=1) for _ in range(8)]
    copies = [an_order("MO-PAY", paid=False)] * 7 + [an_order("MO-PAY", paid=True)]

    outcomes = run_together(
        [
            lambda app=app, copy=copy: app.import_order(ctx(), account.account_id, copy)
            for app, copy in zip(apps, copies, strict=True)
        ]
    )

    assert all(kind == "ok" for kind, _ in outcomes), outcomes
    order_id = outcomes[0][1].order_id
    reader = make_ledger()
    events = list(reader.events.get(order_id))
    types = Counter(type(e).__name__ for e in events)
    assert types["Imported"] == 1
    # Whoever came first: either the paid copy created the order, or one PaymentCleared followed.
    imported_paid = events[0].payment_status == PaymentStatus.PAID
    assert types["PaymentCleared"] == (0 if imported_paid else 1)
    assert set(types) <= {"Imported", "PaymentCleared"}
    assert reader.get_order(order_id).payment_status == "paid"


def test_concurrent_paid_reimports_clear_the_payment_once(make_ledger: LedgerFactory, seller: str) -> None:
    """A pending order re-imported as paid by eight writers at once gets exactly one PaymentCleared."""
    first = make_ledger()
    account = register(first, seller)
    order_id = first.import_order(ctx(), account.account_id, an_order("MO-RE", paid=False)).order_id
    apps = [make_ledger(pool_size=1) for _ in range(8)]
    paid = an_order("MO-RE", paid=True)

    outcomes = run_together(
        [lambda app=app: app.import_order(ctx(), account.account_id, paid) for app in apps]
    )

    assert all(kind == "ok" for kind, _ in outcomes), outcomes
    assert not any(result.created for _, result in outcomes)
    assert event_types(make_ledger(), order_id) == ["Imported", "PaymentCleared"]
    assert sorted(result.events for _, result in outcomes) == [()] * 7 + [("PaymentCleared",)]


# ------------------------------------------------------------------------- optimistic concurrency


@pytest.fixture
def two_writers(make_ledger: LedgerFactory, seller: str) -> tuple[Ledger, Ledger, UUID]:
    """Two Ledger instances and a paid Walmart order (line L1: 3 units) both can see."""
    first, second = make_ledger(), make_ledger()
    account = register(first, seller)
    order_id = first.import_order(ctx(), account.account_id, an_order("MO-OCC")).order_id
    return first, second, order_id


def test_stale_expected_version_is_refused(two_writers: tuple[Ledger, Ledger, UUID]) -> None:
    """A command that expects the version it read, after another writer moved the order on, is refused."""
    first, second, order_id = two_writers
    seen = second.get_order(order_id).version
    first.ship(ctx(), order_id, carrier=Carrier.UPS, tracking_number=UPS, lines=(LineQuantity("L1", 1),))

    with pytest.raises(VersionMismatchError):
        second.ship(
            ctx(),
            order_id,
            carrier=Carrier.UPS,
            tracking_number=UPS,
            lines=(LineQuantity("L1", 1),),
            expected_version=seen,
        )

    assert event_types(second, order_id) == ["Imported", "Shipped"]
    assert second.get_order(order_id).shipped_units == 1


def test_write_conflict_with_expected_version_is_refused(two_writers: tuple[Ledger, Ledger, UUID]) -> None:
    """When another writer saves between our load and our save, a command with expected_version fails
    with VersionMismatchError rather than retrying on the newer order."""
    first, second, order_id = two_writers
    ship_before_save(
        second, first, order_id, carrier=Carrier.UPS, tracking_number=UPS, lines=(LineQuantity("L1", 1),)
    )

    with pytest.raises(VersionMismatchError):
        second.ship(
            ctx(),
            order_id,
            carrier=Carrier.FEDEX,
            tracking_number=FEDEX,
            lines=(LineQuantity("L1", 1),),
            expected_version=1,
        )

    assert event_types(first, order_id) == ["Imported", "Shipped"]
    assert [s.carrier for s in first.get_order(order_id).shipments] == ["ups"]


def test_write_conflict_without_expected_version_retries(two_writers: tuple[Ledger, Ledger, UUID]) -> None:
    """Without expected_version, a command that lost the race reloads and succeeds if the rules still allow
    it: both shipments are kept, none is lost."""
    first, second, order_id = two_writers
    ship_before_save(
        second, first, order_id, carrier=Carrier.UPS, tracking_number=UPS, lines=(LineQuantity("L1", 1),)
    )

    result = second.ship(
        ctx(), order_id, carrier=Carrier.FEDEX, tracking_number=FEDEX, lines=(LineQuantity("L1", 2),)
    )

    assert result.version == 3
    details = first.get_order(order_id)
    assert details.shipped_units == 3
    assert details.status == "shipped"
    assert [s.carrier for s in details.shipments] == ["ups", "fedex"]
    assert_chain_intact(first, order_id)


@pytest.mark.parametrize(
    ("lines", "refusal"),
    [(None, NothingToShipError), ((LineQuantity("L1", 3),), OverShipmentError)],
    ids=["whole-order", "explicit-lines"],
)
def test_write_conflict_on_the_last_units_is_refused_by_the_rules(
    two_writers: tuple[Ledger, Ledger, UUID], lines: tuple[LineQuantity, ...] | None, refusal: type[Exception]
) -> None:
    """When the other writer shipped the last units meanwhile, the retried command is refused by the rule
    (nothing or too much to ship), not applied on top: no unit ships twice."""
    first, second, order_id = two_writers
    ship_before_save(second, first, order_id, carrier=Carrier.UPS, tracking_number=UPS)

    with pytest.raises(refusal):
        second.ship(ctx(), order_id, carrier=Carrier.FEDEX, tracking_number=FEDEX, lines=lines)

    details = first.get_order(order_id)
    assert details.shipped_units == 3
    assert event_types(first, order_id) == ["Imported", "Shipped"]


def test_racing_for_the_last_unit_exactly_one_writer_wins(make_ledger: LedgerFactory, seller: str) -> None:
    """Two writers shipping the last unit at the same moment: one succeeds, the other is refused by the
    rules, and the order records exactly one shipment (several rounds, to give the race a chance)."""
    account = register(make_ledger(), seller)
    apps = [make_ledger(pool_size=1), make_ledger(pool_size=1)]
    lines = (OrderLine("L1", "SKU-1", 1, Decimal("9.99")),)
    for round_number in range(5):
        order_id = (
            apps[0]
            .import_order(ctx(), account.account_id, an_order(f"MO-LAST-{round_number}", lines=lines))
            .order_id
        )
        explicit = (LineQuantity("L1", 1),) if round_number % 2 else None

        outcomes = run_together(
            [
                lambda app=app, order_id=order_id, explicit=explicit: app.ship(
                    ctx(), order_id, carrier=Carrier.UPS, tracking_number=UPS, lines=explicit
                )
                for app in apps
            ]
        )

        kinds = sorted(kind for kind, _ in outcomes)
        assert kinds == ["error", "ok"], outcomes
        error = next(value for kind, value in outcomes if kind == "error")
        assert isinstance(error, NothingToShipError | OverShipmentError), error
        assert event_types(apps[0], order_id) == ["Imported", "Shipped"]
        assert apps[1].get_order(order_id).shipped_units == 1


def test_hammering_one_order_loses_no_update(make_ledger: LedgerFactory, seller: str) -> None:
    """Ten writers each shipping one unit of a 20-unit line three times: every success is one shipped
    unit, no unit ships twice, and the only failures are the ledger's own errors."""
    account = register(make_ledger(), seller)
    lines = (OrderLine("L1", "SKU-1", 20, Decimal("1.25"), Decimal("0.10"), Decimal("5.00")),)
    order_id = (
        make_ledger().import_order(ctx(), account.account_id, an_order("MO-HAMMER", lines=lines)).order_id
    )
    apps = [make_ledger(pool_size=1) for _ in range(10)]

    def three_tries(app: Ledger) -> list[CommandResult | Exception]:
        results: list[CommandResult | Exception] = []
        for _ in range(3):
            try:
                results.append(
                    app.ship(
                        ctx(),
                        order_id,
                        carrier=Carrier.UPS,
                        tracking_number=UPS,
                        lines=(LineQuantity("L1", 1),),
                    )
                )
            except LedgerError as error:
                results.append(error)
        return results

    outcomes = run_together([lambda app=app: three_tries(app) for app in apps])

    assert all(kind == "ok" for kind, _ in outcomes), [v for k, v in outcomes if k != "ok"]
    attempts = [attempt for _, results in outcomes for attempt in results]
    successes = [a for a in attempts if isinstance(a, CommandResult)]
    failures = [a for a in attempts if not isinstance(a, CommandResult)]
    assert len(attempts) == 30
    assert all(isinstance(f, OverShipmentError | ConcurrentUpdateError) for f in failures), failures
    if any(isinstance(f, OverShipmentError) for f in failures):
        assert len(successes) == 20  # refused for lack of units only once all 20 had shipped
    reader = make_ledger()
    details = reader.get_order(order_id)
    assert details.shipped_units == len(successes) <= 20
    assert details.version == 1 + len(successes)
    assert sorted(s.version for s in successes) == list(range(2, 2 + len(successes)))
    assert len({s.ids["shipment_id"] for s in successes}) == len(successes)
    assert event_types(reader, order_id).count("Shipped") == len(successes)
    assert_chain_intact(reader, order_id)


# ---------------------------------------------------------------------------- atomic saves


def test_account_and_seller_index_commit_together_or_not_at_all(
    make_ledger: LedgerFactory, seller: str
) -> None:
    """Saving a new account with a stale copy of the seller's index fails as a whole: the index conflict
    (IntegrityError) leaves the new account unstored too."""
    app = make_ledger()
    register(app, seller)
    index_id = SellerAccounts.create_id(seller)
    stale_index: SellerAccounts = app.repository.get(index_id)
    app.register_account(ctx(), seller=seller, marketplace=Marketplace.EBAY, name="second")
    account = MarketplaceAccount.register(ctx(), seller=seller, marketplace=Marketplace.JET, name="third")
    stale_index.add(account.id)

    with pytest.raises(IntegrityError):
        app.save(account, stale_index)

    reader = make_ledger()
    with pytest.raises(AggregateNotFoundError):
        reader.repository.get(account.id)
    assert [a.name for a in reader.list_accounts(seller)] == ["main", "second"]
    assert reader.repository.get(index_id).version == 3


def test_concurrent_account_registrations_all_reach_the_index(
    make_ledger: LedgerFactory, seller: str
) -> None:
    """Four accounts registered at once for one seller all end up in the seller's index: a writer that
    lost the race on the index retries instead of dropping its account."""
    apps = [make_ledger(pool_size=1) for _ in range(4)]
    marketplaces = [Marketplace.AMAZON, Marketplace.EBAY, Marketplace.RAKUTEN, Marketplace.JET]

    outcomes = run_together(
        [
            lambda app=app, mp=mp: app.register_account(
                ctx(), seller=seller, marketplace=mp, name=f"{mp.value}-shop"
            )
            for app, mp in zip(apps, marketplaces, strict=True)
        ]
    )

    assert all(kind == "ok" for kind, _ in outcomes), outcomes
    listed = make_ledger().list_accounts(seller)
    assert sorted(a.account_id for a in listed) == sorted(result.account_id for _, result in outcomes)


# ------------------------------------------------------------------------------ idempotency keys


def test_idempotency_key_replays_after_a_restart(make_ledger: LedgerFactory, seller: str) -> None:
    """A command re-sent with the same idempotency key to a new Ledger instance replays the first result
    and records nothing; the same key with a different request is refused."""
    first = make_ledger()
    account = register(first, seller, restock_in_ledger=True)
    order_id = first.import_order(ctx(), account.account_id, an_order("MO-KEY")).order_id
    shipped = first.ship(
        ctx("ship-1", digest="ship L1x1"),
        order_id,
        carrier=Carrier.UPS,
        tracking_number=UPS,
        lines=(LineQuantity("L1", 1),),
    )
    cancelled = first.cancel(
        ctx("cancel-1", digest="cancel L1x1"),
        order_id,
        reason=CancelReason.OUT_OF_STOCK,
        lines=(LineQuantity("L1", 1),),
    )
    assert cancelled.events == ("Cancelled", "Restocked")
    first.close()

    restarted = make_ledger()
    again = restarted.ship(
        ctx("ship-1", digest="ship L1x1"),
        order_id,
        carrier=Carrier.UPS,
        tracking_number=UPS,
        lines=(LineQuantity("L1", 1),),
    )
    cancel_again = restarted.cancel(
        ctx("cancel-1", digest="cancel L1x1"),
        order_id,
        reason=CancelReason.OUT_OF_STOCK,
        lines=(LineQuantity("L1", 1),),
    )

    assert again.replayed
    assert (again.version, again.events, again.ids) == (shipped.version, shipped.events, shipped.ids)
    assert cancel_again.replayed
    assert (cancel_again.version, cancel_again.events) == (cancelled.version, ("Cancelled", "Restocked"))
    assert cancel_again.ids["cancellation_id"] == cancelled.ids["cancellation_id"]
    with pytest.raises(IdempotencyKeyReusedError):
        restarted.ship(
            ctx("ship-1", digest="ship L1x2"),
            order_id,
            carrier=Carrier.UPS,
            tracking_number=UPS,
            lines=(LineQuantity("L1", 2),),
        )
    details = restarted.get_order(order_id)
    assert (details.version, details.shipped_units, details.cancelled_units) == (4, 1, 1)
    assert event_types(restarted, order_id) == ["Imported", "Shipped", "Cancelled", "Restocked"]


def test_one_save_of_a_thousand_orders_returns(ledger_env: dict[str, str]) -> None:
    """A single save of 1,000 new orders commits (psycopg's pipeline mode deadlocked here over a Unix socket)."""
    app = Ledger(env=ledger_env)
    try:
        account = app.register_account(
            Context(actor="t"), seller=f"bulk-{uuid4().hex[:8]}", marketplace=Marketplace.WALMART, name="m"
        )
        orders = [
            Order.import_order(
                Context(actor="t"),
                seller=account.seller,
                account_id=account.account_id,
                marketplace=Marketplace.WALMART,
                order=ImportedOrder(
                    f"bulk-{i}",
                    datetime(2026, 11, 20, tzinfo=UTC),
                    "USD",
                    PaymentStatus.PAID,
                    Buyer("Buyer", "buyer@example.com"),
                    (OrderLine("1", "SKU", 2, Decimal("10.00")),),
                ),
                third_party_managed=False,
            )
            for i in range(1000)
        ]
        recordings = app.save(*orders)
        assert len(recordings) == 1000
        assert app.get_order(orders[-1].id).units == 2
    finally:
        app.close()

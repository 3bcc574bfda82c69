"""Generate a large, realistic order book for the query benchmarks, fast, into a named schema.

    python bench/generate_orders.py [--orders 1000000] [--schema bench_orders] [--data-dir /tmp/ledger-bench-pg]
                                    [--sellers 50] [--batch 2000] [--projections all_sales,...|all|none]

Orders are made by the real aggregates in-process (every rule, event and hash chain as the API makes them),
then their events are written with one `COPY` per batch into the events table, beside a progress row in the
same transaction: a run that stops part-way resumes at the next batch when started again with the same
arguments, and a finished run is a no-op. The projections then catch up (a rebuild from position 0 each).
Writing with COPY skips the library's table lock: run it only while nothing else writes to the schema.

The book: sellers of Zipf-like sizes (the largest, seller-00, has about a fifth of all orders), each with
accounts on some of the five marketplaces (Amazon most common) and some accounts third-party managed; orders
over the past year, 1-3 lines; about 60% shipped (some refunded, some disputed), 10% partially shipped, 7%
cancelled (on eBay through a cancellation dispute), the newest ones unshipped, a few still unpaid.

Uses LEDGER_DATABASE_URL when set, else the embedded PostgreSQL kept in --data-dir (not deleted: the query
benchmark reads the same data). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from _common import DEFAULT_DATA_DIR, bench_target, machine

from ledger.aggregates.errors import LedgerError
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
    Source,
)
from ledger.application.ledger import Ledger
from ledger.eventstore.database import POSITION_SHIFT, PostgresTarget, connect
from ledger.projections import base
from ledger.projections.registry import all_projections, projection_named

CTX = Context(actor="generator", source=Source.IMPORT)
OPERATOR = Context(actor="operator", source=Source.API)
# Share of a seller's orders per marketplace (among the marketplaces it sells on).
MARKETPLACE_WEIGHT = {
    Marketplace.AMAZON: 55,
    Marketplace.EBAY: 20,
    Marketplace.WALMART: 15,
    Marketplace.RAKUTEN: 5,
    Marketplace.JET: 5,
}
# Chance that a seller sells on a marketplace (Amazon: always).
MARKETPLACE_PRESENCE = {
    Marketplace.AMAZON: 1.0,
    Marketplace.EBAY: 0.7,
    Marketplace.WALMART: 0.5,
    Marketplace.RAKUTEN: 0.25,
    Marketplace.JET: 0.2,
}
TRACKING = {Carrier.UPS: "1Z999AA10123456784", Carrier.FEDEX: "123456789012"}
FIRST_NAMES = ["Ann", "Bo", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lena"]
LAST_NAMES = ["Lee", "Smith", "Garcia", "Kim", "Nguyen", "Müller", "Rossi", "Tanaka", "Okafor", "Silva"]
PROGRESS_TABLE = "bench_generate_progress"


class Account:
    def __init__(self, account_id: UUID, seller: str, marketplace: Marketplace, tpm: bool) -> None:
        self.account_id = account_id
        self.seller = seller
        self.marketplace = marketplace
        self.tpm = tpm


def setup_accounts(app: Ledger, sellers: int, seed: int) -> tuple[list[list[Account]], list[float]]:
    """Each seller's accounts (made once; found again on a resumed run) and each seller's share of orders."""
    rng = random.Random(seed)  # noqa: S311 - data, not secrets
    book: list[list[Account]] = []
    for s in range(sellers):
        seller = f"seller-{s:02d}"
        existing = {(a.marketplace, a.name): a for a in app.list_accounts(seller)}
        accounts = []
        for marketplace, chance in MARKETPLACE_PRESENCE.items():
            present = rng.random() < chance or s == 0  # the largest seller sells everywhere
            tpm = rng.random() < 0.1 or (s == 0 and marketplace is Marketplace.WALMART)
            if not present:
                continue
            found = existing.get((marketplace.value, "main"))
            if found is None:
                found = app.register_account(
                    CTX, seller=seller, marketplace=marketplace, name="main", fulfillment_managed=not tpm
                )
            accounts.append(Account(found.account_id, seller, marketplace, not found.fulfillment_managed))
        book.append(accounts)
    shares = [1 / (s + 1) ** 1.1 for s in range(sellers)]
    return book, shares


def make_order(rng: random.Random, index: int, account: Account, now: datetime) -> Order:
    """One order and what happened to it since, as the aggregate records it."""
    recent = rng.random() < 0.12
    age = timedelta(hours=rng.uniform(0, 72)) if recent else timedelta(days=rng.uniform(3, 365))
    purchased_at = (now - age).replace(microsecond=0)
    pending = recent and rng.random() < 0.25
    nlines = rng.choices([1, 2, 3], weights=[60, 28, 12])[0]
    lines = tuple(
        OrderLine(
            str(n + 1),
            f"SKU-{rng.randint(1, 5000):05d}",
            rng.choices([1, 2, 3, 5], weights=[75, 15, 7, 3])[0],
            Decimal(rng.randint(199, 19999)) / 100,
            tax=Decimal(rng.randint(0, 300)) / 100,
            shipping=Decimal(rng.choice([0, 0, 399, 599])) / 100,
            title=f"Item {n + 1}",
        )
        for n in range(nlines)
    )
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    order = Order.import_order(
        CTX,
        seller=account.seller,
        account_id=account.account_id,
        marketplace=account.marketplace,
        order=ImportedOrder(
            f"{account.marketplace.value[:3].upper()}-{index:09d}",
            purchased_at,
            "USD",
            PaymentStatus.PENDING if pending else PaymentStatus.PAID,
            Buyer(f"{first} {last}", f"{first.lower()}.{index}@example.com"),
            lines,
            Address(f"{first} {last}", f"{index % 999 + 1} Main St", city="Springfield", country="US"),
        ),
        third_party_managed=account.tpm,
    )
    if pending or account.tpm:
        return order
    with contextlib.suppress(LedgerError):  # a rule refused a step: the order stays as it got
        _fate(rng, order, lines, purchased_at, now, recent)
    return order


def _fate(
    rng: random.Random,
    order: Order,
    lines: tuple[OrderLine, ...],
    purchased_at: datetime,
    now: datetime,
    recent: bool,
) -> None:
    shipped_at = min(purchased_at + timedelta(hours=rng.uniform(2, 60)), now)
    carrier = rng.choice([Carrier.UPS, Carrier.FEDEX])
    roll = rng.random()
    if recent and roll < 0.6:
        return  # unshipped: new orders wait to be shipped
    if roll < 0.07:
        order.cancel(OPERATOR, reason=rng.choice(list(CancelReason)), now=now)
        for dispute in list(order.disputes.values()):  # eBay: the cancellation went through a dispute
            if dispute.is_open:
                order.close_dispute(OPERATOR, dispute_id=dispute.dispute_id, outcome=DisputeOutcome.ACCEPTED)
        return
    partial = roll < 0.17 and (len(lines) > 1 or lines[0].quantity > 1)
    ship_lines = (LineQuantity(lines[0].line_id, 1),) if partial else None
    order.ship(
        OPERATOR, carrier=carrier, tracking_number=TRACKING[carrier], shipped_at=shipped_at, now=now,
        lines=ship_lines,
    )  # fmt: skip
    if rng.random() < 0.08:
        reason = rng.choice(
            [RefundReason.CUSTOMER_RETURN, RefundReason.DAMAGED, RefundReason.NOT_AS_DESCRIBED]
        )
        whole = rng.random() < 0.5
        order.refund(
            OPERATOR, reason=reason, lines=None if whole else (RefundRequestLine(lines[0].line_id, 1),)
        )
    if rng.random() < 0.02:
        dispute_id = order.open_dispute(OPERATOR, reason="item not received")
        if rng.random() < 0.5:
            order.close_dispute(OPERATOR, dispute_id=dispute_id, outcome=DisputeOutcome.REJECTED)


def _progress(target: PostgresTarget) -> tuple[int, datetime | None]:
    with connect(target) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE}"
            " (id int PRIMARY KEY, next_index bigint NOT NULL, anchor timestamptz NOT NULL)"
        )
        row = conn.execute(f"SELECT next_index, anchor FROM {PROGRESS_TABLE} WHERE id = 1").fetchone()  # noqa: S608
        conn.commit()
    return (0, None) if row is None else (int(row[0]), row[1])


def write_batch(
    target: PostgresTarget, app: Ledger, orders: list[Order], next_index: int, anchor: datetime
) -> int:
    """COPY the batch's events and move the progress row, in one transaction. Returns the events written."""
    stored = [app.mapper.to_stored_event(e) for order in orders for e in order.collect_events()]
    assert len(stored) < 1 << POSITION_SHIFT  # a transaction's places
    with connect(target) as conn, conn.cursor() as cur:
        # Positions as the recorder makes them: (this transaction's id << POSITION_SHIFT) + the row's place.
        row = cur.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
        assert row is not None
        base = int(row[0]) << POSITION_SHIFT
        with cur.copy(
            "COPY ledger_events (originator_id, originator_version, topic, state, notification_id)"
            " FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["uuid", "int8", "text", "bytea", "int8"])
            for place, s in enumerate(stored, start=1):
                copy.write_row((s.originator_id, s.originator_version, s.topic, s.state, base + place))
        cur.execute(
            f"INSERT INTO {PROGRESS_TABLE} (id, next_index, anchor) VALUES (1, %s, %s)"  # noqa: S608
            " ON CONFLICT (id) DO UPDATE SET next_index = excluded.next_index",
            (next_index, anchor),
        )
        conn.commit()
    return len(stored)


def generate(target: PostgresTarget, args: argparse.Namespace) -> dict[str, Any]:
    app = Ledger(env=target.eventsourcing_env())
    try:
        book, shares = setup_accounts(app, args.sellers, args.seed)
        start, anchor = _progress(target)
        anchor = anchor or datetime.now(UTC).replace(microsecond=0)
        events = 0
        started = time.perf_counter()
        last_report = started
        index = start
        while index < args.orders:
            end = min(index + args.batch, args.orders)
            rng = random.Random(f"{args.seed}-{index}")  # noqa: S311
            orders = []
            for i in range(index, end):
                accounts = book[rng.choices(range(len(book)), weights=shares)[0]]
                account = rng.choices(
                    accounts, weights=[MARKETPLACE_WEIGHT[a.marketplace] for a in accounts]
                )[0]
                orders.append(make_order(rng, i, account, anchor))
            events += write_batch(target, app, orders, end, anchor)
            index = end
            now = time.perf_counter()
            if now - last_report > 5 or index == args.orders:
                last_report = now
                rate = (index - start) / (now - started)
                print(f"generate: {index:,}/{args.orders:,} orders ({rate:,.0f} orders/s)", file=sys.stderr)
        seconds = time.perf_counter() - started
        catch_up = _catch_up(target, app, args.projections)
        with connect(target) as conn:
            conn.execute("ANALYZE")
            conn.commit()
            total_events = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
        return {
            "benchmark": "generate orders",
            "machine": machine(target),
            "schema": target.schema,
            "orders": args.orders,
            "orders_written_this_run": args.orders - start if start < args.orders else 0,
            "events_written_this_run": events,
            "events_in_store": int(total_events[0]) if total_events else 0,
            "write_seconds": round(seconds, 1),
            "orders_per_s": round((args.orders - start) / seconds)
            if seconds > 0.01 and start < args.orders
            else None,
            "events_per_s": round(events / seconds) if seconds > 0.01 and events else None,
            "catch_up": catch_up,
            "distribution": distribution(target),
        }
    finally:
        app.close()


def _catch_up(target: PostgresTarget, app: Ledger, which: str) -> dict[str, Any]:
    if which == "none":
        return {}
    names = [p.name for p in all_projections()] if which == "all" else which.split(",")
    result: dict[str, Any] = {}
    for name in names:
        projection = projection_named(name)
        with connect(target) as conn:
            [status] = base.status(conn, [projection])
        if status.generation and status.position >= status.head:
            result[name] = {"already_caught_up_at": status.position}
            continue
        started = time.perf_counter()
        last = [started]

        def progress(position: int, head: int, name: str = name, last: list[float] = last) -> None:
            now = time.perf_counter()
            if now - last[0] > 10 or position >= head:
                last[0] = now
                print(f"catch-up {name}: {position:,}/{head:,}", file=sys.stderr)

        _, position = base.rebuild(
            projection, lambda: connect(target), app.recorder, app.mapper, progress=progress
        )
        seconds = time.perf_counter() - started
        result[name] = {
            "events": position,
            "seconds": round(seconds, 1),
            "events_per_s": round(position / seconds),
        }
    return result


def distribution(target: PostgresTarget) -> dict[str, Any]:
    """How the book came out, from the All Sales view when it is built (else from the events)."""
    with connect(target) as conn:
        generation = (
            conn.execute(
                "SELECT generation FROM projection_state WHERE name = 'all_sales' AND active"
            ).fetchone()
            if _has_table(conn, "projection_state")
            else None
        )
        if generation is None:
            return {}
        table = f"all_sales_orders_g{generation[0]}"
        if not _has_table(conn, table):
            table = "all_sales_orders"
        rows = conn.execute(
            f"SELECT tab, count(*) FROM {table} GROUP BY tab ORDER BY 2 DESC"  # noqa: S608 - our own name
        ).fetchall()
        by_marketplace = conn.execute(
            f"SELECT marketplace, count(*) FROM {table} GROUP BY 1 ORDER BY 2 DESC"  # noqa: S608
        ).fetchall()
        disputes = conn.execute(
            f"SELECT count(*) FROM {table} WHERE dispute_status IS NOT NULL"  # noqa: S608
        ).fetchone()
        refunded = conn.execute(f"SELECT count(*) FROM {table} WHERE refunded_total > 0").fetchone()  # noqa: S608
        sellers = conn.execute(
            f"SELECT seller, count(*) FROM {table} GROUP BY 1 ORDER BY 2 DESC LIMIT 3"  # noqa: S608
        ).fetchall()
    return {
        "by_tab": {str(t): int(n) for t, n in rows},
        "by_marketplace": {str(m): int(n) for m, n in by_marketplace},
        "with_dispute": int(disputes[0]) if disputes else 0,
        "refunded": int(refunded[0]) if refunded else 0,
        "largest_sellers": {str(s): int(n) for s, n in sellers},
    }


def _has_table(conn: Any, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
    return row is not None and row[0] is not None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--schema", default="bench_orders")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--sellers", type=int, default=50)
    parser.add_argument("--batch", type=int, default=2000, help="orders per COPY transaction")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--projections", default="all", help="comma-separated projection names to catch up, `all` or `none`"
    )
    args = parser.parse_args()
    with bench_target(args.schema, args.data_dir) as target:
        result = generate(target, args)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

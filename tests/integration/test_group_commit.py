"""Group commit on PostgreSQL: concurrent commands share one transaction, and a conflict costs only its own.

The committer batches whatever is queued while it is busy. To get batches deterministically (no sleeps, no
timing), a gate holds the committer's first insert until the test has queued every save it wants grouped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import pytest
from api_support import CTX, UPS_TRACKING, make_seller, order_body
from eventsourcing.persistence import IntegrityError, Recording

from ledger.aggregates.values import Carrier, Context, LineQuantity, Marketplace
from ledger.api.bodies.schemas import OrderIn
from ledger.application.errors import VersionMismatchError
from ledger.application.ledger import Ledger
from ledger.eventstore.group_commit import GroupCommitter, _Member

pytestmark = pytest.mark.postgres
NOW = datetime.now(UTC)


class Gate:
    """Wraps the committer's insert: the first call waits until `total` saves were submitted from now on."""

    def __init__(self, committer: GroupCommitter, total: int) -> None:
        self.committer = committer
        self.total = total
        self.base = committer.saves
        self.inner = committer._put
        self.calls: list[int] = []  # events per insert
        self.opened = threading.Event()
        committer._put = self

    def __call__(self, events: Sequence[Any], responses: Sequence[Any]) -> list[Recording[UUID]]:
        if not self.opened.is_set():
            while self.committer.saves - self.base + self.committer._queue.qsize() < self.total:
                threading.Event().wait(0.005)
            self.opened.set()
        self.calls.append(len(events))
        return self.inner(events, responses)


@pytest.fixture
def ledger(ledger_env: dict[str, str]) -> Iterator[Ledger]:
    ledger = Ledger(env={**ledger_env, "POSTGRES_POOL_SIZE": "4"})
    yield ledger
    ledger.close()


def committer(ledger: Ledger) -> GroupCommitter:
    assert ledger.committer is not None, "group commit is on by default on PostgreSQL"
    return ledger.committer


def new_orders(ledger: Ledger, count: int, quantity: int = 2) -> list[UUID]:
    seller = make_seller(ledger)
    account = seller.accounts[Marketplace.AMAZON]
    ids = []
    for _ in range(count):
        body = order_body(account)
        body["lines"][0]["quantity"] = quantity
        ids.append(ledger.import_order(CTX, account, msgspec.convert(body, OrderIn).to_domain()).order_id)
    return ids


def run_together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run each call in its own thread; return each result or the exception it raised."""

    def guarded(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(guarded, calls))


def last_position(ledger: Ledger, order_id: UUID) -> int:
    """The notification id of the order's last event, read back from the log as it stands (above the commit
    horizon too: a transaction open elsewhere would hold the event back from a follower's read)."""
    versions = {e.originator_version for e in ledger.events.get(order_id)}
    found = [
        n.id
        for n in ledger.recorded_notifications(0, 1_000_000, ())
        if n.originator_id == order_id and n.originator_version == max(versions)
    ]
    return found[0]


def test_concurrent_commands_on_different_orders_all_land_in_one_transaction(ledger: Ledger) -> None:
    """Eight ships queued together are inserted once, all land, and each gets its own log position."""
    orders = new_orders(ledger, 8)
    gate = Gate(committer(ledger), total=8)
    results = run_together(
        [
            lambda o=o: ledger.ship(Context(actor="t"), o, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
            for o in orders
        ]
    )
    assert all(not isinstance(r, Exception) for r in results), results
    assert sum(gate.calls) == 8  # one event per ship, in two inserts: what came first, then the rest
    assert len(gate.calls) == 2
    for order_id, result in zip(orders, results, strict=True):
        assert result.order_id == order_id
        assert ledger.get_order(order_id).status == "shipped"
        assert result.notification_id == last_position(ledger, order_id)
    assert len({r.notification_id for r in results}) == len(results)


def test_two_commands_on_one_order_in_one_batch_both_apply_after_a_retry(ledger: Ledger) -> None:
    """Two partial shipments of one order in the same batch: one wins, the other retries; both apply."""
    (order_id,) = new_orders(ledger, 1, quantity=2)
    (other,) = new_orders(ledger, 1)
    gate = Gate(committer(ledger), total=3)

    def ship_one() -> Any:
        return ledger.ship(
            Context(actor="t"),
            order_id,
            carrier=Carrier.UPS,
            tracking_number=UPS_TRACKING,
            lines=(LineQuantity("1", 1),),
        )

    ship_other = lambda: ledger.ship(  # noqa: E731
        Context(actor="t"), other, carrier=Carrier.UPS, tracking_number=UPS_TRACKING
    )
    results = run_together([ship_one, ship_one, ship_other])
    assert all(not isinstance(r, Exception) for r in results), results
    versions = sorted(r.version for r in results[:2])
    assert versions == [versions[0], versions[0] + 1]
    shipped = ledger.get_order(order_id)
    assert shipped.shipped_units == 2
    assert ledger.get_order(other).status == "shipped"
    assert len(gate.calls) >= 3  # a batch that failed, then its members alone, then the retry


def test_expected_version_conflict_in_a_batch_refuses_only_the_loser(ledger: Ledger) -> None:
    """Both commands expect the same version: one applies, the other is refused (412), the third lands."""
    (order_id,) = new_orders(ledger, 1, quantity=2)
    (other,) = new_orders(ledger, 1)
    version = ledger.get_order(order_id).version
    Gate(committer(ledger), total=3)

    def ship_one() -> Any:
        return ledger.ship(
            Context(actor="t"),
            order_id,
            carrier=Carrier.UPS,
            tracking_number=UPS_TRACKING,
            lines=(LineQuantity("1", 1),),
            expected_version=version,
        )

    results = run_together(
        [
            ship_one,
            ship_one,
            lambda: ledger.ship(Context(actor="t"), other, carrier=Carrier.UPS, tracking_number=UPS_TRACKING),
        ]
    )
    refused = [r for r in results[:2] if isinstance(r, VersionMismatchError)]
    applied = [r for r in results[:2] if not isinstance(r, Exception)]
    assert len(refused) == 1, results
    assert len(applied) == 1, results
    assert applied[0].version == version + 1
    assert ledger.get_order(order_id).version == version + 1
    assert ledger.get_order(other).status == "shipped"


def test_a_failing_member_does_not_lose_the_others(ledger: Ledger) -> None:
    """A stale save queued with good ones: the batch falls back, the good ones land, the stale one fails."""
    good = new_orders(ledger, 2)
    (stale_id,) = new_orders(ledger, 1)
    stale = ledger.repository.get(stale_id)
    fresh = ledger.repository.get(stale_id)
    fresh.ship(CTX, carrier=Carrier.UPS, tracking_number=UPS_TRACKING, shipped_at=NOW, now=NOW)
    ledger.save(fresh)  # the order moves on: `stale` now conflicts
    stale.ship(CTX, carrier=Carrier.UPS, tracking_number=UPS_TRACKING, shipped_at=NOW, now=NOW)
    aggregates = [ledger.repository.get(o) for o in good]
    for aggregate in aggregates:
        aggregate.ship(CTX, carrier=Carrier.UPS, tracking_number=UPS_TRACKING, shipped_at=NOW, now=NOW)
    members = [_Member(a.collect_events()) for a in [aggregates[0], stale, aggregates[1]]]
    put_calls: list[int] = []
    group = GroupCommitter(lambda events, _: put_calls.append(len(events)) or ledger.events.put(events))
    group._commit(members)  # what the committer thread does with a batch it took off the queue
    assert put_calls == [3, 1, 1, 1]  # the batch failed as a whole, then each member alone
    results = [m.outcome.exception() or m.outcome.result() for m in members]
    assert isinstance(results[1], IntegrityError)
    assert not isinstance(results[0], Exception)
    assert not isinstance(results[2], Exception)
    for order_id in good:
        assert ledger.get_order(order_id).status == "shipped"
    assert ledger.get_order(stale_id).version == fresh.version
    assert results[0][-1].notification.id == last_position(ledger, good[0])
    assert results[2][-1].notification.id == last_position(ledger, good[1])

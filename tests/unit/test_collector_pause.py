"""A bulk import pauses the cyclic garbage collector while its batch runs, and the pause is bounded
(application/collector.py); its decoded body adds nothing for the collector to walk (api/bodies/schemas.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.values import Marketplace
from ledger.api.bodies.schemas import OrderIn, decode_batch
from ledger.application.collector import MAX_PAUSE_SECONDS, CollectorPause
from ledger.application.commands import ImportItem


@pytest.fixture(autouse=True)
def _collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        (gc.enable if was else gc.disable)()


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_collector_is_off_during_a_pause_and_on_after_it() -> None:
    """On before, off inside, on again after."""
    pause = CollectorPause()
    with pause.paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_error_inside_ends_the_pause() -> None:
    """A batch that raises turns the collector back on."""
    pause = CollectorPause()
    with pytest.raises(RuntimeError), pause.paused():
        raise RuntimeError
    assert gc.isenabled()


def test_overlapping_batches_share_one_pause() -> None:
    """The collector comes back when the last of the batches under way ends, not the first."""
    pause = CollectorPause()
    first, second = pause.paused(), pause.paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_long_pause_is_ended_by_the_next_batch() -> None:
    """After MAX_PAUSE_SECONDS a batch that starts turns the collector on and runs with it; the next pause starts
    afresh, and the collector comes back when every batch has ended."""
    clock = _Clock()
    pause = CollectorPause(clock)
    old = pause.paused()
    old.__enter__()
    clock.now += MAX_PAUSE_SECONDS
    with pause.paused():
        assert gc.isenabled()
    newer = pause.paused()
    newer.__enter__()
    assert not gc.isenabled()
    old.__exit__(None, None, None)
    assert not gc.isenabled()
    newer.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_the_process_turned_off_stays_off() -> None:
    """A pause never turns on a collector it did not turn off."""
    gc.disable()
    pause = CollectorPause()
    with pause.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_a_bulk_import_runs_in_the_pause(shop: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`import_orders` makes and saves its orders with the collector off, and turns it on again after."""
    seen: list[bool] = []
    save = type(shop.ledger)._save

    def spy(self: Any, *aggregates: Any, **kwargs: Any) -> Any:
        seen.append(gc.isenabled())
        return save(self, *aggregates, **kwargs)

    monkeypatch.setattr(type(shop.ledger), "_save", spy)
    account_id = shop.account(Marketplace.AMAZON)
    items: list[ImportItem | LedgerError] = [
        ImportItem(account_id, shop.imported(marketplace_order_id=f"GC-{n}"), None) for n in range(3)
    ]
    results = shop.ledger.import_orders(shop.ctx, items)
    assert all(not isinstance(r, LedgerError) and r.created for r in results)
    assert seen == [False]
    assert gc.isenabled()


def test_a_decoded_bulk_import_adds_no_objects_for_the_collector() -> None:
    """The orders of a bulk import's body, their lines, buyer and address are not tracked by the collector (they
    hold text and each other, never a cycle), so decoding a batch triggers fewer collections."""
    body = (
        b'{"orders": [{"account_id": "00000000-0000-0000-0000-000000000001", "marketplace_order_id": "A",'
        b' "purchased_at": "2026-11-20T10:00:00Z", "currency": "USD", "payment_status": "paid",'
        b' "buyer": {"name": "B", "email": "b@example.com"}, "ship_to": {"city": "C"},'
        b' "lines": [{"line_id": "1", "sku": "S", "quantity": 1, "unit_price": "1.00"}]}]}'
    )
    (order,) = decode_batch(body)
    assert isinstance(order, OrderIn)
    assert order.ship_to is not None
    assert not any(gc.is_tracked(x) for x in (order, order.buyer, order.ship_to, order.lines[0]))
    assert order.to_domain().lines[0].sku == "S"

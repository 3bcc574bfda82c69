"""A bulk batch (a catch-up, an import) raises the garbage collector's youngest threshold while it runs, and puts
it back after (eventstore/bulk_gc.py); a bulk import's decoded body adds nothing for the collector to walk."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.values import Marketplace
from ledger.api.bodies.schemas import OrderIn, decode_batch
from ledger.application.commands import ImportItem
from ledger.eventstore.bulk_gc import fewer_collections
from ledger.projections import base


def test_threshold_raised_inside_and_restored_after() -> None:
    """Inside, the youngest generation waits for the bulk threshold; after, the thresholds are as before."""
    before = gc.get_threshold()
    with fewer_collections():
        inside = gc.get_threshold()
        assert inside[0] >= fewer_collections.THRESHOLD
        assert inside[1:] == before[1:]
    assert gc.get_threshold() == before


def test_overlapping_catch_ups_restore_once_the_last_ends() -> None:
    """Two catch-ups at once (threads of one process): the first to end leaves the raised threshold in place."""
    before = gc.get_threshold()
    first, second = fewer_collections(), fewer_collections()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold()[0] >= fewer_collections.THRESHOLD
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before


def test_restored_when_the_catch_up_fails() -> None:
    """An error inside still puts the thresholds back."""
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError
    assert gc.get_threshold() == before


def test_catch_ups_and_imports_share_one_switch() -> None:
    """The projections' catch-up uses the same switch as the import, so overlapping batches of both share it."""
    assert base.fewer_collections is fewer_collections


def test_a_bulk_import_runs_with_fewer_collections(shop: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`import_orders` makes and saves its orders under the raised threshold, and puts it back after."""
    before = gc.get_threshold()
    seen: list[int] = []
    save = type(shop.ledger)._save

    def spy(self: Any, *aggregates: Any, **kwargs: Any) -> Any:
        seen.append(gc.get_threshold()[0])
        return save(self, *aggregates, **kwargs)

    monkeypatch.setattr(type(shop.ledger), "_save", spy)
    account_id = shop.account(Marketplace.AMAZON)
    items: list[ImportItem | LedgerError] = [
        ImportItem(account_id, shop.imported(marketplace_order_id=f"GC-{n}"), None) for n in range(3)
    ]
    results = shop.ledger.import_orders(shop.ctx, items)
    assert all(not isinstance(r, LedgerError) and r.created for r in results)
    assert len(seen) == 1
    assert seen[0] >= fewer_collections.THRESHOLD
    assert gc.get_threshold() == before


def test_a_decoded_bulk_import_adds_no_objects_for_the_collector() -> None:
    """The orders of a bulk import's body, their lines, buyer and address are not tracked by the collector (they
    hold text and each other, never a cycle), so decoding a batch counts less toward the next collection."""
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

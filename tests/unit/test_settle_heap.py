"""A server process takes its start-up heap out of the garbage collector's full collections (api.app.settle)."""

from __future__ import annotations

import gc

from ledger.api.app import settle


def test_settle_freezes_what_is_alive() -> None:
    """What is alive is frozen; unfrozen again for the other tests."""
    before = gc.get_freeze_count()
    try:
        settle()
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()

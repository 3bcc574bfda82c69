"""A bulk catch-up raises the garbage collector's youngest threshold while it runs, and puts it back after."""

from __future__ import annotations

import gc

import pytest

from ledger.projections.base import fewer_collections


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

"""Saves in one round trip (database.LedgerApplicationRecorder): small and large saves all-or-nothing, a version
conflict is an IntegrityError, and the connection is clean afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget

TOPIC = "tests.save_round_trips:Event"


@pytest.fixture
def ledger(own_target: PostgresTarget) -> Iterator[Ledger]:
    """A Ledger on a schema of its own: these raw events have a topic no projection can decode, so they must
    not sit in the log that other tests' workers and rebuilds follow."""
    app = Ledger(env=own_target.eventsourcing_env())
    yield app
    app.close()


def events(count: int, size: int) -> list[StoredEvent]:
    return [StoredEvent(uuid4(), 1, TOPIC, b'"' + b"x" * size + b'"') for _ in range(count)]


@pytest.mark.parametrize("size", [10, 100_000], ids=["small", "large"])
def test_save_lands_in_order_and_a_conflict_records_nothing(ledger: Ledger, size: int) -> None:
    """Events land with rising positions; a batch with one conflicting event records none and raises
    IntegrityError; the next save on the same pool works."""
    recorder = ledger.recorder
    first = events(2, size)
    ids = recorder.insert_events(first)
    assert ids is not None
    assert len(ids) == 2
    assert ids[0] < ids[1]
    fresh = events(1, size)
    with pytest.raises(IntegrityError):
        recorder.insert_events([*fresh, first[0]])
    assert recorder.select_events(fresh[0].originator_id) == []
    for _ in range(20):  # every connection of the pool is usable: none was left in a transaction
        again = events(1, size)
        assert recorder.insert_events(again)
        stored = recorder.select_events(again[0].originator_id)
        assert [e.state for e in stored] == [again[0].state]

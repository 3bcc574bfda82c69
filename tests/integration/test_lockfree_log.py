"""The log without the table lock: concurrent writers whose commits land out of order never make a follower
skip or repeat an event.

Writers insert through the recorder's own statement (`LedgerApplicationRecorder.insert_in`), each on a
connection of its own, and sleep a random while inside the open transaction before COMMIT (some roll back), so
transactions that took their positions early often commit late. Three followers read the log as the product
does, and each restarts several times from the last position it kept:
- a poller on `select_notifications` (what catch-up, rebuilds and `catch_up_unless_followed` use);
- the library's LISTEN/NOTIFY subscription (`recorder.subscribe`, what a projection worker follows);
- a projection worker (`projections.base.ProjectionWorker`) whose table's primary key is the position.
Each must see every committed event exactly once, in increasing positions, each aggregate's versions in order,
at the positions the writers were given, and nothing rolled back.

The test can fail: with `LOCKFREE_RECORDER=naive` it runs against `NaiveRecorder` (the library's recorder minus
its lock: numbered by the sequence at insert, read by number), and the followers skip late commits.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from uuid import UUID

import psycopg
import pytest
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Notification, StoredEvent
from psycopg import sql
from psycopg.rows import dict_row

from ledger.application.ledger import Ledger
from ledger.eventstore import database
from ledger.eventstore.database import LedgerApplicationRecorder, PostgresTarget
from ledger.projections import base

pytestmark = pytest.mark.postgres

WRITERS = 8
TRANSACTIONS_PER_WRITER = 25
MAX_COMMIT_DELAY = 0.03
ROLLBACK_RATE = 0.08
FOLLOW_TIMEOUT = 60.0


class Counter(Aggregate):
    """A tiny aggregate of the test's own: its events decode through the Ledger's mapper."""

    @event("Ticked")
    def tick(self, n: int) -> None:
        self.n = n


class NaiveRecorder(LedgerApplicationRecorder):
    """What the lock protected against: rows numbered by the sequence as they are inserted (the library's
    numbering), read by number."""

    def insert_in(self, curs: Any, stored_events: Sequence[StoredEvent]) -> list[int]:
        curs.execute(
            sql.SQL(
                "INSERT INTO {0}.{1} (notification_id, originator_id, originator_version, topic, state)"
                " SELECT nextval(pg_get_serial_sequence(%s, 'notification_id')), *"
                " FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[])"
                " RETURNING notification_id"
            ).format(sql.Identifier(self.datastore.schema), sql.Identifier(self.events_table_name)),
            (
                f"{self.datastore.schema}.{self.events_table_name}",
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
        )
        return [row["notification_id"] for row in curs.fetchall()]

    def _horizon_condition(self) -> str:
        return "TRUE"


RECORDERS = {"lockfree": None, "naive": f"{__name__}:NaiveRecorder"}


@pytest.fixture
def ledger(own_target: PostgresTarget) -> Iterator[Ledger]:
    kind = os.environ.get("LOCKFREE_RECORDER", "lockfree")
    env = {**own_target.eventsourcing_env(), "POSTGRES_POOL_SIZE": "4"}
    if (topic := RECORDERS[kind]) is not None:
        env["APPLICATION_RECORDER_TOPIC"] = topic
    ledger = Ledger(env=env)
    yield ledger
    ledger.close()


Key = tuple[UUID, int]


class Log:
    """What the writers committed: (aggregate, version) -> the position the insert returned."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.committed: dict[Key, int] = {}
        self.rolled_back: set[Key] = set()
        self.done = threading.Event()


def write(target: PostgresTarget, ledger: Ledger, log: Log, seed: int) -> None:
    rng = random.Random(seed)
    recorder = ledger.recorder
    assert isinstance(recorder, LedgerApplicationRecorder)
    counters = [Counter() for _ in range(3)]
    pending: dict[UUID, list[Any]] = {c.id: c.collect_events() for c in counters}
    with psycopg.connect(target.conninfo(), row_factory=dict_row) as conn:  # a connection of its own
        for _ in range(TRANSACTIONS_PER_WRITER):
            chosen = rng.sample(counters, rng.randint(1, 2))
            for counter in chosen:
                for _ in range(rng.randint(1, 3)):
                    counter.tick(rng.randint(0, 1000))
                pending[counter.id] += counter.collect_events()
            domain_events = [e for c in chosen for e in pending[c.id]]
            stored = [ledger.mapper.to_stored_event(e) for e in domain_events]
            keys = [(s.originator_id, s.originator_version) for s in stored]
            rollback = rng.random() < ROLLBACK_RATE
            with conn.cursor() as curs:
                ids = recorder.insert_in(curs, stored)
                time.sleep(rng.random() * MAX_COMMIT_DELAY)  # the transaction stays open, its positions taken
            if rollback:
                conn.rollback()
                with log.lock:
                    log.rolled_back.update(keys)
                # versions not committed are written again by a later transaction
                continue
            conn.commit()
            recorder.notify(conn)
            with log.lock:
                log.committed.update(zip(keys, ids, strict=True))
            for counter in chosen:
                pending[counter.id] = []


def check(seen: Sequence[tuple[int, UUID, int]], log: Log, who: str) -> None:
    positions = [p for p, _, _ in seen]
    assert positions == sorted(set(positions)), f"{who}: positions not strictly increasing"
    keys = [(o, v) for _, o, v in seen]
    assert len(keys) == len(set(keys)), f"{who}: an event seen twice"
    missing = set(log.committed) - set(keys)
    assert not missing, f"{who}: {len(missing)} committed events skipped, e.g. {sorted(missing)[:3]}"
    extra = set(keys) - set(log.committed)
    assert not extra, f"{who}: saw events never committed (rolled back?): {sorted(extra)[:3]}"
    assert {(o, v): p for p, o, v in seen} == log.committed, f"{who}: not at the positions the writers got"
    last: dict[UUID, int] = {}
    for _, originator_id, version in seen:
        assert version == last.get(originator_id, 0) + 1, (
            f"{who}: {originator_id} version {version} out of order"
        )
        last[originator_id] = version


def until_done(log: Log, seen: Sequence[Any]) -> bool:
    return not (log.done.is_set() and len(seen) >= len(log.committed))


def poll(ledger: Ledger, log: Log, seen: list[tuple[int, UUID, int]]) -> None:
    """select_notifications in small pages; a restart every few pages keeps only the position."""
    position, pages = 0, 0
    deadline = time.monotonic() + FOLLOW_TIMEOUT
    while until_done(log, seen) and time.monotonic() < deadline:
        recorder = ledger.recorder
        for _ in range(random.randint(1, 5)):  # then "restart": nothing kept but `position`
            page = recorder.select_notifications(start=position, limit=7, inclusive_of_start=False)
            seen += [(n.id, n.originator_id, n.originator_version) for n in page]
            if page:
                position = page[-1].id
            pages += 1
            time.sleep(0.002)


def subscribe(ledger: Ledger, log: Log, seen: list[tuple[int, UUID, int]]) -> None:
    """The library's subscription, stopped and resumed from the last position every few events."""
    position = 0
    deadline = time.monotonic() + FOLLOW_TIMEOUT
    while until_done(log, seen) and time.monotonic() < deadline:
        with ledger.recorder.subscribe(gt=position) as subscription:
            stop_after = random.randint(5, 40)
            stopper = threading.Timer(0.5, subscription.stop)  # a quiet log: restart anyway
            stopper.start()
            try:
                for n in subscription:
                    seen.append((n.id, n.originator_id, n.originator_version))
                    position = n.id
                    stop_after -= 1
                    if stop_after == 0 or not until_done(log, seen):
                        break
            finally:
                stopper.cancel()


class Seen(base.Projection):
    """Records each event at its position; a second application of a position fails its primary key."""

    name = "lockfree_seen"
    tables = ("lockfree_seen",)

    def create_tables(self, cur: base.Cursor, t: base.Tables) -> None:
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (position bigint PRIMARY KEY, originator_id uuid NOT NULL,"
                " version bigint NOT NULL, UNIQUE (originator_id, version))"
            ).format(t["lockfree_seen"])
        )

    def apply(self, cur: base.Cursor, t: base.Tables, events: Sequence[base.Event]) -> None:
        base.insert_rows(
            cur,
            t["lockfree_seen"],
            ("position", "originator_id", "version"),
            [(e.position, e.event.originator_id, e.event.originator_version) for e in events],
        )


def project(target: PostgresTarget, ledger: Ledger, log: Log) -> list[tuple[int, UUID, int]]:
    """A projection worker, stopped and started again a few times while the writers write."""
    connect: Callable[[], psycopg.Connection[Any]] = lambda: database.connect(target)  # noqa: E731
    deadline = time.monotonic() + FOLLOW_TIMEOUT
    while True:
        worker = base.ProjectionWorker(Seen(), connect, ledger.recorder, ledger.mapper, batch_size=5)
        thread = threading.Thread(target=worker.run)
        thread.start()
        time.sleep(random.uniform(0.1, 0.4))
        worker.stop()
        thread.join(timeout=10)
        assert worker.error is None, worker.error
        with connect() as conn:
            rows = conn.execute(
                "SELECT position, originator_id, version FROM lockfree_seen ORDER BY position"
            )
            seen = [(int(p), o, int(v)) for p, o, v in rows.fetchall()]
        if not until_done(log, seen) or time.monotonic() > deadline:
            return seen


def test_followers_see_every_committed_event_once_in_order(
    own_target: PostgresTarget, ledger: Ledger
) -> None:
    log = Log()
    polled: list[tuple[int, UUID, int]] = []
    subscribed: list[tuple[int, UUID, int]] = []
    projected: list[tuple[int, UUID, int]] = []
    followers = [
        threading.Thread(target=poll, args=(ledger, log, polled)),
        threading.Thread(target=subscribe, args=(ledger, log, subscribed)),
        threading.Thread(target=lambda: projected.extend(project(own_target, ledger, log))),
    ]
    for follower in followers:
        follower.start()
    writers = [
        threading.Thread(target=write, args=(own_target, ledger, log, seed)) for seed in range(WRITERS)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    log.done.set()
    for follower in followers:
        follower.join(timeout=FOLLOW_TIMEOUT + 10)

    assert len(log.committed) > WRITERS * TRANSACTIONS_PER_WRITER  # several events per transaction
    assert log.rolled_back, "some transactions rolled back"
    for who, seen in (
        ("select_notifications", polled),
        ("subscription", subscribed),
        ("projection", projected),
    ):
        check(seen, log, who)
    # the head a follower can resume from is the last position once nothing is in flight (settle waits out any
    # other transaction of the server's, e.g. an autovacuum ANALYZE, that holds the horizon for a moment)
    with database.connect(own_target, autocommit=True) as conn:
        assert database.settle(conn, timeout=10)
    assert ledger.recorder.max_notification_id() == max(log.committed.values())


def test_a_transaction_in_flight_holds_readers_below_it(own_target: PostgresTarget, ledger: Ledger) -> None:
    """An early transaction still open: a later one's committed events are not handed out before it ends."""
    recorder = ledger.recorder
    assert isinstance(recorder, LedgerApplicationRecorder)
    early, late = Counter(), Counter()
    with (
        psycopg.connect(own_target.conninfo(), row_factory=dict_row) as first,
        psycopg.connect(own_target.conninfo(), row_factory=dict_row) as second,
    ):
        with first.cursor() as curs:
            (early_id,) = recorder.insert_in(curs, [ledger.mapper.to_stored_event(early.collect_events()[0])])
        with second.cursor() as curs:
            (late_id,) = recorder.insert_in(curs, [ledger.mapper.to_stored_event(late.collect_events()[0])])
        second.commit()
        assert early_id < late_id
        assert [n.id for n in recorder.select_notifications(start=0, limit=10)] == []
        assert recorder.max_notification_id() in (None, 0)
        first.commit()
    with database.connect(own_target, autocommit=True) as conn:
        assert database.settle(conn, timeout=10)
    got: list[Notification] = list(recorder.select_notifications(start=0, limit=10))
    assert [n.id for n in got] == [early_id, late_id]
    assert recorder.max_notification_id() == late_id

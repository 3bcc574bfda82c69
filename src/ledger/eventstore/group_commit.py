"""Group commit: concurrent saves from request threads go to PostgreSQL together, in one transaction.

Why: the eventsourcing library takes an exclusive lock on the events table for every insert, so writers
serialize, and each save pays a durable commit (a WAL flush) while holding it. With 16 clients most of a save's
time is spent waiting for that lock. A single committer thread instead takes every save that is waiting and
inserts all their events with one `insert_events` call: one lock, one commit, one flush for the lot.

The batch is all-or-nothing in PostgreSQL. When it fails (typically one member's version conflict, an
IntegrityError), nothing of it was recorded, and the committer saves each member alone: the others land, and
only the failing member gets its own error back, so the caller's usual retry loop (`LedgerCore._run`) reloads
and runs that one command again. Idempotency keys and expected versions are checked by the caller before
submitting, exactly as without grouping; a member's stored responses (idempotency.py) go in the batch's
transaction with its events, so a key stored meanwhile fails that member alone, like a version conflict.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Recording

MAX_BATCH = 256
"""Most saves committed together (a batch's events go in one INSERT)."""

Put = Callable[[Sequence[Any], Sequence[Any]], list[Recording[UUID]]]


class _Outcome:
    """The one result a waiting caller gets back: a lock held until the committer sets it. The hand-off (queue,
    wait, result) was about a tenth of a grouped save's Python time under py-spy (bench/appends.py, 16
    threads); this costs 5.9 us of CPU per hand-off between two threads where a `concurrent.futures.Future` (a
    Condition, a waiter lock made per wait, a list of waiters) cost 7.8."""

    __slots__ = ("_error", "_pending", "_value")

    def __init__(self) -> None:
        self._pending = threading.Lock()
        self._pending.acquire()
        self._value: list[Recording[UUID]] = []
        self._error: BaseException | None = None

    def set_result(self, value: list[Recording[UUID]]) -> None:
        self._value = value
        self._pending.release()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._pending.release()

    def exception(self) -> BaseException | None:
        """Wait for the outcome; the error it failed with, or None."""
        with self._pending:  # blocks until set, and leaves it released for the next look
            return self._error

    def result(self) -> list[Recording[UUID]]:
        """Wait for the outcome; its recordings, or raise its error."""
        error = self.exception()
        if error is not None:
            raise error
        return self._value


class _Member:
    """One caller's save waiting in the queue."""

    __slots__ = ("events", "outcome", "responses")

    def __init__(self, events: list[Any], responses: Sequence[Any] = ()) -> None:
        self.events = events
        self.responses = responses
        self.outcome = _Outcome()


class GroupCommitter:
    """One thread that commits what concurrent callers submit, in as few transactions as it can.

    `put(events, responses) -> recordings` is the one-transaction insert (the Ledger's `_put_encoded`, given
    events its callers encoded and the responses to store with them). `save` blocks its caller until its events are committed (or failed) and returns their
    recordings, in order.
    """

    def __init__(self, put: Put, *, max_batch: int = MAX_BATCH, name: str = "ledger-group-commit") -> None:
        self._put = put
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Member | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._name = name
        self.batches = 0
        """Transactions committed or tried (for tests and the benchmark: saves / batches = mean batch size)."""
        self.saves = 0

    def save(self, events: Sequence[Any], responses: Sequence[Any] = ()) -> list[Recording[UUID]]:
        """Commit `events` (one or more aggregates' pending events), and `responses`, with whatever else is
        waiting."""
        if not events and not responses:
            return []
        member = _Member(list(events), responses)
        with self._lock:
            if self._closed:
                raise RuntimeError("the ledger is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._queue.put(member)
        return member.outcome.result()

    def close(self) -> None:
        """Commit what was submitted, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._queue.put(None)
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            self._commit(batch)

    def _commit(self, batch: list[_Member]) -> None:
        self.batches += 1
        self.saves += len(batch)
        if len(batch) == 1:
            self._commit_alone(batch[0])
            return
        try:
            recordings = self._put(
                [event for member in batch for event in member.events],
                [response for member in batch for response in member.responses],
            )
        except BaseException:
            for member in batch:
                self.batches += 1
                self._commit_alone(member)
            return
        start = 0
        for member in batch:  # put() returns the recordings in the order of the events given
            end = start + len(member.events)
            member.outcome.set_result(recordings[start:end])
            start = end

    def _commit_alone(self, member: _Member) -> None:
        try:
            member.outcome.set_result(self._put(member.events, member.responses))
        except BaseException as exc:
            member.outcome.set_exception(exc)

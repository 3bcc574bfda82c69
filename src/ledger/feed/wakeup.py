"""Wakes the API's long polls and event streams when the feed's index moves.

One thread per process LISTENs on the projections' progress channel with a connection of its own; waiting
requests hold no database connection and no worker thread, only an asyncio event, so a thousand clients
waiting 30 s cost one connection. Should the listener lose its connection, waiters still wake every
`FALLBACK_SECONDS` and read again (and the thread reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from ledger.eventstore.database import DatabaseUnavailableError
from ledger.feed.index import NAME
from ledger.projections.base import PROGRESS_CHANNEL

logger = logging.getLogger(__name__)

FALLBACK_SECONDS = 5.0
REPLICA_FALLBACK_SECONDS = 0.25
"""With a read replica the wakeup (from the primary) may come before the replica has the rows: read again soon."""


class FeedWakeup:
    """`ticket()` before reading, then `await wait(ticket, timeout)`: returns when the feed moved since the
    ticket was taken (at once if it already had), or after the timeout."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[TupleRow]],
        *,
        fallback_seconds: float = FALLBACK_SECONDS,
    ) -> None:
        self._connect = connect
        self._fallback = fallback_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._listen, name="feed-wakeup", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def ticket(self) -> asyncio.Event:
        return self._event

    async def wait(self, ticket: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ticket.wait(), min(timeout, self._fallback))

    def _wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def _listen(self) -> None:
        prefix = f"{NAME}:"
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                with self._connect() as conn:
                    conn.autocommit = True
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(PROGRESS_CHANNEL)))
                    backoff = 0.5
                    while not self._stopping.is_set():
                        moved = any(n.payload.startswith(prefix) for n in conn.notifies(timeout=0.5))
                        if moved and self._loop is not None:
                            self._loop.call_soon_threadsafe(self._wake)
            except (psycopg.Error, DatabaseUnavailableError) as e:
                logger.warning("feed wakeup: %s; listening again in %.1f s", e, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

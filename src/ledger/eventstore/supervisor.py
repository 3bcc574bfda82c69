"""`ledger serve` keeps its embedded PostgreSQL running: a thread watches the postmaster and starts it again
when it dies (killed, crashed, out of memory), on the same data directory.

Nothing committed is lost: PostgreSQL's crash recovery replays its write-ahead log at start. While the server
is down the API answers 503 with Retry-After and `/readyz` says the database is unreachable; the pools and the
projection workers reconnect by themselves once it is back. Each step is logged (logger `ledger.database`):
stopped (ERROR), restarting (WARNING), back (WARNING, with how long it was down), or a failed start (ERROR, with
the server's log file; tried again, waiting up to RETRY_MAX_SECONDS). A configured server
(LEDGER_DATABASE_URL) is not ours to start: it is not watched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ledger.config import Settings
from ledger.eventstore.database import EmbeddedPostgres, EmbeddedPostgresError

log = logging.getLogger("ledger.database")

CHECK_SECONDS = 0.5
"""How often the postmaster is looked at (a look is reading /proc: cheap)."""
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0


class EmbeddedSupervisor:
    """Watches one embedded server from a daemon thread and restarts it when its postmaster dies."""

    def __init__(self, server: EmbeddedPostgres, *, check_seconds: float = CHECK_SECONDS) -> None:
        self.server = server
        self.check_seconds = check_seconds
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="embedded-postgres-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (before the server is stopped on purpose, which must not look like a crash)."""
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.check_seconds):
            if not self.server.postmaster_alive():
                self._bring_back()

    def _bring_back(self) -> None:
        data_dir = self.server.pgdata
        down_at = time.monotonic()
        log.error(
            "embedded PostgreSQL stopped (postmaster pid %s is gone); data dir %s",
            self.server.server_pid,
            data_dir,
        )
        wait = RETRY_FIRST_SECONDS
        while not self._stop.is_set():
            log.warning(
                "embedded PostgreSQL: restarting on data dir %s (crash recovery replays its WAL)", data_dir
            )
            try:
                pid = self.server.restart()
            except EmbeddedPostgresError as exc:
                log.error("embedded PostgreSQL: %s; trying again in %.1f s", exc, wait)
                self._stop.wait(wait)
                wait = min(wait * 2, RETRY_MAX_SECONDS)
                continue
            self.restarts += 1
            log.warning(
                "embedded PostgreSQL is back: pid %d, %.1f s after it stopped; data dir %s",
                pid,
                time.monotonic() - down_at,
                data_dir,
            )
            return


@contextmanager
def supervised(settings: Settings) -> Iterator[EmbeddedSupervisor | None]:
    """Within the block, the embedded server (already started by `open_database`) is restarted if it dies;
    with a configured server, nothing is done (None)."""
    if settings.database_url is not None:
        yield None
        return
    server = EmbeddedPostgres(
        settings.data_dir, schema=settings.database_schema, pool_size=settings.pool_size
    )
    server.start()  # a handle of this process on the running server, released on exit
    supervisor = EmbeddedSupervisor(server)
    supervisor.start()
    try:
        yield supervisor
    finally:
        supervisor.stop()
        server.stop()

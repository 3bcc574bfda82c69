"""The cyclic garbage collector paused while a bulk import's batch is made and saved.

Why: a batch of orders is thousands of container objects (orders, events, value objects, their dicts) that stay
reachable until the batch is saved, and most of them after (the repository's cache). CPython's collector runs a
young collection every 700 new containers and an older one every tenth of those, and each walks them all again
to find nothing to free: over 25,000 imported orders it collected 35 objects, and took about a fifth of the
import's CPU in process (bench/import_http.py's in-process part under a profile: 297 young, 27 middle and 2 or 3
full collections per 5,000 orders, 63 to 97 us per order). Reference counting frees every acyclic object at
once, paused or not; only cycles wait for the pause to end.

The pause is bounded. It lasts while at least one batch runs, and never past `MAX_PAUSE_SECONDS`: a batch that
starts after that turns the collector on (for every batch under way) and runs with it, so that overlapping
batches from several clients never keep it off for long. A collector the process turned off itself stays off.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

MAX_PAUSE_SECONDS = 2.0
"""The longest the collector stays off for batches that overlap (a batch of 1,000 orders takes a few tenths of a
second of CPU)."""


class CollectorPause:
    """Pauses shared by the threads of a process (`BATCH_PAUSE`): the collector is off while any of them runs."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._running = 0  # batches in the pause
        # When this pause turned the collector off; None: the collector is not off by this pause.
        self._since: float | None = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        joined = self._join()
        try:
            yield
        finally:
            if joined:
                self._leave()

    def _join(self) -> bool:
        with self._lock:
            if self._since is None:
                if not gc.isenabled():
                    return False  # off by the process's own choice: left so
                gc.disable()
                self._since = self._monotonic()
            elif self._monotonic() - self._since >= MAX_PAUSE_SECONDS:
                gc.enable()  # long enough: collect again, and let this batch run with the collector on
                self._since = None
                return False
            self._running += 1
            return True

    def _leave(self) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0 and self._since is not None:
                gc.enable()
                self._since = None


BATCH_PAUSE = CollectorPause()

"""Fewer garbage collections while a bulk batch runs: a projection's catch-up (projections/base.py) or a bulk
import (application/imports.py).

Why: a batch keeps thousands of objects alive until it is written (decoded events and folded rows; an import's
orders, events and value objects), so at Python's threshold of 700 net allocations the cyclic collector ran
again and again, walked them all, through the older generations too, and freed nothing: about a quarter of a
rebuild's CPU, and a sixth of a bulk import's in process (BENCHMARKS.md, issue 17 targets 2 and 3). Both
places use this one switch, so that overlapping batches of either kind share it.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator


class _FewerCollections:
    """See `fewer_collections`: the thresholds to restore, and how many batches use the raised one."""

    # A bulk batch's youngest-generation threshold for the cyclic garbage collector (Python's default: 700).
    THRESHOLD = 100_000

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.saved = gc.get_threshold()

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self.lock:
            if self.users == 0:
                self.saved = gc.get_threshold()
                gc.set_threshold(max(self.THRESHOLD, self.saved[0]), *self.saved[1:])
            self.users += 1
        try:
            yield
        finally:
            with self.lock:
                self.users -= 1
                if self.users == 0:
                    gc.set_threshold(*self.saved)


fewer_collections = _FewerCollections()
"""While a bulk batch (a catch-up, an import) runs, the cyclic garbage collector takes its youngest generation
after `_FewerCollections.THRESHOLD` net allocations instead of Python's 700 (process-wide; restored when the last
batch ends). A catch-up's batch keeps thousands of decoded events and folded rows alive until it is written, so
at 700 the collector ran about every 50 events and walked them again and again, through the older generations
too: about a quarter of a rebuild's CPU in our profiles (BENCHMARKS.md); an import's batch of 500 orders made 15
young, 1 or 2 middle and now and then a full collection. Reference counting still frees what is not in a cycle
at once; only cyclic garbage waits, for at most that many net allocations. While batches overlap without end the
threshold stays raised, and collections still come every `THRESHOLD` net allocations."""

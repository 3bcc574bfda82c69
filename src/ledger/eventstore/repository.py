"""The repository the Ledger loads aggregates with: the library's, without a deep copy for commands."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from eventsourcing.application import Repository


class LedgerRepository(Repository[UUID]):
    """The library's repository, without a deep copy when an aggregate is loaded for a command.

    The library puts every aggregate it reconstructs in its cache and hands out a deep copy, so that a command
    cannot corrupt the cached one; that copy was about 5% of a command's CPU in the server (BENCHMARKS.md),
    for an aggregate no one else holds. Here a cache miss for a caller that may change the aggregate
    (`deepcopy_from_cache=True`, the default) returns the fresh aggregate uncached; the Ledger caches it after
    saving it, as the library's own save does. Read-only callers (`deepcopy_from_cache=False`) and cache hits
    behave exactly as in the library (hits are fast-forwarded from the store and copied)."""

    def get(self, aggregate_id: UUID, **kwargs: Any) -> Any:
        if (
            self.cache is not None
            and kwargs.get("version") is None
            and kwargs.get("deepcopy_from_cache", True)
            and self.deepcopy_from_cache
        ):
            try:
                self.cache.get(aggregate_id)
            except KeyError:
                return self._reconstruct_aggregate(aggregate_id, None, kwargs.get("projector_func", _project))
        return super().get(aggregate_id, **kwargs)


def _project(aggregate: Any, events: Iterable[Any]) -> Any:
    """The library's `project_aggregate` without its per-event isinstance check against a runtime Protocol
    (2% of a command's CPU in the server): every stored event of ours is an aggregate event with `mutate`."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate

"""The dispatcher process's Prometheus metrics: the outbound queue by marketplace operation, read at scrape time.

- `ledger_sync_queue_depth{operation}`: items not yet acknowledged (pending, failed, in flight) whose next call
  is that operation (`amazon.confirmShipment`; `amazon.getFeed` for a feed being polled);
- `ledger_sync_oldest_pending_age_seconds{operation}`: how long the oldest of them has waited since it was made;
- `ledger_sync_dead_items{operation}`: dead items waiting for an operator (retry, or resolve by hand);
- `ledger_sync_metrics_database_up`: 1 if the database answered this scrape.

`ledger dispatch --metrics-port N` (or LEDGER_DISPATCHER_METRICS_PORT) serves them at `/metrics` on
LEDGER_DISPATCHER_METRICS_HOST (default 127.0.0.1); `ledger serve`, whose dispatcher runs in process, adds the
same collector to the service's own `/metrics` (api/observability.py), so both read the queue by one code path.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import psycopg
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg.rows import TupleRow
from psycopg_pool import PoolTimeout

from ledger.integrations.marketplaces import operation_for
from ledger.integrations.outbox import OutboundView

logger = logging.getLogger(__name__)

# A new connection (closed when the `with` ends) or one lent by a pool (given back): either serves a scrape.
Connect = Callable[[], AbstractContextManager[psycopg.Connection[TupleRow]]]
_VIEW = OutboundView()


class QueueCollector(Collector):
    """Reads the queue's backlog when scraped (one query) and names each row by its operation."""

    def __init__(self, connect: Connect) -> None:
        self.connect = connect

    def describe(self) -> Iterator[Metric]:
        """The series' names without reading the queue (a registry that describes on registration asks)."""
        yield from self._families()

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        depth = GaugeMetricFamily(
            "ledger_sync_queue_depth", "Outbound items not yet acknowledged, by the call they make next",
            labels=["operation"],
        )  # fmt: skip
        oldest = GaugeMetricFamily(
            "ledger_sync_oldest_pending_age_seconds",
            "Age of the oldest outbound item not yet acknowledged, by the call it makes next",
            labels=["operation"],
        )
        dead = GaugeMetricFamily(
            "ledger_sync_dead_items", "Dead outbound items waiting for an operator, by operation",
            labels=["operation"],
        )  # fmt: skip
        up = GaugeMetricFamily("ledger_sync_metrics_database_up", "1 if the database answered this scrape")
        return depth, oldest, dead, up

    def collect(self) -> Iterator[Metric]:
        depth, oldest, dead, up = self._families()
        try:
            with self.connect() as conn:
                rows = _VIEW.backlog(conn)
        except (psycopg.Error, OSError, PoolTimeout) as exc:  # the queue not built yet, or the database away
            logger.warning("metrics: cannot read the outbound queue: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        counts: dict[str, int] = defaultdict(int)
        ages: dict[str, float] = defaultdict(float)
        deaths: dict[str, int] = defaultdict(int)
        for row in rows:
            operation = operation_for(row.marketplace, row.action, polling=row.polling)
            counts[operation] += row.unfinished
            deaths[operation] += row.dead
            if row.unfinished:
                ages[operation] = max(ages[operation], row.oldest_seconds)
        for operation in sorted(counts):
            depth.add_metric([operation], counts[operation])
            oldest.add_metric([operation], ages[operation])
            dead.add_metric([operation], deaths[operation])
        up.add_metric([], 1)
        yield from (depth, oldest, dead, up)


def serve_metrics(connect: Connect, port: int, host: str = "127.0.0.1") -> CollectorRegistry:
    """Serve the queue's metrics at http://host:port/metrics from a daemon thread; the registry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(connect))
    start_http_server(port, addr=host, registry=registry)
    return registry

"""Every projection the ledger runs, by name."""

from __future__ import annotations

from ledger.feed.index import FeedProjection
from ledger.integrations.outbound import OutboundProjection
from ledger.projections.all_sales import AllSalesProjection
from ledger.projections.base import Projection
from ledger.projections.exposure import ExposureProjection
from ledger.projections.inventory import InventoryProjection
from ledger.projections.refunds import RefundsProjection


def all_projections() -> list[Projection]:
    return [
        AllSalesProjection(),
        OutboundProjection(),
        RefundsProjection(),
        InventoryProjection(),
        ExposureProjection(),
        FeedProjection(),
    ]


def projection_named(name: str) -> Projection:
    for projection in all_projections():
        if projection.name == name:
            return projection
    known = ", ".join(p.name for p in all_projections())
    raise KeyError(f"no projection {name!r}; known: {known}")

"""A feed item: one order event as `GET /v1/events`, the event stream and webhook deliveries show it.

Decoded from the stored event by the Ledger's own mapper, then shown as the order's history shows it
(`HistoryEntry.of`, with the buyer's fields revealed, `[erased]` once the buyer was forgotten).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import Mapper, Notification

from ledger.aggregates.order import Order
from ledger.application.queries import HistoryEntry
from ledger.eventstore.keys_store import PersonalData
from ledger.feed.index import FeedRow

EVENT_ID_NAMESPACE = uuid.UUID("2f1c6a52-7a52-4c1e-9d0e-6c0f3b1f6e8a")
"""Event ids are uuid5(namespace, "<order id>:<version>"): stable, so receivers dedupe redeliveries by them."""

EVENT_TYPES = frozenset(
    name
    for name, value in vars(Order).items()
    if isinstance(value, type)
    and (issubclass(value, Order.Event) or value is Order.Imported)
    and value not in (Order.Event, Order.Created)  # the bases; the library's `Created` is never recorded
)
"""What `types` may name: the order's event classes."""


class FeedItem(msgspec.Struct, kw_only=True, frozen=True):
    """One event of the seller's change feed."""

    position: int
    """The event's place in the log: pass the last one seen as `after` to resume."""
    event_id: UUID
    type: str
    order_id: UUID
    account_id: UUID
    marketplace: str
    version: int
    recorded_at: datetime
    effective_at: datetime | None
    actor: str
    source: str
    data: dict[str, Any]


_ENCODER = msgspec.json.Encoder()


def event_id(order_id: UUID, version: int) -> UUID:
    return uuid.uuid5(EVENT_ID_NAMESPACE, f"{order_id}:{version}")


def encode(item: FeedItem) -> bytes:
    """The item's JSON: a webhook's body and an event stream's `data:`."""
    return _ENCODER.encode(item)


def items_of(rows: Sequence[FeedRow], mapper: Mapper[UUID], personal_data: PersonalData) -> list[FeedItem]:
    """The rows as feed items, in their order; the buyers of the page's imports are revealed with one key read."""
    events = [
        mapper.to_domain_event(
            Notification(
                id=row.position,
                originator_id=row.order_id,
                originator_version=row.version,
                topic=row.topic,
                state=bytes(row.state),
            )
        )
        for row in rows
    ]
    imports = [e for e in events if isinstance(e, Order.Imported)]
    shown = iter(personal_data.reveal_all([(e.buyer, e.ship_to) for e in imports]))
    items = []
    for row, event in zip(rows, events, strict=True):
        entry = HistoryEntry.of(event)  # type: ignore[arg-type] # the index holds order events only
        if isinstance(event, Order.Imported):
            buyer, ship_to, _ = next(shown)
            entry = entry.showing(buyer, ship_to)
        items.append(
            FeedItem(
                position=row.position,
                event_id=event_id(row.order_id, row.version),
                type=entry.type,
                order_id=row.order_id,
                account_id=row.account_id,
                marketplace=row.marketplace,
                version=entry.version,
                recorded_at=entry.recorded_at,
                effective_at=entry.effective_at,
                actor=entry.actor,
                source=entry.source,
                data=entry.data,
            )
        )
    return items

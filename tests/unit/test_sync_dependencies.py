"""The one dependency rule of the outbound queue (`outbox.waits_for`): which earlier item of an order a later one
waits for, and that nothing waits behind an independent change."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ledger.integrations.outbox import (
    Acknowledge,
    Cancel,
    CloseDispute,
    Line,
    Message,
    Refund,
    RefundLine,
    Ship,
    waits_for,
)

ORDER = "111-0000001"
AT = datetime(2026, 11, 20, tzinfo=UTC)


def lines(*ids: str) -> tuple[Line, ...]:
    return tuple(Line(line_id=i, quantity=1) for i in ids)


def ship(*ids: str) -> Ship:
    return Ship(marketplace_order_id=ORDER, tracking_number="1Z", shipped_at=AT, lines=lines(*ids))


def cancel(*ids: str, dispute: str | None = None) -> Cancel:
    return Cancel(marketplace_order_id=ORDER, dispute_id=dispute, lines=lines(*ids))


def refund(*ids: str) -> Refund:
    refunded = tuple(RefundLine(line_id=i, quantity=1, total=Decimal("5")) for i in ids)
    return Refund(marketplace_order_id=ORDER, currency="USD", total=Decimal("5"), lines=refunded)


ACK = Acknowledge(marketplace_order_id=ORDER, lines=lines("1", "2"))

TABLE: list[tuple[str, Message, Message, bool]] = [
    ("refund after the shipment it refunds", refund("1"), ship("1"), True),
    ("refund of another line's units", refund("2"), ship("1"), False),
    ("refund of the whole order after any shipment", refund(), ship("1"), True),
    ("cancellation after a cancellation of the same line", cancel("1"), cancel("1", "2"), True),
    ("cancellation of another line", cancel("2"), cancel("1"), False),
    ("shipment after a cancellation", ship("1"), cancel("1"), False),
    ("cancellation after a shipment", cancel("1"), ship("1"), False),
    ("shipment after a shipment", ship("1"), ship("1"), False),
    ("refund after a refund", refund("1"), refund("1"), False),
    ("refund after a cancellation", refund("1"), cancel("1"), False),
    ("anything after the acknowledgement", ship("1"), ACK, True),
    ("a cancellation after the acknowledgement", cancel("2"), ACK, True),
    ("closing a dispute after the request that opened it",
     CloseDispute(marketplace_order_id=ORDER, dispute_id="d1"), cancel("1", dispute="d1"), True),
    ("closing a dispute after another dispute's request",
     CloseDispute(marketplace_order_id=ORDER, dispute_id="d2"), cancel("1", dispute="d1"), False),
    ("closing a dispute after a seller's cancellation",
     CloseDispute(marketplace_order_id=ORDER, dispute_id="d1"), cancel("1"), False),
    ("closing a dispute after a shipment", CloseDispute(marketplace_order_id=ORDER, dispute_id="d1"), ship("1"),
     False),
]  # fmt: skip


@pytest.mark.parametrize(("case", "later", "earlier", "waits"), TABLE, ids=[row[0] for row in TABLE])
def test_a_later_item_waits_only_for_what_it_depends_on(
    case: str, later: Message, earlier: Message, waits: bool
) -> None:
    """The table of the dependency rule: each pair of (later, earlier) change of one order."""
    assert waits_for(later, earlier) is waits, case

"""The outbound queue's typed messages: payloads as the current release stores them decode into one Struct per
action, and encode back to the same JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from ledger.integrations import outbox

LINE = {"line_id": "L1", "sku": "SKU-1", "quantity": 2}
# Payloads exactly as `projections/outbound.py` (now `integrations/outbound.py`) wrote them before the messages were typed (one per action).
STORED: dict[str, dict[str, Any]] = {
    "ship": {
        "marketplace_order_id": "MO-1",
        "shipment_id": "7f1c2a52-4e35-5d2b-9a36-0b7b6f0f3c11",
        "carrier": "ups",
        "tracking_number": "1Z999AA10123456784",
        "shipping_class": None,
        "shipped_at": "2026-03-02T09:30:00.123456+00:00",
        "lines": [LINE],
    },
    "cancel": {
        "marketplace_order_id": "MO-1",
        "cancellation_id": "0b7b6f0f-3c11-5d2b-9a36-7f1c2a524e35",
        "dispute_id": None,
        "reason": "out_of_stock",
        "requested_by": "seller",
        "restock": True,
        "lines": [LINE],
    },
    "refund": {
        "marketplace_order_id": "MO-1",
        "refund_id": "9a367f1c-2a52-5e35-8d2b-0b7b6f0f3c11",
        "reason": "damaged",
        "currency": "USD",
        "item_amount": "12.99",
        "tax_amount": "1.04",
        "shipping_amount": "0.00",
        "total": "14.03",
        "lines": [
            {
                **LINE,
                "item_amount": "12.99",
                "tax_amount": "1.04",
                "shipping_amount": "0.00",
                "total": "14.03",
            }
        ],
    },
    "close_dispute": {
        "marketplace_order_id": "MO-1",
        "dispute_id": "2a527f1c-4e35-5d2b-9a36-0b7b6f0f3c11",
        "kind": "claim",
        "marketplace_dispute_id": "EB-9",
        "outcome": "accepted",
    },
    "acknowledge": {"marketplace_order_id": "MO-1", "lines": [LINE]},
}


@pytest.mark.parametrize("action", sorted(STORED))
def test_a_stored_payload_decodes_and_encodes_back_unchanged(action: str) -> None:
    """Each action's stored payload decodes into its own Struct and encodes back to the same JSON."""
    message = outbox.decode(action, STORED[action])
    assert type(message) is outbox.MESSAGES[action]
    assert outbox.payload_of(message) == STORED[action]


def test_decoded_fields_are_typed() -> None:
    """Times become aware datetimes, amounts Decimals, lines Structs: adapters never parse strings."""
    ship = outbox.decode("ship", STORED["ship"])
    refund = outbox.decode("refund", STORED["refund"])
    assert isinstance(ship, outbox.Ship)
    assert isinstance(refund, outbox.Refund)
    assert ship.shipped_at == datetime(2026, 3, 2, 9, 30, 0, 123456, tzinfo=UTC)
    assert ship.lines == (outbox.Line(line_id="L1", sku="SKU-1", quantity=2),)
    assert (refund.total, refund.lines[0].tax_amount) == (Decimal("14.03"), Decimal("1.04"))


def test_unknown_fields_are_ignored() -> None:
    """A payload with a field this release does not know still decodes."""
    message = outbox.decode("acknowledge", {**STORED["acknowledge"], "added_later": 1})
    assert message == outbox.Acknowledge(marketplace_order_id="MO-1", lines=(outbox.Line(**LINE),))

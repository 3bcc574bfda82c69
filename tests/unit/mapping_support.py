"""What the marketplace mapping tests share: the outbound queue's payloads for a real order, and generated
payload lines for the property tests.

Use from a unit test module: `from mapping_support import payload_lines, queue_payloads`.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from hypothesis import strategies as st

from ledger.projections.outbound import Batch


def queue_payloads(shop: Any, order_id: UUID) -> dict[str, dict[str, Any]]:
    """The outbound queue's payload per action for the order's events, as the projection builds them."""
    batch = Batch({}, {})
    for position, event in enumerate(shop.events(order_id), 1):
        batch.fold(position, event)
    return {item.action: item.payload for item in batch.new_items}


def payload_lines(line_ids: st.SearchStrategy[str], most: int) -> st.SearchStrategy[list[dict[str, Any]]]:
    """One to four outbound payload lines: the marketplace's line ids, amounts from 0 to `most`."""
    amounts = st.decimals(min_value=0, max_value=most, places=2, allow_nan=False, allow_infinity=False)
    return st.lists(
        st.fixed_dictionaries(
            {
                "line_id": line_ids,
                "sku": st.text("ABCDEF-0123456789", min_size=1, max_size=12),
                "quantity": st.integers(1, 50),
                "item_amount": amounts.map(str),
                "tax_amount": amounts.map(str),
                "shipping_amount": amounts.map(str),
            }
        ),
        min_size=1,
        max_size=4,
    )

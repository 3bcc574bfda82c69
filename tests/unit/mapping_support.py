"""What the marketplace mapping tests share: the outbound queue's payloads for a real order, and generated
payload lines for the property tests.

Use from a unit test module: `from mapping_support import message, payload_lines, queue_payloads`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from hypothesis import strategies as st

from ledger.integrations import outbox
from ledger.integrations.outbound import Batch
from ledger_sandbox.state import Line, Order


def queue_payloads(shop: Any, order_id: UUID) -> dict[str, dict[str, Any]]:
    """The outbound queue's payload per action for the order's events, as the projection builds them."""
    batch = Batch({}, {}, {})
    for position, event in enumerate(shop.events(order_id), 1):
        batch.fold(position, event)
    return {item.action: outbox.payload_of(item.payload) for item in batch.new_items}


def message(action: str, payload: dict[str, Any]) -> Any:
    """A payload (as the queue stores it, or made up by a test) as the dispatcher hands it to an adapter."""
    return outbox.decode(action, {"marketplace_order_id": "MO-1", **payload})


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


def sandbox_order(marketplace: str, purchased_at: datetime, lines: int = 2) -> Order:
    """An order as a sandbox marketplace holds it (to render it in the marketplace's own shape)."""
    return Order(
        marketplace=marketplace, account="acct-test", order_id="12-00001-00001", purchased_at=purchased_at,
        updated_at=purchased_at, currency="USD", buyer_name="Ada Lovelace", buyer_email="ada@example.com",
        buyer_username="ada_l",
        address={"name": "Ada Lovelace", "line1": "1 Main St", "city": "Seattle", "state": "WA",
                 "postal_code": "98109", "country": "US", "phone": "+12065550100"},
        lines=[Line(str(10001 + n), f"SKU-{n}", "Item", 1, Decimal("9.99"), Decimal(0), Decimal(0))
               for n in range(lines)],
        paid_at=purchased_at,
    )  # fmt: skip

"""`Order.import_order` makes the order and its `Imported` event as the library's `_create` does: the same
event, attribute for attribute and in the same order (so the same hash and stored bytes), and the same order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from ledger.aggregates.chain import GENESIS_HASH, chain_hash
from ledger.aggregates.order import Order, _created
from ledger.aggregates.values import (
    Address,
    Buyer,
    Context,
    ImportedOrder,
    Marketplace,
    OrderLine,
    PaymentStatus,
    Source,
)
from ledger.application.ledger import Ledger

AT = datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=UTC)


def _imported(**changes: Any) -> ImportedOrder:
    values: dict[str, Any] = {
        "marketplace_order_id": "M-1",
        "purchased_at": datetime(2026, 11, 19, 8, 0, tzinfo=timezone(timedelta(hours=2))),
        "currency": "USD",
        "payment_status": PaymentStatus.PENDING,
        "buyer": Buyer("Ann", "ann@example.com"),
        "lines": (
            OrderLine("1", "SKU-1", 2, Decimal("12.50"), Decimal("2.00"), title="Mug"),
            OrderLine("2", "SKU-2", 1, Decimal("5.00"), shipping=Decimal("4.99")),
        ),
    }
    return ImportedOrder(**(values | changes))


CASES = {
    "plain": (Context(actor="a"), _imported(), False),
    "every field": (
        Context(
            actor="b",
            source=Source.IMPORT,
            idempotency_key="k-1",
            effective_at=AT - timedelta(days=1),
            request_digest="d" * 64,
            sync_off=True,
        ),
        _imported(
            payment_status=PaymentStatus.PAID,
            paid_at=AT - timedelta(hours=1),
            ship_by=AT + timedelta(days=2),
            ship_to=Address(name="Ann", line1="1 Main St", city="X", country="US"),
        ),
        True,
    ),
}


def _library_way(ctx: Context, order: ImportedOrder, account: Any, third_party: bool) -> Order:
    """What `import_order` did before: the library's `_create` with the event's fields."""
    return Order._create(
        Order.Imported,
        id=Order.create_id("seller", Marketplace.EBAY.value, order.marketplace_order_id),
        timestamp=AT,
        seller="seller",
        account_id=account,
        marketplace=Marketplace.EBAY.value,
        marketplace_order_id=order.marketplace_order_id,
        purchased_at=order.purchased_at,
        currency=order.currency,
        payment_status=order.payment_status.value,
        buyer=order.buyer,
        lines=order.lines,
        third_party_managed=third_party,
        ship_to=order.ship_to,
        paid_at=order.paid_at,
        ship_by=order.ship_by,
        actor=ctx.actor,
        source=ctx.source.value,
        reason=None,
        effective_at=ctx.effective_at,
        idempotency_key=ctx.idempotency_key,
        request_digest=ctx.request_digest,
        sync_off=ctx.sync_off,
    )


@pytest.mark.parametrize("case", CASES)
def test_import_order_makes_the_library_s_event_and_order(
    case: str, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path's event and order equal the library's, state for state, key order included."""
    ctx, order, third_party = CASES[case]
    account = uuid4()
    expected = _library_way(ctx, order, account, third_party)
    monkeypatch.setattr(Order.Imported, "create_timestamp", staticmethod(lambda: AT))
    made = Order.import_order(
        ctx,
        seller="seller",
        account_id=account,
        marketplace=Marketplace.EBAY,
        order=order,
        third_party_managed=third_party,
    )
    [want], [got] = expected.pending_events, made.pending_events
    assert type(got) is type(want)
    assert list(vars(got).items()) == list(vars(want).items())
    assert got.hash == want.hash == chain_hash(GENESIS_HASH, want)
    assert got == want
    assert ledger.mapper.to_stored_event(got).state == ledger.mapper.to_stored_event(want).state
    assert {k: v for k, v in vars(made).items() if k != "_pending_events"} == {
        k: v for k, v in vars(expected).items() if k != "_pending_events"
    }
    assert list(vars(made)) == list(vars(expected))
    assert made.version == 1
    assert made.created_on == made.modified_on == AT
    assert made.command_keys == expected.command_keys


def test_a_created_order_folds_back_from_its_event() -> None:
    """The event made by the fast path rebuilds the same order through the library's mutate."""
    made = _created(
        Order.create_id("s", "ebay", "M-9"),
        {
            "seller": "s",
            "account_id": uuid4(),
            "marketplace": "ebay",
            "marketplace_order_id": "M-9",
            "purchased_at": AT,
            "currency": "USD",
            "payment_status": "paid",
            "buyer": Buyer("B", "b@example.com"),
            "lines": (OrderLine("1", "S", 1, Decimal("1.00")),),
            "third_party_managed": False,
            "ship_to": None,
            "paid_at": AT,
            "ship_by": None,
            "actor": "x",
            "source": "api",
            "reason": None,
            "effective_at": None,
            "idempotency_key": "key",
            "request_digest": None,
            "sync_off": False,
        },
        AT,
    )
    [event] = made.pending_events
    folded = event.mutate(None)
    assert {k: v for k, v in vars(folded).items() if k != "_pending_events"} == {
        k: v for k, v in vars(made).items() if k != "_pending_events"
    }
    assert folded.command_keys == {"key": [1]}

"""Idempotency keys recorded on events: a retry replays, a different request with the same key is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ledger.aggregates.values import (
    Buyer,
    CancelReason,
    Context,
    ImportedOrder,
    LineQuantity,
    Marketplace,
    OrderLine,
    PaymentStatus,
)
from ledger.application.errors import IdempotencyKeyReusedError
from ledger.application.ledger import Ledger

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _setup() -> tuple[Ledger, object]:
    app = Ledger(clock=lambda: NOW)
    ctx = Context(actor="tester")
    account = app.register_account(ctx, seller="s", marketplace=Marketplace.WALMART, name="main")
    order = ImportedOrder(
        "W-1",
        NOW - timedelta(hours=2),
        "USD",
        PaymentStatus.PAID,
        Buyer("Ann", "ann@example.com"),
        (OrderLine("1", "SKU", 3, Decimal("5.00")),),
    )
    return app, app.import_order(ctx, account.account_id, order).order_id


def test_same_key_same_digest_replays() -> None:
    """A retried request (same key, same digest) returns the first result and records nothing new."""
    app, order_id = _setup()
    ctx = Context(actor="tester", idempotency_key="k", request_digest="d1")
    lines = (LineQuantity("1", 1),)
    first = app.cancel(ctx, order_id, reason=CancelReason.OUT_OF_STOCK, lines=lines)
    again = app.cancel(ctx, order_id, reason=CancelReason.OUT_OF_STOCK, lines=lines)
    assert again.replayed
    assert not first.replayed
    assert (again.version, again.events, again.ids) == (first.version, first.events, first.ids)
    assert app.get_order(order_id).cancelled_units == 1


def test_same_key_other_digest_is_refused() -> None:
    """The same key with a different request fingerprint is refused and records nothing."""
    app, order_id = _setup()
    lines = (LineQuantity("1", 1),)
    app.cancel(
        Context("t", idempotency_key="k", request_digest="d1"),
        order_id,
        reason=CancelReason.OTHER,
        lines=lines,
    )
    with pytest.raises(IdempotencyKeyReusedError):
        app.cancel(
            Context("t", idempotency_key="k", request_digest="d2"),
            order_id,
            reason=CancelReason.OTHER,
            lines=(LineQuantity("1", 2),),
        )
    assert app.get_order(order_id).cancelled_units == 1
    assert app.get_order(order_id).version == 2


def test_a_key_belongs_to_the_seller_across_orders_and_commands() -> None:
    """In memory as on PostgreSQL: a seller's key used on one order is refused on another order and on another
    command, and those record nothing."""
    app, order_id = _setup()
    other_id = app.import_order(
        Context("t"),
        app.list_accounts("s")[0].account_id,
        ImportedOrder(
            "W-2",
            NOW - timedelta(hours=1),
            "USD",
            PaymentStatus.PAID,
            Buyer("Bo", "bo@example.com"),
            (OrderLine("1", "SKU", 3, Decimal("5.00")),),
        ),
    ).order_id
    ctx = Context("t", idempotency_key="k", request_digest="d1")
    app.cancel(ctx, order_id, reason=CancelReason.OTHER, lines=(LineQuantity("1", 1),))

    with pytest.raises(IdempotencyKeyReusedError):
        app.cancel(ctx, other_id, reason=CancelReason.OTHER, lines=(LineQuantity("1", 1),))
    with pytest.raises(IdempotencyKeyReusedError):
        app.open_dispute(ctx, order_id, reason="late")

    assert (app.get_order(order_id).version, app.get_order(other_id).version) == (2, 1)


def test_a_key_without_a_digest_replays_its_command_whatever_its_details() -> None:
    """The ledger's own keys (the importer's facts) carry no digest: a re-delivery replays even if the
    marketplace restamped the fact's time."""
    app, order_id = _setup()
    ctx = Context("importer", idempotency_key="mp:walmart:W-1:dispute-open:D1")
    first = app.open_dispute(ctx, order_id, reason="late", marketplace_dispute_id="D1")
    again = app.open_dispute(ctx, order_id, reason="late (restamped)", marketplace_dispute_id="D1")
    assert again.replayed
    assert (again.version, again.ids) == (first.version, first.ids)
    assert len(app.get_order(order_id).disputes) == 1

"""The audit trail: the per-order hash chain, the history, the order as of a past moment, idempotency keys
and expected versions."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from datetime import timedelta
from decimal import Decimal

import pytest

from ledger.aggregates.chain import GENESIS_HASH, chain_hash
from ledger.aggregates.errors import InvalidInputError, OverShipmentError
from ledger.aggregates.values import (
    CancelReason,
    Context,
    DisputeOutcome,
    LineQuantity,
    Marketplace,
    RefundReason,
    RefundRequestLine,
    Source,
)
from ledger.application.errors import IdempotencyKeyReusedError, OrderNotFoundError, VersionMismatchError


def busy_order(shop):
    """An eBay order with a shipment, a refund, a claim and an accepted cancellation; snapshots per version."""
    order_id = shop.order(Marketplace.EBAY, restock_in_ledger=True)
    snapshots = {1: shop.details(order_id)}
    steps = [
        lambda: shop.ship(order_id, {"A": 2}, ctx=Context(actor="picker", source=Source.BULK)),
        lambda: shop.refund(
            order_id,
            lines=(RefundRequestLine("A", 1),),
            reason=RefundReason.DAMAGED,
            ctx=Context(actor="agent", source=Source.WEB),
        ),
        lambda: shop.ledger.open_dispute(shop.ctx, order_id, reason="late", marketplace_dispute_id="C-7"),
        lambda: shop.cancel(order_id, {"B": 3}, reason=CancelReason.ADDRESS_UNDELIVERABLE),
    ]
    for step in steps:
        result = step()
        snapshots[result.version] = shop.details(order_id)
    dispute_id = next(d.dispute_id for d in shop.details(order_id).disputes if d.kind == "cancellation")
    result = shop.ledger.close_dispute(
        Context(actor="ebay", source=Source.MARKETPLACE),
        order_id,
        dispute_id=dispute_id,
        outcome=DisputeOutcome.ACCEPTED,
    )
    snapshots[result.version] = shop.details(order_id)
    return order_id, snapshots


# ------------------------------------------------------------------------------------------- chain


def test_every_event_links_to_the_hash_of_the_one_before(shop):
    """The first event links to the genesis hash, each later one to the hash of the event before it."""
    order_id, _ = busy_order(shop)
    events = shop.events(order_id)

    assert len(events) >= 8
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
    assert len({event.hash for event in events}) == len(events)


def test_stored_hashes_can_be_recomputed(shop):
    """Each stored event's hash is chain_hash(prev_hash, event), recomputed from the event as stored."""
    order_id, _ = busy_order(shop)

    for event in shop.events(order_id):
        assert len(event.hash) == 64
        assert chain_hash(event.prev_hash, event) == event.hash


@pytest.mark.parametrize(
    ("event_type", "field", "value"),
    [
        ("Shipped", "tracking_number", "1Z999AA10123456792"),
        ("Shipped", "lines", (LineQuantity("A", 1),)),
        ("Shipped", "actor", "someone-else"),
        ("Refunded", "total", Decimal("0.01")),
        ("Refunded", "reason", "goodwill"),
        ("Imported", "marketplace_order_id", "FORGED"),
        ("Imported", "timestamp", None),
        ("Cancelled", "prev_hash", "f" * 64),
    ],
)
def test_altering_a_field_changes_the_hash(shop, event_type, field, value):
    """Changing any field of a recorded event, or the hash it links to, no longer matches its hash."""
    order_id, _ = busy_order(shop)
    event = next(e for e in shop.events(order_id) if type(e).__name__ == event_type)
    altered = copy.copy(event)
    if value is None:  # a time: move it by a second
        value = getattr(event, field) + timedelta(seconds=1)
    object.__setattr__(altered, field, value)

    assert chain_hash(altered.prev_hash, altered) != event.hash
    assert chain_hash(event.prev_hash, event) == event.hash


def test_chains_of_orders_are_independent(shop):
    """Each order's chain starts from the genesis hash, whatever other orders recorded."""
    first = shop.order(Marketplace.WALMART)
    shop.ship(first)
    second = shop.order(Marketplace.WALMART)

    assert shop.events(second)[0].prev_hash == GENESIS_HASH


# ----------------------------------------------------------------------------------------- history


def test_history_lists_every_event_with_who_how_and_why(shop):
    """The history has one entry per event, in order, with actor, source, reason and the chain."""
    order_id, _ = busy_order(shop)
    events = shop.events(order_id)

    history = shop.ledger.order_history(order_id)

    assert [entry.version for entry in history] == list(range(1, len(events) + 1))
    assert [entry.type for entry in history] == [type(e).__name__ for e in events]
    assert [(entry.hash, entry.prev_hash) for entry in history] == [(e.hash, e.prev_hash) for e in events]
    by_type = {entry.type: entry for entry in history}
    assert (by_type["Imported"].actor, by_type["Imported"].source) == (shop.ctx.actor, shop.ctx.source.value)
    assert (by_type["Shipped"].actor, by_type["Shipped"].source) == ("picker", Source.BULK.value)
    refunded = by_type["Refunded"]
    assert (refunded.actor, refunded.source, refunded.reason) == ("agent", Source.WEB.value, "damaged")
    cancelled = by_type["Cancelled"]
    assert (cancelled.actor, cancelled.source, cancelled.reason) == (
        "ebay",
        Source.MARKETPLACE.value,
        CancelReason.ADDRESS_UNDELIVERABLE.value,
    )
    assert [e.reason for e in history if e.type == "DisputeOpened"] == [
        "late",
        CancelReason.ADDRESS_UNDELIVERABLE.value,
    ]


def test_history_entries_carry_the_event_data_without_the_envelope(shop):
    """An entry's data holds the event's own fields, not who, when or the chain."""
    order_id = shop.order(Marketplace.WALMART)
    shipment_id = shop.ship(order_id, {"A": 1}).ids["shipment_id"]

    shipped = shop.ledger.order_history(order_id)[-1]

    assert shipped.data["shipment_id"] == str(shipment_id)
    assert shipped.data["lines"] == [{"line_id": "A", "quantity": 1}]
    assert shipped.data["tracking_number"] == shop.tracking_number
    assert not {"actor", "source", "reason", "hash", "prev_hash", "timestamp"} & shipped.data.keys()


def test_history_of_another_sellers_order_is_not_found(shop):
    """Only the order's seller reads its history."""
    order_id = shop.order(Marketplace.WALMART)

    with pytest.raises(OrderNotFoundError):
        shop.ledger.order_history(order_id, seller="intruder")


# ------------------------------------------------------------------------------------------- as of


def test_order_as_of_a_version_is_the_order_as_it_stood_then(shop):
    """order_as_of(version=n) rebuilds the order exactly as it was after its n-th event."""
    order_id, snapshots = busy_order(shop)

    for version, snapshot in snapshots.items():
        assert shop.ledger.order_as_of(order_id, version=version) == snapshot
    assert shop.ledger.order_as_of(order_id) == shop.details(order_id)


def test_order_as_of_a_time_is_the_order_as_it_stood_then(shop):
    """order_as_of(at=t) rebuilds the order from the events recorded up to t."""
    order_id, snapshots = busy_order(shop)
    recorded = {entry.version: entry.recorded_at for entry in shop.ledger.order_history(order_id)}

    for version, snapshot in snapshots.items():
        assert shop.ledger.order_as_of(order_id, at=recorded[version]) == snapshot
        if version + 1 in recorded and recorded[version + 1] > recorded[version]:
            between = recorded[version] + (recorded[version + 1] - recorded[version]) / 2
            assert shop.ledger.order_as_of(order_id, at=between).version == version


def test_order_as_of_before_it_existed_is_not_found(shop):
    """Before its first event the order did not exist."""
    order_id = shop.order(Marketplace.WALMART)
    created = shop.ledger.order_history(order_id)[0].recorded_at

    with pytest.raises(OrderNotFoundError):
        shop.ledger.order_as_of(order_id, at=created - timedelta(microseconds=1))


@pytest.mark.parametrize("version", [0, -1, 3])
def test_order_as_of_an_impossible_version_is_refused(shop, version):
    """A version outside 1..current is refused."""
    order_id = shop.order(Marketplace.WALMART)
    shop.ship(order_id)

    with pytest.raises(InvalidInputError) as caught:
        shop.ledger.order_as_of(order_id, version=version)

    assert caught.value.field == "version"


def test_order_as_of_a_naive_time_is_refused(shop):
    """A time without a zone is refused."""
    order_id = shop.order(Marketplace.WALMART)

    with pytest.raises(InvalidInputError):
        shop.ledger.order_as_of(order_id, at=shop.clock.now.replace(tzinfo=None))


# ------------------------------------------------------------------------------------- idempotency


def keyed(shop, key):
    return dataclasses.replace(shop.ctx, idempotency_key=key)


COMMANDS = {
    "ship": lambda shop, order_id, ctx: shop.ship(order_id, {"A": 1}, ctx=ctx),
    "cancel": lambda shop, order_id, ctx: shop.cancel(order_id, {"B": 1}, ctx=ctx),
    "refund": lambda shop, order_id, ctx: shop.refund(order_id, lines=(RefundRequestLine("A", 1),), ctx=ctx),
    "open_dispute": lambda shop, order_id, ctx: shop.ledger.open_dispute(ctx, order_id, reason="late"),
    "restock": lambda shop, order_id, ctx: shop.restock(order_id, {"B": 1}, ctx=ctx),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_same_idempotency_key_replays_the_first_result(shop, command):
    """A command repeated with the same idempotency key returns the first result and records nothing new."""
    order_id = shop.order(Marketplace.WALMART)
    shop.ship(order_id, {"A": 1})  # something to refund
    shop.cancel(order_id, {"B": 2})  # something to restock
    ctx = keyed(shop, f"key-{command}")

    first = COMMANDS[command](shop, order_id, ctx)
    count = len(shop.events(order_id))
    again = COMMANDS[command](shop, order_id, ctx)

    assert first.replayed is False
    assert again.replayed is True
    assert (again.version, again.events, again.ids) == (first.version, first.events, first.ids)
    assert len(shop.events(order_id)) == count


def test_replay_wins_even_if_the_repeated_command_differs(shop):
    """The key identifies the command: a repeat with other arguments still replays the first."""
    order_id = shop.order(Marketplace.WALMART)
    ctx = keyed(shop, "ship-1")
    first = shop.ship(order_id, {"A": 1}, ctx=ctx)

    again = shop.ship(order_id, {"B": 3}, ctx=ctx)

    assert again.replayed
    assert again.ids == first.ids
    assert shop.line(order_id, "B").shipped == 0


def test_replay_returns_every_event_of_the_first_command(shop):
    """A command that recorded several events replays all of them."""
    order_id = shop.order(Marketplace.EBAY, restock_in_ledger=True)
    dispute_id = shop.cancel(order_id).ids["dispute_id"]
    ctx = keyed(shop, "close-1")

    first = shop.ledger.close_dispute(ctx, order_id, dispute_id=dispute_id, outcome=DisputeOutcome.ACCEPTED)
    again = shop.ledger.close_dispute(ctx, order_id, dispute_id=dispute_id, outcome=DisputeOutcome.ACCEPTED)

    assert first.events == ("DisputeClosed", "Cancelled", "Restocked")
    assert again.replayed
    assert (again.events, again.ids, again.version) == (first.events, first.ids, first.version)


def test_idempotency_key_is_the_sellers_across_orders(shop):
    """The same key on another order of the seller is refused there and records nothing (API.md, Idempotency)."""
    first_order = shop.order(Marketplace.WALMART)
    second_order = shop.order(Marketplace.WALMART)
    ctx = keyed(shop, "shared")

    shop.ship(first_order, ctx=ctx)
    with pytest.raises(IdempotencyKeyReusedError):
        shop.ship(second_order, ctx=ctx)

    assert shop.details(second_order).shipped_units == 0


def test_failed_command_does_not_use_up_its_key(shop):
    """A command that failed recorded nothing, so the same key can carry the corrected command."""
    order_id = shop.order(Marketplace.WALMART)
    ctx = keyed(shop, "retry")

    with pytest.raises(OverShipmentError):
        shop.ship(order_id, {"A": 5}, ctx=ctx)
    result = shop.ship(order_id, {"A": 2}, ctx=ctx)

    assert not result.replayed
    assert shop.line(order_id, "A").shipped == 2


def test_keys_are_kept_with_the_events(shop):
    """The idempotency key is recorded with the command's events and shown in the history."""
    order_id = shop.order(Marketplace.WALMART)

    shop.ship(order_id, ctx=keyed(shop, "audit-key"))

    assert shop.ledger.order_history(order_id)[-1].idempotency_key == "audit-key"


# -------------------------------------------------------------------------------- expected version


def test_expected_version_mismatch_is_refused(shop):
    """A command that expects another version than the order's is refused and records nothing."""
    order_id = shop.order(Marketplace.WALMART)
    shop.ship(order_id, {"A": 1})

    with pytest.raises(VersionMismatchError):
        shop.ship(order_id, {"A": 1}, expected_version=1)
    with pytest.raises(VersionMismatchError):
        shop.cancel(order_id, {"B": 1}, expected_version=3)

    assert shop.version(order_id) == 2


def test_expected_version_that_matches_runs_the_command(shop):
    """A command whose expected version is the order's runs."""
    order_id = shop.order(Marketplace.WALMART)

    result = shop.ship(order_id, {"A": 1}, expected_version=1)

    assert result.version == 2
    assert shop.line(order_id, "A").shipped == 1


def test_replay_takes_precedence_over_a_stale_expected_version(shop):
    """Repeating a keyed command with the version it expected then replays rather than failing."""
    order_id = shop.order(Marketplace.WALMART)
    ctx = keyed(shop, "once")
    first = shop.ship(order_id, {"A": 1}, ctx=ctx, expected_version=1)

    again = shop.ship(order_id, {"A": 1}, ctx=ctx, expected_version=1)

    assert again.replayed
    assert again.ids == first.ids

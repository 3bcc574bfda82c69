"""Whether a refused change is in effect at the marketplace already (`integrations/in_effect.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

from ledger.aggregates.values import LineQuantity
from ledger.integrations.base import RemoteState
from ledger.integrations.in_effect import cancelled_through, in_effect, may_be_in_effect
from ledger.integrations.outbox import Cancel, Line, Ship


@dataclass(frozen=True)
class Made:
    cancellation_id: UUID
    lines: tuple[LineQuantity, ...]


FIRST, SECOND, LATER = (Made(uuid4(), lines) for lines in (
    (LineQuantity("A", 1),),
    (LineQuantity("A", 1), LineQuantity("B", 2)),
    (LineQuantity("B", 1),),
))  # fmt: skip
MADE = (FIRST, SECOND, LATER)


def remote(**cancelled: int) -> RemoteState:
    return RemoteState("114-1", "canceled", {}, cancelled, "0")


def cancel(made: Made | None, *lines: tuple[str, int], dispute: bool = False) -> Cancel:
    return Cancel(
        marketplace_order_id="114-1",
        cancellation_id=None if made is None else str(made.cancellation_id),
        dispute_id=str(uuid4()) if dispute else None,
        lines=tuple(Line(line_id=line_id, quantity=quantity) for line_id, quantity in lines),
    )


def test_the_ledgers_units_are_counted_up_to_the_cancellation() -> None:
    """Units per line of the cancellation and the ones made before it; later ones are not asked for."""
    assert cancelled_through(MADE, str(FIRST.cancellation_id)) == {"A": 1}
    assert cancelled_through(MADE, str(SECOND.cancellation_id)) == {"A": 2, "B": 2}
    assert cancelled_through(MADE, str(uuid4())) is None


def test_a_cancellation_is_in_effect_when_the_marketplace_holds_its_units_cancelled() -> None:
    """Every line the change names has at least the ledger's cancelled units there (more is fine: the
    buyer cancelled the rest); one unit short on any line is not in effect."""
    change = cancel(SECOND, ("A", 1), ("B", 2))
    assert in_effect(change, MADE, remote(A=2, B=2))
    assert in_effect(change, MADE, remote(A=3, B=5))
    assert not in_effect(change, MADE, remote(A=1, B=2))
    assert not in_effect(change, MADE, remote(A=2))
    assert not in_effect(change, MADE, remote())


def test_only_a_known_cancellation_of_the_seller_can_be_in_effect() -> None:
    """A cancellation request (eBay's dispute), one the order does not have, one without lines, and any other
    action are never taken as in effect."""
    everything = remote(A=9, B=9)
    assert not in_effect(cancel(None, ("A", 1), dispute=True), MADE, everything)
    assert not in_effect(cancel(Made(uuid4(), ()), ("A", 1)), MADE, everything)
    assert not in_effect(cancel(FIRST), MADE, everything)
    ship = Ship(
        marketplace_order_id="114-1",
        shipment_id=str(uuid4()),
        carrier="ups",
        tracking_number="1Z999AA10123456784",
        shipped_at=datetime.now(UTC),
        lines=(Line(line_id="A", quantity=1),),
    )
    assert not in_effect(ship, MADE, everything)


def test_the_refusals_that_may_mean_in_effect_are_the_marketplaces_own() -> None:
    """Amazon's 18041 on a cancellation is asked after; the same code on another action, another code, or a
    marketplace without such a refusal (eBay) is not."""
    assert may_be_in_effect("amazon", "cancel", "18041")
    assert not may_be_in_effect("amazon", "ship", "18041")
    assert not may_be_in_effect("amazon", "cancel", "18028")
    assert not may_be_in_effect("ebay", "cancel", "Not eligible for cancellation")
    assert may_be_in_effect("walmart", "cancel", "INVALID_REQUEST_CONTENT.GMP_ORDER_API")
    assert may_be_in_effect("rakuten", "cancel", "ORDER_EXT_API_UPDATE_ERROR_002")
    assert may_be_in_effect("jet", "cancel", "BadRequest")

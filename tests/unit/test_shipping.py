"""Shipping: what may ship, when, and what a shipment records."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ledger.aggregates.errors import (
    InvalidQuantityError,
    InvalidShipTimeError,
    InvalidTrackingNumberError,
    NothingToShipError,
    OverShipmentError,
    ShipUnpaidOrderError,
    UnknownLineError,
)
from ledger.aggregates.values import Carrier, LineQuantity, Marketplace, OrderStatus

ALL = list(Marketplace)


@pytest.mark.parametrize("marketplace", ALL)
def test_ship_without_lines_ships_every_unit(shop, marketplace):
    """Shipping with no lines ships every unshipped unit, and the order becomes shipped and closed."""
    order_id = shop.order(marketplace)
    before = shop.details(order_id)

    result = shop.ship(order_id)

    after = shop.details(order_id)
    assert result.events == ("Shipped",)
    assert after.shipped_units == before.units
    assert after.status == OrderStatus.SHIPPED
    assert not after.open
    (shipment,) = after.shipments
    assert shipment.shipment_id == result.ids["shipment_id"]
    assert {item.line_id: item.quantity for item in shipment.lines} == {
        line.line_id: line.quantity for line in before.lines
    }


@pytest.mark.parametrize("marketplace", ALL)
def test_partial_shipment_leaves_the_order_open(shop, marketplace):
    """Shipping some units makes the order partially shipped, still open, with the rest shippable."""
    order_id = shop.order(marketplace)

    shop.ship(order_id, {"A": 1})

    details = shop.details(order_id)
    assert details.status == OrderStatus.PARTIALLY_SHIPPED
    assert details.open
    assert shop.line(order_id, "A").shipped == 1
    assert shop.line(order_id, "B").shipped == 0


def test_ship_without_lines_ships_only_what_is_left(shop):
    """After a partial shipment and a partial cancellation, shipping with no lines ships only the rest."""
    order_id = shop.order(Marketplace.WALMART)
    shop.ship(order_id, {"A": 1})
    shop.cancel(order_id, {"B": 1})

    result = shop.ship(order_id)

    shipment = next(s for s in shop.details(order_id).shipments if s.shipment_id == result.ids["shipment_id"])
    assert shipment.lines == (LineQuantity("A", 1), LineQuantity("B", 2))
    details = shop.details(order_id)
    assert details.status == OrderStatus.SHIPPED
    assert not details.open


@pytest.mark.parametrize("marketplace", ALL)
def test_shipping_more_than_is_left_is_an_over_shipment(shop, marketplace):
    """A line cannot ship more units than it has left unshipped; nothing is recorded."""
    order_id = shop.order(marketplace)
    shop.ship(order_id, {"A": 1})
    version = shop.version(order_id)

    with pytest.raises(OverShipmentError):
        shop.ship(order_id, {"A": 2})

    assert shop.version(order_id) == version
    assert shop.line(order_id, "A").shipped == 1


def test_cancelled_units_do_not_ship(shop):
    """Cancelled units are no longer shippable: asking for them is an over-shipment."""
    order_id = shop.order(Marketplace.AMAZON)
    shop.cancel(order_id, {"A": 1})

    with pytest.raises(OverShipmentError):
        shop.ship(order_id, {"A": 2})
    shop.ship(order_id, {"A": 1})

    assert shop.line(order_id, "A").shipped == 1


@pytest.mark.parametrize("marketplace", ALL)
def test_nothing_to_ship_once_everything_shipped(shop, marketplace):
    """Shipping an order whose units all shipped raises NothingToShipError."""
    order_id = shop.order(marketplace)
    shop.ship(order_id)

    with pytest.raises(NothingToShipError):
        shop.ship(order_id)


def test_nothing_to_ship_once_the_rest_is_cancelled(shop):
    """An order whose units are all shipped or cancelled has nothing to ship."""
    order_id = shop.order(Marketplace.RAKUTEN)
    shop.ship(order_id, {"B": 3})
    shop.cancel(order_id, {"A": 2})

    with pytest.raises(NothingToShipError):
        shop.ship(order_id)


def test_fully_cancelled_order_has_nothing_to_ship(shop):
    """A fully cancelled order ships nothing."""
    order_id = shop.order(Marketplace.JET)
    shop.cancel(order_id)

    with pytest.raises(NothingToShipError):
        shop.ship(order_id)


@pytest.mark.parametrize(
    ("lines", "error", "field"),
    [
        ((LineQuantity("Z", 1),), UnknownLineError, "lines[0].line_id"),
        ((LineQuantity("A", 1), LineQuantity("A", 1)), InvalidQuantityError, "lines[1].line_id"),
        ((LineQuantity("A", 0),), InvalidQuantityError, "lines[0].quantity"),
        ((LineQuantity("B", 1), LineQuantity("A", -1)), InvalidQuantityError, "lines[1].quantity"),
    ],
    ids=["unknown-line", "duplicate-line", "zero-quantity", "negative-quantity"],
)
def test_invalid_shipment_lines_are_refused(shop, lines, error, field):
    """Unknown lines, a line listed twice and non-positive quantities are refused, naming the field."""
    order_id = shop.order(Marketplace.WALMART)

    with pytest.raises(error) as caught:
        shop.ledger.ship(
            shop.ctx, order_id, carrier=Carrier.UPS, tracking_number=shop.tracking_number, lines=lines
        )

    assert caught.value.field == field
    assert shop.details(order_id).shipped_units == 0


@pytest.mark.parametrize("marketplace", ALL)
def test_unpaid_order_does_not_ship(shop, marketplace):
    """An order whose payment is pending cannot ship, with or without lines."""
    order_id = shop.order(marketplace, paid=False)

    with pytest.raises(ShipUnpaidOrderError):
        shop.ship(order_id)
    with pytest.raises(ShipUnpaidOrderError):
        shop.ship(order_id, {"A": 1})

    assert shop.details(order_id).shipped_units == 0


@pytest.mark.parametrize("marketplace", ALL)
def test_order_ships_once_payment_is_recorded(shop, marketplace):
    """Recording the payment of a pending order makes it shippable."""
    order_id = shop.order(marketplace, paid=False)

    shop.ledger.record_payment(shop.ctx, order_id, paid_at=shop.clock.now)
    shop.ship(order_id)

    assert shop.details(order_id).status == OrderStatus.SHIPPED


def test_shipment_records_carrier_tracking_class_and_time(shop):
    """A shipment keeps its carrier, its normalized tracking number, its class and its ship time."""
    order_id = shop.order(Marketplace.EBAY)
    shipped_at = shop.clock.now - timedelta(hours=2)

    shop.ship(
        order_id,
        carrier=Carrier.USPS,
        tracking_number=" aa 473 124 829 gb ",
        shipping_class="Priority",
        shipped_at=shipped_at,
    )

    (shipment,) = shop.details(order_id).shipments
    assert shipment.carrier == Carrier.USPS.value
    assert shipment.tracking_number == "AA473124829GB"
    assert shipment.shipping_class == "Priority"
    assert shipment.shipped_at == shipped_at


def test_ship_time_defaults_to_now(shop):
    """Without a ship time, the shipment is dated with the application's clock."""
    order_id = shop.order(Marketplace.WALMART)

    shop.ship(order_id)

    assert shop.details(order_id).shipments[0].shipped_at == shop.clock.now


@pytest.mark.parametrize(
    ("tracking_number", "carrier"),
    [
        ("", Carrier.UPS),
        ("   ", Carrier.FEDEX),
        ("1Z999AA10123456785", Carrier.UPS),
        ("12345", Carrier.USPS),
        ("1234567890123", Carrier.FEDEX),
    ],
    ids=["empty", "blank", "ups-bad-check-digit", "usps-too-short", "fedex-13-digits"],
)
def test_shipment_needs_a_valid_tracking_number(shop, tracking_number, carrier):
    """A missing or malformed tracking number is refused before anything is recorded."""
    order_id = shop.order(Marketplace.AMAZON)
    version = shop.version(order_id)

    with pytest.raises(InvalidTrackingNumberError) as caught:
        shop.ship(order_id, carrier=carrier, tracking_number=tracking_number)

    assert caught.value.field == "tracking_number"
    assert shop.version(order_id) == version


def test_ship_time_before_purchase_is_refused(shop):
    """A shipment dated before the purchase is refused."""
    order_id = shop.order(Marketplace.WALMART)

    with pytest.raises(InvalidShipTimeError) as caught:
        shop.ship(order_id, shipped_at=shop.purchased_at - timedelta(seconds=1))

    assert caught.value.field == "shipped_at"
    assert shop.details(order_id).shipped_units == 0


def test_ship_time_at_purchase_is_allowed(shop):
    """A shipment dated exactly at the purchase time is allowed."""
    order_id = shop.order(Marketplace.WALMART)

    shop.ship(order_id, shipped_at=shop.purchased_at)

    assert shop.details(order_id).shipments[0].shipped_at == shop.purchased_at


@pytest.mark.parametrize(
    "ahead", [timedelta(minutes=1), timedelta(minutes=4, seconds=59), timedelta(minutes=5)]
)
def test_ship_time_within_clock_skew_is_allowed(shop, ahead):
    """A ship time up to five minutes ahead of now is taken as now's clock skew."""
    order_id = shop.order(Marketplace.RAKUTEN)

    shop.ship(order_id, shipped_at=shop.clock.now + ahead)

    assert shop.details(order_id).shipments[0].shipped_at == shop.clock.now + ahead


@pytest.mark.parametrize("ahead", [timedelta(minutes=5, seconds=1), timedelta(hours=1), timedelta(days=3)])
def test_ship_time_in_the_future_is_refused(shop, ahead):
    """A ship time more than five minutes in the future is refused."""
    order_id = shop.order(Marketplace.RAKUTEN)

    with pytest.raises(InvalidShipTimeError) as caught:
        shop.ship(order_id, shipped_at=shop.clock.now + ahead)

    assert caught.value.field == "shipped_at"


def test_ship_time_without_time_zone_is_refused(shop):
    """A naive ship time is refused."""
    order_id = shop.order(Marketplace.JET)

    with pytest.raises(InvalidShipTimeError):
        shop.ship(order_id, shipped_at=shop.clock.now.replace(tzinfo=None))


def test_future_limit_follows_the_clock(shop):
    """'The future' is measured from the application's clock, not the host's."""
    order_id = shop.order(Marketplace.WALMART)
    shipped_at = shop.clock.now + timedelta(hours=1)
    with pytest.raises(InvalidShipTimeError):
        shop.ship(order_id, shipped_at=shipped_at)

    shop.clock.now += timedelta(hours=1)
    shop.ship(order_id, shipped_at=shipped_at)

    assert shop.details(order_id).shipped_units == shop.details(order_id).units


@pytest.mark.parametrize("marketplace", ALL)
def test_shipments_add_up_across_lines(shop, marketplace):
    """Several shipments add up per line until each line is fully shipped."""
    order_id = shop.order(marketplace)

    shop.ship(order_id, {"A": 1, "B": 1})
    shop.ship(order_id, {"B": 2})
    shop.ship(order_id, {"A": 1})

    details = shop.details(order_id)
    assert len(details.shipments) == 3
    assert [line.shipped for line in details.lines] == [line.quantity for line in details.lines]
    assert details.status == OrderStatus.SHIPPED

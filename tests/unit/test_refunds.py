"""Refunds: how much may be given back, on which units, and when each marketplace allows it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ledger.aggregates.errors import (
    InvalidAmountError,
    InvalidQuantityError,
    NothingToShipError,
    OverRefundError,
    OverShipmentError,
    RefundBeforeChargeError,
    RefundUnpaidOrderError,
    RefundUnshippedError,
    UnknownLineError,
    UnknownSyncReferenceError,
)
from ledger.aggregates.values import (
    Marketplace,
    OrderLine,
    OrderStatus,
    RefundReason,
    RefundRequestLine,
    SyncAction,
)

ALL = list(Marketplace)
NOT_EBAY = [m for m in Marketplace if m is not Marketplace.EBAY]
NOT_AMAZON = [m for m in Marketplace if m is not Marketplace.AMAZON]
CENT = Decimal("0.01")


def refund_of(shop, order_id, result):
    """The refund a command made, as the order now shows it."""
    return next(r for r in shop.details(order_id).refunds if r.refund_id == result.ids["refund_id"])


def refund_line(refund, line_id):
    return next(line for line in refund.lines if line.line_id == line_id)


def sold(shop, order_id, line_id):
    """The line as the marketplace sold it."""
    line = shop.line(order_id, line_id)
    return OrderLine(line.line_id, line.sku, line.quantity, line.unit_price, line.tax, line.shipping)


# -------------------------------------------------------------------------- amounts and quantities


@pytest.mark.parametrize("marketplace", ALL)
def test_full_refund_of_a_line_returns_its_item_and_tax(shop, marketplace):
    """Refunding every unit of a line gives back exactly its item total plus its tax, not its shipping."""
    order_id = shop.shipped_order(marketplace)
    line = sold(shop, order_id, "A")

    result = shop.refund(order_id, lines=(RefundRequestLine("A", line.quantity),))

    refund = refund_of(shop, order_id, result)
    (given,) = refund.lines
    assert (given.line_id, given.quantity) == ("A", line.quantity)
    assert given.item_amount == line.item_total
    assert given.tax_amount == line.tax
    assert given.shipping_amount == 0
    assert refund.total == line.item_total + line.tax
    assert shop.details(order_id).refunded_total == refund.total
    assert shop.line(order_id, "A").refunded_quantity == line.quantity


@pytest.mark.parametrize("marketplace", ALL)
def test_unit_by_unit_refunds_split_the_tax_with_the_last_unit_taking_the_remainder(shop, marketplace):
    """Refunding one unit at a time gives each its rounded share of tax; the last takes what is left."""
    order_id = shop.shipped_order(marketplace)
    line = sold(shop, order_id, "B")
    share = (line.tax / line.quantity).quantize(CENT)

    taxes = []
    for _ in range(line.quantity):
        result = shop.refund(order_id, lines=(RefundRequestLine("B", 1),))
        given = refund_line(refund_of(shop, order_id, result), "B")
        assert given.item_amount == line.unit_price
        taxes.append(given.tax_amount)

    assert taxes[:-1] == [share] * (line.quantity - 1)
    assert taxes[-1] == line.tax - share * (line.quantity - 1)
    assert taxes[-1] != share  # this line's tax does not split evenly: the remainder lands on the last unit
    assert sum(taxes) == line.tax
    assert shop.line(order_id, "B").refunded_amount == line.item_total + line.tax


def test_refund_of_most_units_then_the_last_adds_up_to_the_line(shop):
    """Two refunds covering all units of a line give back exactly item total plus tax in all."""
    order_id = shop.shipped_order(Marketplace.WALMART)
    line = sold(shop, order_id, "B")

    first = refund_of(shop, order_id, shop.refund(order_id, lines=(RefundRequestLine("B", 2),)))
    last = refund_of(shop, order_id, shop.refund(order_id, lines=(RefundRequestLine("B", 1),)))

    assert first.lines[0].tax_amount == (line.tax * 2 / 3).quantize(CENT)
    assert first.total + last.total == line.item_total + line.tax


@pytest.mark.parametrize("marketplace", ALL)
def test_whole_order_refund_gives_back_every_shipped_unit(shop, marketplace):
    """A refund without lines gives back every shipped unit with its tax."""
    order_id = shop.shipped_order(marketplace)
    lines = [sold(shop, order_id, line_id) for line_id in ("A", "B")]

    result = shop.refund(order_id)

    refund = refund_of(shop, order_id, result)
    assert {line.line_id: line.quantity for line in refund.lines} == {
        line.line_id: line.quantity for line in lines
    }
    assert refund.total == sum(line.item_total + line.tax for line in lines)


@pytest.mark.parametrize("marketplace", ALL)
@pytest.mark.parametrize("component", ["shipping_amount", "tax_amount"])
def test_an_amount_without_lines_refunds_only_that_amount(shop, marketplace, component):
    """A shipping or tax amount with no lines gives back only that amount: no unit, no item money."""
    order_id = shop.shipped_order(marketplace)

    result = shop.refund(order_id, **{component: Decimal("1.00")})

    refund = refund_of(shop, order_id, result)
    assert refund.total == Decimal("1.00")
    assert sum(line.quantity for line in refund.lines) == 0
    assert sum(line.item_amount for line in refund.lines) == 0
    assert sum(getattr(line, component) for line in refund.lines) == Decimal("1.00")
    assert all(line.refunded_quantity == 0 for line in shop.details(order_id).lines)


def test_shipping_and_tax_without_lines_refund_both_and_nothing_else(shop):
    """Shipping and tax together with no lines give back exactly their sum."""
    order_id = shop.shipped_order(Marketplace.WALMART)

    result = shop.refund(order_id, shipping_amount=Decimal("1.00"), tax_amount=Decimal("0.50"))

    refund = refund_of(shop, order_id, result)
    assert refund.total == Decimal("1.50")
    assert sum(line.quantity for line in refund.lines) == 0


def test_an_empty_list_of_lines_is_refused(shop):
    """`lines: []` names nothing: it is refused rather than read as the whole order, with or without amounts."""
    order_id = shop.shipped_order(Marketplace.RAKUTEN)

    with pytest.raises(InvalidQuantityError) as caught:
        shop.refund(order_id, lines=(), shipping_amount=Decimal("1.00"))
    with pytest.raises(InvalidQuantityError):
        shop.refund(order_id, lines=())

    assert caught.value.field == "lines"
    assert shop.details(order_id).refunds == ()


@pytest.mark.parametrize("marketplace", ALL)
def test_refunding_more_units_than_are_left_is_an_over_refund(shop, marketplace):
    """Units already refunded count: a line cannot be refunded past its shipped units."""
    order_id = shop.shipped_order(marketplace)
    shop.refund(order_id, lines=(RefundRequestLine("A", 2),))
    version = shop.version(order_id)

    with pytest.raises(OverRefundError):
        shop.refund(order_id, lines=(RefundRequestLine("A", 1),))
    with pytest.raises(OverRefundError):
        shop.refund(order_id, lines=(RefundRequestLine("A", 0, Decimal("0.01")),))

    assert shop.version(order_id) == version


def test_refunding_more_units_than_ordered_is_an_over_refund(shop):
    """A line cannot be refunded for more units than it has."""
    order_id = shop.shipped_order(Marketplace.RAKUTEN)

    with pytest.raises(OverRefundError):
        shop.refund(order_id, lines=(RefundRequestLine("A", 3),))


def test_money_only_adjustment_gives_back_an_amount_without_units(shop):
    """A refund of quantity 0 with an amount gives back that amount on the line and no units, no tax."""
    order_id = shop.shipped_order(Marketplace.WALMART)

    result = shop.refund(
        order_id, lines=(RefundRequestLine("A", 0, Decimal("2.50")),), reason=RefundReason.GOODWILL
    )

    refund = refund_of(shop, order_id, result)
    (given,) = refund.lines
    assert (given.quantity, given.item_amount, given.tax_amount, given.shipping_amount) == (
        0,
        Decimal("2.50"),
        0,
        0,
    )
    assert refund.reason == RefundReason.GOODWILL.value
    line = shop.line(order_id, "A")
    assert (line.refunded_quantity, line.refunded_amount) == (0, Decimal("2.50"))


@pytest.mark.parametrize("marketplace", ALL)
def test_adjustments_count_against_what_is_left_of_the_line(shop, marketplace):
    """Earlier money-only refunds count: the item amount given back never exceeds the line's item total."""
    order_id = shop.shipped_order(marketplace)
    line = sold(shop, order_id, "A")
    first = line.item_total - line.unit_price + CENT  # leaves less than one unit's price

    shop.refund(order_id, lines=(RefundRequestLine("A", 0, first),))
    with pytest.raises(OverRefundError):
        shop.refund(order_id, lines=(RefundRequestLine("A", 1),))
    shop.refund(order_id, lines=(RefundRequestLine("A", 0, line.unit_price - CENT),))
    with pytest.raises(OverRefundError):
        shop.refund(order_id, lines=(RefundRequestLine("A", 0, CENT),))

    assert shop.line(order_id, "A").refunded_amount == line.item_total


def test_adjustment_larger_than_the_line_is_an_over_refund(shop):
    """A money-only refund above the line's item total is refused."""
    order_id = shop.shipped_order(Marketplace.JET)
    line = sold(shop, order_id, "A")

    with pytest.raises(OverRefundError):
        shop.refund(order_id, lines=(RefundRequestLine("A", 0, line.item_total + CENT),))


# ------------------------------------------------------------------------- order-level amounts


def test_order_level_shipping_is_spread_over_the_lines_in_order(shop):
    """An order-level shipping refund fills each line's shipping in turn, up to what it was charged."""
    order_id = shop.shipped_order(Marketplace.WALMART)
    a, b = sold(shop, order_id, "A"), sold(shop, order_id, "B")
    amount = a.shipping + b.shipping / 2

    result = shop.refund(order_id, shipping_amount=amount)

    refund = refund_of(shop, order_id, result)
    assert [(r.line_id, r.quantity, r.item_amount, r.shipping_amount) for r in refund.lines] == [
        ("A", 0, 0, a.shipping),
        ("B", 0, 0, b.shipping / 2),
    ]
    assert refund.total == amount


def test_order_level_shipping_counts_earlier_refunds(shop):
    """Shipping refunded before counts: more than is left is an over-refund."""
    order_id = shop.shipped_order(Marketplace.RAKUTEN)
    a, b = sold(shop, order_id, "A"), sold(shop, order_id, "B")
    shop.refund(order_id, shipping_amount=a.shipping)

    with pytest.raises(OverRefundError):
        shop.refund(order_id, shipping_amount=b.shipping + CENT)
    shop.refund(order_id, shipping_amount=b.shipping)

    assert shop.details(order_id).refunded_total == a.shipping + b.shipping


def test_order_level_shipping_above_the_order_is_an_over_refund(shop):
    """An order-level shipping refund above the order's shipping charges is refused."""
    order_id = shop.shipped_order(Marketplace.EBAY)
    total = sold(shop, order_id, "A").shipping + sold(shop, order_id, "B").shipping

    with pytest.raises(OverRefundError):
        shop.refund(order_id, shipping_amount=total + CENT)


def test_order_level_shipping_joins_a_unit_refund(shop):
    """A unit refund with an order-level shipping amount gives both back on one refund line."""
    order_id = shop.shipped_order(Marketplace.WALMART)
    a = sold(shop, order_id, "A")

    result = shop.refund(order_id, lines=(RefundRequestLine("A", 1),), shipping_amount=Decimal("1.00"))

    (given,) = refund_of(shop, order_id, result).lines
    assert (given.quantity, given.item_amount, given.shipping_amount) == (1, a.unit_price, Decimal("1.00"))
    assert given.tax_amount == (a.tax / a.quantity).quantize(CENT)


def test_order_level_tax_goes_where_tax_is_left(shop):
    """An order-level tax refund skips lines whose tax was already given back."""
    order_id = shop.shipped_order(Marketplace.JET)
    a, b = sold(shop, order_id, "A"), sold(shop, order_id, "B")

    result = shop.refund(order_id, lines=(RefundRequestLine("A", a.quantity),), tax_amount=b.tax)

    refund = refund_of(shop, order_id, result)
    assert refund_line(refund, "A").tax_amount == a.tax
    assert refund_line(refund, "B").tax_amount == b.tax
    assert refund_line(refund, "B").quantity == 0
    with pytest.raises(OverRefundError):
        shop.refund(order_id, tax_amount=CENT)


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lines": (RefundRequestLine("A", 0, Decimal("-1.00")),)}, "lines[0].amount"),
        ({"lines": (RefundRequestLine("A", 0, Decimal("1.001")),)}, "lines[0].amount"),
        ({"shipping_amount": Decimal("-1")}, "shipping_amount"),
        ({"shipping_amount": Decimal("0.005")}, "shipping_amount"),
        ({"tax_amount": Decimal("-0.01")}, "tax_amount"),
    ],
    ids=["negative", "too-precise", "negative-shipping", "too-precise-shipping", "negative-tax"],
)
def test_invalid_amounts_are_refused(shop, kwargs, field):
    """Negative amounts and amounts finer than the currency's minor unit are refused, naming the field."""
    order_id = shop.shipped_order(Marketplace.WALMART)

    with pytest.raises(InvalidAmountError) as caught:
        shop.refund(order_id, **kwargs)

    assert caught.value.field == field
    assert shop.details(order_id).refunds == ()


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ((RefundRequestLine("Z", 1),), UnknownLineError),
        ((RefundRequestLine("A", 1), RefundRequestLine("A", 1)), InvalidQuantityError),
        ((RefundRequestLine("A", 0),), InvalidQuantityError),
        ((RefundRequestLine("A", -1),), InvalidQuantityError),
    ],
    ids=["unknown-line", "duplicate-line", "nothing-asked", "negative-quantity"],
)
def test_invalid_refund_lines_are_refused(shop, lines, error):
    """Unknown lines, a line listed twice, and lines asking for nothing or negative units are refused."""
    order_id = shop.shipped_order(Marketplace.RAKUTEN)

    with pytest.raises(error):
        shop.refund(order_id, lines=lines)

    assert shop.details(order_id).refunds == ()


# --------------------------------------------------------------------------- payment and shipment


@pytest.mark.parametrize("marketplace", ALL)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"lines": (RefundRequestLine("A", 1),)},
        {"lines": (RefundRequestLine("A", 0, Decimal("1.00")),)},
        {"shipping_amount": Decimal("1.00")},
    ],
    ids=["whole", "unit", "adjustment", "shipping"],
)
def test_unpaid_order_cannot_be_refunded(shop, marketplace, kwargs):
    """Nothing can be refunded on an order that is not paid."""
    order_id = shop.order(marketplace, paid=False)

    with pytest.raises(RefundUnpaidOrderError):
        shop.refund(order_id, **kwargs)

    assert shop.details(order_id).refunds == ()


@pytest.mark.parametrize("marketplace", NOT_EBAY)
@pytest.mark.parametrize(
    "line",
    [RefundRequestLine("A", 1), RefundRequestLine("A", 2), RefundRequestLine("A", 0, Decimal("1.00"))],
    ids=["unit", "line", "adjustment"],
)
def test_unshipped_units_cannot_be_refunded(shop, marketplace, line):
    """Outside eBay, units that have not shipped can only be cancelled, not refunded."""
    order_id = shop.order(marketplace)

    with pytest.raises(RefundUnshippedError):
        shop.refund(order_id, lines=(line,))

    assert shop.details(order_id).refunds == ()


@pytest.mark.parametrize("marketplace", NOT_EBAY)
def test_only_the_shipped_units_of_a_line_can_be_refunded(shop, marketplace):
    """On a partly shipped line, refunding past the shipped units is refused; the shipped ones refund."""
    order_id = shop.order(marketplace)
    shipment = shop.ship(order_id, {"A": 1})
    shop.acknowledge(order_id, shipment.ids["shipment_id"])

    with pytest.raises(RefundUnshippedError):
        shop.refund(order_id, lines=(RefundRequestLine("A", 2),))
    shop.refund(order_id, lines=(RefundRequestLine("A", 1),))

    assert shop.line(order_id, "A").refunded_quantity == 1


# ------------------------------------------------------------------------------------------ eBay


def test_ebay_refunds_paid_units_before_they_ship(shop):
    """eBay refunds a paid order's unshipped units; they never ship, and the order closes without them."""
    order_id = shop.order(Marketplace.EBAY)
    a = sold(shop, order_id, "A")

    result = shop.refund(order_id, lines=(RefundRequestLine("A", a.quantity),))

    assert refund_of(shop, order_id, result).total == a.item_total + a.tax
    with pytest.raises(OverShipmentError):
        shop.ship(order_id, {"A": 1})
    assert shop.details(order_id).open
    shipped = shop.ship(order_id)
    shipment = next(
        s for s in shop.details(order_id).shipments if s.shipment_id == shipped.ids["shipment_id"]
    )
    assert [item.line_id for item in shipment.lines] == ["B"]
    details = shop.details(order_id)
    assert not details.open
    assert shop.line(order_id, "A").shipped == 0


def test_ebay_whole_refund_of_an_unshipped_order_closes_it(shop):
    """A whole refund of a paid, unshipped eBay order refunds every unit and leaves nothing to ship."""
    order_id = shop.order(Marketplace.EBAY)
    lines = [sold(shop, order_id, line_id) for line_id in ("A", "B")]

    result = shop.refund(order_id)

    assert refund_of(shop, order_id, result).total == sum(line.item_total + line.tax for line in lines)
    assert not shop.details(order_id).open
    with pytest.raises(NothingToShipError):
        shop.ship(order_id)


def test_ebay_refund_of_shipped_and_unshipped_units_together(shop):
    """On eBay one refund may cover a line's shipped unit and its unshipped one."""
    order_id = shop.order(Marketplace.EBAY)
    shop.ship(order_id, {"A": 1, "B": 3})

    shop.refund(order_id, lines=(RefundRequestLine("A", 2),))

    details = shop.details(order_id)
    assert shop.line(order_id, "A").refunded_quantity == 2
    assert not details.open
    assert details.status == OrderStatus.SHIPPED


def test_ebay_refund_of_unshipped_units_needs_payment(shop):
    """An unpaid eBay order's units cannot be refunded before they ship."""
    order_id = shop.order(Marketplace.EBAY, paid=False)

    with pytest.raises(RefundUnpaidOrderError):
        shop.refund(order_id, lines=(RefundRequestLine("A", 1),))


# ---------------------------------------------------------------------------------------- Amazon


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lines": (RefundRequestLine("A", 1),)},
        {"lines": (RefundRequestLine("A", 0, Decimal("1.00")),)},
        {"lines": (RefundRequestLine("A", 2), RefundRequestLine("B", 3))},
    ],
    ids=["unit", "adjustment", "every-unit"],
)
def test_amazon_refunds_only_after_the_shipment_is_acknowledged(shop, kwargs):
    """Amazon charges the buyer on the shipment confirmation: refunds wait for its acknowledgement."""
    order_id = shop.order(Marketplace.AMAZON)
    shipment = shop.ship(order_id)

    with pytest.raises(RefundBeforeChargeError):
        shop.refund(order_id, **kwargs)
    assert shop.details(order_id).refunds == ()

    shop.acknowledge(order_id, shipment.ids["shipment_id"])
    result = shop.refund(order_id, **kwargs)
    assert refund_of(shop, order_id, result).total > 0


def test_amazon_whole_refund_before_acknowledgement_is_a_refund_before_charge(shop):
    """A whole-order Amazon refund before the shipment is acknowledged is refused as before the charge."""
    order_id = shop.order(Marketplace.AMAZON)
    shop.ship(order_id)

    with pytest.raises(RefundBeforeChargeError):
        shop.refund(order_id)

    assert shop.details(order_id).refunds == ()


@pytest.mark.parametrize("component", ["shipping_amount", "tax_amount"])
def test_amazon_order_level_refund_before_acknowledgement_is_a_refund_before_charge(shop, component):
    """An order-level shipping or tax refund on Amazon before the acknowledgement gives back money never charged."""
    order_id = shop.order(Marketplace.AMAZON)
    shop.ship(order_id)

    with pytest.raises(RefundBeforeChargeError):
        shop.refund(order_id, **{component: Decimal("1.00")})

    assert shop.details(order_id).refunds == ()


def test_amazon_acknowledgement_covers_only_its_own_shipment(shop):
    """Only units of acknowledged shipments can be refunded on Amazon."""
    order_id = shop.order(Marketplace.AMAZON)
    first = shop.ship(order_id, {"A": 1}).ids["shipment_id"]
    second = shop.ship(order_id, {"A": 1}).ids["shipment_id"]
    shop.acknowledge(order_id, first)

    shop.refund(order_id, lines=(RefundRequestLine("A", 1),))
    with pytest.raises(RefundBeforeChargeError):
        shop.refund(order_id, lines=(RefundRequestLine("A", 1),))

    shop.acknowledge(order_id, second)
    shop.refund(order_id, lines=(RefundRequestLine("A", 1),))
    assert shop.line(order_id, "A").refunded_quantity == 2


def test_amazon_rejected_shipment_does_not_allow_refunds(shop):
    """A shipment confirmation the marketplace rejected does not make its units refundable."""
    order_id = shop.order(Marketplace.AMAZON)
    shipment_id = shop.ship(order_id).ids["shipment_id"]
    shop.ledger.record_sync_outcome(
        shop.ctx,
        order_id,
        action=SyncAction.SHIP,
        reference=str(shipment_id),
        accepted=False,
        error_code="InvalidTracking",
        message="carrier unknown",
    )

    with pytest.raises(RefundBeforeChargeError):
        shop.refund(order_id, lines=(RefundRequestLine("A", 1),))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"lines": (RefundRequestLine("A", 1),)}, {"lines": (RefundRequestLine("A", 0, Decimal("1.00")),)}],
    ids=["whole", "unit", "adjustment"],
)
def test_third_party_managed_amazon_order_refunds_right_after_shipping(shop, kwargs):
    """A Third Party Managed Amazon order can be refunded as soon as it ships, with no acknowledgement."""
    order_id = shop.order(Marketplace.AMAZON, fulfillment_managed=False)
    shop.ship(order_id)

    result = shop.refund(order_id, **kwargs)

    assert shop.details(order_id).third_party_managed
    assert refund_of(shop, order_id, result).total > 0


@pytest.mark.parametrize("marketplace", NOT_AMAZON)
def test_other_marketplaces_refund_right_after_shipping(shop, marketplace):
    """Outside Amazon, shipped units can be refunded without waiting for any acknowledgement."""
    order_id = shop.order(marketplace)
    shop.ship(order_id)

    shop.refund(order_id, lines=(RefundRequestLine("A", 1),))

    assert shop.line(order_id, "A").refunded_quantity == 1


def test_acknowledging_an_unknown_shipment_is_refused(shop):
    """An acknowledgement must name a shipment of the order."""
    order_id = shop.order(Marketplace.AMAZON)
    shop.ship(order_id)

    with pytest.raises(UnknownSyncReferenceError):
        shop.acknowledge(order_id, order_id)


def test_acknowledging_twice_records_once(shop):
    """The same acknowledgement recorded twice changes nothing the second time."""
    order_id = shop.order(Marketplace.AMAZON)
    shipment_id = shop.ship(order_id).ids["shipment_id"]
    shop.acknowledge(order_id, shipment_id)
    version = shop.version(order_id)

    result = shop.acknowledge(order_id, shipment_id)

    assert result.events == ()
    assert shop.version(order_id) == version
    assert shop.details(order_id).shipments[0].confirmed


# ------------------------------------------------------------------------------------ what stays


@pytest.mark.parametrize("marketplace", ALL)
def test_refund_keeps_the_order_shipped_and_closed(shop, marketplace):
    """Refunding a shipped order changes its money, not its fulfilment status."""
    order_id = shop.shipped_order(marketplace)

    shop.refund(order_id, reason=RefundReason.DAMAGED)

    details = shop.details(order_id)
    assert details.status == OrderStatus.SHIPPED
    assert not details.open
    assert details.refunds[0].reason == RefundReason.DAMAGED.value
    assert details.refunded_total == sum(line.refunded_amount for line in details.lines)

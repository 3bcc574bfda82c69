"""Importing orders (once and only once) and the seller's marketplace accounts."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal

import pytest

from ledger.aggregates.chain import GENESIS_HASH, chain_hash
from ledger.aggregates.errors import ImportConflictError, InvalidInputError, InvalidOrderError
from ledger.aggregates.order import Order
from ledger.aggregates.values import (
    Address,
    Buyer,
    Context,
    Marketplace,
    OrderLine,
    OrderStatus,
    PaymentStatus,
    RefundRequestLine,
    Source,
)
from ledger.application.errors import AccountNameTakenError, AccountNotFoundError, OrderNotFoundError

ALL = list(Marketplace)
LINE = OrderLine("A", "SKU-A", 1, Decimal("10.00"))


# ------------------------------------------------------------------------------------------ import


@pytest.mark.parametrize("marketplace", ALL)
def test_import_creates_the_order_as_the_marketplace_sent_it(shop, marketplace):
    """A first import records one Imported event and the order as the marketplace describes it."""
    account_id = shop.account(marketplace)
    order = shop.imported("M-1", ship_to=Address(name="Ada", city="Paris", country="FR"))

    result = shop.ledger.import_order(shop.ctx, account_id, order)

    assert (result.created, result.version, result.events) == (True, 1, ("Imported",))
    assert result.order_id == Order.create_id(shop.seller, marketplace.value, "M-1")
    details = shop.details(result.order_id)
    assert details.account_id == account_id
    assert (details.marketplace, details.marketplace_order_id) == (marketplace.value, "M-1")
    assert (details.purchased_at, details.currency, details.buyer, details.ship_to) == (
        order.purchased_at,
        order.currency,
        order.buyer,
        order.ship_to,
    )
    assert details.total == sum(line.total for line in order.lines)
    assert details.units == sum(line.quantity for line in order.lines)
    assert details.payment_status == PaymentStatus.PAID.value
    assert details.paid_at == order.paid_at
    assert details.status == OrderStatus.UNSHIPPED
    assert details.open
    assert details.third_party_managed is False
    assert shop.ledger.find_order(shop.seller, marketplace, "M-1") == details


@pytest.mark.parametrize("marketplace", ALL)
@pytest.mark.parametrize("paid", [True, False], ids=["paid", "pending"])
def test_importing_the_same_order_again_records_nothing(shop, marketplace, paid):
    """Re-importing an identical order is a no-op: no event, created False, same version."""
    account_id = shop.account(marketplace)
    order = shop.imported("M-1", paid=paid)
    first = shop.ledger.import_order(shop.ctx, account_id, order)

    again = shop.ledger.import_order(shop.ctx, account_id, order)

    assert (again.order_id, again.created, again.events, again.version) == (first.order_id, False, (), 1)
    assert shop.event_types(first.order_id) == ["Imported"]


def test_reimport_after_changes_in_the_ledger_records_nothing(shop):
    """A re-sent order is compared with the import, not with what the ledger did to the order since."""
    account_id = shop.account(Marketplace.WALMART)
    order = shop.imported("M-1")
    order_id = shop.ledger.import_order(shop.ctx, account_id, order).order_id
    shop.ship(order_id, {"A": 1})

    again = shop.ledger.import_order(shop.ctx, account_id, order)

    assert (again.created, again.events, again.version) == (False, (), 2)


@pytest.mark.parametrize("marketplace", ALL)
def test_pending_order_sent_again_as_paid_records_the_payment(shop, marketplace):
    """A pending order re-sent as paid records PaymentCleared with the marketplace's payment time."""
    account_id = shop.account(marketplace)
    pending = shop.imported("M-1", paid=False)
    order_id = shop.ledger.import_order(shop.ctx, account_id, pending).order_id
    paid_at = shop.purchased_at + timedelta(hours=3)
    paid = dataclasses.replace(pending, payment_status=PaymentStatus.PAID, paid_at=paid_at)

    result = shop.ledger.import_order(shop.ctx, account_id, paid)

    assert (result.created, result.events, result.version) == (False, ("PaymentCleared",), 2)
    details = shop.details(order_id)
    assert (details.payment_status, details.paid_at) == (PaymentStatus.PAID.value, paid_at)
    again = shop.ledger.import_order(shop.ctx, account_id, paid)
    assert again.events == ()


def test_payment_without_a_time_is_dated_by_the_context_or_the_clock(shop):
    """A payment the marketplace reports without a time takes the context's effective time, else now."""
    account_id = shop.account(Marketplace.EBAY)
    first = shop.imported("M-1", paid=False)
    second = shop.imported("M-2", paid=False)
    for order in (first, second):
        shop.ledger.import_order(shop.ctx, account_id, order)
    reported_at = shop.purchased_at + timedelta(hours=5)

    shop.ledger.import_order(
        dataclasses.replace(shop.ctx, effective_at=reported_at),
        account_id,
        dataclasses.replace(first, payment_status=PaymentStatus.PAID),
    )
    shop.ledger.import_order(
        shop.ctx, account_id, dataclasses.replace(second, payment_status=PaymentStatus.PAID)
    )

    assert shop.ledger.find_order(shop.seller, Marketplace.EBAY, "M-1").paid_at == reported_at
    assert shop.ledger.find_order(shop.seller, Marketplace.EBAY, "M-2").paid_at == shop.clock.now


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"purchased_at": timedelta(minutes=1)}, ["purchased_at"]),
        ({"currency": "EUR"}, ["currency"]),
        ({"buyer": Buyer("Bob", "bob@example.com")}, ["buyer"]),
        ({"lines": (LINE,)}, ["lines"]),
        ({"ship_to": Address(name="Elsewhere")}, ["ship_to"]),
        ({"currency": "EUR", "buyer": Buyer("Bob", "bob@example.com")}, ["currency", "buyer"]),
    ],
    ids=["purchased_at", "currency", "buyer", "lines", "ship_to", "two-fields"],
)
def test_contradicting_reimport_is_a_conflict_naming_the_fields(shop, changes, fields):
    """A re-sent order that differs in anything but its payment raises ImportConflictError naming the fields."""
    account_id = shop.account(Marketplace.AMAZON)
    order = shop.imported("M-1")
    order_id = shop.ledger.import_order(shop.ctx, account_id, order).order_id
    if "purchased_at" in changes:
        changes = {"purchased_at": order.purchased_at + changes["purchased_at"]}
    changed = dataclasses.replace(order, **changes)

    with pytest.raises(ImportConflictError) as caught:
        shop.ledger.import_order(shop.ctx, account_id, changed)

    for field in fields:
        assert field in caught.value.message
    others = {"purchased_at", "currency", "buyer", "lines", "ship_to"} - set(fields)
    assert not any(other in caught.value.message for other in others)
    assert shop.event_types(order_id) == ["Imported"]


def test_reimport_into_another_account_is_a_conflict(shop):
    """The same marketplace order sent through another account of the seller is a conflict on account_id."""
    first = shop.account(Marketplace.WALMART)
    second = shop.account(Marketplace.WALMART, restock_in_ledger=True)
    order = shop.imported("M-1")
    shop.ledger.import_order(shop.ctx, first, order)

    with pytest.raises(ImportConflictError) as caught:
        shop.ledger.import_order(shop.ctx, second, order)

    assert "account_id" in caught.value.message


def test_same_marketplace_order_id_elsewhere_is_another_order(shop):
    """Orders are one per seller, marketplace and marketplace order id."""
    ids = {
        shop.ledger.import_order(
            shop.ctx, shop.account(marketplace, seller=seller), shop.imported("M-1")
        ).order_id
        for marketplace in (Marketplace.AMAZON, Marketplace.EBAY)
        for seller in ("seller-1", "seller-2")
    }

    assert len(ids) == 4


def _invalid(order, change):
    return dataclasses.replace(order, **change(order))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda o: {"lines": ()}, "lines"),
        (lambda o: {"currency": "usd"}, "currency"),
        (lambda o: {"currency": "US"}, "currency"),
        (lambda o: {"currency": "DOLLARS"}, "currency"),
        (lambda o: {"purchased_at": o.purchased_at.replace(tzinfo=None)}, "purchased_at"),
        (lambda o: {"paid_at": o.purchased_at.replace(tzinfo=None)}, "paid_at"),
        (lambda o: {"marketplace_order_id": "  "}, "marketplace_order_id"),
        (lambda o: {"marketplace_order_id": "M" * 101}, "marketplace_order_id"),
        (
            lambda o: {"lines": (dataclasses.replace(LINE, unit_price=Decimal("-1.00")),)},
            "lines[0].unit_price",
        ),
        (
            lambda o: {"lines": (dataclasses.replace(LINE, unit_price=Decimal("1.001")),)},
            "lines[0].unit_price",
        ),
        (lambda o: {"lines": (dataclasses.replace(LINE, tax=Decimal("-0.01")),)}, "lines[0].tax"),
        (lambda o: {"lines": (dataclasses.replace(LINE, shipping=Decimal("0.125")),)}, "lines[0].shipping"),
        (lambda o: {"lines": (dataclasses.replace(LINE, unit_price=Decimal("NaN")),)}, "lines[0].unit_price"),
        (lambda o: {"lines": (LINE, dataclasses.replace(LINE, sku="OTHER"))}, "lines[1].line_id"),
        (lambda o: {"lines": (dataclasses.replace(LINE, line_id=""),)}, "lines[0].line_id"),
        (lambda o: {"lines": (dataclasses.replace(LINE, quantity=0),)}, "lines[0].quantity"),
        (lambda o: {"lines": (dataclasses.replace(LINE, sku=""),)}, "lines[0].sku"),
        (
            lambda o: {"currency": "JPY", "lines": (dataclasses.replace(LINE, unit_price=Decimal("100.5")),)},
            "lines[0].unit_price",
        ),
    ],
    ids=[
        "no-lines",
        "lower-case-currency",
        "short-currency",
        "long-currency",
        "naive-purchased_at",
        "naive-paid_at",
        "blank-order-id",
        "long-order-id",
        "negative-price",
        "too-precise-price",
        "negative-tax",
        "too-precise-shipping",
        "nan-price",
        "duplicate-line-id",
        "empty-line-id",
        "zero-quantity",
        "empty-sku",
        "jpy-fraction",
    ],
)
def test_invalid_order_is_refused_naming_the_field(shop, change, field):
    """An order the ledger cannot take raises InvalidOrderError naming the field, and nothing is stored."""
    account_id = shop.account(Marketplace.WALMART)
    order = _invalid(shop.imported("BAD-1"), change)

    with pytest.raises(InvalidOrderError) as caught:
        shop.ledger.import_order(shop.ctx, account_id, order)

    assert caught.value.field == field
    with pytest.raises(OrderNotFoundError):
        shop.ledger.find_order(shop.seller, Marketplace.WALMART, order.marketplace_order_id)


def test_invalid_reimport_is_refused_too(shop):
    """A re-sent order is checked like a new one before it is compared."""
    account_id = shop.account(Marketplace.WALMART)
    order = shop.imported("M-1")
    shop.ledger.import_order(shop.ctx, account_id, order)

    with pytest.raises(InvalidOrderError) as caught:
        shop.ledger.import_order(shop.ctx, account_id, dataclasses.replace(order, lines=()))

    assert caught.value.field == "lines"


@pytest.mark.parametrize(
    ("currency", "price"),
    [("JPY", Decimal(1500)), ("BHD", Decimal("1.125")), ("USD", Decimal("19.99")), ("EUR", Decimal("0"))],
)
def test_amounts_as_precise_as_the_currency_allows_are_valid(shop, currency, price):
    """Amounts are valid up to the currency's minor unit (none for JPY, three for BHD)."""
    account_id = shop.account(Marketplace.RAKUTEN)
    order = shop.imported(lines=(dataclasses.replace(LINE, unit_price=price),), currency=currency)

    result = shop.ledger.import_order(shop.ctx, account_id, order)

    assert shop.details(result.order_id).total == price


def test_import_into_another_sellers_account_is_refused(shop):
    """A seller cannot import through an account of another seller."""
    account_id = shop.account(Marketplace.AMAZON, seller="other-seller")

    with pytest.raises(AccountNotFoundError):
        shop.ledger.import_order(shop.ctx, account_id, shop.imported(), seller=shop.seller)


def test_orders_are_scoped_to_their_seller(shop):
    """Another seller cannot read an order, nor find it by its marketplace id."""
    order_id = shop.order(Marketplace.EBAY)
    number = shop.details(order_id).marketplace_order_id

    with pytest.raises(OrderNotFoundError):
        shop.ledger.get_order(order_id, seller="other-seller")
    with pytest.raises(OrderNotFoundError):
        shop.ledger.find_order("other-seller", Marketplace.EBAY, number)
    with pytest.raises(OrderNotFoundError):
        shop.ship(order_id, seller="other-seller")
    assert shop.ledger.get_order(order_id, seller=shop.seller).order_id == order_id


# --------------------------------------------------------------------------- Third Party Managed


@pytest.mark.parametrize("marketplace", ALL)
def test_third_party_managed_orders_import_flagged_and_accept_updates(shop, marketplace):
    """Orders of an account the seller fulfils elsewhere import as Third Party Managed and take every update."""
    account_id = shop.account(marketplace, fulfillment_managed=False)
    pending = shop.imported("T-1", paid=False)
    order_id = shop.ledger.import_order(shop.ctx, account_id, pending).order_id
    assert shop.details(order_id).third_party_managed is True

    paid = dataclasses.replace(pending, payment_status=PaymentStatus.PAID, paid_at=shop.clock.now)
    assert shop.ledger.import_order(shop.ctx, account_id, paid).events == ("PaymentCleared",)
    shop.ship(order_id, {"A": 2})
    shop.refund(order_id, lines=(RefundRequestLine("A", 1),))
    shop.ledger.open_dispute(shop.ctx, order_id, reason="late", marketplace_dispute_id="X")

    details = shop.details(order_id)
    assert details.third_party_managed is True
    assert (details.payment_status, details.shipped_units) == (PaymentStatus.PAID.value, 2)
    assert shop.line(order_id, "A").refunded_quantity == 1
    assert details.dispute_status == "open"


def test_changing_fulfilment_affects_later_imports_only(shop):
    """An account switched to third-party fulfilment imports new orders as such; earlier orders stay."""
    account_id = shop.account(Marketplace.AMAZON)
    before = shop.ledger.import_order(shop.ctx, account_id, shop.imported("M-1")).order_id

    shop.ledger.update_account(shop.ctx, account_id, fulfillment_managed=False)
    after = shop.ledger.import_order(shop.ctx, account_id, shop.imported("M-2")).order_id

    assert shop.details(before).third_party_managed is False
    assert shop.details(after).third_party_managed is True


# ---------------------------------------------------------------------------------------- accounts


def test_register_account(ledger):
    """Registering an account returns its settings, and they read back the same."""
    ctx = Context(actor="owner", source=Source.WEB)

    account = ledger.register_account(
        ctx,
        seller="s-1",
        marketplace=Marketplace.RAKUTEN,
        name="  Rakuten JP  ",
        fulfillment_managed=False,
        restock_in_ledger=True,
    )

    assert (account.seller, account.marketplace, account.name) == ("s-1", "rakuten", "Rakuten JP")
    assert (account.fulfillment_managed, account.restock_in_ledger, account.version) == (False, True, 1)
    assert ledger.get_account(account.account_id) == account
    assert ledger.get_account(account.account_id, seller="s-1") == account


def test_account_defaults(ledger):
    """An account is fulfilment-managed and does not restock in the ledger unless told otherwise."""
    account = ledger.register_account(Context(actor="o"), seller="s", marketplace=Marketplace.JET, name="Jet")

    assert (account.fulfillment_managed, account.restock_in_ledger) == (True, False)


@pytest.mark.parametrize(
    "changes",
    [{"name": "Renamed"}, {"fulfillment_managed": False}, {"restock_in_ledger": True}],
    ids=["name", "fulfillment_managed", "restock_in_ledger"],
)
def test_update_account_records_a_change(ledger, changes):
    """Updating a setting to a new value records one change and bumps the version."""
    ctx = Context(actor="owner")
    account = ledger.register_account(ctx, seller="s", marketplace=Marketplace.EBAY, name="eBay")

    updated = ledger.update_account(ctx, account.account_id, **changes)

    assert updated.version == account.version + 1
    assert dataclasses.replace(account, **changes, version=updated.version) == updated
    assert ledger.get_account(account.account_id) == updated


@pytest.mark.parametrize(
    "changes",
    [{}, {"name": "eBay"}, {"name": "  eBay "}, {"fulfillment_managed": True}, {"restock_in_ledger": False}],
    ids=["nothing", "same-name", "same-name-padded", "same-fulfillment", "same-restock"],
)
def test_update_account_without_change_records_nothing(ledger, changes):
    """An update that changes nothing records no event."""
    ctx = Context(actor="owner")
    account = ledger.register_account(ctx, seller="s", marketplace=Marketplace.EBAY, name="eBay")

    updated = ledger.update_account(ctx, account.account_id, **changes)

    assert updated == account
    assert len(list(ledger.events.get(account.account_id))) == 1


@pytest.mark.parametrize("name", ["Main", " Main ", "Main  "])
def test_account_name_is_unique_per_seller_and_marketplace(ledger, name):
    """A seller cannot have two accounts of the same name on one marketplace."""
    ctx = Context(actor="owner")
    ledger.register_account(ctx, seller="s", marketplace=Marketplace.AMAZON, name="Main")

    with pytest.raises(AccountNameTakenError):
        ledger.register_account(ctx, seller="s", marketplace=Marketplace.AMAZON, name=name)

    assert len(ledger.list_accounts("s")) == 1


def test_same_account_name_is_free_on_another_marketplace_or_seller(ledger):
    """The name is taken only for the same seller on the same marketplace."""
    ctx = Context(actor="owner")
    ledger.register_account(ctx, seller="s", marketplace=Marketplace.AMAZON, name="Main")

    ledger.register_account(ctx, seller="s", marketplace=Marketplace.WALMART, name="Main")
    ledger.register_account(ctx, seller="t", marketplace=Marketplace.AMAZON, name="Main")

    assert [a.marketplace for a in ledger.list_accounts("s")] == ["amazon", "walmart"]
    assert [a.marketplace for a in ledger.list_accounts("t")] == ["amazon"]


def test_renaming_to_a_taken_name_is_refused(ledger):
    """An account cannot be renamed to the name of another account of the seller on that marketplace."""
    ctx = Context(actor="owner")
    ledger.register_account(ctx, seller="s", marketplace=Marketplace.EBAY, name="One")
    two = ledger.register_account(ctx, seller="s", marketplace=Marketplace.EBAY, name="Two")

    with pytest.raises(AccountNameTakenError):
        ledger.update_account(ctx, two.account_id, name="One")

    assert ledger.get_account(two.account_id).name == "Two"


def test_accounts_are_scoped_to_their_seller(ledger):
    """Another seller can neither read nor change an account."""
    ctx = Context(actor="owner")
    account = ledger.register_account(ctx, seller="s", marketplace=Marketplace.EBAY, name="eBay")

    with pytest.raises(AccountNotFoundError):
        ledger.get_account(account.account_id, seller="intruder")
    with pytest.raises(AccountNotFoundError):
        ledger.update_account(ctx, account.account_id, seller="intruder", name="Mine")

    assert ledger.get_account(account.account_id).name == "eBay"


def test_unknown_account_is_not_found(shop):
    """An id that names no account (even one that names an order) is not an account."""
    order_id = shop.order(Marketplace.WALMART)

    with pytest.raises(AccountNotFoundError):
        shop.ledger.get_account(order_id)
    with pytest.raises(AccountNotFoundError):
        shop.ledger.import_order(shop.ctx, order_id, shop.imported())


def test_list_accounts_lists_the_sellers_accounts_in_order(ledger):
    """list_accounts returns the seller's accounts in the order they were registered, and no one else's."""
    ctx = Context(actor="owner")
    registered = [
        ledger.register_account(ctx, seller="s", marketplace=marketplace, name=f"{marketplace.value} main")
        for marketplace in Marketplace
    ]
    ledger.register_account(ctx, seller="t", marketplace=Marketplace.AMAZON, name="other")

    assert ledger.list_accounts("s") == registered
    assert ledger.list_accounts("nobody") == []


@pytest.mark.parametrize(
    ("seller", "name", "field"),
    [("s", "", "name"), ("s", " " * 3, "name"), ("s", "n" * 101, "name"), ("", "Main", "seller")],
)
def test_account_needs_a_seller_and_a_name(ledger, seller, name, field):
    """A blank or over-long name, or a blank seller, is refused naming the field."""
    with pytest.raises(InvalidInputError) as caught:
        ledger.register_account(Context(actor="o"), seller=seller, marketplace=Marketplace.EBAY, name=name)

    assert caught.value.field == field


# ---------------------------------------------------------------------------------------------- ship-by


def test_the_marketplaces_ship_by_date_is_kept_and_a_changed_one_is_no_conflict(shop) -> None:
    """An order imported with the marketplace's ship-by date has it; re-sent with another date (marketplaces
    move it), the re-import records nothing and refuses nothing; a naive ship-by is refused."""
    account_id = shop.account(Marketplace.AMAZON)
    ship_by = shop.imported().purchased_at + timedelta(days=3)
    order = shop.imported("SB-1", ship_by=ship_by)
    order_id = shop.ledger.import_order(shop.ctx, account_id, order).order_id
    assert shop.details(order_id).ship_by == ship_by
    again = shop.ledger.import_order(shop.ctx, account_id, dataclasses.replace(order, ship_by=None))
    assert not again.created
    assert shop.version(order_id) == 1
    with pytest.raises(InvalidOrderError, match="ship_by needs a time zone"):
        shop.ledger.import_order(
            shop.ctx, account_id, shop.imported("SB-2", ship_by=ship_by.replace(tzinfo=None))
        )


def test_an_import_stored_before_ship_by_existed_still_loads_and_verifies(shop) -> None:
    """An `Imported` whose stored state has no `ship_by` (written by an earlier release) decodes with
    ship_by None, its hash still checks out, and the order it makes has no ship-by date."""
    account_id = shop.account(Marketplace.EBAY)
    order_id = shop.ledger.import_order(shop.ctx, account_id, shop.imported("OLD-1")).order_id
    [new] = shop.events(order_id)
    old = object.__new__(Order.Imported)  # the event as an earlier release built it: no ship_by field
    state = {k: v for k, v in vars(new).items() if k not in ("ship_by", "hash")}
    object.__setattr__(old, "__dict__", state)
    object.__setattr__(old, "hash", chain_hash(GENESIS_HASH, old))
    stored = shop.ledger.mapper.to_stored_event(old)
    assert b"ship_by" not in stored.state

    loaded = shop.ledger.mapper.to_domain_event(stored)

    assert "ship_by" not in vars(loaded)
    assert loaded.ship_by is None
    assert chain_hash(GENESIS_HASH, loaded) == loaded.hash == old.hash
    assert loaded.mutate(None).ship_by is None

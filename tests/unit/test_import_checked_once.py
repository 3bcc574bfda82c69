"""An import checks its order once: the application checks the plaintext (a NUL cannot hide in a sealed
field), and the aggregate, told so, does not check the sealed copy again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ledger.aggregates import rules
from ledger.aggregates.errors import InvalidOrderError
from ledger.aggregates.order import Order
from ledger.aggregates.values import Buyer, Context, ImportedOrder, Marketplace
from ledger.application.commands import ImportItem


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    check: Callable[[ImportedOrder], None] = rules.check_imported_order

    def counting(order: ImportedOrder) -> None:
        seen.append(order.marketplace_order_id)
        check(order)

    monkeypatch.setattr(rules, "check_imported_order", counting)
    return seen


def test_a_bulk_import_checks_each_order_once(shop: Any, checks: list[str]) -> None:
    account_id = shop.account(Marketplace.WALMART)
    items = [ImportItem(account_id, shop.imported(f"B-{i}"), None) for i in range(3)]
    results = shop.ledger.import_orders(shop.ctx, items, seller=shop.seller)
    assert [r.created for r in results] == [True, True, True]
    assert sorted(checks) == ["B-0", "B-1", "B-2"]


def test_a_single_import_and_a_re_import_check_once_each(shop: Any, checks: list[str]) -> None:
    account_id = shop.account(Marketplace.WALMART)
    pending = shop.imported("ONE", paid=False)
    assert shop.ledger.import_order(shop.ctx, account_id, pending).created
    assert checks == ["ONE"]
    paid = shop.imported("ONE")
    assert shop.ledger.import_order(shop.ctx, account_id, paid).events == ("PaymentCleared",)
    assert checks == ["ONE", "ONE"]


def test_a_nul_in_a_personal_field_is_still_refused_on_every_path(shop: Any) -> None:
    account_id = shop.account(Marketplace.WALMART)
    bad = shop.imported("NUL-1", buyer=Buyer("A\x00B", "a@example.com"))
    with pytest.raises(InvalidOrderError, match=r"buyer\.name"):
        shop.ledger.import_order(shop.ctx, account_id, bad)
    [result] = shop.ledger.import_orders(shop.ctx, [ImportItem(account_id, bad, None)], seller=shop.seller)
    assert isinstance(result, InvalidOrderError)


def test_the_aggregate_checks_an_order_nobody_checked(shop: Any) -> None:
    bad = shop.imported("NUL-2", buyer=Buyer("A\x00B", "a@example.com"))
    with pytest.raises(InvalidOrderError, match=r"buyer\.name"):
        Order.import_order(
            Context(actor="t"),
            seller="s",
            account_id=shop.account(Marketplace.WALMART),
            marketplace=Marketplace.WALMART,
            order=bad,
            third_party_managed=False,
        )

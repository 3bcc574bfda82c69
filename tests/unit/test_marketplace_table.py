"""Every marketplace the domain knows has every entry: a policy, an integration record, and a sandbox module."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from ledger.aggregates.policies import POLICIES
from ledger.aggregates.values import Marketplace, SyncAction
from ledger.integrations.marketplaces import MARKETPLACES, RATE_LIMITS, operation_for
from ledger_sandbox.app import MODULES, load_modules

ALL = list(Marketplace)


@pytest.mark.parametrize("marketplace", ALL, ids=lambda m: m.value)
def test_every_marketplace_has_a_policy(marketplace: Marketplace) -> None:
    """The domain's rules name every marketplace, each under its own name."""
    assert POLICIES[marketplace].marketplace is marketplace


@pytest.mark.parametrize("marketplace", ALL, ids=lambda m: m.value)
def test_every_marketplace_has_an_adapter_that_speaks_for_it(marketplace: Marketplace) -> None:
    """The table names an adapter class that exists and says it is this marketplace's."""
    module_name, class_name = MARKETPLACES[marketplace].adapter
    adapter = getattr(importlib.import_module(module_name), class_name)
    assert adapter.marketplace == marketplace


@pytest.mark.parametrize("marketplace", ALL, ids=lambda m: m.value)
def test_every_call_an_item_makes_has_a_published_limit(marketplace: Marketplace) -> None:
    """Each action's send and poll name one of the marketplace's operations, whose rate and burst are positive."""
    entry = MARKETPLACES[marketplace]
    assert set(entry.sends) | set(entry.polls) <= {a.value for a in SyncAction}
    assert {*entry.sends.values(), *entry.polls.values()} <= set(entry.operations)
    assert all(rate > 0 and burst >= 1 for rate, burst in entry.operations.values())
    for call, limit in entry.operations.items():
        assert RATE_LIMITS[f"{marketplace.value}.{call}"] == limit


def test_an_item_names_the_call_it_makes() -> None:
    """Amazon's shipment is confirmShipment; its feeds are created with createFeed and polled with getFeed."""
    assert operation_for("amazon", "ship") == "amazon.confirmShipment"
    assert operation_for("amazon", "cancel") == "amazon.createFeed"
    assert operation_for("amazon", "refund", polling=True) == "amazon.getFeed"
    assert operation_for("ebay", "refund", polling=True) == "ebay.getOrder"
    assert operation_for("amazon", "close_dispute") == "amazon.close_dispute"  # answered without a call


def test_the_table_names_only_known_marketplaces() -> None:
    """Neither table has an entry for a marketplace the domain does not know."""
    assert set(MARKETPLACES) == set(ALL)
    assert set(POLICIES) == set(ALL)


def test_the_sandbox_serves_every_marketplace() -> None:
    """The sandbox lists a module for each marketplace, and each loads and plays that marketplace."""
    assert sorted(MODULES) == sorted(m.value for m in ALL)
    assert sorted(m.name for m in load_modules()) == sorted(m.value for m in ALL)


@pytest.mark.parametrize("marketplace", ALL, ids=lambda m: m.value)
def test_every_read_an_adapter_paces_is_in_the_table(marketplace: Marketplace) -> None:
    """The operations an adapter's reads are paced as (`RestTransport.gated("getOrders", ...)`) each have a bucket
    in the table the dispatcher uses, so the importer never reads an unlimited call by a typo."""
    module_name, _ = MARKETPLACES[marketplace].adapter
    source = Path(importlib.import_module(module_name).__file__ or "").read_text()
    gated = re.findall(r'\.gated\(\s*"(\w+)"', source)
    assert gated, f"{module_name} paces no read"
    assert [op for op in gated if f"{marketplace.value}.{op}" not in RATE_LIMITS] == []

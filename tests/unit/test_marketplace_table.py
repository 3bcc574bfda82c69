"""Every marketplace the domain knows has every entry: a policy, an integration record, and a sandbox module."""

from __future__ import annotations

import importlib

import pytest

from ledger.aggregates.policies import POLICIES
from ledger.aggregates.values import Marketplace, SyncAction
from ledger.integrations.marketplaces import MARKETPLACES, RATE_LIMITS
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
def test_every_marketplace_has_its_own_rate_limit(marketplace: Marketplace) -> None:
    """Each marketplace has a bucket of its own; per-action buckets name a sync action; all are positive."""
    entry = MARKETPLACES[marketplace]
    assert "" in entry.rate_limits
    assert set(entry.rate_limits) - {""} <= {a.value for a in SyncAction}
    assert RATE_LIMITS[marketplace.value] == entry.rate_limits[""]
    assert all(rate > 0 and burst >= 1 for rate, burst in entry.rate_limits.values())


def test_the_table_names_only_known_marketplaces() -> None:
    """Neither table has an entry for a marketplace the domain does not know."""
    assert set(MARKETPLACES) == set(ALL)
    assert set(POLICIES) == set(ALL)


def test_the_sandbox_serves_every_marketplace() -> None:
    """The sandbox lists a module for each marketplace, and each loads and plays that marketplace."""
    assert sorted(MODULES) == sorted(m.value for m in ALL)
    assert sorted(m.name for m in load_modules()) == sorted(m.value for m in ALL)

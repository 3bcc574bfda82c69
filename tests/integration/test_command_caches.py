"""The caches on the command path (BENCHMARKS.md): API keys remembered for a bounded time, and aggregates
loaded for a command without the library's deep copy, on real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from api_support import CTX, UPS_TRACKING

from ledger.aggregates.order import Order
from ledger.aggregates.values import (
    Buyer,
    Carrier,
    ImportedOrder,
    Marketplace,
    OrderLine,
    PaymentStatus,
    RefundReason,
    Role,
)
from ledger.application.keys import KEY_CACHE_SECONDS, KeyCache
from ledger.application.ledger import Ledger
from ledger.application.queries import KeyDetails


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_key_revoked_here_is_refused_at_once(api_ledger: Ledger) -> None:
    """A key this Ledger authenticated (and so remembers) is refused as soon as this Ledger revokes it."""
    secret, key = api_ledger.create_api_key(CTX, seller="cache-a", role=Role.OPERATOR)
    assert api_ledger.authenticate(secret) is not None
    assert api_ledger.cached_key(secret) is not None
    api_ledger.revoke_api_key(CTX, key.key_id)
    assert api_ledger.cached_key(secret) is None
    assert api_ledger.authenticate(secret) is None


def test_key_revoked_elsewhere_is_refused_within_the_bound(
    api_ledger: Ledger, ledger_env: dict[str, str]
) -> None:
    """Another process's revocation reaches a Ledger that remembers the key within KEY_CACHE_SECONDS."""
    ticks = Ticks()
    server = Ledger(env=ledger_env, monotonic=ticks)
    try:
        secret, key = api_ledger.create_api_key(CTX, seller="cache-b", role=Role.OPERATOR)
        assert server.authenticate(secret) is not None
        api_ledger.revoke_api_key(CTX, key.key_id)
        ticks.now += KEY_CACHE_SECONDS / 2
        assert server.authenticate(secret) is not None  # still remembered: the documented bound
        ticks.now += KEY_CACHE_SECONDS / 2
        assert server.cached_key(secret) is None
        assert server.authenticate(secret) is None
    finally:
        server.close()


def test_unknown_secrets_are_not_remembered(api_ledger: Ledger) -> None:
    """Secrets that authenticate nobody leave nothing in memory, so guessing cannot fill the cache."""
    for i in range(5):
        assert api_ledger.authenticate(f"lk_unknown-{i}") is None
        assert api_ledger.cached_key(f"lk_unknown-{i}") is None


def test_key_read_before_a_revocation_is_not_kept() -> None:
    """A key read from the store before a revocation (maybe the revoked key) is not put in the cache."""
    ticks = Ticks()
    keys = KeyCache(ticks)
    details = KeyDetails(Order.create_id("s", "m", "k"), "s", "operator", "", datetime.now(UTC), None)
    revision = keys.revision
    keys.forget(Order.create_id("s", "m", "other"))
    keys.put(details.key_id, details, revision)
    assert keys.get(details.key_id) is None
    keys.put(details.key_id, details, keys.revision)
    assert keys.get(details.key_id) == details
    ticks.now += KEY_CACHE_SECONDS
    assert keys.get(details.key_id) is None


def _order(ledger: Ledger, seller: str) -> Order:
    account = ledger.register_account(CTX, seller=seller, marketplace=Marketplace.WALMART, name="main")
    imported = ImportedOrder(
        f"C-{seller}",
        datetime(2026, 11, 1, tzinfo=UTC),
        "USD",
        PaymentStatus.PAID,
        Buyer("B", "b@example.com"),
        (OrderLine("1", "SKU", 2, Decimal("10.00"), Decimal("1.00")),),
    )
    result = ledger.import_order(CTX, account.account_id, imported)
    order: Order = ledger.repository.get(result.order_id)
    return order


def test_command_aggregates_are_never_shared_with_the_cache(api_ledger: Ledger) -> None:
    """An order loaded for a command, changed and not saved, leaves no trace; a saved one is served as a copy."""
    order = _order(api_ledger, "cache-c")
    now = datetime.now(UTC)
    order.ship(CTX, carrier=Carrier.UPS, tracking_number=UPS_TRACKING, shipped_at=now, now=now)  # not saved
    again: Order = api_ledger.repository.get(order.id)
    assert again is not order
    assert again.version == 1
    result = api_ledger.ship(CTX, order.id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING)
    first: Order = api_ledger.repository.get(order.id)
    second: Order = api_ledger.repository.get(order.id)
    assert first is not second
    assert first.version == second.version == result.version == 2
    first.refund(CTX, reason=RefundReason.CUSTOMER_RETURN, lines=None)  # a copy, changed, not saved
    assert first.version == 3
    loaded: Order = api_ledger.repository.get(order.id)
    assert loaded.version == 2
    assert api_ledger.get_order(order.id).version == 2


def test_cached_order_catches_up_with_other_writers(api_ledger: Ledger, ledger_env: dict[str, str]) -> None:
    """An order this Ledger saved (and caches) is fast-forwarded when another process changes it."""
    order = _order(api_ledger, "cache-d")
    api_ledger.ship(CTX, order.id, carrier=Carrier.UPS, tracking_number=UPS_TRACKING, lines=None)
    other = Ledger(env=ledger_env)
    try:
        other.refund(CTX, order.id, reason=RefundReason.CUSTOMER_RETURN)
    finally:
        other.close()
    assert api_ledger.get_order(order.id).version == 3
    loaded: Order = api_ledger.repository.get(order.id)
    assert loaded.version == 3

"""A seller's account on one marketplace, and the per-seller index of those accounts."""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger.aggregates.errors import InvalidInputError
from ledger.aggregates.values import Context, Marketplace

SELLER_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledger.dev/sellers")
MAX_NAME = 100


def check_account_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise InvalidInputError(f"name must be 1 to {MAX_NAME} characters", "name")
    if "\x00" in name:  # PostgreSQL text cannot hold it (see rules.check_storable)
        raise InvalidInputError("name contains a NUL character (U+0000)", "name")
    return name


class MarketplaceAccount(Aggregate):
    """`fulfillment_managed = False`: the seller fulfils elsewhere and orders import as Third Party Managed.
    `restock_in_ledger`: a cancellation puts units back into the ledger's own stock by default.
    `sync_enabled = False` (sync off): the ledger neither imports from nor sends to the account's marketplace;
    changes made meanwhile are recorded as `not_sent` (reason `sync_off`) and stay so when sync is turned on
    again (docs/marketplaces.md, "Sync off")."""

    @event("Registered")
    def __init__(
        self,
        seller: str,
        marketplace: str,
        name: str,
        fulfillment_managed: bool,
        restock_in_ledger: bool,
        actor: str,
        source: str,
        sync_enabled: bool = True,  # accounts registered before the setting existed had sync on
    ) -> None:
        self.seller = seller
        self.marketplace = Marketplace(marketplace)
        self.name = name
        self.fulfillment_managed = fulfillment_managed
        self.restock_in_ledger = restock_in_ledger
        self.sync_enabled = sync_enabled
        self.registered_by = actor

    @classmethod
    def register(
        cls,
        ctx: Context,
        *,
        seller: str,
        marketplace: Marketplace,
        name: str,
        fulfillment_managed: bool = True,
        restock_in_ledger: bool = False,
        sync_enabled: bool = True,
    ) -> MarketplaceAccount:
        return cls(
            seller=seller,
            marketplace=marketplace.value,
            name=check_account_name(name),
            fulfillment_managed=fulfillment_managed,
            restock_in_ledger=restock_in_ledger,
            sync_enabled=sync_enabled,
            actor=ctx.actor,
            source=ctx.source.value,
        )

    def update(
        self,
        ctx: Context,
        *,
        name: str | None = None,
        fulfillment_managed: bool | None = None,
        restock_in_ledger: bool | None = None,
        sync_enabled: bool | None = None,
    ) -> bool:
        """Change settings; returns whether anything changed (no event when nothing does)."""
        changes: dict[str, Any] = {}
        if name is not None and check_account_name(name) != self.name:
            changes["name"] = check_account_name(name)
        if fulfillment_managed is not None and fulfillment_managed != self.fulfillment_managed:
            changes["fulfillment_managed"] = fulfillment_managed
        if restock_in_ledger is not None and restock_in_ledger != self.restock_in_ledger:
            changes["restock_in_ledger"] = restock_in_ledger
        if sync_enabled is not None and sync_enabled != self.sync_enabled:
            changes["sync_enabled"] = sync_enabled
        if not changes:
            return False
        self._change_settings(changes=changes, actor=ctx.actor, source=ctx.source.value)
        return True

    @event("SettingsChanged")
    def _change_settings(self, changes: dict[str, Any], actor: str, source: str) -> None:
        for key, value in changes.items():
            setattr(self, key, value)


class SellerAccounts(Aggregate):
    """The accounts of one seller, saved atomically with each new account so listing needs no scan."""

    @staticmethod
    def create_id(seller: str) -> UUID:
        return uuid5(SELLER_NAMESPACE, seller)

    @event("Started")
    def __init__(self, seller: str) -> None:
        self.seller = seller
        self.account_ids: list[UUID] = []

    @event("AccountAdded")
    def add(self, account_id: UUID) -> None:
        self.account_ids.append(account_id)

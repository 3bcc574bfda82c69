"""Marketplace accounts: register, update and read a seller's accounts.

A seller's accounts are listed by one `SellerAccounts` index aggregate; an account is saved with it in one
transaction, so two accounts of one marketplace never share a name (a concurrent registration conflicts and
retries). Registration may store its response under an idempotency key in that same transaction
(ledger.eventstore.idempotency).
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from ledger.aggregates.account import MarketplaceAccount, SellerAccounts
from ledger.aggregates.values import Context, Marketplace
from ledger.application.core import MAX_ATTEMPTS, LedgerCore, check_seller
from ledger.application.errors import AccountNameTakenError, ConcurrentUpdateError, ResponseStoredError
from ledger.application.queries import AccountDetails
from ledger.eventstore.idempotency import StoredResponse


class Accounts(LedgerCore):
    def register_account(
        self,
        ctx: Context,
        *,
        seller: str,
        marketplace: Marketplace,
        name: str,
        fulfillment_managed: bool = True,
        restock_in_ledger: bool = False,
        sync_enabled: bool = True,
        respond: Callable[[AccountDetails], StoredResponse] | None = None,
    ) -> AccountDetails:
        """A new account, saved in one transaction with the seller's index of accounts.

        `respond` makes the response to store under an idempotency key, in the same transaction; if a response
        is stored under that key meanwhile (a concurrent retry won), ResponseStoredError."""
        check_seller(seller)
        for _ in range(MAX_ATTEMPTS):
            key = ctx.idempotency_key
            if respond is not None and key is not None and self.stored_response(seller, key) is not None:
                raise ResponseStoredError(key)
            index = self._seller_index(seller)
            for existing in self._accounts(index):
                if existing.marketplace is marketplace and existing.name == name.strip():
                    msg = f"seller {seller} already has a {marketplace.value} account named {name!r}"
                    raise AccountNameTakenError(msg)
            account = MarketplaceAccount.register(
                ctx,
                seller=seller,
                marketplace=marketplace,
                name=name,
                fulfillment_managed=fulfillment_managed,
                restock_in_ledger=restock_in_ledger,
                sync_enabled=sync_enabled,
            )
            index.add(account.id)
            details = AccountDetails.of(account)
            try:
                self.save(account, index, stored_responses=() if respond is None else [respond(details)])
            except IntegrityError:
                continue  # another account was added to this seller meanwhile (or a response stored)
            return details
        msg = f"seller {seller}'s accounts kept changing; try again"
        raise ConcurrentUpdateError(msg)

    def update_account(
        self,
        ctx: Context,
        account_id: UUID,
        *,
        seller: str | None = None,
        name: str | None = None,
        fulfillment_managed: bool | None = None,
        restock_in_ledger: bool | None = None,
        sync_enabled: bool | None = None,
    ) -> AccountDetails:
        for _ in range(MAX_ATTEMPTS):
            account = self._account(account_id, seller)
            if name is not None and name.strip() != account.name:
                index = self._seller_index(account.seller)
                taken = any(
                    other.id != account.id
                    and other.marketplace is account.marketplace
                    and other.name == name.strip()
                    for other in self._accounts(index)
                )
                if taken:
                    raise AccountNameTakenError(f"another account is named {name!r}")
            account.update(
                ctx,
                name=name,
                fulfillment_managed=fulfillment_managed,
                restock_in_ledger=restock_in_ledger,
                sync_enabled=sync_enabled,
            )
            try:
                self.save(account)
            except IntegrityError:
                continue
            finally:
                self.forget_sync(account_id)
            return AccountDetails.of(account)
        raise ConcurrentUpdateError(f"account {account_id} kept changing; try again")

    def get_account(self, account_id: UUID, seller: str | None = None) -> AccountDetails:
        return AccountDetails.of(self._account(account_id, seller))

    def list_accounts(self, seller: str) -> list[AccountDetails]:
        return [AccountDetails.of(a) for a in self._accounts(self._seller_index(seller))]

    def _seller_index(self, seller: str) -> SellerAccounts:
        try:
            index: SellerAccounts = self.repository.get(SellerAccounts.create_id(seller))
        except AggregateNotFoundError:
            return SellerAccounts(seller=seller)
        return index

    def _accounts(self, index: SellerAccounts) -> list[MarketplaceAccount]:
        return [self.repository.get(account_id) for account_id in index.account_ids]

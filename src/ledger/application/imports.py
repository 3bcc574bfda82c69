"""Importing orders from marketplaces: one at a time (`import_one`) or many in a few transactions
(`import_many`), the handlers of the `ImportOrder` and `ImportOrders` commands.

An import happens once and only once: an order's id is derived from its seller, marketplace and marketplace
order id, so a re-sent order lands on the same stream and changes nothing, or records what changed (a payment).
A retry under an idempotency key the order has seen answers as the first import did. The buyer's personal
fields are checked as plaintext, then stored encrypted under the buyer's key (ledger.eventstore.keys_store):
the aggregate only ever sees tokens.
"""

from __future__ import annotations

import dataclasses
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from ledger.aggregates import rules
from ledger.aggregates.account import MarketplaceAccount
from ledger.aggregates.errors import LedgerError
from ledger.aggregates.order import Order
from ledger.aggregates.values import Context, ImportedOrder
from ledger.application.commands import ImportItem, ImportOrder, ImportOrders
from ledger.application.core import (
    MAX_ATTEMPTS,
    Asked,
    LedgerCore,
    event_names,
    log_position,
    pending_names,
    stored_with,
)
from ledger.application.errors import ConcurrentUpdateError
from ledger.application.queries import ImportResult
from ledger.eventstore.bulk_gc import fewer_collections
from ledger.eventstore.keys_store import Sealer, key_id_for

Planned = tuple[int, ImportItem, MarketplaceAccount, UUID]
"""An item of a bulk import that passed its checks: its index, the item, its account and its order's id."""


class Imports(LedgerCore):
    """The handlers of `ImportOrder` (`import_one`) and `ImportOrders` (`import_many`)."""

    def import_one(self, cmd: ImportOrder) -> ImportResult:
        """Import once and only once: a re-sent order changes nothing, or records that it was paid.

        Under an idempotency key (the seller's, as for every command: core.py) a retry answers as the first
        import did, and another request under the key is refused."""
        account = self._account(cmd.account_id, cmd.seller)
        rules.check_imported_order(cmd.order)  # the plaintext: a NUL in a personal field hides in its token
        asked = Asked.of(cmd.ctx, account.seller, "ImportOrder")
        return self._import_checked(cmd.ctx, account, cmd.order, asked=asked)

    def import_many(self, cmd: ImportOrders) -> list[ImportResult | LedgerError]:
        """Import many orders with the results `import_one` gives one at a time, in order, but in a few
        transactions: each account loaded once, one query for which orders exist, the new buyers' keys made
        in one transaction and every new order saved in one more (one table lock for the lot).

        Orders that exist already (and a repeat of an order within the batch) go through `import_one`'s path
        after the new ones are saved: replay, unchanged, payment recorded or conflict. If the batch's save
        conflicts (another importer recorded one of its orders first), nothing of it was recorded and each of
        its orders is imported alone, so that none is lost or doubled. An item that is an error (an order that
        could not be read) is its own result. The garbage collector collects less often meanwhile
        (eventstore/bulk_gc.py): the batch's objects all stay alive until it is saved."""
        with fewer_collections():
            return self._import_many(cmd)

    def _import_many(self, cmd: ImportOrders) -> list[ImportResult | LedgerError]:
        results: list[ImportResult | LedgerError | None] = [
            item if isinstance(item, LedgerError) else None for item in cmd.items
        ]
        accounts: dict[UUID, MarketplaceAccount | LedgerError] = {}
        planned: list[Planned] = []
        for index, item in enumerate(cmd.items):
            if isinstance(item, LedgerError):
                continue
            account = accounts.get(item.account_id)
            if account is None:
                try:
                    account = self._account(item.account_id, cmd.seller)
                except LedgerError as e:
                    account = e
                accounts[item.account_id] = account
            try:
                if isinstance(account, LedgerError):
                    raise account
                rules.check_imported_order(item.order)
            except LedgerError as e:
                results[index] = e
                continue
            order_id = Order.create_id(
                account.seller, account.marketplace.value, item.order.marketplace_order_id
            )
            planned.append((index, item, account, order_id))
        existing = self._existing_ids([order_id for *_, order_id in planned])
        new: dict[UUID, Planned] = {}
        later: list[Planned] = []
        for entry in planned:
            if entry[3] in existing or entry[3] in new:
                later.append(entry)
            else:
                new[entry[3]] = entry
        for index, result in self._create_orders(cmd.ctx, list(new.values())):
            results[index] = result
        for index, item, account, _ in later:
            results[index] = self._import_caught(_item_context(cmd.ctx, item), account, item.order)
        assert all(result is not None for result in results)
        return results  # type: ignore[return-value] # every item has its result now

    def _create_orders(
        self, ctx: Context, entries: list[Planned]
    ) -> list[tuple[int, ImportResult | LedgerError]]:
        """New orders (checked, absent a moment ago) made and saved in one transaction; alone on a conflict."""
        if not entries:
            return []
        keys = self.personal_data.keys_for(
            {(account.seller, item.order.buyer.email) for _, item, account, _ in entries}
        )
        sealers: dict[str, Sealer] = {}  # one per buyer of the batch
        made: list[tuple[int, Context, MarketplaceAccount, ImportedOrder, ImportedOrder, Order]] = []
        failed: list[tuple[int, ImportResult | LedgerError]] = []
        for index, item, account, _ in entries:
            key_id = key_id_for(account.seller, item.order.buyer.email)
            sealer = sealers.get(key_id)
            if sealer is None:
                sealer = sealers[key_id] = Sealer(key_id, keys[key_id])
            buyer, ship_to = sealer.seal(item.order.buyer, item.order.ship_to)
            protected = item.order.with_personal(buyer, ship_to)
            item_ctx = _item_context(ctx, item)
            item_ctx = item_ctx if account.sync_enabled else dataclasses.replace(item_ctx, sync_off=True)
            try:
                order = Order.import_order(
                    item_ctx,
                    seller=account.seller,
                    account_id=account.id,
                    marketplace=account.marketplace,
                    order=protected,
                    third_party_managed=not account.fulfillment_managed,
                    checked=True,  # the plaintext, in import_many
                )
            except LedgerError as e:
                failed.append((index, e))
                continue
            made.append((index, item_ctx, account, item.order, protected, order))
        try:
            recordings = self._save(*(order for *_, order in made))
        except IntegrityError:
            # Another importer recorded one of them meanwhile: each order alone, compared with theirs.
            return failed + [
                (index, self._import_caught(item_ctx, account, plain, sealed))
                for index, item_ctx, account, plain, sealed, _ in made
            ]
        return failed + [
            (
                index,
                ImportResult(
                    order.id, True, order.version, event_names([recording]), log_position([recording])
                ),
            )
            for (index, *_, order), recording in zip(made, recordings, strict=True)
        ]

    def _import_caught(
        self,
        ctx: Context,
        account: MarketplaceAccount,
        order: ImportedOrder,
        sealed: ImportedOrder | None = None,
    ) -> ImportResult | LedgerError:
        try:
            return self._import_checked(ctx, account, order, sealed)
        except LedgerError as e:
            return e

    def _import_checked(
        self,
        ctx: Context,
        account: MarketplaceAccount,
        order: ImportedOrder,
        sealed: ImportedOrder | None = None,
        *,
        asked: Asked | None = None,
    ) -> ImportResult:
        """`import_one` once the account is loaded and the order checked (`rules.check_imported_order` on the
        plaintext, by every caller: the aggregate does not check again; `sealed`: the order with its
        personal fields sealed already, as a bulk import's new orders are; `asked`: the request under the
        seller's idempotency key, whose result is stored with the import's events)."""
        order_id = Order.create_id(account.seller, account.marketplace.value, order.marketplace_order_id)
        ctx = ctx if account.sync_enabled else dataclasses.replace(ctx, sync_off=True)
        for _ in range(MAX_ATTEMPTS):
            stored = None if asked is None else self._answered(asked)
            if stored is not None:
                return ImportResult(
                    UUID(stored["order_id"]),
                    stored["created"],
                    stored["version"],
                    tuple(stored["events"]),
                    replayed=True,
                )
            existing = self._find_order(order_id)
            if existing is not None and ctx.idempotency_key is not None:
                versions = existing.versions_for_key(ctx.idempotency_key)
                if versions:  # a retry of an import we recorded: answer as the first time did
                    replay = self._replayed_from_events(existing, versions, ctx)
                    return ImportResult(order_id, versions[0] == 1, replay.version, replay.events)
            if existing is None:
                new = Order.import_order(
                    ctx,
                    seller=account.seller,
                    account_id=account.id,
                    marketplace=account.marketplace,
                    order=sealed or self._protected(account.seller, order),
                    third_party_managed=not account.fulfillment_managed,
                    checked=True,  # the plaintext, by every caller
                )
                result = ImportResult(order_id, True, new.version, pending_names(new))
                try:
                    recordings = self._save(new, responses=stored_with(asked, result))
                except IntegrityError:
                    continue  # imported concurrently by another writer (or under the key): compare with theirs
                return dataclasses.replace(result, notification_id=log_position(recordings))
            as_stored = self._as_stored(existing, order)
            existing.reimport(ctx, account.id, as_stored, self.clock(), checked=True)
            result = ImportResult(order_id, False, existing.version, pending_names(existing))
            try:
                recordings = self._save(existing, responses=stored_with(asked, result))
            except IntegrityError:
                continue
            return dataclasses.replace(result, notification_id=log_position(recordings))
        raise ConcurrentUpdateError(f"order {order.marketplace_order_id} kept changing; try again")

    def _protected(self, seller: str, order: ImportedOrder) -> ImportedOrder:
        """The order with its personal fields encrypted under the buyer's key (keys_store.py). Callers check the
        plaintext first (`rules.check_imported_order`): the aggregate sees only tokens."""
        buyer, ship_to = self.personal_data.protect(seller, order.buyer, order.ship_to)
        return order.with_personal(buyer, ship_to)

    def _as_stored(self, existing: Order, order: ImportedOrder) -> ImportedOrder:
        """A re-sent order with the stored tokens in place of personal fields that decrypt to the same values
        (or that can no longer be compared, the buyer being forgotten); other values stay as sent, so that
        the aggregate sees a difference exactly where the plaintext differs."""
        buyer, ship_to, erased = self.personal_data.reveal(existing.buyer, existing.ship_to)
        if erased:
            return dataclasses.replace(order, buyer=existing.buyer, ship_to=existing.ship_to)
        return dataclasses.replace(
            order,
            buyer=existing.buyer if buyer == order.buyer else order.buyer,
            ship_to=existing.ship_to if ship_to == order.ship_to else order.ship_to,
        )


def _item_context(ctx: Context, item: ImportItem) -> Context:
    if item.idempotency_key is None:
        return ctx
    return dataclasses.replace(ctx, idempotency_key=item.idempotency_key)

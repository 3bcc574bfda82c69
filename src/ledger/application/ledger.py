"""The ledger's service layer: load aggregates, call one command, save, with bounded retries on conflicts."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, Repository
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    InternalError,
    JSONTranscoder,
    Notification,
    ProgrammingError,
    Recording,
    StoredEvent,
    Transcoder,
    Transcoding,
)
from eventsourcing.postgres import PostgresApplicationRecorder

from ledger.aggregates import rules
from ledger.aggregates.account import MarketplaceAccount, SellerAccounts
from ledger.aggregates.api_key import ApiKey, SellerApiKeys
from ledger.aggregates.chain import canonical
from ledger.aggregates.errors import InvalidInputError, LedgerError
from ledger.aggregates.order import Order
from ledger.aggregates.values import (
    Address,
    Buyer,
    CancelReason,
    Carrier,
    Context,
    DisputeOutcome,
    ImportedOrder,
    LineQuantity,
    Marketplace,
    OrderLine,
    RefundLine,
    RefundReason,
    RefundRequestLine,
    Requester,
    Role,
    SyncAction,
)
from ledger.application.queries import (
    ID_FIELDS,
    AccountDetails,
    CommandResult,
    HistoryEntry,
    ImportResult,
    KeyDetails,
    OrderDetails,
)
from ledger.eventstore import idempotency
from ledger.eventstore.database import LedgerApplicationRecorder
from ledger.eventstore.group_commit import GroupCommitter
from ledger.eventstore.idempotency import StoredResponse
from ledger.eventstore.keys_store import KeyStore, MemoryKeys, PersonalData, PostgresKeys, key_id_for
from ledger.eventstore.transcoding import LedgerTranscoder

T = TypeVar("T")
MAX_ATTEMPTS = 8
CREATE_TABLE_ATTEMPTS = 5


class OrderNotFoundError(LedgerError):
    code = "order-not-found"


class AccountNotFoundError(LedgerError):
    code = "account-not-found"


class AccountNameTakenError(LedgerError):
    code = "account-name-taken"


class ApiKeyNotFoundError(LedgerError):
    code = "api-key-not-found"


class VersionMismatchError(LedgerError):
    """The caller expected another version of the order (HTTP 412)."""

    code = "version-mismatch"


class ConcurrentUpdateError(LedgerError):
    """Other writers kept changing the order while this command retried (HTTP 409)."""

    code = "concurrent-update"


class IdempotencyKeyReusedError(InvalidInputError):
    """The idempotency key was used before for a different request (HTTP 422)."""

    code = "idempotency-key-reused"


class ResponseStoredError(LedgerError):
    """A response was stored under this idempotency key while the request ran: replay it (never a client error)."""

    code = "idempotent-response-stored"


@dataclasses.dataclass(frozen=True)
class ImportItem:
    """One order of a bulk import: its account, the order, and the idempotency key its events carry (None: the
    context's)."""

    account_id: UUID
    order: ImportedOrder
    idempotency_key: str | None = None


class DataclassTranscoding(Transcoding):
    """Stores a frozen value object as a dict of its fields, under a name that never changes."""

    def __init__(self, cls: type[Any], name: str) -> None:
        self.type = cls
        self.name = name
        self.fields = tuple(
            f.name for f in dataclasses.fields(cls)
        )  # `fields()` per call: a bulk import's hot path

    def encode(self, obj: Any) -> dict[str, Any]:
        return {name: getattr(obj, name) for name in self.fields}

    def decode(self, data: dict[str, Any]) -> Any:
        return self.type(**data)


VALUE_TRANSCODINGS = (
    (OrderLine, "order_line"),
    (LineQuantity, "line_quantity"),
    (RefundLine, "refund_line"),
    (Buyer, "buyer"),
    (Address, "address"),
)


def utcnow() -> datetime:
    return datetime.now(UTC)


class LedgerRepository(Repository[UUID]):
    """The library's repository, without a deep copy when an aggregate is loaded for a command.

    The library puts every aggregate it reconstructs in its cache and hands out a deep copy, so that a command
    cannot corrupt the cached one; that copy was about 5% of a command's CPU in the server (BENCHMARKS.md),
    for an aggregate no one else holds. Here a cache miss for a caller that may change the aggregate
    (`deepcopy_from_cache=True`, the default) returns the fresh aggregate uncached; the Ledger caches it after
    saving it, as the library's own save does. Read-only callers (`deepcopy_from_cache=False`) and cache hits
    behave exactly as in the library (hits are fast-forwarded from the store and copied)."""

    def get(self, aggregate_id: UUID, **kwargs: Any) -> Any:
        if (
            self.cache is not None
            and kwargs.get("version") is None
            and kwargs.get("deepcopy_from_cache", True)
            and self.deepcopy_from_cache
        ):
            try:
                self.cache.get(aggregate_id)
            except KeyError:
                return self._reconstruct_aggregate(aggregate_id, None, kwargs.get("projector_func", _project))
        return super().get(aggregate_id, **kwargs)


def _project(aggregate: Any, events: Iterable[Any]) -> Any:
    """The library's `project_aggregate` without its per-event isinstance check against a runtime Protocol
    (2% of a command's CPU in the server): every stored event of ours is an aggregate event with `mutate`."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class Ledger(Application[UUID]):
    """Commands and small queries over orders and marketplace accounts."""

    name = "Ledger"
    # The library reads "0" as an UNBOUNDED cache (every aggregate ever loaded kept for the life of the process);
    # a bounded LRU keeps recently used aggregates, fast-forwarded from the store before each use.
    env: ClassVar[dict[str, str]] = {"AGGREGATE_CACHE_MAXSIZE": "1000"}

    def __init__(
        self,
        env: dict[str, str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(env)
        self.clock = clock
        self.keys = KeyCache(monotonic)
        self.personal_data = PersonalData(self._key_store())
        # On PostgreSQL, concurrent saves are committed together (see group_commit.py); LEDGER_GROUP_COMMIT=n
        # saves each alone, as the library does.
        grouped = isinstance(self.recorder, PostgresApplicationRecorder) and self.env.get(
            "LEDGER_GROUP_COMMIT", "y"
        ).strip().lower() not in ("n", "no", "0", "false", "off")
        self.committer: GroupCommitter | None = GroupCommitter(self._put_encoded) if grouped else None

    def construct_repository(self) -> Repository[UUID]:
        library = super().construct_repository()
        maxsize = self.env.get(self.AGGREGATE_CACHE_MAXSIZE)
        return LedgerRepository(
            event_store=self.events,
            snapshot_store=self.snapshots,
            cache_maxsize=int(maxsize) if maxsize else None,
            fastforward=library.fastforward,
            fastforward_skipping=library.fastforward_skipping,
            deepcopy_from_cache=library.deepcopy_from_cache,
        )

    def _key_store(self) -> KeyStore:
        if isinstance(self.recorder, PostgresApplicationRecorder):
            return PostgresKeys(self.recorder.datastore)
        return MemoryKeys()

    def close(self) -> None:
        if self.committer is not None:
            self.committer.close()
        super().close()

    def _save(self, *aggregates: Any) -> list[Recording[UUID]]:
        """Save the aggregates' pending events in one transaction, grouped with other threads' saves.

        Raises what a lone save would (IntegrityError on a version conflict) and records nothing then. The
        library's post-save hooks (`_notify`, snapshots) are skipped: the Ledger uses neither."""
        if self.committer is None:
            return self.save(*aggregates)
        # Encoded here, in the request's thread: the committer's thread is the one everybody waits for.
        encoded = [
            (event, self.mapper.to_stored_event(event))
            for aggregate in aggregates
            for event in aggregate.collect_events()
        ]
        recordings = self.committer.save(encoded)
        if self.repository.cache is not None:  # as the library's save does (LedgerRepository)
            for aggregate in aggregates:
                self.repository.cache.put(aggregate.id, aggregate)
        return recordings

    def _put_encoded(self, encoded: Sequence[tuple[Any, StoredEvent]]) -> list[Recording[UUID]]:
        """The library's `EventStore.put` for events already encoded: one insert, the recordings in order."""
        ids = self.recorder.insert_events([stored for _, stored in encoded])
        assert ids is not None
        assert len(ids) == len(encoded)
        return [
            Recording(
                event,
                Notification(
                    originator_id=stored.originator_id,
                    originator_version=stored.originator_version,
                    topic=stored.topic,
                    state=stored.state,
                    id=notification_id,
                ),
            )
            for (event, stored), notification_id in zip(encoded, ids, strict=True)
        ]

    def construct_recorder(self) -> ApplicationRecorder:
        """The library creates its tables on start; processes starting together race on the catalog."""
        for attempt in range(CREATE_TABLE_ATTEMPTS):
            try:
                return super().construct_recorder()
            except (InternalError, IntegrityError, ProgrammingError):
                if attempt == CREATE_TABLE_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError  # pragma: no cover - the loop returns or raises

    def construct_transcoder(self) -> Transcoder:
        """The library's JSON, written faster (transcoding.py); a TRANSCODER_TOPIC setting still wins."""
        if self.env.get(self.factory.TRANSCODER_TOPIC):
            return super().construct_transcoder()
        transcoder = LedgerTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        for cls, name in VALUE_TRANSCODINGS:
            transcoder.register(DataclassTranscoding(cls, name))

    # ------------------------------------------------------------------------------- accounts

    def register_account(
        self,
        ctx: Context,
        *,
        seller: str,
        marketplace: Marketplace,
        name: str,
        fulfillment_managed: bool = True,
        restock_in_ledger: bool = False,
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
            )
            index.add(account.id)
            details = AccountDetails.of(account)
            try:
                self.save(account, index, stored_response=None if respond is None else respond(details))
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
            )
            try:
                self.save(account)
            except IntegrityError:
                continue
            return AccountDetails.of(account)
        raise ConcurrentUpdateError(f"account {account_id} kept changing; try again")

    def stored_response(self, seller: str, key: str) -> StoredResponse | None:
        """The response stored under this seller's idempotency key, if any (ledger.eventstore.idempotency)."""
        with self.recorder.datastore.get_connection() as conn, conn.cursor() as cur:  # type: ignore[attr-defined]
            return idempotency.select(cur, self.recorder.datastore.schema, seller, key)  # type: ignore[attr-defined]

    def store_response(self, response: StoredResponse) -> None:
        """Keep a response under its key (a no-op if one is there): for effects made of several transactions."""
        datastore = self.recorder.datastore  # type: ignore[attr-defined]
        with datastore.get_connection() as conn, conn.transaction(), conn.cursor() as cur:
            idempotency.insert(cur, datastore.schema, response, if_absent=True)

    def get_account(self, account_id: UUID, seller: str | None = None) -> AccountDetails:
        return AccountDetails.of(self._account(account_id, seller))

    def list_accounts(self, seller: str) -> list[AccountDetails]:
        return [AccountDetails.of(a) for a in self._accounts(self._seller_index(seller))]

    def _account(self, account_id: UUID, seller: str | None, *, to_change: bool = True) -> MarketplaceAccount:
        """`to_change=False`: the caller only reads it (shared with the cache, not copied)."""
        try:
            account: MarketplaceAccount = self.repository.get(account_id, deepcopy_from_cache=to_change)
        except AggregateNotFoundError:
            raise AccountNotFoundError(f"no account {account_id}") from None
        if not isinstance(account, MarketplaceAccount) or (seller is not None and account.seller != seller):
            raise AccountNotFoundError(f"no account {account_id}")
        return account

    def _seller_index(self, seller: str) -> SellerAccounts:
        try:
            index: SellerAccounts = self.repository.get(SellerAccounts.create_id(seller))
        except AggregateNotFoundError:
            return SellerAccounts(seller=seller)
        return index

    def _accounts(self, index: SellerAccounts) -> list[MarketplaceAccount]:
        return [self.repository.get(account_id) for account_id in index.account_ids]

    # ------------------------------------------------------------------------------- API keys

    def create_api_key(
        self, ctx: Context, *, seller: str, role: Role, name: str = ""
    ) -> tuple[str, KeyDetails]:
        """A new key for `seller`: returns the secret (shown once, never stored) and the key's details."""
        check_seller(seller)
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey.issue(ctx, key_hash=hash_secret(secret), seller=seller, role=role, name=name)
        for _ in range(MAX_ATTEMPTS):
            index = self._key_index(seller)
            index.add(key.id)
            try:
                self.save(key, index)
            except IntegrityError:
                continue  # another key was added to this seller's index meanwhile
            return secret, KeyDetails.of(key)
        raise ConcurrentUpdateError(f"seller {seller}'s keys kept changing; try again")

    def list_api_keys(self, seller: str) -> list[KeyDetails]:
        index = self._key_index(seller)
        return [KeyDetails.of(self.repository.get(key_id)) for key_id in index.key_ids]

    def revoke_api_key(self, ctx: Context, key_id: UUID, seller: str | None = None) -> KeyDetails:
        """Revoke a key (of `seller`, when given); revoking a revoked key records nothing."""
        for _ in range(MAX_ATTEMPTS):
            try:
                key: object = self.repository.get(key_id)
            except AggregateNotFoundError:
                raise ApiKeyNotFoundError(f"no API key {key_id}") from None
            if not isinstance(key, ApiKey) or (seller is not None and key.seller != seller):
                raise ApiKeyNotFoundError(f"no API key {key_id}")
            if not key.revoke(ctx, self.clock()):
                return KeyDetails.of(key)
            try:
                self.save(key)
            except IntegrityError:
                continue
            self.keys.forget(key.key_hash)
            return KeyDetails.of(key)
        raise ConcurrentUpdateError(f"API key {key_id} kept changing; try again")

    def authenticate(self, secret: str) -> KeyDetails | None:
        """The active key whose secret this is; None for an unknown or revoked key.

        An active key found here is remembered for KEY_CACHE_SECONDS (see KeyCache): revoking it through this
        Ledger takes effect at once, revoking it through another process within that bound."""
        if not secret.startswith(KEY_PREFIX) or len(secret) > MAX_SECRET_LENGTH:
            return None
        key_hash = hash_secret(secret)
        cached = self.keys.get(key_hash)
        if cached is not None:
            return cached
        revision = self.keys.revision
        try:
            key: object = self.repository.get(ApiKey.create_id(key_hash), deepcopy_from_cache=False)
        except AggregateNotFoundError:
            return None
        if not isinstance(key, ApiKey) or not hmac.compare_digest(key.key_hash, key_hash) or key.revoked:
            return None
        details = KeyDetails.of(key)
        self.keys.put(key_hash, details, revision)
        return details

    def cached_key(self, secret: str) -> KeyDetails | None:
        """The active key of this secret if it was authenticated recently (no I/O: callable from an event
        loop); None means "ask `authenticate`", not "unknown"."""
        if not secret.startswith(KEY_PREFIX) or len(secret) > MAX_SECRET_LENGTH:
            return None
        return self.keys.get(hash_secret(secret))

    def _key_index(self, seller: str) -> SellerApiKeys:
        try:
            index: SellerApiKeys = self.repository.get(SellerApiKeys.create_id(seller))
        except AggregateNotFoundError:
            return SellerApiKeys(seller=seller)
        return index

    # --------------------------------------------------------------------------------- import

    def import_order(
        self, ctx: Context, account_id: UUID, order: ImportedOrder, *, seller: str | None = None
    ) -> ImportResult:
        """Import once and only once: a re-sent order changes nothing, or records that it was paid.

        A retry under an idempotency key this order has seen answers as the first import did (and is refused
        if the request differs)."""
        account = self._account(account_id, seller)
        rules.check_imported_order(order)  # the plaintext: a NUL in a personal field hides in its token
        return self._import_one(ctx, account, order)

    def import_orders(
        self, ctx: Context, items: Sequence[ImportItem | LedgerError], *, seller: str | None = None
    ) -> list[ImportResult | LedgerError]:
        """Import many orders with the results `import_order` gives one at a time, in order, but in a few
        transactions: each account loaded once, one query for which orders exist, the new buyers' keys made
        in one transaction and every new order saved in one more (one table lock for the lot).

        Orders that exist already (and a repeat of an order within the batch) go through `import_order`'s path
        after the new ones are saved: replay, unchanged, payment recorded or conflict. If the batch's save
        conflicts (another importer recorded one of its orders first), nothing of it was recorded and each of
        its orders is imported alone, so that none is lost or doubled. An item that is an error (an order that
        could not be read) is its own result."""
        results: list[ImportResult | LedgerError | None] = [
            item if isinstance(item, LedgerError) else None for item in items
        ]
        accounts: dict[UUID, MarketplaceAccount | LedgerError] = {}
        planned: list[tuple[int, ImportItem, MarketplaceAccount, UUID]] = []
        for index, item in enumerate(items):
            if isinstance(item, LedgerError):
                continue
            account = accounts.get(item.account_id)
            if account is None:
                try:
                    account = self._account(item.account_id, seller)
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
        new: dict[UUID, tuple[int, ImportItem, MarketplaceAccount, UUID]] = {}
        later: list[tuple[int, ImportItem, MarketplaceAccount, UUID]] = []
        for entry in planned:
            if entry[3] in existing or entry[3] in new:
                later.append(entry)
            else:
                new[entry[3]] = entry
        for index, result in self._create_orders(ctx, list(new.values())):
            results[index] = result
        for index, item, account, _ in later:
            results[index] = self._import_caught(_item_context(ctx, item), account, item.order)
        assert all(result is not None for result in results)
        return results  # type: ignore[return-value] # every item has its result now

    def _create_orders(
        self, ctx: Context, entries: list[tuple[int, ImportItem, MarketplaceAccount, UUID]]
    ) -> list[tuple[int, ImportResult | LedgerError]]:
        """New orders (checked, absent a moment ago) made and saved in one transaction; alone on a conflict."""
        if not entries:
            return []
        keys = self.personal_data.keys_for(
            {(account.seller, item.order.buyer.email) for _, item, account, _ in entries}
        )
        made: list[tuple[int, Context, MarketplaceAccount, ImportedOrder, ImportedOrder, Order]] = []
        failed: list[tuple[int, ImportResult | LedgerError]] = []
        for index, item, account, _ in entries:
            key_id = key_id_for(account.seller, item.order.buyer.email)
            buyer, ship_to = PersonalData.protect_with(
                key_id, keys[key_id], item.order.buyer, item.order.ship_to
            )
            protected = dataclasses.replace(item.order, buyer=buyer, ship_to=ship_to)
            item_ctx = _item_context(ctx, item)
            try:
                order = Order.import_order(
                    item_ctx,
                    seller=account.seller,
                    account_id=account.id,
                    marketplace=account.marketplace,
                    order=protected,
                    third_party_managed=not account.fulfillment_managed,
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
            (index, ImportResult(order.id, True, order.version, _types([recording]), _position([recording])))
            for (index, *_, order), recording in zip(made, recordings, strict=True)
        ]

    def _existing_ids(self, order_ids: list[UUID]) -> set[UUID]:
        if isinstance(self.recorder, LedgerApplicationRecorder):
            return self.recorder.existing_originator_ids(order_ids)
        return {order_id for order_id in order_ids if self.recorder.select_events(order_id, limit=1)}

    def _import_caught(
        self,
        ctx: Context,
        account: MarketplaceAccount,
        order: ImportedOrder,
        sealed: ImportedOrder | None = None,
    ) -> ImportResult | LedgerError:
        try:
            return self._import_one(ctx, account, order, sealed)
        except LedgerError as e:
            return e

    def _import_one(
        self,
        ctx: Context,
        account: MarketplaceAccount,
        order: ImportedOrder,
        sealed: ImportedOrder | None = None,
    ) -> ImportResult:
        """`import_order` once the account is loaded and the order checked (`sealed`: the order with its
        personal fields sealed already, as a bulk import's new orders are)."""
        order_id = Order.create_id(account.seller, account.marketplace.value, order.marketplace_order_id)
        for _ in range(MAX_ATTEMPTS):
            existing = self._find_order(order_id)
            if existing is not None and ctx.idempotency_key is not None:
                versions = existing.versions_for_key(ctx.idempotency_key)
                if versions:  # a retry of an import we recorded: answer as the first time did
                    replay = self._replayed(existing, versions, ctx)
                    return ImportResult(order_id, versions[0] == 1, replay.version, replay.events)
            if existing is None:
                new = Order.import_order(
                    ctx,
                    seller=account.seller,
                    account_id=account.id,
                    marketplace=account.marketplace,
                    order=sealed or self._protected(account.seller, order),
                    third_party_managed=not account.fulfillment_managed,
                )
                try:
                    recordings = self._save(new)
                except IntegrityError:
                    continue  # imported concurrently by another writer: compare with theirs
                return ImportResult(order_id, True, new.version, _types(recordings), _position(recordings))
            existing.reimport(ctx, account.id, self._as_stored(existing, order), self.clock())
            try:
                recordings = self._save(existing)
            except IntegrityError:
                continue
            return ImportResult(order_id, False, existing.version, _types(recordings), _position(recordings))
        raise ConcurrentUpdateError(f"order {order.marketplace_order_id} kept changing; try again")

    def _protected(self, seller: str, order: ImportedOrder) -> ImportedOrder:
        """The order with its personal fields encrypted under the buyer's key (privacy.py). Callers check the
        plaintext first (`rules.check_imported_order`): the aggregate sees only tokens."""
        buyer, ship_to = self.personal_data.protect(seller, order.buyer, order.ship_to)
        return dataclasses.replace(order, buyer=buyer, ship_to=ship_to)

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

    def _shown(self, details: OrderDetails) -> OrderDetails:
        buyer, ship_to, _ = self.personal_data.reveal(details.buyer, details.ship_to)
        return dataclasses.replace(details, buyer=buyer, ship_to=ship_to)

    # ------------------------------------------------------------------------- order commands

    def ship(
        self,
        ctx: Context,
        order_id: UUID,
        *,
        carrier: Carrier,
        tracking_number: str,
        shipping_class: str = "",
        shipped_at: datetime | None = None,
        lines: tuple[LineQuantity, ...] | None = None,
        expected_version: int | None = None,
        seller: str | None = None,
    ) -> CommandResult:
        def command(order: Order) -> None:
            now = self.clock()
            order.ship(
                ctx,
                carrier=carrier,
                tracking_number=tracking_number,
                shipping_class=shipping_class,
                shipped_at=shipped_at or now,
                now=now,
                lines=lines,
            )

        return self._execute(ctx, order_id, expected_version, seller, command)

    def cancel(
        self,
        ctx: Context,
        order_id: UUID,
        *,
        reason: CancelReason,
        lines: tuple[LineQuantity, ...] | None = None,
        restock_in_ledger: bool | None = None,
        requested_by: Requester = Requester.SELLER,
        expected_version: int | None = None,
        seller: str | None = None,
    ) -> CommandResult:
        """`restock_in_ledger` defaults to the account's setting."""

        def command(order: Order) -> None:
            restock = restock_in_ledger
            if restock is None:
                restock = self._account(order.account_id, None, to_change=False).restock_in_ledger
            order.cancel(
                ctx,
                reason=reason,
                now=self.clock(),
                lines=lines,
                restock_in_ledger=restock,
                requested_by=requested_by,
            )

        return self._execute(ctx, order_id, expected_version, seller, command)

    def refund(
        self,
        ctx: Context,
        order_id: UUID,
        *,
        reason: RefundReason,
        lines: tuple[RefundRequestLine, ...] | None = None,
        shipping_amount: Decimal = Decimal(0),
        tax_amount: Decimal = Decimal(0),
        expected_version: int | None = None,
        seller: str | None = None,
    ) -> CommandResult:
        def command(order: Order) -> None:
            order.refund(
                ctx,
                reason=reason,
                lines=lines,
                shipping_amount=shipping_amount,
                tax_amount=tax_amount,
            )

        return self._execute(ctx, order_id, expected_version, seller, command)

    def record_payment(
        self,
        ctx: Context,
        order_id: UUID,
        *,
        paid_at: datetime | None = None,
        seller: str | None = None,
    ) -> CommandResult:
        def command(order: Order) -> None:
            order.clear_payment(ctx, paid_at or ctx.effective_at or self.clock())

        return self._execute(ctx, order_id, None, seller, command)

    def open_dispute(
        self,
        ctx: Context,
        order_id: UUID,
        *,
        reason: str,
        marketplace_dispute_id: str | None = None,
        expected_version: int | None = None,
        seller: str | None = None,
    ) -> CommandResult:
        def command(order: Order) -> None:
            order.open_dispute(ctx, reason=reason, marketplace_dispute_id=marketplace_dispute_id)

        return self._execute(ctx, order_id, expected_version, seller, command)

    def close_dispute(
        self,
        ctx: Context,
        order_id: UUID,
        *,
        dispute_id: UUID,
        outcome: DisputeOutcome,
        expected_version: int | None = None,
        seller: str | None = None,
    ) -> CommandResult:
        def command(order: Order) -> None:
            order.close_dispute(ctx, dispute_id=dispute_id, outcome=outcome)

        return self._execute(ctx, order_id, expected_version, seller, command)

    def restock(
        self,
        ctx: Context,
        order_id: UUID,
        *,
        lines: tuple[LineQuantity, ...],
        expected_version: int | None = None,
        seller: str | None = None,
    ) -> CommandResult:
        def command(order: Order) -> None:
            order.restock(ctx, lines=lines)

        return self._execute(ctx, order_id, expected_version, seller, command)

    def record_sync_outcome(
        self,
        ctx: Context,
        order_id: UUID,
        *,
        action: SyncAction,
        reference: str,
        accepted: bool,
        marketplace_reference: str | None = None,
        error_code: str = "",
        message: str = "",
        permanent: bool = False,
    ) -> CommandResult:
        """What a marketplace answered about a change we sent it (the dispatcher records every answer)."""

        def command(order: Order) -> None:
            if accepted:
                order.record_acknowledgement(
                    ctx,
                    action=action,
                    reference=reference,
                    marketplace_reference=marketplace_reference,
                )
            else:
                order.record_rejection(
                    ctx,
                    action=action,
                    reference=reference,
                    error_code=error_code,
                    message=message,
                    permanent=permanent,
                )

        return self._execute(ctx, order_id, None, None, command)

    def _execute(
        self,
        ctx: Context,
        order_id: UUID,
        expected_version: int | None,
        seller: str | None,
        command: Callable[[Order], None],
    ) -> CommandResult:
        """Load, check the expected version, run, save; on a write conflict, reload and run again."""
        for _ in range(MAX_ATTEMPTS):
            order = self._order(order_id, seller)
            if ctx.idempotency_key is not None:
                versions = order.versions_for_key(ctx.idempotency_key)
                if versions:
                    return self._replayed(order, versions, ctx)
            if expected_version is not None and order.version != expected_version:
                msg = f"order {order_id} is at version {order.version}, not {expected_version}"
                raise VersionMismatchError(msg)
            command(order)
            try:
                recordings = self._save(order)
            except IntegrityError:
                if expected_version is not None:
                    msg = f"order {order_id} changed after version {expected_version}"
                    raise VersionMismatchError(msg) from None
                continue
            events = [r.domain_event for r in recordings]
            return CommandResult(
                order_id=order_id,
                version=order.version,
                events=_types(recordings),
                ids=_ids(events),
                notification_id=_position(recordings),
            )
        msg = f"order {order_id} kept changing while this command retried; try again"
        raise ConcurrentUpdateError(msg)

    def _replayed(self, order: Order, versions: list[int], ctx: Context) -> CommandResult:
        events = list(self.events.get(order.id, gt=versions[0] - 1, lte=versions[-1]))
        first_digest = getattr(events[0], "request_digest", None)
        if None not in (first_digest, ctx.request_digest) and first_digest != ctx.request_digest:
            msg = f"idempotency key {ctx.idempotency_key!r} was used for a different request"
            raise IdempotencyKeyReusedError(msg, "Idempotency-Key")
        return CommandResult(
            order_id=order.id,
            version=versions[-1],
            events=tuple(type(e).__name__ for e in events),
            ids=_ids(events),
            replayed=True,
        )

    # -------------------------------------------------------------------------------- queries

    def get_order(self, order_id: UUID, seller: str | None = None) -> OrderDetails:
        return self._shown(OrderDetails.of(self._order(order_id, seller)))

    def find_order(self, seller: str, marketplace: Marketplace, marketplace_order_id: str) -> OrderDetails:
        order_id = Order.create_id(seller, marketplace.value, marketplace_order_id)
        return self.get_order(order_id, seller)

    def order_as_of(
        self,
        order_id: UUID,
        *,
        version: int | None = None,
        at: datetime | None = None,
        seller: str | None = None,
    ) -> OrderDetails:
        """The order as it stood at a version or a time, rebuilt from its events."""
        current = self._order(order_id, seller)
        if at is not None:
            if at.tzinfo is None:
                raise InvalidInputError("as_of needs a time zone", "as_of")
            stamps = [e.timestamp for e in self.events.get(order_id)]  # type: ignore[attr-defined]
            version = sum(1 for stamp in stamps if stamp <= at)
            if version == 0:
                msg = f"order {order_id} did not exist yet at {at.isoformat()}"
                raise OrderNotFoundError(msg)
        if version is None:
            return self._shown(OrderDetails.of(current))
        if not 1 <= version <= current.version:
            raise InvalidInputError(f"version must be 1 to {current.version}", "version")
        return self._shown(OrderDetails.of(self.repository.get(order_id, version=version)))

    def order_history(self, order_id: UUID, seller: str | None = None) -> list[HistoryEntry]:
        order = self._order(order_id, seller)
        entries = [HistoryEntry.of(e) for e in self.events.get(order_id)]  # type: ignore[arg-type]
        buyer, ship_to, _ = self.personal_data.reveal(order.buyer, order.ship_to)
        shown = {"buyer": canonical(buyer), "ship_to": canonical(ship_to)}
        # Only the import carries personal data; its hash stays the hash of what is stored (the tokens).
        return [
            dataclasses.replace(e, data={**e.data, **{k: v for k, v in shown.items() if k in e.data}})
            if e.type == "Imported"
            else e
            for e in entries
        ]

    def _order(self, order_id: UUID, seller: str | None) -> Order:
        order = self._find_order(order_id)
        if order is None or (seller is not None and order.seller != seller):
            raise OrderNotFoundError(f"no order {order_id}")
        return order

    def _find_order(self, order_id: UUID) -> Order | None:
        try:
            order: object = self.repository.get(order_id)
        except AggregateNotFoundError:
            return None
        return order if isinstance(order, Order) else None


KEY_PREFIX = "lk_"
MAX_SECRET_LENGTH = 200
KEY_CACHE_SECONDS = 2.0
"""How long an authenticated key is trusted without reading its events again: the longest a key revoked by
another process (`ledger keys revoke`, another server process) keeps working here."""
KEY_CACHE_SIZE = 10_000


class KeyCache:
    """Active API keys recently authenticated, by the hash of their secret, each for KEY_CACHE_SECONDS.

    Why: loading the key's aggregate on every request was about a tenth of a command's CPU in the server
    (BENCHMARKS.md). Only active keys are kept (an unknown secret is looked up every time, so guessing fills
    nothing), at most KEY_CACHE_SIZE of them. The Ledger forgets a key it revokes, so revocation through the
    same process takes effect at once."""

    def __init__(
        self, monotonic: Callable[[], float] = time.monotonic, seconds: float = KEY_CACHE_SECONDS
    ) -> None:
        self._monotonic = monotonic
        self._seconds = seconds
        self._keys: dict[str, tuple[float, KeyDetails]] = {}
        self._lock = threading.Lock()
        self.revision = 0
        """Counts revocations: a key read before one is not kept (it may be the key just revoked)."""

    def get(self, key_hash: str) -> KeyDetails | None:
        entry = self._keys.get(key_hash)
        if entry is None:
            return None
        if self._monotonic() >= entry[0]:
            self._keys.pop(key_hash, None)
            return None
        return entry[1]

    def put(self, key_hash: str, key: KeyDetails, revision: int) -> None:
        """Keep `key`, read when `revision` was current, unless a key was revoked since."""
        with self._lock:
            if revision != self.revision:
                return
            if len(self._keys) >= KEY_CACHE_SIZE:
                self._keys.clear()
            self._keys[key_hash] = (self._monotonic() + self._seconds, key)

    def forget(self, key_hash: str) -> None:
        with self._lock:
            self.revision += 1
            self._keys.pop(key_hash, None)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_seller(seller: str) -> None:
    if not seller.strip() or len(seller) > 100:
        raise InvalidInputError("seller must be 1 to 100 characters", "seller")


def _item_context(ctx: Context, item: ImportItem) -> Context:
    if item.idempotency_key is None:
        return ctx
    return dataclasses.replace(ctx, idempotency_key=item.idempotency_key)


def _types(recordings: list[Recording[UUID]]) -> tuple[str, ...]:
    return tuple(type(r.domain_event).__name__ for r in recordings)


def _position(recordings: list[Recording[UUID]]) -> int | None:
    return recordings[-1].notification.id if recordings else None


def _ids(events: list[Any]) -> dict[str, UUID]:
    ids: dict[str, UUID] = {}
    for event in events:
        for name in ID_FIELDS:
            value = getattr(event, name, None)
            if isinstance(value, UUID):
                ids.setdefault(name, value)
    return ids

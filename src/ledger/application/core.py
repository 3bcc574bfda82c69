"""What every handler of the Ledger shares: the generic command path and the loaders.

An order command is: load the order (another seller's order is not found), answer a request its seller made
before under the same idempotency key (`_replayed`: the stored result again, or 422 for another request under
the key), check the version the caller expects (If-Match), call the command's handler, save the events and the
result under the key in one transaction; on a write conflict, reload and run again, at most MAX_ATTEMPTS times
(`_run`). The key is checked before the version, and again after every conflict: of concurrent identical
requests one records and every other one replays, whatever If-Match they carry. The
handlers (orders.py, imports.py, accounts.py, keys.py) are subclasses' methods or functions of a `LedgerCore`;
ledger.py puts them together. Persistence (saving, the stores, the library's internals) is
ledger.eventstore.application's `EventStoreApplication`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, Recording

from ledger.aggregates.account import MarketplaceAccount
from ledger.aggregates.errors import InvalidInputError
from ledger.aggregates.order import Order
from ledger.aggregates.values import Context
from ledger.application.commands import OrderCommand
from ledger.application.errors import (
    AccountNotFoundError,
    ConcurrentUpdateError,
    IdempotencyKeyReusedError,
    OrderNotFoundError,
    VersionMismatchError,
)
from ledger.application.queries import ID_FIELDS, CommandResult, ImportResult
from ledger.eventstore.application import EventStoreApplication
from ledger.eventstore.idempotency import StoredResponse

MAX_ATTEMPTS = 8
SYNC_ON_SECONDS = 1.0
"""How long a command may take an account's sync as on without reading the account again (`_sync_context`)."""

OrderHandler = Callable[["LedgerCore", Order, Any], None]
"""One order command's step between load and save: call the aggregate (orders.py)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class LedgerCore(EventStoreApplication):
    """The generic command path and the loaders every handler uses; `clock` is the time commands record."""

    def __init__(self, env: dict[str, str] | None = None, clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__(env)
        self.clock = clock
        self._sync_on_until: dict[UUID, float] = {}

    def _run(self, cmd: OrderCommand, handler: OrderHandler) -> CommandResult:
        """Load, replay a request seen before, check the expected version, run, save with the result under the
        key; on a write conflict (another writer, or the same key's first request), reload and run again."""
        for _ in range(MAX_ATTEMPTS):
            order = self._order(cmd.order_id, cmd.seller)
            asked = Asked.of(cmd.ctx, order.seller, f"{type(cmd).__name__} {cmd.order_id}")
            if asked is not None:
                replayed = self._replayed(order, asked)
                if replayed is not None:
                    return replayed
            if cmd.expected_version is not None and order.version != cmd.expected_version:
                msg = f"order {cmd.order_id} is at version {order.version}, not {cmd.expected_version}"
                raise VersionMismatchError(msg)
            handler(self, order, dataclasses.replace(cmd, ctx=self._sync_context(cmd.ctx, order.account_id)))
            result = CommandResult(
                order_id=cmd.order_id,
                version=order.version,
                events=pending_names(order),
                ids=made_ids(list(order.pending_events)),
            )
            try:
                recordings = self._save(order, responses=stored_with(asked, result))
            except IntegrityError:
                continue  # the next round replays the key's first request, or finds the version moved on
            return dataclasses.replace(result, notification_id=log_position(recordings))
        msg = f"order {cmd.order_id} kept changing while this command retried; try again"
        raise ConcurrentUpdateError(msg)

    def _replayed(self, order: Order, asked: Asked) -> CommandResult | None:
        """The result of the request first made under the key, None if the key is new; IdempotencyKeyReusedError
        if the key was used for another request (another command, order or endpoint, or another body)."""
        stored = self._answered(asked)
        if stored is not None:
            return result_of(stored)
        # Keys recorded on the order's events before results were stored under them (within the 30 days).
        versions = order.versions_for_key(asked.key)
        return self._replayed_from_events(order, versions, asked.ctx) if versions else None

    def _answered(self, asked: Asked) -> dict[str, Any] | None:
        """The body stored under the seller's key for this request, None if the key is new;
        IdempotencyKeyReusedError if the key was used for another request."""
        stored = self.stored_response(asked.seller, asked.key)
        if stored is None:
            return None
        if not stored.answers(asked.operation, asked.digest):
            msg = f"idempotency key {asked.key!r} was used for a different request: use a new key for a new request"
            raise IdempotencyKeyReusedError(msg, "Idempotency-Key")
        body: dict[str, Any] = json.loads(stored.body)
        return body

    def _replayed_from_events(self, order: Order, versions: list[int], ctx: Context) -> CommandResult:
        """What the command that recorded these versions under ctx's idempotency key answered (imports keep
        their keys on the order's events, imports.py)."""
        events = list(self.events.get(order.id, gt=versions[0] - 1, lte=versions[-1]))
        first_digest = getattr(events[0], "request_digest", None)
        if None not in (first_digest, ctx.request_digest) and first_digest != ctx.request_digest:
            msg = f"idempotency key {ctx.idempotency_key!r} was used for a different request"
            raise IdempotencyKeyReusedError(msg, "Idempotency-Key")
        return CommandResult(
            order_id=order.id,
            version=versions[-1],
            events=tuple(type(e).__name__ for e in events),
            ids=made_ids(events),
            replayed=True,
        )

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

    def _sync_context(self, ctx: Context, account_id: UUID) -> Context:
        """`ctx` marked `sync_off` while the account's sync with its marketplace is off: what the command
        changes is recorded and never sent (the order's `sync` shows `not_sent`, reason `sync_off`).

        Reading the account was an eighth of a command's CPU in the server (BENCHMARKS.md, issue 17 target 1),
        for a setting that almost never changes, so "sync on" is remembered for SYNC_ON_SECONDS; "sync off" and
        unknown accounts are read every time. This Ledger forgets it at once when it changes the account itself
        (`forget_sync`). Another process's change to "off" can be missed for up to SYNC_ON_SECONDS: a change
        made then is queued, and the dispatcher, which reads the account before every send, never sends it: the
        item dies with the reason "sync off" and the order shows attention. A change to "on" is seen at once."""
        now = time.monotonic()
        if self._sync_on_until.get(account_id, 0.0) > now:
            return ctx
        try:
            account = self._account(account_id, None, to_change=False)
        except AccountNotFoundError:
            return ctx
        if not account.sync_enabled:
            return dataclasses.replace(ctx, sync_off=True)
        self._sync_on_until[account_id] = now + SYNC_ON_SECONDS
        return ctx

    def forget_sync(self, account_id: UUID) -> None:
        """The next command reads the account's sync setting again (called when this Ledger changes it)."""
        self._sync_on_until.pop(account_id, None)

    def _account(self, account_id: UUID, seller: str | None, *, to_change: bool = True) -> MarketplaceAccount:
        """`to_change=False`: the caller only reads it (shared with the cache, not copied)."""
        try:
            account: MarketplaceAccount = self.repository.get(account_id, deepcopy_from_cache=to_change)
        except AggregateNotFoundError:
            raise AccountNotFoundError(f"no account {account_id}") from None
        if not isinstance(account, MarketplaceAccount) or (seller is not None and account.seller != seller):
            raise AccountNotFoundError(f"no account {account_id}")
        return account


@dataclass(frozen=True)
class Asked:
    """A request under an idempotency key, as its stored row names it: the seller the key belongs to, what was
    asked (the command and its order) and the digest of the request (the API's method, path and body; the
    CLI's arguments; "" for the ledger's own keys, whose retries replay whatever their other details)."""

    ctx: Context
    seller: str
    key: str
    operation: str
    digest: str

    @classmethod
    def of(cls, ctx: Context, seller: str, operation: str) -> Asked | None:
        key = ctx.idempotency_key
        if key is None:
            return None
        return cls(ctx, seller, key, operation, ctx.request_digest or "")

    def response(self, result: CommandResult | ImportResult) -> StoredResponse:
        """The row to store: the result, with everything a replay needs to answer as the first time did."""
        body: dict[str, Any] = {"order_id": str(result.order_id), "version": result.version}
        body["events"] = list(result.events)
        status = 201
        if isinstance(result, ImportResult):
            body["created"] = result.created
            status = 201 if result.created else 200
        else:
            body["ids"] = {name: str(value) for name, value in result.ids.items()}
        return StoredResponse(
            self.seller, self.key, self.operation, self.digest, status, json.dumps(body).encode()
        )


def result_of(body: dict[str, Any]) -> CommandResult:
    """The result an order command stored under its key, as a replay (`Asked.response` wrote it)."""
    return CommandResult(
        order_id=UUID(body["order_id"]),
        version=body["version"],
        events=tuple(body["events"]),
        ids={name: UUID(value) for name, value in body["ids"].items()},
        replayed=True,
    )


def stored_with(asked: Asked | None, result: CommandResult | ImportResult) -> list[StoredResponse]:
    """What to store with a command's events: its result under the key, if it has one."""
    return [] if asked is None else [asked.response(result)]


def pending_names(aggregate: Any) -> tuple[str, ...]:
    """The names of the events the aggregate will record when saved."""
    return tuple(type(e).__name__ for e in aggregate.pending_events)


def check_seller(seller: str) -> None:
    if not seller.strip() or len(seller) > 100:
        raise InvalidInputError("seller must be 1 to 100 characters", "seller")


def event_names(recordings: list[Recording[UUID]]) -> tuple[str, ...]:
    return tuple(type(r.domain_event).__name__ for r in recordings)


def log_position(recordings: list[Recording[UUID]]) -> int | None:
    """The last recording's position in the global log (for read-your-writes)."""
    return recordings[-1].notification.id if recordings else None


def made_ids(events: list[Any]) -> dict[str, UUID]:
    ids: dict[str, UUID] = {}
    for event in events:
        for name in ID_FIELDS:
            value = getattr(event, name, None)
            if isinstance(value, UUID):
                ids.setdefault(name, value)
    return ids

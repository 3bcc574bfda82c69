"""API keys: create, list, revoke, and authenticate a request's secret (with the cache of recent keys).

A key's secret is shown once, when it is made, and never stored: the key is found by the SHA-256 of its secret
(`ApiKey.create_id(hash)`), and a seller's keys are listed by a `SellerApiKeys` index aggregate.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from ledger.aggregates.api_key import ApiKey, SellerApiKeys
from ledger.aggregates.values import Context, Role
from ledger.application.core import MAX_ATTEMPTS, LedgerCore, check_seller
from ledger.application.errors import ApiKeyNotFoundError, ConcurrentUpdateError
from ledger.application.queries import KeyDetails

KEY_PREFIX = "lk_"
MAX_SECRET_LENGTH = 200
KEY_CACHE_SECONDS = 2.0
"""How long an authenticated key is trusted without reading its events again: the longest a key revoked by
another process (`ledger keys revoke`, another server process) keeps working here."""
KEY_CACHE_SIZE = 10_000


class KeyCache:
    """Active API keys recently authenticated, by key id, each for KEY_CACHE_SECONDS.

    Why: loading the key's aggregate on every request was about a tenth of a command's CPU in the server
    (BENCHMARKS.md). Only active keys are kept (an unknown secret is looked up every time, so guessing fills
    nothing), at most KEY_CACHE_SIZE of them. The Ledger forgets a key it revokes, so revocation through the
    same process takes effect at once."""

    def __init__(
        self, monotonic: Callable[[], float] = time.monotonic, seconds: float = KEY_CACHE_SECONDS
    ) -> None:
        self._monotonic = monotonic
        self._seconds = seconds
        self._keys: dict[UUID, tuple[float, KeyDetails]] = {}
        self._lock = threading.Lock()
        self.revision = 0
        """Counts revocations: a key read before one is not kept (it may be the key just revoked)."""

    def get(self, key_id: UUID) -> KeyDetails | None:
        entry = self._keys.get(key_id)
        if entry is None:
            return None
        if self._monotonic() >= entry[0]:
            self._keys.pop(key_id, None)
            return None
        return entry[1]

    def put(self, key_id: UUID, key: KeyDetails, revision: int) -> None:
        """Keep `key`, read when `revision` was current, unless a key was revoked since."""
        with self._lock:
            if revision != self.revision:
                return
            if len(self._keys) >= KEY_CACHE_SIZE:
                self._keys.clear()
            self._keys[key_id] = (self._monotonic() + self._seconds, key)

    def forget(self, key_id: UUID) -> None:
        with self._lock:
            self.revision += 1
            self._keys.pop(key_id, None)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@functools.lru_cache(maxsize=4096)
def _key_id(key_hash: str) -> UUID:
    """`ApiKey.create_id`, remembered for the hashes seen lately: a uuid5 is most of what asking the cache costs,
    on every request."""
    return ApiKey.create_id(key_hash)


class ApiKeys(LedgerCore):
    """The API-key handlers; `keys` is the cache of recently authenticated keys (the Ledger makes it)."""

    keys: KeyCache

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
            self.keys.forget(key.id)
            return KeyDetails.of(key)
        raise ConcurrentUpdateError(f"API key {key_id} kept changing; try again")

    def authenticate(self, secret: str) -> KeyDetails | None:
        """The active key whose secret this is; None for an unknown or revoked key.

        An active key found here is remembered for KEY_CACHE_SECONDS (see KeyCache): revoking it through this
        Ledger takes effect at once, revoking it through another process within that bound."""
        if not secret.startswith(KEY_PREFIX) or len(secret) > MAX_SECRET_LENGTH:
            return None
        key_hash = hash_secret(secret)
        return self._active_key(ApiKey.create_id(key_hash), key_hash)

    def active_key(self, key_id: UUID) -> KeyDetails | None:
        """The key with this id if it is active (a web session's key, checked on every request); None if it
        is unknown or revoked. Cached as `authenticate` is."""
        return self._active_key(key_id, None)

    def _active_key(self, key_id: UUID, key_hash: str | None) -> KeyDetails | None:
        cached = self.keys.get(key_id)
        if cached is not None:
            return cached
        revision = self.keys.revision
        try:
            key: object = self.repository.get(key_id, deepcopy_from_cache=False)
        except AggregateNotFoundError:
            return None
        if not isinstance(key, ApiKey) or key.revoked:
            return None
        if key_hash is not None and not hmac.compare_digest(key.key_hash, key_hash):
            return None
        details = KeyDetails.of(key)
        self.keys.put(key_id, details, revision)
        return details

    def cached_key(self, secret: str) -> KeyDetails | None:
        """The active key of this secret if it was authenticated recently (no I/O: callable from an event
        loop); None means "ask `authenticate`", not "unknown"."""
        if not secret.startswith(KEY_PREFIX) or len(secret) > MAX_SECRET_LENGTH:
            return None
        return self.keys.get(_key_id(hash_secret(secret)))

    def _key_index(self, seller: str) -> SellerApiKeys:
        try:
            index: SellerApiKeys = self.repository.get(SellerApiKeys.create_id(seller))
        except AggregateNotFoundError:
            return SellerApiKeys(seller=seller)
        return index

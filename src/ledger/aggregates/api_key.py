"""API keys: one aggregate per key, found by the hash of its secret; a per-seller index lists them.

Only the SHA-256 of a secret is ever stored. The key's id is a UUIDv5 of that hash, so authenticating a
request is one repository read, and every key's creation and revocation stays in the audit log.
"""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from ledger.aggregates.errors import InvalidInputError
from ledger.aggregates.values import Context, Role

KEY_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledger.dev/api-keys")
SELLER_KEYS_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledger.dev/sellers/api-keys")
MAX_KEY_NAME = 100


def check_key_name(name: str) -> str:
    name = name.strip()
    if len(name) > MAX_KEY_NAME:
        raise InvalidInputError(f"name must be at most {MAX_KEY_NAME} characters", "name")
    return name


class ApiKey(Aggregate):
    """A key that acts for one seller with one role, until revoked."""

    @staticmethod
    def create_id(key_hash: str) -> UUID:
        return uuid5(KEY_NAMESPACE, key_hash)

    @event("Created")
    def __init__(self, key_hash: str, seller: str, role: str, name: str, actor: str, source: str) -> None:
        self.key_hash = key_hash
        self.seller = seller
        self.role = Role(role)
        self.name = name
        self.created_by = actor
        self.revoked_at: datetime | None = None

    @classmethod
    def issue(cls, ctx: Context, *, key_hash: str, seller: str, role: Role, name: str) -> ApiKey:
        return cls(
            key_hash=key_hash,
            seller=seller,
            role=role.value,
            name=check_key_name(name),
            actor=ctx.actor,
            source=ctx.source.value,
        )

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def revoke(self, ctx: Context, at: datetime) -> bool:
        """Revoke the key; returns whether it was active (revoking twice records nothing)."""
        if self.revoked:
            return False
        self._revoke(revoked_at=at, actor=ctx.actor, source=ctx.source.value)
        return True

    @event("Revoked")
    def _revoke(self, revoked_at: datetime, actor: str, source: str) -> None:
        self.revoked_at = revoked_at


class SellerApiKeys(Aggregate):
    """The keys of one seller, saved with each new key so that listing needs no scan."""

    @staticmethod
    def create_id(seller: str) -> UUID:
        return uuid5(SELLER_KEYS_NAMESPACE, seller)

    @event("Started")
    def __init__(self, seller: str) -> None:
        self.seller = seller
        self.key_ids: list[UUID] = []

    @event("KeyAdded")
    def add(self, key_id: UUID) -> None:
        self.key_ids.append(key_id)

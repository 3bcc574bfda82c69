"""API keys on real PostgreSQL: only the hash is stored, lookup by hash, revocation, listing per seller."""

from __future__ import annotations

import hashlib

import pytest
from api_support import CTX

from ledger.aggregates.values import Role
from ledger.application.errors import ApiKeyNotFoundError
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget, connect


def test_key_authenticates_until_revoked(api_ledger: Ledger) -> None:
    """A new key authenticates as its seller and role; once revoked, it does not."""
    secret, key = api_ledger.create_api_key(CTX, seller="keys-a", role=Role.FINANCE, name="books")
    found = api_ledger.authenticate(secret)
    assert found is not None
    assert (found.key_id, found.seller, found.role, found.name) == (key.key_id, "keys-a", "finance", "books")
    api_ledger.revoke_api_key(CTX, key.key_id)
    assert api_ledger.authenticate(secret) is None


def test_unknown_and_malformed_secrets_do_not_authenticate(api_ledger: Ledger) -> None:
    """Secrets the ledger never issued, or not in its format, authenticate nobody."""
    assert api_ledger.authenticate("lk_" + "x" * 43) is None
    assert api_ledger.authenticate("not-a-key") is None
    assert api_ledger.authenticate("") is None


def test_only_the_hash_is_stored(api_ledger: Ledger, pg_target: PostgresTarget) -> None:
    """The secret never reaches the database; its SHA-256 does."""
    secret, _ = api_ledger.create_api_key(CTX, seller="keys-b", role=Role.ADMIN)
    with connect(pg_target) as conn:
        rows = conn.execute("SELECT state FROM ledger_events").fetchall()
    stored = b"".join(bytes(row[0]) for row in rows)
    assert secret.encode() not in stored
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored


def test_keys_are_listed_per_seller(api_ledger: Ledger) -> None:
    """Each seller lists its own keys only, revoked ones marked."""
    _, first = api_ledger.create_api_key(CTX, seller="keys-c", role=Role.ADMIN)
    _, second = api_ledger.create_api_key(CTX, seller="keys-c", role=Role.AUDITOR)
    api_ledger.create_api_key(CTX, seller="keys-d", role=Role.ADMIN)
    api_ledger.revoke_api_key(CTX, second.key_id, seller="keys-c")
    listed = {k.key_id: k for k in api_ledger.list_api_keys("keys-c")}
    assert set(listed) == {first.key_id, second.key_id}
    assert listed[first.key_id].active
    assert not listed[second.key_id].active


def test_another_sellers_key_cannot_be_revoked(api_ledger: Ledger) -> None:
    """Revoking with another seller's scope is not-found, and the key keeps working."""
    secret, key = api_ledger.create_api_key(CTX, seller="keys-e", role=Role.ADMIN)
    with pytest.raises(ApiKeyNotFoundError):
        api_ledger.revoke_api_key(CTX, key.key_id, seller="keys-f")
    assert api_ledger.authenticate(secret) is not None

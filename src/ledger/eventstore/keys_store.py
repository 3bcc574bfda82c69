"""Crypto-shredding of buyers' personal data (name, email, ship-to address).

Events are permanent and hashed into each order's chain, so personal data is never written to them in the
clear: the application encrypts it before the aggregate sees it, with a key per buyer (per seller and
normalized email) kept outside the event log, in `personal_data_keys`. An event stores tokens
`pd1:<key id>:<base64url(nonce || AES-GCM ciphertext)>`; the chain hashes the tokens, so it still verifies
once the key is destroyed. Reads decrypt while the key exists and show `[erased]` after. A value without the
token prefix is plaintext (events recorded before encryption), shown as it is: forgetting cannot erase it.

Destroying a key (`ledger privacy forget`) is final for every copy made from the events; the read models'
decrypted copies are scrubbed in the same transaction. Keys sit in the same database as the events: a backup
taken before the forget still holds the key (wrap keys with a KMS to close that gap).

Leaf module: the application, the All Sales projection and the reports use it; it imports only the standard
library, `cryptography` and psycopg.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import operator
import os
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql
from psycopg.rows import tuple_row

from ledger.aggregates.values import Address, Buyer

TOKEN_PREFIX = "pd1:"  # noqa: S105 - a marker, not a secret
ERASED = "[erased]"
KEY_BYTES = 32
NONCE_BYTES = 12
ADDRESS_FIELDS = tuple(f.name for f in dataclasses.fields(Address))
SEALED_FIELDS = 2 + len(ADDRESS_FIELDS)  # the buyer's name and email, and the address


def key_id_for(seller: str, email: str) -> str:
    """The buyer's key id: derived from the seller and the normalized email, so every order finds it."""
    return hashlib.sha256(f"{seller}\x1f{email.strip().lower()}".encode()).hexdigest()[:32]


def is_token(value: object) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


def token_key_id(token: str) -> str:
    return token[len(TOKEN_PREFIX) :].partition(":")[0]


def encrypt(key: bytes, key_id: str, plaintext: str) -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), key_id.encode())
    return f"{TOKEN_PREFIX}{key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode('ascii')}"


def decrypt(keys: Mapping[str, bytes], value: str) -> str:
    """Plaintext of a token whose key is in `keys`; ERASED if the key is gone (or the token is damaged);
    any other value unchanged."""
    if not is_token(value):
        return value
    key_id, _, body = value[len(TOKEN_PREFIX) :].partition(":")
    key = keys.get(key_id)
    if key is None:
        return ERASED
    try:
        raw = base64.urlsafe_b64decode(body)
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], key_id.encode()).decode()
    except (InvalidTag, ValueError, binascii.Error):
        return ERASED


def key_ids_in(values: Iterable[object]) -> set[str]:
    return {token_key_id(v) for v in values if isinstance(v, str) and is_token(v)}


def personal_values(buyer: Buyer, ship_to: Address | None) -> list[object]:
    values: list[object] = [buyer.name, buyer.email]
    if ship_to is not None:
        values += [getattr(ship_to, f.name) for f in dataclasses.fields(ship_to)]
    return values


class KeyStore(Protocol):
    def key_for(self, seller: str, email: str) -> tuple[str, bytes]:
        """The buyer's live key, made if it does not exist (or was destroyed: a new buyer history starts)."""

    def live_keys(self, key_ids: Iterable[str]) -> dict[str, bytes]:
        """The keys among `key_ids` that exist and are not destroyed."""

    def keys_for(self, buyers: Collection[tuple[str, str]]) -> dict[str, bytes]:
        """`key_for` for many (seller, email) pairs at once, by key id: one transaction for the lot."""


NONCE_POOL_BYTES = 16_384


class _NoncePool(threading.local):
    """Random bytes for nonces, read from the system's random source 16 KiB at a time, per thread, each byte
    handed out once. Each read releases the GIL, and a thread that releases it under load waits for it again
    (a bulk import seals thousands of fields). A forked process starts with an empty pool (it would otherwise
    hand out its parent's bytes a second time: a nonce reused under the same key)."""

    def __init__(self) -> None:
        self.pid = 0
        self.buffer = b""
        self.used = 0

    def take(self, size: int) -> bytes:
        pid = os.getpid()
        if self.used + size > len(self.buffer) or pid != self.pid:
            self.pid, self.buffer, self.used = pid, os.urandom(max(size, NONCE_POOL_BYTES)), 0
        start = self.used
        self.used += size
        return self.buffer[start : self.used]


_NONCES = _NoncePool()
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_ADDRESS_VALUES = operator.attrgetter(*ADDRESS_FIELDS)


class Sealer:
    """Seals one buyer's personal fields under their key: the AES-GCM key schedule, the associated data and
    the token prefix made once (a bulk import keeps one per buyer of the batch)."""

    def __init__(self, key_id: str, key: bytes) -> None:
        self._encrypt = AESGCM(key).encrypt
        self._aad = key_id.encode()
        self._prefix = f"{TOKEN_PREFIX}{key_id}:"

    def seal(self, buyer: Buyer, ship_to: Address | None) -> tuple[Buyer, Address | None]:
        """Every non-empty field not sealed already becomes a token (`encrypt`'s format), each under a nonce of
        its own from the system's random source (`_NoncePool`)."""
        values: tuple[str, ...] = (buyer.name, buyer.email)
        if ship_to is not None:
            values += _ADDRESS_VALUES(ship_to)
        nonces = _NONCES.take(NONCE_BYTES * len(values))
        encrypt, aad, prefix = self._encrypt, self._aad, self._prefix
        sealed: list[str] = []
        for index, value in enumerate(values):
            if not value or value.startswith(TOKEN_PREFIX):
                sealed.append(value)
                continue
            nonce = nonces[index * NONCE_BYTES : (index + 1) * NONCE_BYTES]
            raw = binascii.b2a_base64(nonce + encrypt(nonce, value.encode(), aad), newline=False)
            sealed.append(prefix + raw.translate(_URLSAFE).decode("ascii"))  # = base64.urlsafe_b64encode
        protected_buyer = Buyer(sealed[0], sealed[1])
        return protected_buyer, None if ship_to is None else Address(*sealed[2:])


class PersonalData:
    """Protect personal fields before they become events; reveal them for reads."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    def protect(self, seller: str, buyer: Buyer, ship_to: Address | None) -> tuple[Buyer, Address | None]:
        key_id, key = self.keys.key_for(seller, buyer.email)
        return self.protect_with(key_id, key, buyer, ship_to)

    def keys_for(self, buyers: Collection[tuple[str, str]]) -> dict[str, bytes]:
        """The live keys of many (seller, email) buyers, made where missing, by key id (see `protect_with`)."""
        return self.keys.keys_for(buyers)

    @staticmethod
    def protect_with(
        key_id: str, key: bytes, buyer: Buyer, ship_to: Address | None
    ) -> tuple[Buyer, Address | None]:
        """`protect` with the buyer's key already at hand (a bulk import fetches all its buyers' keys at once)."""
        return Sealer(key_id, key).seal(buyer, ship_to)

    def reveal(self, buyer: Buyer, ship_to: Address | None) -> tuple[Buyer, Address | None, bool]:
        """(buyer, ship_to, erased): the plaintext, with ERASED where the key is gone."""
        return self.reveal_all([(buyer, ship_to)])[0]

    def reveal_all(
        self, people: Sequence[tuple[Buyer, Address | None]]
    ) -> list[tuple[Buyer, Address | None, bool]]:
        """`reveal` of many buyers with one read of their keys (a page of the change feed)."""
        key_ids = key_ids_in(value for buyer, ship_to in people for value in personal_values(buyer, ship_to))
        keys = self.keys.live_keys(key_ids) if key_ids else {}
        return [_shown(keys, buyer, ship_to) for buyer, ship_to in people]


def _shown(
    keys: Mapping[str, bytes], buyer: Buyer, ship_to: Address | None
) -> tuple[Buyer, Address | None, bool]:
    if not key_ids_in(personal_values(buyer, ship_to)):
        return buyer, ship_to, False
    shown_buyer = Buyer(decrypt(keys, buyer.name), decrypt(keys, buyer.email))
    shown_ship_to = ship_to
    if ship_to is not None:
        changes = {f.name: decrypt(keys, getattr(ship_to, f.name)) for f in dataclasses.fields(ship_to)}
        shown_ship_to = dataclasses.replace(ship_to, **changes)
    erased = ERASED in personal_values(shown_buyer, shown_ship_to)
    return shown_buyer, shown_ship_to, erased


# ----------------------------------------------------------------------------------- key stores


class MemoryKeys:
    """Keys in memory: for the application on in-memory persistence (unit tests)."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes | None] = {}
        self._lock = threading.Lock()

    def key_for(self, seller: str, email: str) -> tuple[str, bytes]:
        key_id = key_id_for(seller, email)
        with self._lock:
            key = self._keys.get(key_id)
            if key is None:
                key = self._keys[key_id] = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
            return key_id, key

    def live_keys(self, key_ids: Iterable[str]) -> dict[str, bytes]:
        with self._lock:
            return {k: v for k in key_ids if (v := self._keys.get(k)) is not None}

    def keys_for(self, buyers: Collection[tuple[str, str]]) -> dict[str, bytes]:
        return dict(self.key_for(seller, email) for seller, email in buyers)

    def destroy(self, seller: str, email: str) -> bool:
        with self._lock:
            key_id = key_id_for(seller, email)
            if self._keys.get(key_id) is None:
                return False
            self._keys[key_id] = None
            return True


class PostgresKeys:
    """Keys in `personal_data_keys`, through the eventsourcing datastore's connection pool."""

    def __init__(self, datastore: Any, *, read_only: bool = False) -> None:
        self.datastore = datastore
        self.table = sql.Identifier(datastore.schema or "public", "personal_data_keys")  # migration 0001
        # On a read replica nothing can be locked (and nothing is written there that a forget must scrub).
        self.read_only = read_only

    def key_for(self, seller: str, email: str) -> tuple[str, bytes]:
        key_id = key_id_for(seller, email)
        fresh = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        with self.datastore.transaction(commit=True) as cur:
            # A destroyed key is replaced: the buyer's new orders get a new key, the old ones stay erased.
            cur.execute(
                sql.SQL(
                    "INSERT INTO {table} (key_id, key) VALUES (%s, %s) ON CONFLICT (key_id) DO UPDATE"
                    " SET key = EXCLUDED.key, created_at = now(), destroyed_at = NULL"
                    " WHERE {table}.key IS NULL"
                ).format(table=self.table),
                (key_id, fresh),
            )
            cur.execute(sql.SQL("SELECT key FROM {} WHERE key_id = %s").format(self.table), (key_id,))
            row = cur.fetchone()
        assert row is not None
        assert row["key"] is not None
        return key_id, bytes(row["key"])

    def keys_for(self, buyers: Collection[tuple[str, str]]) -> dict[str, bytes]:
        """One transaction: read the live keys, insert the missing ones (a destroyed one replaced, as in
        `key_for`) and read what they became, in one statement when every buyer has a key already.

        A key another importer inserts meanwhile wins (the insert waits for it, then leaves it), so every
        order of a buyer is sealed under the one key the table keeps. Nothing is kept between calls: a key
        destroyed by a forget (in any process) is never handed out again once the forget has committed."""
        key_ids = sorted({key_id_for(seller, email) for seller, email in buyers})
        if not key_ids:
            return {}
        with self.datastore.transaction(commit=True) as cur:
            cur.row_factory = tuple_row  # rows as tuples: half of the time of reading 500 keys went to dicts
            cur.execute(
                sql.SQL(
                    "SELECT key_id, key FROM {} WHERE key_id = ANY(string_to_array(%s, ',')) AND key IS NOT NULL"
                ).format(self.table),
                (",".join(key_ids),),  # hex ids in one text: psycopg dumps a list element by element
            )
            keys = {key_id: bytes(key) for key_id, key in cur.fetchall()}
            missing = [key_id for key_id in key_ids if key_id not in keys]
            if missing:
                fresh = os.urandom(KEY_BYTES * len(missing))  # = AESGCM.generate_key per key, one read
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {table} (key_id, key)"
                        " SELECT key_id, substring(%s::bytea FROM (n::int - 1) * {size} + 1 FOR {size})"
                        " FROM unnest(string_to_array(%s, ',')) WITH ORDINALITY AS fresh(key_id, n)"
                        " ON CONFLICT (key_id) DO UPDATE"
                        " SET key = EXCLUDED.key, created_at = now(), destroyed_at = NULL"
                        " WHERE {table}.key IS NULL"
                        " RETURNING key_id, key"
                    ).format(table=self.table, size=sql.Literal(KEY_BYTES)),
                    (fresh, ",".join(missing)),  # the n-th id's key: the n-th 32 bytes (KEY_BYTES)
                )
                keys.update((key_id, bytes(key)) for key_id, key in cur.fetchall())
                if len(keys) < len(key_ids):  # inserted live by another importer meanwhile: theirs wins
                    cur.execute(
                        sql.SQL(
                            "SELECT key_id, key FROM {} WHERE key_id = ANY(%s) AND key IS NOT NULL"
                        ).format(self.table),
                        ([key_id for key_id in missing if key_id not in keys],),
                    )
                    keys.update((key_id, bytes(key)) for key_id, key in cur.fetchall())
        if len(keys) == len(key_ids):
            return keys
        for (
            seller,
            email,
        ) in buyers:  # destroyed between the statements (a forget): a new key, as key_for does
            if key_id_for(seller, email) not in keys:
                key_id, key = self.key_for(seller, email)
                keys[key_id] = key
        return keys

    def live_keys(self, key_ids: Iterable[str]) -> dict[str, bytes]:
        with self.datastore.transaction(commit=False) as cur:
            return fetch_keys(cur, list(key_ids), self.table, lock=not self.read_only)


def fetch_keys(
    cur: Any, key_ids: list[str], table: sql.Composable | None = None, *, lock: bool = True
) -> dict[str, bytes]:
    """Live keys among `key_ids`, read FOR SHARE: a forget waits for the transaction that decrypts with them,
    and then scrubs what it wrote. `lock=False` (a read replica) reads them as they are."""
    if not key_ids:
        return {}
    cur.execute(
        sql.SQL("SELECT key_id, key FROM {} WHERE key_id = ANY(%s) AND key IS NOT NULL{}").format(
            table or sql.Identifier("personal_data_keys"), sql.SQL(" FOR SHARE" if lock else "")
        ),
        (key_ids,),
    )
    rows = cur.fetchall()
    return {str(_get(r, 0, "key_id")): bytes(_get(r, 1, "key")) for r in rows}


def _get(row: Any, index: int, name: str) -> Any:
    return row[name] if isinstance(row, dict) else row[index]


def forget(conn: Any, seller: str, email: str) -> tuple[bool, int]:
    """Destroy the buyer's key and scrub the All Sales copies (every generation), in one transaction.

    Returns (a live key was destroyed, All Sales rows scrubbed)."""
    key_id = key_id_for(seller, email)
    with conn.transaction():
        destroyed = False
        if _exists(conn, "personal_data_keys"):
            found = conn.execute(
                "UPDATE personal_data_keys SET key = NULL, destroyed_at = now()"
                " WHERE key_id = %s AND key IS NOT NULL RETURNING key_id",
                (key_id,),
            ).fetchone()
            destroyed = found is not None
        scrubbed = 0
        for table in _all_sales_tables(conn):
            cur = conn.execute(
                sql.SQL(
                    "UPDATE {} SET buyer_name = %s, buyer_email = %s"
                    " WHERE seller = %s AND lower(buyer_email) = lower(%s)"
                ).format(sql.Identifier(table)),
                (ERASED, ERASED, seller, email.strip()),
            )
            scrubbed += max(cur.rowcount, 0)
    return destroyed, scrubbed


def _all_sales_tables(conn: Any) -> list[str]:
    """Every generation's orders table (a rebuild in progress included), not just the one the view shows."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname ~ '^all_sales_orders_g[0-9]+$'"
    ).fetchall()
    return [str(r[0]) for r in rows]


def _exists(conn: Any, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])

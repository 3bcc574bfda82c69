"""Sealing a buyer's personal fields (eventstore/keys_store.py `Sealer`): AES-GCM under the buyer's key, the
key id as associated data, a nonce of its own per field; tokens the reader (`decrypt`) opens."""

from __future__ import annotations

import base64
import dataclasses
import threading
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger.aggregates.values import Address, Buyer
from ledger.eventstore import keys_store
from ledger.eventstore.keys_store import (
    ERASED,
    NONCE_BYTES,
    TOKEN_PREFIX,
    PersonalData,
    Sealer,
    decrypt,
    encrypt,
    key_id_for,
)

KEY_ID = key_id_for("seller-1", "Ann@Example.com")
KEY = AESGCM.generate_key(bit_length=256)
BUYER = Buyer("Ann Lee é中😀", "ann@example.com")
ADDRESS = Address(name="Ann Lee", line1="1 Main St", city="Springfield", country="US")


def _nonce(token: str) -> bytes:
    return base64.urlsafe_b64decode(token.rpartition(":")[2])[:NONCE_BYTES]


def test_every_non_empty_field_is_sealed_and_opens_again() -> None:
    buyer, ship_to = Sealer(KEY_ID, KEY).seal(BUYER, ADDRESS)
    assert ship_to is not None
    keys = {KEY_ID: KEY}
    assert Buyer(decrypt(keys, buyer.name), decrypt(keys, buyer.email)) == BUYER
    opened = {f.name: decrypt(keys, getattr(ship_to, f.name)) for f in dataclasses.fields(Address)}
    assert Address(**opened) == ADDRESS
    assert buyer.name.startswith(f"{TOKEN_PREFIX}{KEY_ID}:")
    assert ship_to.line2 == ""  # empty stays empty
    assert decrypt({}, buyer.name) == ERASED  # the key gone: erased
    assert decrypt({KEY_ID: AESGCM.generate_key(bit_length=256)}, buyer.name) == ERASED  # another key


def test_each_field_and_each_sealing_has_its_own_nonce() -> None:
    sealer = Sealer(KEY_ID, KEY)
    first, first_to = sealer.seal(BUYER, ADDRESS)
    again, _ = sealer.seal(BUYER, ADDRESS)
    assert first_to is not None
    tokens = [first.name, first.email, first_to.name, first_to.line1, first_to.city, again.name, again.email]
    assert len({_nonce(t) for t in tokens}) == len(tokens)
    assert first.name != again.name  # the same value sealed twice: two different tokens


def test_the_key_id_is_bound_to_the_ciphertext() -> None:
    """A token moved under another key id does not open, even with the right key."""
    buyer, _ = Sealer(KEY_ID, KEY).seal(BUYER, None)
    other_id = key_id_for("seller-1", "someone@example.com")
    moved = buyer.name.replace(KEY_ID, other_id)
    assert decrypt({other_id: KEY}, moved) == ERASED


def test_sealed_fields_stay_as_they_are_and_the_formats_agree() -> None:
    """A token is not sealed again; `protect_with` seals as `Sealer` does, in `encrypt`'s format."""
    token = encrypt(KEY, KEY_ID, "Ann")
    buyer, ship_to = PersonalData.protect_with(KEY_ID, KEY, Buyer(token, "a@example.com"), None)
    assert buyer.name == token
    assert ship_to is None
    assert decrypt({KEY_ID: KEY}, buyer.email) == "a@example.com"
    assert decrypt({KEY_ID: KEY}, token) == "Ann"


def test_nonces_are_never_handed_out_twice_across_pool_refills_and_threads() -> None:
    seen: list[bytes] = []
    lock = threading.Lock()

    def seal_many() -> None:
        sealer = Sealer(KEY_ID, KEY)
        mine = []
        for _ in range(300):  # 300 x 10 fields x 12 bytes: past a 16 KiB pool refill
            buyer, ship_to = sealer.seal(BUYER, ADDRESS)
            assert ship_to is not None
            mine += [_nonce(buyer.name), _nonce(buyer.email), _nonce(ship_to.line1)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=seal_many) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == len(set(seen)) == 2700
    assert keys_store.NONCE_POOL_BYTES < 300 * 10 * NONCE_BYTES


def test_a_forked_process_does_not_reuse_its_parents_nonces(monkeypatch: Any) -> None:
    """The pool is per process: after a fork (another pid) it is read afresh."""
    pool = keys_store._NoncePool()
    first = pool.take(NONCE_BYTES)
    monkeypatch.setattr(keys_store.os, "getpid", lambda: -1)
    assert pool.take(NONCE_BYTES) != first
    assert pool.used == NONCE_BYTES  # a fresh buffer

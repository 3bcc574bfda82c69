"""The audit signing key, kept outside the database, and the public keys that checkpoints are judged against.

Where the signing key comes from, first match wins:
1. LEDGER_AUDIT_SIGNING_KEY: the key itself, base64 of the 32-byte Ed25519 seed (`ledger audit keygen`);
2. LEDGER_AUDIT_KEY_FILE: a file holding it (PEM PKCS#8, or the base64 seed); the file must exist;
3. neither: `data_dir/audit-signing-key.pem`, created (mode 0600) on the first start, with its public key
   beside it in `audit-signing-key.pub`; the log says where.

A key's id is its fingerprint: the first 32 hex digits of SHA-256 over the raw 32-byte public key. Checkpoints
are trusted when signed by the configured key or by a retired key listed in LEDGER_AUDIT_PUBLIC_KEYS; keys
found only in the database are never trusted (whoever can write the database could add one).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.config import ConfigError, Settings

log = logging.getLogger(__name__)

DEFAULT_KEY_FILE = "audit-signing-key.pem"
STATE_DIR = "audit"


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key's fingerprint: 32 hex digits of SHA-256 over its raw bytes."""
    return hashlib.sha256(raw_public(public_key)).hexdigest()[:32]


def raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def seed_b64(private_key: Ed25519PrivateKey) -> str:
    raw = private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode("ascii")


def parse_private_key(text: str, *, source: str) -> Ed25519PrivateKey:
    """A private key from PEM or from the base64 seed; ConfigError naming `source` otherwise."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        except (ValueError, TypeError):
            key = None
        if isinstance(key, Ed25519PrivateKey):
            return key
        msg = f"{source} is not an unencrypted Ed25519 private key in PEM"
        raise ConfigError(msg)
    try:
        seed = base64.b64decode(text, validate=True)
    except binascii.Error:
        seed = b""
    if len(seed) != 32:
        msg = f"{source} is not the base64 of a 32-byte Ed25519 key (make one with `ledger audit keygen`)"
        raise ConfigError(msg)
    return Ed25519PrivateKey.from_private_bytes(seed)


def parse_public_key(text: str, *, source: str) -> Ed25519PublicKey:
    """A public key from PEM or from base64 of its 32 raw bytes; ConfigError naming `source` otherwise."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, TypeError):
            key = None
        if isinstance(key, Ed25519PublicKey):
            return key
        msg = f"{source} is not an Ed25519 public key in PEM"
        raise ConfigError(msg)
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        msg = f"{source} is not an Ed25519 public key (PEM, or base64 of its 32 bytes)"
        raise ConfigError(msg)
    return Ed25519PublicKey.from_public_bytes(raw)


def write_key_file(path: Path, private_key: Ed25519PrivateKey) -> Path:
    """Write the private key (mode 0600, never over an existing file) and its public key beside it (.pub)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem(private_key))
    path.chmod(0o600)  # whatever the umask
    public = path.with_suffix(".pub")
    public.write_bytes(public_pem(private_key.public_key()))
    return public


@dataclass(frozen=True)
class AuditTrust:
    """What checkpoints are signed with and judged against, none of it in the database.

    `signer` seals (None: verify only); `trusted` maps key id to public key; `state_dir` holds this host's
    record of the newest checkpoint it signed or verified (None: keep no record)."""

    signer: Ed25519PrivateKey | None
    trusted: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)
    state_dir: Path | None = None

    @classmethod
    def of(
        cls, signer: Ed25519PrivateKey | None, *public: Ed25519PublicKey, state_dir: Path | None = None
    ) -> AuditTrust:
        keys = [*public, *([signer.public_key()] if signer is not None else [])]
        return cls(signer, {key_id(k): k for k in keys}, state_dir)

    @property
    def signer_id(self) -> str | None:
        return None if self.signer is None else key_id(self.signer.public_key())

    def sign(self, message: bytes) -> tuple[str, str]:
        """(key id, base64 signature) of `message`."""
        if self.signer is None:
            raise RuntimeError("no audit signing key configured")
        return key_id(self.signer.public_key()), base64.b64encode(self.signer.sign(message)).decode("ascii")

    def verify(self, message: bytes, signing_key_id: str | None, signature: str | None) -> str | None:
        """None when `signature` is a trusted key's signature of `message`, else why not."""
        if signature is None or signing_key_id is None:
            return "it is not signed"
        public = self.trusted.get(signing_key_id)
        if public is None:
            return f"it is signed by key {signing_key_id}, which is not a trusted key"
        try:
            public.verify(base64.b64decode(signature, validate=True), message)
        except (InvalidSignature, binascii.Error, ValueError):
            return f"its signature by key {signing_key_id} does not match its content"
        return None

    def row_tag(self, message: bytes) -> bytes | None:
        """A keyed tag (HMAC-SHA256 with a key derived from the signing key) binding one sealed row's entry."""
        if self.signer is None:
            return None
        tag_key = hashlib.sha256(b"ledger audit row tag\0" + base64.b64decode(seed_b64(self.signer))).digest()
        return hmac.digest(tag_key, message, "sha256")


def load_trust(settings: Settings, *, create: bool = True) -> AuditTrust:
    """The signing key from the settings (creating the default key file on first use when `create`)."""
    retired = [
        parse_public_key(text, source="LEDGER_AUDIT_PUBLIC_KEYS") for text in settings.audit_public_keys
    ]
    state_dir = settings.data_dir / STATE_DIR
    if settings.audit_signing_key is not None:
        signer = parse_private_key(settings.audit_signing_key, source="LEDGER_AUDIT_SIGNING_KEY")
        return AuditTrust.of(signer, *retired, state_dir=state_dir)
    path = settings.audit_key_file or settings.data_dir / DEFAULT_KEY_FILE
    if not path.exists():
        if settings.audit_key_file is not None:
            msg = f"LEDGER_AUDIT_KEY_FILE={path} does not exist (make one with `ledger audit keygen --out FILE`)"
            raise ConfigError(msg)
        if not create:
            return AuditTrust.of(None, *retired, state_dir=state_dir)
        signer = Ed25519PrivateKey.generate()
        try:
            public = write_key_file(path, signer)
        except FileExistsError:  # another process of this deployment made it first
            return load_trust(settings, create=False)
        log.warning(
            "created the audit signing key %s (key id %s, mode 0600); its public key is %s: keep a copy of "
            "the public key outside the ledger, and back up the key, or set LEDGER_AUDIT_KEY_FILE",
            path,
            key_id(signer.public_key()),
            public,
        )
        return AuditTrust.of(signer, *retired, state_dir=state_dir)
    if path.stat().st_mode & 0o077:
        log.warning("the audit signing key %s can be read by other users: chmod 600 it", path)
    signer = parse_private_key(path.read_text(encoding="ascii", errors="replace"), source=str(path))
    return AuditTrust.of(signer, *retired, state_dir=state_dir)

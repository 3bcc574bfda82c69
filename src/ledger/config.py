"""Settings: one frozen Struct read from the environment once, at start-up, then passed down."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
import platformdirs

__all__ = [
    "ConfigError",
    "Settings",
    "default_data_dir",
    "redact_url",
    "validate_schema_name",
]

# A bare, lower-case identifier: it is always quoted in SQL anyway, but a schema name that needs
# quoting to mean what it says (upper case, spaces, dots) is almost always a configuration mistake.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_DURATION = re.compile(r"([0-9]{1,9})\s*([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_WEB_SESSION_TTL = timedelta(hours=12)


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable to fix."""


def validate_schema_name(name: str, *, variable: str = "LEDGER_DATABASE_SCHEMA") -> str:
    """Return `name` if it is a plain PostgreSQL identifier, else raise ConfigError."""
    if not _SCHEMA_NAME.fullmatch(name):
        msg = (
            f"{variable}={name!r} is not a plain schema name: use 1-63 characters from "
            "a-z, 0-9 and '_', not starting with a digit"
        )
        raise ConfigError(msg)
    return name


def redact_url(url: str) -> str:
    """`url` with any password (in the user part or a ?password= parameter) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key == "password" for key, _ in pairs):
            redacted = [(key, "***" if key == "password" else value) for key, value in pairs]
            query = urlencode(redacted, safe="/*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def default_data_dir() -> Path:
    """The per-user data directory: $XDG_DATA_HOME/ledger, or ~/.local/share/ledger."""
    return platformdirs.user_data_path("ledger")


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything `ledger` reads from its environment (see README, "Configuration")."""

    database_url: str | None = None
    """LEDGER_DATABASE_URL: a PostgreSQL server; unset means the embedded server in data_dir."""
    read_database_url: str | None = None
    """LEDGER_READ_DATABASE_URL: a streaming replica of that server; when set, All Sales, order reads and the
    change feed read from it (reads carrying `min_position` wait for its replay first). Unset: all reads on the
    primary."""
    database_schema: str = "public"
    """LEDGER_DATABASE_SCHEMA: the schema holding this deployment's tables."""
    data_dir: Path = msgspec.field(default_factory=default_data_dir)
    """LEDGER_DATA_DIR: local state; the embedded PostgreSQL keeps its data in data_dir/pg."""
    pool_size: int = 5
    """LEDGER_DB_POOL_SIZE: connections kept open per process."""
    log_level: str = "INFO"
    """LEDGER_LOG_LEVEL: DEBUG, INFO, WARNING, ERROR or CRITICAL."""
    audit_signing_key: str | None = None
    """LEDGER_AUDIT_SIGNING_KEY: the checkpoints' Ed25519 signing key, base64 (a secret: never printed)."""
    audit_key_file: Path | None = None
    """LEDGER_AUDIT_KEY_FILE: a file holding the signing key; unset (and no key above): data_dir's own."""
    audit_public_keys: tuple[str, ...] = ()
    """LEDGER_AUDIT_PUBLIC_KEYS: retired signing keys' public keys (base64, comma-separated), still trusted."""
    audit_checkpoint_events: int = 1000
    """LEDGER_AUDIT_CHECKPOINT_EVENTS: the worker seals when this many events (or a minute) are unsealed."""
    web_session_ttl: timedelta = DEFAULT_WEB_SESSION_TTL
    """LEDGER_WEB_SESSION_TTL: how long a web page sign-in lasts, from sign-in (absolute, not sliding): seconds,
    or a number with s, m, h or d (`12h`, the default)."""
    webhook_allow_http: bool = False
    """LEDGER_WEBHOOK_ALLOW_HTTP=1: webhook URLs may be http:// (else https:// only)."""
    webhook_allow_private: bool = False
    """LEDGER_WEBHOOK_ALLOW_PRIVATE=1: webhook URLs may reach loopback, private and link-local addresses."""

    def __post_init__(self) -> None:
        validate_schema_name(self.database_schema)
        if self.read_database_url is not None and self.database_url is None:
            msg = (
                "LEDGER_READ_DATABASE_URL needs LEDGER_DATABASE_URL: a read replica is a replica of a configured "
                "server, not of the embedded one"
            )
            raise ConfigError(msg)
        if self.pool_size < 1:
            msg = f"LEDGER_DB_POOL_SIZE must be at least 1, got {self.pool_size}"
            raise ConfigError(msg)
        if self.audit_checkpoint_events < 1:
            msg = f"LEDGER_AUDIT_CHECKPOINT_EVENTS must be at least 1, got {self.audit_checkpoint_events}"
            raise ConfigError(msg)
        if self.log_level not in logging.getLevelNamesMapping():
            msg = (
                f"LEDGER_LOG_LEVEL={self.log_level!r} is not a log level: "
                "use DEBUG, INFO, WARNING, ERROR or CRITICAL"
            )
            raise ConfigError(msg)

    def __repr__(self) -> str:
        url = None if self.database_url is None else redact_url(self.database_url)
        read_url = None if self.read_database_url is None else redact_url(self.read_database_url)
        return (
            f"Settings(database_url={url!r}, read_database_url={read_url!r}, database_schema={self.database_schema!r}, "
            f"data_dir={self.data_dir!r}, pool_size={self.pool_size!r}, "
            f"log_level={self.log_level!r}, web_session_ttl={self.web_session_ttl!r}, "
            f"webhook_allow_http={self.webhook_allow_http!r}, webhook_allow_private={self.webhook_allow_private!r})"
        )

    @property
    def embedded_pgdata(self) -> Path:
        """Where the embedded PostgreSQL server keeps its data."""
        return self.data_dir / "pg"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from `env` (default: os.environ). Empty values count as unset."""
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = source.get(name, "").strip()
            return value or None

        def whole(name: str, default: int) -> int:
            raw = get(name)
            if raw is None:
                return default
            try:
                return int(raw)
            except ValueError:
                msg = f"{name}={raw!r} is not a whole number"
                raise ConfigError(msg) from None

        key_file = get("LEDGER_AUDIT_KEY_FILE")

        data_dir = get("LEDGER_DATA_DIR")
        return cls(
            database_url=get("LEDGER_DATABASE_URL"),
            read_database_url=get("LEDGER_READ_DATABASE_URL"),
            database_schema=get("LEDGER_DATABASE_SCHEMA") or "public",
            data_dir=Path(data_dir).expanduser().absolute() if data_dir else default_data_dir(),
            pool_size=whole("LEDGER_DB_POOL_SIZE", 5),
            log_level=(get("LEDGER_LOG_LEVEL") or "INFO").upper(),
            audit_signing_key=get("LEDGER_AUDIT_SIGNING_KEY"),
            audit_key_file=Path(key_file).expanduser().absolute() if key_file else None,
            audit_public_keys=tuple(
                k.strip() for k in (get("LEDGER_AUDIT_PUBLIC_KEYS") or "").split(",") if k.strip()
            ),
            audit_checkpoint_events=whole("LEDGER_AUDIT_CHECKPOINT_EVENTS", 1000),
            web_session_ttl=_duration("LEDGER_WEB_SESSION_TTL", get("LEDGER_WEB_SESSION_TTL"))
            or DEFAULT_WEB_SESSION_TTL,
            webhook_allow_http=_flag(get("LEDGER_WEBHOOK_ALLOW_HTTP"), "LEDGER_WEBHOOK_ALLOW_HTTP"),
            webhook_allow_private=_flag(get("LEDGER_WEBHOOK_ALLOW_PRIVATE"), "LEDGER_WEBHOOK_ALLOW_PRIVATE"),
        )


def _duration(variable: str, raw: str | None) -> timedelta | None:
    """`raw` as a positive duration (`90`, `30m`, `12h`, `7d`); None when unset; else ConfigError."""
    if raw is None:
        return None
    match = _DURATION.fullmatch(raw.lower())
    if match is None or int(match.group(1)) == 0:
        msg = f"{variable}={raw!r} is not a duration: use seconds, or a number with s, m, h or d (12h)"
        raise ConfigError(msg)
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def _flag(value: str | None, variable: str) -> bool:
    """An on/off setting: 1/true/yes/on or 0/false/no/off (unset: off)."""
    if value is None:
        return False
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    msg = f"{variable}={value!r} is not on or off: use 1 or 0"
    raise ConfigError(msg)

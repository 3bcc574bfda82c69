"""Settings: one frozen Struct read from the environment once, at start-up, then passed down."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
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
    database_schema: str = "public"
    """LEDGER_DATABASE_SCHEMA: the schema holding this deployment's tables."""
    data_dir: Path = msgspec.field(default_factory=default_data_dir)
    """LEDGER_DATA_DIR: local state; the embedded PostgreSQL keeps its data in data_dir/pg."""
    pool_size: int = 5
    """LEDGER_DB_POOL_SIZE: connections kept open per process."""
    log_level: str = "INFO"
    """LEDGER_LOG_LEVEL: DEBUG, INFO, WARNING, ERROR or CRITICAL."""

    def __post_init__(self) -> None:
        validate_schema_name(self.database_schema)
        if self.pool_size < 1:
            msg = f"LEDGER_DB_POOL_SIZE must be at least 1, got {self.pool_size}"
            raise ConfigError(msg)
        if self.log_level not in logging.getLevelNamesMapping():
            msg = (
                f"LEDGER_LOG_LEVEL={self.log_level!r} is not a log level: "
                "use DEBUG, INFO, WARNING, ERROR or CRITICAL"
            )
            raise ConfigError(msg)

    def __repr__(self) -> str:
        url = None if self.database_url is None else redact_url(self.database_url)
        return (
            f"Settings(database_url={url!r}, database_schema={self.database_schema!r}, "
            f"data_dir={self.data_dir!r}, pool_size={self.pool_size!r}, "
            f"log_level={self.log_level!r})"
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

        pool_size = 5
        if (raw_pool_size := get("LEDGER_DB_POOL_SIZE")) is not None:
            try:
                pool_size = int(raw_pool_size)
            except ValueError:
                msg = f"LEDGER_DB_POOL_SIZE={raw_pool_size!r} is not a whole number"
                raise ConfigError(msg) from None

        data_dir = get("LEDGER_DATA_DIR")
        return cls(
            database_url=get("LEDGER_DATABASE_URL"),
            database_schema=get("LEDGER_DATABASE_SCHEMA") or "public",
            data_dir=Path(data_dir).expanduser().absolute() if data_dir else default_data_dir(),
            pool_size=pool_size,
            log_level=(get("LEDGER_LOG_LEVEL") or "INFO").upper(),
        )

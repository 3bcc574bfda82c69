"""Versioned schema migrations: numbered files applied in order, each once, recorded in `schema_migrations`.

A deployment is a PostgreSQL schema; its `schema_migrations` table (version, name, applied_at, checksum) says
which of the files in this package have been applied there. `migrate()` applies the pending ones, each in a
transaction of its own together with its row, under a session advisory lock keyed by the schema: every
process migrates at start (`ensure_schema`), and two that start together apply each migration once (the
second waits, then finds nothing pending). An applied file whose checksum changed is refused: a shipped
migration is never edited; a new one is added.

Files: `NNNN_name.sql` runs as one script with the deployment's schema first on the search_path (then public,
where extensions live); `NNNN_name.py`, for a step SQL cannot express, defines `apply(cur)` and gets a cursor
in that transaction.

What migrations own: every table of ours with a fixed name. Not theirs:
- the eventsourcing library's events table (`ledger_events`, its index, row type and insert function): the
  library's recorder creates them (`CREATE_TABLE=y`) from its own settings (schema, originator id type) and
  version; a copy here would freeze one version of the library's DDL (0005 only converts an existing events
  table to the commit-order column the Ledger's recorder adds to the ones it creates);
- the projections' generation tables (`all_sales_orders_g1`, ...) and their views: a rebuild creates the next
  generation while the live one serves, so a projection creates its tables (`projections/base.py install`);
  changing a projection's shape is a rebuild, not a migration.

A runner of our own (about 150 lines) rather than yoyo-migrations: yoyo keeps its own tables (`_yoyo_migration`,
`_yoyo_log`, `yoyo_lock`) and locks with a lock table, and connects from a URL; we want the `schema_migrations`
table above, an advisory lock per deployment schema like the projection workers', and our `PostgresTarget`
(Unix-socket directories, PG* variables) - which is most of what such a runner is.
"""

from __future__ import annotations

import hashlib
import re
import types
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from importlib.resources.abc import Traversable

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

__all__ = ["Applied", "Migration", "MigrationError", "Status", "available", "migrate", "status"]

TABLE = "schema_migrations"
_FILE = re.compile(r"^(\d{4})_(\w+)\.(sql|py)$")
_CREATE = "CREATE TABLE IF NOT EXISTS {table} (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), checksum text NOT NULL)"


class MigrationError(RuntimeError):
    """The migrations cannot be applied as they stand (a changed or unknown applied migration, a bad file)."""


@dataclass(frozen=True)
class Migration:
    """One numbered file of this package (or of `source`)."""

    version: int
    name: str
    checksum: str
    """sha256 of the file's bytes."""
    file: Traversable


@dataclass(frozen=True)
class Applied:
    """A row of `schema_migrations`."""

    version: int
    name: str
    applied_at: datetime
    checksum: str


@dataclass(frozen=True)
class Status:
    """Where a schema stands: what was applied, what is pending, and applied files that no longer match."""

    schema: str
    applied: tuple[Applied, ...]
    pending: tuple[Migration, ...]
    changed: tuple[int, ...]
    """Versions applied with another checksum than the file has now (or no longer shipped)."""

    @property
    def version(self) -> int:
        """The highest applied version; 0 for a schema never migrated."""
        return max((a.version for a in self.applied), default=0)


def available(source: Traversable | None = None) -> list[Migration]:
    """The migration files in version order (this package's unless `source` is given)."""
    folder = source if source is not None else resources.files(__name__)
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            msg = f"two migrations are numbered {version:04d}: {found[version].file.name} and {entry.name}"
            raise MigrationError(msg)
        checksum = hashlib.sha256(entry.read_bytes()).hexdigest()
        found[version] = Migration(version, match.group(2), checksum, entry)
    return [found[v] for v in sorted(found)]


def lock_key(schema: str) -> int:
    """The advisory-lock key of one deployment's migrations (non-negative 31 bits, like the projections')."""
    return zlib.crc32(f"ledger-migrations:{schema}".encode()) & 0x7FFFFFFF


def migrate(conninfo: str, schema: str, *, source: Traversable | None = None) -> list[Migration]:
    """Apply the pending migrations to `schema` (which exists); return those this call applied, in order."""
    migrations = available(source)
    done: list[Migration] = []
    with _connect(conninfo, schema) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (lock_key(schema),))
        try:
            conn.execute(sql.SQL(_CREATE).format(table=sql.Identifier(schema, TABLE)))
            current = _status(conn, schema, migrations)
            if current.changed:
                versions = ", ".join(f"{v:04d}" for v in current.changed)
                msg = f"schema {schema}: applied migrations {versions} are not the files this version ships (edited, or from a newer release)"
                raise MigrationError(msg)
            for migration in current.pending:
                with conn.transaction(), conn.cursor() as cur:
                    _run(cur, migration)
                    cur.execute(
                        sql.SQL("INSERT INTO {} (version, name, checksum) VALUES (%s, %s, %s)").format(
                            sql.Identifier(schema, TABLE)
                        ),
                        (migration.version, migration.name, migration.checksum),
                    )
                done.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(schema),))
    return done


def status(conninfo: str, schema: str, *, source: Traversable | None = None) -> Status:
    """Where `schema` stands, without changing anything."""
    with _connect(conninfo, schema) as conn:
        return _status(conn, schema, available(source))


def _connect(conninfo: str, schema: str) -> psycopg.Connection[TupleRow]:
    options = make_conninfo(conninfo, options=f"-c search_path={schema},public")
    return psycopg.connect(options, autocommit=True)


def _status(conn: psycopg.Connection[TupleRow], schema: str, migrations: Sequence[Migration]) -> Status:
    applied: tuple[Applied, ...] = ()
    row = conn.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))", (schema, TABLE)
    ).fetchone()
    if row is not None and row[0] is not None:
        rows = conn.execute(
            sql.SQL("SELECT version, name, applied_at, checksum FROM {} ORDER BY version").format(
                sql.Identifier(schema, TABLE)
            )
        ).fetchall()
        applied = tuple(Applied(*r) for r in rows)
    shipped = {m.version: m for m in migrations}
    changed = tuple(
        a.version for a in applied if a.version not in shipped or shipped[a.version].checksum != a.checksum
    )
    versions = {a.version for a in applied}
    pending = tuple(m for m in migrations if m.version not in versions)
    return Status(schema, applied, pending, changed)


def _run(cur: psycopg.Cursor[TupleRow], migration: Migration) -> None:
    if migration.file.name.endswith(".sql"):
        cur.execute(migration.file.read_bytes())
        return
    module = types.ModuleType(f"ledger_migration_{migration.version:04d}")
    exec(compile(migration.file.read_bytes(), migration.file.name, "exec"), module.__dict__)  # noqa: S102
    module.apply(cur)

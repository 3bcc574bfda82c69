"""Versioned migrations: a schema made by release 0.1.0 upgrades with its data intact; runs are safe together."""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.domain import Aggregate
from psycopg import sql

from ledger.application.ledger import Ledger
from ledger.audit.keys import AuditTrust
from ledger.audit.verification import verify_all, verify_order
from ledger.eventstore import migrations
from ledger.eventstore.database import PostgresTarget, connect, ensure_schema, settle
from ledger.projections.base import install
from ledger.projections.registry import all_projections

pytestmark = pytest.mark.postgres

RELEASE_DUMP = Path(__file__).parent.parent / "fixtures" / "schema_release_0_1.sql"
# What the fixture holds (recorded through release 0.1.0's CLI; see the dump's header).
ACCOUNT_ID = UUID("ca0e8b34-df6f-4a98-97f1-a0e1fd620884")
SHIPPED_ORDER = UUID("3dea5ebb-ced5-5937-a364-0a3605752377")
CANCELLED_ORDER = UUID("2733ac8b-6e82-5744-ae94-2c29ed899a4b")
OPEN_ORDER = UUID("e29e01fb-e0ea-5525-96ee-0cabc66e7f2b")


@pytest.fixture
def new_schema(pg_server: PostgresTarget) -> Iterator[PostgresTarget]:
    """A schema name of this test's own (not created), dropped at the end."""
    target = dataclasses.replace(pg_server, schema=f"ledger_mig_{secrets.token_hex(4)}")
    yield target
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema)))


@pytest.fixture
def release_schema(new_schema: PostgresTarget) -> PostgresTarget:
    """The release 0.1.0 dump restored into the test's schema (not migrated)."""
    dump = RELEASE_DUMP.read_text().replace("__SCHEMA__", new_schema.schema)
    with psycopg.connect(new_schema.conninfo(), autocommit=True) as conn:
        conn.execute(
            "CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public"
        )  # as the All Sales projection does
        conn.execute(dump.encode())
    return new_schema


@pytest.fixture
def other_schema(pg_server: PostgresTarget) -> Iterator[PostgresTarget]:
    """A second schema name of the test's own (not created), dropped at the end."""
    target = dataclasses.replace(pg_server, schema=f"ledger_mig_{secrets.token_hex(4)}")
    yield target
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema)))


def _count(target: PostgresTarget, table: str) -> int:
    with connect(target) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    assert row is not None
    return int(row[0])


def _start_like_a_process(target: PostgresTarget) -> None:
    """What `ledger serve` does at start: migrate, open the Ledger (the library's tables), install projections."""
    ensure_schema(target)
    Ledger(env=target.eventsourcing_env()).close()
    with connect(target, autocommit=True) as conn:
        for projection in all_projections():
            install(conn, projection)


def test_release_schema_upgrades_with_data_intact(release_schema: PostgresTarget) -> None:
    """Migrating release 0.1.0's schema records every version and keeps its orders, accounts and read models."""
    assert migrations.status(release_schema.conninfo(), release_schema.schema).version == 0
    shipped_migrations = migrations.available()

    applied = migrations.migrate(release_schema.conninfo(), release_schema.schema)

    assert applied == shipped_migrations
    state = migrations.status(release_schema.conninfo(), release_schema.schema)
    assert (state.version, state.pending, state.changed) == (shipped_migrations[-1].version, (), ())
    assert [a.checksum for a in state.applied] == [m.checksum for m in shipped_migrations]
    app = Ledger(env=release_schema.eventsourcing_env())
    try:
        shipped = app.get_order(SHIPPED_ORDER)
        cancelled = app.get_order(CANCELLED_ORDER)
        still_open = app.get_order(OPEN_ORDER)
        account = app.get_account(ACCOUNT_ID)
    finally:
        app.close()
    assert (shipped.status, shipped.shipped_units, shipped.buyer.name) == ("shipped", 2, "Ann Lee")
    assert (cancelled.cancelled_units, cancelled.buyer.email) == (1, "bo@example.com")
    assert still_open.open
    assert (account.seller, account.marketplace) == ("acme", "walmart")
    counts = {
        t: _count(release_schema, t) for t in ("all_sales_orders", "outbound_items", "audit_checkpoints")
    }
    # 0002 drops the release's unsigned checkpoint: the worker re-seals the log, signed
    assert counts == {"all_sales_orders": 3, "outbound_items": 5, "audit_checkpoints": 0}
    assert _count(release_schema, "finance_reconciliations") == 0  # release 0.1.0 made it on first use only


def test_release_events_verify_with_todays_chain_encoder(
    release_schema: PostgresTarget, tmp_path: Path
) -> None:
    """The hashes release 0.1.0 stored recompute with today's encoder: every order's chain verifies, and
    signing checkpoints over them works (tests/unit/test_chain_encoding.py holds newer events of every type)."""
    migrations.migrate(release_schema.conninfo(), release_schema.schema)
    app = Ledger(env=release_schema.eventsourcing_env())
    try:
        with connect(release_schema, autocommit=True) as conn:
            trust = AuditTrust.of(Ed25519PrivateKey.generate(), state_dir=tmp_path / "audit")
            summary = verify_all(conn, app.mapper, trust)
            assert (summary.valid, summary.findings, summary.orders_checked) == (True, (), 3)
            assert summary.events_checked >= 6
            # the same check fails on a changed event: one character of its stored actor
            changed = conn.execute(
                "UPDATE ledger_events SET state ="
                " convert_to(replace(convert_from(state, 'UTF8'), '\"actor\":\"', '\"actor\":\"x'), 'UTF8')"
                " WHERE originator_id = %s AND originator_version = 1",
                (SHIPPED_ORDER,),
            )
            assert changed.rowcount == 1
            result = verify_order(conn, app.mapper, SHIPPED_ORDER)
            assert (result.valid, result.first_invalid_version) == (False, 1)
    finally:
        app.close()


class _Probe(Aggregate):
    """An aggregate of the test's own, saved through the Ledger's save path."""


def _save_one_event(target: PostgresTarget) -> None:
    app = Ledger(env=target.eventsourcing_env())
    try:
        app._save(_Probe())
    finally:
        app.close()


def _positions(target: PostgresTarget) -> dict[tuple[UUID, int], int]:
    with connect(target) as conn:
        rows = conn.execute(
            "SELECT originator_id, originator_version, notification_id FROM ledger_events"
        ).fetchall()
    return {(o, int(v)): int(n) for o, v, n in rows}


def test_converted_log_keeps_its_positions_below_every_new_one(release_schema: PostgresTarget) -> None:
    """0005 (commit order): the release's events keep their positions and read first, in the same order, and a
    save afterwards takes no table lock and gets a position above all of them."""
    before = _positions(release_schema)
    assert before

    migrations.migrate(release_schema.conninfo(), release_schema.schema)

    assert _positions(release_schema) == before
    with connect(release_schema) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE transaction_id <> '0') FROM ledger_events"
        ).fetchone()
    assert row == (0,)  # the old rows sit below every commit horizon
    app = Ledger(env=release_schema.eventsourcing_env())
    try:
        old_head = app.recorder.max_notification_id()
        assert old_head == max(before.values())
        order = app.get_order(OPEN_ORDER)
        assert order.open
        log = app.recorder.select_notifications(start=0, limit=1000)
        assert [n.id for n in log] == sorted(before.values())
    finally:
        app.close()
    _save_one_event(release_schema)
    after = _positions(release_schema)
    new = {k: p for k, p in after.items() if k not in before}
    assert new, "the save recorded an event"
    assert min(new.values()) > max(before.values())
    with connect(release_schema, autocommit=True) as conn:
        assert settle(conn, timeout=10)
    app = Ledger(env=release_schema.eventsourcing_env())
    try:
        log = app.recorder.select_notifications(
            start=max(before.values()), limit=10, inclusive_of_start=False
        )
        assert [n.id for n in log] == sorted(new.values())
    finally:
        app.close()


def test_second_migrate_is_a_no_op(release_schema: PostgresTarget) -> None:
    """A migrate after the schema is current applies nothing and leaves schema_migrations as it was."""
    migrations.migrate(release_schema.conninfo(), release_schema.schema)
    before = migrations.status(release_schema.conninfo(), release_schema.schema)

    assert migrations.migrate(release_schema.conninfo(), release_schema.schema) == []
    assert migrations.status(release_schema.conninfo(), release_schema.schema) == before


def _columns_and_indexes(target: PostgresTarget) -> tuple[list[tuple[str, ...]], list[str]]:
    with connect(target) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '')"
            " FROM information_schema.columns WHERE table_schema = %s ORDER BY table_name, ordinal_position",
            (target.schema,),
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY indexname", (target.schema,)
        ).fetchall()
    return (
        [tuple(str(v).replace(target.schema, "<schema>") for v in row) for row in columns],
        [str(row[0]).replace(target.schema, "<schema>") for row in indexes],
    )


def test_fresh_schema_matches_upgraded_release(
    release_schema: PostgresTarget, other_schema: PostgresTarget
) -> None:
    """A new schema and release 0.1.0's migrated schema end with the same tables, columns and indexes."""
    _start_like_a_process(release_schema)
    _start_like_a_process(other_schema)

    upgraded = _columns_and_indexes(release_schema)
    fresh = _columns_and_indexes(other_schema)

    assert {row[0] for row in fresh[0]} >= {"schema_migrations", "ledger_events", "finance_reconciliations"}
    assert fresh == upgraded


def _slow_migrations(folder: Path) -> Path:
    folder.mkdir()
    (folder / "0001_slow.sql").write_text("SELECT pg_sleep(0.3); CREATE TABLE probe (n integer);")
    (folder / "0002_python.py").write_text(
        "def apply(cur):\n    cur.execute('INSERT INTO probe VALUES (2)')\n"
    )
    return folder


def test_concurrent_migrations_apply_once(new_schema: PostgresTarget, tmp_path: Path) -> None:
    """Two processes migrating one schema together: one applies each migration, the other finds none pending."""
    ensure_schema(new_schema, migrate=False)
    source = _slow_migrations(tmp_path / "migrations")
    start = threading.Barrier(2)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            applied = migrations.migrate(new_schema.conninfo(), new_schema.schema, source=source)
            results.append([m.version for m in applied])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(results) == [[], [1, 2]]
    assert _count(new_schema, "probe") == 1  # the Python migration ran once
    assert migrations.status(new_schema.conninfo(), new_schema.schema, source=source).version == 2


def test_an_edited_applied_migration_is_refused(new_schema: PostgresTarget, tmp_path: Path) -> None:
    """A shipped migration changed after it was applied stops migrate (and status names it)."""
    ensure_schema(new_schema, migrate=False)
    source = _slow_migrations(tmp_path / "migrations")
    migrations.migrate(new_schema.conninfo(), new_schema.schema, source=source)
    (source / "0002_python.py").write_text("def apply(cur):\n    pass\n")

    with pytest.raises(migrations.MigrationError, match="0002"):
        migrations.migrate(new_schema.conninfo(), new_schema.schema, source=source)
    assert migrations.status(new_schema.conninfo(), new_schema.schema, source=source).changed == (2,)


def test_cli_db_status_shows_pending_and_db_migrate_applies(
    cli: Callable[..., tuple[int, str, str]], release_schema: PostgresTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ledger db status` names the version and the pending migrations; `ledger db migrate` applies them once."""
    monkeypatch.setenv("LEDGER_DATABASE_SCHEMA", release_schema.schema)
    shipped_migrations = migrations.available()
    status, out, _ = cli("db", "status")
    assert status == 0
    assert f"version  0, {len(shipped_migrations)} pending" in out
    assert "pending  0001 initial" in out

    status, out, _ = cli("db", "migrate")
    assert (status, out.splitlines()[0]) == (0, "applied 0001 initial")
    assert "applied 0003 web_sessions" in out

    status, out, _ = cli("db", "migrate", "--json")
    assert status == 0
    assert json.loads(out)["applied"] == []

    status, out, _ = cli("db", "status", "--json")
    report = json.loads(out)
    assert (report["schema_version"], report["pending_migrations"]) == (shipped_migrations[-1].version, [])
    assert report["schema"] == release_schema.schema

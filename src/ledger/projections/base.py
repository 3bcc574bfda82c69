"""Projections of the event log into PostgreSQL tables, exactly once, in batches, rebuildable without downtime.

Each projection keeps its tables in *generations* (`all_sales_orders_g1`, ...) behind a view with the base name
(`all_sales_orders`), which is what readers query. `projection_state` holds, per projection and generation, the
position (notification id) up to which the generation's tables are complete, and which generation is active.

- Exactly once: a batch's writes and its new position commit in one transaction.
- One active worker per projection: a PostgreSQL session advisory lock elects it; others wait as standby.
- Low lag: the worker LISTENs on the recorder's channel with the connection that holds its lock, and on each
  notification reads whatever has arrived (the recorder's `select_notifications`) and applies it as one batch:
  one event per transaction when live, thousands when behind. No thread sits between the notification and the
  write, so a busy process (the API beside the workers) does not add hand-offs to the lag.
- Cheap skipping: a projection names the event classes it uses (`handles`); other events are not decoded, and
  the batch's position still moves past them.
- Rebuild: a new generation is built from position zero beside the live one, then swapped in by one
  transaction that locks the state row, applies the last events, moves the views and flips `active`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar, cast

import psycopg
from eventsourcing import persistence as es_persistence
from eventsourcing.persistence import ApplicationRecorder, Mapper, Notification
from eventsourcing.utils import resolve_topic
from psycopg import sql
from psycopg.rows import TupleRow, class_row

from ledger.aggregates.values import Marketplace
from ledger.eventstore.bulk_gc import fewer_collections
from ledger.eventstore.database import (
    BUSY_FOR_SECONDS,
    COMMITTED,
    POLL_WHEN_QUIET_SECONDS,
    POLL_WHILE_BUSY_SECONDS,
    DatabaseUnavailableError,
    settle,
)

logger = logging.getLogger(__name__)

Connect = Callable[[], psycopg.Connection[TupleRow]]
Cursor = psycopg.Cursor[TupleRow]
PROGRESS_CHANNEL = "ledger_projection_progress"
MARKETPLACES = frozenset(m.value for m in Marketplace)
Row = TypeVar("Row")
EVENTS_TABLE = "ledger_events"
STOP_CHECK_SECONDS = 0.2  # how long a worker waiting for events may take to notice stop()
# A live worker's batch of fewer events than this runs in pipeline mode (for a `pipelined` projection): each
# round trip it saves is a wait that, beside a busy API, also waits to take the GIL back.
PIPELINE_BELOW = 64


@dataclass(frozen=True)
class Tables:
    """The physical table of each of a projection's base names, for one generation."""

    generation: int

    def __getitem__(self, base: str) -> sql.Identifier:
        return sql.Identifier(self.name(base))

    def name(self, base: str) -> str:
        return f"{base}_g{self.generation}"


@dataclass(frozen=True)
class Event:
    """One event of the log as a projection sees it: its position and the decoded domain event."""

    position: int
    event: Any

    @property
    def type(self) -> str:
        return type(self.event).__name__


class Projection(ABC):
    """A read model: how to create its tables, and how to apply a batch of events to them."""

    name: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]
    topics: ClassVar[tuple[str, ...]] = ()  # event topics to read; empty: all
    # The event classes `apply` uses (subclasses included); the others are skipped before decoding. Empty: all.
    handles: ClassVar[tuple[type, ...]] = ()
    # `apply` works in psycopg's pipeline mode (no COPY then, and no write whose result it reads): a live
    # worker sends a small batch's writes, its position and its notification together, in one round trip.
    pipelined: ClassVar[bool] = False

    @abstractmethod
    def create_tables(self, cur: Cursor, t: Tables) -> None:
        """Create this generation's tables and indexes (IF NOT EXISTS)."""

    def create_indexes(self, cur: Cursor, t: Tables) -> None:  # noqa: B027 - optional hook
        """Secondary indexes (IF NOT EXISTS). A rebuild creates them after catching up: building an index
        once is much cheaper than maintaining it through every batch."""

    def index_statements(self, cur: Cursor, t: Tables) -> list[sql.Composed] | None:
        """`create_indexes`' statements, for a rebuild to run on several connections at once (each builds
        with one CPU); None: the rebuild calls `create_indexes`."""
        return None

    @abstractmethod
    def apply(self, cur: Cursor, t: Tables, events: Sequence[Event]) -> None:
        """Apply events in log order. Runs inside the batch's transaction."""

    def carry_over(self, cur: Cursor, old: Tables, new: Tables) -> None:  # noqa: B027 - optional hook
        """At a rebuild's swap, copy into the new generation what is not derived from events."""


def select_by_order(
    cur: Cursor, table: sql.Identifier, columns: Sequence[str], order_ids: Sequence[Any], order_by: str = ""
) -> list[tuple[Any, ...]]:
    """The rows of `table` for these orders, in one query (a batch reads what it touches once)."""
    if not order_ids:
        return []
    statement = sql.SQL("SELECT {} FROM {} WHERE order_id = ANY(%s)").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), table
    )
    if order_by:
        statement += sql.SQL(" ORDER BY {}").format(sql.Identifier(order_by))
    return cur.execute(statement, (list(order_ids),)).fetchall()


def insert_rows(
    cur: Cursor,
    table: sql.Identifier,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    on_conflict: Sequence[str] = (),
    update: Sequence[str] = (),
) -> None:
    """Insert a batch's rows into `table`; with `on_conflict`, an upsert that sets the `update` columns."""
    if not rows:
        return
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        table,
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
    )
    if on_conflict:
        statement += sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(
            sql.SQL(", ").join(map(sql.Identifier, on_conflict)),
            sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in update),
        )
    cur.executemany(statement, rows)


def create_tables_from(cur: Cursor, statements: Sequence[str], **tables: sql.Identifier) -> None:
    """Run each `CREATE TABLE IF NOT EXISTS` statement with its `{name}` placeholders set to these tables."""
    for statement in statements:
        cur.execute(sql.SQL(statement).format(**tables))


def create_named_indexes(
    cur: Cursor, t: Tables, prefix: str, indexes: Sequence[tuple[str, str, str]]
) -> None:
    """For each (key, base table, columns): index `{prefix}_g{generation}_{key}` on the generation's table
    (IF NOT EXISTS); `columns` is the SQL after `ON table`, a predicate included."""
    for key, base, columns in indexes:
        cur.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} " + columns).format(
                sql.Identifier(f"{prefix}_g{t.generation}_{key}"), t[base]
            )
        )


# ------------------------------------------------------------------------------ read helpers


def check_marketplace(marketplace: str | None, error: type[Exception]) -> None:
    """Raise the view's `error` for a marketplace filter the ledger does not know (None: no filter)."""
    if marketplace is not None and marketplace not in MARKETPLACES:
        raise error(f"unknown marketplace {marketplace!r}")


def seller_conditions(
    seller: str, filters: Sequence[tuple[str, Any]] = ()
) -> tuple[list[sql.Composable], list[Any]]:
    """A read's WHERE conditions and parameters: the seller, and `column = value` per filter not None."""
    where: list[sql.Composable] = [sql.SQL("seller = %s")]
    params: list[Any] = [seller]
    for column, value in filters:
        if value is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    return where, params


def all_of(where: Sequence[sql.Composable]) -> sql.Composed:
    return sql.SQL(" AND ").join(where)


def fetch_all(
    conn: psycopg.Connection[TupleRow], row_type: type[Row], query: sql.Composed, params: Sequence[Any]
) -> list[Row]:
    """The query's rows, each as a `row_type` built from its columns by name."""
    with conn.cursor(row_factory=class_row(row_type)) as cur:
        return cur.execute(query, params).fetchall()


def per_order_between(
    conn: psycopg.Connection[TupleRow],
    row_type: type[Row],
    table: str,
    time_column: str,
    count_as: str,
    amount: str,
    where: list[sql.Composable],
    params: list[Any],
    start: Any,
    end: Any,
) -> list[Row]:
    """Per order, the rows of `table` (within `where`) whose `time_column` is in [start, end): their count as
    `count_as` and the sum of `amount`, by marketplace order id (what a settlement report is matched with)."""
    column = sql.Identifier(time_column)
    where = [*where, sql.SQL("{0} >= %s AND {0} < %s").format(column)]
    query = sql.SQL(
        "SELECT order_id, marketplace_order_id, account_id, currency, count(*) AS {count_as},"
        " sum({amount}) AS {amount} FROM {table} WHERE {where}"
        " GROUP BY order_id, marketplace_order_id, account_id, currency ORDER BY marketplace_order_id"
    ).format(
        count_as=sql.Identifier(count_as),
        amount=sql.Identifier(amount),
        table=sql.Identifier(table),
        where=all_of(where),
    )
    return fetch_all(conn, row_type, query, [*params, start, end])


def lock_key(name: str, schema: str) -> int:
    """A stable advisory-lock key per projection of one deployment (its schema: several deployments may share
    a database, and each elects its own workers), non-negative 31 bits, so pg_locks shows it as objid."""
    return zlib.crc32(f"ledger-projection:{schema}:{name}".encode()) & 0x7FFFFFFF


def projection_lock(conn: psycopg.Connection[TupleRow] | Cursor, name: str) -> int:
    """`lock_key` of projection `name` in the schema this connection works in (the head of its search_path)."""
    row = conn.execute("SELECT current_schema()").fetchone()
    return lock_key(name, str(row[0]) if row else "")


# Serializes the projections' DDL; one key for the whole database is enough (and simpler) for that.
DDL_LOCK = zlib.crc32(b"ledger-projection:#ddl") & 0x7FFFFFFF


_ACTIVE = {
    "": "SELECT generation, position FROM projection_state WHERE name = %s AND active",
    "share": "SELECT generation, position FROM projection_state WHERE name = %s AND active FOR SHARE",
    "update": "SELECT generation, position FROM projection_state WHERE name = %s AND active FOR UPDATE",
}


def active_generation(cur: Cursor, name: str, *, lock: str = "") -> tuple[int, int] | None:
    """(generation, position) of the projection's active generation; `lock`: "", "share" or "update"."""
    row = cur.execute(_ACTIVE[lock], (name,)).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def install(conn: psycopg.Connection[TupleRow], projection: Projection) -> tuple[int, int]:
    """Make sure the projection has an active generation with its tables and views; return it."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
        current = active_generation(cur, projection.name)
        if current is None:
            cur.execute(
                "INSERT INTO projection_state (name, generation, active) VALUES (%s, 1, true)"
                " ON CONFLICT (name, generation) DO UPDATE SET active = true",
                (projection.name,),
            )
            current = (1, 0)
        # Every process that starts a worker, a dispatcher or a rebuild comes through here while others read
        # and write the live generation: only what is missing is created, so no lock is taken on tables in use.
        projection.create_tables(cur, Tables(current[0]))
        projection.create_indexes(cast(Cursor, _MissingIndexesOnly(cur)), Tables(current[0]))
        _point_views(cur, projection, Tables(current[0]), only_if_needed=True)
    return current


class _MissingIndexesOnly:
    """A cursor that skips `CREATE INDEX IF NOT EXISTS` of an index that exists.

    PostgreSQL takes a SHARE lock on the table before it looks whether the index exists, so asking again for
    an index of a live table waits for every writer, blocks the ones behind it, and can deadlock with them.
    """

    _NAME = re.compile(
        r'CREATE\s+(?:UNIQUE\s+)?INDEX\s+IF\s+NOT\s+EXISTS\s+("(?:[^"]|"")+"|\S+)', re.IGNORECASE
    )

    def __init__(self, cur: Cursor) -> None:
        self._cur = cur

    def execute(self, query: Any, params: Any = None) -> Cursor:
        text = query.as_string(self._cur) if isinstance(query, sql.Composable) else str(query)
        match = self._NAME.search(text)
        if match is not None:
            found = self._cur.execute("SELECT to_regclass(%s)", (match.group(1),)).fetchone()
            if found is not None and found[0] is not None:
                return self._cur
        return self._cur.execute(query, params)


def _point_views(cur: Cursor, projection: Projection, t: Tables, *, only_if_needed: bool = False) -> None:
    for base in projection.tables:
        if only_if_needed:
            row = cur.execute(
                "SELECT pg_get_viewdef(c.oid) FROM pg_class c"
                " WHERE c.oid = to_regclass(%s) AND c.relkind = 'v'",
                (base,),
            ).fetchone()
            if (
                row is not None
                and re.search(rf"\b{re.escape(t.name(base))}\b", str(row[0]))
                and _column_count(cur, base) == _column_count(cur, t.name(base))
            ):
                continue  # already the view of this generation: replacing it would lock out its readers
        cur.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier(base)))
        cur.execute(sql.SQL("CREATE VIEW {} AS SELECT * FROM {}").format(sql.Identifier(base), t[base]))


def _column_count(cur: Cursor, relation: str) -> int:
    """Columns of a table or view (a view made with `SELECT *` keeps the columns its table had then)."""
    row = cur.execute(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
        (relation,),
    ).fetchone()
    return int(row[0]) if row else 0


def head_position(cur: Cursor) -> int:
    """The last position a follower can reach now: safe to start following from (no later commit can land at
    or below it). Positions are not dense: use `events_between` to count."""
    row = cur.execute(
        sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {} WHERE {}").format(
            sql.Identifier(EVENTS_TABLE), sql.SQL(COMMITTED)
        )
    ).fetchone()
    return int(row[0]) if row else 0


def last_position(cur: Cursor) -> int:
    """The largest position recorded (committed, possibly above the head while older transactions run): no
    position this ledger gave is above it."""
    row = cur.execute(
        sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(sql.Identifier(EVENTS_TABLE))
    ).fetchone()
    return int(row[0]) if row else 0


def _recorded_past(conn: psycopg.Connection[TupleRow], position: int) -> bool:
    """Whether an event is committed past `position` (above the commit horizon too)."""
    with conn.transaction(), conn.cursor() as cur:
        return last_position(cur) > position


def events_between(cur: Cursor, after: int, upto: int) -> int:
    """How many events are after position `after` up to `upto` (a projection's lag)."""
    if upto <= after:
        return 0
    row = cur.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE notification_id > %s AND notification_id <= %s").format(
            sql.Identifier(EVENTS_TABLE)
        ),
        (after, upto),
    ).fetchone()
    return int(row[0]) if row else 0


class TopicFilter:
    """Whether a stored event's topic is one of the classes a projection handles, resolved once per topic."""

    def __init__(self, classes: tuple[type, ...]) -> None:
        self.classes = classes
        self._known: dict[str, bool] = {}

    def __call__(self, topic: str) -> bool:
        known = self._known.get(topic)
        if known is None:
            known = self._known[topic] = issubclass(resolve_topic(topic), self.classes)
        return known


def topic_filter(projection: Projection) -> TopicFilter | None:
    return TopicFilter(projection.handles) if projection.handles else None


def decode(
    mapper: Mapper[Any], notifications: Sequence[Notification], wanted: Callable[[str], bool] | None = None
) -> list[Event]:
    """The notifications as events, leaving out (undecoded) those whose topic `wanted` refuses."""
    if wanted is None:
        return [Event(n.id, mapper.to_domain_event(n)) for n in notifications]
    return [Event(n.id, mapper.to_domain_event(n)) for n in notifications if wanted(n.topic)]


class ProjectionWorker:
    """Keeps one projection's active generation up to date, while it holds the projection's lock."""

    def __init__(
        self,
        projection: Projection,
        connect: Connect,
        recorder: ApplicationRecorder,
        mapper: Mapper[Any],
        *,
        batch_size: int = 2000,
        standby_interval: float = 1.0,
        poll_interval: float = 0.25,
        on_active: Callable[[str], None] | None = None,
    ) -> None:
        self.on_active = on_active
        self.projection = projection
        self.connect = connect
        self.recorder = recorder
        self.mapper = mapper
        self.batch_size = batch_size
        self.standby_interval = standby_interval
        self.poll_interval = poll_interval
        self.is_active = threading.Event()
        self.stopping = threading.Event()
        self.error: Exception | None = None

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Wait to be elected, then follow the log until stopped. Survives the database going away; any other
        error stops this worker and is kept in `error` (the process running it reports it and exits non-zero)."""
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                self._run_once()
            except (psycopg.OperationalError, es_persistence.OperationalError, es_persistence.InterfaceError,
                    DatabaseUnavailableError) as e:  # fmt: skip
                logger.warning("projection %s: database unavailable (%s); retrying", self.projection.name, e)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception as e:
                self.error = e
                logger.exception("projection %s: stopped by an error", self.projection.name)
                return
            else:
                backoff = 0.5

    def _run_once(self) -> None:
        with self.connect() as lock_conn:
            lock_conn.autocommit = True
            key = projection_lock(lock_conn, self.projection.name)
            while not self.stopping.is_set():
                row = lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                if (got := row.fetchone()) and got[0]:
                    break
                self.stopping.wait(self.standby_interval)
            else:
                return
            logger.info("projection %s: active", self.projection.name)
            self.is_active.set()
            if self.on_active is not None:
                self.on_active(self.projection.name)
            try:
                channel = getattr(self.recorder, "channel_name", None)
                if channel:
                    lock_conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                with self.connect() as conn:
                    while not self.stopping.is_set():
                        generation, position = install(conn, self.projection)
                        self._follow(conn, lock_conn if channel else None, generation, position)
            finally:
                self.is_active.clear()

    def _follow(
        self,
        conn: psycopg.Connection[TupleRow],
        listening: psycopg.Connection[TupleRow] | None,
        generation: int,
        position: int,
    ) -> None:
        """Apply batches until stopped or the active generation changes (a rebuild swapped it).

        Notifications that came while a batch was applied are taken before reading, so each wait ends only on
        an event committed after the read; `poll_interval` bounds the wait should a notification not come.
        The log hands out only events below its commit horizon (`COMMITTED`): a notification can come while an
        older transaction still holds the horizon, and that one may end without any. So for BUSY_FOR_SECONDS
        after a notification or a batch the worker reads again every POLL_WHILE_BUSY_SECONDS, as the
        recorder's own subscription does. Should events still be recorded past its position then (held back by a
        transaction that stays open longer), it looks again at least every POLL_WHEN_QUIET_SECONDS until it has
        them, whatever `poll_interval` is: the transaction may end without a notification.
        """
        wanted = topic_filter(self.projection)
        busy_until = 0.0
        held_back = False
        while not self.stopping.is_set():
            if listening is not None and any(True for _ in listening.notifies(timeout=0)):
                busy_until = time.monotonic() + BUSY_FOR_SECONDS
            notifications = self.recorder.select_notifications(
                start=position, limit=self.batch_size, topics=self.projection.topics, inclusive_of_start=False
            )
            if notifications:
                if not self._apply(conn, generation, notifications, wanted):
                    return
                position = notifications[-1].id
                busy_until = time.monotonic() + BUSY_FOR_SECONDS
                held_back = False
                if len(notifications) >= self.batch_size:
                    continue  # behind: the next batch at once
            elif (busy_until or held_back) and time.monotonic() >= busy_until:
                # A busy period ended (or the last look found events held back): is anything recorded past the
                # position? (A projection reading every topic ends at the last position recorded.)
                held_back = not self.projection.topics and _recorded_past(conn, position)
                busy_until = 0.0
            busy = time.monotonic() < busy_until
            interval = POLL_WHILE_BUSY_SECONDS if busy else self.poll_interval
            if held_back:
                interval = min(interval, POLL_WHEN_QUIET_SECONDS)
            if self._wait(listening, interval):
                busy_until = time.monotonic() + BUSY_FOR_SECONDS

    def _wait(self, listening: psycopg.Connection[TupleRow] | None, interval: float) -> bool:
        """Until a notification (True), `interval` or `stop()`, whichever comes first."""
        if listening is None:
            self.stopping.wait(interval)
            return False
        deadline = time.monotonic() + interval
        while not self.stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            for _ in listening.notifies(timeout=min(left, STOP_CHECK_SECONDS), stop_after=1):
                return True
        return False

    def _apply(
        self,
        conn: psycopg.Connection[TupleRow],
        generation: int,
        batch: Sequence[Notification],
        wanted: Callable[[str], bool] | None,
    ) -> bool:
        pipelined = self.projection.pipelined and len(batch) < PIPELINE_BELOW
        with (
            conn.pipeline() if pipelined else contextlib.nullcontext(),
            conn.transaction(),
            conn.cursor() as cur,
        ):
            current = active_generation(cur, self.projection.name, lock="share")
            if current is None or current[0] != generation:
                return False
            fresh = [n for n in batch if n.id > current[1]]
            if not fresh:
                return True
            apply_batch(
                cur, self.projection, Tables(generation), decode(self.mapper, fresh, wanted), fresh[-1].id
            )
        return True


def apply_batch(
    cur: Cursor, projection: Projection, t: Tables, events: Sequence[Event], last: int | None = None
) -> None:
    """Apply events and advance the generation's position to `last` (default: the last event's), in the
    caller's transaction. `last` may be past the last event: the batch's skipped events are done too."""
    if events:
        projection.apply(cur, t, events)
    if last is None:
        last = events[-1].position
    cur.execute(
        "UPDATE projection_state SET position = %s, updated_at = now() WHERE name = %s AND generation = %s",
        (last, projection.name, t.generation),
    )
    cur.execute("SELECT pg_notify(%s, %s)", (PROGRESS_CHANNEL, f"{projection.name}:{last}"))


# ----------------------------------------------------------------------------------- rebuild


def rebuild(
    projection: Projection,
    connect: Connect,
    recorder: ApplicationRecorder,
    mapper: Mapper[Any],
    *,
    batch_size: int = 2000,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Build a new generation from position zero while the active one keeps serving, then swap atomically.

    Returns (new generation, position). The live worker, if any, notices the swap and follows the new one.
    """
    with connect() as conn:
        install(conn, projection)
        with conn.transaction(), conn.cursor() as cur:
            row = cur.execute(
                "SELECT coalesce(max(generation), 0) + 1 FROM projection_state WHERE name = %s",
                (projection.name,),
            ).fetchone()
            assert row is not None
            new = Tables(int(row[0]))
            cur.execute(
                "INSERT INTO projection_state (name, generation, active) VALUES (%s, %s, false)",
                (projection.name, new.generation),
            )
            _drop_tables(cur, projection, new)
            projection.create_tables(cur, new)
        position = _catch_up(conn, projection, new, 0, recorder, mapper, batch_size, progress)
        with conn.transaction(), conn.cursor() as cur:
            indexes = projection.index_statements(cur, new)
            if indexes is None:
                projection.create_indexes(cur, new)
        if indexes:
            _run_at_once(connect, conn, indexes)
        # Statistics before the swap: autovacuum's analyze came later and left the expression index of a
        # trigram search without any, so the planner took a 100,000-row match for 320 rows and sorted them
        # (a deep All Sales page with `q` went from 2 ms to 190 ms on the 1M-order book until ANALYZE). After
        # the indexes (an expression index's statistics are the table's ANALYZE's), one table per connection.
        _run_at_once(connect, conn, [sql.SQL("ANALYZE {}").format(new[table]) for table in projection.tables])
        position = _catch_up(conn, projection, new, position, recorder, mapper, batch_size, None)
        with conn.transaction(), conn.cursor() as cur:
            old_generation, _ = active_generation(cur, projection.name, lock="update") or (0, 0)
            # Writers are paused by the lock above only for the events still to apply: usually a few.
            position = _catch_up_in(cur, projection, new, position, recorder, mapper, batch_size)
            projection.carry_over(cur, Tables(old_generation), new)
            cur.execute(
                "UPDATE projection_state SET active = false WHERE name = %s AND generation = %s",
                (projection.name, old_generation),
            )
            cur.execute(
                "UPDATE projection_state SET active = true, updated_at = now() WHERE name = %s AND generation = %s",
                (projection.name, new.generation),
            )
            _point_views(cur, projection, new)
        with conn.transaction(), conn.cursor() as cur:
            _drop_tables(cur, projection, Tables(old_generation))
            cur.execute(
                "DELETE FROM projection_state WHERE name = %s AND generation < %s",
                (projection.name, new.generation),
            )
    return new.generation, position


INDEX_CONNECTIONS = (
    2  # a rebuild's index builds at once: CREATE INDEX's locks allow each other (as pg_restore -j)
)


def _run_at_once(
    connect: Connect, conn: psycopg.Connection[TupleRow], statements: Sequence[sql.Composed]
) -> None:
    """Run the statements (index builds, ANALYZEs) on `INDEX_CONNECTIONS` connections at once, each connection
    taking the next statement as it is done with one, each connection's in one transaction (the tables' rows are
    committed; the new generation is not served before its swap). Python waits on PostgreSQL meanwhile, so one
    thread per other connection costs nothing."""
    todo: queue.SimpleQueue[sql.Composed] = queue.SimpleQueue()
    for statement in statements:
        todo.put(statement)
    errors: list[BaseException] = []

    def run(on: psycopg.Connection[TupleRow]) -> None:
        with on.transaction():
            while not errors:
                try:
                    statement = todo.get_nowait()
                except queue.Empty:
                    return
                on.execute(statement)

    def build() -> None:
        try:
            with connect() as other:
                run(other)
        except BaseException as e:  # raised by the rebuild's thread below
            errors.append(e)

    others = min(INDEX_CONNECTIONS, len(statements)) - 1
    threads = [threading.Thread(target=build, name="rebuild-indexes") for _ in range(others)]
    for thread in threads:
        thread.start()
    try:
        run(conn)
    except BaseException as e:
        errors.append(e)
        raise
    finally:
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]


def _drop_tables(cur: Cursor, projection: Projection, t: Tables) -> None:
    for base in projection.tables:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(t[base]))


def _catch_up(
    conn: psycopg.Connection[TupleRow],
    projection: Projection,
    t: Tables,
    position: int,
    recorder: ApplicationRecorder,
    mapper: Mapper[Any],
    batch_size: int,
    progress: Callable[[int, int], None] | None,
) -> int:
    """Apply batches into generation `t` until the head of the log, one transaction per batch.

    A reader thread selects and decodes the next batch while this one is written, so the database's time
    and Python's overlap.
    """
    batches: queue.Queue[tuple[list[Event], int, int] | BaseException | None] = queue.Queue(maxsize=2)
    stop = threading.Event()
    wanted = topic_filter(projection)

    def read() -> None:
        start = position
        try:
            while not stop.is_set():
                notifications = recorder.select_notifications(
                    start=start, limit=batch_size, topics=projection.topics, inclusive_of_start=False
                )
                if not notifications:
                    break
                start = notifications[-1].id
                batches.put((decode(mapper, notifications, wanted), start, len(notifications)))
        except BaseException as e:  # handed to the writing thread, which raises it
            batches.put(e)
        batches.put(None)

    done = total = 0
    if progress:  # events, not positions (positions are not dense): counted once, then as applied
        with conn.transaction(), conn.cursor() as cur:
            total = events_between(cur, position, head_position(cur))
    reader = threading.Thread(target=read, name=f"{projection.name}-rebuild-reader", daemon=True)
    with fewer_collections():
        reader.start()
        try:
            while (batch := batches.get()) is not None:
                if isinstance(batch, BaseException):
                    raise batch
                events, position, read_count = batch
                with conn.transaction(), conn.cursor() as cur:
                    apply_batch(cur, projection, t, events, position)
                done += read_count
                if progress:
                    progress(done, max(total, done))
        finally:
            stop.set()
            while reader.is_alive():  # unblock a reader waiting to put
                with contextlib.suppress(queue.Empty):
                    batches.get(timeout=0.1)
    return position


def _catch_up_in(
    cur: Cursor,
    projection: Projection,
    t: Tables,
    position: int,
    recorder: ApplicationRecorder,
    mapper: Mapper[Any],
    batch_size: int,
    *,
    once: bool = False,
) -> int:
    while True:
        notifications = recorder.select_notifications(
            start=position, limit=batch_size, topics=projection.topics, inclusive_of_start=False
        )
        if not notifications:
            return position
        position = notifications[-1].id
        apply_batch(cur, projection, t, decode(mapper, notifications, topic_filter(projection)), position)
        if once or len(notifications) < batch_size:
            return position


def catch_up_unless_followed(
    conn: psycopg.Connection[TupleRow],
    projection: Projection,
    recorder: ApplicationRecorder,
    mapper: Mapper[Any],
    *,
    batch_size: int = 2000,
) -> None:
    """Bring the projection's active generation up to the head of the log from this process, unless a worker
    follows it (holds its lock). `conn` is in autocommit; a rebuild swapping generations ends it early (the
    rebuild's own catch-up covers the rest)."""
    key = projection_lock(conn, projection.name)
    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    if not (got and got[0]):
        return
    try:
        generation, position = install(conn, projection)
        settle(conn)  # up to what was committed before this call (unless a transaction stays open)
        wanted = topic_filter(projection)
        while notifications := recorder.select_notifications(
            start=position, limit=batch_size, topics=projection.topics, inclusive_of_start=False
        ):
            with conn.transaction(), conn.cursor() as cur:
                current = active_generation(cur, projection.name, lock="share")
                if current is None or current[0] != generation:
                    return
                fresh = [n for n in notifications if n.id > current[1]]
                if fresh:
                    events = decode(mapper, fresh, wanted)
                    apply_batch(cur, projection, Tables(generation), events, fresh[-1].id)
            position = notifications[-1].id
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


# ------------------------------------------------------------------------- status and waits


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    generation: int | None
    position: int
    head: int
    """The largest position committed (`last_position`), above the commit horizon too: what was recorded."""
    active_worker: bool
    updated_at: Any
    lag: int = 0
    """Events between the projection's position and the head (positions are not dense: not head - position):
    every event recorded and not yet applied, those a transaction open elsewhere still holds back included."""


def status(conn: psycopg.Connection[TupleRow], projections: Sequence[Projection]) -> list[ProjectionStatus]:
    """Each projection's position against what the log has recorded. The head is the last committed position,
    not the commit horizon's (`head_position`): while an older transaction holds the horizon back, events it
    holds back are recorded and not applied, so they count in the lag (the metrics, /readyz and `ledger
    projections status` show a projection held back, instead of a lag of 0 with the work still to do)."""
    result = []
    with conn.transaction(), conn.cursor() as cur:
        head = last_position(cur) if _events_table_exists(cur) else 0
        for projection in projections:
            row = cur.execute(
                "SELECT generation, position, updated_at FROM projection_state WHERE name = %s AND active",
                (projection.name,),
            ).fetchone()
            worker = cur.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND classid = 0 AND objid = %s AND objsubid = 1)",
                (projection_lock(cur, projection.name),),
            ).fetchone()
            result.append(
                ProjectionStatus(
                    projection.name,
                    int(row[0]) if row else None,
                    int(row[1]) if row else 0,
                    head,
                    bool(worker and worker[0]),
                    row[2] if row else None,
                    events_between(cur, int(row[1]) if row else 0, head),
                )
            )
    return result


def database_now(conn: psycopg.Connection[TupleRow]) -> datetime:
    """The database's clock, which stamps `ProjectionStatus.updated_at`: compare that with this, not the host's."""
    row = conn.execute("SELECT now()").fetchone()
    return cast(datetime, row[0]) if row else datetime.now(UTC)


def _events_table_exists(cur: Cursor) -> bool:
    row = cur.execute("SELECT to_regclass(%s) IS NOT NULL", (EVENTS_TABLE,)).fetchone()
    return bool(row and row[0])


def wait_for(
    conn: psycopg.Connection[TupleRow], name: str, position: int, timeout: float, *, listen: bool = True
) -> bool:
    """Read-your-writes: wait until projection `name` has applied `position`. False on timeout.
    `listen=False` polls instead of waiting for progress notifications: a streaming replica cannot LISTEN."""
    if not listen:
        return _poll_for(conn, name, position, timeout)
    deadline = time.monotonic() + timeout
    conn.autocommit = True
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(PROGRESS_CHANNEL)))
    try:
        while True:
            if _applied(conn, name, position):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for _ in conn.notifies(timeout=min(remaining, 0.5), stop_after=1):
                pass
    finally:
        conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(PROGRESS_CHANNEL)))


def _applied(conn: psycopg.Connection[TupleRow], name: str, position: int) -> bool:
    """Whether projection `name`'s active generation has applied `position`."""
    row = conn.execute("SELECT position FROM projection_state WHERE name = %s AND active", (name,)).fetchone()
    return bool(row and int(row[0]) >= position)


def _poll_for(conn: psycopg.Connection[TupleRow], name: str, position: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        if _applied(conn, name, position):
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.05)

"""Appends from 16 threads: the Ledger's saves against plain INSERT+COMMIT, in one run (issue 17, target 4).

Every variant runs for `--seconds` with `--threads` threads, one after the other, each in a schema of its own
on the same server, and the whole sequence is repeated `--rounds` times (the best round of each counts):
- `plain`: each thread on a connection of its own, `INSERT` one row shaped like an event (uuid, version,
  topic, ~300 bytes of state) and COMMIT, nothing else: the ceiling;
- `ledger`: `Ledger._save` of a new aggregate (one event), in process, with the default recorder (no table
  lock) and group commit on (the default);
- `ledger-alone`: the same with group commit off (`LEDGER_GROUP_COMMIT=n`): each save its own transaction;
- `locked` and `locked-alone`: the same two with the recorder before this change (`LockedRecorder`: the
  library's `LOCK TABLE ... IN EXCLUSIVE MODE` and NOTIFY in every save's transaction).
Figures are saves (or inserts) per second and their ratio to `plain`, all from the same run.

    PYTHONPATH=src .venv/bin/python bench/appends.py [--seconds 5] [--rounds 2] [--threads 16] \
        > bench/results-appends.json

LEDGER_DATABASE_URL picks the server (else an embedded PostgreSQL in a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from _common import bench_target, drop_schema, machine
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent
from psycopg import sql

from ledger.application.ledger import Ledger
from ledger.eventstore.database import LedgerApplicationRecorder, PostgresTarget, ensure_schema

STATE = b"x" * 300


class Thing(Aggregate):
    """One event per save (its creation)."""


class LockedRecorder(LedgerApplicationRecorder):
    """The Ledger's recorder as it was before issue 17 (main at 70a71cd): the library's table lock and NOTIFY
    inside every save's transaction, BEGIN, lock, NOTIFY and INSERT in one pipeline, then COMMIT. Its rows get
    the same kind of positions as the new recorder's (only the write path is measured)."""

    def _insert_stored_events(self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        for statement in self.lock_table_statements:
            curs.execute(statement)
        curs.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(self.channel_name)))
        self._insert_arrays(curs, stored_events)

    def _insert_in_few_round_trips(self, stored_events: Sequence[StoredEvent]) -> Sequence[int]:
        with self.datastore.get_connection() as conn:
            notify = sql.SQL("NOTIFY {}").format(sql.Identifier(self.channel_name))
            statements = [b"BEGIN", *(s.as_bytes(conn) for s in [*self.lock_table_statements, notify])]
            try:
                with conn.cursor() as curs:
                    with conn.pipeline():
                        for statement in statements:
                            conn.execute(statement)
                        self._insert_arrays(curs, stored_events)
                    ids = self._fetch_ids_after_insert_events(curs, stored_events)
                conn.execute(b"COMMIT")
            except BaseException:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.execute(b"ROLLBACK")
                raise
        assert ids is not None
        return ids


def run_threads(threads: int, seconds: float, make_worker: Callable[[], Callable[[], None]]) -> float:
    """Operations per second: `threads` threads each calling its worker until `seconds` pass."""
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop = threading.Event()

    def loop(i: int) -> None:
        work = make_worker()
        start.wait()
        while not stop.is_set():
            work()
            counts[i] += 1

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - began)


def plain(target: PostgresTarget, threads: int, seconds: float) -> float:
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {}.plain_events (originator_id uuid NOT NULL, originator_version bigint NOT NULL,"
                " topic text, state bytea, notification_id bigserial, PRIMARY KEY (originator_id,"
                " originator_version))"
            ).format(sql.Identifier(target.schema))
        )
    statement = sql.SQL(
        "INSERT INTO {}.plain_events (originator_id, originator_version, topic, state) VALUES (%s, 1, %s, %s)"
    ).format(sql.Identifier(target.schema))
    connections: list[psycopg.Connection[Any]] = []

    def make() -> Callable[[], None]:
        conn = psycopg.connect(target.conninfo(), autocommit=True)
        connections.append(conn)
        return lambda: conn.execute(statement, (uuid.uuid4(), "bench:Thing.Created", STATE), prepare=True)

    try:
        return run_threads(threads, seconds, make)
    finally:
        for conn in connections:
            conn.close()


def ledger(target: PostgresTarget, threads: int, seconds: float, *, locked: bool, grouped: bool) -> float:
    env = {**target.eventsourcing_env(), "POSTGRES_POOL_SIZE": str(threads)}
    if locked:
        env["APPLICATION_RECORDER_TOPIC"] = "appends:LockedRecorder"
    if not grouped:
        env["LEDGER_GROUP_COMMIT"] = "n"
    app = Ledger(env=env)
    try:
        return run_threads(threads, seconds, lambda: lambda: app._save(Thing()))
    finally:
        app.close()


VARIANTS: dict[str, Callable[[PostgresTarget, int, float], float]] = {
    "plain": plain,
    "ledger": lambda t, n, s: ledger(t, n, s, locked=False, grouped=True),
    "ledger-alone": lambda t, n, s: ledger(t, n, s, locked=False, grouped=False),
    "locked": lambda t, n, s: ledger(t, n, s, locked=True, grouped=True),
    "locked-alone": lambda t, n, s: ledger(t, n, s, locked=True, grouped=False),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated, in order (default: all; `plain` first)",
    )
    args = parser.parse_args()
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    rounds: list[dict[str, float]] = []
    with bench_target(f"bench_appends_{secrets.token_hex(3)}", pool_size=args.threads) as server:
        info = machine(server)
        for _ in range(args.rounds):
            found: dict[str, float] = {}
            for name, variant in variants.items():
                target = PostgresTarget(**{**vars(server), "schema": f"bench_appends_{secrets.token_hex(4)}"})
                ensure_schema(target)
                try:
                    found[name] = variant(target, args.threads, args.seconds)
                finally:
                    drop_schema(target)
                print(f"{name:<14} {found[name]:>9.0f} /s", file=sys.stderr)
            rounds.append(found)
        drop_schema(server)
    best = {name: max(r[name] for r in rounds) for name in variants}
    result = {
        "command": "PYTHONPATH=src .venv/bin/python bench/appends.py " + " ".join(sys.argv[1:]),
        "threads": args.threads,
        "seconds": args.seconds,
        "rounds": rounds,
        "per_second": {k: round(v) for k, v in best.items()},
        "ratio_to_plain": {k: round(v / best["plain"], 2) for k, v in best.items()}
        if "plain" in best
        else {},
        "ratio_per_round": [{k: round(r[k] / r["plain"], 2) for k in variants} for r in rounds]
        if "plain" in best
        else [],
        "machine": info,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

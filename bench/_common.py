"""What the benchmarks share: where PostgreSQL comes from, the machine they ran on, percentiles.

Benchmark scripts run as `python bench/<name>.py`, so this module is importable as `_common`.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ledger.config import Settings
from ledger.eventstore.database import EmbeddedPostgres, PostgresTarget, ensure_schema, parse_database_url

DEFAULT_DATA_DIR = Path("/tmp/ledger-bench-pg")  # noqa: S108 - kept between runs on purpose


@contextmanager
def bench_target(
    schema: str, data_dir: Path | None = None, *, pool_size: int = 5
) -> Iterator[PostgresTarget]:
    """LEDGER_DATABASE_URL when set, else an embedded PostgreSQL in `data_dir` (a temporary one when None,
    deleted afterwards). The schema is created if missing and left in place: the caller drops it when it is
    throw-away.
    """
    settings = Settings.from_env()
    if settings.database_url:
        target = parse_database_url(settings.database_url, schema, pool_size=pool_size)
        ensure_schema(target)
        yield target
        return
    directory = data_dir or Path(tempfile.mkdtemp(prefix="ledger-bench-", dir="/tmp"))
    try:
        with EmbeddedPostgres(directory) as server:
            target = dataclasses.replace(server, schema=schema, pool_size=pool_size)
            ensure_schema(target)
            yield target
    finally:
        if data_dir is None:  # a throw-away server: its data goes with it
            shutil.rmtree(directory, ignore_errors=True)


def database_url(target: PostgresTarget) -> str:
    """A LEDGER_DATABASE_URL reaching `target` (for `ledger serve` started as a process)."""
    from urllib.parse import quote  # noqa: PLC0415

    password = f":{quote(target.password, safe='')}" if target.password else ""
    auth = f"{quote(target.user, safe='')}{password}@"
    if target.is_unix_socket:
        return f"postgresql://{auth}/{quote(target.dbname, safe='')}?host={target.host}&port={target.port}"
    return f"postgresql://{auth}{target.host}:{target.port}/{quote(target.dbname, safe='')}"


def drop_schema(target: PostgresTarget) -> None:
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema)))


def machine(target: PostgresTarget) -> dict[str, Any]:
    with psycopg.connect(target.conninfo()) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return {
        "cpus": os.cpu_count() or 0,
        "python": platform.python_version(),
        "postgres": row[0] if row else None,
        "platform": platform.platform(),
    }


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) by the nearest-rank method; 0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(int(-(-q * len(ordered) // 100)) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]


def summary_ms(samples: list[float]) -> dict[str, float]:
    """p50/p99/max of latencies given in seconds, in milliseconds."""
    return {
        "n": len(samples),
        "p50_ms": round(statistics.median(samples) * 1000, 2) if samples else 0.0,
        "p99_ms": round(percentile(samples, 99) * 1000, 2),
        "max_ms": round(max(samples, default=0.0) * 1000, 2),
    }


def rss_peak_kb(pid: int) -> int:
    """The peak resident set (VmHWM) of a live process, in kB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0

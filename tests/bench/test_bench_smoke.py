"""Each benchmark in bench/ runs end to end at a tiny size, so that none rots (CI never runs them full size).

The figures of a smoke run mean nothing; the test checks that every benchmark finishes and reports its fields.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ledger.eventstore.database import PostgresTarget

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(script: str, pg_url: str, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | {
        "LEDGER_DATABASE_URL": pg_url
    }
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bench_schema(pg_target: PostgresTarget) -> Any:
    schema = f"bench_smoke_{secrets.token_hex(4)}"
    yield schema
    with psycopg.connect(pg_target.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.slow
def test_generate_then_query_the_book(pg_url: str, bench_schema: str, tmp_path: Path) -> None:
    """generate_orders builds a small book (resumable: a second run adds nothing); all_sales_queries reads it."""
    book = ("--orders", "400", "--batch", "150", "--sellers", "3", "--schema", bench_schema)
    generated = _run("generate_orders.py", pg_url, *book, "--projections", "all_sales")
    assert generated["orders_written_this_run"] == 400
    assert sum(generated["distribution"]["by_tab"].values()) == 400
    again = _run("generate_orders.py", pg_url, *book, "--projections", "none")
    assert again["events_written_this_run"] == 0
    assert again["events_in_store"] == generated["events_in_store"]
    queries = _run("all_sales_queries.py", pg_url, "--schema", bench_schema, "--requests", "2", "--deep-rows", "60",
                   "--port", str(_free_port()), "--log-dir", str(tmp_path))  # fmt: skip
    assert queries["history_events"] == 50
    assert queries["list"]["none"]["first_page"]["n"] == 2
    assert queries["peak_rss_mb"]["ledger serve"] > 0


@pytest.mark.slow
def test_import_http_smoke(pg_url: str) -> None:
    """import_http imports over HTTP, runs the executemany baseline and the library path, and reports ratios."""
    result = _run("import_http.py", pg_url, "--orders", "200", "--batch", "100", "--clients", "2", "--runs", "1",
                  "--library-orders", "10", "--port", str(_free_port()))  # fmt: skip
    assert result["orders_per_run"] == 200
    assert result["ours_orders_per_s_median"] > 0
    assert result["executemany_rows_per_s_median"] > 0
    assert result["server_cpu_us_per_order_median"] > 0
    assert result["inprocess_cpu_us_per_order_median"] > 0


@pytest.mark.slow
def test_projection_catchup_smoke(pg_url: str) -> None:
    """projection_catchup rebuilds, runs the library's runner and measures live lag, at a tiny size."""
    result = _run("projection_catchup.py", pg_url, "--events", "300", "--library-events", "30", "--runs", "1",
                  "--lag-seconds", "1", "--lag-rate", "20")  # fmt: skip
    assert result["ours_events_per_s_median"] > 0
    assert result["live_lag"]["commands"] > 0


@pytest.mark.slow
def test_projection_lag_with_clients_apart_smoke(pg_url: str) -> None:
    """--lag-clients process: the load comes from a process of its own, both lag figures are reported."""
    result = _run("projection_catchup.py", pg_url, "--events", "100", "--library-events", "0", "--runs", "1",
                  "--lag-seconds", "1", "--lag-rate", "20", "--lag-clients", "process")  # fmt: skip
    lag = result["live_lag"]
    assert lag["clients"] == "process"
    assert lag["commands"] > 0
    assert lag["lag_samples"] == lag["commands"]
    assert lag["sent_to_visible_ms_p99"] >= lag["sent_to_visible_ms_p50"] > 0


@pytest.mark.slow
def test_projection_ab_smoke(pg_url: str) -> None:
    """projection_ab runs two builds in turn over one kept log and reports each one's catch-up and lag, with
    the worker in the benchmark's process and in `ledger worker` of its own."""
    src = str(BENCH.parent / "src")
    result = _run("projection_ab.py", pg_url, "--rounds", "1", "--events", "200", "--lag-seconds", "1",
                  "--lag-rate", "20", "--lag-worker", "both", f"a={src}", f"b={src}")  # fmt: skip
    for build in result["builds"].values():
        assert build["events_per_s_median"] > 0
        assert build["commands_per_s_runs"][0] > 0
        assert build["lag_worker"] == ["thread"]
        assert build["lag_worker_process_commands_per_s_runs"][0] > 0
        assert build["lag_worker_process_ms_p99_median"] is not None
    assert result["builds"]["b"]["events_rebuilt"][0] > result["builds"]["a"]["events_rebuilt"][0]


@pytest.mark.slow
def test_feed_smoke(pg_url: str) -> None:
    """feed pages the change feed over HTTP and by its SQL, and times webhook deliveries, at a tiny size."""
    result = _run("feed.py", pg_url, "--events", "300", "--page", "100", "--runs", "1", "--rate", "20",
                  "--seconds", "1", "--port", str(_free_port()))  # fmt: skip
    assert result["http_events_per_s_median"] > 0
    assert result["sql_events_per_s_median"] > 0
    assert result["webhook_events_received"] == result["webhook_events_sent"] == 20
    assert result["webhook_in_order"]


def test_appends_smoke(pg_url: str) -> None:
    """appends saves from threads with each recorder beside plain INSERTs, at a tiny size."""
    result = _run("appends.py", pg_url, "--seconds", "0.3", "--rounds", "1", "--threads", "2")
    assert set(result["per_second"]) == {"plain", "ledger", "ledger-alone", "locked", "locked-alone"}
    assert all(rate > 0 for rate in result["per_second"].values())


def test_appends_ab_smoke(pg_url: str) -> None:
    """appends_ab runs two builds in turn, each against its own plain INSERTs, and reports each one's ratios."""
    src = str(BENCH.parent / "src")
    result = _run("appends_ab.py", pg_url, "--rounds", "2", "--seconds", "0.3", "--threads", "2",
                  f"a={src}", f"b={src}")  # fmt: skip
    for name in ("a", "b"):
        assert [run["ratio"]["plain"] for run in result["runs"][name]] == [1.0, 1.0]
        assert result["median_ratio"][name]["ledger"] > 0


def test_decoding_smoke() -> None:
    """decoding times the library's and the typed decoding of the same stored events, at a tiny size."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "decoding.py"), "--orders", "20", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    for part in ("all_sales", "previous_release"):
        assert result[part]["library"]["cpu_us_per_event_median"] > 0
        assert result[part]["typed"]["cpu_us_per_event_median"] > 0
    assert set(result["all_sales_per_type"]) == {"Imported", "Shipped", "Refunded"}

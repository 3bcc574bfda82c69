"""A/B of `ledger serve` builds under the commands benchmark's load, with the server's CPU time per command.

    python bench/commands_ab.py [--runs 3] [--commands 1500] before=/path/to/old/src after=src

Each NAME=SRC is a `src` directory (e.g. `git archive <commit> src | tar -x -C /tmp/old`) whose `ledger serve`
is measured; NAME=SRC@N runs it with `--processes N` (`one=src two=src@2`: one against two server processes); the ceiling of commands_http.py runs in every round too. Variants are interleaved, on one embedded
PostgreSQL, with the same load as commands_http.py's `ledger` variant (16 clients, one order per request).
Besides commands/s it reports the server process's CPU seconds (user + system, from /proc) per command: on a
shared machine that figure moves much less than the rate, so it is the one to compare builds by; and the CPU of
the server's main thread alone (its event loop: HTTP, the framework, the API's code, without the command and
commit threads), which is what a change to the HTTP path moves. Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).parent))
import commands_http as bench

from ledger.aggregates.values import Role
from ledger.application.ledger import Ledger
from ledger.eventstore.database import EmbeddedPostgres, ensure_schema


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its direct children (uvicorn's workers, with --processes)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0.0
    for p in [pid, *map(int, children)]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def loop_thread_cpu_seconds(pid: int) -> float:
    """User + system CPU of the server's main thread: its event loop (HTTP, the framework, the API's own code),
    without the threads that run commands and commit them. Meaningful with one process."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--commands", type=int, default=1500, help="requests per variant per run")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("builds", nargs="+", help="NAME=SRC")
    args = parser.parse_args()
    builds = [("ceiling", "")] + [tuple(b.split("=", 1)) for b in args.builds]
    processes = {name: int(src.rpartition("@")[2]) if "@" in src else 1 for name, src in builds}
    builds = [(name, src.rpartition("@")[0] if "@" in src else src) for name, src in builds]
    rates: dict[str, list[float]] = {name: [] for name, _ in builds}
    cpus: dict[str, list[float]] = {name: [] for name, _ in builds}
    loop_cpus: dict[str, list[float]] = {name: [] for name, _ in builds}
    data = Path(tempfile.mkdtemp(prefix="ledger-bench-", dir="/tmp"))
    pythonpath = os.environ.get("PYTHONPATH", "")
    try:
        with EmbeddedPostgres(data) as pg:
            target = dataclasses.replace(pg, schema=f"bench_{secrets.token_hex(4)}")
            ensure_schema(target)
            app = Ledger(env=target.eventsourcing_env())
            seller = f"bench-{secrets.token_hex(3)}"
            secret, _ = app.create_api_key(bench.CTX, seller=seller, role=Role.OPERATOR, name="bench")
            with psycopg.connect(target.conninfo(), autocommit=True) as conn:
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE {}.bench_ceiling (id bigserial PRIMARY KEY, order_id uuid, body jsonb)"
                    ).format(sql.Identifier(target.schema))
                )
            for run in range(args.runs):
                for name, src in builds:
                    plan = bench.make_orders(app, args.commands, seller)
                    kind = "ceiling" if name == "ceiling" else "ledger"
                    os.environ["PYTHONPATH"] = str(Path(src).resolve()) if src else pythonpath
                    proc, port = bench.start_server(kind, target, processes[name])
                    try:
                        asyncio.run(
                            bench.load(port, bench.requests_for(kind, plan[:100], secret), args.clients)
                        )
                        before = cpu_seconds(proc.pid)
                        loop_before = loop_thread_cpu_seconds(proc.pid)
                        figures = asyncio.run(
                            bench.load(port, bench.requests_for(kind, plan[100:], secret), args.clients)
                        )
                        cpu = (cpu_seconds(proc.pid) - before) / figures["requests"]
                        loop_cpu = (loop_thread_cpu_seconds(proc.pid) - loop_before) / figures["requests"]
                    finally:
                        bench.stop_server(proc)
                        os.environ["PYTHONPATH"] = pythonpath
                    rates[name].append(figures["per_s"])
                    cpus[name].append(cpu * 1000)
                    loop_cpus[name].append(loop_cpu * 1000)
                    print(
                        f"run {run} {name}: {figures['per_s']:.0f}/s, {cpu * 1000:.2f} ms CPU per request "
                        f"({loop_cpu * 1000:.3f} in the loop thread), errors {figures['errors']}",
                        file=sys.stderr,
                    )
            app.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    ceiling = statistics.median(rates["ceiling"])
    result: dict[str, Any] = {
        name: {
            "per_s_median": round(statistics.median(rates[name]), 1),
            "per_s_runs": [round(r, 1) for r in rates[name]],
            "to_ceiling": round(statistics.median(rates[name]) / ceiling, 3),
            "server_cpu_ms_per_request_median": round(statistics.median(cpus[name]), 2),
            "server_cpu_ms_per_request_runs": [round(c, 2) for c in cpus[name]],
            "loop_thread_cpu_ms_per_request_median": round(statistics.median(loop_cpus[name]), 3),
            "loop_thread_cpu_ms_per_request_runs": [round(c, 3) for c in loop_cpus[name]],
        }
        for name, _ in builds
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

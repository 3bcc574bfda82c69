"""A/B of builds of the projections' runner: All Sales catch-up and live lag, interleaved over one event log.

    python bench/projection_ab.py [--rounds 3] [--events 100000] [--lag-seconds 10] [--lag-rate 500] \
        [--lag-worker thread|process|both] before=/path/to/old/src after=src

Each NAME=SRC is a `src` directory (e.g. `git archive <commit> src | tar -x -C /tmp/old`). Every round runs
`projection_catchup.py` once per build, in a process of its own importing that build, in one kept schema:
a rebuild from position 0 (events/s, and the process's CPU ms per 1,000 events: the steadier figure on a
shared machine), then the live-lag phase (which adds its commands to the log, so later rounds rebuild a
slightly longer log; every build sees each length once per round in turn). `--lag-worker` (see
projection_catchup.py): the lag phase's worker in the benchmark's process, in `ledger worker` of its own, or
both one after the other (`lag_*` and `lag_worker_process_*` figures). Uses LEDGER_DATABASE_URL when set,
else an embedded PostgreSQL in a temporary directory. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import bench_target, database_url, drop_schema, machine

HERE = Path(__file__).parent


def run_build(src: str, url: str, schema: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve()), "LEDGER_DATABASE_URL": url}
    command = [sys.executable, str(HERE / "projection_catchup.py"), "--schema", schema, "--runs", "1",
               "--events", str(args.events), "--library-events", "0",
               "--lag-seconds", str(args.lag_seconds), "--lag-rate", str(args.lag_rate),
               "--lag-worker", args.lag_worker]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{src}: projection_catchup.py failed ({done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _lag_figures(prefix: str, lags: list[dict[str, Any]]) -> dict[str, Any]:
    if not lags:
        return {}
    return {
        f"{prefix}ms_p50_runs": [lag["lag_ms_p50"] for lag in lags],
        f"{prefix}ms_p99_runs": [lag["lag_ms_p99"] for lag in lags],
        f"{prefix}ms_p50_median": statistics.median(lag["lag_ms_p50"] for lag in lags),
        f"{prefix}ms_p99_median": statistics.median(lag["lag_ms_p99"] for lag in lags),
        f"{prefix}commands_per_s_runs": [lag["achieved_rate"] for lag in lags],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("builds", nargs="+", metavar="NAME=SRC")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--lag-seconds", type=float, default=10.0)
    parser.add_argument("--lag-rate", type=float, default=500.0)
    parser.add_argument("--lag-worker", choices=("thread", "process", "both"), default="thread")
    args = parser.parse_args()
    builds = dict(b.split("=", 1) for b in args.builds)
    schema = f"bench_ab_{secrets.token_hex(4)}"
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in builds}
    with bench_target(schema) as target:
        try:
            url = database_url(target)
            for _ in range(args.rounds):
                for name, src in builds.items():
                    runs[name].append(run_build(src, url, schema, args))
            about = machine(target)
        finally:
            drop_schema(target)
    summary = {}
    for name, results in runs.items():
        lags = [r["live_lag"] for r in results if r["live_lag"]]
        apart = [r["live_lag_worker_process"] for r in results if r.get("live_lag_worker_process")]
        summary[name] = {
            "src": builds[name],
            "events_per_s_runs": [r["ours_events_per_s_median"] for r in results],
            "events_per_s_median": statistics.median(r["ours_events_per_s_median"] for r in results),
            "cpu_ms_per_1000_events_runs": [r["ours_cpu_ms_per_1000_events_median"] for r in results],
            "cpu_ms_per_1000_events_median": statistics.median(
                r["ours_cpu_ms_per_1000_events_median"] for r in results
            ),
            "events_rebuilt": [r["events"] for r in results],
            "lag_ms_p50_runs": [lag["lag_ms_p50"] for lag in lags],
            "lag_ms_p99_runs": [lag["lag_ms_p99"] for lag in lags],
            "lag_ms_p99_median": statistics.median(lag["lag_ms_p99"] for lag in lags) if lags else None,
            "commands_per_s_runs": [lag["achieved_rate"] for lag in lags],
            "lag_worker": [lag.get("worker", "thread") for lag in lags],
            **_lag_figures("lag_worker_process_", apart),
        }
    json.dump(
        {"benchmark": "projection runner A/B", "machine": about, "builds": summary}, sys.stdout, indent=2
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

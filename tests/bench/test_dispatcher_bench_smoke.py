"""A tiny run of bench/dispatcher_throughput.py, so that the benchmark does not rot: it starts its sandbox,
makes a small queue the production way, drains it with the buckets lifted and with the default limits, and
reports every figure (the benchmark itself is run by hand; see bench/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ledger

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
BENCH = Path(__file__).parents[2] / "bench" / "dispatcher_throughput.py"


def test_dispatcher_benchmark_runs_and_reports_every_figure(cli_env: dict[str, str]) -> None:
    """12 items, one run, a 1-second limited window: every item made is sent, and the JSON has the ratio."""
    src = str(Path(ledger.__file__).parents[1])
    env = cli_env | {"PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, str(BENCH), "--items", "12", "--runs", "1", "--dispatchers", "2",
         "--limited-seconds", "1"],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    [queue] = result["queues"]
    assert queue["items"] >= 12
    assert result["lifted_items_per_s_median"] > 0
    assert result["ceiling_requests_per_s_median"] > 0
    assert result["ratio_lifted_to_ceiling"] > 0
    assert len(result["limited_items_per_s_runs"]) == 1
    assert result["limited_bound_items_per_s"] > 0
    assert result["sandbox_violations"] == 0

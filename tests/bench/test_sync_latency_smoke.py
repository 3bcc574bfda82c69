"""A tiny run of bench/sync_latency.py, so that the benchmark does not rot: a few Amazon cancellations behind
the feed limit, a few shipments at confirmShipment's rate, every one confirmed at the sandbox and reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ledger

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
BENCH = Path(__file__).parents[2] / "bench" / "sync_latency.py"


def test_sync_latency_benchmark_runs_and_reports_every_shipment(cli_env: dict[str, str]) -> None:
    """20 cancellations, 4 shipments: each shipment is confirmed, and the cancellations beyond the burst wait."""
    src = str(Path(ledger.__file__).parents[1])
    env = cli_env | {"PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, str(BENCH), "--cancellations", "20", "--shipments", "4", "--wait", "30"],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["confirmed"] == 4
    assert result["latency"]["n"] == 4
    assert result["queue_states"]["ship:succeeded"] == 4
    assert result["queue_states"]["cancel:pending"] >= 4

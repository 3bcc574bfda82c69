"""Helpers of the reliability suite: `ledger serve` as a process, sellers, order bodies, and the run's report.

Every test that counts something (commands sent, acknowledged, found afterwards, lost) adds a line to REPORT;
conftest.py prints the lines at the end of the session, so BENCHMARKS.md can quote a run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID

import httpx

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from api_support import order_body as api_order_body

from ledger.aggregates.values import Context, Marketplace, Role
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget

CTX = Context(actor="reliability")
UPS_TRACKING = "1Z999AA10123456784"
PROBLEM = "https://ledger.dev/problems/"
REPORT: list[str] = []
MAX_BODY = 256_000  # the body limit of the in-process app (conftest's `client`)


def report(line: str) -> None:
    """Add one line to the session's reliability summary."""
    REPORT.append(line)


@dataclass
class Seller:
    """A seller with one key per role, and an account per marketplace."""

    name: str
    keys: dict[Role, str]
    accounts: dict[Marketplace, UUID]
    key_ids: dict[Role, UUID] = field(default_factory=dict)

    def auth(self, role: Role = Role.ADMIN) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


def make_seller(ledger: Ledger) -> Seller:
    name = f"rel-{secrets.token_hex(4)}"
    keys: dict[Role, str] = {}
    key_ids: dict[Role, UUID] = {}
    for role in Role:
        secret, key = ledger.create_api_key(CTX, seller=name, role=role, name=f"{role}-key")
        keys[role], key_ids[role] = secret, key.key_id
    accounts = {
        m: ledger.register_account(CTX, seller=name, marketplace=m, name="main").account_id
        for m in Marketplace
    }
    return Seller(name, keys, accounts, key_ids)


def order_body(account_id: UUID, marketplace_order_id: str | None = None, **changes: Any) -> dict[str, Any]:
    """A paid order of two lines (5 and 3 units) in the API's import shape (the API tests' order, more units)."""
    body = api_order_body(account_id, marketplace_order_id or f"REL-{secrets.token_hex(6)}")
    body["lines"][0]["quantity"], body["lines"][1]["quantity"] = 5, 3
    return body | changes


def database_url(target: PostgresTarget) -> str:
    """A LEDGER_DATABASE_URL that reaches `target` (for `ledger` processes)."""
    password = f":{quote(target.password, safe='')}" if target.password else ""
    auth = f"{quote(target.user, safe='')}{password}@"
    if target.is_unix_socket:
        return f"postgresql://{auth}/{quote(target.dbname, safe='')}?host={target.host}&port={target.port}"
    return f"postgresql://{auth}{target.host}:{target.port}/{quote(target.dbname, safe='')}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    """A `ledger serve` process and where it answers."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def start_service(env: dict[str, str], log_dir: Path, *, workers: bool = False) -> Service:
    """Start `ledger serve` on a free port with `env` and wait until /healthz answers."""
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    args = [sys.executable, "-m", "ledger.cli", "serve", "--port", str(port)]
    if not workers:
        args.append("--no-workers")
    full_env = {**os.environ, **env, "LEDGER_LOG_LEVEL": "WARNING"}
    with log.open("wb") as out:
        process = subprocess.Popen(args, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    service = Service(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=service.url, timeout=2) as client:
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"ledger serve exited with {process.returncode}:\n{log.read_text()[-3000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/healthz").status_code == 200:
                    return service
            if time.monotonic() > deadline:
                service.kill()
                raise AssertionError(f"ledger serve did not answer:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)


@contextlib.contextmanager
def served(env: dict[str, str], log_dir: Path, *, workers: bool = False) -> Iterator[Service]:
    service = start_service(env, log_dir, workers=workers)
    try:
        yield service
    finally:
        service.stop()


def assert_no_500(log: Path) -> None:
    """The service logged no unhandled error."""
    text = log.read_text(errors="replace")
    assert "unhandled error" not in text, text[-3000:]

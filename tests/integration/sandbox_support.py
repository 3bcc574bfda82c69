"""The sandbox marketplaces as a real HTTP server for tests, and a client for its control API.

Use from any test module:

    from sandbox_support import Sandbox, sandbox_fixture, sandbox_url_fixture  # noqa: F401

`sandbox_url` (session): the base URL of one sandbox server (uvicorn in a thread, on a free port) for the
whole test run; point adapters at it (`Endpoint(base_url=sandbox_url, credentials=...)`). `sandbox`
(per test): a `Sandbox` control client on it that starts the test with no faults armed, no violations
recorded and the fast test settings, and disarms faults after it. The server is shared: use an account of
the test's own (`Sandbox.new_account()`), and assert `sandbox.violations() == []` to prove every request
the adapters sent validated against the real schemas. `sync_request` (with `whole_lines`, `cancel_payload`)
builds an outbound queue item for a sandbox order view; `settle_outcome` polls a submitted one to its end.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from ledger.integrations import outbox
from ledger.integrations.base import Outcome, Submitted, SyncRequest
from ledger_sandbox.app import create_sandbox_app
from ledger_sandbox.faults import quiet_dropped_connections
from ledger_sandbox.state import Settings

# Asynchronous work (Amazon feeds, eBay refunds) finishes quickly in tests; tests poll, never sleep fixed times.
TEST_SETTINGS = {
    "feed_processing_seconds": 0.2,
    "refund_processing_seconds": 0.2,
    "cancellation_approval_seconds": -1.0,
    "buyer_cancel_window_seconds": 1800.0,
    "rate_limits": 0.0,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Sandbox:
    """The control API of a running sandbox (see the docstring of `ledger_sandbox`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10.0)

    @staticmethod
    def new_account() -> str:
        return f"acct-{uuid.uuid4().hex[:12]}"

    def _ok(self, response: httpx.Response) -> Any:
        assert response.status_code < 300, (
            f"{response.request.method} {response.request.url}: {response.text}"
        )
        return response.json() if response.content else None

    def orders(self, marketplace: str, account: str, count: int = 1, **options: Any) -> list[dict[str, Any]]:
        """Generate `count` orders (options: paid, purchased_at, currency, max_lines); their views."""
        body = {"count": count, **options}
        created: list[dict[str, Any]] = self._ok(
            self.http.post(f"/_sandbox/{marketplace}/accounts/{account}/orders", json=body)
        )["orders"]
        return created

    def all_orders(self, marketplace: str, account: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._ok(
            self.http.get(f"/_sandbox/{marketplace}/accounts/{account}/orders")
        )["orders"]
        return found

    def order(self, marketplace: str, account: str, order_id: str) -> dict[str, Any]:
        """What the marketplace thinks of the order now."""
        view: dict[str, Any] = self._ok(
            self.http.get(f"/_sandbox/{marketplace}/accounts/{account}/orders/{order_id}")
        )
        return view

    def event(
        self, marketplace: str, account: str, order_id: str, type: str, **fields: Any
    ) -> dict[str, Any]:
        view: dict[str, Any] = self._ok(
            self.http.post(
                f"/_sandbox/{marketplace}/accounts/{account}/orders/{order_id}/events",
                json={"type": type, **fields},
            )
        )
        return view

    def effects(
        self, marketplace: str, account: str, key: str | None = None, order_id: str | None = None
    ) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("key", key), ("order_id", order_id)) if v is not None}
        found: list[dict[str, Any]] = self._ok(
            self.http.get(f"/_sandbox/{marketplace}/accounts/{account}/effects", params=params)
        )["effects"]
        return found

    def fault(
        self, marketplace: str, operation: str, kind: str, count: int = 1, **options: Any
    ) -> dict[str, Any]:
        """Arm a fault for the next `count` calls (options: retry_after, status, seconds)."""
        body = {"operation": operation, "kind": kind, "count": count, **options}
        armed: dict[str, Any] = self._ok(self.http.post(f"/_sandbox/{marketplace}/faults", json=body))
        return armed

    def faults(self) -> dict[str, Any]:
        found: dict[str, Any] = self._ok(self.http.get("/_sandbox/faults"))
        return found

    def clear_faults(self) -> None:
        self._ok(self.http.delete("/_sandbox/faults"))

    def violations(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._ok(self.http.get("/_sandbox/violations"))["violations"]
        return found

    def clear_violations(self) -> None:
        self._ok(self.http.delete("/_sandbox/violations"))

    def settings(self, **changes: float) -> dict[str, Any]:
        if changes:
            changed: dict[str, Any] = self._ok(self.http.put("/_sandbox/settings", json=changes))
            return changed
        found: dict[str, Any] = self._ok(self.http.get("/_sandbox/settings"))
        return found

    def reset(self) -> None:
        """Forget every order, effect, violation and fault of every account (the server is shared: use sparingly)."""
        self._ok(self.http.post("/_sandbox/reset"))

    def wait_for(self, check: Any, timeout: float = 10.0) -> Any:
        """Poll `check()` until it returns something truthy (asynchronous marketplace work); its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.05)

    def close(self) -> None:
        self.http.close()


def sync_request(
    order: dict[str, Any], action: str, payload: dict[str, Any], key: str | None = None
) -> SyncRequest:
    """An outbound queue item for a sandbox order view, with a fresh idempotency key unless `key` is given."""
    return SyncRequest(
        item_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        marketplace_order_id=order["order_id"],
        action=action,
        reference=str(uuid.uuid4()),
        idempotency_key=key or str(uuid.uuid4()),
        message=outbox.decode(action, {"marketplace_order_id": order["order_id"], **payload}),
    )


def whole_lines(order: dict[str, Any]) -> list[dict[str, Any]]:
    """Payload lines for all of every line of a sandbox order view."""
    return [{"line_id": ln["line_id"], "sku": ln["sku"], "quantity": ln["quantity"]} for ln in order["lines"]]


def cancel_payload(
    order: dict[str, Any], cancellation_id: str | None, dispute_id: str | None
) -> dict[str, Any]:
    """The seller cancels the whole order (out of stock, no restock)."""
    return {
        "cancellation_id": cancellation_id,
        "dispute_id": dispute_id,
        "reason": "out_of_stock",
        "requested_by": "seller",
        "restock": False,
        "lines": whole_lines(order),
    }


def settle_outcome(
    adapter: Any, sync: SyncRequest, outcome: Outcome, sandbox: Sandbox, unfinished: str
) -> Outcome:
    """Poll a submitted request (`adapter.poll`) until the marketplace has finished it; `unfinished`: the
    failure message when it never does."""
    if not isinstance(outcome, Submitted):
        return outcome
    reference = outcome.marketplace_reference

    def done() -> Outcome | None:
        result: Outcome = adapter.poll(sync, reference)
        return None if isinstance(result, Submitted) else result

    final = sandbox.wait_for(done)
    assert final is not None, unfinished
    return final  # type: ignore[no-any-return]


@pytest.fixture(scope="session", name="sandbox_url")
def sandbox_url_fixture() -> Iterator[str]:
    """The base URL of a sandbox server running for the whole session."""
    quiet_dropped_connections()
    app = create_sandbox_app(seed=5, settings=Settings(**TEST_SETTINGS))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, name="sandbox", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the sandbox server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(name="sandbox")
def sandbox_fixture(sandbox_url: str) -> Iterator[Sandbox]:
    """A control client; the test starts with no faults, no violations and the test settings."""
    control = Sandbox(sandbox_url)
    control.clear_faults()
    control.clear_violations()
    control.settings(**TEST_SETTINGS)
    yield control
    control.clear_faults()
    control.close()

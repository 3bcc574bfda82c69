"""Fixtures of the browser tests: the real app served by uvicorn on a free port (with the All Sales projection
worker running, as `ledger serve` runs it), a seller with an operator key and orders, and headless Debian
Chromium driven by Playwright (no browser is downloaded: /usr/bin/chromium or the tests are skipped).
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
import uvicorn
from browser_support import CHROMIUM, CHROMIUM_ARGS, CTX
from playwright.sync_api import sync_playwright

from ledger.aggregates.values import (
    Address,
    Buyer,
    ImportedOrder,
    Marketplace,
    OrderLine,
    PaymentStatus,
    Role,
)
from ledger.api.app import create_app
from ledger.application.ledger import Ledger
from ledger.eventstore import database
from ledger.eventstore.database import PostgresTarget
from ledger.integrations.outbound import OutboundProjection
from ledger.projections import base
from ledger.projections.all_sales import AllSalesProjection
from ledger.projections.base import ProjectionWorker

SHIP_TO = Address(
    name="Ann Lee", line1="12 Harbour Road", city="Portland", state="OR", postal_code="97201", country="US"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(
        reason=f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium)"
    )
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@dataclass
class Shop:
    """One seller: an operator key, a Walmart and an eBay account, and the orders imported for the test."""

    url: str
    ledger: Ledger
    seller: str
    key: str
    accounts: dict[Marketplace, UUID]
    target: PostgresTarget
    orders: dict[str, UUID] = field(default_factory=dict)

    def sql(self, query: str, *params: Any) -> list[Any]:
        """Run one statement on the test database, as a worker (the dispatcher) would change a table."""
        with database.connect(self.target, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def sync_queue(self) -> None:
        """Bring the outbound sync queue up to date, as the sync worker of `ledger serve` does."""
        with database.connect(self.target, autocommit=True) as conn:
            # Every event committed so far readable: the catch-up's own wait for the horizon gives up after 2 s.
            assert database.settle(conn, timeout=10), "an open transaction held the log's horizon back"
            base.catch_up_unless_followed(
                conn, OutboundProjection(), self.ledger.recorder, self.ledger.mapper
            )

    def import_order(
        self,
        marketplace: Marketplace,
        moid: str,
        buyer: str,
        days_ago: int = 1,
        ship_within: int | None = None,
    ) -> UUID:
        """Import a paid order of two lines; `ship_within`: the marketplace's ship-by, days after purchase."""
        purchased_at = datetime.now(UTC) - timedelta(days=days_ago)
        order = ImportedOrder(
            marketplace_order_id=moid,
            purchased_at=purchased_at,
            currency="USD",
            payment_status=PaymentStatus.PAID,
            buyer=Buyer(buyer, "buyer@example.com"),
            lines=(
                OrderLine("1", "MUG-1", 2, Decimal("12.50"), title="Mug"),
                OrderLine("2", "CUP-1", 1, Decimal("5.00"), title="Cup"),
            ),
            paid_at=purchased_at,
            ship_to=SHIP_TO,
            ship_by=purchased_at + timedelta(days=ship_within) if ship_within is not None else None,
        )
        order_id = self.ledger.import_order(
            CTX, self.accounts[marketplace], order, seller=self.seller
        ).order_id
        self.orders[moid] = order_id
        return order_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def shop(pg_target: PostgresTarget, ledger_env: dict[str, str]) -> Iterator[Shop]:
    """The app on a real socket, its projection worker, and a fresh seller (the schema is shared)."""
    ledger = Ledger(env=ledger_env)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(pg_target, ledger=ledger),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, name="browser-test-server", daemon=True)
    thread.start()
    worker = ProjectionWorker(
        AllSalesProjection(),
        lambda: database.connect(pg_target),
        ledger.recorder,
        ledger.mapper,
        standby_interval=0.2,
    )
    worker_thread = threading.Thread(target=worker.run, name="browser-test-worker", daemon=True)
    worker_thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    assert server.started, "the test server did not start"
    seller = f"seller-{secrets.token_hex(4)}"
    key, _ = ledger.create_api_key(CTX, seller=seller, role=Role.OPERATOR, name="Olive Operator")
    accounts = {
        m: ledger.register_account(CTX, seller=seller, marketplace=m, name="main").account_id
        for m in (Marketplace.WALMART, Marketplace.EBAY, Marketplace.AMAZON)
    }
    try:
        yield Shop(f"http://127.0.0.1:{port}", ledger, seller, key, accounts, pg_target)
    finally:
        worker.stop()
        server.should_exit = True
        thread.join(15)
        worker_thread.join(15)
        ledger.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium (the test session's one browser process)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()


@pytest.fixture(params=[1366, 390], ids=["1366px", "390px"])
def width(request: pytest.FixtureRequest) -> int:
    """Every browser test runs at a desktop width and at a phone's."""
    return int(request.param)


@pytest.fixture
def page(browser: Any, width: int) -> Iterator[Any]:
    """A fresh browser context (its own cookies, the viewer in New York) and page, `width` pixels wide; when
    the test ends, every request the page made must have gone to the test server (the page works offline)."""
    context = browser.new_context(
        accept_downloads=True,
        viewport={"width": width, "height": 900},
        timezone_id="America/New_York",
        locale="en-US",
    )
    context.set_default_timeout(15_000)
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    page = context.new_page()
    yield page
    context.close()
    outside = [url for url in requested if not url.startswith(("http://127.0.0.1:", "data:", "about:"))]
    assert not outside, f"the page asked other hosts: {outside}"

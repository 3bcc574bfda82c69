"""A ledger in a schema of its own with one managed account per marketplace, pointed at the sandbox server:
what the reliability tests of the importer and the dispatcher share.

Each test makes its own `Flow` (fresh schema, fresh sandbox accounts), drives the importer and dispatchers in
process against the sandbox over HTTP, and reads the truth from both sides: the queue and the order's
history in PostgreSQL, the effects log at the sandbox."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from order_scenarios import settled
from sandbox_support import Sandbox

from ledger.aggregates.values import Context, Marketplace, Source
from ledger.application.ledger import Ledger
from ledger.eventstore import database
from ledger.eventstore.database import PostgresTarget
from ledger.integrations.marketplaces import SyncSettings
from ledger.integrations.outbound import OutboundProjection
from ledger.projections import base

CTX = Context(actor="test", source=Source.API)


@dataclass
class Flow:
    target: PostgresTarget
    app: Ledger
    sandbox: Sandbox
    credentials: Path
    seller: str
    accounts: dict[Marketplace, UUID] = field(default_factory=dict)
    tokens: dict[Marketplace, str] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)

    def connect(self) -> psycopg.Connection[Any]:
        return database.connect(self.target, autocommit=True)

    def settings(self, **changes: Any) -> SyncSettings:
        return SyncSettings(marketplace_url=self.sandbox.url, credentials_file=self.credentials, **changes)

    def account(self, marketplace: Marketplace) -> UUID:
        """The seller's managed account on `marketplace` (registered on first use) and its sandbox token."""
        if marketplace not in self.accounts:
            made = self.app.register_account(CTX, seller=self.seller, marketplace=marketplace, name="main")
            self.accounts[marketplace] = made.account_id
            token = self.tokens[marketplace] = self.sandbox.new_account()
            # Each adapter reads its own names (Rakuten's account is its license key).
            self.secrets[str(made.account_id)] = {
                "access_token": token, "token": token, "service_secret": "s", "license_key": token,
            }  # fmt: skip
            self.credentials.write_text(json.dumps(self.secrets))
        return self.accounts[marketplace]

    def make_orders(self, marketplace: Marketplace, count: int, **options: Any) -> list[dict[str, Any]]:
        """`count` paid orders bought three hours ago, at the marketplace (not imported); their views."""
        self.account(marketplace)
        options.setdefault("purchased_at", (datetime.now(UTC) - timedelta(hours=3)).isoformat())
        return self.sandbox.orders(marketplace.value, self.tokens[marketplace], count=count, **options)

    def order_id(self, marketplace: Marketplace, marketplace_order_id: str) -> UUID:
        return self.app.find_order(self.seller, marketplace, marketplace_order_id).order_id

    def queue(self) -> None:
        """The outbound projection catches up (a worker does this in `ledger serve`)."""
        with self.connect() as conn:
            generation, position = base.install(conn, OutboundProjection())
            settled(conn)  # every event committed so far readable (an open transaction holds it back)
            while notifications := self.app.recorder.select_notifications(
                start=position, limit=500, inclusive_of_start=False
            ):
                with conn.transaction(), conn.cursor() as cur:
                    events = base.decode(self.app.mapper, notifications)
                    base.apply_batch(cur, OutboundProjection(), base.Tables(generation), events)
                position = notifications[-1].id

    def items(self) -> list[dict[str, Any]]:
        with self.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            return cur.execute("SELECT * FROM outbound_items ORDER BY order_id, sequence").fetchall()


@pytest.fixture
def flow(own_target: PostgresTarget, sandbox: Sandbox, tmp_path: Path) -> Iterator[Flow]:
    """A ledger in its own schema, its accounts' credentials in a file, the sandbox at hand."""
    app = Ledger(env=own_target.eventsourcing_env())
    yield Flow(own_target, app, sandbox, tmp_path / "credentials.json", f"rel-{os.urandom(4).hex()}")
    app.close()

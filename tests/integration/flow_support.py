"""One seller's account on a sandbox marketplace, with the importer and the dispatcher pointed at it: the flows
of the sync tests (import a round, dispatch what is due, read the sandbox's copy and the ledger's history).

    from flow_support import Flow
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from order_scenarios import catch_up
from sandbox_support import Sandbox

from ledger.aggregates.values import Context, Marketplace, Source
from ledger.application.ledger import Ledger
from ledger.eventstore import database
from ledger.eventstore.database import PostgresTarget
from ledger.integrations.dispatcher import Dispatcher
from ledger.integrations.importer import AccountReport, Importer
from ledger.integrations.marketplaces import SyncSettings, client_for
from ledger.integrations.outbound import OutboundProjection
from ledger.integrations.sync_check import compare

CTX = Context(actor="test", source=Source.API)


def credentials(marketplace: Marketplace, token: str) -> dict[str, str]:
    """What each adapter reads from the credentials file; the sandbox knows the seller by `token`."""
    if marketplace is Marketplace.RAKUTEN:
        return {"service_secret": "SP-secret", "license_key": token}
    if marketplace is Marketplace.JET:
        return {"token": token}
    return {"access_token": token}


class Flow:
    """One seller's account on one marketplace, its sandbox token, and the importer and dispatcher for it."""

    def __init__(
        self, app: Ledger, target: PostgresTarget, sandbox: Sandbox, tmp: Path, mp: Marketplace
    ) -> None:
        self.app, self.sandbox, self.marketplace = app, sandbox, mp
        self.connect = lambda: database.connect(target)
        self.account = app.register_account(
            CTX, seller=f"sync-{uuid4().hex[:8]}", marketplace=mp, name="main"
        )
        self.token = sandbox.new_account()
        path = tmp / f"credentials-{mp.value}.json"
        path.write_text(json.dumps({str(self.account.account_id): credentials(mp, self.token)}))
        self.settings = SyncSettings(marketplace_url=sandbox.url, credentials_file=path, import_overlap=60)

    def import_round(self) -> AccountReport:
        (report,) = Importer(self.app, self.connect, self.settings).run_round(self.account.account_id)
        assert report.refused == []
        return report

    def dispatch(self) -> None:
        catch_up(OutboundProjection(), self.connect, self.app, 500)
        dispatcher = Dispatcher(self.app, self.connect, self.settings, client_factory=client_for)
        try:
            dispatcher.dispatch_due()
        finally:
            dispatcher.close()

    def order_id(self, marketplace_order_id: str) -> UUID:
        return self.app.find_order(self.account.seller, self.marketplace, marketplace_order_id).order_id

    def remote(self, marketplace_order_id: str) -> dict[str, Any]:
        return self.sandbox.order(self.marketplace.value, self.token, marketplace_order_id)

    def differences(self, marketplace_order_id: str) -> list[tuple[str, str, str]]:
        """What `ledger sync check` would list for the order: the ledger against the adapter's order_state."""
        client = client_for(self.account, self.settings)
        try:
            remote = client.order_state(marketplace_order_id)
        finally:
            client.close()
        return compare(self.app.get_order(self.order_id(marketplace_order_id)), remote)

    def history(self, order_id: UUID) -> list[str]:
        return [entry.type for entry in self.app.order_history(order_id)]

"""Every /v1 endpoint, enumerated from the Litestar app (a new endpoint is covered, or this suite fails):
no key and a revoked key are 401, each role the contract does not allow is 403 (and changes nothing), and
another seller's key never reaches the seller's orders or accounts (404, or a list without them).

The allowed roles come from API.md's role table, written out here by operation id, not read from the code.
Two readings of the table: every role may read the seller's accounts (an integration needs the account ids
to import into; the auditor and finance read them to make sense of orders), and the operator, who "reads
the sync queue", may also put a dead item back (retry), as the sync routes do.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from litestar.testing import TestClient
from rel_support import CTX, PROBLEM, UPS_TRACKING, Seller, order_body, report

from ledger.aggregates.values import Marketplace, Role
from ledger.api.app import create_app
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget, connect
from ledger.projections import base
from ledger.projections.registry import all_projections

ALL = frozenset(Role)
READ_ORDERS = frozenset({Role.ADMIN, Role.OPERATOR, Role.AUDITOR, Role.FINANCE})
IMPORT = frozenset({Role.ADMIN, Role.OPERATOR, Role.INTEGRATION})
CHANGE = frozenset({Role.ADMIN, Role.OPERATOR})
DISPUTES = frozenset({Role.ADMIN, Role.OPERATOR, Role.INTEGRATION})
ADMIN = frozenset({Role.ADMIN})
FINANCE = frozenset({Role.ADMIN, Role.FINANCE})
AUDIT = frozenset({Role.ADMIN, Role.AUDITOR})
# A bulk shipment file naming an order nobody has: allowed roles get a row report, and nothing changes.
BULK_CSV = (
    "marketplace_order_id,line_id,quantity,carrier,tracking_number,shipping_class,shipped_at\n"
    f"NO-SUCH-ORDER,1,1,ups,{UPS_TRACKING},,\n"
)
# operation id -> (roles API.md allows, a valid body)
CONTRACT: dict[str, tuple[frozenset[Role], Any]] = {
    "createAccount": (ADMIN, {"marketplace": "jet", "name": "second"}),
    "listAccounts": (ALL, None),
    "getAccount": (ALL, None),
    "updateAccount": (ADMIN, {"name": "renamed"}),
    "listOrders": (READ_ORDERS, None),
    "countOrders": (READ_ORDERS, None),
    "getOrder": (READ_ORDERS, None),
    "getOrderHistory": (frozenset({Role.ADMIN, Role.OPERATOR, Role.AUDITOR}), None),
    "importOrder": (IMPORT, "order"),
    "importOrders": (IMPORT, "orders"),
    "shipOrder": (
        CHANGE,
        {"carrier": "ups", "tracking_number": UPS_TRACKING, "lines": [{"line_id": "1", "quantity": 1}]},
    ),
    "cancelOrder": (CHANGE, {"reason": "out_of_stock", "lines": [{"line_id": "2", "quantity": 1}]}),
    "refundOrder": (CHANGE, {"reason": "damaged"}),
    "restockOrder": (CHANGE, {"lines": [{"line_id": "1", "quantity": 1}]}),
    "openDispute": (DISPUTES, {"reason": "not received"}),
    "closeDispute": (DISPUTES, {"outcome": "rejected"}),
    "listOutbound": (CHANGE, None),
    "retryOutbound": (CHANGE, None),
    "resolveOutbound": (CHANGE, {"reason": "confirmed in Seller Central"}),
    "voidShipment": (CHANGE, {"reason": "the label was never used"}),
    "listDiscrepancies": (CHANGE, None),
    "verifyOrder": (AUDIT, None),
    "listAuditPublicKeys": (AUDIT, None),
    "getLatestAuditCheckpoint": (AUDIT, None),
    "getOrderAuditBundle": (AUDIT, None),
    "shipBulk": (CHANGE, "csv"),
    "listFinanceRefunds": (FINANCE, None),
    "reconcileSettlement": (FINANCE, None),
    "listReconciliations": (FINANCE, None),
    "getReconciliation": (FINANCE, None),
    "getExposure": (FINANCE, None),
    "listEvents": (READ_ORDERS, None),
    "streamEvents": (READ_ORDERS, None),
    "createWebhook": (ADMIN, {"url": "https://hooks.example.com/in"}),
    "listWebhooks": (ADMIN, None),
    "getWebhook": (ADMIN, None),
    "deleteWebhook": (ADMIN, None),
    "listWebhookDeliveries": (ADMIN, None),
    "testWebhook": (ADMIN, None),
}
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def _v1_routes() -> list[tuple[str, str, str]]:
    """(method, path template, operation id) of every /v1 handler the app serves."""
    app = create_app(PostgresTarget("localhost", 5432, "unused", "unused"))
    found = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            methods = sorted(set(handler.http_methods) - {"OPTIONS", "HEAD"})
            if route.path.startswith("/v1/") and methods:
                found.extend((method, route.path, str(handler.operation_id)) for method in methods)
    return found


ROUTES = _v1_routes()


def test_every_endpoint_is_in_the_contract_table() -> None:
    """Each /v1 route the app serves has its roles written down here; a new endpoint must be added."""
    assert len(ROUTES) >= len(CONTRACT)
    missing = {op for _, _, op in ROUTES} - set(CONTRACT)
    assert not missing, f"add these endpoints to CONTRACT (roles per API.md): {missing}"


class World:
    """A seller with an order (shipped, with an open dispute) and another seller."""

    def __init__(self, client: TestClient[Any], seller: Seller, other: Seller) -> None:
        self.client, self.seller, self.other = client, seller, other
        body = order_body(seller.accounts[Marketplace.WALMART])
        self.order_id = client.post("/v1/orders", json=body, headers=seller.auth()).json()["order_id"]
        shipped = client.post(f"/v1/orders/{self.order_id}/shipments", json={"carrier": "ups",
                              "tracking_number": UPS_TRACKING, "lines": [{"line_id": "1", "quantity": 2}]},
                              headers=seller.auth())  # fmt: skip
        self.shipment_id = shipped.json()["shipment_id"]
        dispute = client.post(
            f"/v1/orders/{self.order_id}/disputes", json={"reason": "late"}, headers=seller.auth()
        )
        self.dispute_id = dispute.json()["dispute_id"]
        self.item_id = str(uuid.uuid4())

    def find_sync_item(self) -> None:
        """Once the outbound read model is built: one of the seller's own sync items."""
        items = self.client.get("/v1/sync/outbound", headers=self.seller.auth()).json()["items"]
        assert items, "the shipment should have queued a sync item"
        self.item_id = items[0]["id"]

    def url(self, path: str) -> str:
        values = {
            "order_id": self.order_id,
            "dispute_id": self.dispute_id,
            "shipment_id": self.shipment_id,
            "account_id": str(self.seller.accounts[Marketplace.WALMART]),
            "item_id": self.item_id,
            "reconciliation_id": str(uuid.uuid4()),
            "webhook_id": str(uuid.uuid4()),
        }
        return _PARAM.sub(lambda m: values[m.group(1)], path)

    def body(self, operation: str) -> Any:
        body = CONTRACT[operation][1]
        if body == "order":
            return order_body(self.seller.accounts[Marketplace.AMAZON])
        if body == "orders":
            return {"orders": [order_body(self.seller.accounts[Marketplace.AMAZON])]}
        return body

    def version(self) -> int:
        return int(
            self.client.get(f"/v1/orders/{self.order_id}", headers=self.seller.auth()).json()["version"]
        )

    def call(self, method: str, path: str, operation: str, headers: dict[str, str]) -> Any:
        body = self.body(operation)
        if operation == "streamEvents":
            # The stream never ends and the test client reads a response whole: a malformed Last-Event-ID is
            # answered 400 at once, and only once the key and its role got past the guard.
            headers = {**headers, "Last-Event-ID": "not-a-position"}
        if body == "csv":
            headers = {**headers, "Content-Type": "text/csv"}
            return self.client.request(method, self.url(path), content=BULK_CSV, headers=headers)
        return self.client.request(method, self.url(path), json=body, headers=headers)


@pytest.fixture
def world(client: TestClient[Any], seller: Seller, other_seller: Seller) -> World:
    return World(client, seller, other_seller)


def test_no_key_and_revoked_key_are_401_everywhere(world: World, store: Ledger) -> None:
    """Without a key, with a malformed one, or with a revoked key, every /v1 endpoint answers 401."""
    secret, key = store.create_api_key(CTX, seller=world.seller.name, role=Role.ADMIN, name="soon revoked")
    store.revoke_api_key(CTX, key.key_id)
    wrong = []
    for method, path, operation in ROUTES:
        for headers in [{}, {"Authorization": "Bearer"}, {"Authorization": f"Bearer {secret}"},
                        {"Authorization": f"Basic {secret}"}]:  # fmt: skip
            response = world.call(method, path, operation, headers)
            if response.status_code != 401 or response.json()["type"] != PROBLEM + "unauthorized":
                wrong.append((method, path, headers.get("Authorization", "")[:12], response.status_code))
    assert not wrong
    assert world.version() == 3
    report(f"security: {len(ROUTES)} /v1 endpoints x (no key, empty, revoked, wrong scheme): all 401")


def test_roles_without_permission_are_403_and_change_nothing(world: World) -> None:
    """Each role the contract does not allow gets 403 forbidden on every endpoint, and nothing is recorded."""
    wrong, checked = [], 0
    for method, path, operation in ROUTES:
        allowed = CONTRACT[operation][0]
        for role in ALL - allowed:
            checked += 1
            response = world.call(method, path, operation, world.seller.auth(role))
            if response.status_code != 403 or response.json()["type"] != PROBLEM + "forbidden":
                wrong.append((method, path, role.value, response.status_code))
    assert not wrong
    assert world.version() == 3
    accounts = world.client.get("/v1/accounts", headers=world.seller.auth()).json()
    assert len(accounts["items"] if isinstance(accounts, dict) else accounts) == len(Marketplace)
    report(f"security: {checked} (endpoint, role) pairs the role table forbids: all 403, nothing recorded")


def test_another_sellers_key_never_reaches_the_sellers_data(
    world: World, store: Ledger, own_target: PostgresTarget
) -> None:
    """With another seller's admin key: the seller's order and account resources are 404, lists omit them."""
    for projection in all_projections():
        base.rebuild(projection, lambda: connect(own_target), store.recorder, store.mapper)
    world.find_sync_item()
    wrong, checked = [], 0
    mine = {world.order_id, *(str(a) for a in world.seller.accounts.values())}
    for method, path, operation in ROUTES:
        checked += 1
        response = world.call(method, path, operation, world.other.auth())
        text = response.text
        if "{order_id" in path or "{account_id" in path or "{item_id" in path or operation == "importOrder":
            if response.status_code != 404:
                wrong.append((method, path, response.status_code))
        elif operation == "importOrders":  # one result per order: importing into their account is a 404
            if [r["error"]["status"] for r in response.json()["results"]] != [404]:
                wrong.append((method, path, response.text[:200]))
        elif any(secret in text for secret in mine):
            wrong.append((method, path, "shows the other seller's ids"))
    assert not wrong
    assert world.version() == 3
    own = world.client.get("/v1/orders", headers=world.seller.auth())
    assert world.order_id in own.text  # the list does work: it is the scoping that hid the order
    report(f"security: {checked} /v1 endpoints with another seller's admin key: 404 or nothing of theirs")


def test_allowed_roles_get_past_authorization(world: World) -> None:
    """Each role the contract allows gets past authorization on every endpoint (neither 401 nor 403)."""
    wrong = []
    for method, path, operation in ROUTES:
        for role in CONTRACT[operation][0]:
            response = world.call(method, path, operation, world.seller.auth(role))
            if response.status_code in {401, 403}:
                wrong.append((method, path, role.value, response.status_code))
    assert not wrong

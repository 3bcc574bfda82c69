"""Helpers of the HTTP API tests: sellers with a key of every role, order bodies."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from ledger.aggregates.values import Context, Marketplace, Role
from ledger.application.ledger import Ledger

API_MAX_BODY = 64_000
UPS_TRACKING = "1Z999AA10123456784"
CTX = Context(actor="api-test")


@dataclass
class Seller:
    """A seller with one key per role, and an account per marketplace (ids by marketplace)."""

    name: str
    keys: dict[Role, str]
    accounts: dict[Marketplace, UUID]

    def auth(self, role: Role = Role.ADMIN) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


def make_seller(ledger: Ledger) -> Seller:
    name = f"seller-{secrets.token_hex(4)}"
    keys = {role: ledger.create_api_key(CTX, seller=name, role=role, name=f"{role}-key")[0] for role in Role}
    accounts = {
        m: ledger.register_account(CTX, seller=name, marketplace=m, name="main").account_id
        for m in Marketplace
    }
    return Seller(name, keys, accounts)


def order_body(account_id: UUID, marketplace_order_id: str | None = None, **changes: Any) -> dict[str, Any]:
    """A paid order of two lines in the API's import shape."""
    body: dict[str, Any] = {
        "account_id": str(account_id),
        "marketplace_order_id": marketplace_order_id or f"MO-{secrets.token_hex(5)}",
        "purchased_at": "2026-11-20T10:00:00Z",
        "currency": "USD",
        "payment_status": "paid",
        "buyer": {"name": "Ann Lee", "email": "ann@example.com"},
        "ship_to": {"name": "Ann Lee", "line1": "1 Main St", "city": "Springfield", "country": "US"},
        "lines": [
            {
                "line_id": "1",
                "sku": "MUG-1",
                "title": "Mug",
                "quantity": 2,
                "unit_price": "12.50",
                "tax": "2.00",
            },
            {"line_id": "2", "sku": "CUP-1", "quantity": 1, "unit_price": "5.00", "shipping": "4.99"},
        ],
    }
    return body | changes

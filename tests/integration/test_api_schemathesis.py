"""Schemathesis over `/schema/openapi.json`: every operation, with generated valid and invalid data.

Each operation answers with no 5xx, only status codes its schema documents, the documented content type,
and a body that matches the documented schema. Requests carry an admin key of a fresh seller; `order_id`
path parameters are often the ids of orders that seller has, and imports often name its accounts, so
commands and imports reach the domain instead of answering 404 every time. Bounded to MAX_EXAMPLES cases
per operation and mode (about 15 s here); raise it locally to hunt further.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import hypothesis.strategies as st
import msgspec
import pytest
import schemathesis
from api_support import API_MAX_BODY, CTX, UPS_TRACKING, Seller, order_body
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from ledger.aggregates.values import Carrier, Marketplace
from ledger.api.app import create_app
from ledger.api.bodies.schemas import OrderIn
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget, connect
from ledger.projections.base import rebuild
from ledger.projections.registry import all_projections

MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _import(ledger: Ledger, seller: Seller, marketplace: Marketplace, **changes: Any) -> UUID:
    body = order_body(seller.accounts[marketplace], **changes)
    order = msgspec.convert(body, OrderIn, strict=False)
    return ledger.import_order(CTX, order.account_id, order.to_domain(), seller=seller.name).order_id


@pytest.fixture
def seller_orders(pg_target: PostgresTarget, api_ledger: Ledger, seller: Seller) -> list[str]:
    """Orders in several states: paid and pending, on Amazon and eBay, one shipped, one disputed."""
    paid = _import(api_ledger, seller, Marketplace.AMAZON)
    pending = _import(api_ledger, seller, Marketplace.WALMART, payment_status="pending")
    ebay = _import(api_ledger, seller, Marketplace.EBAY)
    shipped = _import(api_ledger, seller, Marketplace.AMAZON)
    api_ledger.ship(CTX, shipped, carrier=Carrier.UPS, tracking_number=UPS_TRACKING, seller=seller.name)
    disputed = _import(api_ledger, seller, Marketplace.EBAY)
    api_ledger.open_dispute(CTX, disputed, reason="item not received", seller=seller.name)
    for projection in all_projections():  # the read models the list and sync routes read
        rebuild(projection, lambda: connect(pg_target), api_ledger.recorder, api_ledger.mapper)
    return [str(order_id) for order_id in (paid, pending, ebay, shipped, disputed)]


@pytest.fixture
def api_schema(
    pg_target: PostgresTarget, api_ledger: Ledger, seller: Seller, seller_orders: list[str]
) -> Iterator[OpenApiSchema]:
    """The app's own OpenAPI schema, served in-process; `order_id`s and `account_id`s are often the seller's."""
    app = create_app(pg_target, ledger=api_ledger, max_body_size=API_MAX_BODY)
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app)

    @schema.hook
    def flatmap_path_parameters(
        context: Any, path_parameters: dict[str, Any] | None
    ) -> st.SearchStrategy[Any]:
        if not isinstance(path_parameters, dict) or "order_id" not in path_parameters:
            return st.just(path_parameters)
        real = st.sampled_from(seller_orders).map(lambda order_id: {**path_parameters, "order_id": order_id})
        return st.one_of(real, st.just(path_parameters))

    accounts = [str(account_id) for account_id in seller.accounts.values()]

    def with_account(order: Any) -> st.SearchStrategy[Any]:
        if not isinstance(order, dict) or "account_id" not in order:
            return st.just(order)
        real = st.sampled_from(accounts).map(lambda account_id: {**order, "account_id": account_id})
        return st.one_of(real, st.just(order))

    @schema.hook
    def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
        """Imports often name one of the seller's accounts, so some orders get past the 404 and in."""
        if isinstance(body, dict) and isinstance(body.get("orders"), list):
            orders = st.tuples(*(with_account(order) for order in body["orders"]))
            return orders.map(lambda chosen: {**body, "orders": list(chosen)})
        return with_account(body)

    yield schema
    shutdown_lifespans()  # the app's lifespan (its read pool) ran since the first request


# Not `schemathesis.pytest.from_fixture`: its lazy loader sets `Function._nodeid`, which pytest 9.2 no longer
# has (AttributeError); each operation is a subtest of one test instead, with the strategies schemathesis gives.
def test_api_conforms_to_its_schema(
    api_schema: OpenApiSchema, seller: Seller, subtests: pytest.Subtests
) -> None:
    """No 5xx, and every response is documented: status code, content type and body."""
    # The event stream never ends (a client closes it): test_feed.py reads it over a real connection.
    operations = [
        operation
        for operation in (result.ok() for result in api_schema.get_all_operations())
        if operation.label != "GET /v1/events/stream"
    ]
    assert len(operations) > 10
    for operation in operations:
        takes_input = bool(operation.body) or any(True for _ in operation.iter_parameters())
        modes = (
            [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if takes_input else [GenerationMode.POSITIVE]
        )
        for mode in modes:
            with subtests.test(msg=f"{operation.label} {mode.value}"):

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=MAX_EXAMPLES,
                    deadline=None,
                    database=None,
                    # API inputs are large and schemathesis filters some; the budget is max_examples
                    suppress_health_check=list(HealthCheck),
                )
                def check(case: schemathesis.Case) -> None:
                    # A read-your-writes wait depends on a projection worker, and none runs here: a position
                    # this run's commands made and nobody projected would wait 5 s and answer 503. Those waits
                    # are tested in test_api_read_your_writes.py.
                    if case.query:
                        case.query.pop("min_position", None)
                        case.query.pop("wait", None)  # a long poll holds an empty answer up to 30 s
                    if case.headers:
                        case.headers.pop("Ledger-Min-Position", None)
                    case.call_and_validate(headers=seller.auth(), checks=CHECKS)

                check()

"""Fixtures for the HTTP API tests: the app over the run's PostgreSQL, sellers with a key of every role."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api_support import API_MAX_BODY, Seller, make_seller
from litestar.testing import TestClient

from ledger.api.app import create_app
from ledger.application.ledger import Ledger
from ledger.eventstore import database
from ledger.eventstore.database import PostgresTarget
from ledger.projections import base


@pytest.fixture
def app(ledger_env: dict[str, str]) -> Iterator[Ledger]:
    """A Ledger on the run's schema (the schema is shared by the session: use a seller of the test's own)."""
    ledger = Ledger(env=ledger_env)
    yield ledger
    ledger.close()


@pytest.fixture
def connect(pg_target: PostgresTarget) -> base.Connect:
    """Connections to the run's schema, for projections and their views."""
    return lambda: database.connect(pg_target)


@pytest.fixture
def api_ledger(app: Ledger) -> Ledger:
    """The Ledger the HTTP app and the test's setup share."""
    return app


@pytest.fixture
def client(pg_target: PostgresTarget, api_ledger: Ledger) -> Iterator[TestClient[Any]]:
    """The HTTP API over the run's PostgreSQL (a small body limit, to test 413)."""
    with TestClient(create_app(pg_target, ledger=api_ledger, max_body_size=API_MAX_BODY)) as test_client:
        yield test_client


@pytest.fixture
def seller(api_ledger: Ledger) -> Seller:
    """A fresh seller with a key of each role and an account on each marketplace."""
    return make_seller(api_ledger)


@pytest.fixture
def other_seller(api_ledger: Ledger) -> Seller:
    """A second seller, to check that sellers never see each other's data."""
    return make_seller(api_ledger)

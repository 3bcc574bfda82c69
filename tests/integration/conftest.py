"""Fixtures for the HTTP API tests: the app over the run's PostgreSQL, sellers with a key of every role."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api_support import API_MAX_BODY, Seller, make_seller
from litestar.testing import TestClient

from ledger.api.app import create_app
from ledger.application import Ledger
from ledger.database import PostgresTarget


@pytest.fixture
def api_ledger(ledger_env: dict[str, str]) -> Iterator[Ledger]:
    """A Ledger on the run's schema, shared by the app and the test's setup."""
    app = Ledger(env=ledger_env)
    yield app
    app.close()


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

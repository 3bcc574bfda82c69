"""Fixtures of the reliability suite: a store on the test's own schema, the in-process app, the sandbox
marketplaces and a `flow` (a ledger in a schema of its own with managed accounts at the sandbox; see
sync_support.py), and the summary.

Tests that start `ledger serve` use `cli_env` (the test's own schema on the session's server); tests that
stop PostgreSQL start an embedded server of their own. At the end of the session the counts the tests
gathered are printed as `reliability:` lines (quoted in BENCHMARKS.md).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from rel_support import MAX_BODY, REPORT, Seller, make_seller

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))

from sandbox_support import sandbox_fixture, sandbox_url_fixture  # noqa: F401
from sync_support import flow  # noqa: F401

from ledger.api.app import create_app
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget


@pytest.fixture
def store(own_target: PostgresTarget) -> Iterator[Ledger]:
    """A Ledger on the test's own schema: to set up sellers and to read the store afterwards."""
    ledger = Ledger(env=own_target.eventsourcing_env())
    yield ledger
    ledger.close()


@pytest.fixture
def seller(store: Ledger) -> Seller:
    return make_seller(store)


@pytest.fixture
def other_seller(store: Ledger) -> Seller:
    return make_seller(store)


@pytest.fixture
def client(own_target: PostgresTarget, store: Ledger) -> Iterator[TestClient[Any]]:
    """The HTTP API in-process over the test's own schema (body limit MAX_BODY)."""
    with TestClient(create_app(own_target, ledger=store, max_body_size=MAX_BODY)) as test_client:
        yield test_client


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in REPORT:
        terminalreporter.write_line(f"reliability: {line}")

"""Tamper evidence: rows of the stored events table altered, deleted and reordered directly in PostgreSQL are
found by the chain check and the checkpoints, which name the order and the version that broke."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from api_support import make_seller
from audit_support import CTX, TRACKING, Shop, alter_tracking, delete, open_shop, swap_states
from litestar.testing import TestClient

from ledger.aggregates.values import (
    Buyer,
    Carrier,
    ImportedOrder,
    Marketplace,
    OrderLine,
    PaymentStatus,
    Role,
)
from ledger.api.app import create_app
from ledger.application.errors import OrderNotFoundError
from ledger.audit.checkpoints import write_checkpoints
from ledger.audit.keys import seed_b64
from ledger.audit.verification import verify_all
from ledger.cli.main import main
from ledger.eventstore.database import PostgresTarget

pytestmark = pytest.mark.postgres


@pytest.fixture
def shop(own_target: PostgresTarget, tmp_path: Path) -> Iterator[Shop]:
    """A seller with an Amazon account, on the test's own schema."""
    with open_shop(own_target, tmp_path) as opened:
        yield opened


# ------------------------------------------------------------------------------------------ one order


def test_clean_history_verifies(shop):
    """An untouched order's chain recomputes from the stored rows; every event is checked."""
    order_id = shop.order()

    result = shop.verify(order_id)

    assert (result.valid, result.events_checked, result.first_invalid_version, result.problem) == (
        True,
        4,
        None,
        None,
    )


def test_altered_state_names_the_version(shop):
    """A row whose state was edited in PostgreSQL no longer matches its hash."""
    order_id = shop.order()
    alter_tracking(shop, order_id, 3)

    result = shop.verify(order_id)

    assert not result.valid
    assert result.first_invalid_version == 3
    assert "does not match its hash" in result.problem


def test_deleted_middle_row_names_the_missing_version(shop):
    """Deleting an event in the middle leaves a gap the chain check names."""
    order_id = shop.order()
    delete(shop, order_id, 2)

    result = shop.verify(order_id)

    assert (result.valid, result.first_invalid_version) == (False, 2)
    assert "version 2 is missing" in result.problem


def test_swapped_events_name_the_first_swapped_version(shop):
    """Two events exchanged (each row's content now at the other's version) break the chain at the first."""
    order_id = shop.order()
    swap_states(shop, order_id, 2, 3)

    result = shop.verify(order_id)

    assert (result.valid, result.first_invalid_version) == (False, 2)


def test_swapped_versions_are_found(shop):
    """Renumbering rows (the version column exchanged) is found as well."""
    order_id = shop.order()
    for old, new in ((3, -3), (4, 3), (-3, 4)):  # the primary key is checked row by row
        shop.sql(
            "UPDATE ledger_events SET originator_version = %s WHERE originator_id = %s AND originator_version = %s",
            new,
            order_id,
            old,
        )

    result = shop.verify(order_id)

    assert (result.valid, result.first_invalid_version) == (False, 3)


def test_deleted_last_event_is_found_once_sealed(shop):
    """A deleted last event leaves a self-consistent chain; the checkpoint that sealed it names it."""
    order_id = shop.order()
    write_checkpoints(shop.conn, shop.trust)
    delete(shop, order_id, 4)

    result = shop.verify(order_id)

    assert (result.valid, result.first_invalid_version, result.events_checked) == (False, 4, 3)
    assert "deleted after it was sealed" in result.problem


def test_deleted_last_event_before_sealing_goes_unseen(shop):
    """The documented limit: before a checkpoint covers them, the last events of an order are unprotected."""
    order_id = shop.order()
    delete(shop, order_id, 4)

    assert shop.verify(order_id).valid


def test_whole_order_deleted_after_sealing_is_reported(shop):
    """An order whose every row is gone is still known to its checkpoint: invalid from version 1."""
    order_id = shop.order()
    write_checkpoints(shop.conn, shop.trust)
    delete(shop, order_id)

    result = shop.verify(order_id)

    assert (result.valid, result.first_invalid_version) == (False, 1)


def test_unknown_order_and_other_sellers_order_are_not_found(shop):
    """Verification of an unknown order, or of another seller's, is OrderNotFoundError."""
    order_id = shop.order(shipments=0)

    with pytest.raises(OrderNotFoundError):
        shop.verify(UUID(int=7))
    with pytest.raises(OrderNotFoundError):
        shop.verify(order_id, seller="intruder")
    assert shop.verify(order_id, seller=shop.seller).valid


# ------------------------------------------------------------------------------------ the whole log


def test_verify_all_seals_then_re_verifies_checkpoints(shop):
    """A clean log verifies, gets sealed, and the next run re-verifies the seals and adds only new ranges."""
    for _ in range(3):
        shop.order()

    first = verify_all(shop.conn, shop.ledger.mapper, shop.trust)
    shop.order()
    second = verify_all(shop.conn, shop.ledger.mapper, shop.trust)

    assert (first.valid, first.orders_checked, first.checkpoints_checked, first.checkpoints_written) == (
        True,
        3,
        0,
        1,
    )
    assert first.events_checked == 3 * 4 + shop.rows_besides_orders  # every row of the table is read
    assert (second.valid, second.orders_checked, second.checkpoints_checked, second.checkpoints_written) == (
        True,
        4,
        1,
        1,
    )


def test_verify_all_names_every_broken_order_and_version(shop):
    """Each kind of tampering is reported with its order and version; nothing is sealed over it."""
    altered, gapped, truncated, erased, intact = (shop.order() for _ in range(5))
    write_checkpoints(shop.conn, shop.trust)
    alter_tracking(shop, altered, 2)
    delete(shop, gapped, 3)
    delete(shop, truncated, 4)
    delete(shop, erased)

    summary = verify_all(shop.conn, shop.ledger.mapper, shop.trust)

    assert not summary.valid
    assert summary.checkpoints_written == 0
    found = {(f.order_id, f.version) for f in summary.findings}
    assert {(altered, 2), (gapped, 3), (truncated, 4), *((erased, v) for v in range(1, 5))} <= found
    assert intact not in {f.order_id for f in summary.findings}
    assert any(f"order {gapped}: version 3 is missing" in f.message for f in summary.findings)


def test_rows_reordered_in_the_global_log_break_the_checkpoint(shop):
    """Exchanging two rows' notification ids keeps every chain intact, but not the sealed range."""
    first, second = shop.order(shipments=0), shop.order(shipments=0)
    write_checkpoints(shop.conn, shop.trust)
    shop.sql(
        "UPDATE ledger_events SET notification_id = -notification_id WHERE originator_id IN (%s, %s)",
        first,
        second,
    )
    shop.sql(
        "UPDATE ledger_events e SET notification_id = -o.notification_id FROM ledger_events o"
        " WHERE e.originator_id = %s AND o.originator_id = %s OR e.originator_id = %s AND o.originator_id = %s",
        first,
        second,
        second,
        first,
    )

    summary = verify_all(shop.conn, shop.ledger.mapper, shop.trust)

    assert not summary.valid
    assert {first, second} <= {f.order_id for f in summary.findings}
    assert all(f.version == 1 for f in summary.findings if f.order_id in (first, second))


def test_a_changed_checkpoint_is_reported(shop):
    """Editing the checkpoint table itself (to cover a deletion) breaks the checkpoints' own chain."""
    order_id = shop.order()
    write_checkpoints(shop.conn, shop.trust)
    delete(shop, order_id, 4)
    shop.sql(
        "DELETE FROM audit_checkpoint_events WHERE originator_id = %s AND originator_version = 4", order_id
    )

    summary = verify_all(shop.conn, shop.ledger.mapper, shop.trust)

    assert not summary.valid
    assert any("list of sealed events was changed" in f.message for f in summary.findings)


# -------------------------------------------------------------------------------------- HTTP and CLI


@pytest.fixture
def client(shop: Shop) -> Iterator[TestClient[Any]]:
    """The HTTP API over the test's own schema."""
    with TestClient(create_app(shop.target, ledger=shop.ledger)) as test_client:
        yield test_client


def test_verification_endpoint(shop, client):
    """Auditors and admins get {valid, events_checked, first_invalid_version, problem}; others 403 or 404."""
    seller = make_seller(shop.ledger)
    order_id = shop.ledger.import_order(
        CTX,
        seller.accounts[Marketplace.AMAZON],
        ImportedOrder(
            marketplace_order_id="MO-HTTP",
            purchased_at=datetime(2026, 11, 20, 10, tzinfo=UTC),
            currency="USD",
            payment_status=PaymentStatus.PAID,
            buyer=Buyer("Ann Lee", "ann@example.com"),
            lines=(OrderLine("A", "MUG-1", 3, Decimal("12.50")),),
        ),
    ).order_id
    shop.ledger.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=TRACKING)
    url = f"/v1/orders/{order_id}/verification"

    clean = client.get(url, headers=seller.auth(Role.AUDITOR))
    as_admin = client.get(url, headers=seller.auth(Role.ADMIN))
    as_operator = client.get(url, headers=seller.auth(Role.OPERATOR))
    foreign = client.get(url, headers=make_seller(shop.ledger).auth(Role.AUDITOR))
    alter_tracking(shop, order_id, 2)
    broken = client.get(url, headers=seller.auth(Role.AUDITOR))

    assert clean.status_code == 200
    assert clean.json() == {
        "valid": True,
        "events_checked": 2,
        "first_invalid_version": None,
        "problem": None,
    }
    assert as_admin.status_code == 200
    assert as_operator.status_code == 403
    assert foreign.status_code == 404
    assert broken.status_code == 200
    assert broken.json()["valid"] is False
    assert broken.json()["first_invalid_version"] == 2
    assert "hash" in broken.json()["problem"]


@pytest.fixture
def cli(shop: Shop, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Runs `ledger ARGS` in-process on the test's own schema; returns (exit status, stdout, stderr)."""
    for name in ("LEDGER_DATABASE_URL", "LEDGER_DATABASE_SCHEMA"):
        monkeypatch.setenv(name, cli_env[name])
    monkeypatch.setenv(
        "LEDGER_DATA_DIR", str(tmp_path)
    )  # the shop's record of checkpoints is in tmp_path/audit
    monkeypatch.setenv("LEDGER_AUDIT_SIGNING_KEY", seed_b64(shop.trust.signer))

    def run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        status = main(list(args), out=out)
        return status, out.getvalue(), err.getvalue()

    return run


def test_cli_verify_order(shop, cli):
    """`ledger verify --order` exits 0 on a clean order, 1 naming the version that broke."""
    order_id = shop.order()

    clean = cli("verify", "--order", str(order_id))
    delete(shop, order_id, 2)
    broken = cli("verify", "--order", str(order_id))

    assert clean[0] == 0
    assert f"order {order_id}: valid (4 events checked)" in clean[1]
    assert broken[0] == 1
    assert f"order {order_id}: INVALID at version 2: version 2 is missing" in broken[1]


def test_cli_verify_all_and_checkpoint(shop, cli):
    """`ledger checkpoint` seals; `ledger verify --all` reports progress, a summary, and exit 1 on tampering."""
    order_id = shop.order()

    sealed = cli("checkpoint")
    clean = cli("verify", "--all")
    delete(shop, order_id, 4)
    broken = cli("verify")

    assert (sealed[0], sealed[1]) == (0, "wrote 1 new checkpoints\n")
    assert clean[0] == 0
    assert (
        f"verified 1 orders ({4 + shop.rows_besides_orders} events), re-verified 1 checkpoints, wrote 0 new"
        in clean[1]
    )
    assert "all valid" in clean[1]
    assert (
        f"verifying order chains: {4 + shop.rows_besides_orders}/{4 + shop.rows_besides_orders}" in clean[2]
    )  # plain progress lines when stderr is no terminal
    assert broken[0] == 1
    assert "INVALID: 1 problems" in broken[1]
    assert f"{order_id} version 4 (notification" in broken[1]
    assert "was deleted" in broken[1]


def test_checkpoints_chain_over_many_ranges(shop):
    """Small ranges chain one to the next; a change in a later range names that range, order and version."""
    order_ids = [shop.order() for _ in range(3)]
    written = write_checkpoints(shop.conn, shop.trust, size=5)
    clean = verify_all(shop.conn, shop.ledger.mapper, shop.trust, seal=False)
    alter_tracking(shop, order_ids[-1], 4)

    broken = verify_all(shop.conn, shop.ledger.mapper, shop.trust, seal=False)

    assert written == -(-(3 * 4 + shop.rows_besides_orders) // 5)
    assert (clean.valid, clean.checkpoints_checked) == (True, written)
    assert not broken.valid
    assert {(f.order_id, f.version) for f in broken.findings} == {(order_ids[-1], 4)}
    assert any(f.message.startswith(f"checkpoint {written} ") for f in broken.findings)

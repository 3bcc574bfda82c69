"""`ledger ship-file FILE` and the CLI's progress lines, as a user runs them against the test run's PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import uuid4

import pytest

from ledger.cli.common import EXIT_FAILED, EXIT_USAGE

pytestmark = pytest.mark.postgres

UPS_TRACKING = "1Z999AA10123456784"
HEADER = "marketplace_order_id,line_id,quantity,carrier,tracking_number,shipping_class,shipped_at\n"


def _seller_with_order(cli, tmp_path: Path) -> tuple[str, str]:
    seller = f"seller-{uuid4().hex[:8]}"
    status, out, _ = cli(
        "accounts", "add", "--seller", seller, "--marketplace", "walmart", "--name", "main", "--json"
    )
    assert status == 0
    order = {
        "account_id": json.loads(out)["account_id"],
        "marketplace_order_id": "SF-1",
        "purchased_at": "2026-11-20T10:00:00Z",
        "currency": "USD",
        "payment_status": "paid",
        "buyer": {"name": "Ann Lee", "email": "ann@example.com"},
        "lines": [{"line_id": "1", "sku": "MUG-1", "quantity": 2, "unit_price": "12.50"}],
    }
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(order))
    status, _, err = cli("import", str(path))
    assert status == 0
    assert "import: 1/1 orders" in err  # the plain progress line (stderr is not a terminal)
    return seller, "SF-1"


def test_ship_file_reports_rows_and_fails_on_rejections(cli, tmp_path: Path) -> None:
    """Good rows ship, a bad row is reported with its row number and reason, and the exit status is 1; the
    same file again ships nothing twice."""
    seller, moid = _seller_with_order(cli, tmp_path)
    path = tmp_path / "ship.csv"
    path.write_text(HEADER + f"{moid},1,2,ups,{UPS_TRACKING},,\n{moid},9,1,ups,{UPS_TRACKING},,\n")
    status, out, err = cli("ship-file", str(path), "--seller", seller)
    assert status == EXIT_FAILED
    assert "row 2: SF-1 line 1: accepted, shipment" in out
    assert "row 3: SF-1 line 9: rejected: no line '9' on this order" in out
    assert "1 row(s) accepted, 1 rejected" in out
    assert "ship-file: 2/2 rows" in err
    status, out, _ = cli("ship-file", str(path), "--seller", seller, "--json")
    report = json.loads(out)
    assert report["rows"][0]["replayed"] is True
    assert (report["accepted"], report["rejected"]) == (1, 1)


def test_ship_file_without_rejections_exits_zero(cli, tmp_path: Path) -> None:
    """A file whose every row ships exits 0."""
    seller, moid = _seller_with_order(cli, tmp_path)
    path = tmp_path / "ship.csv"
    path.write_text(HEADER + f"{moid},1,1,ups,{UPS_TRACKING},,\n")
    status, out, _ = cli("ship-file", str(path), "--seller", seller)
    assert status == 0
    assert "1 row(s) accepted, 0 rejected" in out


def test_ship_file_refuses_what_is_not_csv(cli, tmp_path: Path) -> None:
    """A missing file or a file that is not CSV is a usage error, said in one line."""
    status, _, err = cli("ship-file", str(tmp_path / "missing.csv"))
    assert status == EXIT_USAGE
    assert "cannot read" in err
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\x00\x01\x02")
    status, _, err = cli("ship-file", str(path))
    assert status == EXIT_USAGE
    assert "binary" in err

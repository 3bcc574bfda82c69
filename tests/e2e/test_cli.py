"""The `ledger` command as a user runs it: against the test run's PostgreSQL, and `ledger serve` as a process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from uuid import uuid4

import pytest

from ledger.cli.common import EXIT_FAILED, EXIT_USAGE
from ledger.cli.imports import IMPORT_BATCH


def _order(account_id: str, order_id: str, **overrides: object) -> dict[str, object]:
    order: dict[str, object] = {
        "account_id": account_id,
        "marketplace_order_id": order_id,
        "purchased_at": "2026-11-20T10:00:00Z",
        "currency": "USD",
        "payment_status": "paid",
        "buyer": {"name": "Ann Lee", "email": "ann@example.com"},
        "lines": [{"line_id": "1", "sku": "MUG-1", "quantity": 2, "unit_price": "12.50", "tax": "2.00"}],
    }
    order.update(overrides)
    return order


def _account(cli, marketplace: str = "walmart") -> tuple[str, str]:
    seller = f"seller-{uuid4().hex[:8]}"
    status, out, _ = cli(
        "accounts", "add", "--seller", seller, "--marketplace", marketplace, "--name", "main", "--json"
    )
    assert status == 0
    return seller, json.loads(out)["account_id"]


def test_default_action_reports_database(cli) -> None:
    """`ledger` with no command reaches the database and says where it is."""
    status, out, _ = cli()
    assert status == 0
    assert "ledger is ready" in out
    assert "events table ledger_events: present" in out


def test_accounts_add_and_list(cli) -> None:
    """An account added from the CLI is listed for its seller with its settings."""
    seller, account_id = _account(cli)
    status, out, _ = cli("accounts", "list", "--seller", seller, "--json")
    assert status == 0
    [account] = json.loads(out)
    assert account["account_id"] == account_id
    assert account["fulfillment_managed"] is True


def test_import_file_reports_each_order(cli, tmp_path: Path) -> None:
    """`ledger import` creates new orders, leaves re-sent ones unchanged, and reports refusals per order."""
    _, account_id = _account(cli)
    good = _order(account_id, "W-1")
    conflicting = _order(account_id, "W-1", currency="EUR")
    path = tmp_path / "orders.json"
    path.write_text(json.dumps({"orders": [good]}))
    status, out, _ = cli("import", str(path))
    assert status == 0
    assert "[0] W-1: created" in out
    path.write_text(json.dumps([good, conflicting]))
    status, out, _ = cli("import", str(path))
    assert status == EXIT_FAILED
    assert "[0] W-1: unchanged" in out
    assert "[1] W-1: error import-conflict" in out
    assert "1 imported or unchanged, 1 failed" in out


def test_import_file_larger_than_a_batch_reports_every_order_in_order(cli, tmp_path: Path) -> None:
    """A file of more orders than one batch: a repeat across batches is unchanged, a bad order fails alone."""
    _, account_id = _account(cli)
    orders = [_order(account_id, f"B-{n}") for n in range(IMPORT_BATCH + 2)]
    orders[IMPORT_BATCH] = _order(account_id, "B-0")  # the first order again, in the second batch
    orders[3] = _order(account_id, "B-3", buyer={"name": "A\x00", "email": "a@example.com"})  # refused alone
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(orders))
    status, out, _ = cli("import", str(path), "--json")
    assert status == EXIT_FAILED
    rows = json.loads(out)
    assert [row["index"] for row in rows] == list(range(len(orders)))
    assert rows[3]["error"]["code"] == "invalid-order"
    assert rows[IMPORT_BATCH]["created"] is False
    assert rows[IMPORT_BATCH]["order_id"] == rows[0]["order_id"]
    assert sum(1 for row in rows if row.get("created")) == len(orders) - 2


def test_import_refuses_malformed_file_with_location(cli, tmp_path: Path) -> None:
    """A file that breaks the import shape is refused whole, naming the field that is wrong."""
    _, account_id = _account(cli)
    path = tmp_path / "orders.json"
    path.write_text(json.dumps({"orders": [_order(account_id, "W-2", purchased_at="2026-11-20T10:00:00")]}))
    status, out, err = cli("import", str(path))
    assert status == EXIT_USAGE
    assert "$.orders[0].purchased_at" in err
    assert out == ""
    status, _, err = cli("import", str(tmp_path / "missing.json"))
    assert status == EXIT_USAGE
    assert "cannot read" in err


def test_ship_show_and_history(cli, tmp_path: Path) -> None:
    """An order shipped from the CLI shows the shipment, and its history lists both events in order."""
    _, account_id = _account(cli)
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(_order(account_id, "W-3")))
    status, out, _ = cli("import", str(path), "--json")
    [row] = json.loads(out)
    assert row["created"] is True
    order_id = row["order_id"]
    status, out, _ = cli(
        "orders",
        "ship",
        order_id,
        "--carrier",
        "ups",
        "--tracking-number",
        "1Z999AA10123456784",
        "--line",
        "1:1",
        "--json",
    )
    assert status == 0, out
    assert json.loads(out)["events"] == ["Shipped"]
    status, out, _ = cli("orders", "show", order_id, "--json")
    shown = json.loads(out)
    assert shown["status"] == "partially_shipped"
    assert shown["lines"][0]["shipped"] == 1
    status, out, _ = cli("orders", "history", order_id, "--json")
    history = json.loads(out)
    assert [e["type"] for e in history] == ["Imported", "Shipped"]
    assert history[1]["prev_hash"] == history[0]["hash"]


def test_refused_command_says_why(cli, tmp_path: Path) -> None:
    """A command the rules refuse exits 1 with the rule's code and words, and records nothing."""
    _, account_id = _account(cli)
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(_order(account_id, "W-4")))
    status, out, _ = cli("import", str(path))
    order_id = out.split()[3]
    status, _, err = cli(
        "orders", "ship", order_id, "--carrier", "ups", "--tracking-number", "1Z999AA10123456785"
    )
    assert status == EXIT_FAILED
    assert "invalid-tracking-number" in err
    status, _, err = cli("orders", "cancel", order_id, "--reason", "out_of_stock", "--line", "1:5")
    assert status == EXIT_FAILED
    assert "nothing-to-cancel" in err
    status, out, _ = cli("orders", "show", order_id, "--json")
    assert json.loads(out)["version"] == 1


def test_idempotency_key_replays(cli, tmp_path: Path) -> None:
    """The same idempotency key on a command replays its first result without a second event."""
    _, account_id = _account(cli)
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(_order(account_id, "W-5")))
    _, out, _ = cli("import", str(path))
    order_id = out.split()[3]
    args = (
        "orders",
        "cancel",
        order_id,
        "--reason",
        "out_of_stock",
        "--line",
        "1:1",
        "--idempotency-key",
        "k-1",
        "--json",
    )
    first = json.loads(cli(*args)[1])
    second = json.loads(cli(*args)[1])
    assert first["version"] == second["version"] == 2
    assert second["replayed"] is True
    assert json.loads(cli("orders", "show", order_id, "--json")[1])["cancelled_units"] == 1


def _shipped(cli, tmp_path: Path, moid: str) -> str:
    """An imported order (two units of line 1, 2.00 tax, 4.99 shipping) with every unit shipped, from the CLI."""
    _, account_id = _account(cli)
    path = tmp_path / f"{moid}.json"
    line = {
        "line_id": "1",
        "sku": "MUG-1",
        "quantity": 2,
        "unit_price": "12.50",
        "tax": "2.00",
        "shipping": "4.99",
    }
    path.write_text(json.dumps(_order(account_id, moid, lines=[line])))
    _, out, _ = cli("import", str(path))
    order_id = out.split()[3]
    status, out, err = cli(
        "orders", "ship", order_id, "--carrier", "ups", "--tracking-number", "1Z999AA10123456784"
    )
    assert status == 0, err
    return order_id


def test_a_key_used_to_ship_is_refused_on_a_cancel(cli, tmp_path: Path) -> None:
    """Ship under --idempotency-key k1, then cancel under k1: refused with exit 1 and a clear message, nothing
    cancelled; the same ship again replays; the key on another order, or with other arguments, is refused."""
    _, account_id = _account(cli)
    path = tmp_path / "orders.json"
    path.write_text(json.dumps([_order(account_id, "W-K1"), _order(account_id, "W-K2")]))
    _, out, _ = cli("import", str(path), "--json")
    order_id, other_id = (row["order_id"] for row in json.loads(out))
    ship = (
        "orders",
        "ship",
        order_id,
        "--carrier",
        "ups",
        "--tracking-number",
        "1Z999AA10123456784",
        "--line",
    )
    status, out, err = cli(*ship, "1:1", "--idempotency-key", "k1", "--json")
    assert status == 0, err

    status, _, err = cli("orders", "cancel", order_id, "--reason", "out_of_stock", "--idempotency-key", "k1")

    assert status == EXIT_FAILED
    assert "idempotency-key-reused" in err
    assert "'k1' was used for a different request" in err
    again = cli(*ship, "1:1", "--idempotency-key", "k1", "--json")
    assert (again[0], json.loads(again[1])["replayed"]) == (0, True)
    assert cli(*ship, "1:2", "--idempotency-key", "k1")[0] == EXIT_FAILED
    other = ("orders", "ship", other_id, "--carrier", "ups", "--tracking-number", "1Z999AA10123456784")
    assert cli(*other, "--idempotency-key", "k1")[0] == EXIT_FAILED
    shown = json.loads(cli("orders", "show", order_id, "--json")[1])
    assert (shown["version"], shown["cancelled_units"], shown["shipped_units"]) == (2, 0, 1)
    assert json.loads(cli("orders", "show", other_id, "--json")[1])["version"] == 1


@pytest.mark.parametrize(
    ("amounts", "total"),
    [(("--shipping-amount", "1.00"), "1.00"), (("--tax-amount", "0.50"), "0.50")],
    ids=["shipping", "tax"],
)
def test_refund_of_an_amount_refunds_only_that_amount(
    cli, tmp_path: Path, amounts: tuple[str, str], total: str
) -> None:
    """`ledger orders refund --shipping-amount 1.00` (or --tax-amount) with no --line refunds only that amount."""
    order_id = _shipped(cli, tmp_path, "W-R")

    status, _, err = cli("orders", "refund", order_id, "--reason", "shipping_adjustment", *amounts, "--json")

    assert status == 0, err
    shown = json.loads(cli("orders", "show", order_id, "--json")[1])
    assert shown["refunded_total"] == total
    assert shown["lines"][0]["refunded_quantity"] == 0


def test_bad_arguments_are_usage_errors(cli) -> None:
    """An order id that is not a UUID, or a bad line spec, is refused before touching the database."""
    status, _, _ = cli("orders", "show", "not-a-uuid")
    assert status == EXIT_USAGE
    status, _, _ = cli(
        "orders", "ship", str(uuid4()), "--carrier", "ups", "--tracking-number", "x", "--line", "1"
    )
    assert status == EXIT_USAGE


def test_unknown_order_is_not_found(cli) -> None:
    """Showing an order that does not exist exits 1 with order-not-found."""
    status, _, err = cli("orders", "show", str(uuid4()))
    assert status == EXIT_FAILED
    assert "order-not-found" in err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str, timeout: float = 30) -> object:
    """GET `url` once the server answers (it starts listening after printing its first line)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.slow
def test_serve_runs_until_sigterm_and_keeps_data() -> None:
    """`ledger serve` serves HTTP over the embedded PostgreSQL, stops cleanly on SIGTERM, and the data survives."""
    data_dir = Path(tempfile.mkdtemp(prefix="ledger-serve-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | {
        "LEDGER_DATA_DIR": str(data_dir)
    }
    ledger = [sys.executable, "-m", "ledger.cli"]
    try:
        port = _free_port()
        server = subprocess.Popen(
            [*ledger, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        assert "ledger: serving" in server.stdout.readline()
        assert _get_json(f"http://127.0.0.1:{port}/healthz") == {"status": "ok"}
        added = subprocess.run(
            [*ledger, "accounts", "add", "--seller", "s", "--marketplace", "jet", "--name", "n"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        pid_file = data_dir / "pg" / "postmaster.pid"
        deadline = time.monotonic() + 10
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_file.exists(), "the embedded server is still running"
        listed = subprocess.run(
            [*ledger, "accounts", "list", "--seller", "s"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert added.stdout.split()[0] in listed.stdout
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def test_keys_create_list_revoke(cli) -> None:
    """`ledger keys` makes a key (secret shown once), lists it without its secret, and revokes it."""
    seller = f"seller-{uuid4().hex[:8]}"
    status, out, _ = cli(
        "keys", "create", "--seller", seller, "--role", "operator", "--name", "bot", "--json"
    )
    assert status == 0
    created = json.loads(out)
    assert created["key"].startswith("lk_")
    assert created["role"] == "operator"
    status, out, _ = cli("keys", "list", "--seller", seller)
    assert status == 0
    assert created["key_id"] in out
    assert created["key"] not in out
    assert "active" in out
    status, out, _ = cli("keys", "revoke", created["key_id"])
    assert status == 0
    status, out, _ = cli("keys", "list", "--seller", seller, "--json")
    [listed] = json.loads(out)
    assert listed["revoked_at"] is not None


def test_keys_bad_role_is_usage_error(cli) -> None:
    """An unknown role is refused by the argument parser (exit 2)."""
    status, _, _ = cli("keys", "create", "--seller", "s", "--role", "superuser")
    assert status == EXIT_USAGE

"""The `ledger` command to the letter: global options in either position, orders named by the marketplace's
id, `orders list`, `--version`, JSON errors under --json, source `cli`, and a help line and example for all."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from uuid import uuid4

import pytest

from ledger.cli.common import EXIT_FAILED, EXIT_USAGE
from ledger.cli.main import build_parser
from ledger.eventstore.database import PostgresTarget

UPS = "1Z999AA10123456784"


def _seller_with_order(cli, tmp_path: Path, order: str = "W-1") -> tuple[str, str, str]:
    """(seller, account id, ledger order id) of a new seller's Walmart account with one imported order."""
    seller = f"seller-{uuid4().hex[:8]}"
    _, out, _ = cli(
        "accounts", "add", "--seller", seller, "--marketplace", "walmart", "--name", "main", "--json"
    )
    account_id = json.loads(out)["account_id"]
    body = {
        "account_id": account_id,
        "marketplace_order_id": order,
        "purchased_at": "2026-11-20T10:00:00Z",
        "currency": "USD",
        "payment_status": "paid",
        "buyer": {"name": "Ann Lee", "email": "ann@example.com"},
        "lines": [{"line_id": "1", "sku": "MUG-1", "quantity": 2, "unit_price": "12.50"}],
    }
    path = tmp_path / f"{order}.json"
    path.write_text(json.dumps(body))
    status, out, err = cli("import", str(path), "--json")
    assert status == 0, err
    return seller, account_id, json.loads(out)[0]["order_id"]


def test_global_options_work_before_or_after_the_command(cli, tmp_path: Path) -> None:
    """`--actor` and `--json` before the subcommand are used as after it; events record source `cli`."""
    _, _, order_id = _seller_with_order(cli, tmp_path)
    status, out, err = cli(
        "--actor", "bob", "--json", "orders", "ship", order_id, "--carrier", "UPS", "--tracking-number", UPS
    )
    assert status == 0, err
    assert json.loads(out)["events"] == ["Shipped"]
    status, out, _ = cli("orders", "open-dispute", order_id, "--reason", "late", "--actor", "carol", "--json")
    assert status == 0
    _, out, _ = cli("--json", "orders", "history", order_id)
    history = json.loads(out)
    assert [(e["type"], e["actor"], e["source"]) for e in history[1:]] == [
        ("Shipped", "bob", "cli"),
        ("DisputeOpened", "carol", "cli"),
    ]
    _, out, _ = cli("--json", "orders", "show", order_id)
    assert json.loads(out)["shipments"][0]["carrier"] == "ups"


def test_orders_are_named_by_the_marketplaces_id(cli, tmp_path: Path) -> None:
    """A marketplace order id names the order with --account, or with --seller and --marketplace."""
    seller, account_id, order_id = _seller_with_order(cli, tmp_path, "W-77")
    status, out, err = cli("orders", "show", "W-77", "--account", account_id, "--json")
    assert status == 0, err
    assert json.loads(out)["order_id"] == order_id
    status, out, _ = cli("orders", "show", " W-77 ", "--seller", seller, "--marketplace", "walmart", "--json")
    assert json.loads(out)["order_id"] == order_id
    status, out, _ = cli(
        "orders", "cancel", "W-77", "--account", account_id, "--reason", "out_of_stock", "--json"
    )
    assert status == 0
    assert json.loads(out)["order_id"] == order_id

    status, _, err = cli("orders", "show", "W-77")
    assert status == EXIT_USAGE
    assert "--account" in err
    status, _, err = cli("orders", "show", "W-77", "--seller", seller)
    assert status == EXIT_USAGE
    status, _, err = cli("orders", "show", "W-404", "--account", account_id)
    assert status == EXIT_FAILED
    assert "order-not-found" in err


def test_orders_list_shows_all_sales(
    cli, tmp_path: Path, own_target: PostgresTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ledger orders list` lists a seller's orders with the All Sales filters, as a table or JSON."""
    monkeypatch.setenv("LEDGER_DATABASE_SCHEMA", own_target.schema)  # All Sales is rebuilt over its whole log
    seller, account_id, shipped = _seller_with_order(cli, tmp_path, "W-1")
    cli("orders", "ship", shipped, "--carrier", "ups", "--tracking-number", UPS)
    _seller_with_order(cli, tmp_path, "W-other-seller")
    assert cli("projections", "rebuild", "all_sales")[0] == 0

    status, out, err = cli("orders", "list", "--seller", seller, "--json")
    assert status == 0, err
    listed = json.loads(out)
    assert [o["order_id"] for o in listed["items"]] == [shipped]
    assert listed["next_cursor"] is None
    _, out, _ = cli("orders", "list", "--seller", seller, "--status", "unshipped", "--json")
    assert json.loads(out)["items"] == []
    status, out, _ = cli("orders", "list", "--seller", seller, "--account", account_id, "--sort", "total")
    assert status == 0
    assert shipped in out
    assert "W-1" in out
    status, _, err = cli("orders", "list", "--seller", seller, "--limit", "0")
    assert status == EXIT_USAGE
    assert "limit" in err


def test_version(cli, capsys: pytest.CaptureFixture[str]) -> None:
    """`ledger --version` prints the version and exits 0."""
    status, _, _ = cli("--version")
    assert status == 0
    assert capsys.readouterr().out.startswith("ledger 0.")  # argparse writes it to sys.stdout


def test_errors_are_json_under_json(cli) -> None:
    """Under --json a refusal and a usage error are a JSON object on stdout with the exit code, nothing on stderr."""
    status, out, err = cli("--json", "orders", "show", str(uuid4()))
    assert status == EXIT_FAILED
    assert json.loads(out) == {
        "error": {"code": "order-not-found", "message": json.loads(out)["error"]["message"]},
        "exit_code": EXIT_FAILED,
    }
    assert err == ""
    status, out, err = cli(
        "orders", "ship", str(uuid4()), "--carrier", "pony", "--tracking-number", "x", "--json"
    )
    assert status == EXIT_USAGE
    problem = json.loads(out)
    assert problem["exit_code"] == EXIT_USAGE
    assert problem["error"]["code"] == "usage"
    assert "pony" in problem["error"]["message"]
    assert err == ""


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:  # argparse offers no public walk of its tree
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _parsers(child)
    return found


@pytest.mark.parametrize("parser", _parsers(build_parser()), ids=lambda p: p.prog)
def test_every_command_has_a_help_line_per_option_and_an_example(parser: argparse.ArgumentParser) -> None:
    """`--help` of every command explains each option and argument and ends with an example of its use."""
    subcommands = argparse._SubParsersAction  # each subcommand has a help line of its own
    undocumented = [a.dest for a in parser._actions if not a.help and not isinstance(a, subcommands)]
    assert undocumented == []
    assert "example:\n  ledger" in (parser.epilog or "")
    assert "example:" in parser.format_help()

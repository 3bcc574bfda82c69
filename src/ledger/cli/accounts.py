"""`ledger accounts add|list|update`: a seller's marketplace accounts."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from ledger.aggregates.values import Marketplace
from ledger.application.ledger import Ledger
from ledger.cli.common import Command, context, print_json, uuid_arg, yes_no


def cmd_accounts_add(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    account = app.register_account(
        context(args),
        seller=args.seller,
        marketplace=Marketplace(args.marketplace),
        name=args.name,
        fulfillment_managed=not args.third_party_managed,
        restock_in_ledger=args.restock_in_ledger,
        sync_enabled=not args.sync_off,
    )
    if args.json:
        print_json(account, out)
    else:
        out.write(
            f"{account.account_id}  {account.marketplace} account {account.name!r} of {account.seller}\n"
        )
    return 0


def cmd_accounts_list(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    accounts = app.list_accounts(args.seller)
    if args.json:
        print_json(accounts, out)
        return 0
    if not accounts:
        out.write(f"seller {args.seller} has no accounts yet\n")
    for a in accounts:
        flags = [] if a.fulfillment_managed else ["third party managed"]
        flags += ["restock in ledger"] if a.restock_in_ledger else []
        flags += [] if a.sync_enabled else ["sync off"]
        out.write(f"{a.account_id}  {a.marketplace:<8} {a.name}  {', '.join(flags)}\n")
    return 0


def cmd_accounts_update(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    account = app.update_account(
        context(args),
        args.account_id,
        name=args.name,
        fulfillment_managed=args.fulfillment_managed,
        restock_in_ledger=args.restock_in_ledger,
        sync_enabled=args.sync,
    )
    if args.json:
        print_json(account, out)
    else:
        out.write(f"{account.account_id} is at version {account.version}\n")
    return 0


def add_commands(sub: Any, command: Command) -> None:
    """`accounts add|list|update`."""
    accounts = command(sub, "accounts", None, "marketplace accounts of a seller")
    acc_sub = accounts.add_subparsers(dest="accounts_command", metavar="COMMAND", required=True)
    add = command(acc_sub, "add", cmd_accounts_add, "register a marketplace account")
    add.add_argument("--seller", required=True, help="the seller the account belongs to")
    add.add_argument(
        "--marketplace", required=True, choices=[m.value for m in Marketplace], help="where the account sells"
    )
    add.add_argument("--name", required=True, help="a name for people, e.g. 'Amazon US'")
    add.add_argument(
        "--third-party-managed",
        action="store_true",
        help="fulfilment happens outside the ledger: orders import as Third Party Managed, nothing is sent",
    )
    add.add_argument(
        "--restock-in-ledger", action="store_true", help="cancellations restock the ledger by default"
    )
    add.add_argument(
        "--sync-off",
        action="store_true",
        help="the ledger neither imports from nor sends to the marketplace; changes are recorded as not sent",
    )
    lst = command(acc_sub, "list", cmd_accounts_list, "list a seller's accounts")
    lst.add_argument("--seller", required=True, help="whose accounts")
    upd = command(acc_sub, "update", cmd_accounts_update, "change an account's settings")
    upd.add_argument("account_id", type=uuid_arg, help="the account's id (see `ledger accounts list`)")
    upd.add_argument("--name", help="its new name")
    upd.add_argument(
        "--fulfillment-managed", type=yes_no, metavar="yes|no", help="no: Third Party Managed (see add)"
    )
    upd.add_argument(
        "--restock-in-ledger", type=yes_no, metavar="yes|no", help="whether cancellations restock the ledger"
    )
    upd.add_argument(
        "--sync",
        type=yes_no,
        metavar="yes|no",
        help="no: sync off (see add); yes again leaves changes made meanwhile not sent (`ledger sync check`)",
    )

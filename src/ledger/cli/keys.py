"""`ledger keys create|list|revoke`: a seller's API keys (the HTTP API's Bearer keys)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

import msgspec

from ledger.aggregates.values import Role
from ledger.application.ledger import Ledger
from ledger.cli.common import Command, context, print_json, uuid_arg


def cmd_keys_create(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    """Make an API key; its secret is printed once and never stored."""
    secret, key = app.create_api_key(context(args), seller=args.seller, role=Role(args.role), name=args.name)
    if args.json:
        print_json({"key": secret, **msgspec.to_builtins(key)}, out)
        return 0
    label = f" {key.name!r}" if key.name else ""
    out.write(
        f"{secret}\n"
        f"  key {key.key_id}{label}: role {key.role} for seller {key.seller}\n"
        "  shown once: the ledger keeps only its hash. Send it as `Authorization: Bearer <key>`.\n"
    )
    return 0


def cmd_keys_list(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    keys = app.list_api_keys(args.seller)
    if args.json:
        print_json(keys, out)
        return 0
    if not keys:
        out.write(f"seller {args.seller} has no API keys yet\n")
    for k in keys:
        state = "active" if k.active else f"revoked {k.revoked_at.isoformat() if k.revoked_at else ''}"
        out.write(f"{k.key_id}  {k.role:<11} {state:<8} created {k.created_at.isoformat()}  {k.name}\n")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, app: Ledger, out: TextIO) -> int:
    key = app.revoke_api_key(context(args), args.key_id)
    if args.json:
        print_json(key, out)
    else:
        out.write(f"{key.key_id} revoked\n")
    return 0


def add_commands(sub: Any, command: Command) -> None:
    """`keys create|list|revoke`."""
    keys = command(sub, "keys", None, "API keys of a seller (the HTTP API's Bearer keys)")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    kcreate = command(keys_sub, "create", cmd_keys_create, "make a key; prints its secret once")
    kcreate.add_argument("--seller", required=True, help="the seller the key acts for")
    kcreate.add_argument("--role", required=True, choices=[r.value for r in Role], help="what the key may do")
    kcreate.add_argument("--name", default="", help="a label (recorded as the actor of the key's changes)")
    klist = command(keys_sub, "list", cmd_keys_list, "list a seller's keys (never their secrets)")
    klist.add_argument("--seller", required=True, help="whose keys")
    krevoke = command(keys_sub, "revoke", cmd_keys_revoke, "revoke a key: it stops working at once")
    krevoke.add_argument("key_id", type=uuid_arg, help="the key's id (see `ledger keys list`)")

"""`ledger privacy forget`: a buyer's personal data, destroyed by destroying its key (crypto-shredding)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from ledger.cli.common import EXIT_FAILED, Command, UsageError, print_json
from ledger.config import Settings
from ledger.eventstore.database import connect, open_database
from ledger.eventstore.keys_store import forget


def cmd_privacy_forget(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Destroy a buyer's personal data key and scrub the read models' copies (crypto-shredding)."""
    email = args.buyer.strip()
    if not email:
        raise UsageError("--buyer needs the buyer's email")
    with open_database(settings) as target, connect(target, autocommit=True) as conn:
        destroyed, scrubbed = forget(conn, args.seller, email)
    if args.json:
        print_json({"key_destroyed": destroyed, "rows_scrubbed": scrubbed}, out)
    elif destroyed:
        out.write(
            f"buyer {email} of seller {args.seller} forgotten: key destroyed, "
            f"{scrubbed} All Sales rows scrubbed; history still verifies\n"
        )
    elif scrubbed:
        out.write(
            f"buyer {email} of seller {args.seller}: no key (orders recorded before encryption keep the "
            f"plaintext in their events); {scrubbed} All Sales rows scrubbed\n"
        )
    else:
        out.write(
            f"no live key for buyer {email} of seller {args.seller} (forgotten already, or never seen)\n"
        )
    return 0 if destroyed or scrubbed else EXIT_FAILED


def add_commands(sub: Any, command: Command) -> None:
    """`privacy forget`."""
    privacy = command(sub, "privacy", None, "buyers' personal data")
    privacy_sub = privacy.add_subparsers(dest="privacy_command", metavar="COMMAND", required=True)
    forget_parser = command(
        privacy_sub, "forget", None, "destroy a buyer's key: their name, email and address read as erased"
    )
    forget_parser.set_defaults(settings_handler=cmd_privacy_forget)
    forget_parser.add_argument("--buyer", required=True, metavar="EMAIL", help="the buyer's email address")
    forget_parser.add_argument("--seller", required=True, help="the seller whose buyer it is")

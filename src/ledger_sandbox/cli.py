"""`ledger sandbox`: the sandbox marketplaces as a local HTTP server (see the package docstring).

It needs no database: it is the marketplaces' side. It prints its URL, and with `--orders N` starts with N
generated orders per marketplace for the account `--account` (the access token an adapter sends).
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any, TextIO

EXIT_UNAVAILABLE = 3


def add_command(sub: Any, **options: Any) -> None:
    """`ledger sandbox [--host] [--port] [--seed] [--orders] [--account]`; `options` go to `add_parser` (the
    `ledger` command's common options, its help example)."""
    what = "run the sandbox marketplaces: a local HTTP server playing Amazon, eBay and the others"
    parser = sub.add_parser("sandbox", help=what, description=what, **options)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8700, help="port to listen on (default 8700)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated orders (default 0)")
    parser.add_argument(
        "--orders", type=_count, default=0, help="orders to generate at start, per marketplace (default 0)"
    )
    parser.add_argument(
        "--account",
        default="sandbox",
        help="the seller account (access token) the orders go to (default sandbox)",
    )
    parser.set_defaults(settings_handler=cmd_sandbox)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, not {port}")
    return port


def _count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= count <= 10_000:
        raise argparse.ArgumentTypeError("between 0 and 10000")
    return count


def cmd_sandbox(args: argparse.Namespace, settings: Any, out: TextIO) -> int:
    """Serve until interrupted."""
    import uvicorn  # noqa: PLC0415 - the server's imports only when it runs

    from ledger_sandbox.app import create_sandbox_app  # noqa: PLC0415
    from ledger_sandbox.faults import quiet_dropped_connections  # noqa: PLC0415
    from ledger_sandbox.validation import SpecsNotFoundError, specs_dir  # noqa: PLC0415

    try:
        specs = specs_dir()
    except SpecsNotFoundError as exc:
        print(f"ledger: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    with socket.socket() as probe:
        try:
            probe.bind((args.host, args.port))
        except OSError as exc:
            print(f"ledger: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
            return EXIT_UNAVAILABLE
    app = create_sandbox_app(seed=args.seed)
    sandbox = app.state.sandbox
    url = f"http://{args.host}:{args.port}"
    for name, marketplace in sandbox.marketplaces.items():
        if args.orders:
            sandbox.state.generate(name, args.account, marketplace.new_order_id, count=args.orders)
    print(f"sandbox marketplaces ({', '.join(sandbox.marketplaces)}) at {url}", file=out)
    print(
        f"  schemas from {specs}; control API at {url}/_sandbox/ (see `ledger_sandbox`)",
        file=out,
    )
    if args.orders:
        print(f"  {args.orders} orders per marketplace for account {args.account!r}", file=out)
    out.flush()
    quiet_dropped_connections()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=2)
    return 0

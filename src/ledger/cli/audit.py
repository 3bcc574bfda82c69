"""The auditors' commands: `ledger verify`, `ledger checkpoint`, `ledger audit ...` and
`ledger report all-sales --as-of`; and the checkpoint sealer that `ledger serve` and `ledger worker` run.

They read the stored events table directly (audit/verification.py, audit/as_of.py), so they take the Settings and
open their own autocommit connection; the Ledger is opened only for its mapper (the events' decoding).
Progress goes to stderr (a rich bar on a terminal, a plain line a second otherwise); results go to `out`.
`ledger audit verify-bundle` opens no database at all.
"""

from __future__ import annotations

import argparse
import base64
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from ledger.application.ledger import Ledger
from ledger.audit.as_of import all_sales_as_of, to_csv, to_json
from ledger.audit.bundle import decode_bundle, verify_bundle
from ledger.audit.checkpoints import (
    CheckpointsChangedError,
    CheckpointWorker,
    SignedCheckpoint,
    checkpoint_json,
    latest_checkpoint,
    load_saved_checkpoint,
    write_checkpoints,
)
from ledger.audit.keys import (
    AuditTrust,
    key_id,
    load_trust,
    parse_public_key,
    public_pem,
    raw_public,
    seed_b64,
    write_key_file,
)
from ledger.audit.verification import VerificationSummary, verify_all, verify_order
from ledger.cli.common import EXIT_FAILED, EXIT_USAGE, Command, print_json, time_arg, uuid_arg
from ledger.config import ConfigError, Settings
from ledger.eventstore.database import PostgresTarget, connect, open_database

PHASES = {
    "checkpoints": "re-verifying checkpoints",
    "orders": "verifying order chains",
    "sealing": "sealing new checkpoints",
}


class RateColumn(ProgressColumn):
    """Items per second of a task."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")


class PlainProgress:
    """One line per phase per second, and one at each phase's end: for logs and pipes."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.started: dict[str, float] = {}
        self.last = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        start = self.started.setdefault(phase, now)
        if done < total and now - self.last < 1:
            return
        self.last = now
        rate = done / max(now - start, 1e-9)
        self.err.write(f"ledger verify: {PHASES.get(phase, phase)}: {done}/{total} ({rate:,.0f}/s)\n")
        self.err.flush()


@contextmanager
def progress_reporter(err: TextIO) -> Iterator[Any]:
    """A progress(phase, done, total) callback: a rich bar on a terminal, plain lines otherwise."""
    if not err.isatty():
        yield PlainProgress(err)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(file=err), transient=False) as bar:
        tasks: dict[str, Any] = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(PHASES.get(phase, phase), total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield report


def _saved_checkpoint(path: Path | None) -> SignedCheckpoint | None:
    if path is None:
        return None
    try:
        return load_saved_checkpoint(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"--against {path}: {e}") from None


def cmd_verify(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """`ledger verify --order ID` or `--all` (the default, optionally `--against` an auditor's saved
    checkpoint): exit 1 when anything is invalid."""
    against = _saved_checkpoint(args.against)
    trust = load_trust(settings, create=False)  # verifying makes no key: it judges with the ones set
    with open_database(settings) as target:
        ledger = Ledger(env=target.eventsourcing_env())
        try:
            with connect(target, autocommit=True) as conn:
                if args.order is not None:
                    result = verify_order(conn, ledger.mapper, args.order)
                    if args.json:
                        print_json(result, out)
                    elif result.valid:
                        out.write(
                            f"order {result.order_id}: valid ({result.events_checked} events checked)\n"
                        )
                    else:
                        out.write(
                            f"order {result.order_id}: INVALID at version {result.first_invalid_version}: "
                            f"{result.problem}\n"
                        )
                    return 0 if result.valid else EXIT_FAILED
                with progress_reporter(sys.stderr) as report:
                    summary = verify_all(
                        conn, ledger.mapper, trust, report, seal=not args.no_checkpoint, against=against
                    )
        finally:
            ledger.close()
    _write_summary(summary, args.json, out)
    return 0 if summary.valid else EXIT_FAILED


def _write_summary(summary: VerificationSummary, as_json: bool, out: TextIO) -> None:
    if as_json:
        print_json(summary, out)
        return
    out.write(
        f"verified {summary.orders_checked} orders ({summary.events_checked} events), "
        f"re-verified {summary.checkpoints_checked} checkpoints, "
        f"wrote {summary.checkpoints_written} new checkpoints\n"
    )
    if summary.valid:
        out.write("all valid\n")
        return
    out.write(f"INVALID: {len(summary.findings)} problems\n")
    for finding in summary.findings:
        out.write(f"  {finding.message}\n")


def cmd_checkpoint(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Seal the events recorded since the last checkpoint (the worker does it too, at most a minute behind)."""
    trust = load_trust(settings)
    try:
        with (
            open_database(settings) as target,
            connect(target, autocommit=True) as conn,
            progress_reporter(sys.stderr) as report,
        ):
            written = write_checkpoints(conn, trust, report)
    except CheckpointsChangedError as e:
        print(f"ledger: refusing to seal: {e}; run `ledger verify --all`", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print_json({"checkpoints_written": written}, out)
    else:
        out.write(f"wrote {written} new checkpoints\n")
    return 0


def cmd_report_all_sales(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """`ledger report all-sales --seller S [--as-of T] --format csv|json`, rebuilt from the events."""
    at = args.as_of or datetime.now(UTC)
    with open_database(settings) as target:
        ledger = Ledger(env=target.eventsourcing_env())
        try:
            with connect(target, autocommit=True) as conn:
                summaries = all_sales_as_of(conn, ledger.mapper, args.seller, at)
        finally:
            ledger.close()
    out.write(to_json(summaries) if args.format == "json" or args.json else to_csv(summaries))
    return 0


# ------------------------------------------------------------------------------ signing keys and bundles


def cmd_audit_keygen(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """A new signing key: into --out FILE (mode 0600, its public key in FILE.pub), or printed for
    LEDGER_AUDIT_SIGNING_KEY."""
    private_key = Ed25519PrivateKey.generate()
    public = private_key.public_key()
    if args.out is not None:
        try:
            public_file = write_key_file(args.out, private_key)
        except FileExistsError:
            print(f"ledger: {args.out} exists: not overwriting a signing key", file=sys.stderr)
            return EXIT_USAGE
        out.write(
            f"wrote the signing key to {args.out} (mode 0600) and its public key to {public_file}\n"
            f"key id {key_id(public)}; set LEDGER_AUDIT_KEY_FILE={args.out}\n"
        )
        return 0
    out.write(f"LEDGER_AUDIT_SIGNING_KEY={seed_b64(private_key)}\n")
    out.write(
        f"# key id {key_id(public)}; public key (base64) {base64.b64encode(raw_public(public)).decode()}\n"
    )
    out.write(public_pem(public).decode("ascii"))
    return 0


def cmd_audit_latest(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Print the newest signed checkpoint as JSON: save it outside the ledger, verify `--against` it later."""
    with open_database(settings) as target, connect(target, autocommit=True) as conn:
        checkpoint = latest_checkpoint(conn)
    if checkpoint is None:
        print("ledger: no checkpoint has been signed yet", file=sys.stderr)
        return EXIT_FAILED
    out.write(checkpoint_json(checkpoint))
    return 0


def cmd_audit_verify_bundle(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """Check an order's audit bundle offline (no database): with --public-key, or this host's own keys."""
    try:
        bundle = decode_bundle(args.bundle.read_bytes())
        if args.public_key is not None:
            trust = AuditTrust.of(
                None, parse_public_key(args.public_key.read_text(), source=str(args.public_key))
            )
        else:
            trust = load_trust(settings, create=False)
    except (OSError, ValueError) as e:
        print(f"ledger: {e}", file=sys.stderr)
        return EXIT_USAGE
    problems = verify_bundle(bundle, trust)
    if args.json:
        print_json({"order_id": bundle.order_id, "valid": not problems, "problems": problems}, out)
    elif problems:
        out.write(f"order {bundle.order_id}: INVALID: {len(problems)} problems\n")
        for problem in problems:
            out.write(f"  {problem}\n")
    else:
        newest = bundle.checkpoint
        sealed = (
            "" if newest is None else f", sealed up to checkpoint {newest.seq} signed by key {newest.key_id}"
        )
        out.write(f"order {bundle.order_id}: valid ({len(bundle.events)} events{sealed})\n")
    return EXIT_FAILED if problems else 0


def add_commands(sub: Any, command: Command) -> None:
    """`verify`, `checkpoint`, `audit keygen | latest-checkpoint | verify-bundle` and `report all-sales`."""
    verify = command(sub, "verify", None, "recompute hash chains and checkpoints from the stored events")
    verify.set_defaults(settings_handler=cmd_verify)
    scope = verify.add_mutually_exclusive_group()
    scope.add_argument("--order", type=uuid_arg, help="verify one order's chain")
    scope.add_argument("--all", action="store_true", help="every order and checkpoint (the default)")
    verify.add_argument(
        "--no-checkpoint", action="store_true", help="don't seal new checkpoints after a clean --all"
    )
    verify.add_argument(
        "--against", type=Path, metavar="CHECKPOINT.json", help="an auditor's saved checkpoint"
    )
    command(sub, "checkpoint", None, "seal the events recorded since the last checkpoint").set_defaults(
        settings_handler=cmd_checkpoint
    )
    report = command(sub, "report", None, "reports rebuilt from the events")
    report_sub = report.add_subparsers(dest="report_command", metavar="COMMAND", required=True)
    as_of = command(
        report_sub, "all-sales", None, "a seller's All Sales list as it stood at a time, from the events"
    )
    as_of.set_defaults(settings_handler=cmd_report_all_sales)
    as_of.add_argument("--seller", required=True, help="whose orders")
    as_of.add_argument("--as-of", type=time_arg, help="ISO 8601 time with a zone (default: now)")
    as_of.add_argument("--format", choices=["csv", "json"], default="csv", help="output (default csv)")
    audit = command(sub, "audit", None, "signing keys, signed checkpoints and offline bundles")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    keygen = command(audit_sub, "keygen", None, "make an Ed25519 checkpoint signing key")
    keygen.set_defaults(settings_handler=cmd_audit_keygen)
    keygen.add_argument(
        "--out", type=Path, help="write it to this file (0600) and its public key to FILE.pub"
    )
    command(
        audit_sub, "latest-checkpoint", None, "print the newest signed checkpoint (JSON) to keep"
    ).set_defaults(settings_handler=cmd_audit_latest)
    bundle = command(
        audit_sub, "verify-bundle", None, "check an order's audit bundle offline, without a database"
    )
    bundle.set_defaults(settings_handler=cmd_audit_verify_bundle)
    bundle.add_argument(
        "bundle", type=Path, metavar="FILE", help="the JSON of GET /v1/orders/{id}/audit-bundle"
    )
    bundle.add_argument(
        "--public-key", type=Path, metavar="FILE", help="the signer's public key (PEM or base64)"
    )


def no_sealer() -> None:
    """What stops the sealer where none runs (`ledger serve --no-workers`)."""


def start_sealer(
    target: PostgresTarget, settings: Settings, trust: AuditTrust, out: TextIO
) -> Callable[[], None]:
    """Run the checkpoint sealer in a thread; returns what stops it."""
    worker = CheckpointWorker(
        lambda: connect(target, autocommit=True), trust, every_events=settings.audit_checkpoint_events
    )
    thread = threading.Thread(target=worker.run, name="audit-checkpoints", daemon=True)
    thread.start()
    out.write(
        f"ledger: audit checkpoints signed by key {trust.signer_id}, at most a minute or "
        f"{settings.audit_checkpoint_events} events behind\n"
    )

    def stop() -> None:
        worker.stop()
        thread.join()

    return stop

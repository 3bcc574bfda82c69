"""The auditors' commands: `ledger verify`, `ledger checkpoint` and `ledger report all-sales --as-of`.

They read the stored events table directly (audit/verification.py, audit/as_of.py), so they take the Settings and
open their own autocommit connection; the Ledger is opened only for its mapper (the events' decoding).
Progress goes to stderr (a rich bar on a terminal, a plain line a second otherwise); results go to `out`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

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
from ledger.audit.verification import VerificationSummary, verify_all, verify_order, write_checkpoints
from ledger.cli.common import EXIT_FAILED, Command, print_json, time_arg, uuid_arg
from ledger.config import Settings
from ledger.eventstore.database import connect, open_database

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


def cmd_verify(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """`ledger verify --order ID` or `--all` (the default): exit 1 when anything is invalid."""
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
                    summary = verify_all(conn, ledger.mapper, report, seal=not args.no_checkpoint)
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
    """Seal the events recorded since the last checkpoint (cheap: run it from cron, or after imports)."""
    with (
        open_database(settings) as target,
        connect(target, autocommit=True) as conn,
        progress_reporter(sys.stderr) as report,
    ):
        written = write_checkpoints(conn, report)
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


def add_commands(sub: Any, command: Command) -> None:
    """`verify`, `checkpoint` and `report all-sales`."""
    verify = command(sub, "verify", None, "recompute hash chains and checkpoints from the stored events")
    verify.set_defaults(settings_handler=cmd_verify)
    scope = verify.add_mutually_exclusive_group()
    scope.add_argument("--order", type=uuid_arg, help="verify one order's chain")
    scope.add_argument("--all", action="store_true", help="every order and checkpoint (the default)")
    verify.add_argument(
        "--no-checkpoint", action="store_true", help="don't seal new checkpoints after a clean --all"
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
    as_of.add_argument("--seller", required=True)
    as_of.add_argument("--as-of", type=time_arg, help="ISO 8601 time with a zone (default: now)")
    as_of.add_argument("--format", choices=["csv", "json"], default="csv")

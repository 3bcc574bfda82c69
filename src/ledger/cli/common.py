"""What every command group shares: exit codes, opening the ledger, output, and argument types."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TextIO
from uuid import UUID

import msgspec
import psycopg

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.times import InvalidTimeError, parse_moment
from ledger.aggregates.values import Context, Source
from ledger.application.ledger import Ledger
from ledger.config import Settings
from ledger.eventstore.database import connect, open_database

EXIT_FAILED = 1  # the ledger refused something, or some rows of a file failed
EXIT_USAGE = 2  # bad arguments or input file
EXIT_UNAVAILABLE = 3  # configuration or database problem

# A command runs with the ledger open (`handler`), or with the settings when it opens what it needs itself
# (`settings_handler`): a set_defaults key of its parser names which.
Handler = Callable[[argparse.Namespace, Ledger, TextIO], int]
SettingsHandler = Callable[[argparse.Namespace, Settings, TextIO], int]
# main.build_parser's `command(parent, name, handler, help)`: a subcommand parser with the common options.
Command = Callable[[Any, str, Handler | None, str], argparse.ArgumentParser]

_json = msgspec.json.Encoder(decimal_format="string")


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class ReadModelMissingError(LedgerError):
    """The read models are not built yet: a projection worker builds them."""

    code = "read-model-unavailable"


READ_MODELS_MISSING = "the read models are not built yet: run `ledger worker` (or `ledger serve`) first"


@contextmanager
def reading(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the read models; their absence is said in one line, not a traceback."""
    with open_database(settings) as target, connect(target, autocommit=True) as conn:
        try:
            yield conn
        except psycopg.errors.UndefinedTable:
            raise ReadModelMissingError(READ_MODELS_MISSING) from None


@contextmanager
def open_ledger(settings: Settings) -> Iterator[Ledger]:
    with open_database(settings) as target:
        app = Ledger(env=target.eventsourcing_env())
        try:
            yield app
        finally:
            app.close()


def context(args: argparse.Namespace, source: Source = Source.CLI) -> Context:
    return Context(actor=args.actor, source=source, idempotency_key=getattr(args, "idempotency_key", None))


def print_json(value: Any, out: TextIO) -> None:
    out.write(_json.encode(value).decode() + "\n")


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def relay(stop: threading.Event, then: Callable[[], None]) -> None:
    """Call `then` once `stop` is set (by a signal)."""

    def wait() -> None:
        stop.wait()
        then()

    threading.Thread(target=wait, name="stop-relay", daemon=True).start()


# ------------------------------------------------------------------------------ argument types


def uuid_arg(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an id (a UUID)") from None


def time_arg(text: str) -> datetime:
    """An RFC 3339 time with a zone, read as the API reads one (aggregates.times)."""
    try:
        return parse_moment(text, "time")
    except InvalidTimeError as e:
        raise argparse.ArgumentTypeError(e.message) from None


def yes_no(text: str) -> bool:
    if text.lower() in {"yes", "true", "on", "1"}:
        return True
    if text.lower() in {"no", "false", "off", "0"}:
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: use yes or no")

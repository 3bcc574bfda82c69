"""Decoding stored events, CPU per event: the library's decoding against the Ledger's typed decoders.

    python bench/decoding.py [--orders 2000] [--rounds 7]

In one process, over the same stored events: `library` is the library's `Mapper.to_domain_event` with the
Ledger's transcoder (the decoding of every build before eventstore/decoding.py), `typed` the application's
`LedgerMapper` (eventstore/decoding.py). Two sets of events: `all_sales`, the mix `projection_catchup.py`
stores (per order an import of two lines, a shipment, a refund for every fourth), encoded in memory; and
`previous_release`, the 199 events of every type stored by commit 70a71cd and release 0.1.0
(tests/fixtures). The rounds interleave the two decoders; each reports the thread's CPU time per event
(time.thread_time: steadier than wall time on a shared machine), median and minimum over the rounds, and
per event type for the mix. No PostgreSQL: decoding is all in Python. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper, StoredEvent
from projection_catchup import bench_accounts, sample_order

from ledger.application.ledger import Ledger

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
IN_MEMORY = {"PERSISTENCE_MODULE": "eventsourcing.popo", "LEDGER_PERSISTENCE_MODULE": "eventsourcing.popo"}
_ROW = re.compile(
    r"INSERT INTO __SCHEMA__\.ledger_events VALUES \('([-0-9a-f]{36})', (\d+), '([^']+)', '\\x([0-9a-f]+)', \d+\);"
)


def all_sales_mix(app: Ledger, orders: int) -> list[StoredEvent]:
    """The events projection_catchup.py's `generate` stores, encoded by the application's mapper."""
    accounts = bench_accounts(app)
    stored = []
    for i in range(orders):
        order = sample_order(accounts[i % 3], i)
        stored.extend(app.mapper.to_stored_event(event) for event in order.collect_events())
    return stored


def previous_release() -> list[StoredEvent]:
    streams = json.loads((FIXTURES / "chain_events_70a71cd.json").read_text())["streams"]
    rows = [
        StoredEvent(UUID(r["originator_id"]), r["originator_version"], r["topic"], r["state"].encode())
        for stream in streams
        for r in stream
    ]
    for line in (FIXTURES / "schema_release_0_1.sql").read_text().splitlines():
        if match := _ROW.match(line):
            rows.append(StoredEvent(UUID(match[1]), int(match[2]), match[3], bytes.fromhex(match[4])))
    return rows


def cpu_us_per_event(decode: Callable[[StoredEvent], Any], events: list[StoredEvent], repeat: int) -> float:
    start = time.thread_time()
    for _ in range(repeat):
        for event in events:
            decode(event)
    return (time.thread_time() - start) / (len(events) * repeat) * 1e6


def measure(app: Ledger, events: list[StoredEvent], rounds: int, repeat: int) -> dict[str, Any]:
    mapper = app.mapper
    decoders: dict[str, Callable[[StoredEvent], Any]] = {
        "library": lambda stored: Mapper.to_domain_event(mapper, stored),
        "typed": mapper.to_domain_event,
    }
    for decode in decoders.values():  # warm up: the typed decoders are made on first sight of a topic
        cpu_us_per_event(decode, events, 1)
    runs: dict[str, list[float]] = {name: [] for name in decoders}
    for _ in range(rounds):
        for name, decode in decoders.items():
            runs[name].append(cpu_us_per_event(decode, events, repeat))
    result: dict[str, Any] = {"events": len(events)}
    for name, times in runs.items():
        result[name] = {
            "cpu_us_per_event_median": round(statistics.median(times), 2),
            "cpu_us_per_event_min": round(min(times), 2),
            "runs": [round(t, 2) for t in times],
        }
    result["ratio_typed_to_library_median"] = round(
        result["typed"]["cpu_us_per_event_median"] / result["library"]["cpu_us_per_event_median"], 3
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    app = Ledger(env=IN_MEMORY)
    mix = all_sales_mix(app, args.orders)
    old = previous_release()
    per_type: dict[str, Any] = {}
    for topic in sorted({event.topic for event in mix}):
        of_type = [event for event in mix if event.topic == topic]
        per_type[topic.rpartition(".")[2]] = measure(app, of_type, args.rounds, 1)
    result = {
        "benchmark": "decoding stored events, CPU per event, library against typed (one process)",
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "all_sales": measure(app, mix, args.rounds, 1),
        "all_sales_per_type": per_type,
        "previous_release": measure(app, old, args.rounds, max(1, 2000 // len(old))),
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

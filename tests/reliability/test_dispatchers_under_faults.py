"""Several dispatchers at once over one outbound queue while the marketplaces misbehave: nothing is lost,
nothing is applied twice, nothing overtakes what came before it, and every answer is on the order's record.

(The dispatcher SIGKILLed between the marketplace's call and recording its answer is
tests/e2e/test_sync_flow.py::test_a_dispatcher_killed_between_the_call_and_the_record_is_made_good.)

Faults are armed at the sandbox while the dispatchers work, one at a time per marketplace, on any of its
operations: 429 with a short Retry-After, 500/503, a timeout longer than the client waits, a connection reset
before the call is handled, and a response lost after the effect was applied. The counts of a run are printed
(`-s`) and recorded in BENCHMARKS.md, "Reliability"."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from sync_support import CTX, Flow

from ledger.aggregates.values import CancelReason, Carrier, Marketplace, RefundReason
from ledger.integrations.dispatcher import Dispatcher
from ledger.integrations.importer import Importer
from ledger.integrations.marketplaces import RATE_LIMITS

pytestmark = pytest.mark.postgres
UPS = "1Z999AA10123456784"
DISPATCHERS = 4
FAULTS_PER_MARKETPLACE = 14
LIFTED = dict.fromkeys(RATE_LIMITS, (10000.0, 10000))
# The sandbox's operation that applies each queue action, per marketplace.
OPERATIONS = {
    Marketplace.AMAZON: {"confirmShipment": "ship"},
    Marketplace.WALMART: {
        "acknowledgeOrders": "acknowledge", "shippingUpdates": "ship", "cancelOrderLines": "cancel",
        "refundOrderLines": "refund",
    },
    Marketplace.JET: {"shipOrder": "ship", "cancelOrder": "cancel", "createRefund": "refund"},
    Marketplace.RAKUTEN: {"updateOrderShipping": "ship", "cancelOrder": "cancel", "refundOrder": "refund"},
}  # fmt: skip
FAULTS: list[dict[str, Any]] = [
    {"kind": "throttle", "retry_after": 0.05},
    {"kind": "server_error", "status": 503},
    {"kind": "server_error", "status": 500},
    {"kind": "timeout", "seconds": 1.0},
    {"kind": "reset"},
    {"kind": "lost"},
    {"kind": "lost"},
]


def _make_queue(flow: Flow) -> dict[Marketplace, list[str]]:
    """Orders imported on four marketplaces, then shipped, cancelled, shipped and refunded: chains of one to
    three queue items per order (Walmart's start with the order's acknowledgement)."""
    made: dict[Marketplace, list[str]] = {}
    for marketplace, count in ((Marketplace.AMAZON, 6), (Marketplace.WALMART, 8), (Marketplace.JET, 6),
                               (Marketplace.RAKUTEN, 6)):  # fmt: skip
        made[marketplace] = [o["order_id"] for o in flow.make_orders(marketplace, count, max_lines=2)]
        [report] = Importer(flow.app, flow.connect, flow.settings()).run_round(flow.account(marketplace))
        assert report.created == count, report
        for i, moid in enumerate(made[marketplace]):
            order_id = flow.order_id(marketplace, moid)
            if marketplace is not Marketplace.AMAZON and i % 3 == 0:
                flow.app.cancel(CTX, order_id, reason=CancelReason.OUT_OF_STOCK)
                continue
            flow.app.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=UPS)
            if marketplace is not Marketplace.AMAZON and i % 3 == 1:
                flow.app.refund(CTX, order_id, reason=RefundReason.DAMAGED)
    flow.queue()
    return made


def _arm_faults(flow: Flow, rng: random.Random, deadline: float) -> Counter[str]:
    """While the dispatchers work: one fault at a time per marketplace, until each has had its share or the
    queue is drained (a fault armed after a marketplace's last call never fires)."""
    armed: Counter[str] = Counter()
    left = {m.value: FAULTS_PER_MARKETPLACE for m in OPERATIONS}
    while any(left.values()) and _unfinished(flow) and time.monotonic() < deadline:
        waiting = {f["marketplace"] for f in flow.sandbox.faults()["armed"]}
        for marketplace in [m for m, n in left.items() if n and m not in waiting]:
            fault = rng.choice(FAULTS)
            flow.sandbox.fault(marketplace, "*", **fault)
            armed[fault["kind"]] += 1
            left[marketplace] -= 1
        time.sleep(rng.uniform(0.01, 0.08))
    return armed


def _unfinished(flow: Flow) -> int:
    return sum(item["state"] not in ("succeeded", "dead") for item in flow.items())


def test_dispatchers_at_once_under_faults_apply_each_change_once_in_order_and_record_every_answer(
    flow: Flow,
) -> None:
    """Four dispatchers drain one queue under 429s, 5xx, timeouts, resets and lost responses: every item ends
    succeeded, the sandbox applied each change once under its key, an order's changes in the order made,
    and each attempt's answer is one event in the order's history."""
    made = _make_queue(flow)
    items = flow.items()
    assert len(items) >= 30
    settings = flow.settings(
        sync_backoff=0.02, sync_backoff_max=0.2, sync_max_attempts=40, sync_lease=10.0,
        timeout_seconds=0.5, rate_limits=LIFTED,
    )  # fmt: skip
    dispatchers = [Dispatcher(flow.app, flow.connect, settings) for _ in range(DISPATCHERS)]
    done = threading.Event()
    errors: list[BaseException] = []

    def work(dispatcher: Dispatcher) -> None:
        deadline = time.monotonic() + 60
        try:
            while not done.is_set() and time.monotonic() < deadline:
                if dispatcher.dispatch_due() == 0:
                    time.sleep(0.02)  # retries are due a little later; others hold earlier items
        except BaseException as e:
            errors.append(e)
        finally:
            dispatcher.close()

    threads = [threading.Thread(target=work, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    armed = _arm_faults(flow, random.Random(8), deadline)
    while _unfinished(flow) and time.monotonic() < deadline:
        time.sleep(0.1)
    done.set()
    for thread in threads:
        thread.join(timeout=30)
    fired = Counter(f["kind"] for f in flow.sandbox.faults()["fired"])
    flow.sandbox.clear_faults()
    assert errors == []
    flow.queue()  # the answers reach the queue too, and change nothing the dispatchers finished
    items = flow.items()
    assert Counter(i["state"] for i in items) == {"succeeded": len(items)}
    assert fired["lost"] >= 2, fired
    assert fired["reset"] + fired["server_error"] + fired["throttle"] >= 10, fired

    by_order: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        by_order[item["order_id"]].append(item)
    effects_seen = sends = duplicates_absorbed = 0
    for marketplace, moids in made.items():
        effects = flow.sandbox.effects(marketplace.value, flow.tokens[marketplace])
        assert len({(e["order_id"], e["operation"], e["key"]) for e in effects}) == len(effects)
        for moid in moids:
            order_id = flow.order_id(marketplace, moid)
            expected = [i["action"] for i in sorted(by_order[order_id], key=lambda i: i["sequence"])]
            # The effects log keeps the order in which the sandbox first applied each change.
            applied = [OPERATIONS[marketplace][e["operation"]] for e in effects if e["order_id"] == moid
                       and e["operation"] in OPERATIONS[marketplace]]  # fmt: skip
            assert applied == expected, (marketplace, moid)
            times = [e["applied_at"] for e in effects if e["order_id"] == moid]
            assert times == sorted(times)
            effects_seen += len(applied)
            duplicates_absorbed += sum(e["attempts"] - 1 for e in effects if e["order_id"] == moid)
            history = flow.app.order_history(order_id)
            for item in by_order[order_id]:
                answers = Counter(
                    e.type for e in history
                    if e.type in ("MarketplaceAcknowledged", "MarketplaceRejected")
                    and (e.data["action"], e.data["reference"]) == (item["action"], item["reference"])
                )  # fmt: skip
                assert answers["MarketplaceAcknowledged"] == 1, item
                assert answers["MarketplaceAcknowledged"] + answers["MarketplaceRejected"] == item["attempts"]
                sends += item["attempts"]
    assert effects_seen == len(items)
    assert duplicates_absorbed >= fired["lost"]  # a lost answer's re-send is absorbed by its key
    assert flow.sandbox.violations() == []
    print(  # the counts for BENCHMARKS.md, "Reliability"
        f"\ndispatchers under faults: {len(items)} items, {sends} sends, faults armed {dict(armed)},"
        f" fired {dict(fired)}, {effects_seen} effects, {duplicates_absorbed} re-sends absorbed by the key,"
        " 0 applied twice, 0 out of order, 0 answers unrecorded"
    )

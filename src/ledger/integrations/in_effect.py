"""A refused change the marketplace holds already: nothing is left to tell it.

The race it settles: the buyer cancels on Amazon while the seller's own cancellation of the same units waits
in the queue; the import records the buyer's cancellation; then the seller's is sent and Amazon refuses it
(`18041`, "shipped or cancelled already"). The marketplace holds exactly what the ledger holds, so the item is
done, not dead.

When a marketplace refuses a change with one of the codes its `MarketplaceEntry.in_effect_codes` lists for the
action, the dispatcher reads the order from the marketplace (the adapter's `order_state`, the read the
reconciliation uses) and asks `in_effect` whether that state has the change already. Yes: the item succeeds,
recorded as `MarketplaceAcknowledged` whose `reason` says the marketplace had it already and what it answered.
No (or the read fails): dead with the refusal, as before. Only what the read can prove counts:

- cancel: on every line the change names, the marketplace holds at least as many cancelled units as the
  ledger had once this cancellation was made (it and the order's earlier ones; a later one is not asked
  for). A cancellation *request* (eBay's, answered by the marketplace as a dispute) is never in effect here.
- anything else: never (`RemoteState` has no tracking numbers or refunds per change to prove it by).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from ledger.integrations.base import RemoteState
from ledger.integrations.marketplaces import entry_for
from ledger.integrations.outbox import Cancel, Message


class _Cancellation(Protocol):
    @property
    def cancellation_id(self) -> Any: ...

    @property
    def lines(self) -> Iterable[Any]: ...  # LineQuantity: line_id, quantity


def may_be_in_effect(marketplace: str, action: str, code: str) -> bool:
    """Whether the marketplace's refusal `code` of `action` may mean the change is in effect already."""
    return code in entry_for(marketplace).in_effect_codes.get(action, frozenset())


def cancelled_through(cancellations: Iterable[_Cancellation], cancellation_id: str) -> dict[str, int] | None:
    """Units per line the ledger had cancelled once `cancellation_id` was made (it and the ones before it, in
    the order they were made); None when the order has no such cancellation."""
    units: dict[str, int] = {}
    for cancellation in cancellations:
        for line in cancellation.lines:
            units[line.line_id] = units.get(line.line_id, 0) + line.quantity
        if str(cancellation.cancellation_id) == cancellation_id:
            return units
    return None


def in_effect(message: Message, cancellations: Iterable[_Cancellation], remote: RemoteState) -> bool:
    """Whether the marketplace's state `remote` holds the change `message` already (see the module's doc)."""
    if not isinstance(message, Cancel) or message.cancellation_id is None or not message.lines:
        return False
    wanted = cancelled_through(cancellations, message.cancellation_id)
    if wanted is None:
        return False
    return all(_held(remote.cancelled, line.line_id) >= wanted.get(line.line_id, 0) for line in message.lines)


def _held(units: Mapping[str, int], line_id: str) -> int:
    return int(units.get(line_id, 0))

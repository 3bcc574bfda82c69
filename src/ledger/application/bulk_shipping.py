"""Records the shipments of a parsed bulk CSV file (shipments_csv.py), one verdict per row.

Rows of one order and tracking number form one shipment. When the ledger refuses a shipment, the rows to blame
(an unknown line, more units than are left) are rejected and the rest of the shipment is recorded. Each
shipment's idempotency key is made from the seller, the order, the tracking number and the lines, so a file
uploaded again replays ("already recorded") instead of shipping twice, even when an earlier upload shipped
only some rows of a shipment.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final
from uuid import UUID

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.values import Context, LineQuantity, Marketplace, Source
from ledger.application.commands import Ship
from ledger.application.errors import IdempotencyKeyReusedError, OrderNotFoundError
from ledger.application.ledger import Ledger
from ledger.application.queries import OrderDetails
from ledger.application.shipments_csv import (
    ACCEPTED,
    REJECTED,
    BulkReport,
    ParsedFile,
    RowResult,
    ShipmentRow,
)

MAX_SUBSET_ROWS: Final = 8  # shipments with more lines are recognised on a re-upload only when whole


@dataclass
class _Group:
    order_ref: str
    tracking_number: str
    rows: list[ShipmentRow]


def _groups(rows: Iterable[ShipmentRow]) -> list[_Group]:
    groups: dict[tuple[str, str], _Group] = {}
    for row in rows:
        key = (row.order_ref, row.tracking_number)
        groups.setdefault(key, _Group(row.order_ref, row.tracking_number, [])).rows.append(row)
    return list(groups.values())


def idempotency_key(seller: str, order_id: UUID, tracking_number: str, lines: Iterable[LineQuantity]) -> str:
    """The same shipment (seller, order, tracking number, lines) always gets the same key."""
    parts = [seller, str(order_id), tracking_number, *sorted(f"{x.line_id}:{x.quantity}" for x in lines)]
    return "bulk-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def _digest(rows: list[ShipmentRow]) -> str:
    """The request behind the key: the same key with another carrier, class or time is refused."""
    first = rows[0]
    text = "\x1f".join(
        [str(first.carrier), first.shipping_class, first.shipped_at.isoformat() if first.shipped_at else ""]
    )
    return hashlib.sha256(text.encode()).hexdigest()


Progress = Callable[[int], None]


class BulkShipper:
    """Records the shipments of a parsed file for one seller (None: any seller, order ids only)."""

    def __init__(
        self, ledger: Ledger, *, actor: str, seller: str | None, source: Source = Source.BULK
    ) -> None:
        self.ledger = ledger
        self.actor = actor
        self.seller = seller
        self.source = source
        self._orders: dict[str, OrderDetails | None] = {}
        self._ambiguous: set[str] = set()

    def run(self, parsed: ParsedFile, progress: Progress | None = None) -> BulkReport:
        """Every row's verdict, in file order. `progress(n)` is told each time n more rows are done."""
        results: dict[int, RowResult] = {}
        for row in parsed.rows:
            if row.error is not None:
                results[row.row] = _rejected(row, row.error, row.code)
        if progress and results:
            progress(len(results))
        for group in _groups(r for r in parsed.rows if r.error is None):
            for result in self._ship_group(group):
                results[result.row] = result
            if progress:
                progress(len(group.rows))
        return BulkReport([results[r.row] for r in parsed.rows])

    def _order(self, row: ShipmentRow) -> OrderDetails | None:
        ref = row.order_ref
        if ref not in self._orders:
            self._orders[ref] = self._find(row)
        return self._orders[ref]

    def _find(self, row: ShipmentRow) -> OrderDetails | None:
        if row.order_id is not None:
            try:
                return self.ledger.get_order(row.order_id, self.seller)
            except OrderNotFoundError:
                return None
        if self.seller is None:
            return None
        found = []
        for marketplace in Marketplace:
            try:
                found.append(self.ledger.find_order(self.seller, marketplace, row.marketplace_order_id))
            except OrderNotFoundError:
                continue
        if len(found) > 1:
            self._ambiguous.add(row.marketplace_order_id)
        return found[0] if len(found) == 1 else None

    def _ship_group(self, group: _Group) -> list[RowResult]:
        first = group.rows[0]
        order = self._order(first)
        if order is None:
            reason = f"unknown order {group.order_ref!r}"
            if group.order_ref in self._ambiguous:
                reason = f"{group.order_ref!r} names orders on several marketplaces: use the order_id column"
            elif first.order_id is None and self.seller is None:
                reason += ": marketplace order ids need a seller (or use the order_id column)"
            return [_rejected(r, reason, "unknown-order") for r in group.rows]
        results: list[RowResult] = []
        rows = []
        for row in group.rows:
            if (row.carrier, row.carrier_name, row.shipping_class, row.shipped_at) != (
                first.carrier,
                first.carrier_name,
                first.shipping_class,
                first.shipped_at,
            ):
                msg = (
                    f"carrier, shipping_class and shipped_at must match row {first.row} of the same shipment"
                )
                results.append(_rejected(row, msg, "inconsistent-shipment"))
            else:
                rows.append(row)
        earlier = self._shipped_before(order, rows)
        if earlier:
            try:
                results += self._ship(order, earlier)
            except LedgerError as e:
                # Recorded before with other details: those rows' verdict, never the file's.
                results += [_rejected(r, _reason(e), e.code, order) for r in earlier]
            rows = [r for r in rows if r not in earlier]
            if not rows:
                return results
            order = self._order(first) or order
        try:
            return results + self._ship(order, rows)
        except LedgerError as e:
            refusal = e
        # The ledger refused the shipment: blame the rows that cannot ship, and ship the others.
        lines = {line.line_id: line for line in order.lines}
        good = []
        for row in rows:
            line = lines.get(row.line_id)
            if line is None:
                results.append(
                    _rejected(row, f"no line {row.line_id!r} on this order", "unknown-line", order)
                )
            elif row.quantity > line.shippable:
                msg = f"line {row.line_id} has {line.shippable} unit(s) left to ship, not {row.quantity}"
                results.append(_rejected(row, msg, "over-shipment", order))
            else:
                good.append(row)
        if not good or len(good) == len(rows):
            return results + [_rejected(r, _reason(refusal), refusal.code, order) for r in good]
        try:
            return results + self._ship(order, good)
        except LedgerError as e:
            return results + [_rejected(r, _reason(e), e.code, order) for r in good]

    def _shipped_before(self, order: OrderDetails, rows: list[ShipmentRow]) -> list[ShipmentRow]:
        """The largest set of these rows an earlier upload shipped (its key is on the order), if any.

        An earlier upload may have shipped only some rows of this shipment (it rejected the others); those
        rows now look over-shipped, so they are recognised by their key before anything else is tried."""
        recorded = {e.idempotency_key for e in self.ledger.order_history(order.order_id, self.seller)}
        recorded.discard(None)
        if not recorded:
            return []
        sizes = range(len(rows), 0, -1) if len(rows) <= MAX_SUBSET_ROWS else [len(rows)]
        for size in sizes:
            for subset in itertools.combinations(rows, size):
                lines = [LineQuantity(r.line_id, r.quantity) for r in subset]
                if idempotency_key(order.seller, order.order_id, rows[0].tracking_number, lines) in recorded:
                    return list(subset)
        return []

    def _ship(self, order: OrderDetails, rows: list[ShipmentRow]) -> list[RowResult]:
        first = rows[0]
        lines = tuple(LineQuantity(r.line_id, r.quantity) for r in rows)
        assert first.carrier is not None
        key = idempotency_key(order.seller, order.order_id, first.tracking_number, lines)
        ctx = Context(actor=self.actor, source=self.source, idempotency_key=key, request_digest=_digest(rows))
        result = self.ledger.execute(
            Ship(
                ctx=ctx,
                order_id=order.order_id,
                carrier=first.carrier,
                carrier_name=first.carrier_name,
                tracking_number=first.tracking_number,
                shipping_class=first.shipping_class,
                shipped_at=first.shipped_at,
                lines=lines,
                seller=self.seller,
            )
        )
        self._orders.pop(first.order_ref, None)  # it changed: read it again for the next shipment
        shipment_id = result.ids.get("shipment_id")
        reason = "already recorded by an earlier upload" if result.replayed else ""
        return [
            RowResult(
                row=r.row,
                status=ACCEPTED,
                fields=r.fields,
                reason=reason,
                order_id=order.order_id,
                shipment_id=shipment_id,
                version=result.version,
                replayed=result.replayed,
            )
            for r in rows
        ]


def _reason(e: LedgerError) -> str:
    if isinstance(e, IdempotencyKeyReusedError):
        return "already recorded with different details (carrier, shipping_class or shipped_at)"
    return e.message


def _rejected(row: ShipmentRow, reason: str, code: str, order: OrderDetails | None = None) -> RowResult:
    return RowResult(
        row=row.row,
        status=REJECTED,
        fields=row.fields,
        reason=reason,
        code=code,
        order_id=order.order_id if order else None,
    )

"""Settlement reconciliation: a marketplace's report matched against the ledger, and every run kept.

What is matched, per order and kind, within the report's period [start, end):
- a charge: the sum of the report's charge rows of an order (Amazon: `Order` rows' `ItemPrice` amounts; eBay:
  `Order` rows' gross amount) against the value the ledger shipped on that order in the period (the exposure
  read model's shipment values, by `shipped_at`: units times unit price plus the line's tax and shipping share);
- a refund: the sum of the report's refund rows of an order (negated: money paid back) against the refunds the
  ledger recorded on that order that took effect in the period (the refunds read model's totals).
Equal amounts are `matched`; different ones `amount_differs` (both amounts kept); an order the ledger has but
the report lacks is `missing_in_marketplace`, and the reverse `missing_in_ledger`. Arithmetic is Decimal,
exact: nothing is rounded. A report row on an order the ledger keeps in another currency is a bad row.

Runs are not derived from events (they record what a person uploaded), so they live in tables of their own,
`finance_reconciliations` with `finance_reconciliation_items` and `finance_reconciliation_bad_rows`, created on
first use; a rebuild of the projections never touches them.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow, class_row

from ledger.aggregates.errors import InvalidInputError, LedgerError
from ledger.application.errors import IdempotencyKeyReusedError
from ledger.application.ledger import Ledger
from ledger.finance.settlements import CHARGE, PARSERS, REFUND, BadRow, SettlementReport, parse_report
from ledger.projections.exposure import ExposureView
from ledger.projections.refunds import RefundsView, decode_cursor, encode_cursor

MATCHED = "matched"
MISSING_IN_MARKETPLACE = "missing_in_marketplace"
MISSING_IN_LEDGER = "missing_in_ledger"
AMOUNT_DIFFERS = "amount_differs"
OUTCOMES = (MATCHED, MISSING_IN_MARKETPLACE, MISSING_IN_LEDGER, AMOUNT_DIFFERS)
KINDS = (CHARGE, REFUND)
MAX_LIMIT = 200
ZERO = Decimal(0)


class ReconciliationNotFoundError(LedgerError):
    """No reconciliation with this id for this seller (HTTP 404)."""

    code = "reconciliation-not-found"


@dataclass(frozen=True)
class LedgerAmount:
    """What the ledger holds for one order and kind in the period."""

    kind: str
    marketplace_order_id: str
    order_id: UUID
    currency: str
    amount: Decimal


@dataclass(frozen=True)
class ReconciliationItem:
    kind: str
    outcome: str
    marketplace_order_id: str
    order_id: UUID | None
    currency: str
    ledger_amount: Decimal | None
    marketplace_amount: Decimal | None
    report_lines: tuple[int, ...]

    @property
    def difference(self) -> Decimal:
        """Marketplace minus ledger (a missing side counts as zero)."""
        return (self.marketplace_amount or ZERO) - (self.ledger_amount or ZERO)


def match(
    report: SettlementReport, ledger: Iterable[LedgerAmount], orders: dict[str, tuple[UUID, str]]
) -> tuple[list[ReconciliationItem], list[BadRow]]:
    """Items per (kind, order), sorted by kind then marketplace order id, and the rows refused for currency.

    `orders`: marketplace order id -> (order id, currency) of the ledger's orders the report names.
    """
    reported: dict[tuple[str, str], list[Any]] = {}
    bad: list[BadRow] = []
    for line in report.lines:
        known = orders.get(line.marketplace_order_id)
        if known is not None and known[1] != report.currency:
            bad.append(
                BadRow(
                    line.line,
                    f"order {line.marketplace_order_id} is in {known[1]} in the ledger, the report in"
                    f" {report.currency}",
                    "currency",
                )
            )
            continue
        entry = reported.setdefault((line.kind, line.marketplace_order_id), [ZERO, []])
        entry[0] += line.amount
        entry[1].append(line.line)
    held = {(a.kind, a.marketplace_order_id): a for a in ledger}
    items = []
    for key in sorted(set(reported) | set(held)):
        kind, marketplace_order_id = key
        ours, theirs = held.get(key), reported.get(key)
        if ours is None:
            assert theirs is not None
            known = orders.get(marketplace_order_id)
            items.append(
                ReconciliationItem(
                    kind,
                    MISSING_IN_LEDGER,
                    marketplace_order_id,
                    known[0] if known else None,
                    report.currency,
                    None,
                    theirs[0],
                    tuple(theirs[1]),
                )
            )
        elif theirs is None:
            items.append(
                ReconciliationItem(
                    kind,
                    MISSING_IN_MARKETPLACE,
                    marketplace_order_id,
                    ours.order_id,
                    ours.currency,
                    ours.amount,
                    None,
                    (),
                )
            )
        else:
            outcome = MATCHED if ours.amount == theirs[0] else AMOUNT_DIFFERS
            items.append(
                ReconciliationItem(
                    kind,
                    outcome,
                    marketplace_order_id,
                    ours.order_id,
                    ours.currency,
                    ours.amount,
                    theirs[0],
                    tuple(theirs[1]),
                )
            )
    return items, bad


# ------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class Reconciliation:
    """One run: who ran it, on what file, over which period, with what result (counts per outcome)."""

    reconciliation_id: UUID
    seller: str
    marketplace: str
    account_id: UUID | None
    created_at: datetime
    created_by: str
    source: str
    file_name: str
    file_size: int
    file_sha256: str
    format: str
    settlement_id: str | None
    currency: str
    period_start: datetime
    period_end: datetime
    total_amount: Decimal | None
    rows: int
    ignored_rows: int
    bad_rows: int
    matched: int
    missing_in_marketplace: int
    missing_in_ledger: int
    amount_differs: int


RUN_COLUMNS = tuple(f.name for f in fields(Reconciliation))


@dataclass(frozen=True)
class Totals:
    """Per currency and kind, the sums of both sides over the run's items (re-derivable from them)."""

    currency: str
    kind: str
    items: int
    ledger_amount: Decimal
    marketplace_amount: Decimal

    @property
    def difference(self) -> Decimal:
        return self.marketplace_amount - self.ledger_amount


@dataclass(frozen=True)
class ReconciliationDetails:
    run: Reconciliation
    items: tuple[ReconciliationItem, ...]
    bad_rows: tuple[BadRow, ...]
    replayed: bool = False

    @property
    def totals(self) -> list[Totals]:
        return totals_of(self.items)


def totals_of(items: Iterable[ReconciliationItem]) -> list[Totals]:
    sums: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, ZERO, ZERO])
    for item in items:
        entry = sums[(item.currency, item.kind)]
        entry[0] += 1
        entry[1] += item.ledger_amount or ZERO
        entry[2] += item.marketplace_amount or ZERO
    return [Totals(c, k, n, ledger, theirs) for (c, k), (n, ledger, theirs) in sorted(sums.items())]


@dataclass(frozen=True)
class ReconciliationPage:
    items: tuple[Reconciliation, ...]
    next_cursor: str | None


@dataclass(frozen=True)
class Upload:
    """Who reconciles what: the file and the run's parameters."""

    seller: str
    marketplace: str
    data: bytes
    file_name: str
    actor: str
    source: str
    account_id: UUID | None = None
    idempotency_key: str | None = None

    @property
    def digest(self) -> str:
        """The request's fingerprint: the same Idempotency-Key with another request is refused."""
        head = f"{self.marketplace}\x1f{self.account_id or ''}\x1f{self.file_name}\x1f".encode()
        return hashlib.sha256(head + self.data).hexdigest()


_RUN_SELECT = sql.SQL(", ").join(map(sql.Identifier, RUN_COLUMNS))


class Reconciliations:
    """Runs a reconciliation and keeps it; reads runs back, always within one seller."""

    def __init__(self) -> None:
        self.refunds = RefundsView()
        self.exposure = ExposureView()

    def run(self, conn: psycopg.Connection[TupleRow], upload: Upload, now: datetime) -> ReconciliationDetails:
        """Parse, match against the read models, store; the same Idempotency-Key replays the first run."""
        digest = upload.digest
        if upload.idempotency_key is not None:
            replay = self._replay(conn, upload.seller, upload.idempotency_key, digest)
            if replay is not None:
                return replay
        report = parse_report(upload.marketplace, upload.data)
        ledger = self._ledger_amounts(conn, upload, report)
        named = sorted({line.marketplace_order_id for line in report.lines})
        orders = self.exposure.orders_named(conn, upload.seller, upload.marketplace, named)
        items, currency_rows = match(report, ledger, orders)
        bad_rows = tuple(sorted([*report.bad_rows, *currency_rows], key=lambda b: b.line))
        counts = {outcome: sum(1 for i in items if i.outcome == outcome) for outcome in OUTCOMES}
        run = Reconciliation(
            reconciliation_id=uuid4(),
            seller=upload.seller,
            marketplace=upload.marketplace,
            account_id=upload.account_id,
            created_at=now,
            created_by=upload.actor,
            source=upload.source,
            file_name=upload.file_name,
            file_size=len(upload.data),
            file_sha256=hashlib.sha256(upload.data).hexdigest(),
            format=report.format,
            settlement_id=report.settlement_id,
            currency=report.currency,
            period_start=report.period_start,
            period_end=report.period_end,
            total_amount=report.total_amount,
            rows=report.rows,
            ignored_rows=report.ignored_rows,
            bad_rows=len(bad_rows),
            **counts,
        )
        try:
            self._store(conn, run, items, bad_rows, upload.idempotency_key, digest)
        except psycopg.errors.UniqueViolation:  # the same key, at the same moment, from another request
            assert upload.idempotency_key is not None
            replay = self._replay(conn, upload.seller, upload.idempotency_key, digest)
            if replay is None:
                raise
            return replay
        return ReconciliationDetails(run, tuple(items), bad_rows)

    def _ledger_amounts(
        self, conn: psycopg.Connection[TupleRow], upload: Upload, report: SettlementReport
    ) -> list[LedgerAmount]:
        args = (conn, upload.seller, upload.marketplace, report.period_start, report.period_end)
        shipped = self.exposure.shipped_between(*args, account_id=upload.account_id)
        refunded = self.refunds.refunded_between(*args, account_id=upload.account_id)
        return [
            *(LedgerAmount(CHARGE, s.marketplace_order_id, s.order_id, s.currency, s.value) for s in shipped),
            *(
                LedgerAmount(REFUND, r.marketplace_order_id, r.order_id, r.currency, r.total)
                for r in refunded
            ),
        ]

    def _replay(
        self, conn: psycopg.Connection[TupleRow], seller: str, key: str, digest: str
    ) -> ReconciliationDetails | None:
        row = conn.execute(
            "SELECT reconciliation_id, request_digest FROM finance_reconciliations"
            " WHERE seller = %s AND idempotency_key = %s",
            (seller, key),
        ).fetchone()
        if row is None:
            return None
        if row[1] != digest:
            raise IdempotencyKeyReusedError(
                f"idempotency key {key!r} was used for a different upload", "Idempotency-Key"
            )
        details = self.get(conn, seller, row[0])
        return replace(details, replayed=True)

    def _store(
        self,
        conn: psycopg.Connection[TupleRow],
        run: Reconciliation,
        items: list[ReconciliationItem],
        bad_rows: tuple[BadRow, ...],
        idempotency_key: str | None,
        digest: str,
    ) -> None:
        columns = (*RUN_COLUMNS, "idempotency_key", "request_digest")
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                sql.SQL("INSERT INTO finance_reconciliations ({}) VALUES ({})").format(
                    sql.SQL(", ").join(map(sql.Identifier, columns)),
                    sql.SQL(", ").join(sql.Placeholder() * len(columns)),
                ),
                (*(getattr(run, c) for c in RUN_COLUMNS), idempotency_key, digest),
            )
            cur.executemany(
                "INSERT INTO finance_reconciliation_items (reconciliation_id, seq, kind, outcome,"
                " marketplace_order_id, order_id, currency, ledger_amount, marketplace_amount, report_lines)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        run.reconciliation_id,
                        seq,
                        i.kind,
                        i.outcome,
                        i.marketplace_order_id,
                        i.order_id,
                        i.currency,
                        i.ledger_amount,
                        i.marketplace_amount,
                        list(i.report_lines),
                    )
                    for seq, i in enumerate(items)
                ],
            )
            cur.executemany(
                "INSERT INTO finance_reconciliation_bad_rows (reconciliation_id, seq, line, message, field)"
                " VALUES (%s, %s, %s, %s, %s)",
                [(run.reconciliation_id, seq, b.line, b.message, b.field) for seq, b in enumerate(bad_rows)],
            )

    def get(
        self, conn: psycopg.Connection[TupleRow], seller: str, reconciliation_id: UUID
    ) -> ReconciliationDetails:
        query = sql.SQL(
            "SELECT {} FROM finance_reconciliations WHERE reconciliation_id = %s AND seller = %s"
        ).format(_RUN_SELECT)
        with conn.cursor(row_factory=class_row(Reconciliation)) as cur:
            run = cur.execute(query, (reconciliation_id, seller)).fetchone()
        if run is None:
            raise ReconciliationNotFoundError(f"no reconciliation {reconciliation_id}")
        items = [
            ReconciliationItem(kind, outcome, moid, order_id, currency, ledger, theirs, tuple(lines))
            for kind, outcome, moid, order_id, currency, ledger, theirs, lines in conn.execute(
                "SELECT kind, outcome, marketplace_order_id, order_id, currency, ledger_amount,"
                " marketplace_amount, report_lines FROM finance_reconciliation_items"
                " WHERE reconciliation_id = %s ORDER BY seq",
                (reconciliation_id,),
            ).fetchall()
        ]
        bad = [
            BadRow(line, message, field)
            for line, message, field in conn.execute(
                "SELECT line, message, field FROM finance_reconciliation_bad_rows"
                " WHERE reconciliation_id = %s ORDER BY seq",
                (reconciliation_id,),
            ).fetchall()
        ]
        return ReconciliationDetails(run, tuple(items), tuple(bad))

    def list(
        self,
        conn: psycopg.Connection[TupleRow],
        seller: str,
        marketplace: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ReconciliationPage:
        """The seller's runs, newest first; `next_cursor` continues after the page's last run."""
        where: list[sql.Composable] = [sql.SQL("seller = %s")]
        params: list[Any] = [seller]
        if marketplace is not None:
            where.append(sql.SQL("marketplace = %s"))
            params.append(marketplace)
        if cursor is not None:
            where.append(sql.SQL("(created_at, reconciliation_id) < (%s, %s)"))
            params += decode_cursor(cursor)
        query = sql.SQL(
            "SELECT {} FROM finance_reconciliations WHERE {}"
            " ORDER BY created_at DESC, reconciliation_id DESC LIMIT %s"
        ).format(_RUN_SELECT, sql.SQL(" AND ").join(where))
        with conn.cursor(row_factory=class_row(Reconciliation)) as cur:
            runs = cur.execute(query, (*params, min(max(limit, 1), MAX_LIMIT) + 1)).fetchall()
        page, more = runs[:limit], len(runs) > limit
        next_cursor = encode_cursor(page[-1].created_at, page[-1].reconciliation_id) if more else None
        return ReconciliationPage(tuple(page), next_cursor)


def check_account(ledger: Ledger, seller: str, marketplace: str, account_id: UUID | None) -> None:
    """The account must be the seller's (404 otherwise) and on the report's marketplace (422)."""
    if marketplace not in PARSERS:
        known = ", ".join(sorted(PARSERS))
        raise InvalidInputError(
            f"no settlement report format is known for {marketplace}: {known}", "marketplace"
        )
    if account_id is None:
        return
    account = ledger.get_account(account_id, seller)
    if account.marketplace != marketplace:
        raise InvalidInputError(
            f"account {account_id} is on {account.marketplace}, the report on {marketplace}", "account_id"
        )

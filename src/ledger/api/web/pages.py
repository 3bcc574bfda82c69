"""The pages that read: sign-in, All Sales (tabs with counts, filters, search, keyset pages) and one order.

Every handler runs in a worker thread (the Ledger and the read pool block); none is in the OpenAPI schema.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Annotated, Any
from urllib.parse import urlencode
from uuid import UUID

import psycopg
from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.times import InvalidTimeError, after_day, day_start, parse_day
from ledger.aggregates.values import CancelReason, Carrier, DisputeOutcome, Marketplace, RefundReason
from ledger.api.auth import CHANGE_ORDERS, READ_HISTORY, READ_ORDERS
from ledger.api.web import present
from ledger.api.web.session import (
    COOKIE,
    close_session,
    foreign_origin,
    ledger_of,
    may,
    open_session,
    pool_of,
    refuse_foreign,
    render,
    signed_in,
    to_signin,
)
from ledger.application.queries import KeyDetails
from ledger.application.shipments_csv import TEMPLATE
from ledger.audit.as_of import to_csv
from ledger.integrations.outbox import DEAD, FAILED, OutboundItem, OutboundView
from ledger.projections.all_sales_view import (
    DEFAULT_SORT,
    MAX_LIMIT,
    AllSalesView,
    InvalidCursorError,
    InvalidFilterError,
    OrderSummary,
    SalesFilter,
    check_sort,
)

VIEW = AllSalesView()
OUTBOX = OutboundView()
PAGE_SIZE = 50
TABS = (
    ("unshipped", "Unshipped"),
    ("partially_shipped", "Partially shipped"),
    ("shipped", "Shipped"),
    ("canceled", "Canceled"),
    ("third_party_managed", "Third Party Managed"),
    ("disputes_open", "Disputes open"),
    ("buyer_cancel_requested", "Buyer cancel requests"),
    ("attention", "Needs attention"),
)
# Tabs that are a flag of the order rather than its status: each is a filter of its own.
FLAG_TABS = ("buyer_cancel_requested", "attention")
Form = Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)]
FILTERS = ("tab", "account", "marketplace", "from", "to", "sku", "q", "sort")
SORT_NAMES = (
    ("-purchased_at", "Newest purchase first"),
    ("purchased_at", "Oldest purchase first"),
    ("-updated_at", "Recently changed first"),
    ("updated_at", "Least recently changed first"),
    ("-total", "Highest total first"),
    ("total", "Lowest total first"),
)


def forbidden(key: KeyDetails, what: str) -> Response[str]:
    return render(
        "message.html", 403, key=key, title="Not allowed", message=f"The {key.role} role may not {what}."
    )


# -------------------------------------------------------------------------------------------- sign-in


@get("/signin", include_in_schema=False, sync_to_thread=False)
def signin_page() -> Response[str]:
    return render("signin.html")


@post("/signin", include_in_schema=False, sync_to_thread=True)
def signin(request: Request[Any, Any, Any], data: Form) -> Response[Any]:
    """Check the key, then open a session; a wrong key is said in words, with status 401."""
    if foreign_origin(request):
        return render("signin.html", 403, error="Sign-in must come from this site's own page.")
    secret = str(data.get("api_key", "")).strip()
    key = ledger_of(request).authenticate(secret) if secret else None
    if key is None:
        return render("signin.html", 401, error="That API key is unknown or revoked.")
    return Redirect("/", status_code=303, cookies=[open_session(request, key)])


@post("/signout", include_in_schema=False, sync_to_thread=True)
def signout(request: Request[Any, Any, Any]) -> Response[Any]:
    """End the session (its row is deleted) and forget the cookie; only this site's own page may ask."""
    if (refusal := refuse_foreign(request, None)) is not None:
        return refusal
    close_session(request)
    response = Redirect("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@get("/shipments/template.csv", include_in_schema=False, sync_to_thread=False)
def template_csv() -> Response[str]:
    """The bulk shipment columns with two example rows (it holds no data, so no key is needed)."""
    return Response(
        TEMPLATE,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="shipments-template.csv"'},
    )


# ------------------------------------------------------------------------------------------ All Sales


@dataclass(frozen=True)
class Query:
    """The page's filters as the URL carries them (text, so the form shows exactly what was typed)."""

    values: dict[str, str]

    def url(self, path: str = "/", **changes: str | None) -> str:
        merged = {**self.values, **changes}
        return f"{path}?" + urlencode({k: v for k, v in merged.items() if v})


@dataclass(frozen=True)
class Row:
    """One order of the list with what the page adds to the view's summary."""

    order: OrderSummary
    items: str  # "MUG-1 x 2, CUP-1 x 1" (with a multiplication sign)
    unshipped: str  # "line:units,..." still to ship, which a bulk shipment of this row ships
    account: str
    age: str
    due: str  # how long until the ship-by date, or how long past it ("2 days"; "" without one)
    overdue: bool  # past the ship-by date with units still to ship


def _age(purchased_at: datetime, now: datetime) -> str:
    return _span((now - purchased_at).total_seconds())


def _span(seconds: float) -> str:
    hours = int(seconds // 3600)
    if hours < 1:
        return "under an hour"
    if hours < 48:
        return f"{hours} hour{'s' if hours > 1 else ''}"
    return f"{hours // 24} days"


def due(ship_by: datetime | None, to_ship: bool, now: datetime) -> tuple[str, bool]:
    """(how long, overdue) of an order's ship-by date: ("2 days", True) while units are still to ship two days
    after it, ("5 hours", False) five hours before it, ("", False) when the marketplace gave none or nothing is
    left to ship."""
    if ship_by is None or not to_ship:
        return "", False
    if ship_by <= now:
        return _span((now - ship_by).total_seconds()), True
    return _span((ship_by - now).total_seconds()), False


def _rows(
    conn: psycopg.Connection[Any], seller: str, items: list[OrderSummary], accounts: dict[UUID, str]
) -> list[Row]:
    now = datetime.now(UTC)
    lines_of = VIEW.lines_of(conn, seller, [o.order_id for o in items])  # the page's lines in one query
    rows = []
    for o in items:
        lines = lines_of[o.order_id]
        unshipped = ",".join(
            f"{line.line_id}:{left}"
            for line in lines
            if (left := line.quantity - line.shipped - line.cancelled) > 0
        )
        due_words, overdue = due(o.ship_by, o.open and bool(unshipped), now)
        rows.append(
            Row(
                order=o,
                items=", ".join(f"{line.sku} {present.TIMES} {line.quantity}" for line in lines),
                unshipped=unshipped,
                account=accounts.get(o.account_id, ""),
                age=_age(o.purchased_at, now),
                due=due_words,
                overdue=overdue,
            )
        )
    return rows


def _day(text: str, name: str) -> date | None:
    if not text:
        return None
    try:
        return parse_day(text, name)
    except InvalidTimeError as e:
        raise InvalidFilterError(e.message) from None


def _filters(values: dict[str, str]) -> SalesFilter:
    tab = values.get("tab", "")
    account: UUID | None = None
    if values.get("account"):
        try:
            account = UUID(values["account"])
        except ValueError:
            raise InvalidFilterError("unknown account") from None
    from_day, to_day = _day(values.get("from", ""), "from"), _day(values.get("to", ""), "to")
    return SalesFilter(
        account_id=account,
        marketplace=values.get("marketplace") or None,
        status=tab if tab and tab != "disputes_open" and tab not in FLAG_TABS else None,
        dispute="open" if tab == "disputes_open" else None,
        buyer_cancel_requested=True if tab == "buyer_cancel_requested" else None,
        attention=True if tab == "attention" else None,
        sku=values.get("sku") or None,
        q=values.get("q") or None,
        purchased_from=day_start(from_day) if from_day else None,
        purchased_to=after_day(to_day) if to_day else None,  # the page's "to" day is inclusive
    )


@get("/", include_in_schema=False, sync_to_thread=True)
def all_sales(request: Request[Any, Any, Any]) -> Response[Any]:
    key = signed_in(request)
    if key is None:
        return to_signin()
    if not may(key, READ_ORDERS):
        return forbidden(key, "read orders")
    values = _values(request)
    cursor = str(request.query_params.get("cursor", "")) or None
    query = Query(values)
    accounts = ledger_of(request).list_accounts(key.seller)
    error, status = "", 200
    rows: list[Row] = []
    next_cursor = None
    counts: dict[str, int] = {}
    results = 0
    try:
        filters = _filters(values)
        with pool_of(request).connection() as conn:
            # The tabs count what the other active filters let through (the tab itself aside).
            counts = VIEW.counts(
                conn,
                key.seller,
                replace(filters, status=None, dispute=None, buyer_cancel_requested=None, attention=None),
            )
            results = VIEW.count(conn, key.seller, filters)
            page = VIEW.list_orders(
                conn,
                key.seller,
                filters,
                limit=PAGE_SIZE,
                cursor=cursor,
                sort=check_sort(values["sort"] or DEFAULT_SORT),
            )
            names = {a.account_id: f"{present.marketplace_name(a.marketplace)} · {a.name}" for a in accounts}
            rows = _rows(conn, key.seller, page.items, names)
        next_cursor = page.next_cursor
    except (InvalidFilterError, InvalidCursorError) as e:
        error, status = str(e), 400
    except psycopg.errors.UndefinedTable:
        error, status = "The order list is not built yet: a projection worker (ledger serve) builds it.", 503
    return render(
        "orders.html",
        status,
        key=key,
        query=query,
        values=values,
        tabs=TABS,
        counts=counts,
        all_count=counts.get("all", 0),
        rows=rows,
        results=results,
        sorts=SORT_NAMES,
        export_url=query.url("/orders.csv"),
        carriers=[(c.value, present.carrier_name(c.value)) for c in Carrier],
        cancel_reasons=[r.value for r in CancelReason],
        token=uuid.uuid4().hex,
        next_url=query.url(cursor=next_cursor) if next_cursor else None,
        first_url=query.url() if cursor else None,
        accounts=accounts,
        marketplaces=[m.value for m in Marketplace],
        error=error,
        can_ship=may(key, CHANGE_ORDERS),
    )


def _values(request: Request[Any, Any, Any]) -> dict[str, str]:
    return {name: str(request.query_params.get(name, "")).strip()[:320] for name in FILTERS}


@get("/orders.csv", include_in_schema=False, sync_to_thread=True)
def export_csv(request: Request[Any, Any, Any]) -> Response[Any]:
    """Every order of the current filter (all pages) as CSV, the columns of the API's order summary."""
    key = signed_in(request)
    if key is None:
        return to_signin()
    if not may(key, READ_ORDERS):
        return forbidden(key, "read orders")
    summaries: list[OrderSummary] = []
    try:
        values = _values(request)
        filters = _filters(values)
        sort = check_sort(values["sort"] or DEFAULT_SORT)
        with pool_of(request).connection() as conn:
            cursor: str | None = None
            while True:
                page = VIEW.list_orders(conn, key.seller, filters, limit=MAX_LIMIT, cursor=cursor, sort=sort)
                summaries += page.items
                if (cursor := page.next_cursor) is None:
                    break
    except InvalidFilterError as e:
        return render("message.html", 400, key=key, title="Cannot export", message=str(e))
    return Response(
        to_csv(summaries),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="orders.csv"',
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


# ---------------------------------------------------------------------------------------------- order


def order_page(
    request: Request[Any, Any, Any],
    key: KeyDetails,
    order_id: UUID,
    *,
    status: int = 200,
    error: str = "",
    error_form: str = "",
    notice: str = "",
) -> Response[str]:
    """The order page (blocking). A refusal comes back here, said in words next to the form that caused it."""
    ledger = ledger_of(request)
    order = ledger.get_order(order_id, key.seller)
    account = ledger.get_account(order.account_id, key.seller)
    history = ledger.order_history(order_id, key.seller) if may(key, READ_HISTORY) else None
    actions = order.actions
    stuck = _stuck(request, key, order_id) if may(key, CHANGE_ORDERS) else []
    if error_form == "sync" and not stuck:
        error_form = ""
    if error_form and error_form != "sync" and not getattr(actions, error_form, False):
        error_form = ""  # that form is no longer offered: say it above the forms
    to_ship = order.open and order.units > order.shipped_units + order.cancelled_units
    due_words, overdue = due(order.ship_by, to_ship, datetime.now(UTC))
    return render(
        "order.html",
        status,
        key=key,
        order=order,
        account=account,
        due=due_words,
        overdue=overdue,
        timeline=present.timeline(history, order.marketplace, order.currency)
        if history is not None
        else None,
        shipments=present.shipment_rows(order.shipments, order.sync, order.marketplace),
        outcomes=[o.value for o in DisputeOutcome],
        stuck=stuck,
        actions=actions if may(key, CHANGE_ORDERS) else None,
        carriers=[(c.value, present.carrier_name(c.value)) for c in Carrier],
        cancel_reasons=[r.value for r in CancelReason],
        refund_reasons=[r.value for r in RefundReason],
        tokens={
            form: uuid.uuid4().hex
            for form in ("ship", "cancel", "refund", "close_dispute", "restock", "resolve", "void", "accept")
        },
        error=error,
        error_form=error_form,
        notice=notice,
    )


def _stuck(request: Request[Any, Any, Any], key: KeyDetails, order_id: UUID) -> list[OutboundItem]:
    """The order's changes the marketplace refused for good (dead) or for now (failed), for an operator."""
    try:
        with pool_of(request).connection() as conn:
            return [
                item
                for state in (DEAD, FAILED)
                for item in OUTBOX.list_items(conn, key.seller, state=state, order_id=order_id)
            ]
    except psycopg.errors.UndefinedTable:  # no outbound queue in this database (no sync worker ever ran)
        return []


NOTICES = {
    "shipped": "Shipment recorded.",
    "cancelled": "Cancellation recorded.",
    "dispute": "Cancellation requested: a dispute is open until the buyer or eBay answers.",
    "refunded": "Refund recorded.",
    "dispute_closed": "Dispute closed.",
    "restocked": "Restock recorded.",
    "voided": "Shipment voided: its units may ship again.",
    "retried": "The change goes to the marketplace again.",
    "resolved": "Marked as resolved by hand.",
}


@get("/orders/{order_id:uuid}", include_in_schema=False, sync_to_thread=True)
def order_detail(request: Request[Any, Any, Any], order_id: FromPath[UUID]) -> Response[Any]:
    key = signed_in(request)
    if key is None:
        return to_signin()
    if not may(key, READ_ORDERS):
        return forbidden(key, "read orders")
    notice = NOTICES.get(str(request.query_params.get("done", "")), "")
    try:
        return order_page(request, key, order_id, notice=notice)
    except LedgerError:
        return render("message.html", 404, key=key, title="No such order", message="There is no such order.")

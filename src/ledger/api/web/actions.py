"""The page's commands: Ship, Cancel Sale, Refund, Close dispute and Restock from the order page, and the bulk
shipment upload.

Each form posts here; on success the browser is sent back to the order (POST, redirect, GET), on a refusal the
order page is shown again with the ledger's reason next to the form. Forms carry the order's version (a stale
form is refused, not applied to an order that moved on) and a one-time token (a double submit acts once).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

import anyio.to_thread
from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath
from litestar.response import Redirect

from ledger.aggregates.errors import InvalidAmountError, InvalidInputError, InvalidQuantityError, LedgerError
from ledger.aggregates.values import (
    CancelReason,
    Carrier,
    DisputeOutcome,
    LineQuantity,
    RefundReason,
    RefundRequestLine,
    Source,
    parse_amount,
    parse_quantity,
)
from ledger.api.auth import CHANGE_ORDERS, actor_of
from ledger.api.routes.sync import resolve_dead_item
from ledger.api.web.pages import OUTBOX, Form, forbidden, order_page
from ledger.api.web.session import (
    ledger_of,
    may,
    pool_of,
    refuse_foreign,
    render,
    signed_in,
    to_signin,
    web_context,
)
from ledger.application.bulk_shipping import BulkShipper
from ledger.application.commands import (
    Cancel,
    CloseDispute,
    Refund,
    Restock,
    Ship,
    VoidShipment,
)
from ledger.application.errors import VersionMismatchError
from ledger.application.ledger import Ledger
from ledger.application.queries import KeyDetails
from ledger.application.shipments_csv import (
    ACCEPTED,
    REJECTED,
    BulkReport,
    NotCsvError,
    ParsedFile,
    RowResult,
    ShipmentRow,
    failed_rows_csv,
    parse,
)

MAX_UPLOAD = 4 * 1024 * 1024
CARRIERS = frozenset(c.value for c in Carrier)
REASONS = frozenset(r.value for r in CancelReason)


class FormError(InvalidInputError):
    """A form field the page itself cannot read (a quantity that is not a number, no line chosen)."""

    code = "invalid-form"


def _quantity(text: str, name: str) -> int:
    try:
        return parse_quantity(text.strip() or "0", name)
    except InvalidQuantityError:
        raise FormError(f"{name}: {text!r} is not a whole number", name) from None


def _amount(text: str, name: str) -> Decimal | None:
    """An amount as the API reads one (values.parse_amount); the form's surrounding spaces are ignored."""
    if not text.strip():
        return None
    try:
        value = parse_amount(text.strip(), name)
    except InvalidAmountError:
        raise FormError(f"{name}: {text!r} is not an amount (digits and a '.', e.g. 12.50)", name) from None
    if value < 0:
        raise FormError(f"{name}: an amount cannot be negative", name)
    return value


def _lines(data: dict[str, Any]) -> tuple[LineQuantity, ...]:
    lines = tuple(
        LineQuantity(str(name)[4:], _quantity(str(value), f"quantity of line {str(name)[4:]}"))
        for name, value in data.items()
        if str(name).startswith("qty:")
    )
    chosen = tuple(line for line in lines if line.quantity > 0)
    if not chosen:
        raise FormError("choose at least one unit", "lines")
    return chosen


def _version(data: dict[str, Any]) -> int | None:
    try:
        return int(data.get("version", ""))
    except ValueError:
        return None


def _explain(e: LedgerError) -> str:
    if isinstance(e, VersionMismatchError):
        return (
            "The order changed since this page was opened (someone else acted on it). Check it and try again."
        )
    return e.message


def _order_changer(request: Request[Any, Any, Any]) -> KeyDetails | Response[Any]:
    """The signed-in key of a form that changes an order, or the page refusing it (sign in, a form posted
    from elsewhere, a role that may not change orders)."""
    key = signed_in(request)
    if key is None:
        return to_signin()
    if (refusal := refuse_foreign(request, key)) is not None:
        return refusal
    if not may(key, CHANGE_ORDERS):
        return forbidden(key, "change orders")
    return key


def _act(
    request: Request[Any, Any, Any],
    order_id: UUID,
    form: str,
    data: dict[str, Any],
    target: UUID | None = None,
) -> Response[Any]:
    """Run one order command from a form (blocking)."""
    key = _order_changer(request)
    if isinstance(key, Response):
        return key
    ledger = ledger_of(request)
    ctx = web_context(key, str(data.get("token", "")) or None, data)
    version = _version(data)
    try:
        if form == "ship":
            ledger.execute(
                Ship(
                    ctx=ctx,
                    order_id=order_id,
                    carrier=Carrier(str(data.get("carrier", ""))),
                    carrier_name=str(data.get("carrier_name", "")).strip()[:100],
                    tracking_number=str(data.get("tracking_number", "")),
                    shipping_class=str(data.get("shipping_class", "")).strip()[:100],
                    lines=_lines(data),
                    expected_version=version,
                    seller=key.seller,
                )
            )
            done = "shipped"
        elif form == "cancel":
            reason = str(data.get("reason", ""))
            if not reason:
                raise FormError("a cancellation needs a reason", "reason")
            result = ledger.execute(
                Cancel(
                    ctx=ctx,
                    order_id=order_id,
                    reason=CancelReason(reason),
                    lines=_lines(data),
                    restock_in_ledger=data.get("restock_in_ledger") == "on",
                    expected_version=version,
                    seller=key.seller,
                )
            )
            done = "dispute" if "DisputeOpened" in result.events else "cancelled"
        elif form == "void":
            assert target is not None
            reason = str(data.get("reason", "")).strip()[:500]
            if not reason:
                raise FormError("say why the shipment is voided", "reason")
            ledger.execute(
                VoidShipment(
                    ctx=ctx,
                    order_id=order_id,
                    shipment_id=target,
                    reason=reason,
                    expected_version=version,
                    seller=key.seller,
                )
            )
            done = "voided"
        elif form == "close_dispute":
            assert target is not None
            ledger.execute(
                CloseDispute(
                    ctx=ctx,
                    order_id=order_id,
                    dispute_id=target,
                    outcome=DisputeOutcome(str(data.get("outcome", ""))),
                    expected_version=version,
                    seller=key.seller,
                )
            )
            done = "dispute_closed"
        elif form == "restock":
            ledger.execute(
                Restock(
                    ctx=ctx,
                    order_id=order_id,
                    lines=_lines(data),
                    expected_version=version,
                    seller=key.seller,
                )
            )
            done = "restocked"
        else:
            reason = str(data.get("reason", ""))
            if not reason:
                raise FormError("a refund needs a reason", "reason")
            ledger.execute(
                Refund(
                    ctx=ctx,
                    order_id=order_id,
                    reason=RefundReason(reason),
                    lines=_refund_lines(data),
                    shipping_amount=_amount(str(data.get("shipping_amount", "")), "shipping amount")
                    or Decimal(0),
                    tax_amount=_amount(str(data.get("tax_amount", "")), "tax amount") or Decimal(0),
                    expected_version=version,
                    seller=key.seller,
                )
            )
            done = "refunded"
    except ValueError:  # a carrier or reason the form never offers
        return order_page(
            request, key, order_id, status=422, error="Choose a value from the list.", error_form=form
        )
    except LedgerError as e:
        status = (
            412 if isinstance(e, VersionMismatchError) else 422 if isinstance(e, InvalidInputError) else 409
        )
        try:
            return order_page(request, key, order_id, status=status, error=_explain(e), error_form=form)
        except LedgerError:
            return render(
                "message.html", 404, key=key, title="No such order", message="There is no such order."
            )
    return Redirect(f"/orders/{order_id}?done={done}", status_code=303)


def _refund_lines(data: dict[str, Any]) -> tuple[RefundRequestLine, ...] | None:
    lines = []
    for name, value in data.items():
        if not str(name).startswith("qty:"):
            continue
        line_id = str(name)[4:]
        quantity = _quantity(str(value), f"quantity of line {line_id}")
        amount = _amount(str(data.get(f"amount:{line_id}", "")), f"amount of line {line_id}")
        if quantity or amount:
            lines.append(RefundRequestLine(line_id, quantity, amount))
    if not lines and not any(_amount(str(data.get(n, "")), n) for n in ("shipping_amount", "tax_amount")):
        raise FormError("choose at least one unit or amount to refund", "lines")
    return tuple(lines) or None  # None: only the order-level shipping or tax amounts, as the API's command


@post("/orders/{order_id:uuid}/ship", include_in_schema=False, sync_to_thread=True)
def ship_form(request: Request[Any, Any, Any], order_id: FromPath[UUID], data: Form) -> Response[Any]:
    return _act(request, order_id, "ship", data)


@post("/orders/{order_id:uuid}/cancel", include_in_schema=False, sync_to_thread=True)
def cancel_form(request: Request[Any, Any, Any], order_id: FromPath[UUID], data: Form) -> Response[Any]:
    return _act(request, order_id, "cancel", data)


@post("/orders/{order_id:uuid}/refund", include_in_schema=False, sync_to_thread=True)
def refund_form(request: Request[Any, Any, Any], order_id: FromPath[UUID], data: Form) -> Response[Any]:
    return _act(request, order_id, "refund", data)


@post(
    "/orders/{order_id:uuid}/disputes/{dispute_id:uuid}/close", include_in_schema=False, sync_to_thread=True
)
def close_dispute_form(
    request: Request[Any, Any, Any], order_id: FromPath[UUID], dispute_id: FromPath[UUID], data: Form
) -> Response[Any]:
    return _act(request, order_id, "close_dispute", data, dispute_id)


@post("/orders/{order_id:uuid}/sync/{item_id:uuid}", include_in_schema=False, sync_to_thread=True)
def sync_item_form(
    request: Request[Any, Any, Any], order_id: FromPath[UUID], item_id: FromPath[UUID], data: Form
) -> Response[Any]:
    """Retry a dead or failed change of the order, or resolve a dead one by hand saying how (as the API's
    /v1/sync/outbound/{id}/retry and /resolve do)."""
    key = _order_changer(request)
    if isinstance(key, Response):
        return key
    pool = pool_of(request)
    try:
        with pool.connection() as conn:
            item = OUTBOX.get_item(conn, key.seller, item_id)
        if item is None or item.order_id != order_id:
            raise FormError("that change is not waiting on this order", "item")
        if data.get("do") == "resolve":
            reason = str(data.get("reason", "")).strip()[:1000]
            if not reason:
                raise FormError("say how the marketplace was told, or why it need not be", "reason")
            ctx = web_context(key, str(data.get("token", "")) or None, data)
            resolve_dead_item(ledger_of(request), pool, key.seller, item, reason, ctx)
            done = "resolved"
        else:
            with pool.connection() as conn, conn.transaction():
                OUTBOX.retry(conn, key.seller, item_id)
            done = "retried"
    except LedgerError as e:
        status = 422 if isinstance(e, InvalidInputError) else 409
        return order_page(request, key, order_id, status=status, error=_explain(e), error_form="sync")
    return Redirect(f"/orders/{order_id}?done={done}", status_code=303)


@post(
    "/orders/{order_id:uuid}/shipments/{shipment_id:uuid}/void", include_in_schema=False, sync_to_thread=True
)
def void_form(
    request: Request[Any, Any, Any], order_id: FromPath[UUID], shipment_id: FromPath[UUID], data: Form
) -> Response[Any]:
    return _act(request, order_id, "void", data, shipment_id)


@post("/orders/{order_id:uuid}/restock", include_in_schema=False, sync_to_thread=True)
def restock_form(request: Request[Any, Any, Any], order_id: FromPath[UUID], data: Form) -> Response[Any]:
    return _act(request, order_id, "restock", data)


# ---------------------------------------------------------------------------------- All Sales bulk actions


def _listed(data: dict[str, Any], name: str) -> list[str]:
    value = data.get(name, [])
    return [str(v) for v in (value if isinstance(value, list) else [value]) if str(v)]


def _ship_rows(data: dict[str, Any], chosen: list[str]) -> ParsedFile:
    """The selected orders as the rows of a bulk shipment file: every unit the list showed unshipped, with the
    row's tracking number (so a double submit names the same shipment, and the recorder replays it)."""
    rows: list[ShipmentRow] = []
    carrier = str(data.get("carrier", ""))
    carrier_name = str(data.get("carrier_name", "")).strip()[:100]
    for ref in chosen:
        tracking = str(data.get(f"tracking:{ref}", "")).strip()
        units = [u.rpartition(":") for u in str(data.get(f"lines:{ref}", "")).split(",") if u]
        fields = {"order_id": ref, "marketplace_order_id": str(data.get(f"moid:{ref}", ""))}
        fields |= {"carrier": carrier, "carrier_name": carrier_name, "tracking_number": tracking}
        first = len(rows) + 1
        try:
            order_id = UUID(ref)
        except ValueError:
            rows.append(ShipmentRow(first, fields, error="not an order of this list", code="unknown-order"))
            continue
        error = None
        if not units:
            error = "nothing left to ship"
        elif not tracking:
            error = "a tracking number is needed"
        elif carrier not in CARRIERS:
            error = "choose a carrier"
        if error:
            rows.append(ShipmentRow(first, fields, order_id=order_id, error=error, code="invalid-row"))
            continue
        for line_id, _, quantity in units:
            rows.append(
                ShipmentRow(
                    len(rows) + 1,
                    {**fields, "line_id": line_id, "quantity": quantity},
                    order_id=order_id,
                    line_id=line_id,
                    quantity=_quantity(quantity, "quantity"),
                    carrier=Carrier(carrier),
                    carrier_name=carrier_name,
                    tracking_number=tracking,
                )
            )
    return ParsedFile(("order_id", "line_id", "quantity", "carrier", "carrier_name", "tracking_number"), rows)


def _cancel_all(ledger: Ledger, key: KeyDetails, data: dict[str, Any], chosen: list[str]) -> BulkReport:
    """Cancel every unshipped unit of each selected order with one reason; each order's own verdict."""
    report = BulkReport()
    reason = str(data.get("reason", ""))
    token = str(data.get("token", ""))
    for row, ref in enumerate(chosen, start=1):
        fields = {"order_id": ref, "marketplace_order_id": str(data.get(f"moid:{ref}", ""))}
        try:
            order_id = UUID(ref)
            if reason not in REASONS:
                raise FormError("choose a reason for the cancellation", "reason")
            ctx = web_context(key, f"{token}-{ref}" if token else None, {"reason": reason, "order": ref})
            result = ledger.execute(
                Cancel(ctx=ctx, order_id=order_id, reason=CancelReason(reason), seller=key.seller)
            )
        except LedgerError as e:
            report.rows.append(RowResult(row, REJECTED, fields, e.message, e.code))
        except ValueError:
            report.rows.append(RowResult(row, REJECTED, fields, "not an order of this list", "unknown-order"))
        else:
            said = "a cancellation dispute is open" if "DisputeOpened" in result.events else "cancelled"
            report.rows.append(
                RowResult(row, ACCEPTED, fields, said, order_id=order_id, replayed=result.replayed)
            )
    return report


@post("/orders/bulk", include_in_schema=False, sync_to_thread=True)
def bulk_orders(request: Request[Any, Any, Any], data: Form) -> Response[Any]:
    """Ship (a tracking number per row) or cancel (one reason) the orders ticked on All Sales; the report says
    each row's verdict, as the CSV upload's does, and a rejected row never blocks the others."""
    key, refusal = _bulk_key(request)
    if refusal is not None:
        return refusal
    assert key is not None
    if (refusal := refuse_foreign(request, key)) is not None:
        return refusal
    chosen = _listed(data, "order")
    if not chosen:
        return render("bulk.html", 422, key=key, error="Tick at least one order on All Sales.")
    ledger = ledger_of(request)
    if data.get("action") == "cancel":
        report = _cancel_all(ledger, key, data, chosen)
    else:
        shipper = BulkShipper(ledger, actor=actor_of(key), seller=key.seller, source=Source.WEB)
        report = shipper.run(_ship_rows(data, chosen))
    return render("bulk.html", key=key, report=report, done=data.get("action") or "ship")


# ------------------------------------------------------------------------------------------ bulk upload


def _bulk_key(request: Request[Any, Any, Any]) -> tuple[KeyDetails | None, Response[Any] | None]:
    key = signed_in(request)
    if key is None:
        return None, to_signin()
    if not may(key, CHANGE_ORDERS):
        return key, forbidden(key, "ship orders")
    return key, None


@get("/shipments", include_in_schema=False)
async def bulk_page(request: Request[Any, Any, Any]) -> Response[Any]:
    key, refusal = await anyio.to_thread.run_sync(_bulk_key, request)
    if refusal is not None:
        return refusal
    return render("bulk.html", key=key)


@post("/shipments", include_in_schema=False, request_max_body_size=MAX_UPLOAD + 64 * 1024)
async def bulk_upload(request: Request[Any, Any, Any]) -> Response[Any]:
    """Ship a CSV file; the report lists every row, and offers the rejected rows as a file to fix."""
    key, refusal = await anyio.to_thread.run_sync(_bulk_key, request)
    if refusal is not None:
        return refusal
    assert key is not None
    if (refusal := refuse_foreign(request, key)) is not None:
        return refusal
    form = await request.form()
    upload = form.get("file")
    data = await upload.read() if isinstance(upload, UploadFile) else b""
    try:
        parsed = parse(data)
    except NotCsvError as e:
        return render("bulk.html", 400, key=key, error=f"That file cannot be used: {e}.")
    shipper = BulkShipper(ledger_of(request), actor=actor_of(key), seller=key.seller, source=Source.WEB)
    try:
        report = await anyio.to_thread.run_sync(shipper.run, parsed)
    except LedgerError as e:  # a row's refusal is in the report; anything else is told here, never as JSON
        error = (
            f"The upload stopped ({_explain(e).rstrip('.')}). Upload the file again for each row's verdict."
        )
        return render("bulk.html", 409, key=key, error=error)
    failed = failed_rows_csv(parsed.columns, report.rows) if report.rejected else ""
    return render("bulk.html", key=key, report=report, failed_csv=failed)


@post("/shipments/failed.csv", include_in_schema=False, sync_to_thread=True)
def failed_rows(request: Request[Any, Any, Any], data: Form) -> Response[Any]:
    """Hands the report's rejected rows back as a file to fix and upload again (nothing is stored).

    Only to a signed-in user who may ship, from the bulk page itself: the file is whatever the form sent, so
    another site must not be able to make a browser download its text from the ledger's origin."""
    if (refusal := refuse_foreign(request, None)) is not None:
        return refusal
    _, refusal = _bulk_key(request)
    if refusal is not None:
        return refusal
    return Response(
        str(data.get("csv", "")),
        status_code=200,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="failed-rows.csv"',
            "X-Content-Type-Options": "nosniff",
        },
    )

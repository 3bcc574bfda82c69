"""What the Walmart, Rakuten and Jet modules share: one way to serve a call, strictly.

These marketplaces have no spec file here, so each module declares the request shapes it accepts as msgspec
Structs with `forbid_unknown_fields` (and `Literal`s for codes): a field our adapter misspells, a code the
marketplace does not know, or a missing field is a schema violation, recorded on the state and answered with
the marketplace's 400, so an adapter that sends a wrong shape fails a test. `serve` runs a call: the fault
the framework may fire first, the seller's credential (both by the module's `Caller`), then the module's work under the state's lock; the work
refuses a request by raising `Refusal` (a business rule: nothing is applied) or `Invalid` (a wrong shape).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response

from ledger_sandbox.app import Caller, ControlError, Sandbox
from ledger_sandbox.state import Json, Order, iso, parse_time, utcnow

T = TypeVar("T")

_encoder = msgspec.json.Encoder(decimal_format="number")


class Refusal(Exception):
    """The marketplace refuses the call (status, its error code, a message); nothing is applied."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Invalid(Exception):
    """The request's shape is not what the marketplace accepts: a schema violation."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def strict(body: bytes, kind: type[T]) -> T:
    """`body` as `kind` (a Struct that forbids unknown fields), or Invalid saying why not."""
    try:
        return msgspec.json.decode(body or b"null", type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Invalid([str(exc)]) from None


def json_response(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response[Any]:
    """JSON with Decimals written as numbers, exactly (as these marketplaces write amounts)."""
    return Response(
        content=_encoder.encode(content),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


# What a missing or malformed credential gets on these marketplaces (in each one's error shape).
UNAUTHORIZED = (401, "UNAUTHORIZED", "missing or malformed credentials")

Work = Callable[[Sandbox, str, bytes], Response[Any]]


async def serve(request: Request[Any, Any, Any], caller: Caller, operation: str, work: Work) -> Response[Any]:
    """One marketplace call: a fault, or the account's work under the lock (see the module docstring)."""
    sandbox, account = await caller.begin(request, operation)
    body = await request.body()
    try:
        with sandbox.state.lock:
            return work(sandbox, account, body)
    except Refusal as refusal:
        return caller.error(refusal.status, refusal.code, refusal.message)
    except Invalid as invalid:
        refused = sandbox.refuse(request, caller.name, operation, invalid.errors)
        assert refused is not None
        return refused


def int_param(request: Request[Any, Any, Any], name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid([f"query parameter {name!r}: {raw!r} is not an integer"]) from None
    if not low <= value <= high:
        raise Invalid([f"query parameter {name!r}: {value} is not between {low} and {high}"])
    return value


def known_params(request: Request[Any, Any, Any], names: set[str]) -> None:
    unknown = sorted(set(request.query_params) - names)
    if unknown:
        raise Invalid([f"unknown query parameter {name!r}" for name in unknown])


def buyer_cancel(default_reason: str) -> Callable[[Sandbox, Order, Json], bool]:
    """The `event` hook where a customer's cancellation is a request the seller answers: a `buyer_cancel` event
    records it on the order (open, not applied), with `default_reason` when the event names none."""

    def event(sandbox: Sandbox, order: Order, body: Json) -> bool:
        if body.get("type") != "buyer_cancel":
            return False
        at = parse_time(str(body["at"])) if body.get("at") else utcnow()
        order.buyer_cancel = {
            "requested_at": at,
            "reason": body.get("reason", default_reason),
            "applied": False,
        }
        return True

    return event


def marketplace_cancel(
    default_reason: str,
    line_key: Callable[[Order, int], str] = lambda order, index: order.lines[index].line_id,
) -> Callable[[Sandbox, Order, Json], bool]:
    """The `event` hook of a cancellation the marketplace makes itself (its customer service, its fraud checks,
    an order the seller never acknowledged): a `marketplace_cancel` event {reason?} cancels every unit still open,
    recorded in `cancellations` as `{lines: {key: units}, reason, by: "marketplace", at}` (`line_key` names a
    line as the module's rendering looks it up); the order is cancelled once no unit is left but cancelled ones."""

    def event(sandbox: Sandbox, order: Order, body: Json) -> bool:
        if body.get("type") != "marketplace_cancel":
            return False
        at = parse_time(str(body["at"])) if body.get("at") else utcnow()
        cancelled: dict[str, int] = {}
        for index, line in enumerate(order.lines):
            units = line.quantity - line.shipped - line.cancelled
            if units > 0:
                line.cancelled += units
                cancelled[line_key(order, index)] = units
        if not cancelled:
            raise ControlError(f"order {order.order_id} has no open units to cancel")
        order.cancellations.append(
            {"lines": cancelled, "reason": body.get("reason", default_reason), "by": "marketplace", "at": at}
        )
        if all(line.cancelled == line.quantity for line in order.lines):
            order.canceled = True
        return True

    return event


def either(*hooks: Callable[[Sandbox, Order, Json], bool]) -> Callable[[Sandbox, Order, Json], bool]:
    """One `event` hook of several: the first that handles the event."""

    def event(sandbox: Sandbox, order: Order, body: Json) -> bool:
        return any(hook(sandbox, order, body) for hook in hooks)

    return event


def plain(content: Any) -> Json:
    """`content` (a rendered order) as plain JSON for the control API's `describe`."""
    rendered: Json = msgspec.json.decode(msgspec.json.encode(content))
    return rendered


def _key(order: Order) -> tuple[datetime, str]:
    return parse_time(str(iso(order.updated_at))), order.order_id


def _cursor(order: Order) -> str:
    return base64.urlsafe_b64encode(f"{iso(order.updated_at)}|{order.order_id}".encode()).decode()


def _after(token: str, name: str) -> tuple[datetime, str]:
    try:
        at, _, number = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
        return parse_time(at), number
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Invalid([f"{name} {token!r} is not one this API gave"]) from None


def changed_page(
    request: Request[Any, Any, Any],
    sandbox: Sandbox,
    account: str,
    caller: Caller,
    operation: str,
    *,
    since: str,
    size: str,
    most: int,
    cursor: str,
) -> tuple[list[Order], str | None]:
    """One page of the account's orders changed at or after the required RFC 3339 query parameter `since`,
    oldest change first, keyset-paged: `size` orders at most (1 to `most`, 100 by default) after the opaque
    `cursor`. Returns the page and the next page's cursor (None on the last). A `duplicate` fault repeats the
    previous page's last order, as a page boundary moving under a change does."""
    raw = request.query_params.get(since)
    if raw is None:
        raise Invalid([f"query parameter {since!r} is required"])
    try:
        changed = parse_time(raw)
    except ValueError:
        raise Invalid([f"{since}: {raw!r} is not an RFC 3339 time"]) from None
    limit = int_param(request, size, 100, 1, most)
    token = request.query_params.get(cursor)
    after = _after(token, cursor) if token else None
    orders = sorted(
        (o for o in sandbox.state.account_orders(caller.name, account).values() if o.updated_at >= changed),
        key=_key,
    )
    remaining = [o for o in orders if after is None or _key(o) > after]
    page = remaining[:limit]
    if after is not None and sandbox.duplicate_page(caller.name, operation):
        page = [o for o in orders if _key(o) <= after][-1:] + page
    return page, _cursor(page[-1]) if len(remaining) > limit else None

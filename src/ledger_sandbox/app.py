"""`create_sandbox_app(seed) -> ASGI app`: the marketplace modules' routes and the control API on one server.

See the package docstring for how a marketplace module plugs in. Everything a module needs at request time is
on the `Sandbox` (`request.app.state.sandbox`): the state, the faults, and helpers that answer a fault, a
schema violation or a missing credential in the module's own error shape.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

from litestar import Litestar, Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.types import ControllerRouterHandler

from ledger_sandbox.faults import DropConnection, Fault, FaultError, Faults, mark_drop
from ledger_sandbox.state import (
    Json,
    Order,
    SandboxState,
    Settings,
    Violation,
    parse_time,
    utcnow,
)
from ledger_sandbox.validation import specs_dir

# The marketplace modules, by name in this package. A new marketplace: write its module, add it here.
MODULES = ["amazon", "ebay", "walmart", "rakuten", "jet"]

ErrorBody = Callable[[int, str, str], Response[Any]]


@dataclass(frozen=True)
class Marketplace:
    """What a module exports as `MARKETPLACE` (see the package docstring)."""

    name: str
    routes: Sequence[ControllerRouterHandler]
    new_order_id: Callable[[Any], str]  # (random.Random) -> an order id in the marketplace's format
    error: ErrorBody  # (status, code, message) -> the marketplace's error response
    tick: Callable[[Sandbox], None] = lambda sandbox: None  # move asynchronous work along
    event: Callable[[Sandbox, Order, Json], bool] = lambda sandbox, order, body: False
    describe: Callable[[Sandbox, Order], Json] = lambda sandbox, order: {}
    # Published limits by operation: (requests a second, burst), enforced when the `rate_limits` setting is on.
    rate_limits: Mapping[str, tuple[float, int]] = field(default_factory=dict)


class ControlError(ValueError):
    """A control request the sandbox cannot do (400), or about something it does not have (404)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Sandbox:
    state: SandboxState
    faults: Faults = field(default_factory=Faults)
    marketplaces: dict[str, Marketplace] = field(default_factory=dict)
    # (marketplace, account, operation) -> [tokens, last refill]
    buckets: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)

    def marketplace(self, name: str) -> Marketplace:
        found = self.marketplaces.get(name)
        if found is None:
            raise ControlError(f"no marketplace {name!r}; one of {', '.join(self.marketplaces)}", 404)
        return found

    def tick(self) -> None:
        with self.state.lock:
            for marketplace in self.marketplaces.values():
                marketplace.tick(self)

    async def begin(
        self, request: Request[Any, Any, Any], marketplace: str, operation: str, account: str = ""
    ) -> Response[Any] | None:
        """Every marketplace call starts here: asynchronous work moves on, then an armed fault fires.

        Returns the response to give instead of handling the call, or None to handle it. A `lost` fault lets
        the call be handled and then cuts the connection; a `slow` one only waits."""
        self.tick()
        wait = self._over_limit(marketplace, account, operation)
        if wait is not None:
            response = self.marketplace(marketplace).error(
                429, "QuotaExceeded", "You exceeded your quota for the requested resource."
            )
            response.headers["Retry-After"] = f"{wait:.3f}"
            return response
        fault = self.faults.take(
            marketplace, operation, ("throttle", "server_error", "timeout", "slow", "reset", "lost")
        )
        if fault is None:
            return None
        error = self.marketplace(marketplace).error
        if fault.kind == "throttle":
            response = error(429, "QuotaExceeded", "You exceeded your quota for the requested resource.")
            response.headers["Retry-After"] = f"{fault.retry_after:g}"
            return response
        if fault.kind == "server_error":
            return error(
                fault.status, "InternalFailure", "We encountered an internal error. Please try again."
            )
        if fault.kind == "timeout":
            await asyncio.sleep(fault.delay)
            return error(504, "RequestTimeout", "The request timed out.")
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            return None
        mark_drop(request.scope)  # type: ignore[arg-type]
        if fault.kind == "reset":
            return error(500, "ConnectionReset", "dropped")
        return None  # lost: handled, then the answer is dropped

    def _over_limit(self, marketplace: str, account: str, operation: str) -> float | None:
        """With the `rate_limits` setting on: None if the call is within the operation's published limit (a
        token bucket per account, spent), else the seconds until the next token (a fired `rate_limit`)."""
        limit = self.marketplace(marketplace).rate_limits.get(operation)
        if not self.state.settings.rate_limits or limit is None:
            return None
        rate, burst = limit
        now = time.monotonic()
        with self.state.lock:
            bucket = self.buckets.setdefault((marketplace, account, operation), [float(burst), now])
            bucket[0] = min(float(burst), bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
            if bucket[0] >= 1:
                bucket[0] -= 1
                return None
            self.faults.fired.append(
                {"marketplace": marketplace, "operation": operation, "kind": "rate_limit"}
            )
            return (1 - bucket[0]) / rate

    def refuse(
        self, request: Request[Any, Any, Any], marketplace: str, operation: str, errors: Sequence[str]
    ) -> Response[Any] | None:
        """A schema violation: recorded, and answered with the marketplace's 400. None: no errors."""
        if not errors:
            return None
        self.state.violate(Violation(marketplace, operation, request.method, request.url.path, list(errors)))
        return self.marketplace(marketplace).error(400, "InvalidInput", "; ".join(errors))

    def duplicate_page(self, marketplace: str, operation: str) -> bool:
        """Whether this list call's page should repeat the previous page's last order."""
        return self.faults.take(marketplace, operation, ("duplicate",)) is not None


class Answer(Exception):
    """A marketplace call answered before its work (a fault, no credential, no such order): `response` as it is."""

    def __init__(self, response: Response[Any]) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass(frozen=True)
class Caller:
    """The preamble every marketplace route starts with, given per module as data.

    `begin`: the fault the framework may fire first, then the seller the credential names, or the
    marketplace's own unauthorized answer (`unauthorized`: status, code, message). `order`: the account's order,
    or the marketplace's own 404 (`not_found`: code, and a message with `{}` for the order id). Both raise
    `Answer`, which the app gives as it is."""

    name: str
    account_of: Callable[[Request[Any, Any, Any]], str | None]
    error: ErrorBody
    unauthorized: tuple[int, str, str]
    not_found: tuple[str, str]

    async def begin(self, request: Request[Any, Any, Any], operation: str) -> tuple[Sandbox, str]:
        sandbox = sandbox_of(request)
        account = self.account_of(request)
        early = await sandbox.begin(request, self.name, operation, account or "")
        if early is not None:
            raise Answer(early)
        if not account:
            raise Answer(self.error(*self.unauthorized))
        return sandbox, account

    def refuse(self, status: int, code: str, message: str) -> Answer:
        """The marketplace's error, to raise; raised inside a change (`SandboxState.apply_once`), nothing is
        applied."""
        return Answer(self.error(status, code, message))

    def order(self, sandbox: Sandbox, account: str, order_id: str) -> Order:
        """The account's order (call it under the state's lock), or the marketplace's 404."""
        order = sandbox.state.find(self.name, account, order_id)
        if order is None:
            code, message = self.not_found
            raise Answer(self.error(404, code, message.format(order_id)))
        return order


async def read_json(request: Request[Any, Any, Any]) -> tuple[Any, str | None]:
    """The request's JSON body, or why it is not JSON."""
    raw = await request.body()
    try:
        return json.loads(raw or b"null"), None
    except ValueError as exc:
        return None, f"the body is not JSON: {exc}"


def sandbox_of(request: Request[Any, Any, Any]) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


def json_response(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response[Any]:
    return Response(
        content=json.dumps(content).encode(),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


# ---------------------------------------------------------------------------------- control API


def _control_error(message: str, status: int = 400) -> Response[Any]:
    return json_response({"error": message}, status)


async def _body(request: Request[Any, Any, Any]) -> Json:
    body, problem = await read_json(request)
    if problem is not None:
        raise ControlError(problem)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ControlError("the body is a JSON object")
    return body


def _order(sandbox: Sandbox, marketplace: str, account: str, order_id: str) -> Order:
    sandbox.marketplace(marketplace)
    order = sandbox.state.find(marketplace, account, order_id)
    if order is None:
        raise ControlError(f"no {marketplace} order {order_id!r} for account {account!r}", 404)
    return order


def _view(sandbox: Sandbox, order: Order) -> Json:
    return {**order.view(), **sandbox.marketplace(order.marketplace).describe(sandbox, order)}


def _time(body: Json, name: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    try:
        return parse_time(str(value))
    except ValueError as exc:
        raise ControlError(f"{name} is not an ISO 8601 time: {value!r}") from exc


@post("/_sandbox/{marketplace:str}/accounts/{account:str}/orders", status_code=201)
async def generate_orders(
    request: Request[Any, Any, Any], marketplace: FromPath[str], account: FromPath[str]
) -> Response[Any]:
    """{count, paid, purchased_at, currency, max_lines} -> {orders: [order views]}"""
    sandbox = sandbox_of(request)
    body = await _body(request)
    module = sandbox.marketplace(marketplace)
    count = body.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 10_000:
        raise ControlError("count is a whole number from 1 to 10000")
    max_lines = body.get("max_lines", 3)
    if not isinstance(max_lines, int) or isinstance(max_lines, bool) or not 1 <= max_lines <= 8:
        raise ControlError("max_lines is a whole number from 1 to 8")
    currency = body.get("currency", "USD")
    if (
        not isinstance(currency, str)
        or len(currency) != 3
        or not currency.isalpha()
        or not currency.isupper()
    ):
        raise ControlError("currency is an ISO 4217 code such as USD")
    if not isinstance(body.get("paid", True), bool):
        raise ControlError("paid is true or false")
    orders = sandbox.state.generate(
        marketplace,
        account,
        module.new_order_id,
        count=count,
        paid=bool(body.get("paid", True)),
        purchased_at=_time(body, "purchased_at"),
        currency=currency,
        max_lines=max_lines,
    )
    return json_response({"orders": [_view(sandbox, order) for order in orders]}, 201)


@get("/_sandbox/{marketplace:str}/accounts/{account:str}/orders")
async def list_orders(
    request: Request[Any, Any, Any], marketplace: FromPath[str], account: FromPath[str]
) -> Response[Any]:
    sandbox = sandbox_of(request)
    sandbox.marketplace(marketplace)
    sandbox.tick()
    with sandbox.state.lock:
        orders = sorted(
            sandbox.state.account_orders(marketplace, account).values(), key=lambda o: o.purchased_at
        )
        return json_response({"orders": [_view(sandbox, order) for order in orders]})


@get("/_sandbox/{marketplace:str}/accounts/{account:str}/orders/{order_id:str}")
async def show_order(
    request: Request[Any, Any, Any],
    marketplace: FromPath[str],
    account: FromPath[str],
    order_id: FromPath[str],
) -> Response[Any]:
    sandbox = sandbox_of(request)
    sandbox.tick()
    with sandbox.state.lock:
        return json_response(_view(sandbox, _order(sandbox, marketplace, account, order_id)))


@post("/_sandbox/{marketplace:str}/accounts/{account:str}/orders/{order_id:str}/events", status_code=200)
async def order_event(
    request: Request[Any, Any, Any],
    marketplace: FromPath[str],
    account: FromPath[str],
    order_id: FromPath[str],
) -> Response[Any]:
    """Something happens to the order on the marketplace's side: `{type, at?, ...}`.

    Types every marketplace has: `pay`; `buyer_cancel` {reason?} (applied at once within the marketplace's
    window and before shipment, else a request); `open_dispute` {reason?, amount?} (a buyer's claim);
    `close_dispute` {dispute_id, outcome: accepted|rejected|withdrawn}. A module adds its own."""
    sandbox = sandbox_of(request)
    body = await _body(request)
    sandbox.tick()
    with sandbox.state.lock:
        order = _order(sandbox, marketplace, account, order_id)
        at = _time(body, "at") or utcnow()
        kind = body.get("type")
        if sandbox.marketplace(marketplace).event(sandbox, order, body):
            pass
        elif kind == "pay":
            order.paid_at = order.paid_at or at
        elif kind == "buyer_cancel":
            window = timedelta(seconds=sandbox.state.settings.buyer_cancel_window_seconds)
            applied = at - order.purchased_at <= window and not any(line.shipped for line in order.lines)
            order.buyer_cancel = {
                "requested_at": at,
                "reason": body.get("reason", "BuyerCanceled"),
                "applied": applied,
            }
            if applied:
                order.canceled = True
                for line in order.lines:
                    line.cancelled = line.quantity
        elif kind == "open_dispute":
            dispute_id = str(body.get("dispute_id") or f"{5_000_000_000 + sandbox.state.next_number()}")
            order.disputes.append(
                {
                    "dispute_id": dispute_id,
                    "kind": "claim",
                    "reason": body.get("reason", "ITEM_NOT_RECEIVED"),
                    "amount": str(body.get("amount", order.total)),
                    "status": "OPEN",
                    "opened_at": at,
                    "closed_at": None,
                    "outcome": None,
                }
            )
        elif kind == "close_dispute":
            dispute = next((d for d in order.disputes if d["dispute_id"] == body.get("dispute_id")), None)
            if dispute is None:
                raise ControlError(f"no dispute {body.get('dispute_id')!r} on order {order_id}", 404)
            outcome = body.get("outcome", "accepted")
            if outcome not in ("accepted", "rejected", "withdrawn"):
                raise ControlError("outcome is accepted, rejected or withdrawn")
            dispute.update(status="CLOSED", closed_at=at, outcome=outcome)
        else:
            raise ControlError(f"unknown event type {kind!r}")
        order.touch(at if at > order.updated_at else None)
        return json_response(_view(sandbox, order))


@get("/_sandbox/{marketplace:str}/accounts/{account:str}/effects")
async def list_effects(
    request: Request[Any, Any, Any], marketplace: FromPath[str], account: FromPath[str]
) -> Response[Any]:
    """?key= (a dedupe key, or its prefix before `:`) &order_id= -> {effects: [{operation, key, attempts...}]}"""
    sandbox = sandbox_of(request)
    sandbox.marketplace(marketplace)
    sandbox.tick()
    effects = sandbox.state.effects_for(
        marketplace, account, request.query_params.get("key"), request.query_params.get("order_id")
    )
    return json_response({"effects": [effect.view() for effect in effects]})


@get("/_sandbox/violations")
async def list_violations(request: Request[Any, Any, Any]) -> Response[Any]:
    with sandbox_of(request).state.lock:
        return json_response({"violations": [v.view() for v in sandbox_of(request).state.violations]})


@delete("/_sandbox/violations", status_code=204)
async def clear_violations(request: Request[Any, Any, Any]) -> None:
    with sandbox_of(request).state.lock:
        sandbox_of(request).state.violations.clear()


@post("/_sandbox/{marketplace:str}/faults", status_code=201)
async def arm_fault(request: Request[Any, Any, Any], marketplace: FromPath[str]) -> Response[Any]:
    """{operation, kind, count?, retry_after?, status?, seconds?} -> the armed fault"""
    sandbox = sandbox_of(request)
    sandbox.marketplace(marketplace)
    body = await _body(request)
    known = {f.name for f in fields(Fault)} - {"marketplace"}
    unknown = set(body) - known
    if unknown or "kind" not in body:
        raise ControlError(f"a fault has kind and some of {', '.join(sorted(known - {'kind'}))}")
    numbers: dict[str, tuple[type, ...]] = {
        "count": (int,),
        "retry_after": (int, float),
        "status": (int,),
        "seconds": (int, float),
    }
    for name, kinds in numbers.items():
        if name in body and (
            not isinstance(body[name], kinds) or isinstance(body[name], bool) or body[name] < 0
        ):
            raise ControlError(f"{name} is a number, not negative")
    if not isinstance(body["kind"], str) or not isinstance(body.get("operation", "*"), str):
        raise ControlError("kind and operation are strings")
    try:
        fault = Fault(
            marketplace=marketplace,
            operation=str(body.get("operation", "*")),
            **{k: body[k] for k in body if k != "operation"},
        )
        sandbox.faults.arm(fault)
    except (FaultError, TypeError) as exc:
        raise ControlError(str(exc)) from exc
    return json_response(fault.view(), 201)


@get("/_sandbox/faults")
async def list_faults(request: Request[Any, Any, Any]) -> Response[Any]:
    faults = sandbox_of(request).faults
    return json_response({"armed": [f.view() for f in faults.armed()], "fired": list(faults.fired)})


@delete("/_sandbox/faults", status_code=204)
async def clear_faults(request: Request[Any, Any, Any]) -> None:
    sandbox_of(request).faults.clear()


@get("/_sandbox/settings")
async def show_settings(request: Request[Any, Any, Any]) -> Response[Any]:
    return json_response(vars(sandbox_of(request).state.settings))


@put("/_sandbox/settings")
async def change_settings(request: Request[Any, Any, Any]) -> Response[Any]:
    """Any of the Settings fields (seconds, numbers) -> all settings."""
    settings = sandbox_of(request).state.settings
    body = await _body(request)
    names = {f.name for f in fields(Settings)}
    for name, value in body.items():
        if name not in names or not isinstance(value, int | float) or isinstance(value, bool):
            raise ControlError(f"settings are numbers named {', '.join(sorted(names))}")
    for name, value in body.items():
        setattr(settings, name, float(value))
    return json_response(vars(settings))


@post("/_sandbox/reset", status_code=204)
async def reset(request: Request[Any, Any, Any]) -> None:
    """Forget every order, effect, violation, fault and spent rate limit (the settings stay)."""
    sandbox = sandbox_of(request)
    sandbox.state.reset()
    sandbox.faults.clear()
    sandbox.buckets.clear()


@get("/_sandbox/marketplaces")
async def list_marketplaces(request: Request[Any, Any, Any]) -> Response[Any]:
    return json_response({"marketplaces": sorted(sandbox_of(request).marketplaces)})


CONTROL_ROUTES: list[ControllerRouterHandler] = [
    generate_orders,
    list_orders,
    show_order,
    order_event,
    list_effects,
    list_violations,
    clear_violations,
    arm_fault,
    list_faults,
    clear_faults,
    show_settings,
    change_settings,
    reset,
    list_marketplaces,
]


def _control_error_handler(request: Request[Any, Any, Any], exc: ControlError) -> Response[Any]:
    return _control_error(str(exc), exc.status)


def _answer_handler(request: Request[Any, Any, Any], exc: Answer) -> Response[Any]:
    return exc.response


def load_modules(names: Sequence[str] = MODULES) -> list[Marketplace]:
    loaded: list[Marketplace] = []
    for name in names:
        path = f"{__package__}.{name}"
        try:
            module: ModuleType = importlib.import_module(path)
        except ModuleNotFoundError as exc:
            if exc.name == path:
                continue  # listed before its module is written: that marketplace is not played yet
            raise
        loaded.append(module.MARKETPLACE)
    return loaded


def create_sandbox_app(
    seed: int = 0,
    *,
    settings: Settings | None = None,
    orders_per_account: Mapping[tuple[str, str], int] | None = None,
    modules: Sequence[str] = MODULES,
) -> Litestar:
    """The sandbox as a Litestar app; its `Sandbox` is `app.state.sandbox`.

    `orders_per_account`: orders to generate at start, {(marketplace, account): count}. Raises
    SpecsNotFoundError when the marketplaces' schema files are missing (rather than a 500 on each call)."""
    specs_dir()
    sandbox = Sandbox(SandboxState(seed, settings))
    routes: list[ControllerRouterHandler] = list(CONTROL_ROUTES)
    for marketplace in load_modules(modules):
        sandbox.marketplaces[marketplace.name] = marketplace
        routes += marketplace.routes
    for (name, account), count in (orders_per_account or {}).items():
        sandbox.state.generate(name, account, sandbox.marketplace(name).new_order_id, count=count)
    return Litestar(
        route_handlers=routes,
        state=State({"sandbox": sandbox}),
        exception_handlers={ControlError: _control_error_handler, Answer: _answer_handler},
        openapi_config=None,
        middleware=[DropConnection],
        debug=False,
    )

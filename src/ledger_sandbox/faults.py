"""Faults on demand: the next N calls of a marketplace's operation misbehave in a chosen way.

A fault is armed through the control API (`POST /_sandbox/{marketplace}/faults`) for one operation (the
module's operation name, e.g. `confirmShipment`, or `*` for every operation of that marketplace) and fires on
the next `count` matching calls, then disarms. Kinds:

- `throttle`: 429 with `Retry-After: retry_after` (seconds), the marketplace's error body; nothing applied.
- `server_error`: `status` (default 503) with the marketplace's error body; nothing applied.
- `timeout`: sleeps `seconds` (default 30, longer than any client timeout), then answers 504; nothing applied.
- `slow`: sleeps `seconds` (default 1), then handles the call normally.
- `reset`: the connection drops before the call is handled (response headers then a cut body); nothing applied.
- `lost`: the call is handled and its effect applied, then the connection drops: the client never hears.
- `duplicate`: list calls only: the page also repeats the last order of the previous page.

`reset` and `lost` are carried out by `DropConnection`, the ASGI wrapper around the app: the handler marks
the request, and the wrapper starts the response and then fails it, so the server closes the connection
mid-body (httpx raises `RemoteProtocolError`, as on a real reset).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

KINDS = ("throttle", "server_error", "timeout", "slow", "reset", "lost", "duplicate")
DROP_KEY = "ledger.sandbox.drop"
MAX_FIRED = 1000  # the faults that fired, latest last, kept for `GET /_sandbox/faults`  # in the ASGI scope: set by a handler, read by DropConnection


class FaultError(ValueError):
    """A fault the control API cannot arm (unknown kind, a count below 1...)."""


@dataclass
class Fault:
    marketplace: str
    operation: str
    kind: str
    count: int = 1
    retry_after: float = 1.0
    status: int = 503
    seconds: float | None = None

    def view(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def delay(self) -> float:
        if self.seconds is not None:
            return self.seconds
        return 30.0 if self.kind == "timeout" else 1.0


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[Fault] = []
        self.fired: list[dict[str, Any]] = []

    def arm(self, fault: Fault) -> None:
        if fault.kind not in KINDS:
            raise FaultError(f"unknown fault kind {fault.kind!r}; one of {', '.join(KINDS)}")
        if fault.count < 1:
            raise FaultError("count must be at least 1")
        if fault.kind == "server_error" and not 500 <= fault.status <= 599:
            raise FaultError("a server_error status is between 500 and 599")
        with self._lock:
            self._armed.append(fault)

    def take(self, marketplace: str, operation: str, kinds: tuple[str, ...] = KINDS) -> Fault | None:
        """The fault to fire on this call, if one is armed (its count goes down by one)."""
        with self._lock:
            for fault in self._armed:
                if (
                    fault.marketplace == marketplace
                    and fault.operation in (operation, "*")
                    and fault.kind in kinds
                ):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._armed.remove(fault)
                    self.fired.append(
                        {"marketplace": marketplace, "operation": operation, "kind": fault.kind}
                    )
                    return fault
            return None

    def armed(self) -> list[Fault]:
        with self._lock:
            return list(self._armed)

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()
            self.fired.clear()


def mark_drop(scope: MutableMapping[str, Any]) -> None:
    """Have DropConnection cut this request's connection instead of answering."""
    holder = scope.get(DROP_KEY)
    if isinstance(holder, dict):
        holder["drop"] = True


class ConnectionDropped(Exception):
    """Raised after the response started: the ASGI server closes the connection mid-response."""


class DropConnection:
    """ASGI wrapper: a request marked with `mark_drop` gets its headers and then a cut connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        holder: dict[str, bool] = {"drop": False}
        scope[DROP_KEY] = holder  # type: ignore[literal-required]

        async def guarded_send(message: Message) -> None:
            if not holder["drop"]:
                await send(message)
                return
            if message["type"] == "http.response.start":
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
                    }
                )
                raise ConnectionDropped("sandbox fault: the connection dropped")

        await self.app(scope, receive, guarded_send)


class _QuietDrops(logging.Filter):
    """Drops the ASGI server's traceback for a connection the sandbox cut on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        while error is not None:
            if isinstance(error, ConnectionDropped):
                return False
            error = error.__cause__ or error.__context__
        return True


def quiet_dropped_connections(logger_name: str = "uvicorn.error") -> None:
    """Keep the server's log free of the tracebacks of `reset` and `lost` faults (idempotent)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _QuietDrops) for f in logger.filters):
        logger.addFilter(_QuietDrops())

"""The HTTP plumbing the marketplace adapters share: one call, its failures classified.

A marketplace's answer is sorted into what the dispatcher can act on: 429, 5xx, a timeout or a dropped
connection is a `TransientMarketplaceError` (worth retrying, with the `Retry-After` it gave); any other 4xx is a
`PermanentMarketplaceError` (the marketplace refused the request itself). A 2xx body that does not decode is
transient too: every request carries the marketplace's dedupe key, so asking again cannot apply a change twice.
Credentials travel only in headers built per request; nothing here logs a header.

Walmart, Rakuten and Jet report a customer's cancellation request (`cancel_request`) as a `BuyerCancelled`
fact with `applied=False`: the ledger records it as a request the seller answers by cancelling or shipping, not
as a cancellation. Their amounts travel as JSON numbers (`encode`), and their reason maps fall back alike
(`cancel_code`, `refund_code`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote as _quote

import httpx
import msgspec

from ledger.aggregates.values import CancelReason, OrderStatus, RefundReason, Requester
from ledger.integrations.base import (
    CallGate,
    CancelledRemotely,
    Endpoint,
    MarketplaceFact,
    PermanentMarketplaceError,
    TransientMarketplaceError,
)

T = TypeVar("T")

# Reads the marketplace's error body into (code, message); None when the body says nothing useful.
ErrorReader = Callable[[bytes], tuple[str, str] | None]


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds: either delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify(status: int, body: bytes, retry_after: str | None, read_error: ErrorReader) -> Exception:
    """The MarketplaceError for a non-2xx answer."""
    found = read_error(body) if body else None
    code, message = found if found else (str(status), body[:200].decode("utf-8", "replace") or "no body")
    if status == 429 or status >= 500:
        return TransientMarketplaceError(code, f"HTTP {status}: {message}", retry_after_seconds(retry_after))
    return PermanentMarketplaceError(code, f"HTTP {status}: {message}")


GATED_ATTEMPTS = 4


class GatedClient:
    """`set_gate` for an adapter whose HTTP goes through `self._transport` (every adapter here)."""

    _transport: RestTransport

    def set_gate(self, gate: CallGate | None) -> None:
        self._transport.gate = gate


class RestTransport:
    """One account's HTTP connection: absolute URLs under `endpoint.base_url`, failures classified."""

    def __init__(self, endpoint: Endpoint, http: httpx.Client | None, read_error: ErrorReader) -> None:
        self._base = endpoint.base_url.rstrip("/")
        self._owns = http is None
        self._http = http if http is not None else httpx.Client(timeout=endpoint.timeout_seconds)
        self._timeout = endpoint.timeout_seconds
        self._read_error = read_error
        self.gate: CallGate | None = None

    def gated(self, operation: str, call: Callable[[], T]) -> T:
        """`call`, a request the marketplace limits as `operation` (its own name: `getOrders`), paced by the
        gate when one is set: it waits for the operation's token first, and a 429 (or any answer with
        Retry-After) pauses the operation and is asked again, up to GATED_ATTEMPTS times in all."""
        if self.gate is None:
            return call()
        for attempt in range(1, GATED_ATTEMPTS + 1):
            self.gate.before(operation)
            try:
                return call()
            except TransientMarketplaceError as e:
                if e.retry_after is None or attempt == GATED_ATTEMPTS:
                    raise
                self.gate.throttled(operation, e.retry_after)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def call(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> bytes:
        """The body of a 2xx answer; raises a MarketplaceError for anything else."""
        all_headers = {"Accept": "application/json", **headers}
        if body is not None:
            all_headers["Content-Type"] = content_type
        return self.request(
            method,
            self._base + path,
            all_headers,
            params=dict(params) if params else None,
            content=body,
            where=path,
        )

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        where: str,
    ) -> bytes:
        """`call` to an absolute URL (a presigned document URL, say) with the headers as given; `where` names it
        in errors."""
        try:
            response = self._http.request(
                method, url, params=params, content=content, headers=dict(headers), timeout=self._timeout
            )
        except httpx.TimeoutException as exc:
            raise TransientMarketplaceError("timeout", f"{method} {where}: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            raise TransientMarketplaceError("connection", f"{method} {where}: {type(exc).__name__}") from None
        if 200 <= response.status_code < 300:
            return response.content
        raise classify(
            response.status_code, response.content, response.headers.get("Retry-After"), self._read_error
        )

    def close(self) -> None:
        if self._owns:
            self._http.close()


_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def decoder(kind: type[T]) -> msgspec.json.Decoder[T]:
    """The one msgspec decoder for `kind`, made on first use."""
    if kind not in _decoders:
        _decoders[kind] = msgspec.json.Decoder(kind)
    return _decoders[kind]


def decode(body: bytes, decoder: msgspec.json.Decoder[T], what: str) -> T:
    """A response body as its Struct; one that does not decode is transient (the request is deduped)."""
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise TransientMarketplaceError("unexpected-response", f"{what}: {exc}") from None


def to_millis(moment: datetime) -> int:
    """Epoch milliseconds (Walmart's time format)."""
    return int(moment.timestamp() * 1000)


def from_millis(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


def parse_time(text: str) -> datetime:
    """An RFC 3339 time (a `Z` or an offset) as an aware UTC datetime."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, to the millisecond."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def quote(segment: str) -> str:
    """One path segment (a marketplace order id) escaped, slashes included."""
    return _quote(segment, safe="")


def order_status(units: Iterable[tuple[int, int, int]]) -> str:
    """The ledger's status for (quantity, shipped, cancelled) per line, as `Order.status` derives it, so that
    `ledger sync check` compares like with like."""
    lines = list(units)
    shipped = sum(s for _, s, _ in lines)
    settled = all(quantity - s - c <= 0 for quantity, s, c in lines)
    if shipped == 0:
        return OrderStatus.CANCELED.value if settled else OrderStatus.UNSHIPPED.value
    return OrderStatus.SHIPPED.value if settled else OrderStatus.PARTIALLY_SHIPPED.value


def cancelled_remotely(
    units: Iterable[tuple[int, int, int]], at: datetime, reason: CancelReason = CancelReason.OTHER
) -> CancelledRemotely | None:
    """The marketplace's own cancellation of the whole order, from (quantity, shipped, cancelled) per line: nothing
    shipped and every unit cancelled there. A cancellation the ledger sent comes back the same way; the order
    has it already and records nothing (the importer takes NothingToCancelError as "known")."""
    lines = list(units)
    if lines and order_status(lines) == OrderStatus.CANCELED.value and any(c for _, _, c in lines):
        return CancelledRemotely(cancelled_at=at, reason=reason)
    return None


def facts_of(*facts: MarketplaceFact | None) -> tuple[MarketplaceFact, ...]:
    """The facts an adapter found on an order, leaving out the ones it did not find (None)."""
    return tuple(fact for fact in facts if fact is not None)


_numbers = msgspec.json.Encoder(decimal_format="number")


def encode(request: Any) -> bytes:
    """A request body with Decimals as JSON numbers (as Walmart, Rakuten and Jet take amounts)."""
    return _numbers.encode(request)


def order_time(text: str, where: str) -> datetime:
    """An RFC 3339 time from an order; one that does not parse makes the order unmappable (`where` says which)."""
    try:
        return parse_time(text)
    except ValueError:
        raise PermanentMarketplaceError("unmappable-order", f"{where}: time {text!r}") from None


def cancel_code(codes: Mapping[str, str], reason: str | None, requested_by: str) -> str:
    """The marketplace's cancellation code (`codes`: by the ledger's CancelReason) for a cancellation; one
    without a reason is the buyer's when the buyer asked for it, else OTHER."""
    if reason is None:
        return codes[CancelReason.BUYER_CANCELLED if requested_by == Requester.BUYER else CancelReason.OTHER]
    return codes.get(reason, codes[CancelReason.OTHER])


def refund_code(codes: Mapping[str, str], reason: str | None) -> str:
    """The marketplace's refund code (`codes`: by the ledger's RefundReason); OTHER's for anything else."""
    return codes.get(reason or RefundReason.OTHER, codes[RefundReason.OTHER])

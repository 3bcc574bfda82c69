"""The sandbox's memory: what each marketplace holds per seller account, and every effect it applied.

One `SandboxState` per server, shared by every marketplace module. Orders live per (marketplace, account);
an account is whatever identifies the seller in the requests the adapter sends (the access token for Amazon
and eBay), so two sellers never see each other's orders. Every change an adapter asks for is applied through
`apply_once` under the marketplace's own dedupe key (Amazon `packageReferenceId`, eBay tracking number...):
the first request applies it, a repeat only counts an attempt. The effects log is what tests read to assert
"exactly one effect per key". Schema violations are recorded here too, so tests can assert none happened.

Everything is guarded by one lock: handlers run on the event loop, the state is small, and a test drives a
few requests at a time.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

Json = dict[str, Any]


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(at: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z`, as the marketplaces write their times (milliseconds)."""
    if at is None:
        return None
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """An ISO 8601 time from a request; a naive one is taken as UTC."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass
class Line:
    line_id: str
    sku: str
    title: str
    quantity: int
    unit_price: Decimal
    tax: Decimal  # for the whole line
    shipping: Decimal  # for the whole line
    shipped: int = 0
    cancelled: int = 0


@dataclass
class Order:
    """One order as the marketplace holds it. `status` is generic; each module renders its own codes."""

    marketplace: str
    account: str
    order_id: str
    purchased_at: datetime
    updated_at: datetime
    currency: str
    buyer_name: str
    buyer_email: str
    buyer_username: str
    address: dict[str, str]
    lines: list[Line]
    paid_at: datetime | None = None
    canceled: bool = False
    buyer_cancel: Json | None = None  # {requested_at, reason, applied}
    shipments: list[Json] = field(default_factory=list)
    cancellations: list[Json] = field(default_factory=list)
    refunds: list[Json] = field(default_factory=list)
    disputes: list[Json] = field(default_factory=list)
    acknowledged_at: datetime | None = None
    extra: Json = field(default_factory=dict)  # a module's own fields

    def line(self, line_id: str) -> Line | None:
        return next((line for line in self.lines if line.line_id == line_id), None)

    @property
    def status(self) -> str:
        """`pending` (unpaid), `unshipped`, `partially_shipped`, `shipped` or `canceled`."""
        if self.canceled:
            return "canceled"
        open_units = sum(line.quantity - line.cancelled for line in self.lines)
        shipped = sum(line.shipped for line in self.lines)
        if open_units > 0 and shipped >= open_units:
            return "shipped"
        if shipped:
            return "partially_shipped"
        return "unshipped" if self.paid_at is not None else "pending"

    @property
    def total(self) -> Decimal:
        return sum(
            (line.unit_price * line.quantity + line.tax + line.shipping for line in self.lines), Decimal(0)
        )

    def touch(self, at: datetime | None = None) -> None:
        # Never earlier than before (the marketplaces' "changed since" filters are inclusive), never ahead of
        # the clock (a window that ends now must include every change made until now).
        self.updated_at = max(at or utcnow(), self.updated_at)

    def view(self) -> Json:
        """What the marketplace thinks of the order, for tests and `GET /_sandbox/.../orders/{id}`."""
        data = asdict(self)
        data["status"] = self.status
        data["total"] = str(self.total)
        view: Json = _jsonable(data)
        return view


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Decimal):
        return str(value)
    return value


@dataclass
class Effect:
    """One change a marketplace applied, under its dedupe key; `attempts` counts every request for it."""

    marketplace: str
    account: str
    operation: str
    key: str
    order_id: str | None
    applied_at: datetime
    attempts: int = 1
    result: Json = field(default_factory=dict)

    def view(self) -> Json:
        view: Json = _jsonable(asdict(self))
        return view


@dataclass
class Violation:
    """A request the real schema rejects."""

    marketplace: str
    operation: str
    method: str
    path: str
    errors: list[str]
    at: datetime = field(default_factory=utcnow)

    def view(self) -> Json:
        view: Json = _jsonable(asdict(self))
        return view


@dataclass
class Settings:
    """Timings of the asynchronous parts (seconds), changeable at run time through the control API."""

    feed_processing_seconds: float = 2.0  # Amazon feeds: IN_QUEUE, IN_PROGRESS, then DONE
    refund_processing_seconds: float = 2.0  # eBay refunds: PENDING, then REFUNDED
    cancellation_approval_seconds: float = -1.0  # eBay cancellation requests: approved after this; <0: never
    buyer_cancel_window_seconds: float = 30 * 60.0  # Amazon: a buyer cancels at once within 30 minutes
    rate_limits: float = (
        0.0  # 1: each operation keeps to its marketplace's published limit (429 beyond); 0: off
    )


FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim")
LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman")
PRODUCTS = (
    ("MUG-BLK-12", "Black ceramic mug, 12 oz", "12.99"),
    ("TEE-WHT-M", "White cotton T-shirt, M", "18.50"),
    ("USB-C-2M", "USB-C cable, 2 m", "9.95"),
    ("BOOK-SICP", "Structure and Interpretation of Computer Programs", "45.00"),
    ("LAMP-DESK", "LED desk lamp", "34.90"),
    ("SOCK-3PK", "Wool socks, 3 pack", "15.00"),
    ("KBD-TKL", "Tenkeyless keyboard", "79.00"),
    ("PEN-GEL-10", "Gel pens, 10 pack", "7.49"),
)
CITIES = (
    ("Seattle", "WA", "98109"),
    ("Austin", "TX", "78701"),
    ("Portland", "OR", "97205"),
    ("Boston", "MA", "02110"),
    ("Denver", "CO", "80202"),
)
CENT = Decimal("0.01")


class SandboxState:
    def __init__(self, seed: int = 0, settings: Settings | None = None) -> None:
        self.seed = seed
        self.settings = settings or Settings()
        self.lock = threading.RLock()
        self.orders: dict[tuple[str, str], dict[str, Order]] = {}
        self.effects: dict[tuple[str, ...], Effect] = {}  # (marketplace, account, operation, order, key)
        self.violations: list[Violation] = []
        self.objects: dict[tuple[str, str], Json] = {}  # a module's other records (feeds, documents...)
        # Keys of `objects` a module still has work to do on (feeds in progress): its tick visits only these,
        # so a request costs the same after a million feeds as after one. (A dict: kept in creation order.)
        self.unfinished: dict[tuple[str, str], None] = {}
        self._generated = 0
        self._sequence = 0

    # ------------------------------------------------------------------------------ orders

    def account_orders(self, marketplace: str, account: str) -> dict[str, Order]:
        return self.orders.setdefault((marketplace, account), {})

    def find(self, marketplace: str, account: str, order_id: str) -> Order | None:
        return self.orders.get((marketplace, account), {}).get(order_id)

    def add(self, order: Order) -> Order:
        self.account_orders(order.marketplace, order.account)[order.order_id] = order
        return order

    def next_number(self) -> int:
        """A server-wide sequence, for ids the marketplace makes up (feeds, refunds...)."""
        with self.lock:
            self._sequence += 1
            return self._sequence

    def generate(
        self,
        marketplace: str,
        account: str,
        make_id: Callable[[random.Random], str],
        *,
        count: int,
        paid: bool = True,
        purchased_at: datetime | None = None,
        currency: str = "USD",
        max_lines: int = 3,
    ) -> list[Order]:
        """`count` realistic orders, the same for the same seed and sequence of calls."""
        created = []
        with self.lock:
            for _ in range(count):
                self._generated += 1
                rng = random.Random(f"{self.seed}:{marketplace}:{account}:{self._generated}")  # noqa: S311 - test data
                at = purchased_at or utcnow()
                first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
                city, state, postal = rng.choice(CITIES)
                order_id = make_id(rng)
                while self.find(marketplace, account, order_id) is not None:
                    order_id = make_id(rng)
                lines = []
                for n, (sku, title, price) in enumerate(rng.sample(PRODUCTS, rng.randint(1, max_lines))):
                    quantity = rng.randint(1, 3)
                    unit = Decimal(price)
                    lines.append(
                        Line(
                            line_id=f"{order_id.replace('-', '')[-8:]}{n + 1:02d}{rng.randint(10, 99)}",
                            sku=sku,
                            title=title,
                            quantity=quantity,
                            unit_price=unit,
                            tax=(unit * quantity * Decimal("0.08")).quantize(CENT),
                            shipping=Decimal("4.99") if n == 0 else Decimal("0.00"),
                        )
                    )
                order = Order(
                    marketplace=marketplace,
                    account=account,
                    order_id=order_id,
                    purchased_at=at,
                    updated_at=at,
                    currency=currency,
                    buyer_name=f"{first} {last}",
                    buyer_email=f"{first.lower()}.{last.lower()}{rng.randint(1, 999)}@example.com",
                    buyer_username=f"{first.lower()}_{last.lower()}{rng.randint(1, 99)}",
                    address={
                        "name": f"{first} {last}",
                        "line1": f"{rng.randint(1, 9999)} {rng.choice(('Pine', 'Oak', 'Main', 'Elm'))} St",
                        "city": city,
                        "state": state,
                        "postal_code": postal,
                        "country": "US",
                        "phone": f"+1206555{rng.randint(1000, 9999)}",
                    },
                    lines=lines,
                    paid_at=at if paid else None,
                )
                created.append(self.add(order))
        return created

    # ----------------------------------------------------------------------------- effects

    def apply_once(
        self,
        marketplace: str,
        account: str,
        operation: str,
        key: str,
        order_id: str | None,
        apply: Callable[[], Json],
    ) -> tuple[Json, bool]:
        """Apply a change once per dedupe key: (its result, whether this call applied it).

        `apply` runs under the lock and raises to refuse the change (nothing is recorded then)."""
        with self.lock:
            found = self.effects.get((marketplace, account, operation, order_id or "", key))
            if found is not None:
                found.attempts += 1
                return found.result, False
            result = apply()
            self.effects[(marketplace, account, operation, order_id or "", key)] = Effect(
                marketplace, account, operation, key, order_id, utcnow(), result=result
            )
            return result, True

    def effects_for(
        self, marketplace: str, account: str, key: str | None = None, order_id: str | None = None
    ) -> list[Effect]:
        with self.lock:
            return [
                e
                for e in self.effects.values()
                if e.marketplace == marketplace
                and e.account == account
                and (key is None or e.key == key or e.key.startswith(f"{key}:"))
                and (order_id is None or e.order_id == order_id)
            ]

    def violate(self, violation: Violation) -> None:
        with self.lock:
            self.violations.append(violation)

    def reset(self) -> None:
        with self.lock:
            self.orders.clear()
            self.effects.clear()
            self.violations.clear()
            self.objects.clear()
            self.unfinished.clear()


def monotonic() -> float:
    return time.monotonic()

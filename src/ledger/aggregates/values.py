"""Value objects and enumerations of the order domain.

Everything here is immutable and free of I/O. Amounts are `Decimal` with the order's currency; quantities are
whole units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class Marketplace(StrEnum):
    AMAZON = "amazon"
    EBAY = "ebay"
    WALMART = "walmart"
    RAKUTEN = "rakuten"
    JET = "jet"


class Source(StrEnum):
    """Through what a change reached the ledger."""

    API = "api"
    WEB = "web"
    BULK = "bulk"
    IMPORT = "import"
    MARKETPLACE = "marketplace"
    SYSTEM = "system"


class PaymentStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"


class OrderStatus(StrEnum):
    UNSHIPPED = "unshipped"
    PARTIALLY_SHIPPED = "partially_shipped"
    SHIPPED = "shipped"
    CANCELED = "canceled"


class CancelReason(StrEnum):
    BUYER_CANCELLED = "buyer_cancelled"
    OUT_OF_STOCK = "out_of_stock"
    ADDRESS_UNDELIVERABLE = "address_undeliverable"
    PRICING_ERROR = "pricing_error"
    FRAUD_SUSPECTED = "fraud_suspected"
    BUYER_UNPAID = "buyer_unpaid"
    OTHER = "other"


class RefundReason(StrEnum):
    CUSTOMER_RETURN = "customer_return"
    NOT_RECEIVED = "not_received"
    NOT_AS_DESCRIBED = "not_as_described"
    DAMAGED = "damaged"
    SHIPPING_ADJUSTMENT = "shipping_adjustment"
    GOODWILL = "goodwill"
    OTHER = "other"


class Requester(StrEnum):
    """Who asked for a cancellation."""

    SELLER = "seller"
    BUYER = "buyer"
    MARKETPLACE = "marketplace"


class DisputeKind(StrEnum):
    """`cancellation`: opened by a seller's cancellation of a paid eBay order; `claim`: a buyer's dispute."""

    CANCELLATION = "cancellation"
    CLAIM = "claim"


class DisputeOutcome(StrEnum):
    """How a dispute closed. For a cancellation dispute, `accepted` means the cancellation takes effect."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class SyncAction(StrEnum):
    """What the marketplace is told; the outbound queue and the acknowledgements speak these."""

    SHIP = "ship"
    CANCEL = "cancel"
    REFUND = "refund"
    OPEN_DISPUTE = "open_dispute"
    CLOSE_DISPUTE = "close_dispute"
    RESTOCK = "restock"
    ACKNOWLEDGE = "acknowledge"


class Carrier(StrEnum):
    UPS = "ups"
    USPS = "usps"
    FEDEX = "fedex"
    DHL = "dhl"
    ONTRAC = "ontrac"
    AMAZON_LOGISTICS = "amazon_logistics"
    ROYAL_MAIL = "royal_mail"
    CANADA_POST = "canada_post"
    OTHER = "other"


CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")
# Digits after the decimal point per ISO 4217; anything not listed has two.
MINOR_UNITS = {
    "JPY": 0,
    "KRW": 0,
    "CLP": 0,
    "ISK": 0,
    "HUF": 2,
    "BHD": 3,
    "KWD": 3,
    "JOD": 3,
    "OMR": 3,
}
ZERO = Decimal(0)
MAX_AMOUNT = Decimal(10) ** 12  # far above any order line; keeps typos such as 1e400 out of the ledger


def is_currency(code: str) -> bool:
    return bool(CURRENCY_PATTERN.match(code))


def is_valid_amount(amount: Decimal, currency: str) -> bool:
    """Finite, not negative, below MAX_AMOUNT, and no finer than the currency's minor unit."""
    if not amount.is_finite() or amount < 0 or amount >= MAX_AMOUNT:
        return False
    exponent = amount.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return -exponent <= MINOR_UNITS.get(currency, 2)


@dataclass(frozen=True, order=True)
class Money:
    amount: Decimal
    currency: str

    def __add__(self, other: Money) -> Money:
        self._check_same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._check_same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def _check_same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            msg = f"cannot combine {self.currency} with {other.currency}"
            raise ValueError(msg)

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


@dataclass(frozen=True)
class Buyer:
    name: str
    email: str


@dataclass(frozen=True)
class Address:
    name: str = ""
    line1: str = ""
    line2: str = ""
    city: str = ""
    state: str = ""
    postal_code: str = ""
    country: str = ""
    phone: str = ""


@dataclass(frozen=True)
class OrderLine:
    """One line as the marketplace sold it. `tax` and `shipping` are totals for the line, not per unit."""

    line_id: str
    sku: str
    quantity: int
    unit_price: Decimal
    tax: Decimal = ZERO
    shipping: Decimal = ZERO
    title: str = ""

    @property
    def item_total(self) -> Decimal:
        return self.unit_price * self.quantity

    @property
    def total(self) -> Decimal:
        return self.item_total + self.tax + self.shipping


@dataclass(frozen=True)
class LineQuantity:
    line_id: str
    quantity: int


@dataclass(frozen=True)
class RefundRequestLine:
    """What a refund asks for on one line; missing amounts are derived from the quantity."""

    line_id: str
    quantity: int = 0
    amount: Decimal | None = None


@dataclass(frozen=True)
class RefundLine:
    """What a refund gave back on one line, by component."""

    line_id: str
    quantity: int
    item_amount: Decimal
    tax_amount: Decimal = ZERO
    shipping_amount: Decimal = ZERO

    @property
    def total(self) -> Decimal:
        return self.item_amount + self.tax_amount + self.shipping_amount


@dataclass(frozen=True)
class ImportedOrder:
    """The marketplace's view of an order: what `import_order` takes and compares re-imports against."""

    marketplace_order_id: str
    purchased_at: datetime
    currency: str
    payment_status: PaymentStatus
    buyer: Buyer
    lines: tuple[OrderLine, ...]
    ship_to: Address | None = None
    paid_at: datetime | None = None


@dataclass(frozen=True)
class Context:
    """Who asks for a change, through what, and with which idempotency key. Every event carries it."""

    actor: str
    source: Source = Source.API
    idempotency_key: str | None = None
    effective_at: datetime | None = None  # the marketplace's own time for facts it reports
    # A fingerprint of the request behind the idempotency key: the same key with another request is refused.
    request_digest: str | None = None


class Role(StrEnum):
    """What an API key may do (the contract's table of roles)."""

    ADMIN = "admin"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    FINANCE = "finance"
    INTEGRATION = "integration"

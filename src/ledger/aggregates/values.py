"""Value objects and enumerations of the order domain.

Everything here is immutable and free of I/O. Amounts are `Decimal` with the order's currency; quantities are
whole units.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import TypeVar, overload

from ledger.aggregates.errors import InvalidAmountError, InvalidQuantityError


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
    CLI = "cli"


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


# Active ISO 4217 currencies (2026): the codes of money a buyer can pay in. Not: funds (BOV, CHE, CHW, CLF,
# COU, MXV, USN, UYI, UYW), precious metals, SDR and settlement units (XAU, XAG, XPD, XPT, XDR, XSU, XUA, XB*),
# the testing and "no currency" codes (XTS, XXX), withdrawn codes (ANG, BGN, CUC, HRK, SLL, ZWL, ...), and
# anything that is no ISO code at all (BTC).
ACTIVE_CURRENCIES = frozenset(
    """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF CHF
    CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD
    HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL
    LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP
    PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT
    TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
    """.split()  # noqa: SIM905 - ISO's table, as it reads
)
# Digits after the decimal point per ISO 4217; every other active currency has two.
MINOR_UNITS = {
    **dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF".split(), 0),  # noqa: SIM905
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),  # noqa: SIM905
}
ZERO = Decimal(0)
MAX_AMOUNT = Decimal(10) ** 12  # far above any order line; keeps typos such as 1e400 out of the ledger
# An amount as a client writes it (API.md, *Input, stated exactly*): ASCII digits, an optional leading `-`,
# and an optional `.` with digits. No exponent, underscore, space, `+` or other digits.
AMOUNT_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
_AMOUNT = re.compile(AMOUNT_PATTERN)
MAX_AMOUNT_TEXT = 40
_QUANTA = {places: Decimal(1).scaleb(-places) for places in set(MINOR_UNITS.values()) | {2}}
MAX_QUANTITY_DIGITS = 9


def is_currency(code: str) -> bool:
    return code in ACTIVE_CURRENCIES


def minor_units(currency: str) -> int:
    return MINOR_UNITS.get(currency, 2)


def parse_amount(text: str, field: str, currency: str | None = None) -> Decimal:
    """An amount written as API.md says, exactly as written (`12.50` keeps its two places); with `currency`,
    no more decimal places than its minor unit. InvalidAmountError naming `field` otherwise."""
    if len(text) > MAX_AMOUNT_TEXT or not _AMOUNT.fullmatch(text):
        msg = f"{field} {text[:MAX_AMOUNT_TEXT]!r} is not an amount: ASCII digits with an optional '.', e.g. 12.50"
        raise InvalidAmountError(msg, field)
    amount = Decimal(text)
    places = len(text.partition(".")[2])
    if currency is not None and places > minor_units(currency):
        msg = f"{field} {text} has {places} decimal places; {currency} has {minor_units(currency)}"
        raise InvalidAmountError(msg, field)
    return amount


def parse_quantity(text: str, field: str) -> int:
    """A whole number of units written in a text format (CSV, a form, the command line): ASCII digits only,
    no sign, space, underscore or other digits (Python's int() takes all of those). InvalidQuantityError."""
    if not text.isascii() or not text.isdigit() or len(text) > MAX_QUANTITY_DIGITS:
        raise InvalidQuantityError(f"{field} {text[:20]!r} is not a whole number", field)
    return int(text)


def normalize_id(text: str) -> str:
    """An identifier a client or marketplace sends (marketplace order id, line id, SKU, dispute id), as the
    ledger keeps it: NFKC-normalized, then trimmed. NFKC rather than NFC: it also folds compatibility look-alikes
    (fullwidth letters and digits, ligatures, superscripts) into the ASCII marketplaces issue, so one id is one id
    however a spreadsheet or keyboard encoded it; NFKC text is NFC text too. ASCII text is its own NFKC form."""
    return text.strip() if text.isascii() else unicodedata.normalize("NFKC", text).strip()


@overload
def normalized_lines(lines: tuple[LineT, ...]) -> tuple[LineT, ...]: ...
@overload
def normalized_lines(lines: None) -> None: ...
@overload
def normalized_lines(lines: tuple[LineT, ...] | None) -> tuple[LineT, ...] | None: ...
def normalized_lines(lines: tuple[LineT, ...] | None) -> tuple[LineT, ...] | None:
    """A command's lines with their `line_id`s normalized (see normalize_id), as the order keys its lines."""
    return None if lines is None else tuple(replace(x, line_id=normalize_id(x.line_id)) for x in lines)


def id_problem(text: str) -> str | None:
    """Why an identifier cannot be kept (empty, or holding an invisible control or format character such as
    U+0000, a tab or a zero-width space), or None."""
    if not text:
        return "is empty"
    if text.isprintable():  # no control (Cc) or format (Cf) character, nor any other unprintable one
        return None
    bad = next((c for c in text if unicodedata.category(c) in {"Cc", "Cf"}), None)
    return None if bad is None else f"contains the control character U+{ord(bad):04X}"


def is_valid_amount(amount: Decimal, currency: str) -> bool:
    """Finite, not negative, below MAX_AMOUNT, and no finer than the currency's minor unit."""
    if not amount.is_finite() or amount < 0 or amount >= MAX_AMOUNT:
        return False
    places = minor_units(currency)
    if amount.quantize(_QUANTA[places]) == amount:  # whole minor units (and at most 15 digits): exact
        return True
    exponent = amount.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return -exponent <= places


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


LineT = TypeVar("LineT", "LineQuantity", "RefundRequestLine")


def _with_normal_ids(line: OrderLine) -> OrderLine:
    """The line with its id and SKU normalized: itself when they are already (a new copy costs an import)."""
    line_id, sku = normalize_id(line.line_id), normalize_id(line.sku)
    if line_id == line.line_id and sku == line.sku:
        return line
    return replace(line, line_id=line_id, sku=sku)


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
    # The marketplace's own latest ship date (Amazon `LatestShipDate`, eBay's earliest line `shipByDate`), when
    # its API gives one. Not compared on re-import: a marketplace may move it (holidays, a buyer's request).
    ship_by: datetime | None = None

    def __post_init__(self) -> None:
        """Every way an order arrives (API, CLI file, marketplace import) keys it by its normalized ids, so
        one order id in NFC, NFD, fullwidth or with a trailing space is one order, and one SKU one SKU."""
        object.__setattr__(self, "marketplace_order_id", normalize_id(self.marketplace_order_id))
        object.__setattr__(self, "lines", tuple(_with_normal_ids(x) for x in self.lines))

    def with_personal(self, buyer: Buyer, ship_to: Address | None) -> ImportedOrder:
        """This order with other personal fields (their sealed tokens): `dataclasses.replace` without
        normalizing the ids again, which they are already (a bulk import's hot path)."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        object.__setattr__(copy, "buyer", buyer)
        object.__setattr__(copy, "ship_to", ship_to)
        return copy


@dataclass(frozen=True)
class Context:
    """Who asks for a change, through what, and with which idempotency key. Every event carries it."""

    actor: str
    source: Source = Source.API
    idempotency_key: str | None = None
    effective_at: datetime | None = None  # the marketplace's own time for facts it reports
    # A fingerprint of the request behind the idempotency key: the same key with another request is refused.
    request_digest: str | None = None
    # The order's account has sync with its marketplace off: the change is recorded, never sent (NotSent.SYNC_OFF).
    # The application sets it from the account when it runs a command; callers leave it alone.
    sync_off: bool = False


class Role(StrEnum):
    """What an API key may do (the contract's table of roles)."""

    ADMIN = "admin"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    FINANCE = "finance"
    INTEGRATION = "integration"


@dataclass(frozen=True)
class Divergence:
    """A field on which the marketplace and the ledger disagree (`ledger sync check`), with both values."""

    field: str
    ledger: str
    marketplace: str

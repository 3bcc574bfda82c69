"""Which adapter speaks for a marketplace account, where it reaches the marketplace, and as whom.

Settings (all optional; see README, "Marketplaces: sandbox, import and sync"):

- `LEDGER_MARKETPLACE_URL`: one base URL for every account, e.g. the sandbox `http://127.0.0.1:8700`.
- `LEDGER_AMAZON_URL`, `LEDGER_EBAY_URL`, `LEDGER_WALMART_URL`, `LEDGER_RAKUTEN_URL`, `LEDGER_JET_URL`: a base
  URL for one marketplace's accounts, overriding `LEDGER_MARKETPLACE_URL`.
- `LEDGER_MARKETPLACE_CREDENTIALS`: the path of a JSON file of credentials, an object keyed by account id
  (a marketplace name as key gives the default for that marketplace's accounts), each value an object of
  strings the adapter knows (`{"<account id>": {"client_id": "...", "refresh_token": "..."}}`). The file
  is read when a client is made; its content is never printed, logged or kept in `SyncSettings`.
- `LEDGER_MARKETPLACE_TIMEOUT`: seconds an adapter waits for one marketplace response (default 10).

The import and dispatch settings live here too so that one object, read once at start-up, is handed down.
Durations are seconds, or a number with a unit: `90s`, `15m`, `2h`, `30d`.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.values import Marketplace
from ledger.config import ConfigError
from ledger.integrations.base import Endpoint, MarketplaceClient


@dataclass(frozen=True)
class MarketplaceEntry:
    """Everything the integrations need to know of one marketplace. Its domain rules (what an order on it
    allows) are its `MarketplacePolicy` in `aggregates/policies.py`."""

    adapter: tuple[str, str]
    """(module, class) of its adapter, imported when first asked for"""
    operations: Mapping[str, tuple[float, int]]
    """The marketplace's calls by its own name, each with its token bucket (requests per second, burst)"""
    sends: Mapping[str, str]
    """The call that sends each sync action; an action not here is answered without a call (never limited)"""
    polls: Mapping[str, str] = field(default_factory=dict)
    """The call that asks after an action the marketplace took for later (`Submitted`: an Amazon feed)"""
    limits_per_account: bool = True
    """True: each seller account has its own buckets (Amazon's usage plans are per selling partner); False:
    one application's calls share them, whichever account they are for (eBay's daily call limits)"""
    acknowledges_orders: bool = False
    """Walmart cancels an order the seller does not acknowledge: every order it sends is acknowledged
    through the outbound queue (the importer leaves it alone)"""
    takes_restock_choice: bool = False
    """Rakuten's cancellation request says whether to put the units back into the marketplace's stock"""
    in_effect_codes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """By action, the refusals that may mean "this is so already, nothing left to do" (Amazon's 18041, "shipped
    or cancelled already"): the dispatcher then reads the order (`order_state`) and, when the marketplace holds
    the change already, finishes the item as acknowledged instead of dead (`integrations/in_effect.py`)"""


# A rate of a daily limit, spread over the day.
def _per_day(calls: int) -> float:
    return calls / 86400


# THE table of marketplaces. Adding one: a `Marketplace` member and a `MarketplacePolicy` (the domain), an
# entry here, its adapter module, and its sandbox module; tests/unit/test_marketplace_table.py checks them.
# Buckets live in the dispatcher process (its dispatcher threads share them); LEDGER_SYNC_PROCESSES dispatcher
# processes each take their share; LEDGER_SYNC_RATE_LIMITS overrides a figure. docs/marketplaces.md lists them.
MARKETPLACES: dict[Marketplace, MarketplaceEntry] = {
    # Amazon SP-API, as published in the models (marketplace-specs/amazon): Orders v0 and Feeds 2021-06-30.
    # Cancellations, refunds and acknowledgements are feeds (createFeed; createFeedDocument and the upload
    # come with it, under looser limits); their results are asked after with getFeed. getOrders and
    # getOrderItems are the importer's (each adapter names its reads through `RestTransport.gated`).
    Marketplace.AMAZON: MarketplaceEntry(
        adapter=("ledger.integrations.amazon", "AmazonClient"),
        operations={
            "confirmShipment": (2.0, 10),
            "createFeed": (0.0083, 15),
            "getFeed": (2.0, 15),
            "getOrders": (0.0167, 20),
            "getOrderItems": (0.5, 30),
        },
        sends={
            "ship": "confirmShipment",
            "cancel": "createFeed",
            "refund": "createFeed",
            "acknowledge": "createFeed",
        },
        polls={"cancel": "getFeed", "refund": "getFeed", "acknowledge": "getFeed"},
        # The cancellation feed's processing report: "Cannot cancel N of item X: shipped or cancelled already."
        in_effect_codes={"cancel": frozenset({"18041"})},
    ),
    # eBay publishes daily call limits per application (Sell Fulfillment API, Post-Order API); 100,000 a day
    # each is assumed, spread over the day, with an assumed burst of 10. A refund is asked after on the order.
    Marketplace.EBAY: MarketplaceEntry(
        adapter=("ledger.integrations.ebay", "EbayClient"),
        operations={
            "createShippingFulfillment": (_per_day(100_000), 10),
            "issueRefund": (_per_day(100_000), 10),
            "getOrder": (_per_day(100_000), 10),
            "createCancellation": (_per_day(100_000), 10),
            "acceptPaymentDispute": (_per_day(100_000), 10),
            "getOrders": (_per_day(100_000), 10),
            "getPaymentDisputeSummaries": (_per_day(100_000), 10),
            "getPaymentDispute": (_per_day(100_000), 10),
        },
        sends={
            "ship": "createShippingFulfillment",
            "refund": "issueRefund",
            "cancel": "createCancellation",
            "close_dispute": "acceptPaymentDispute",
        },
        polls={"refund": "getOrder"},
        limits_per_account=False,
    ),
    # Walmart, Rakuten, Jet: per seller and per call; their figures are not in the specs we hold, so these are
    # assumed and conservative (docs/marketplaces.md says so).
    Marketplace.WALMART: MarketplaceEntry(
        adapter=("ledger.integrations.walmart", "WalmartClient"),
        operations={
            "acknowledgeOrders": (1.0, 10),
            "shippingUpdates": (1.0, 10),
            "cancelOrderLines": (1.0, 10),
            "refundOrderLines": (1.0, 10),
            "getAllOrders": (1.0, 10),
        },
        sends={
            "acknowledge": "acknowledgeOrders",
            "ship": "shippingUpdates",
            "cancel": "cancelOrderLines",
            "refund": "refundOrderLines",
        },
        acknowledges_orders=True,
        # A line with fewer open units than the cancellation names (Walmart cancelled them itself, say).
        in_effect_codes={"cancel": frozenset({"INVALID_REQUEST_CONTENT.GMP_ORDER_API"})},
    ),
    Marketplace.RAKUTEN: MarketplaceEntry(
        adapter=("ledger.integrations.rakuten", "RakutenClient"),
        operations={
            "updateOrderShipping": (1.0, 5),
            "cancelOrder": (1.0, 5),
            "refundOrder": (1.0, 5),
            "searchOrder": (1.0, 5),
        },
        sends={"ship": "updateOrderShipping", "cancel": "cancelOrder", "refund": "refundOrder"},
        takes_restock_choice=True,
        # An item with fewer open units than the cancellation names (Rakuten cancelled them itself, say).
        in_effect_codes={"cancel": frozenset({"ORDER_EXT_API_UPDATE_ERROR_002"})},
    ),
    Marketplace.JET: MarketplaceEntry(
        adapter=("ledger.integrations.jet", "JetClient"),
        operations={
            "shipOrder": (1.0, 5),
            "cancelOrder": (1.0, 5),
            "createRefund": (1.0, 5),
            "listOrders": (1.0, 5),
        },
        sends={"ship": "shipOrder", "cancel": "cancelOrder", "refund": "createRefund"},
        # "order ... is already cancelled" (or has shipped: the order's state tells which).
        in_effect_codes={"cancel": frozenset({"BadRequest"})},
    ),
}


def entry_for(marketplace: Marketplace | str) -> MarketplaceEntry:
    return MARKETPLACES[Marketplace(marketplace)]


def operation_for(marketplace: str, action: str, *, polling: bool = False) -> str:
    """The call an item makes, as `marketplace.call` (`amazon.confirmShipment`; `amazon.getFeed` when it asks
    after a feed); an action the marketplace is answered without a call for: `marketplace.action`."""
    entry = entry_for(marketplace)
    call = (polling and entry.polls.get(action)) or entry.sends.get(action)
    return f"{marketplace}.{call or action}"


# Every marketplace's buckets by operation (`amazon.confirmShipment`, ...), as the dispatcher uses them.
RATE_LIMITS: dict[str, tuple[float, int]] = {
    f"{marketplace.value}.{call}": limit
    for marketplace, entry in MARKETPLACES.items()
    for call, limit in entry.operations.items()
}

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# "amazon.confirmShipment=2/10": operation = rate per second / burst
_RATE = re.compile(r"([a-z]+\.[A-Za-z_]+)=(\d+(?:\.\d+)?)/(\d+)")


class MarketplaceNotConfiguredError(LedgerError):
    """No URL is set for the account's marketplace, or its adapter is not installed."""

    code = "marketplace-not-configured"


class MissingCredentialsError(MarketplaceNotConfiguredError):
    """The account has no credentials in LEDGER_MARKETPLACE_CREDENTIALS: a configuration error, not a failure
    worth retrying (the marketplace was never reached)."""

    code = "marketplace-credentials-missing"


class SyncSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the importer and the dispatcher read from the environment (never credentials themselves)."""

    marketplace_url: str | None = None
    """LEDGER_MARKETPLACE_URL"""
    marketplace_urls: dict[str, str] = msgspec.field(default_factory=dict)
    """LEDGER_<MARKETPLACE>_URL, by marketplace name"""
    credentials_file: Path | None = None
    """LEDGER_MARKETPLACE_CREDENTIALS"""
    timeout_seconds: float = 10.0
    """LEDGER_MARKETPLACE_TIMEOUT"""
    import_interval: float = 900.0
    """LEDGER_IMPORT_INTERVAL: time between two import rounds of the scheduled importer (15 minutes)"""
    import_overlap: float = 300.0
    """LEDGER_IMPORT_OVERLAP: how far before its cursor a round asks again (marketplaces' clocks and lag)"""
    import_lookback: float = 30 * 86400.0
    """LEDGER_IMPORT_LOOKBACK: how far back the first round of a new account looks"""
    sync_max_attempts: int = 8
    """LEDGER_SYNC_MAX_ATTEMPTS: sends of one item before it is dead"""
    sync_lease: float = 300.0
    """LEDGER_SYNC_LEASE: an in-flight item not updated for this long is taken again (its dispatcher died)"""
    sync_backoff: float = 5.0
    """LEDGER_SYNC_BACKOFF: the first retry delay; doubled per attempt, with jitter"""
    sync_backoff_max: float = 3600.0
    """LEDGER_SYNC_BACKOFF_MAX: the longest retry delay"""
    dispatch_interval: float = 1.0
    """LEDGER_DISPATCH_INTERVAL: how often an idle dispatcher looks for due items"""
    sync_since: datetime | None = None
    """LEDGER_SYNC_SINCE: items of changes made before this time are never sent (first install)"""
    sync_check_interval: float = 3600.0
    """LEDGER_SYNC_CHECK_INTERVAL: time between two reconciliation rounds (`sync check`) of the worker"""
    rate_limits: dict[str, tuple[float, int]] = msgspec.field(default_factory=dict)
    """LEDGER_SYNC_RATE_LIMITS: overrides of operations' buckets, `amazon.confirmShipment=2/10`"""
    processes: int = 1
    """LEDGER_SYNC_PROCESSES: dispatcher processes running against one database; each takes 1/N of every
    bucket's rate and burst, so together they keep to the marketplace's limits"""
    metrics_port: int | None = None
    """LEDGER_DISPATCHER_METRICS_PORT: `ledger dispatch` serves the queue's metrics at /metrics on this port"""
    metrics_host: str = "127.0.0.1"
    """LEDGER_DISPATCHER_METRICS_HOST: the address it listens on"""

    def __post_init__(self) -> None:
        if self.sync_max_attempts < 1:
            raise ConfigError(f"LEDGER_SYNC_MAX_ATTEMPTS must be at least 1, got {self.sync_max_attempts}")
        if self.processes < 1:
            raise ConfigError(f"LEDGER_SYNC_PROCESSES must be at least 1, got {self.processes}")
        if self.sync_since is not None and self.sync_since.tzinfo is None:
            raise ConfigError("LEDGER_SYNC_SINCE needs a time zone, e.g. 2026-11-20T00:00:00Z")

    def url_for(self, marketplace: Marketplace) -> str | None:
        return self.marketplace_urls.get(marketplace.value) or self.marketplace_url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SyncSettings:
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            return source.get(name, "").strip() or None

        def duration(name: str, default: float) -> float:
            raw = get(name)
            return default if raw is None else parse_duration(raw, name)

        urls = {m.value: url for m in Marketplace if (url := get(f"LEDGER_{m.value.upper()}_URL"))}
        credentials = get("LEDGER_MARKETPLACE_CREDENTIALS")
        attempts = get("LEDGER_SYNC_MAX_ATTEMPTS")
        processes = get("LEDGER_SYNC_PROCESSES")
        since = get("LEDGER_SYNC_SINCE")
        try:
            max_attempts = int(attempts) if attempts else 8
        except ValueError:
            raise ConfigError(f"LEDGER_SYNC_MAX_ATTEMPTS={attempts!r} is not a whole number") from None
        if processes is not None and not processes.isdigit():
            raise ConfigError(f"LEDGER_SYNC_PROCESSES={processes!r} is not a whole number")
        metrics_port = get("LEDGER_DISPATCHER_METRICS_PORT")
        if metrics_port is not None and not (metrics_port.isdigit() and 0 < int(metrics_port) < 65536):
            raise ConfigError(f"LEDGER_DISPATCHER_METRICS_PORT={metrics_port!r} is not a port number")
        try:
            since_at = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
        except ValueError:
            raise ConfigError(f"LEDGER_SYNC_SINCE={since!r} is not an ISO 8601 time") from None
        return cls(
            marketplace_url=get("LEDGER_MARKETPLACE_URL"),
            marketplace_urls=urls,
            credentials_file=Path(credentials).expanduser() if credentials else None,
            timeout_seconds=duration("LEDGER_MARKETPLACE_TIMEOUT", 10.0),
            import_interval=duration("LEDGER_IMPORT_INTERVAL", 900.0),
            import_overlap=duration("LEDGER_IMPORT_OVERLAP", 300.0),
            import_lookback=duration("LEDGER_IMPORT_LOOKBACK", 30 * 86400.0),
            sync_max_attempts=max_attempts,
            sync_lease=duration("LEDGER_SYNC_LEASE", 300.0),
            sync_backoff=duration("LEDGER_SYNC_BACKOFF", 5.0),
            sync_backoff_max=duration("LEDGER_SYNC_BACKOFF_MAX", 3600.0),
            dispatch_interval=duration("LEDGER_DISPATCH_INTERVAL", 1.0),
            sync_since=since_at,
            sync_check_interval=duration("LEDGER_SYNC_CHECK_INTERVAL", 3600.0),
            rate_limits=parse_rate_limits(get("LEDGER_SYNC_RATE_LIMITS") or ""),
            processes=int(processes) if processes else 1,
            metrics_port=int(metrics_port) if metrics_port else None,
            metrics_host=get("LEDGER_DISPATCHER_METRICS_HOST") or "127.0.0.1",
        )


def parse_duration(text: str, name: str) -> float:
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ConfigError(f"{name}={text!r} is not a duration: use seconds, or e.g. 90s, 15m, 2h, 30d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_rate_limits(text: str) -> dict[str, tuple[float, int]]:
    limits: dict[str, tuple[float, int]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _RATE.fullmatch(part)
        if match is None or float(match.group(2)) <= 0 or int(match.group(3)) < 1:
            msg = f"LEDGER_SYNC_RATE_LIMITS: {part!r} is not OPERATION=RATE/BURST, e.g. amazon.confirmShipment=2/10"
            raise ConfigError(msg)
        if match.group(1) not in RATE_LIMITS:
            raise ConfigError(
                f"LEDGER_SYNC_RATE_LIMITS: no operation {match.group(1)!r}; one of {', '.join(RATE_LIMITS)}"
            )
        limits[match.group(1)] = (float(match.group(2)), int(match.group(3)))
    return limits


def load_credentials(settings: SyncSettings, account_id: str, marketplace: Marketplace) -> dict[str, str]:
    """The account's credentials from LEDGER_MARKETPLACE_CREDENTIALS (none when unset); read each time."""
    if settings.credentials_file is None:
        return {}
    try:
        data: Any = json.loads(settings.credentials_file.read_text())
    except OSError as e:
        raise ConfigError(f"LEDGER_MARKETPLACE_CREDENTIALS: cannot read the file: {e.strerror}") from None
    except ValueError:
        raise ConfigError("LEDGER_MARKETPLACE_CREDENTIALS: the file is not JSON") from None
    if not isinstance(data, dict):
        raise ConfigError("LEDGER_MARKETPLACE_CREDENTIALS: the file must hold an object keyed by account id")
    entry = data.get(account_id, data.get(marketplace.value, {}))
    if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
        raise ConfigError(
            f"LEDGER_MARKETPLACE_CREDENTIALS: the entry of {account_id} must map names to strings"
        )
    return {str(k): v for k, v in entry.items()}


def endpoint_for(account_id: str, marketplace: Marketplace, settings: SyncSettings) -> Endpoint:
    url = settings.url_for(marketplace)
    if not url:
        msg = (
            f"no URL for {marketplace.value}: set LEDGER_MARKETPLACE_URL "
            f"or LEDGER_{marketplace.value.upper()}_URL"
        )
        raise MarketplaceNotConfiguredError(msg)
    credentials = load_credentials(settings, account_id, marketplace)
    if not credentials:
        where = (
            "set LEDGER_MARKETPLACE_CREDENTIALS to a JSON file with an entry for it"
            if settings.credentials_file is None
            else f"add an entry keyed by its id (or {marketplace.value!r}) to LEDGER_MARKETPLACE_CREDENTIALS"
        )
        raise MissingCredentialsError(
            f"account {account_id} ({marketplace.value}) has no credentials: {where}"
        )
    return Endpoint(
        base_url=url.rstrip("/"), credentials=credentials, timeout_seconds=settings.timeout_seconds
    )


# How the importer and the dispatcher get an account's adapter (`client_for`, or a test's own).
ClientFactory = Callable[[Any, SyncSettings], MarketplaceClient]


def client_for(account: Any, settings: SyncSettings) -> MarketplaceClient:
    """The adapter for `account` (anything with `account_id` and `marketplace`, e.g. AccountDetails)."""
    marketplace = Marketplace(account.marketplace)
    module_name, class_name = MARKETPLACES[marketplace].adapter
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise MarketplaceNotConfiguredError(f"no adapter for {marketplace.value} is installed") from None
    cls = getattr(module, class_name)
    client: MarketplaceClient = cls(endpoint_for(str(account.account_id), marketplace, settings))
    return client

"""How the pages say things to people: names of marketplaces and carriers, carriers' tracking links, what the
marketplace said of each shipment, and the order's events as sentences (the raw fields go behind a disclosure).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote
from uuid import UUID

from markupsafe import Markup

from ledger.aggregates.order import Shipment, SyncEntry
from ledger.application.queries import HistoryEntry

TIMES = "\N{MULTIPLICATION SIGN}"
MARKETPLACE_NAMES = {
    "amazon": "Amazon",
    "ebay": "eBay",
    "walmart": "Walmart",
    "rakuten": "Rakuten",
    "jet": "Jet",
}
CARRIER_NAMES = {
    "ups": "UPS",
    "usps": "USPS",
    "fedex": "FedEx",
    "dhl": "DHL",
    "ontrac": "OnTrac",
    "amazon_logistics": "Amazon Logistics",
    "royal_mail": "Royal Mail",
    "canada_post": "Canada Post",
    "other": "Other",
}
TRACKING_URLS = {
    "ups": "https://www.ups.com/track?tracknum={}",
    "usps": "https://tools.usps.com/go/TrackConfirmAction?tLabels={}",
    "fedex": "https://www.fedex.com/fedextrack/?trknbr={}",
    "dhl": "https://www.dhl.com/global-en/home/tracking/tracking-express.html?tracking-id={}",
    "ontrac": "https://www.ontrac.com/tracking/?number={}",
    "amazon_logistics": "https://track.amazon.com/tracking/{}",
    "royal_mail": "https://www.royalmail.com/track-your-item#/tracking-results/{}",
    "canada_post": "https://www.canadapost-postescanada.ca/track-reperage/en#/details/{}",
}
NOT_SENT = {
    "third_party_managed": "{name} fulfils this order (third party managed)",
    "from_marketplace": "{name} told the ledger of it",
    "no_call": "{name} has no way to receive it",
    "voided": "the shipment was voided",
}
ACTION_NAMES = {
    "ship": "the shipment",
    "cancel": "the cancellation",
    "refund": "the refund",
    "open_dispute": "the dispute",
    "close_dispute": "the dispute's outcome",
    "restock": "the restock",
    "acknowledge": "the order's acknowledgement",
}


def label(value: object) -> str:
    """An enum value as words: `out_of_stock` is "Out of stock"."""
    return str(value).replace("_", " ").capitalize()


def reason(value: str) -> str:
    """A reason as words: a coded one (`out_of_stock`) as a label, a person's own text as they wrote it."""
    return label(value) if re.fullmatch(r"[a-z_]+", value) else value


def marketplace_name(value: str) -> str:
    return MARKETPLACE_NAMES.get(value, label(value))


def carrier_name(value: str) -> str:
    return CARRIER_NAMES.get(value, label(value))


def tracking_url(carrier: str, number: str) -> str | None:
    """The carrier's public tracking page for `number`, or None for a carrier without one."""
    pattern = TRACKING_URLS.get(carrier)
    return pattern.format(quote(number, safe="")) if pattern else None


def time_tag(value: datetime | None) -> Markup:
    """A time in UTC, which static/app.js shows in the viewer's zone (the UTC text stays on hover)."""
    if value is None:
        return Markup("")
    utc = value.strftime("%Y-%m-%d %H:%M UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(value.isoformat(), utc, utc)


def _units(lines: Any) -> str:
    """`[{line_id, quantity}, ...]` as "line 1 x 2, line 2 x 1" (with a multiplication sign)."""
    if not isinstance(lines, list):
        return ""
    parts = [
        f"line {item.get('line_id')} {TIMES} {item.get('quantity')}"
        for item in lines
        if isinstance(item, dict) and item.get("quantity")
    ]
    return ", ".join(parts)


@dataclass(frozen=True)
class ShipmentRow:
    """One shipment as the order page's table shows it."""

    carrier: str
    shipment_id: UUID
    tracking_number: str
    tracking_url: str | None
    units: str
    shipped_at: datetime
    marketplace: str  # sent, pending, refused or not sent, in words
    state: str  # sent | pending | refused | not-sent: a class for the page's colours


def shipment_rows(
    shipments: tuple[Shipment, ...], sync: tuple[SyncEntry, ...], marketplace: str
) -> list[ShipmentRow]:
    """The shipments, each with where its confirmation stands with the marketplace (the order's `sync`)."""
    rows = []
    for s in shipments:
        entry = next((e for e in sync if e.action == "ship" and e.reference == str(s.shipment_id)), None)
        said, state = _said(entry, marketplace_name(marketplace))
        rows.append(
            ShipmentRow(
                carrier=s.carrier_name or carrier_name(s.carrier),
                shipment_id=s.shipment_id,
                tracking_number=s.tracking_number,
                tracking_url=tracking_url(s.carrier, s.tracking_number),
                units=", ".join(f"line {line.line_id} {TIMES} {line.quantity}" for line in s.lines),
                shipped_at=s.shipped_at,
                marketplace=said,
                state=state,
            )
        )
    return rows


def _said(entry: SyncEntry | None, name: str) -> tuple[str, str]:
    message = (entry.message or entry.error_code or "no reason given") if entry else ""
    match entry.state if entry else "pending":
        case "sent":
            return f"Sent: {name} accepted it", "sent"
        case "failing":
            return f"Not sent yet: {message} (it will be tried again)", "pending"
        case "dead":
            return f"Refused by {name}: {message}", "refused"
        case "not_sent":
            why = NOT_SENT.get(entry.reason or "", label(entry.reason or "")) if entry else ""
            return f"Not sent: {why.format(name=name)}", "not-sent"
    return f"Pending: not answered by {name} yet", "pending"


# ------------------------------------------------------------------------------------------- timeline


@dataclass(frozen=True)
class TimelineEntry:
    """One event as a sentence, with its raw fields for the disclosure."""

    title: str
    text: str
    entry: HistoryEntry
    details: list[tuple[str, str]]


def _words(type_name: str) -> str:
    return label(re.sub(r"(?<!^)(?=[A-Z])", "_", type_name).lower())


def _sentence(e: HistoryEntry, marketplace: str, currency: str) -> tuple[str, str]:
    d = e.data
    name = marketplace_name(marketplace)
    units = _units(d.get("lines"))
    match e.type:
        case "Imported":
            count = sum(int(line.get("quantity", 0)) for line in d.get("lines", []) if isinstance(line, dict))
            return "Imported", f"Order imported from {name}: {count} unit(s)."
        case "PaymentCleared":
            return "Payment cleared", f"{name} reported the payment."
        case "Shipped":
            tracking = f", tracking {d.get('tracking_number')}" if d.get("tracking_number") else ""
            return "Shipped", f"Shipped {units} by {carrier_name(str(d.get('carrier', '')))}{tracking}."
        case "CancellationRequested":
            return "Cancellation requested", f"The {d.get('requested_by', 'buyer')} asked to cancel {units}."
        case "Cancelled":
            by = f" (asked by the {d.get('requested_by')})" if d.get("requested_by") else ""
            restocked = "; restocked on the marketplace" if d.get("restocked_on_marketplace") else ""
            return "Cancelled", f"Cancelled {units}{by}{restocked}."
        case "Refunded":
            return "Refunded", f"Refunded {d.get('total')} {currency}{': ' + units if units else ''}."
        case "DisputeOpened":
            kind = "cancellation dispute" if d.get("kind") == "cancellation" else "buyer's claim"
            return "Dispute opened", f"A {kind} opened{': ' + units if units else ''}."
        case "DisputeClosed":
            return "Dispute closed", f"The dispute closed: {str(d.get('outcome', '')).replace('_', ' ')}."
        case "Restocked":
            return "Restocked", f"Put back into stock: {units}."
        case "MarketplaceAcknowledged":
            what = ACTION_NAMES.get(str(d.get("action")), "a change")
            return "Marketplace accepted", f"{name} accepted {what}."
        case "MarketplaceRejected":
            what = ACTION_NAMES.get(str(d.get("action")), "a change")
            again = "" if d.get("permanent") else " It will be tried again."
            return "Marketplace refused", f"{name} refused {what}: {d.get('message')}.{again}"
        case "ShipmentVoided":
            of = f" of {units}" if units else ""
            return "Shipment voided", f"The shipment{of} was voided: its units may ship again."
        case "SyncItemDied":
            what = ACTION_NAMES.get(str(d.get("action")), "a change")
            return "Sync gave up", f"The ledger stopped trying to tell {name} of {what}: it needs you."
        case "SyncItemResolved":
            what = ACTION_NAMES.get(str(d.get("action")), "a change")
            return "Resolved by hand", f"{name} was told of {what} some other way."
    return _words(e.type), ""


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return _units(value) or ", ".join(str(v) for v in value[:10] if not isinstance(v, dict))
    return str(value)[:200]


def timeline(history: list[HistoryEntry], marketplace: str, currency: str) -> list[TimelineEntry]:
    """Newest first, each event as a sentence and its fields (nested objects are in the API's history)."""
    entries = []
    for e in reversed(history):
        title, text = _sentence(e, marketplace, currency)
        details = [
            (label(k), _shown(v))
            for k, v in e.data.items()
            if v not in (None, "", [], {}) and not isinstance(v, dict)
        ]
        entries.append(TimelineEntry(title, text, e, details))
    return entries

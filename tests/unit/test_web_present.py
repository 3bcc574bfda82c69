"""How the web page words an order's events and shipments (api/web/present.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from ledger.aggregates.order import Shipment, SyncEntry
from ledger.aggregates.values import LineQuantity
from ledger.api.web import present
from ledger.application.queries import HistoryEntry

AT = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)


def _entry(type_name: str, **data: object) -> HistoryEntry:
    return HistoryEntry(1, type_name, AT, None, "ops", "web", None, None, dict(data), "h", "p")


def test_events_read_as_sentences_and_their_fields_stay_behind_details() -> None:
    """A shipment, a refusal and a dead change are sentences naming the marketplace as it spells itself; the
    raw fields (ids, booleans as yes/no) are the details; an unknown event still gets words."""
    shipment_id = str(uuid4())
    history = [
        _entry(
            "Shipped",
            shipment_id=shipment_id,
            carrier="ups",
            tracking_number="1Z9",
            lines=[{"line_id": "1", "quantity": 2}],
        ),
        _entry(
            "MarketplaceRejected",
            action="ship",
            reference=shipment_id,
            error_code="x",
            message="Bad",
            permanent=False,
        ),
        _entry("SyncItemDied", action="ship", reference=shipment_id),
        _entry("ParcelWeighed", shipment_id=shipment_id),
    ]
    newest, died, refused, shipped = present.timeline(history, "ebay", "USD")
    assert (shipped.title, shipped.text) == (
        "Shipped",
        "Shipped line 1 \N{MULTIPLICATION SIGN} 2 by UPS, tracking 1Z9.",
    )
    assert refused.text == "eBay refused the shipment: Bad. It will be tried again."
    assert died.text == "The ledger stopped trying to tell eBay of the shipment: it needs you."
    assert (newest.title, newest.text) == ("Parcel weighed", "")
    assert ("Permanent", "no") in refused.details
    assert ("Shipment id", shipment_id) in shipped.details


def test_a_shipment_says_what_the_marketplace_said_and_links_its_carrier() -> None:
    """Sent, refused for good with its message, failing, pending, and not sent with the reason; UPS links to
    its tracking page and a carrier without one has no link."""
    ups = Shipment(uuid4(), "ups", "1Z999AA10123456784", "", AT, (LineQuantity("1", 1),))
    other = Shipment(uuid4(), "other", "LOCAL-1", "", AT, (LineQuantity("2", 1),))

    def entry(
        shipment: Shipment, state: str, reason: str | None = None, message: str | None = None
    ) -> SyncEntry:
        return SyncEntry("ship", str(shipment.shipment_id), state, reason, None, None, message, AT)

    sync = (entry(ups, "sent"), entry(other, "dead", message="No such carrier"))
    first, second = present.shipment_rows((ups, other), sync, "walmart")
    assert (first.state, first.marketplace) == ("sent", "Sent: Walmart accepted it")
    assert first.tracking_url == "https://www.ups.com/track?tracknum=1Z999AA10123456784"
    assert (second.state, second.marketplace) == ("refused", "Refused by Walmart: No such carrier")
    assert second.tracking_url is None
    [pending] = present.shipment_rows((ups,), (), "amazon")
    assert pending.state == "pending"
    [failing] = present.shipment_rows((ups,), (entry(ups, "failing", message="HTTP 503"),), "amazon")
    assert failing.marketplace == "Not sent yet: HTTP 503 (it will be tried again)"
    [managed] = present.shipment_rows((ups,), (entry(ups, "not_sent", "third_party_managed"),), "amazon")
    assert managed.marketplace == "Not sent: Amazon fulfils this order (third party managed)"

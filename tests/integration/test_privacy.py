"""Crypto-shredding: personal data is stored encrypted under a per-buyer key; forgetting the buyer destroys the
key, after which reads show it erased, the history still verifies and re-imports are still recognized."""

from __future__ import annotations

import base64
import dataclasses
import io
import secrets
import sys
import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from order_scenarios import catch_up

from ledger.aggregates.errors import ImportConflictError
from ledger.aggregates.values import (
    Address,
    Buyer,
    Context,
    ImportedOrder,
    Marketplace,
    OrderLine,
    PaymentStatus,
)
from ledger.application.commands import ImportItem
from ledger.audit.verification import verify_order
from ledger.cli.main import main
from ledger.eventstore.keys_store import ERASED, forget, key_id_for, token_key_id
from ledger.projections.all_sales import AllSalesProjection
from ledger.projections.all_sales_view import AllSalesView, SalesFilter

pytestmark = pytest.mark.postgres

CTX = Context(actor="privacy-test")
EMAIL = "Ann.Lee@Example.com"
SHIP_TO = Address(name="Ann Lee", line1="1 Main St", city="Springfield", postal_code="12345", country="US")


@dataclasses.dataclass
class Shop:
    app: object
    seller: str
    account_id: object

    def imported(self, marketplace_order_id: str, **changes: object) -> ImportedOrder:
        order = ImportedOrder(
            marketplace_order_id=marketplace_order_id,
            purchased_at=datetime(2026, 11, 20, 10, tzinfo=UTC),
            currency="USD",
            payment_status=PaymentStatus.PAID,
            buyer=Buyer("Ann Lee", EMAIL),
            lines=(OrderLine("A", "MUG-1", 2, Decimal("12.50")),),
            ship_to=SHIP_TO,
        )
        return dataclasses.replace(order, **changes)

    def import_(self, order: ImportedOrder):
        return self.app.import_order(CTX, self.account_id, order)


@pytest.fixture
def shop(app):
    """A seller of the test's own with an eBay account, on the run's schema."""
    seller = f"privacy-{secrets.token_hex(4)}"
    account = app.register_account(CTX, seller=seller, marketplace=Marketplace.EBAY, name="main")
    return Shop(app, seller, account.account_id)


def stored_states(connect, order_id) -> list[str]:
    with connect() as conn:
        rows = conn.execute(
            "SELECT convert_from(state, 'UTF8') FROM ledger_events WHERE originator_id = %s", (order_id,)
        ).fetchall()
    return [r[0] for r in rows]


def all_sales_row(connect, shop, order_id):
    with connect() as conn:
        return conn.execute(
            "SELECT buyer_name, buyer_email FROM all_sales_orders WHERE order_id = %s", (order_id,)
        ).fetchone()


def search(connect, shop, q):
    with connect() as conn:
        return [s.order_id for s in AllSalesView().list_orders(conn, shop.seller, SalesFilter(q=q)).items]


def test_personal_data_is_stored_encrypted_and_read_in_the_clear(app, connect, shop):
    """The events hold no name, email or address; reads, history and All Sales (and its search) show them."""
    order_id = shop.import_(shop.imported("P-1")).order_id
    catch_up(AllSalesProjection(), connect, app, 500)

    (state,) = stored_states(connect, order_id)
    details = app.get_order(order_id)
    imported = app.order_history(order_id)[0]

    for secret in ("Ann Lee", "Ann.Lee", "1 Main St", "Springfield", "12345"):
        assert secret not in state
    assert "pd1:" in state
    assert details.buyer == Buyer("Ann Lee", EMAIL)
    assert details.ship_to == SHIP_TO
    assert imported.data["buyer"] == {"name": "Ann Lee", "email": EMAIL}
    assert imported.data["ship_to"]["line1"] == "1 Main St"
    assert all_sales_row(connect, shop, order_id) == ("Ann Lee", EMAIL)
    assert search(connect, shop, "ann.lee@example.com") == [order_id]
    assert search(connect, shop, "ann l") == [order_id]


def test_reimport_is_recognized_by_its_decrypted_values(app, shop):
    """The same order again records nothing; a different buyer is still a conflict naming the buyer."""
    first = shop.import_(shop.imported("P-2", payment_status=PaymentStatus.PENDING))

    same = shop.import_(shop.imported("P-2", payment_status=PaymentStatus.PENDING))
    with pytest.raises(ImportConflictError) as conflict:
        shop.import_(shop.imported("P-2", buyer=Buyer("Bob Roe", EMAIL)))
    paid = shop.import_(shop.imported("P-2"))

    assert (first.created, same.created, same.version, same.events) == (True, False, 1, ())
    assert "buyer" in str(conflict.value)
    assert "ship_to" not in str(conflict.value)
    assert paid.events == ("PaymentCleared",)


def test_forget_erases_reads_and_keeps_the_history_verifiable(app, connect, shop):
    """After forget: reads and All Sales show [erased], the search no longer finds the buyer, the chain verifies."""
    order_id = shop.import_(shop.imported("P-3")).order_id
    other = shop.import_(shop.imported("P-4", buyer=Buyer("Cy Doe", "cy@example.com"))).order_id
    catch_up(AllSalesProjection(), connect, app, 500)
    hashes = [e.hash for e in app.order_history(order_id)]

    with connect() as conn:
        destroyed, scrubbed = forget(conn, shop.seller, " ann.lee@example.COM ")
        conn.commit()
        verification = verify_order(conn, app.mapper, order_id)
    details = app.get_order(order_id)
    history = app.order_history(order_id)

    assert (destroyed, scrubbed) == (True, 1)
    assert verification.valid
    assert details.buyer == Buyer(ERASED, ERASED)
    assert details.ship_to == Address(
        name=ERASED, line1=ERASED, city=ERASED, postal_code=ERASED, country=ERASED
    )  # empty fields stay empty
    assert history[0].data["buyer"] == {"name": ERASED, "email": ERASED}
    assert [e.hash for e in history] == hashes
    assert all_sales_row(connect, shop, order_id) == (ERASED, ERASED)
    assert search(connect, shop, EMAIL) == []
    assert app.get_order(other).buyer == Buyer("Cy Doe", "cy@example.com")
    assert all_sales_row(connect, shop, other) == ("Cy Doe", "cy@example.com")


def test_after_forget_reimport_is_idempotent_and_new_orders_are_readable(app, connect, shop):
    """A forgotten buyer's order re-sent records nothing (or only its payment); their next order gets a new key."""
    order_id = shop.import_(shop.imported("P-5", payment_status=PaymentStatus.PENDING)).order_id
    with connect() as conn:
        forget(conn, shop.seller, EMAIL)
        conn.commit()

    again = shop.import_(shop.imported("P-5", payment_status=PaymentStatus.PENDING))
    paid = shop.import_(shop.imported("P-5"))
    with pytest.raises(ImportConflictError):
        shop.import_(shop.imported("P-5", lines=(OrderLine("A", "MUG-1", 3, Decimal("12.50")),)))
    later = shop.import_(shop.imported("P-6")).order_id
    catch_up(AllSalesProjection(), connect, app, 500)

    assert (again.order_id, again.created, again.events) == (order_id, False, ())
    assert paid.events == ("PaymentCleared",)
    assert app.get_order(order_id).buyer == Buyer(ERASED, ERASED)
    assert app.get_order(later).buyer == Buyer("Ann Lee", EMAIL)
    assert all_sales_row(connect, shop, later) == ("Ann Lee", EMAIL)
    with connect() as conn:
        assert verify_order(conn, app.mapper, order_id).valid


def test_plaintext_events_from_before_encryption_stay_readable(app, shop, monkeypatch):
    """An order recorded in the clear (before this feature) reads as it is and re-imports without conflict."""
    legacy = shop.imported("P-7")
    monkeypatch.setattr(app, "_protected", lambda seller, order: order)
    order_id = shop.import_(legacy).order_id
    monkeypatch.undo()

    again = shop.import_(legacy)

    assert app.get_order(order_id).buyer == legacy.buyer
    assert (again.created, again.events) == (False, ())


def test_privacy_forget_command(app, connect, shop, pg_target, pg_url, monkeypatch):
    """`ledger privacy forget --buyer EMAIL --seller S` destroys the key once; a second run finds no live key."""
    order_id = shop.import_(shop.imported("P-8")).order_id
    monkeypatch.setenv("LEDGER_DATABASE_URL", pg_url)
    monkeypatch.setenv("LEDGER_DATABASE_SCHEMA", pg_target.schema)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    first, second = io.StringIO(), io.StringIO()

    status = main(["privacy", "forget", "--buyer", EMAIL, "--seller", shop.seller], out=first)
    again = main(["privacy", "forget", "--buyer", EMAIL, "--seller", shop.seller], out=second)

    assert status == 0
    assert f"buyer {EMAIL} of seller {shop.seller} forgotten: key destroyed" in first.getvalue()
    assert again == 1
    assert "no live key" in second.getvalue()
    assert app.get_order(order_id).buyer == Buyer(ERASED, ERASED)


def _bulk(shop, *orders: ImportedOrder):
    return shop.app.import_orders(
        CTX, [ImportItem(shop.account_id, o, None) for o in orders], seller=shop.seller
    )


def _key(connect, shop, email):
    with connect() as conn:
        row = conn.execute(
            "SELECT key FROM personal_data_keys WHERE key_id = %s", (key_id_for(shop.seller, email),)
        ).fetchone()
    return None if row is None or row[0] is None else bytes(row[0])


def _opens(key: bytes, token: str) -> bool:
    raw = base64.urlsafe_b64decode(token.rpartition(":")[2])
    try:
        AESGCM(key).decrypt(raw[:12], raw[12:], token_key_id(token).encode())
    except InvalidTag:
        return False
    return True


def test_bulk_import_never_seals_under_a_forgotten_key(app, connect, shop):
    """A batch after a forget seals the buyer's new order under a new key: the old orders stay erased, the new one
    reads in the clear, and the destroyed key is in none of the batch's tokens."""
    (first,) = _bulk(shop, shop.imported("P-7"))
    old_key = _key(connect, shop, EMAIL)
    with connect() as conn:
        forget(conn, shop.seller, EMAIL)
        conn.commit()

    (later,) = _bulk(shop, shop.imported("P-8"))
    new_key = _key(connect, shop, EMAIL)

    assert old_key is not None
    assert new_key is not None
    assert new_key != old_key
    assert app.get_order(first.order_id).buyer == Buyer(ERASED, ERASED)
    assert app.get_order(later.order_id).buyer == Buyer("Ann Lee", EMAIL)
    assert app.get_order(later.order_id).ship_to == SHIP_TO
    (state,) = stored_states(connect, later.order_id)
    tokens = [t for t in state.split('"') if t.startswith("pd1:")]
    assert tokens
    assert not any(_opens(old_key, token) for token in tokens)
    assert all(_opens(new_key, token) for token in tokens)


def test_batch_keys_keep_live_keys_make_missing_and_replace_destroyed(app, connect, shop):
    """One batch's keys: a live key is returned as stored, a missing one is made, a destroyed one replaced."""
    keys = app.personal_data.keys
    live, _ = keys.key_for(shop.seller, "live@example.com"), keys.key_for(shop.seller, "gone@example.com")
    with connect() as conn:
        forget(conn, shop.seller, "gone@example.com")
        conn.commit()
    buyers = {(shop.seller, e) for e in ("live@example.com", "gone@example.com", "new@example.com")}

    got = keys.keys_for(buyers)
    again = keys.keys_for(buyers)

    assert got[live[0]] == live[1]
    assert set(got) == {key_id_for(seller, email) for seller, email in buyers}
    assert got == again
    for _, email in buyers:
        assert _key(connect, shop, email) == got[key_id_for(shop.seller, email)]


def test_batch_keys_take_the_key_another_importer_inserts_meanwhile(app, connect, shop):
    """A key inserted by another transaction after the batch's read (committed while the batch's insert waits
    for it) is the one the batch gets: every order of a buyer is sealed under the one key the table keeps."""
    email = "race@example.com"
    theirs = secrets.token_bytes(32)
    got: dict[str, bytes] = {}
    with connect() as other:
        other.execute(
            "INSERT INTO personal_data_keys (key_id, key) VALUES (%s, %s)",
            (key_id_for(shop.seller, email), theirs),
        )
        batch = threading.Thread(
            target=lambda: got.update(app.personal_data.keys.keys_for({(shop.seller, email)}))
        )
        batch.start()
        batch.join(0.5)  # the batch's insert waits for this uncommitted row
        other.commit()
    batch.join(10)

    assert got == {key_id_for(shop.seller, email): theirs}
    assert _key(connect, shop, email) == theirs

"""Bulk import in a few transactions (`Ledger.import_orders`): the same per-order results as importing one order
at a time, each order once under concurrent batches, idempotent retries, one personal-data key per buyer."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from typing import Any
from uuid import UUID, uuid4

import pytest
from api_support import Seller, make_seller, order_body
from litestar.testing import TestClient

from ledger.aggregates.errors import LedgerError
from ledger.aggregates.values import Context, Marketplace
from ledger.api.bodies.schemas import decode_orders
from ledger.application.commands import ImportItem
from ledger.application.ledger import Ledger
from ledger.application.queries import ImportResult
from ledger.eventstore.keys_store import key_id_for, token_key_id
from ledger.projections import base

pytestmark = pytest.mark.postgres
CTX = Context(actor="bulk-test")


def _items(bodies: list[dict[str, Any]]) -> list[ImportItem | LedgerError]:
    """The bodies as the bulk route reads them (an order that cannot be converted is its own error)."""
    items: list[ImportItem | LedgerError] = []
    for order in decode_orders(json.dumps(bodies).encode()):
        try:
            items.append(ImportItem(order.account_id, order.to_domain()))
        except LedgerError as e:
            items.append(e)
    return items


def _outcome(result: ImportResult | LedgerError) -> tuple[Any, ...]:
    if isinstance(result, LedgerError):
        return ("error", result.code, getattr(result, "field", None))
    return ("ok", result.created, result.version, result.events)


def _scenario(seller: Seller, tpm_account: UUID) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(orders imported before, the batch): new, repeated, already imported, paid now, conflicting, invalid."""
    amazon, ebay, walmart = (
        seller.accounts[m] for m in (Marketplace.AMAZON, Marketplace.EBAY, Marketplace.WALMART)
    )
    pending = order_body(amazon, "PENDING-1", payment_status="pending")
    same = order_body(ebay, "SAME-1")
    conflicting = order_body(walmart, "CONFLICT-1")
    before = [pending, same, conflicting]
    nul = order_body(amazon, "NUL-1")
    nul["buyer"] = {"name": "Ann\x00Lee", "email": "ann@example.com"}
    batch = [
        order_body(amazon, "NEW-1"),
        order_body(amazon, "NEW-1"),  # repeated in the batch: unchanged
        order_body(ebay, "NEW-2", payment_status="pending"),
        order_body(ebay, "NEW-2"),  # then paid, later in the same batch: PaymentCleared
        pending | {"payment_status": "paid"},  # imported before as pending: PaymentCleared
        same,  # imported before: unchanged
        conflicting | {"currency": "EUR"},  # imported before with USD: import-conflict
        nul,  # a NUL in a personal field: invalid, and no key made for it
        order_body(amazon, "LATER-VALID", purchased_at="0001-01-01T00:00:00+02:00"),  # out of range in UTC
        order_body(amazon, "LATER-VALID"),  # the same order, valid this time: created here
        order_body(uuid4(), "NO-ACCOUNT"),  # unknown account
        order_body(tpm_account, "TPM-1"),  # Third Party Managed from its account
        order_body(walmart, "NEW-3", buyer={"name": "Bo Chan", "email": "bo@example.com"}),
    ]
    return before, batch


def test_a_batch_gives_the_results_of_importing_one_by_one(app: Ledger) -> None:
    """Every kind of order in one batch: the same results, in order, as one `import_order` each, and same orders."""
    outcomes, orders = [], []
    for batched in (False, True):
        seller = make_seller(app)
        tpm = app.register_account(
            CTX, seller=seller.name, marketplace=Marketplace.JET, name="tpm", fulfillment_managed=False
        ).account_id
        before, batch = _scenario(seller, tpm)
        for item in _items(before):
            assert isinstance(item, ImportItem)
            app.import_order(CTX, item.account_id, item.order, seller=seller.name)
        items = _items(batch)
        if batched:
            results = app.import_orders(CTX, items, seller=seller.name)
        else:
            results = []
            for item in items:
                try:
                    if isinstance(item, LedgerError):
                        raise item
                    results.append(app.import_order(CTX, item.account_id, item.order, seller=seller.name))
                except LedgerError as e:
                    results.append(e)
        outcomes.append([_outcome(r) for r in results])
        orders.append(
            [
                (
                    d.marketplace_order_id,
                    d.version,
                    d.payment_status,
                    d.third_party_managed,
                    d.buyer,
                    d.ship_to,
                )
                for r in results
                if isinstance(r, ImportResult)
                for d in [app.get_order(r.order_id, seller.name)]
            ]
        )
    one_by_one, batched_outcomes = outcomes
    assert batched_outcomes == one_by_one
    assert orders[1] == orders[0]
    kinds = [o[:2] if o[0] == "error" else o[1:] for o in batched_outcomes]
    assert kinds == [
        (True, 1, ("Imported",)),
        (False, 1, ()),
        (True, 1, ("Imported",)),
        (False, 2, ("PaymentCleared",)),
        (False, 2, ("PaymentCleared",)),
        (False, 1, ()),
        ("error", "import-conflict"),
        ("error", "invalid-order"),
        ("error", "invalid-order"),
        (True, 1, ("Imported",)),
        ("error", "account-not-found"),
        (True, 1, ("Imported",)),
        (True, 1, ("Imported",)),
    ]
    assert batched_outcomes[7][2] == "buyer.name"
    assert [o[3] for o in orders[1] if o[0] == "TPM-1"] == [True]


def test_another_sellers_account_is_not_found_per_order(app: Ledger) -> None:
    """An order naming another seller's account fails alone; the rest of the batch is imported."""
    seller, other = make_seller(app), make_seller(app)
    items = _items(
        [order_body(other.accounts[Marketplace.AMAZON]), order_body(seller.accounts[Marketplace.AMAZON])]
    )
    foreign, own = app.import_orders(CTX, items, seller=seller.name)
    assert isinstance(foreign, LedgerError)
    assert foreign.code == "account-not-found"
    assert isinstance(own, ImportResult)
    assert own.created


def test_concurrent_batches_of_overlapping_orders_import_each_once(
    app: Ledger, ledger_env: dict[str, str], connect: base.Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four threads (two Ledgers, as two server processes) import overlapping batches, all of them finding their
    orders absent before any saves (the race made certain): every order exactly once, none lost."""
    seller = make_seller(app)
    account = seller.accounts[Marketplace.WALMART]
    ids = [f"RACE-{secrets.token_hex(3)}-{n}" for n in range(80)]
    batches = [
        [order_body(account, ids[(start + k) % len(ids)]) for k in range(50)] for start in (0, 10, 20, 40)
    ]
    other = Ledger(env=ledger_env)
    barrier = threading.Barrier(len(batches))
    checked = threading.Barrier(len(batches), timeout=30)
    existing_ids = Ledger._existing_ids

    def check_then_wait(self: Ledger, order_ids: list[UUID]) -> set[UUID]:
        found = existing_ids(self, order_ids)
        checked.wait()  # every batch has looked before any saves: their saves conflict
        return found

    monkeypatch.setattr(Ledger, "_existing_ids", check_then_wait)
    results: list[list[ImportResult | LedgerError]] = [[] for _ in batches]
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            ledger = app if n % 2 else other
            items = _items(batches[n])
            barrier.wait()
            results[n] = ledger.import_orders(CTX, items, seller=seller.name)
        except BaseException as e:  # reported below, with the thread's failure
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(batches))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.close()
    assert not errors
    flat = [r for batch in results for r in batch]
    assert all(isinstance(r, ImportResult) for r in flat), [r for r in flat if isinstance(r, LedgerError)]
    created = [r.order_id for r in flat if isinstance(r, ImportResult) and r.created]
    assert len(created) == len(set(created)) == len(ids)
    with connect() as conn:
        rows = conn.execute(
            "SELECT originator_id, count(*) FROM ledger_events WHERE originator_id = ANY(%s) GROUP BY 1",
            ([r.order_id for r in flat if isinstance(r, ImportResult)],),
        ).fetchall()
    assert len(rows) == len(ids)
    assert {count for _, count in rows} == {1}


def _post(client: TestClient[Any], body: Any, seller: Seller, key: str) -> Any:
    headers = seller.auth() | {"Content-Type": "application/json", "Idempotency-Key": key}
    return client.post("/v1/orders/import", content=json.dumps(body).encode(), headers=headers)


def test_a_retried_batch_replays_each_order_and_refuses_a_changed_one(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger, connect: base.Connect
) -> None:
    """A retry after the orders were saved but before the response was: replays them (nothing recorded twice);
    a retry whose order changed under its `<key>#<index>` is 422 for that order only."""
    account = seller.accounts[Marketplace.AMAZON]
    body = {
        "orders": [order_body(account), order_body(account, payment_status="pending"), order_body(account)]
    }
    first = _post(client, body, seller, "bulk-retry")
    assert first.status_code == 200, first.text
    with connect() as conn:  # as if the server died before storing the response
        conn.execute(
            "DELETE FROM ledger_idempotency WHERE seller = %s AND key = %s", (seller.name, "bulk-retry")
        )
        conn.commit()
    again = _post(client, body, seller, "bulk-retry")
    assert again.status_code == 200
    assert again.json()["results"] == first.json()["results"]
    for result in first.json()["results"]:
        assert api_ledger.get_order(UUID(result["order_id"])).version == 1
    with connect() as conn:
        conn.execute(
            "DELETE FROM ledger_idempotency WHERE seller = %s AND key = %s", (seller.name, "bulk-retry")
        )
        conn.commit()
    changed = {
        "orders": [body["orders"][0], body["orders"][1] | {"payment_status": "paid"}, order_body(account)]
    }
    third = _post(client, changed, seller, "bulk-retry").json()["results"]
    assert third[0]["error"]["type"].endswith("idempotency-key-reused")
    assert third[1]["error"]["type"].endswith("idempotency-key-reused")
    assert third[2]["created"] is True
    assert api_ledger.get_order(UUID(first.json()["results"][1]["order_id"])).payment_status == "pending"


def test_each_buyer_gets_one_key_and_every_order_is_sealed_under_it(
    app: Ledger, connect: base.Connect
) -> None:
    """Ten orders of three buyers (one email in two cases) make three keys; a second batch reuses them."""
    seller = make_seller(app)
    account = seller.accounts[Marketplace.EBAY]
    emails = ["ann@example.com", "ANN@Example.com", "bo@example.com", "cy@example.com"]
    bodies = [order_body(account, buyer={"name": "B", "email": emails[n % 4]}) for n in range(10)]
    bodies.append(order_body(account, buyer={"name": "D\x00", "email": "dee@example.com"}))  # invalid: no key
    results = app.import_orders(CTX, _items(bodies), seller=seller.name)
    assert [isinstance(r, ImportResult) for r in results] == [True] * 10 + [False]
    expected = {key_id_for(seller.name, e) for e in emails}
    assert len(expected) == 3
    with connect() as conn:
        made = {
            row[0]
            for row in conn.execute(
                "SELECT key_id FROM personal_data_keys WHERE key_id = ANY(%s)",
                ([*expected, key_id_for(seller.name, "dee@example.com")],),
            )
        }
    assert made == expected
    for body, result in zip(bodies[:10], results[:10], strict=True):
        assert isinstance(result, ImportResult)
        with connect() as conn:
            row = conn.execute(
                "SELECT convert_from(state, 'UTF8')::jsonb FROM ledger_events WHERE originator_id = %s",
                (result.order_id,),
            ).fetchone()
        assert row is not None
        stored = json.dumps(row[0])
        assert body["buyer"]["email"] not in stored  # sealed, never in the clear
        token = row[0]["buyer"]["_data_"]["email"]
        assert token_key_id(token) == key_id_for(seller.name, body["buyer"]["email"])
        assert app.get_order(result.order_id).buyer.email == body["buyer"]["email"]
    more = app.import_orders(
        CTX, _items([order_body(account, buyer={"name": "B", "email": e}) for e in emails])
    )
    assert all(isinstance(r, ImportResult) and r.created for r in more)
    with connect() as conn:
        count = conn.execute(
            "SELECT count(*) FROM personal_data_keys WHERE key_id = ANY(%s)", (list(expected),)
        )
        assert count.fetchone() == (3,)


def test_the_request_digest_of_a_batch_is_kept_on_each_order(
    client: TestClient[Any], seller: Seller, api_ledger: Ledger
) -> None:
    """Each order imported by a keyed batch carries `<key>#<index>` and the request's digest on its event."""
    account = seller.accounts[Marketplace.RAKUTEN]
    body = {"orders": [order_body(account), order_body(account)]}
    raw = json.dumps(body).encode()
    response = _post(client, body, seller, "bulk-digest")
    assert response.status_code == 200
    for index, result in enumerate(response.json()["results"]):
        [event] = api_ledger.events.get(UUID(result["order_id"]))
        assert event.idempotency_key == f"bulk-digest#{index}"  # type: ignore[attr-defined]
        digest = hashlib.sha256(b"POST /v1/orders/import\n" + raw).hexdigest()  # method, path and body
        assert event.request_digest == digest  # type: ignore[attr-defined]

"""Bad input over HTTP: fuzzed orders and command bodies, deep JSON, invalid UTF-8, oversized bodies, injection.

Nothing a client sends gets a 5xx. A valid order is stored verbatim (every text field round-trips), and the
projections accept whatever the API accepted (a rebuild of every read model over the fuzzed log succeeds).
SQL and HTML injection strings in every text field are stored and returned as sent, and never run.
"""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from rel_support import MAX_BODY, PROBLEM, UPS_TRACKING, Seller, order_body, report

from ledger.aggregates.values import Marketplace, normalize_id
from ledger.application.ledger import Ledger
from ledger.eventstore.database import PostgresTarget, connect
from ledger.projections import base
from ledger.projections.registry import all_projections

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# Text as clients send it: any Unicode (no surrogates: not valid in JSON text), including control characters.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
# Identifiers as API.md allows them: no control or format characters, not blank once normalized.
ID = st.text(st.characters(exclude_categories=["Cs", "Cc", "Cf"]), min_size=1, max_size=40).filter(
    normalize_id
)
AMOUNT = st.decimals(min_value=0, max_value=Decimal("99999.99"), places=2).map(str)
INJECTIONS = [
    "'; DROP TABLE ledger_events; --",
    'Robert"); DROP TABLE all_sales_orders_g1;--',
    "1' OR '1'='1",
    "<script>alert('x')</script>",
    '"><img src=x onerror=alert(1)>',
    "%s %(name)s {0} $1 \\x00 \\\\",
    "' UNION SELECT secret FROM api_keys --",
]


def _valid_order(account_id: str) -> st.SearchStrategy[dict[str, Any]]:
    line = st.fixed_dictionaries(
        {"sku": ID, "title": TEXT, "quantity": st.integers(1, 1000), "unit_price": AMOUNT, "tax": AMOUNT},
    )
    address = st.fixed_dictionaries(
        {
            "name": TEXT,
            "line1": TEXT,
            "line2": TEXT,
            "city": TEXT,
            "state": TEXT,
            "phone": TEXT.map(lambda t: t[:40]),
        }
    )
    return st.fixed_dictionaries(
        {
            "account_id": st.just(account_id),
            "marketplace_order_id": ID,
            "purchased_at": st.just("2026-11-20T10:00:00Z"),
            "currency": st.sampled_from(["USD", "EUR", "GBP"]),
            "payment_status": st.sampled_from(["paid", "pending"]),
            "buyer": st.fixed_dictionaries({"name": TEXT, "email": TEXT}),
            "ship_to": address | st.none(),
            "lines": st.lists(line, min_size=1, max_size=3).map(
                lambda lines: [{"line_id": str(i + 1), **x} for i, x in enumerate(lines)]
            ),
        }
    )


def _mutated(valid: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    """A valid order with one field dropped, or replaced by arbitrary JSON, or arbitrary JSON outright."""

    @st.composite
    def mutate(draw: st.DrawFn) -> Any:
        body = draw(valid)
        key = draw(st.sampled_from(sorted(body)))
        if draw(st.booleans()):
            del body[key]
        else:
            body[key] = draw(JSON)
        return body

    return mutate() | JSON


def _assert_stored_verbatim(sent: dict[str, Any], stored: dict[str, Any]) -> None:
    """Every text field as sent; identifiers as the ledger keeps them (normalize_id: NFKC, trimmed)."""
    assert stored["marketplace_order_id"] == normalize_id(sent["marketplace_order_id"])
    assert stored["buyer"] == sent["buyer"]
    assert stored["buyer_name"] == sent["buyer"]["name"]
    if sent.get("ship_to") is not None:
        assert {k: stored["ship_to"][k] for k in sent["ship_to"]} == sent["ship_to"]
    for line, out in zip(sent["lines"], stored["lines"], strict=True):
        assert (out["line_id"], out["sku"], out["title"], out["quantity"]) == (
            normalize_id(line["line_id"]), normalize_id(line["sku"]), line.get("title", ""), line["quantity"],
        )  # fmt: skip
        assert Decimal(out["unit_price"]) == Decimal(line["unit_price"])


def _rebuild_all(target: PostgresTarget, store: Ledger) -> None:
    """Every read model rebuilt from the whole log of the test's schema (raises if a projection cannot)."""
    for projection in all_projections():
        base.rebuild(projection, lambda: connect(target), store.recorder, store.mapper)


def test_fuzzed_orders_never_5xx_and_valid_ones_round_trip(
    client: TestClient[Any], seller: Seller, store: Ledger, own_target: PostgresTarget
) -> None:
    """Hypothesis orders (valid, mutated, arbitrary JSON) to both import endpoints: no 5xx; 201s stored verbatim."""
    account_id = str(seller.accounts[Marketplace.WALMART])
    valid = _valid_order(account_id)
    counts = {"sent": 0, "stored": 0}

    @FUZZ
    @given(body=st.one_of(valid, valid, _mutated(valid)), many=st.booleans())
    def check(body: Any, many: bool) -> None:
        counts["sent"] += 1
        if isinstance(body, dict) and isinstance(body.get("marketplace_order_id"), str):
            body["marketplace_order_id"] += f"#{counts['sent']}"  # hypothesis repeats ids: a repeat is a 409
        if many:
            response = client.post("/v1/orders/import", json={"orders": [body]}, headers=seller.auth())
            assert response.status_code < 500, response.text
            if response.status_code != 200:
                return
            [result] = response.json()["results"]
            if not result.get("created"):
                return
            order_id = result["order_id"]
        else:
            response = client.post("/v1/orders", json=body, headers=seller.auth())
            assert response.status_code < 500, response.text
            if response.status_code != 201:
                assert response.headers["content-type"].startswith("application/problem+json")
                return
            order_id = response.json()["order_id"]
        counts["stored"] += 1
        stored = client.get(f"/v1/orders/{order_id}", headers=seller.auth())
        assert stored.status_code == 200
        _assert_stored_verbatim(body, stored.json())

    check()
    assert counts["stored"] > 0
    _rebuild_all(own_target, store)  # the read models take every order the API took
    report(
        f"fuzz (hypothesis) of POST /v1/orders and /v1/orders/import: {counts['sent']} bodies, 0 x 5xx,"
        f" {counts['stored']} stored and read back verbatim; every projection rebuilt over them"
    )


def test_fuzzed_command_bodies_never_5xx(client: TestClient[Any], seller: Seller) -> None:
    """Arbitrary JSON, and valid command bodies with a field replaced, to every order command: never a 5xx."""
    response = client.post(
        "/v1/orders", json=order_body(seller.accounts[Marketplace.EBAY]), headers=seller.auth()
    )
    order_id = response.json()["order_id"]
    valid = {
        "shipments": {
            "carrier": "ups",
            "tracking_number": UPS_TRACKING,
            "lines": [{"line_id": "1", "quantity": 1}],
        },
        "cancellations": {"reason": "out_of_stock", "lines": [{"line_id": "2", "quantity": 1}]},
        "refunds": {"reason": "damaged", "lines": [{"line_id": "1", "quantity": 1}]},
        "disputes": {"reason": "not received"},
        "restocks": {"lines": [{"line_id": "1", "quantity": 1}]},
    }
    sent = [0]

    @FUZZ
    @given(command=st.sampled_from(sorted(valid)), data=st.data())
    def check(command: str, data: st.DataObject) -> None:
        body: Any = dict(valid[command])
        if data.draw(st.booleans()):
            body = data.draw(JSON)
        else:
            body[data.draw(st.sampled_from(sorted(body)))] = data.draw(JSON)
        sent[0] += 1
        response = client.post(f"/v1/orders/{order_id}/{command}", json=body, headers=seller.auth())
        assert response.status_code < 500, response.text
        assert response.status_code in {201, 400, 409, 422}, response.text

    check()
    report(f"fuzz (hypothesis) of order command bodies: {sent[0]} bodies, 0 x 5xx")


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"orders": ' + b'{"a": ' * 20_000 + b"1" + b"}" * 20_000 + b"}",
        b'{"account_id": "\xff\xfe", "lines": []}',
        b'{"buyer": {"name": "\xc3\x28"}}',
        b"\xef\xbb\xbf{}",
        b"",
        b"null",
        b'{"orders": []}',
        b'{"orders": [' + b"1e999999," * 10 + b"1]}",
    ],
    ids=[
        "deep-list",
        "deep-object",
        "invalid-utf8",
        "invalid-utf8-nested",
        "bom",
        "empty",
        "null",
        "no-orders",
        "huge-numbers",
    ],
)
@pytest.mark.parametrize("path", ["/v1/orders", "/v1/orders/import"])
def test_malformed_bodies_are_4xx(client: TestClient[Any], seller: Seller, path: str, body: bytes) -> None:
    """Deep nesting, invalid UTF-8 and other malformed JSON: a 400 or 422 problem, never a 5xx (a bulk import's
    well-formed envelope of unreadable orders: 200, each order refused with 422)."""
    headers = seller.auth() | {"Content-Type": "application/json"}
    response = client.post(path, content=body, headers=headers)
    if (
        path == "/v1/orders/import" and response.status_code == 200
    ):  # a well-formed envelope: each order alone
        assert all(r["error"]["status"] == 422 for r in response.json()["results"]), response.text
        return
    assert response.status_code in {400, 413, 422}, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_oversized_bodies_are_413(client: TestClient[Any], seller: Seller) -> None:
    """A body over the limit is 413, on every endpoint that takes a body, and nothing is stored."""
    orders = [order_body(seller.accounts[Marketplace.JET]) for _ in range(MAX_BODY // 400)]
    big = client.post("/v1/orders/import", json={"orders": orders}, headers=seller.auth())
    assert big.status_code == 413
    assert big.json()["type"] == PROBLEM + "body-too-large"
    padding = {"Content-Type": "application/json"} | seller.auth()
    for path in ["/v1/orders", "/v1/accounts", f"/v1/orders/{secrets.token_hex(16)}/shipments"]:
        response = client.post(path, content=b"{" + b" " * (MAX_BODY + 1) + b"}", headers=padding)
        assert response.status_code in {404, 413}, (path, response.status_code)
    listed = client.get(f"/v1/orders?account_id={seller.accounts[Marketplace.JET]}", headers=seller.auth())
    assert listed.status_code in {200, 503}  # 503 until a worker built the view: never the oversized orders


def test_injection_strings_are_stored_and_returned_verbatim(
    client: TestClient[Any], seller: Seller, store: Ledger, own_target: PostgresTarget
) -> None:
    """SQL and HTML injection in every text field: stored and returned as sent (JSON), never executed."""
    fields = 0
    for n, attack in enumerate(INJECTIONS):
        body = order_body(seller.accounts[Marketplace.WALMART], marketplace_order_id=f"{attack}-{n}")
        body["buyer"] = {"name": attack, "email": attack}
        body["ship_to"] = {k: attack[:32] if k == "postal_code" else attack for k in
                           ("name", "line1", "line2", "city", "state", "postal_code")}  # fmt: skip
        body["ship_to"]["phone"] = attack[:40]
        for line in body["lines"]:
            line["sku"], line["title"] = f"{attack}-{line['line_id']}", attack
        body["lines"][0]["line_id"] = attack[:100]
        response = client.post("/v1/orders", json=body, headers=seller.auth())
        assert response.status_code == 201, response.text
        order_id = response.json()["order_id"]
        ship = client.post(
            f"/v1/orders/{order_id}/shipments",
            json={"carrier": "ups", "tracking_number": UPS_TRACKING, "shipping_class": attack[:100]},
            headers=seller.auth(),
        )
        assert ship.status_code == 201, ship.text
        dispute = client.post(
            f"/v1/orders/{order_id}/disputes",
            json={"reason": attack, "marketplace_dispute_id": attack[:100]},
            headers=seller.auth(),
        )
        assert dispute.status_code == 201, dispute.text
        account = client.patch(f"/v1/accounts/{seller.accounts[Marketplace.WALMART]}", json={"name": attack},
                               headers=seller.auth())  # fmt: skip
        assert account.status_code == 200, account.text
        assert account.json()["name"] == attack
        stored = client.get(f"/v1/orders/{order_id}", headers=seller.auth())
        assert stored.headers["content-type"].startswith("application/json")
        _assert_stored_verbatim(body, stored.json())
        assert stored.json()["shipments"][0]["shipping_class"] == attack[:100]
        history = client.get(f"/v1/orders/{order_id}/history", headers=seller.auth()).json()["events"]
        assert history[-1]["reason"] == attack
        assert history[0]["data"]["buyer"]["name"] == attack
        fields += 14
    _rebuild_all(own_target, store)
    with connect(own_target) as conn:
        tables = {row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()}  # fmt: skip
        assert "ledger_events" in tables
        assert any(t.startswith("all_sales_orders_g") for t in tables)
        events = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
        assert events is not None
        assert events[0] > 0
    for n, attack in enumerate(INJECTIONS):  # the read side finds them by the very strings
        page = client.get("/v1/orders", params={"q": attack, "limit": 50}, headers=seller.auth())
        assert page.status_code == 200, page.text
        names = {item["buyer_name"] for item in page.json()["items"]}
        assert attack in names
        by_id = client.get("/v1/orders", params={"q": f"{attack}-{n}"}, headers=seller.auth()).json()["items"]
        assert [item["marketplace_order_id"] for item in by_id] == [f"{attack}-{n}"]
    report(
        f"injection: {len(INJECTIONS)} SQL/HTML strings x {fields // len(INJECTIONS)} text fields each"
        " (order, buyer, address, lines, shipment, dispute, account): stored and returned verbatim,"
        " found by search, tables intact"
    )


def test_nul_character_is_refused_with_422_naming_the_field(client: TestClient[Any], seller: Seller) -> None:
    """U+0000 cannot be stored in a read model: refused as 422 (it used to be accepted and stop the projections)."""
    body = order_body(seller.accounts[Marketplace.AMAZON])
    body["buyer"]["name"] = "Ann\x00Lee"
    response = client.post("/v1/orders", json=body, headers=seller.auth())
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "buyer.name"
    body = order_body(seller.accounts[Marketplace.AMAZON])
    body["lines"][1]["title"] = "\x00"
    response = client.post("/v1/orders/import", json={"orders": [body]}, headers=seller.auth())
    assert response.json()["results"][0]["error"]["errors"][0]["field"] == "lines[1].title"
    order_id = client.post("/v1/orders", json=order_body(seller.accounts[Marketplace.AMAZON]),
                           headers=seller.auth()).json()["order_id"]  # fmt: skip
    for path, command in [
        ("disputes", {"reason": "late\x00"}),
        ("disputes", {"reason": "late", "marketplace_dispute_id": "D\x00"}),
        ("shipments", {"carrier": "ups", "tracking_number": UPS_TRACKING, "shipping_class": "\x00"}),
    ]:
        response = client.post(f"/v1/orders/{order_id}/{path}", json=command, headers=seller.auth())
        assert response.status_code == 422, response.text
    rename = client.patch(f"/v1/accounts/{seller.accounts[Marketplace.AMAZON]}", json={"name": "a\x00"},
                          headers=seller.auth())  # fmt: skip
    assert rename.status_code == 422
    assert client.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()["version"] == 1


@pytest.mark.parametrize("param", ["q", "sku"])
def test_nul_in_a_list_filter_is_422(client: TestClient[Any], seller: Seller, param: str) -> None:
    """A NUL character in a text filter of All Sales is 422 invalid-filter (it was a 500 from PostgreSQL)."""
    response = client.get("/v1/orders", params={param: "a\x00b"}, headers=seller.auth())
    assert response.status_code == 422, response.text
    assert response.json()["type"] == PROBLEM + "invalid-filter"


def _line(**changes: Any) -> Any:
    """An order body whose first line has `changes`."""

    def body(account_id: Any) -> dict[str, Any]:
        order = order_body(account_id)
        order["lines"][0] |= changes
        return order

    return body


def _order(**changes: Any) -> Any:
    return lambda account_id: order_body(account_id, **changes)


# API.md *Input, stated exactly*: (what, method, path, body maker or raw body, content type, status, field).
# A body maker gets the seller's account id; `{order}` in a path is an imported order's id.
BAD_INPUTS: list[tuple[str, str, str, Any, str | None, int, str]] = [
    ("exponent amount", "POST", "/v1/orders", _line(unit_price="1e3"), None, 422, "lines[0].unit_price"),
    ("Arabic-Indic digits", "POST", "/v1/orders", _line(unit_price="\u0661\u0662.\u0665\u0660"), None, 422,
     "lines[0].unit_price"),
    ("underscore amount", "POST", "/v1/orders", _line(unit_price="1_000.00"), None, 422, "lines[0].unit_price"),
    ("spaced amount", "POST", "/v1/orders", _line(unit_price=" 12.50"), None, 422, "lines[0].unit_price"),
    ("JSON number amount", "POST", "/v1/orders", _line(unit_price=12.5), None, 422, "lines[0].unit_price"),
    ("past the minor unit", "POST", "/v1/orders", _line(tax="2.005"), None, 422, "lines[0].tax"),
    ("JPY with cents", "POST", "/v1/orders", _order(currency="JPY"), None, 422, "lines[0].unit_price"),
    ("string quantity", "POST", "/v1/orders", _line(quantity="5"), None, 422, "lines[0].quantity"),
    ("currency XXX", "POST", "/v1/orders", _order(currency="XXX"), None, 422, "currency"),
    ("currency BTC", "POST", "/v1/orders", _order(currency="BTC"), None, 422, "currency"),
    ("purchase in 2099", "POST", "/v1/orders", _order(purchased_at="2099-01-01T00:00:00Z"), None, 422,
     "purchased_at"),
    ("epoch number", "POST", "/v1/orders", _order(purchased_at=1_700_000_000), None, 422, "purchased_at"),
    ("epoch string", "POST", "/v1/orders", _order(purchased_at="1700000000"), None, 422, "purchased_at"),
    ("lower-case t and z", "POST", "/v1/orders", _order(purchased_at="2026-11-20t10:00:00z"), None, 422,
     "purchased_at"),
    ("no zone", "POST", "/v1/orders", _order(paid_at="2026-11-20T10:00:00"), None, 422, "paid_at"),
    ("tab in an order id", "POST", "/v1/orders", _order(marketplace_order_id="A\tB"), None, 422,
     "marketplace_order_id"),
    ("zero-width SKU", "POST", "/v1/orders", _line(sku="MUG\u200b1"), None, 422, "lines[0].sku"),
    ("blank order id", "POST", "/v1/orders", _order(marketplace_order_id=" \u3000 "), None, 422,
     "marketplace_order_id"),
    ("JSON as text/plain", "POST", "/v1/orders", _order(), "text/plain", 415, "Content-Type"),
    ("JSON without a type", "POST", "/v1/orders", _order(), "", 415, "Content-Type"),
    ("exponent refund", "POST", "/v1/orders/{order}/refunds",
     {"reason": "damaged", "lines": [{"line_id": "1", "amount": "1e1"}]}, None, 422, "lines[0].amount"),
    ("number refund", "POST", "/v1/orders/{order}/refunds", {"reason": "goodwill", "shipping_amount": 5}, None,
     422, "shipping_amount"),
    ("space in a ship time", "POST", "/v1/orders/{order}/shipments",
     {"carrier": "ups", "tracking_number": UPS_TRACKING, "shipped_at": "2026-11-20 10:00:00Z"}, None, 422,
     "shipped_at"),
    ("epoch ship time", "POST", "/v1/orders/{order}/shipments",
     {"carrier": "ups", "tracking_number": UPS_TRACKING, "shipped_at": 1_700_000_000}, None, 422, "shipped_at"),
    ("string line quantity", "POST", "/v1/orders/{order}/shipments",
     {"carrier": "ups", "tracking_number": UPS_TRACKING, "lines": [{"line_id": "1", "quantity": "1"}]}, None,
     422, "lines[0].quantity"),
    ("command as text/plain", "POST", "/v1/orders/{order}/cancellations", {"reason": "other"}, "text/plain", 415,
     "Content-Type"),
    ("CSV as JSON", "POST", "/v1/shipments/bulk", b"order_id,line_id\n", "application/json", 415, ""),
    ("day after the calendar", "GET", "/v1/finance/refunds?to=10000-01-01", None, None, 422, "to"),
    ("not a day", "GET", "/v1/finance/refunds?from=2026-02-30", None, None, 422, "from"),
    ("epoch filter", "GET", "/v1/orders?purchased_from=1700000000", None, None, 422, "purchased_from"),
    ("lower-case filter", "GET", "/v1/orders?purchased_to=2026-11-20t10:00:00z", None, None, 422, "purchased_to"),
    ("epoch as_of", "GET", "/v1/orders/{order}?as_of=1700000000", None, None, 422, "as_of"),
]  # fmt: skip


def test_bad_inputs_are_refused_by_name_never_5xx(client: TestClient[Any], seller: Seller) -> None:
    """API.md's *Input, stated exactly*, a table: each bad input is 422 naming its field (415 for a body of the
    wrong media type), never a 5xx, and nothing is recorded."""
    account_id = seller.accounts[Marketplace.AMAZON]
    order_id = client.post("/v1/orders", json=order_body(account_id), headers=seller.auth()).json()[
        "order_id"
    ]
    server_errors = 0
    for what, method, path, body, media_type, status, field in BAD_INPUTS:
        made = body(account_id) if callable(body) else body
        content = made if isinstance(made, bytes) else None if made is None else msgspec.json.encode(made)
        headers = seller.auth() | {"Content-Type": media_type or "application/json"}
        if media_type == "":
            del headers["Content-Type"]
        response = client.request(method, path.format(order=order_id), content=content, headers=headers)
        server_errors += response.status_code >= 500
        assert response.status_code == status, (what, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), what
        errors = response.json().get("errors") or [{"field": ""}]
        assert errors[0]["field"] == field, (what, errors)
    assert client.get(f"/v1/orders/{order_id}", headers=seller.auth()).json()["version"] == 1
    assert server_errors == 0
    report(f"bad inputs tried: {len(BAD_INPUTS)}, 5xx: {server_errors} (API.md Input, stated exactly)")


def test_a_bad_order_in_a_batch_is_refused_alone_by_name(client: TestClient[Any], seller: Seller) -> None:
    """A string quantity in one order of a bulk import refuses that order (422 naming `lines[0].quantity` in its
    result), not the batch: the batch answers 200 (API.md *Batch import, per order*)."""
    body = {"orders": [_line(quantity="5")(seller.accounts[Marketplace.AMAZON])]}
    response = client.post("/v1/orders/import", json=body, headers=seller.auth())
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    assert result["error"]["status"] == 422
    assert result["error"]["errors"][0]["field"] == "lines[0].quantity"

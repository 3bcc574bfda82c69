"""The sandbox marketplaces: one local HTTP server that plays Amazon, eBay, Walmart, Rakuten and Jet.

No real marketplace is reachable from here, so `ledger sandbox` (or `create_sandbox_app(seed)` in a test)
serves each marketplace's real paths, request and response shapes on one host: an adapter pointed at the
sandbox's base URL cannot tell it from the marketplace, and the sandbox can say what the marketplace thinks.

How it works
------------
- `app.py`: `create_sandbox_app(seed, settings=..., orders_per_account=...) -> Litestar`. It loads every
  module named in `app.MODULES`, mounts their routes next to the control API (`/_sandbox/...`), and keeps one
  `Sandbox` (`app.state.sandbox`): the state, the faults, and the per-marketplace hooks.
- `state.py`: in-memory orders per (marketplace, account) and every effect applied, keyed by the marketplace's
  own dedupe key (`apply_once`), plus the schema violations seen. The account is whatever identifies the
  seller in the adapter's requests (Amazon `x-amz-access-token`, eBay's bearer token): any non-empty value.
- `faults.py`: faults armed per marketplace and operation for the next N calls (429 with Retry-After, 5xx,
  timeout, slow, connection reset, duplicate list pages, a response lost after the effect was applied).
- `validation.py`: requests checked against the marketplaces' real specs (Amazon ordersV0 and feeds models,
  eBay Sell Fulfillment OAS3), with unknown fields refused; a refused request gets the marketplace's 400
  and is recorded, so a test asserts `GET /_sandbox/violations` is empty.

A marketplace module (the pattern `amazon.py` and `ebay.py` follow)
-------------------------------------------------------------------
A module `sandbox/<name>.py` exports `MARKETPLACE = app.Marketplace(...)` with:
- `name`: the marketplace's value (`Marketplace.WALMART.value`...), used in control URLs and fault names;
- `routes`: its Litestar route handlers, at the marketplace's real paths;
- `new_order_id(rng) -> str`: an order id in the marketplace's format (used by the order generator);
- `error(status, code, message) -> Response`: an answer in the marketplace's error shape (faults and schema
  violations use it);
- optional `tick(sandbox)` (move asynchronous work along: feeds, refunds; called under the lock at the start
  of every call), `event(sandbox, order, body) -> bool` (control events of its own, see below; True when
  handled) and `describe(sandbox, order) -> dict` (extra fields for the control API's order view).
Then it is added to `app.MODULES`. The module declares its preamble as data, `CALLER = app.Caller(NAME,
account_of, error, unauthorized, not_found)`, and each handler starts with `sandbox, account = await
CALLER.begin(request, "<operation>")` (faults fire there; a missing credential gets the marketplace's own
401/403). It checks the request (`sandbox.refuse(request, NAME, "<operation>", errors)` returns the 400 to
give when there are errors, and records them), finds orders with `CALLER.order(sandbox, account, order_id)`
(or the marketplace's own 404) and applies changes under `sandbox.state.lock` through
`sandbox.state.apply_once(NAME, account, "<operation>", dedupe_key, order_id, apply)`. List calls ask
`sandbox.duplicate_page(NAME, "<operation>")` whether to repeat the previous page's last order. Orders are
the generic `state.Order` (lines with shipped and cancelled units, shipments, cancellations, refunds,
disputes); a module renders them in its own shapes and keeps its own fields in `order.extra`. `apply`
refuses a change with `raise CALLER.refuse(status, code, message)` (an `app.Answer`: the app gives its
response as it is). Walmart, Rakuten and Jet, which have no spec files, serve every call through
`strict.serve(request, CALLER, "<operation>", work)` instead (see `strict.py`).

The control API (same server, JSON)
-----------------------------------
- `POST /_sandbox/{marketplace}/accounts/{account}/orders` `{count, paid?, purchased_at?, currency?,
  max_lines?}` -> 201 `{orders: [view]}`: realistic orders generated from the seed.
- `GET /_sandbox/{marketplace}/accounts/{account}/orders` -> `{orders: [view]}`;
  `GET .../orders/{order_id}` -> the view: `status` (pending, unshipped, partially_shipped, shipped,
  canceled), `lines` (with `shipped`, `cancelled`), `shipments`, `cancellations`, `refunds`, `disputes`,
  `paid_at`, `buyer_cancel`, `acknowledged_at`, `total`, and the module's own fields.
- `POST .../orders/{order_id}/events` `{type, at?, ...}`: the marketplace's side changes the order: `pay`,
  `buyer_cancel` `{reason?}` (applied at once within `buyer_cancel_window_seconds` of purchase and before
  shipment, else only requested), `open_dispute` `{reason?, amount?, dispute_id?}`, `close_dispute`
  `{dispute_id, outcome}`; eBay adds `approve_cancellation` / `reject_cancellation` `{cancel_id?}`.
- `GET /_sandbox/{marketplace}/accounts/{account}/effects?key=&order_id=` -> `{effects: [{operation, key,
  order_id, attempts, applied_at, result}]}`: one entry per dedupe key; `attempts` counts the requests.
- `GET /_sandbox/violations` -> `{violations: [...]}`; `DELETE /_sandbox/violations`.
- `POST /_sandbox/{marketplace}/faults` `{operation, kind, count?, retry_after?, status?, seconds?}`;
  `GET /_sandbox/faults` -> `{armed, fired}`; `DELETE /_sandbox/faults`.
- `GET|PUT /_sandbox/settings` (`feed_processing_seconds`, `refund_processing_seconds`,
  `cancellation_approval_seconds`, `buyer_cancel_window_seconds`); `POST /_sandbox/reset`;
  `GET /_sandbox/marketplaces`.

How tests drive it
------------------
`tests/integration/sandbox_support.py` starts the sandbox as a real HTTP server (uvicorn in a thread on a
free port): the session fixture `sandbox_url` is its base URL and `sandbox` a `Sandbox` control client
(`new_account`, `orders`, `all_orders`, `order`, `event`, `effects`, `fault`, `faults`, `clear_faults`,
`violations`, `clear_violations`, `settings`, `reset`, `wait_for`). Import them in a test module with
`from sandbox_support import Sandbox, sandbox_fixture, sandbox_url_fixture  # noqa: F401`. Point an
adapter's `Endpoint(base_url=sandbox_url, credentials={"access_token": account})` at it, and use an account
of the test's own (`Sandbox.new_account()`). `sync_request`, `whole_lines`, `cancel_payload` and
`settle_outcome` there build outbound queue items for sandbox orders and poll submitted ones to the end.
"""

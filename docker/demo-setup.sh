#!/bin/sh
# Demo data for `docker compose --profile demo up`: one account per marketplace for seller "demo", orders
# waiting at each sandbox marketplace (the importer pulls them in), and an admin key, printed once.
# Safe to run again: accounts that exist are kept, and the sandbox only adds orders.
set -eu
SELLER=${DEMO_SELLER:-demo}
SANDBOX=${LEDGER_MARKETPLACE_URL:-http://sandbox:8700}
ORDERS=${DEMO_ORDERS:-10}

existing=$(ledger accounts list --seller "$SELLER" --json)
for marketplace in amazon ebay walmart rakuten jet; do
    if printf '%s' "$existing" | grep -q "\"marketplace\": *\"$marketplace\""; then
        echo "demo: the $marketplace account exists"
    else
        ledger accounts add --seller "$SELLER" --marketplace "$marketplace" --name "$SELLER-$marketplace" >/dev/null
        echo "demo: registered the $marketplace account"
    fi
    python - "$SANDBOX" "$marketplace" "$ORDERS" <<'PY'
import json, sys, urllib.request
base, marketplace, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
request = urllib.request.Request(
    f"{base}/_sandbox/{marketplace}/accounts/demo/orders",
    data=json.dumps({"count": count, "paid": True}).encode(),
    headers={"Content-Type": "application/json"},
    method="POST",
)
with urllib.request.urlopen(request, timeout=30) as response:
    print(f"demo: {count} orders waiting at the {marketplace} sandbox ({response.status})")
PY
done
echo "demo: the importer brings the orders in on its next round (LEDGER_IMPORT_INTERVAL)."
echo "demo: an admin key for the API and the web page at http://localhost:8000/ :"
ledger keys create --seller "$SELLER" --role admin --name demo-admin

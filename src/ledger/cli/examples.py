"""An example for every command's `--help` (its epilog), by command path. A test walks the parser and requires
one for each command, so a new command comes with its example."""

from __future__ import annotations

_ORDER = "114-3941689-8772232"
_ACCOUNT = "9b2f6a3e-1c4d-4f7a-8e2b-5d6c7a8b9c0d"
_ID = "0c8e7a52-3f4b-5d61-9a7e-2b1c4d5e6f70"

EXAMPLES: dict[str, str] = {
    "ledger": "ledger --json orders list --status unshipped\nledger serve",
    "ledger serve": "ledger serve --port 8000 --processes 2",
    "ledger worker": "ledger worker --projection all_sales --projection outbound",
    "ledger projections": "ledger projections status",
    "ledger projections status": "ledger --json projections status",
    "ledger projections rebuild": "ledger projections rebuild all_sales",
    "ledger db": "ledger db status",
    "ledger db status": "ledger --json db status",
    "ledger db migrate": "ledger db migrate",
    "ledger accounts": "ledger accounts list --seller acme",
    "ledger accounts add": "ledger accounts add --seller acme --marketplace amazon --name 'Amazon US'",
    "ledger accounts list": "ledger accounts list --seller acme --json",
    "ledger accounts update": f"ledger accounts update {_ACCOUNT} --fulfillment-managed no",
    "ledger keys": "ledger keys list --seller acme",
    "ledger keys create": "ledger keys create --seller acme --role operator --name 'warehouse tablet'",
    "ledger keys list": "ledger keys list --seller acme",
    "ledger keys revoke": f"ledger keys revoke {_ID}",
    "ledger import": "ledger import orders.json --seller acme\nledger import --once --account " + _ACCOUNT,
    "ledger orders": f"ledger orders list --status unshipped\nledger orders show {_ORDER} --account {_ACCOUNT}",
    "ledger orders list": "ledger orders list --marketplace amazon --status unshipped --sort -total --limit 20",
    "ledger orders show": f"ledger orders show {_ORDER} --seller acme --marketplace amazon\nledger orders show {_ID}",
    "ledger orders history": f"ledger orders history {_ORDER} --account {_ACCOUNT}",
    "ledger orders ship": f"ledger orders ship {_ORDER} --account {_ACCOUNT} --carrier UPS"
    " --tracking-number 1Z999AA10123456784 --line 1:2",
    "ledger orders cancel": f"ledger orders cancel {_ORDER} --account {_ACCOUNT} --reason out_of_stock",
    "ledger orders refund": f"ledger orders refund {_ID} --reason damaged --line 1:1 --shipping-amount 4.99",
    "ledger orders open-dispute": f"ledger orders open-dispute {_ID} --reason 'item not received'",
    "ledger orders close-dispute": f"ledger orders close-dispute {_ID} {_ID} --outcome rejected",
    "ledger orders restock": f"ledger orders restock {_ID} --line 1:2",
    "ledger verify": f"ledger verify --all\nledger verify --order {_ID} --against checkpoint.json",
    "ledger checkpoint": "ledger checkpoint",
    "ledger audit": "ledger audit keygen --out /etc/ledger/audit.key\nledger audit latest-checkpoint > checkpoint.json",
    "ledger audit keygen": "ledger audit keygen --out /etc/ledger/audit.key",
    "ledger audit latest-checkpoint": "ledger audit latest-checkpoint > checkpoint.json",
    "ledger audit verify-bundle": "ledger audit verify-bundle bundle.json --public-key audit.key.pub",
    "ledger report": "ledger report all-sales --seller acme --as-of 2026-11-30T00:00:00Z",
    "ledger report all-sales": "ledger report all-sales --seller acme --as-of 2026-11-30T00:00:00Z --format json",
    "ledger privacy": "ledger privacy forget --seller acme --buyer ann@example.com",
    "ledger privacy forget": "ledger privacy forget --seller acme --buyer ann@example.com",
    "ledger finance": "ledger finance refunds --seller acme --from 2026-11-01 --to 2026-11-30",
    "ledger finance refunds": "ledger finance refunds --seller acme --from 2026-11-01 --to 2026-11-30 --format csv",
    "ledger finance reconcile": "ledger finance reconcile settlement.tsv --seller acme --marketplace amazon",
    "ledger finance reconciliation": f"ledger finance reconciliation {_ID} --seller acme --format json",
    "ledger finance reconciliations": "ledger finance reconciliations --seller acme --marketplace amazon",
    "ledger finance exposure": "ledger finance exposure --seller acme --marketplace ebay",
    "ledger ship-file": "ledger ship-file shipments.csv --seller acme",
    "ledger dispatch": "ledger dispatch --once",
    "ledger sync": f"ledger sync check --account {_ACCOUNT} --days 3",
    "ledger sync replay": f"ledger sync replay --order {_ID}",
    "ledger sync check": f"ledger sync check --account {_ACCOUNT} --days 3",
    "ledger sandbox": "ledger sandbox --port 8700 --orders 50 --account sandbox",
}


def example_of(command: str) -> str:
    """The epilog of `command`'s help: its example(s), one a line."""
    lines = EXAMPLES.get(command, "").splitlines()
    return "example:\n" + "\n".join(f"  {line}" for line in lines) if lines else ""

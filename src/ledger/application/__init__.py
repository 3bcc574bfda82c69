"""The service layer: the Ledger (ledger.py) put together from one module per concern: the generic command path
(core.py), the order commands as objects (commands.py) and their handlers with the order queries (orders.py),
imports (imports.py), marketplace accounts (accounts.py), API keys (keys.py); the errors it raises (errors.py),
what it returns (queries.py), and the CSV bulk shipment (shipments_csv.py, bulk_shipping.py)."""

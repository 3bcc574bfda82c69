"""Event-sourced order-fulfillment ledger for multi-marketplace sellers."""

"""The `ledger` command: main.py builds the parser; one module per command group."""

"""The service layer: load aggregates, call one command, save (ledger.py), and what it returns (queries.py)."""

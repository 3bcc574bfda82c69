"""Finance: settlement reports read, matched against the ledger's read models, and stored as reconciliations."""

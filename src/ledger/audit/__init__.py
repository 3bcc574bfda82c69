"""What auditors rely on: tamper evidence (verification.py) and All Sales as of a past moment (as_of.py)."""

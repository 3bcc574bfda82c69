"""The HTTP API's request and response bodies: orders.py, finance.py and the import shapes (schemas.py)."""

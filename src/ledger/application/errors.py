"""The errors the application raises, beyond the domain's own (ledger.aggregates.errors).

Each has the `code` that the API's problem responses and the CLI's messages carry (api/errors.py maps them to
HTTP statuses). They live here, in one place, because several handlers raise each of them.
"""

from __future__ import annotations

from ledger.aggregates.errors import InvalidInputError, LedgerError


class OrderNotFoundError(LedgerError):
    code = "order-not-found"


class AccountNotFoundError(LedgerError):
    code = "account-not-found"


class AccountNameTakenError(LedgerError):
    code = "account-name-taken"


class ApiKeyNotFoundError(LedgerError):
    code = "api-key-not-found"


class VersionMismatchError(LedgerError):
    """The caller expected another version of the order (HTTP 412)."""

    code = "version-mismatch"


class ConcurrentUpdateError(LedgerError):
    """Other writers kept changing the order while this command retried (HTTP 409)."""

    code = "concurrent-update"


class IdempotencyKeyReusedError(InvalidInputError):
    """The idempotency key was used before for a different request (HTTP 422)."""

    code = "idempotency-key-reused"


class ResponseStoredError(LedgerError):
    """A response was stored under this idempotency key while the request ran: replay it (never a client error)."""

    code = "idempotent-response-stored"

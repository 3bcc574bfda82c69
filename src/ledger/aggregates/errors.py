"""Named errors of the domain. Each has a stable `code`: the API turns it into a problem `type` URI."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""

    code = "ledger-error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(LedgerError):
    """Well-formed but invalid input (HTTP 422)."""

    code = "invalid-input"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidOrderError(InvalidInputError):
    code = "invalid-order"


class UnknownLineError(InvalidInputError):
    code = "unknown-line"


class InvalidQuantityError(InvalidInputError):
    code = "invalid-quantity"


class InvalidAmountError(InvalidInputError):
    code = "invalid-amount"


class InvalidTrackingNumberError(InvalidInputError):
    code = "invalid-tracking-number"


class InvalidCarrierError(InvalidInputError):
    code = "invalid-carrier"


class CarrierNameRequiredError(InvalidInputError):
    code = "carrier-name-required"


class InvalidShipTimeError(InvalidInputError):
    code = "invalid-ship-time"


class ReasonRequiredError(InvalidInputError):
    code = "reason-required"


class RuleViolationError(LedgerError):
    """The order's state or its marketplace's rules refuse the command (HTTP 409)."""

    code = "rule-violation"


class NothingToShipError(RuleViolationError):
    code = "nothing-to-ship"


class OverShipmentError(RuleViolationError):
    code = "over-shipment"


class ShipUnpaidOrderError(RuleViolationError):
    code = "ship-unpaid-order"


class ShipDuringCancellationDisputeError(RuleViolationError):
    code = "ship-during-cancellation-dispute"


class CancelAfterShipmentError(RuleViolationError):
    code = "cancel-after-shipment"


class NothingToCancelError(RuleViolationError):
    code = "nothing-to-cancel"


class PartialCancellationError(RuleViolationError):
    code = "partial-cancellation-not-supported"


class RefundUnpaidOrderError(RuleViolationError):
    code = "refund-unpaid-order"


class RefundUnshippedError(RuleViolationError):
    code = "refund-unshipped"


class RefundBeforeChargeError(RuleViolationError):
    code = "refund-before-charge"


class OverRefundError(RuleViolationError):
    code = "over-refund"


class NothingToRefundError(RuleViolationError):
    code = "nothing-to-refund"


class DisputeNotFoundError(RuleViolationError):
    code = "dispute-not-found"


class DisputeAlreadyClosedError(RuleViolationError):
    code = "dispute-already-closed"


class OverRestockError(RuleViolationError):
    code = "over-restock"


class ImportConflictError(RuleViolationError):
    code = "import-conflict"


class AccountMismatchError(RuleViolationError):
    code = "account-mismatch"


class UnknownSyncReferenceError(RuleViolationError):
    code = "unknown-sync-reference"


class ShipmentNotFoundError(RuleViolationError):
    code = "shipment-not-found"


class ShipmentAcknowledgedError(RuleViolationError):
    """The marketplace acknowledged the shipment: it is a fact there, so refund instead of voiding."""

    code = "shipment-acknowledged"


class ShipmentVoidedError(RuleViolationError):
    code = "shipment-voided"


class ShipmentRefundedError(RuleViolationError):
    """Voiding would unship units that were refunded as shipped."""

    code = "shipment-refunded"

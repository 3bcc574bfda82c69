"""Every error the API returns, in one place: RFC 9457 problem details (`application/problem+json`).

Domain errors keep their stable `code` as the problem type; a client never sees a stack trace or SQL.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

import msgspec
import psycopg
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi import ResponseSpec
from litestar.types import ExceptionHandlersMap
from psycopg_pool import PoolTimeout

from ledger.aggregates.errors import (
    DisputeNotFoundError,
    InvalidInputError,
    LedgerError,
    RuleViolationError,
)
from ledger.application.errors import (
    AccountNameTakenError,
    AccountNotFoundError,
    ApiKeyNotFoundError,
    ConcurrentUpdateError,
    OrderNotFoundError,
    VersionMismatchError,
)
from ledger.eventstore.database import DatabaseUnavailableError
from ledger.finance.reconcile import ReconciliationNotFoundError
from ledger.projections import exposure, refunds
from ledger.projections.all_sales_view import InvalidCursorError, InvalidFilterError

PROBLEM_BASE = "https://ledger.dev/problems/"
PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 5
_log = logging.getLogger("ledger.api")


class FieldError(msgspec.Struct, frozen=True):
    field: str
    message: str


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """An RFC 9457 problem details object."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


class BadRequestError(Exception):
    """Malformed input the routes find themselves (a header or parameter they parse): HTTP 400."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class UnsupportedMediaTypeError(Exception):
    """A body sent as a media type its route does not read (JSON as text/plain): HTTP 415."""


class ProjectionBehindError(Exception):
    """A read asked for a log position its view had not reached within the bound: HTTP 503, Retry-After."""

    def __init__(self, projection: str, position: int, waited: float) -> None:
        super().__init__(
            f"the {projection} view has not reached position {position} after {waited:g} s; retry"
        )
        self.projection = projection
        self.position = position


class ReplicaBehindError(Exception):
    """A read asked for a log position the read replica had not replayed within the bound: HTTP 503, Retry-After."""

    def __init__(self, position: int, waited: float) -> None:
        super().__init__(f"the read replica has not replayed position {position} after {waited:g} s; retry")
        self.position = position


_DESCRIPTIONS = {
    400: "malformed: a body that is not JSON, an unknown query parameter, or a header that cannot be read",
    401: "missing, unknown or revoked API key",
    403: "the key's role may not do this",
    404: "unknown, or another seller's",
    409: "refused by the ledger's rules (the type names the rule)",
    412: "If-Match is stale",
    413: "body over the size limit",
    415: "the body is sent as another media type than the route reads (JSON: application/json)",
    422: "well-formed but invalid: a body field or a query parameter's value; `errors` names them",
    503: "database unavailable, or a view (or the read replica) behind `min_position`; see Retry-After",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problems a route may answer with.

    400 is always among them: any route may get malformed input, and without this entry the schema would
    show Litestar's default 400 (`application/json`, another shape) instead of the problem we answer with.
    """
    return {
        status: ResponseSpec(Problem, description=_DESCRIPTIONS[status], media_type=PROBLEM_JSON)
        for status in sorted({400, *statuses})
    }


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Problem]:
    body = Problem(
        type=PROBLEM_BASE + code,
        title=title or code.replace("-", " ").capitalize(),
        status=status,
        detail=detail,
        errors=errors,
    )
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# Most specific first: the first class the error is an instance of decides the status.
_LEDGER_STATUS: tuple[tuple[type[LedgerError], int], ...] = (
    (VersionMismatchError, 412),
    (OrderNotFoundError, 404),
    (DisputeNotFoundError, 404),  # the order exists; the dispute under it does not
    (AccountNotFoundError, 404),
    (ApiKeyNotFoundError, 404),
    (ReconciliationNotFoundError, 404),
    (InvalidInputError, 422),
    (RuleViolationError, 409),
    (ConcurrentUpdateError, 409),
    (AccountNameTakenError, 409),
)


def status_of(exc: LedgerError) -> int:
    return next((status for cls, status in _LEDGER_STATUS if isinstance(exc, cls)), 422)


def ledger_problem(exc: LedgerError) -> Problem:
    """The problem a domain error becomes (also used per order in a bulk import's report)."""
    errors = None
    if isinstance(exc, InvalidInputError):
        errors = [FieldError(exc.field or "", exc.message)]
    status = status_of(exc)
    return Problem(
        type=PROBLEM_BASE + exc.code,
        title=exc.code.replace("-", " ").capitalize(),
        status=status,
        detail=exc.message,
        errors=errors,
    )


def _ledger_error(_: Request[Any, Any, Any], exc: LedgerError) -> Response[Problem]:
    body = ledger_problem(exc)
    return Response(body, status_code=body.status, media_type=PROBLEM_JSON)


_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]*)`")
_MISSING_QUERY = re.compile(r"Missing required query parameter '([^']*)'")


def _field_errors(extra: Any) -> tuple[list[FieldError], set[str]]:
    """Field errors from Litestar's validation report, and where they are (body, query, header, ...)."""
    errors: list[FieldError] = []
    sources: set[str] = set()
    for item in extra if isinstance(extra, list) else []:
        if not isinstance(item, dict):
            continue
        key = str(item.get("key", ""))
        message = str(item.get("message", "invalid value"))
        source = item.get("source")
        sources.add(str(getattr(source, "value", source)))  # "body", or a ParamType: query, header, ...
        key = "" if key == "data" else key
        if match := _UNKNOWN_FIELD.search(message):
            key = f"{key}.{match.group(1)}" if key else match.group(1)
        errors.append(FieldError(key, message))
    return errors, sources


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    headers = dict(exc.headers or {})
    if isinstance(exc, ValidationException):
        # A query parameter or body field that fails its type or bounds is well-formed but invalid: 422. A
        # query value answers as the filters' own refusals do (`limit=0` and `status=bogus` answer alike).
        errors, sources = _field_errors(exc.extra)
        if match := _MISSING_QUERY.match(exc.detail):  # reported by Litestar in words only
            errors, sources = [FieldError(match.group(1), "a required query parameter is missing")], {"query"}
        if errors and sources == {"query"}:
            return problem(422, "invalid-filter", "a query parameter is not valid", errors=errors)
        if errors and sources <= {"body", "query"}:
            return problem(422, "invalid-request", "the request is not valid", errors=errors)
        return problem(400, "bad-request", "a header or path parameter cannot be read", errors=errors)
    if isinstance(exc, NotAuthorizedException):
        headers["WWW-Authenticate"] = "Bearer"
        return problem(401, "unauthorized", exc.detail, headers=headers)
    if isinstance(exc, PermissionDeniedException):
        return problem(403, "forbidden", exc.detail)
    if isinstance(exc, NotFoundException):
        return problem(404, "not-found", "no such resource")
    if isinstance(exc, MethodNotAllowedException):
        return problem(405, "method-not-allowed", "this resource does not take that method", headers=headers)
    if isinstance(exc, RequestEntityTooLarge):
        return problem(413, "body-too-large", "the request body is over the size limit")
    if exc.status_code == 400:
        return problem(400, "malformed-request", f"the request could not be read: {exc.detail}")
    if exc.status_code >= 500:
        return _internal_error(_, exc)
    return problem(exc.status_code, "http-error", exc.detail, headers=headers)


def _bad_request(_: Request[Any, Any, Any], exc: BadRequestError) -> Response[Problem]:
    return problem(400, "bad-request", exc.message, errors=[FieldError(exc.field, exc.message)])


def _invalid_filter(_: Request[Any, Any, Any], exc: ValueError) -> Response[Problem]:
    return problem(422, "invalid-filter", str(exc), errors=[FieldError("query", str(exc))])


def _invalid_cursor(_: Request[Any, Any, Any], exc: ValueError) -> Response[Problem]:
    return problem(422, "invalid-cursor", str(exc), errors=[FieldError("cursor", str(exc))])


_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_NAMED = re.compile(r"(?:missing required|unknown) field `([^`]*)`")


def validation_field(message: str) -> str:
    """The field a msgspec validation message is about: `lines[0].quantity` from "... - at `$.lines[0].quantity`"
    (and the named field of "missing required field `x`")."""
    match = _AT_PATH.search(message)
    path = match.group(1) if match else ""
    if named := _NAMED.search(message):
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return path


def _invalid_value(_: Request[Any, Any, Any], exc: msgspec.ValidationError) -> Response[Problem]:
    message = str(exc)
    return problem(422, "invalid-request", message, errors=[FieldError(validation_field(message), message)])


def _unsupported_media_type(_: Request[Any, Any, Any], exc: UnsupportedMediaTypeError) -> Response[Problem]:
    return problem(415, "unsupported-media-type", str(exc), errors=[FieldError("Content-Type", str(exc))])


def _unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    _log.warning("database unavailable during %s %s: %s", request.method, request.url.path, exc)
    return problem(
        503,
        "database-unavailable",
        "the database is unavailable; try again shortly",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _read_model_missing(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    _log.warning("read model missing during %s %s: %s", request.method, request.url.path, exc)
    return problem(
        503,
        "read-model-unavailable",
        "the read models are not built yet: a projection worker (`ledger serve` or `ledger worker`) builds them",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _projection_behind(_: Request[Any, Any, Any], exc: ProjectionBehindError) -> Response[Problem]:
    return problem(503, "projection-behind", str(exc), headers={"Retry-After": "1"})


def _replica_behind(_: Request[Any, Any, Any], exc: ReplicaBehindError) -> Response[Problem]:
    return problem(503, "replica-behind", str(exc), headers={"Retry-After": "1"})


def _undecodable(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    """A body the JSON decoder gives up on (invalid UTF-8, nesting deeper than its recursion limit) is the
    client's input, not our failure; the same errors raised anywhere else are ours."""
    if not any(frame.name == "decode_json" for frame in traceback.extract_tb(exc.__traceback__)):
        return _internal_error(request, exc)
    reason = "nested too deeply" if isinstance(exc, RecursionError) else "not valid UTF-8"
    return problem(400, "malformed-request", f"the request could not be read: the body is {reason}")


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    _log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal-error", "something went wrong on our side; it has been logged")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    LedgerError: _ledger_error,
    HTTPException: _http_error,
    BadRequestError: _bad_request,
    UnsupportedMediaTypeError: _unsupported_media_type,
    ProjectionBehindError: _projection_behind,
    ReplicaBehindError: _replica_behind,
    InvalidFilterError: _invalid_filter,
    InvalidCursorError: _invalid_cursor,
    refunds.InvalidFilterError: _invalid_filter,
    refunds.InvalidCursorError: _invalid_cursor,
    exposure.InvalidExposureFilterError: _invalid_filter,
    msgspec.ValidationError: _invalid_value,
    psycopg.OperationalError: _unavailable,
    psycopg.errors.UndefinedTable: _read_model_missing,
    StoreOperationalError: _unavailable,
    StoreInterfaceError: _unavailable,
    DatabaseUnavailableError: _unavailable,
    PoolTimeout: _unavailable,
    RecursionError: _undecodable,
    UnicodeDecodeError: _undecodable,
    Exception: _internal_error,
}
EXCEPTION_HANDLERS[500] = _internal_error

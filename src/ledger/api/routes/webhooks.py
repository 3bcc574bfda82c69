"""Webhooks: `/v1/webhooks` (admin) and their delivery log. Deliveries themselves are the dispatcher's
(ledger.feed.dispatcher); the tables are ledger.feed.webhooks'."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

import msgspec
import psycopg
from litestar import Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.enums import ParamType
from litestar.exceptions import NotFoundException
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    Reference,
    RequestBody,
    Schema,
)
from litestar.params import FromPath, JSONBody, QueryParameter
from msgspec import Meta
from psycopg_pool import ConnectionPool

from ledger.aggregates.errors import InvalidInputError
from ledger.api import idempotent
from ledger.api.auth import ADMIN, ROLES_OPT
from ledger.api.bodies.orders import Out, Strict
from ledger.api.errors import problem_responses
from ledger.application.errors import ResponseStoredError
from ledger.application.ledger import Ledger
from ledger.application.queries import KeyDetails
from ledger.eventstore import idempotency
from ledger.feed import webhooks
from ledger.feed.dispatcher import send_test, utcnow
from ledger.feed.items import EVENT_TYPES
from ledger.feed.urls import UrlPolicy, WebhookUrlError, check_url

TAGS = ["webhooks"]
MAX_DELIVERIES = 500


class WebhookIn(Strict, frozen=True):
    url: Annotated[str, Meta(min_length=1, max_length=2048)]
    types: Annotated[list[str], Meta(max_length=len(EVENT_TYPES))] = msgspec.field(default_factory=list)
    """The event types to deliver; empty or absent: every type."""
    description: Annotated[str, Meta(max_length=500)] | None = None


class WebhookOut(Out, frozen=True):
    webhook_id: UUID
    url: str
    types: list[str]
    description: str | None
    created_at: datetime
    position: int
    """Every event up to this position is delivered (or dead)."""
    next_attempt_at: datetime
    failed_attempts: int
    """Failed attempts at the next event so far."""

    @classmethod
    def of(cls, hook: webhooks.Webhook) -> WebhookOut:
        return cls(
            webhook_id=hook.webhook_id,
            url=hook.url,
            types=hook.types,
            description=hook.description,
            created_at=hook.created_at,
            position=hook.position,
            next_attempt_at=hook.next_attempt_at,
            failed_attempts=hook.attempts,
        )


class CreatedWebhookOut(WebhookOut, frozen=True):
    secret: str
    """Signs every delivery (`Ledger-Signature`); shown only here, once."""


class WebhookList(Out, frozen=True):
    items: list[WebhookOut]


class DeliveryOut(Out, frozen=True):
    delivery_id: int
    position: int | None
    """The event's position; null for a test delivery."""
    event_id: UUID
    event_type: str
    attempt: int
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    outcome: str
    """`succeeded`, `failed` (retried later) or `dead` (retries spent: the webhook went on without it)."""

    @classmethod
    def of(cls, attempt: webhooks.Attempt) -> DeliveryOut:
        return msgspec.convert(attempt, cls, from_attributes=True)


class DeliveryPage(Out, frozen=True):
    items: list[DeliveryOut]
    next_cursor: int | None


class Outcome(StrEnum):
    SUCCEEDED = webhooks.SUCCEEDED
    FAILED = webhooks.FAILED
    DEAD = webhooks.DEAD


def _policy(request: Request[Any, Any, Any]) -> UrlPolicy:
    policy: UrlPolicy = request.app.state.webhook_urls
    return policy


def _found(hook: webhooks.Webhook | None) -> webhooks.Webhook:
    if hook is None:
        raise NotFoundException("no such webhook")
    return hook


@post(
    "/webhooks",
    operation_id="createWebhook",
    summary="Register a webhook: signed POSTs of the seller's change feed from now on; its secret is shown once",
    tags=TAGS,
    opt={ROLES_OPT: ADMIN},
    responses=problem_responses(401, 403, 413, 422, 503),
    sync_to_thread=True,
)
def create_webhook(
    request: Request[Any, Any, Any],
    data: JSONBody[WebhookIn],
    pool: NamedDependency[ConnectionPool[Any]],
    ledger: NamedDependency[Ledger],
    key: NamedDependency[KeyDetails],
    idempotency_key: NamedDependency[str | None],
    digest: NamedDependency[str],
) -> Response[CreatedWebhookOut]:
    unknown = sorted(set(data.types) - EVENT_TYPES)
    if unknown:
        raise InvalidInputError(f"unknown event type {', '.join(unknown)}", "types")
    try:
        check_url(data.url, _policy(request))
    except WebhookUrlError as e:
        raise InvalidInputError(str(e), "url") from None
    stored = idempotent.Request(key.seller, idempotency_key, "createWebhook", digest)

    def run() -> Response[Any]:
        with pool.connection() as conn:
            try:
                with conn.transaction():  # the webhook and its stored response commit together
                    hook, secret = webhooks.create(
                        conn, key.seller, data.url, sorted(set(data.types)), data.description, utcnow()
                    )
                    body = CreatedWebhookOut(**msgspec.structs.asdict(WebhookOut.of(hook)), secret=secret)
                    response = stored.response(201, body)
                    if idempotency_key is not None:
                        with conn.cursor() as cur:
                            idempotency.insert(cur, ledger.recorder.datastore.schema, response)  # type: ignore[attr-defined]
            except psycopg.errors.UniqueViolation:  # the same key's first request committed meanwhile
                raise ResponseStoredError(idempotency_key or "") from None
        return idempotent.stored_response(response)

    return idempotent.replay_or_run(ledger, stored, run)


@get(
    "/webhooks",
    operation_id="listWebhooks",
    summary="The seller's webhooks (without their secrets)",
    tags=TAGS,
    opt={ROLES_OPT: ADMIN},
    responses=problem_responses(401, 403, 503),
    sync_to_thread=True,
)
def list_webhooks(
    pool: NamedDependency[ConnectionPool[Any]], key: NamedDependency[KeyDetails]
) -> WebhookList:
    with pool.connection() as conn:
        return WebhookList(items=[WebhookOut.of(h) for h in webhooks.list_webhooks(conn, key.seller)])


@get(
    "/webhooks/{webhook_id:uuid}",
    operation_id="getWebhook",
    summary="One webhook and how far its deliveries have come",
    tags=TAGS,
    opt={ROLES_OPT: ADMIN},
    responses=problem_responses(401, 403, 404, 503),
    sync_to_thread=True,
)
def get_webhook(
    webhook_id: FromPath[UUID], pool: NamedDependency[ConnectionPool[Any]], key: NamedDependency[KeyDetails]
) -> WebhookOut:
    with pool.connection() as conn:
        return WebhookOut.of(_found(webhooks.get(conn, key.seller, webhook_id)))


@delete(
    "/webhooks/{webhook_id:uuid}",
    operation_id="deleteWebhook",
    summary="Delete a webhook and its delivery log; nothing more is sent to it",
    tags=TAGS,
    opt={ROLES_OPT: ADMIN},
    responses=problem_responses(401, 403, 404, 503),
    sync_to_thread=True,
)
def delete_webhook(
    webhook_id: FromPath[UUID], pool: NamedDependency[ConnectionPool[Any]], key: NamedDependency[KeyDetails]
) -> None:
    with pool.connection() as conn:
        if not webhooks.delete(conn, key.seller, webhook_id):
            raise NotFoundException("no such webhook")


@get(
    "/webhooks/{webhook_id:uuid}/deliveries",
    operation_id="listWebhookDeliveries",
    summary="Every delivery attempt, newest first: time, status code or error, duration, outcome",
    tags=TAGS,
    opt={ROLES_OPT: ADMIN},
    responses=problem_responses(401, 403, 404, 422, 503),
    sync_to_thread=True,
)
def list_deliveries(
    webhook_id: FromPath[UUID],
    pool: NamedDependency[ConnectionPool[Any]],
    key: NamedDependency[KeyDetails],
    outcome: Annotated[Outcome | None, QueryParameter(description="only attempts with this outcome")] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_DELIVERIES)] = 50,
    cursor: Annotated[
        int | None, QueryParameter(ge=1, le=2**62, description="`next_cursor` of the previous page")
    ] = None,
) -> DeliveryPage:
    with pool.connection() as conn:
        _found(webhooks.get(conn, key.seller, webhook_id))
        found = webhooks.attempts(
            conn, webhook_id, outcome=outcome.value if outcome else None, before=cursor, limit=limit
        )
    next_cursor = found[-1].delivery_id if len(found) == limit else None
    return DeliveryPage(items=[DeliveryOut.of(a) for a in found], next_cursor=next_cursor)


@post(
    "/webhooks/{webhook_id:uuid}/test",
    operation_id="testWebhook",
    summary="Send a signed test event (type `WebhookTest`) now, once; answers with the attempt",
    tags=TAGS,
    opt={ROLES_OPT: ADMIN},
    status_code=200,
    responses=problem_responses(401, 403, 404, 503),
    sync_to_thread=True,
)
def test_webhook(
    request: Request[Any, Any, Any],
    webhook_id: FromPath[UUID],
    pool: NamedDependency[ConnectionPool[Any]],
    key: NamedDependency[KeyDetails],
) -> DeliveryOut:
    with pool.connection() as conn:
        found = webhooks.get_with_secret(conn, key.seller, webhook_id)
    if found is None:
        raise NotFoundException("no such webhook")
    outcome = send_test(found.webhook, found.secret, _policy(request))  # no connection held meanwhile
    state = webhooks.SUCCEEDED if outcome.succeeded else webhooks.FAILED
    try:
        with pool.connection() as conn:
            attempt = webhooks.log_attempt(conn, webhook_id, 1, outcome, utcnow(), state)
    except psycopg.errors.ForeignKeyViolation:  # deleted meanwhile
        raise NotFoundException("no such webhook") from None
    return DeliveryOut.of(attempt)


ROUTES = [create_webhook, list_webhooks, get_webhook, delete_webhook, list_deliveries, test_webhook]


def _header(name: str, description: str, fmt: OpenAPIFormat | None = None) -> Parameter:
    schema = Schema(type=OpenAPIType.STRING, format=fmt)
    return Parameter(
        name=name, param_in=ParamType.HEADER, required=True, schema=schema, description=description
    )


DELIVERY_DOC: dict[str, PathItem | Reference] = {
    "changeFeedEvent": PathItem(
        post=Operation(
            operation_id="deliverChangeFeedEvent",
            summary="What a webhook's URL receives: one change-feed item, signed",
            description=(
                "At least once, in position order per webhook (each waits for the one before it); receivers"
                " dedupe by `Ledger-Event-Id`. A 2xx within 10 s is success; anything else is retried with"
                " exponential backoff and jitter for 24 h, then the delivery is dead (listed in the webhook's"
                " deliveries) and the next event goes."
            ),
            tags=TAGS,
            parameters=[
                _header("Ledger-Event-Id", "the item's `event_id`", OpenAPIFormat.UUID),
                _header("Ledger-Event-Type", "the item's `type`"),
                _header(
                    "Ledger-Signature",
                    '`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` with the webhook\'s secret',
                ),
            ],
            request_body=RequestBody(
                content={
                    "application/json": OpenAPIMediaType(schema=Reference("#/components/schemas/FeedItem"))
                },
                required=True,
            ),
            responses={"2XX": OpenAPIResponse(description="received")},
        )
    )
}
"""The deliveries, for the OpenAPI document's `webhooks`."""

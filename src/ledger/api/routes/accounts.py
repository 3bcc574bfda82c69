"""Marketplace accounts: `/v1/accounts` (the seller is the key's)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Response, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from ledger.api import idempotent
from ledger.api.auth import ADMIN, READ_ACCOUNTS, ROLES_OPT, context_for
from ledger.api.bodies.orders import AccountIn, AccountList, AccountOut, AccountPatch
from ledger.api.errors import problem_responses
from ledger.application.ledger import Ledger
from ledger.application.queries import AccountDetails, KeyDetails
from ledger.eventstore.idempotency import StoredResponse

TAGS = ["accounts"]


@post(
    "/accounts",
    operation_id="createAccount",
    summary="Register a marketplace account",
    tags=TAGS,
    opt={ROLES_OPT: ADMIN},
    responses=problem_responses(401, 403, 409, 413, 422, 503),
    sync_to_thread=True,
)
def create_account(
    data: JSONBody[AccountIn],
    ledger: NamedDependency[Ledger],
    key: NamedDependency[KeyDetails],
    idempotency_key: NamedDependency[str | None],
    digest: NamedDependency[str],
) -> Response[AccountOut]:
    request = idempotent.Request(key.seller, idempotency_key, "createAccount", digest)

    def run() -> Response[Any]:
        def respond(details: AccountDetails) -> StoredResponse:
            return request.response(201, AccountOut.of(details))

        account = ledger.register_account(
            context_for(key, idempotency_key, digest),
            seller=key.seller,
            marketplace=data.marketplace,
            name=data.name,
            fulfillment_managed=data.fulfillment_managed,
            restock_in_ledger=data.restock_in_ledger,
            sync_enabled=data.sync_enabled,
            respond=respond if idempotency_key is not None else None,
        )
        return idempotent.stored_response(request.response(201, AccountOut.of(account)))

    return idempotent.replay_or_run(ledger, request, run)


@get(
    "/accounts",
    operation_id="listAccounts",
    summary="The seller's marketplace accounts",
    tags=TAGS,
    opt={ROLES_OPT: READ_ACCOUNTS},
    responses=problem_responses(401, 403, 503),
    sync_to_thread=True,
)
def list_accounts(ledger: NamedDependency[Ledger], key: NamedDependency[KeyDetails]) -> AccountList:
    return AccountList(items=[AccountOut.of(a) for a in ledger.list_accounts(key.seller)])


@get(
    "/accounts/{account_id:uuid}",
    operation_id="getAccount",
    summary="One marketplace account",
    tags=TAGS,
    opt={ROLES_OPT: READ_ACCOUNTS},
    responses=problem_responses(401, 403, 404, 503),
    sync_to_thread=True,
)
def get_account(
    account_id: FromPath[UUID], ledger: NamedDependency[Ledger], key: NamedDependency[KeyDetails]
) -> AccountOut:
    return AccountOut.of(ledger.get_account(account_id, key.seller))


@patch(
    "/accounts/{account_id:uuid}",
    operation_id="updateAccount",
    summary="Change an account's settings (recorded as an event)",
    tags=TAGS,
    opt={ROLES_OPT: ADMIN},
    responses=problem_responses(401, 403, 404, 409, 413, 422, 503),
    sync_to_thread=True,
)
def update_account(
    account_id: FromPath[UUID],
    data: JSONBody[AccountPatch],
    ledger: NamedDependency[Ledger],
    key: NamedDependency[KeyDetails],
) -> AccountOut:
    account = ledger.update_account(
        context_for(key),
        account_id,
        seller=key.seller,
        name=data.name,
        fulfillment_managed=data.fulfillment_managed,
        restock_in_ledger=data.restock_in_ledger,
        sync_enabled=data.sync_enabled,
    )
    return AccountOut.of(account)


ROUTES = [create_account, list_accounts, get_account, update_account]

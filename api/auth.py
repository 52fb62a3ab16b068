"""Bearer-token authentication: every route but the probes says whose data it serves."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.problems import ProblemError
from ops.tokens import Principal, authenticate
from shared.store import Store

bearer = HTTPBearer(auto_error=False, description="`mailintake tokens create` makes one")


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The token's principal; 401 for a missing, unknown or revoked token."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ProblemError(401, "send `Authorization: Bearer <token>` (see `mailintake tokens`)")
    found = await run_in_threadpool(authenticate, store_of(request), credentials.credentials)
    if found is None:
        raise ProblemError(401, "the token is unknown or revoked")
    return found


async def tenant(who: Annotated[Principal, Depends(principal)]) -> str:
    """The tenant of a tenant token (an operator token has none: 403)."""
    if who.tenant_id is None:
        raise ProblemError(403, "this endpoint needs a tenant's token, not an operator's")
    return who.tenant_id


async def operator(who: Annotated[Principal, Depends(principal)]) -> Principal:
    """An operator token's principal (a tenant token: 403)."""
    if not who.operator:
        raise ProblemError(403, "this endpoint needs an operator's token")
    return who


Tenant = Annotated[str, Depends(tenant)]
Operator = Annotated[Principal, Depends(operator)]
StoreDep = Annotated[Store, Depends(store_of)]

"""/accounts/{id}/oauth2: sign an OAuth2 mailbox in through the CRM's own callback page.

`start` gives the provider's URL (PKCE S256, a single-use state bound to the tenant and the
account for ten minutes); the provider sends the browser to the CRM's `redirect_uri`, whose page
calls `finish` with the code and the state; the code is exchanged with the kept verifier and
the refresh token stored encrypted, as `mailintake accounts authorize` does.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field, field_validator

from api.account_models import AccountView
from api.accounts import SecretBoxDep, find_account, read_account
from api.auth import StoreDep, Tenant
from api.problems import FieldError, ProblemError, responses
from shared.accounts import Account
from shared.crypto import SecretBox
from shared.errors import MailboxRejectedError, SecretError
from shared.logging import get_logger
from shared.oauth import pending
from shared.oauth.authorize import NoRefreshTokenError, save_grant
from shared.oauth.endpoint import token_endpoint
from shared.oauth.providers import check_url
from shared.store import Store

log = get_logger("mailintake.api")
router = APIRouter(
    prefix="/accounts/{account_id}/oauth2",
    tags=["accounts"],
    responses=responses(400, 401, 403, 404, 409, 422, 503),
)


class OAuthStart(BaseModel):
    """Where the provider sends the browser back: the CRM's page that then calls `finish`."""

    redirect_uri: str = Field(
        min_length=1, max_length=2000, description="https (plain http only on loopback)"
    )

    @field_validator("redirect_uri")
    @classmethod
    def _https(cls, value: str) -> str:
        return check_url(value, "redirect_uri")


class OAuthStarted(BaseModel):
    """The URL to send the browser to; the state it comes back with; when that state ends."""

    authorization_url: str
    state: str
    expires_at: datetime


class OAuthFinish(BaseModel):
    """What the provider gave the CRM's callback page: the code and the state."""

    code: str = Field(min_length=1, max_length=4096, json_schema_extra={"writeOnly": True})
    state: str = Field(min_length=1, max_length=200)


def _oauth_account(store: Store, tenant: str, account_id: str) -> Account:
    account = Account.model_validate(find_account(store, tenant, account_id))
    if account.auth != "oauth2" or account.oauth is None:
        raise ProblemError(409, f"account {account_id!r} logs in with a password, not OAuth2")
    return account


@router.post("/start", responses=responses(429))
def start_authorization(
    account_id: str, body: OAuthStart, tenant: Tenant, store: StoreDep, box: SecretBoxDep
) -> OAuthStarted:
    """Begin signing the account in: the provider's URL for the person's browser."""
    account = _oauth_account(store, tenant, account_id)
    now = datetime.now(UTC)
    try:
        started = pending.start(store, box, account, body.redirect_uri, now=now)
    except pending.TooManyStartedError as exc:
        wait = math.ceil((exc.retry_at - now).total_seconds())
        raise ProblemError(429, str(exc), retry_after=wait) from exc
    log.info("oauth_authorization_started", tenant_id=tenant, account_id=account_id)
    return OAuthStarted(
        authorization_url=started.url, state=started.state, expires_at=started.expires_at
    )


@router.post("/finish", responses=responses(502))
def finish_authorization(
    account_id: str, body: OAuthFinish, tenant: Tenant, store: StoreDep, box: SecretBoxDep
) -> AccountView:
    """Exchange the code (the state is used up, once); the refresh token is stored encrypted."""
    account = _oauth_account(store, tenant, account_id)
    _finish(store, box, account, body)
    log.info("oauth_authorized", tenant_id=tenant, account_id=account_id)
    return read_account(account_id, tenant, store)


def _finish(store: Store, box: SecretBox, account: Account, body: OAuthFinish) -> None:
    now = datetime.now(UTC)
    try:
        taken = pending.take(store, box, account.tenant_id, account.id, body.state, now=now)
    except pending.StateRefusedError as exc:
        error = FieldError(field="body.state", value="***", message=str(exc))
        raise ProblemError(400, str(exc), [error]) from exc
    except SecretError as exc:
        raise ProblemError(503, f"{exc}: start again after fixing MAILINTAKE_SECRET_KEY") from exc
    try:
        endpoint = token_endpoint(account, box)
        grant = endpoint.exchange_code(
            body.code, redirect_uri=taken.redirect_uri, verifier=taken.verifier
        )
        save_grant(store, account, grant, box, now=now)
    except MailboxRejectedError as exc:  # the code is bad, used, or not this client's
        error = FieldError(field="body.code", value="***", message=str(exc))
        raise ProblemError(400, f"the provider refused the code: {exc}", [error]) from exc
    except NoRefreshTokenError as exc:
        raise ProblemError(502, str(exc)) from exc
    except SecretError as exc:  # the key changed since the secret or the verifier was stored
        raise ProblemError(503, f"{exc}: start again after fixing MAILINTAKE_SECRET_KEY") from exc

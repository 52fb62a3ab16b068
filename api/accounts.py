"""/accounts: a tenant's mailboxes, as `mailintake accounts` handles them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from api.account_models import (
    AccountCreate,
    AccountStatus,
    AccountTest,
    AccountUpdate,
    AccountView,
    status,
    view,
)
from api.auth import StoreDep, Tenant
from api.context import command_context, secret_box
from api.problems import FieldError, ProblemError, field_errors, not_found, responses
from ops import oauth
from ops.accounts import PLAINTEXT_PORTS, AccountLimitError, insert_account, vet_mailbox_host
from shared.accounts import Account, AccountConfig
from shared.crypto import SecretBox
from shared.errors import MailintakeError
from shared.logging import get_logger
from shared.netpolicy import AddressRefusedError, HostNotResolvedError
from shared.oauth.authorize import GRANT_FIELDS
from shared.oauth.providers import OAuthClient
from shared.store import Doc, Store, store_errors

router = APIRouter(
    prefix="/accounts", tags=["accounts"], responses=responses(400, 401, 403, 404, 422)
)
SecretBoxDep = Annotated[SecretBox, Depends(secret_box)]
log = get_logger("mailintake.api")


def find_account(store: Store, tenant: str, account_id: str) -> Doc:
    with store_errors("read the account"):
        doc = store.accounts.find_one({"_id": account_id, "tenant_id": tenant})
    if doc is None:
        raise not_found("account", account_id)
    return doc


def _config(tenant: str, fields: dict[str, Any]) -> AccountConfig:
    security = fields.get("security")
    if security is None and fields.get("port") in PLAINTEXT_PORTS:
        port = fields["port"]
        raise ProblemError(
            422,
            f"port {port} is a plaintext port: say security starttls, or none to send the "
            "password unencrypted",
            [FieldError(field="body.port", value=port, message="a plaintext port")],
        )
    fields = {**fields, "security": security or "ssl", "allow_plaintext": security == "none"}
    try:
        return AccountConfig(tenant_id=tenant, **fields)
    except ValidationError as exc:
        errors = field_errors(exc, "body")
        raise ProblemError(422, "; ".join(e.message for e in errors), errors) from exc


def _check_host(config: AccountConfig) -> None:
    """With MAILINTAKE_MAILBOX_DENY_PRIVATE, a host inside the network is a 422 naming it."""
    try:
        vet_mailbox_host(config, what="the mailbox host")
    except (AddressRefusedError, HostNotResolvedError) as exc:
        error = FieldError(field="body.host", value=config.host, message=str(exc))
        raise ProblemError(422, str(exc), [error]) from exc


def _check_group(store: Store, config: AccountConfig) -> None:
    group = config.manager_group_id
    if group is None:
        return
    query = {"_id": group, "tenant_id": config.tenant_id}
    with store_errors("read the manager group"):
        if store.manager_groups.find_one(query, {"_id": 1}) is None:
            raise ProblemError(
                422,
                f"no manager group {group!r}",
                [FieldError(field="body.manager_group_id", value=group, message="no such group")],
            )


def _refused_field(field: str, value: Any, message: str) -> ProblemError:
    return ProblemError(
        422, f"{field}: {message}", [FieldError(field=field, value=value, message=message)]
    )


def _secrets(body: AccountCreate, box: SecretBox) -> Doc:
    """The encrypted password, or the OAuth2 client secret (an OAuth2 account has no password)."""
    if body.auth == "password":
        if body.password is None:
            raise _refused_field("body.password", None, "a password is needed (or auth oauth2)")
        if body.oauth is not None:
            raise _refused_field("body.oauth", body.oauth.model_dump(), "needs auth oauth2")
        if body.client_secret is not None:
            raise _refused_field("body.client_secret", "***", "needs auth oauth2")
        return {"password_enc": box.encrypt(body.password.get_secret_value())}
    if body.oauth is None:
        raise _refused_field("body.oauth", None, "auth oauth2 needs oauth: {provider, client_id}")
    if body.password is not None:
        raise _refused_field("body.password", "***", "an OAuth2 account logs in without one")
    if body.client_secret is None:
        return {}
    return {"oauth_client_secret_enc": box.encrypt(body.client_secret.get_secret_value())}


@router.post("", status_code=201, responses=responses(409, 503))
def create_account(
    body: AccountCreate, tenant: Tenant, store: StoreDep, box: SecretBoxDep, response: Response
) -> AccountView:
    """Connect a mailbox (at most 10 per tenant: 409 past it); its secrets are stored encrypted.

    An OAuth2 account (`auth: oauth2`) is then signed in with `…/oauth2/start` and `…/finish`.
    """
    secret = _secrets(body, box)
    config = _config(tenant, body.model_dump(exclude={"password", "client_secret"}))
    _check_host(config)
    _check_group(store, config)
    now = datetime.now(UTC)
    try:
        with store_errors("add the account"):
            doc = insert_account(store, config, secret, now=now)
    except AccountLimitError as exc:
        raise ProblemError(409, str(exc)) from exc
    response.headers["Location"] = f"/accounts/{doc['_id']}"
    return read_account(doc["_id"], tenant, store)  # as stored (times to the millisecond)


@router.get("")
def list_accounts(tenant: Tenant, store: StoreDep) -> list[AccountView]:
    """The tenant's accounts."""
    now = datetime.now(UTC)
    with store_errors("read the accounts"):
        return [view(d, now=now) for d in store.accounts.find({"tenant_id": tenant}).sort("_id", 1)]


@router.get("/{account_id}")
def read_account(account_id: str, tenant: Tenant, store: StoreDep) -> AccountView:
    """One account (never its password)."""
    return view(find_account(store, tenant, account_id), now=datetime.now(UTC))


@router.patch("/{account_id}", responses=responses(503))
def update_account(
    account_id: str, body: AccountUpdate, tenant: Tenant, store: StoreDep, request: Request
) -> AccountView:
    """Change an account's options (validated as a whole) and, if given, its password."""
    doc = find_account(store, tenant, account_id)
    changes = body.model_dump(exclude_unset=True, exclude={"password", "client_secret"})
    stored = AccountConfig.model_validate(doc)
    _check_auth_fields(body, stored.auth)
    config = _config(tenant, {**stored.model_dump(exclude={"tenant_id"}), **changes})
    if "host" in changes or "port" in changes:
        _check_host(config)
    _check_group(store, config)
    update, dropped = config.model_dump(), {}
    if body.password is not None:
        update["password_enc"] = secret_box(request).encrypt(body.password.get_secret_value())
    if body.client_secret is not None:
        secret = body.client_secret.get_secret_value()
        update["oauth_client_secret_enc"] = secret_box(request).encrypt(secret)
    if config.oauth is not None and _client(config.oauth) != _client(stored.oauth):
        dropped = dict.fromkeys(GRANT_FIELDS, "")  # another client's tokens are no use
    with store_errors("update the account"):
        store.accounts.update_one(
            {"_id": account_id, "tenant_id": tenant},
            {"$set": update, **({"$unset": dropped} if dropped else {})},
        )
    if dropped:
        log.info("oauth_client_changed", tenant_id=tenant, account_id=account_id)
    return read_account(account_id, tenant, store)


def _check_auth_fields(body: AccountUpdate, auth: str) -> None:
    """A password for an OAuth2 account, or an OAuth2 client for a password account, is a
    422 naming the field (the way an account logs in is chosen when it is added)."""
    if auth == "oauth2" and body.password is not None:
        raise _refused_field("body.password", "***", "an OAuth2 account logs in without one")
    if auth == "password" and body.oauth is not None:
        raise _refused_field("body.oauth", body.oauth.model_dump(), "needs auth oauth2")
    if auth == "password" and body.client_secret is not None:
        raise _refused_field("body.client_secret", "***", "needs auth oauth2")


def _client(client: OAuthClient | None) -> tuple[str | None, ...]:
    """What a grant is bound to: the provider, the client and where tokens come from."""
    if client is None:
        return (None,)
    return (client.provider, client.client_id, client.token_url)


def _set_enabled(store: Store, tenant: str, account_id: str, enabled: bool) -> AccountView:
    find_account(store, tenant, account_id)
    with store_errors("update the account"):
        store.accounts.update_one(
            {"_id": account_id, "tenant_id": tenant}, {"$set": {"enabled": enabled}}
        )
    return read_account(account_id, tenant, store)


@router.post("/{account_id}/enable")
def enable_account(account_id: str, tenant: Tenant, store: StoreDep) -> AccountView:
    """Start fetching the account."""
    return _set_enabled(store, tenant, account_id, True)


@router.post("/{account_id}/disable")
def disable_account(account_id: str, tenant: Tenant, store: StoreDep) -> AccountView:
    """Stop fetching the account (within one lease period)."""
    return _set_enabled(store, tenant, account_id, False)


@router.delete("/{account_id}", status_code=204)
def delete_account(account_id: str, tenant: Tenant, store: StoreDep) -> Response:
    """Delete the account (its mail stays)."""
    find_account(store, tenant, account_id)
    with store_errors("delete the account"):
        store.accounts.delete_one({"_id": account_id, "tenant_id": tenant})
    return Response(status_code=204)


@router.get("/{account_id}/status")
def account_status(account_id: str, tenant: Tenant, store: StoreDep) -> AccountStatus:
    """The account's state and its first load's progress, rate and ETA."""
    return status(find_account(store, tenant, account_id), now=datetime.now(UTC))


@router.post("/{account_id}/test", responses=responses(503))
async def test_account(
    account_id: str, tenant: Tenant, store: StoreDep, request: Request
) -> AccountTest:
    """Connect, log in and open the folder (IMAP) or list the mailbox (POP3); what failed."""
    from fetcher.probe import probe  # the mail libraries are loaded only for this endpoint

    doc = await run_in_threadpool(find_account, store, tenant, account_id)
    account = Account.model_validate(doc)
    secret_box(request)
    ctx = command_context(request)
    try:
        secret = await run_in_threadpool(oauth.login_secret, ctx, account)
    except MailintakeError as exc:  # a secret the key cannot read, an OAuth2 refusal
        return AccountTest(ok=False, reason="secret", message=str(exc), summary=str(exc))
    result = await run_in_threadpool(probe, account, secret)
    return AccountTest(
        ok=result.ok,
        reason=result.reason,
        message=result.message,
        summary=result.summary,
        messages=result.messages,
    )

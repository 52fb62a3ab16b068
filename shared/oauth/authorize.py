"""One authorization of an OAuth2 account: the URL a person opens, the grant stored encrypted."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.accounts import Account
from shared.crypto import SecretBox
from shared.errors import ConfigError, PermanentError
from shared.oauth.client import TokenGrant
from shared.oauth.pkce import AuthorizationRequest
from shared.store import Doc, Store, store_errors


class NoRefreshTokenError(PermanentError):
    """Raised when the provider answers a code with tokens but no refresh token."""

    def __init__(self) -> None:
        super().__init__(
            "the provider returned no refresh token: revoke this app's access in the "
            "account's security settings and authorize again"
        )


def authorization_url(account: Account, request: AuthorizationRequest) -> str:
    """The provider's URL where the account's user consents (PKCE, state, login hint)."""
    if account.auth != "oauth2" or account.oauth is None:
        raise ConfigError(f"account {account.id} logs in with a password, not OAuth2")
    endpoints = account.oauth.endpoints(account.protocol)
    return request.url(
        endpoints.auth_url,
        client_id=account.oauth.client_id,
        scope=endpoints.scope,
        login_hint=account.username,
    )


GRANT_FIELDS = (
    "oauth_refresh_token_enc",
    "oauth_access_token_enc",
    "oauth_access_issued_at",
    "oauth_access_expires_at",
    "oauth_refresh_expires_at",
    "oauth_authorized_at",
)


def grant_fields(grant: TokenGrant, box: SecretBox, now: datetime) -> Doc:
    """The account fields of a code's grant: tokens encrypted, their times; never in clear."""
    if grant.refresh_token is None:
        raise NoRefreshTokenError()
    refresh_ends = grant.refresh_expires_in
    return {
        "oauth_refresh_token_enc": box.encrypt(grant.refresh_token),
        "oauth_access_token_enc": box.encrypt(grant.access_token),
        "oauth_access_issued_at": now,
        "oauth_access_expires_at": now + timedelta(seconds=grant.expires_in),
        "oauth_refresh_expires_at": now + timedelta(seconds=refresh_ends) if refresh_ends else None,
        "oauth_authorized_at": now,
    }


def save_grant(
    store: Store, account: Account, grant: TokenGrant, box: SecretBox, *, now: datetime
) -> None:
    """Store the grant in the account (a new authorization replaces the old tokens)."""
    fields = grant_fields(grant, box, now)
    with store_errors("store the OAuth2 tokens"):
        store.accounts.update_one(
            {"tenant_id": account.tenant_id, "_id": account.id}, {"$set": fields}
        )

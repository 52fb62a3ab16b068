"""The token endpoint of a stored OAuth2 account, with its client secret decrypted."""

from __future__ import annotations

from shared.accounts import Account
from shared.crypto import SecretBox
from shared.errors import ConfigError
from shared.oauth.client import TokenEndpoint


def token_endpoint(account: Account, box: SecretBox) -> TokenEndpoint:
    """The account's token endpoint as its OAuth2 client (public clients have no secret)."""
    if account.auth != "oauth2" or account.oauth is None:
        raise ConfigError(f"account {account.id} does not log in with OAuth2")
    endpoints = account.oauth.endpoints(account.protocol)
    secret_enc = account.oauth_client_secret_enc
    return TokenEndpoint(
        endpoints.token_url,
        account.oauth.client_id,
        box.decrypt(secret_enc) if secret_enc else None,
    )

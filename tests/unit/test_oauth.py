"""OAuth2 pieces without the mail server: presets, PKCE, token cache and refresh, errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from shared.accounts import Account, AccountConfig
from shared.crypto import SecretBox
from shared.errors import ConfigError, MailboxRejectedError, MailboxUnavailableError
from shared.oauth.authorize import NoRefreshTokenError, authorization_url, grant_fields
from shared.oauth.client import TokenEndpoint, TokenGrant
from shared.oauth.pkce import AuthorizationRequest, challenge_of
from shared.oauth.providers import (
    MICROSOFT_BASE,
    MICROSOFT_SCOPES,
    OAuthClient,
    ProviderName,
)
from shared.oauth.tokens import AccessTokens, StoredTokens, renew_at
from tests.oauth_server import CLIENT_ID, CLIENT_SECRET, OAuthServer, running_oauth_server

T0 = datetime(2030, 1, 1, tzinfo=UTC)
BOX = SecretBox(SecretBox.generate_key())


def test_presets_carry_the_providers_endpoints_and_mail_scopes() -> None:
    google = OAuthClient(provider="google", client_id="c").endpoints("imap")
    assert google.token_url == "https://oauth2.googleapis.com/token"
    assert google.scope == "https://mail.google.com/"
    pop = OAuthClient(provider="microsoft", client_id="c").endpoints("pop3")
    assert pop.scope == "https://outlook.office.com/POP.AccessAsUser.All offline_access"
    assert pop.auth_url.endswith("/common/oauth2/v2.0/authorize")


def test_a_custom_provider_needs_its_urls_and_plain_http_only_on_loopback() -> None:
    with pytest.raises(ValidationError, match="--token-url, --auth-url, --scope"):
        OAuthClient(provider="custom", client_id="c")
    with pytest.raises(ValidationError, match="https"):
        OAuthClient(provider="google", client_id="c", token_url="http://idp.example/token")
    OAuthClient(provider="google", client_id="c", token_url="http://127.0.0.1:9/token")


def test_stored_accounts_without_oauth_fields_still_load_as_password_accounts() -> None:
    doc = {"_id": "a1", "tenant_id": "t", "owner_id": "o", "protocol": "imap", "host": "h",
           "username": "u", "password_enc": "x"}  # fmt: skip
    account = Account.model_validate(doc)
    assert account.auth == "password" and account.oauth is None
    with pytest.raises(ValidationError, match="--auth oauth2 needs"):
        AccountConfig.model_validate({**doc, "auth": "oauth2"})


def test_the_authorization_url_carries_pkce_state_and_the_login_hint() -> None:
    request = AuthorizationRequest("http://127.0.0.1:5000/")
    url = request.url("https://idp.example/auth?x=1", client_id="c", scope="mail", login_hint="u")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["code_challenge"] == challenge_of(request.verifier)
    assert query["code_challenge_method"] == "S256" and query["state"] == request.state
    assert query["x"] == "1" and query["login_hint"] == "u"
    assert AuthorizationRequest("r").verifier != request.verifier


def oauth_account(provider: ProviderName, *, auth: str = "oauth2") -> Account:
    client = OAuthClient(provider=provider, client_id="app-1") if auth == "oauth2" else None
    return Account.model_validate(
        {"_id": "a1", "tenant_id": "t", "owner_id": "u", "protocol": "imap",
         "host": "outlook.office365.com", "username": "orders@example.com",
         "auth": auth, "oauth": client}
    )  # fmt: skip


def test_the_authorization_url_of_an_account_is_its_providers_with_its_mail_scope() -> None:
    request = AuthorizationRequest("https://crm.example/callback")
    url = urlsplit(authorization_url(oauth_account("microsoft"), request))
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{MICROSOFT_BASE}/authorize"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["scope"] == MICROSOFT_SCOPES["imap"] and query["client_id"] == "app-1"
    assert query["login_hint"] == "orders@example.com"
    assert query["redirect_uri"] == "https://crm.example/callback"
    with pytest.raises(ConfigError, match="a1 logs in with a password"):
        authorization_url(oauth_account("google", auth="password"), request)


def test_a_codes_grant_is_kept_encrypted_and_one_without_a_refresh_token_refused() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    fields = grant_fields(TokenGrant("at-1", 3600, "rt-1", 86_400), BOX, now)
    assert BOX.decrypt(fields["oauth_refresh_token_enc"]) == "rt-1"
    assert BOX.decrypt(fields["oauth_access_token_enc"]) == "at-1"
    assert "rt-1" not in str(fields) and "at-1" not in str(fields)
    assert fields["oauth_access_expires_at"] == now + timedelta(hours=1)
    assert fields["oauth_refresh_expires_at"] == now + timedelta(days=1)
    with pytest.raises(NoRefreshTokenError, match="authorize again"):
        grant_fields(TokenGrant("at-2", 3600), BOX, now)


@dataclass
class FakeTokenStore:
    """Tokens of one account in memory; rotation is compare-and-set like the real one."""

    tokens: StoredTokens
    refresh_expires_at: datetime | None = None

    def load(self, account_id: str) -> StoredTokens:
        return self.tokens

    def save_access(
        self, account_id: str, *, access_enc: str, issued_at: datetime, expires_at: datetime
    ) -> None:
        self.tokens = StoredTokens(self.tokens.refresh_enc, access_enc, issued_at, expires_at)

    def rotate_refresh(
        self, account_id: str, *, old_enc: str, new_enc: str, expires_at: datetime | None
    ) -> bool:
        if self.tokens.refresh_enc != old_enc:
            return False
        t = self.tokens
        self.tokens = StoredTokens(new_enc, t.access_enc, t.access_issued_at, t.access_expires_at)
        self.refresh_expires_at = expires_at
        return True


@dataclass
class FakeRefreshEndpoint:
    """Hands out numbered tokens; can rotate the refresh token or refuse it."""

    rotate: bool = False
    refuse: bool = False
    calls: list[str] = field(default_factory=list)

    def refresh(self, refresh_token: str, scope: str) -> TokenGrant:
        self.calls.append(refresh_token)
        if self.refuse:
            raise MailboxRejectedError("oauth_invalid_grant", "token endpoint refused")
        n = len(self.calls)
        return TokenGrant(f"access-{n}", 600, f"refresh-{n}" if self.rotate else None, 86400)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def tokens_for(store: FakeTokenStore, endpoint: FakeRefreshEndpoint, clock: Clock) -> AccessTokens:
    return AccessTokens(
        "a1", "mail", store=store, box=BOX, endpoint=endpoint, clock=clock
    )  # fmt: skip


def test_the_cached_token_is_used_until_its_renewal_time_then_refreshed() -> None:
    store = FakeTokenStore(StoredTokens(refresh_enc=BOX.encrypt("refresh-0")))
    endpoint, clock = FakeRefreshEndpoint(), Clock()
    tokens = tokens_for(store, endpoint, clock)
    first = tokens.current()
    assert first.token == "access-1" and first.renew_at == T0 + timedelta(seconds=480)
    assert store.tokens.access_enc and "access-1" not in store.tokens.access_enc
    clock.now = T0 + timedelta(seconds=479)
    assert tokens.current().token == "access-1"
    clock.now = T0 + timedelta(seconds=481)
    assert tokens.current().token == "access-2"
    assert endpoint.calls == ["refresh-0", "refresh-0"]


def test_a_rotated_refresh_token_is_saved_encrypted_and_used_next() -> None:
    store = FakeTokenStore(StoredTokens(refresh_enc=BOX.encrypt("refresh-0")))
    endpoint = FakeRefreshEndpoint(rotate=True)
    tokens = tokens_for(store, endpoint, Clock())
    tokens.refresh()
    tokens.refresh()
    assert endpoint.calls == ["refresh-0", "refresh-1"]
    assert store.tokens.refresh_enc and BOX.decrypt(store.tokens.refresh_enc) == "refresh-2"
    assert store.refresh_expires_at == T0 + timedelta(days=1)  # the consent's end, as told


def test_a_refused_refresh_token_is_not_sent_again_until_a_new_one_is_stored() -> None:
    store = FakeTokenStore(StoredTokens(refresh_enc=BOX.encrypt("refresh-0")))
    endpoint = FakeRefreshEndpoint(refuse=True)
    tokens = tokens_for(store, endpoint, Clock())
    for _ in range(3):
        with pytest.raises(MailboxRejectedError, match="refused"):
            tokens.current()
    assert len(endpoint.calls) == 1
    store.tokens = StoredTokens(refresh_enc=BOX.encrypt("authorized-again"))
    endpoint.refuse = False
    assert tokens.current().token == "access-2"


def test_without_a_refresh_token_the_account_asks_for_authorize() -> None:
    tokens = tokens_for(FakeTokenStore(StoredTokens()), FakeRefreshEndpoint(), Clock())
    with pytest.raises(MailboxRejectedError) as missing:
        tokens.current()
    assert missing.value.reason == "oauth_not_authorized" and "authorize a1" in str(missing.value)


def test_short_lived_tokens_are_renewed_after_four_fifths_of_their_life() -> None:
    assert renew_at(T0, T0 + timedelta(seconds=10)) == T0 + timedelta(seconds=8)
    assert renew_at(T0, T0 + timedelta(hours=1)) == T0 + timedelta(seconds=3480)


@pytest.fixture
def server() -> Iterator[OAuthServer]:
    with running_oauth_server(port=0) as s:
        yield s


def test_the_token_endpoint_classifies_refusals_and_outages(server: OAuthServer) -> None:
    good = TokenEndpoint(server.token_url, CLIENT_ID, CLIENT_SECRET, timeout=5)
    refresh = server.state.issue_refresh_token("u1")
    assert good.refresh(refresh, "mail").expires_in == 3600
    server.state.revoke_user("u1")
    with pytest.raises(MailboxRejectedError) as revoked:
        good.refresh(refresh, "mail")
    assert revoked.value.reason == "oauth_invalid_grant" and refresh not in str(revoked.value)
    bad_client = TokenEndpoint(server.token_url, CLIENT_ID, "wrong", timeout=5)
    with pytest.raises(MailboxRejectedError) as refused:
        bad_client.refresh(refresh, "mail")
    assert refused.value.reason == "oauth_invalid_client"
    down = TokenEndpoint("http://127.0.0.1:1/token", CLIENT_ID, CLIENT_SECRET, timeout=5)
    with pytest.raises(MailboxUnavailableError) as unavailable:
        down.refresh(refresh, "mail")
    assert unavailable.value.reason == "oauth_unavailable"

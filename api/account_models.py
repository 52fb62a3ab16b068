"""The accounts' request and response bodies (the fields of `mailintake accounts add`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from shared.accounts import (
    AccountFields,
    AuthMode,
    InitialSync,
    Security,
    check_credential,
    status_row,
)
from shared.oauth.providers import ProviderName

# A secret the client writes and never reads back (passwords, client secrets).
WriteOnlySecret = Annotated[
    SecretStr | None, Field(min_length=1, max_length=4096, json_schema_extra={"writeOnly": True})
]


class AccountOptions(AccountFields):
    """What may be set when adding or changing an account (not where it stores a CA file)."""

    model_config = ConfigDict(extra="forbid")

    security: Security | None = Field(  # type: ignore[assignment]  # unset: by the port
        default=None, description="ssl (default), starttls, or none (plaintext: say it)"
    )


class OAuthClientFields(BaseModel):
    """The OAuth2 client of an account (`custom` needs both URLs and the scope)."""

    model_config = ConfigDict(extra="forbid")

    provider: ProviderName = Field(description="google, microsoft or custom")
    client_id: str = Field(min_length=1, max_length=500)
    token_url: str | None = Field(default=None, max_length=2000, description="overrides")
    auth_url: str | None = Field(default=None, max_length=2000, description="overrides")
    scope: str | None = Field(default=None, max_length=1000, description="space-separated")


class AccountCreate(AccountOptions):
    """A new account: its options and its password, or (`auth: oauth2`) its OAuth2 client and
    client secret; secrets are write-only and stored encrypted. An OAuth2 account is then
    signed in with `POST /accounts/{id}/oauth2/start` and `…/finish`."""

    auth: AuthMode = "password"
    password: WriteOnlySecret = Field(default=None, description="needed unless auth is oauth2")
    oauth: OAuthClientFields | None = Field(default=None, description="needed with auth oauth2")
    client_secret: WriteOnlySecret = Field(
        default=None, description="the OAuth2 client's secret (public clients have none)"
    )

    @field_validator("password")
    @classmethod
    def _one_line(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_credential("password", value.get_secret_value())
        return value


class AccountUpdate(BaseModel):
    """The options to change (those left out stay as they are); a new password, or for an
    OAuth2 account a new client (its tokens are then dropped: sign the account in again) or
    client secret."""

    model_config = ConfigDict(extra="forbid")

    owner_id: str | None = Field(default=None, min_length=1, max_length=200)
    host: str | None = Field(default=None, min_length=1, max_length=253)
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Security | None = None
    username: str | None = Field(default=None, min_length=1, max_length=320)
    folder: str | None = None
    shop_id: str | None = None
    delete_after_import: bool | None = None
    notify_manager: bool | None = None
    create_customer: bool | None = None
    manager_group_id: str | None = None
    notify_skipped: bool | None = None
    ignore_auto_replies: bool | None = None
    thread_replies: bool | None = None
    tag_requires_sender: bool | None = None
    initial_sync: InitialSync | None = None
    poll_interval: float | None = Field(default=None, ge=1, le=86_400)
    max_message_bytes: int | None = Field(default=None, ge=1024)
    password: WriteOnlySecret = None
    oauth: OAuthClientFields | None = Field(
        default=None, description="OAuth2 accounts: another client drops the stored tokens"
    )
    client_secret: WriteOnlySecret = Field(
        default=None, description="OAuth2 accounts: the client's new secret (the tokens stay)"
    )

    @field_validator("password")
    @classmethod
    def _one_line(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_credential("password", value.get_secret_value())
        return value


class OAuthView(BaseModel):
    """An OAuth2 account's client and sign-in, never a secret or token."""

    provider: str
    client_id: str
    token_url: str | None = None
    auth_url: str | None = None
    scope: str | None = None
    refresh_token_stored: bool = Field(description="signed in: the fetcher can log in")
    authorized_at: datetime | None = None
    consent_expires_at: datetime | None = Field(
        default=None, description="where the provider tells when the consent ends"
    )


class AccountView(BaseModel):
    """A stored account as the API shows it (never a password or token)."""

    id: str
    tenant_id: str
    owner_id: str
    protocol: str
    host: str
    port: int
    security: str
    username: str
    folder: str
    shop_id: str | None = None
    delete_after_import: bool
    notify_manager: bool
    create_customer: bool
    manager_group_id: str | None = None
    notify_skipped: bool
    ignore_auto_replies: bool
    thread_replies: bool
    tag_requires_sender: bool
    initial_sync: str
    poll_interval: float
    max_message_bytes: int
    auth: str
    oauth: OAuthView | None = None
    enabled: bool
    created_at: datetime | None = None
    state: str = Field(description="new, syncing, ok, error or disabled")
    message: str | None = None


class AccountStatus(BaseModel):
    """What `mailintake accounts status` shows: the first load's progress, rate and ETA."""

    id: str
    state: str
    since: datetime | None = None
    last_fetch: datetime | None = None
    backlog: int
    done: int
    total: int
    progress: str
    rate_per_second: float | None = None
    eta_seconds: int | None = None
    message: str | None = None


class AccountTest(BaseModel):
    """The outcome of `accounts test`: log in, open the folder; what failed."""

    ok: bool
    reason: str
    message: str
    summary: str
    messages: int | None = None


def view(doc: dict[str, Any], *, now: datetime) -> AccountView:
    row = status_row(doc, now=now)
    return AccountView.model_validate(
        {
            **doc,
            "id": doc["_id"],
            "auth": doc.get("auth", "password"),
            "oauth": _oauth_view(doc),
            "state": row["state"],
            "message": row["message"],
        }
    )


def _oauth_view(doc: dict[str, Any]) -> OAuthView | None:
    client = doc.get("oauth")
    if doc.get("auth") != "oauth2" or not isinstance(client, dict):
        return None
    return OAuthView(
        **client,
        refresh_token_stored=bool(doc.get("oauth_refresh_token_enc")),
        authorized_at=doc.get("oauth_authorized_at"),
        consent_expires_at=doc.get("oauth_refresh_expires_at"),
    )


def status(doc: dict[str, Any], *, now: datetime) -> AccountStatus:
    row = status_row(doc, now=now)
    progress = doc.get("progress") or {}
    return AccountStatus(
        id=doc["_id"],
        state=row["state"],
        since=row["since"],
        last_fetch=row["last_fetch"],
        backlog=row["backlog"],
        done=int(progress.get("done", 0)),
        total=int(progress.get("total", 0)),
        progress=row["progress"],
        rate_per_second=float(row["rate"].removesuffix("/s")) if row["rate"] else None,
        eta_seconds=int(row["eta"].removesuffix("s")) if row["eta"] else None,
        message=row["message"],
    )

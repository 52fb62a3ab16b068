"""Mail accounts: the stored configuration of one tenant's mailbox."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.contracts import AccountOptions
from shared.oauth.providers import OAuthClient
from shared.settings import MAX_MESSAGE_BYTES_CEILING, check_max_message_bytes
from shared.store import OwnCache, Store, store_errors

MAX_ACCOUNTS_PER_TENANT = 10
DEFAULT_PORTS = {
    ("imap", "ssl"): 993,
    ("imap", "starttls"): 143,
    ("imap", "none"): 143,
    ("pop3", "ssl"): 995,
    ("pop3", "starttls"): 110,
    ("pop3", "none"): 110,
}

Protocol = Literal["imap", "pop3"]
Security = Literal["ssl", "starttls", "none"]
InitialSync = Literal["unseen", "all", "new"]
AuthMode = Literal["password", "oauth2"]


LINE_BREAKERS = ("\r", "\n", "\x00")


def check_credential(field: str, value: str) -> str:
    """`value` unless it holds CR, LF or NUL (which could end a protocol command early and
    start another); the ValueError names the field, never the value."""
    if any(c in value for c in LINE_BREAKERS):
        raise ValueError(f"the {field} must not contain CR, LF or NUL characters")
    return value


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (where plaintext is acceptable)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AccountFields(BaseModel):
    """The fields of a mail account that its owner sets: what `accounts add` and the HTTP API
    take, each checked the same way."""

    owner_id: str = Field(min_length=1, max_length=200, description="gets skip/error notices")
    protocol: Protocol
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=0, ge=0, le=65535, description="0: by protocol and security")
    security: Security = "ssl"
    username: str = Field(min_length=1, max_length=320)
    folder: str = "INBOX"
    shop_id: str | None = None
    delete_after_import: bool = False
    notify_manager: bool = False
    create_customer: bool = False
    manager_group_id: str | None = None
    notify_skipped: bool = False
    ignore_auto_replies: bool = False
    thread_replies: bool = False
    tag_requires_sender: bool = False
    initial_sync: InitialSync = "unseen"
    poll_interval: float = Field(default=60.0, ge=1, le=86_400)
    max_message_bytes: int = Field(  # the ceiling checked below, with its own message
        default=25 * 1024 * 1024, ge=1024, json_schema_extra={"maximum": MAX_MESSAGE_BYTES_CEILING}
    )

    @field_validator("username")
    @classmethod
    def _no_line_breaks(cls, value: str) -> str:
        return check_credential("user name", value)

    _max_message_bytes = field_validator("max_message_bytes")(check_max_message_bytes)


class AccountConfig(AccountFields):
    """What `accounts add` stores; validated so that a bad value is refused before writing."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    tenant_id: str = Field(min_length=1, max_length=200)
    ca_file: str | None = None
    allow_plaintext: bool = False
    auth: AuthMode = "password"
    oauth: OAuthClient | None = None

    @model_validator(mode="after")
    def _check(self) -> AccountConfig:
        if self.port == 0:
            object.__setattr__(self, "port", DEFAULT_PORTS[(self.protocol, self.security)])
        if self.port < 1:
            raise ValueError(f"port {self.port} is out of range 1-65535")
        if self.security == "none" and not (self.allow_plaintext or is_loopback(self.host)):
            raise ValueError(
                f"security 'none' sends the password in clear to {self.host}; "
                "say --security none explicitly to allow it"
            )
        if self.auth == "oauth2" and self.oauth is None:
            raise ValueError("--auth oauth2 needs --oauth-provider and --client-id")
        return self

    def options(self) -> AccountOptions:
        """The per-mail options that travel with each fetched mail."""
        return AccountOptions(
            owner_id=self.owner_id,
            shop_id=self.shop_id,
            create_customer=self.create_customer,
            manager_group_id=self.manager_group_id,
            notify_manager=self.notify_manager,
            notify_skipped=self.notify_skipped,
            ignore_auto_replies=self.ignore_auto_replies,
            thread_replies=self.thread_replies,
            tag_requires_sender=self.tag_requires_sender,
        )


class Account(AccountConfig):
    """A stored account: its config plus id, encrypted secrets and state.

    OAuth2 accounts keep the client secret, the refresh token and the cached access token
    encrypted like a password; the times say when the access token and the consent end.
    """

    id: str = Field(alias="_id")
    password_enc: str = ""
    oauth_client_secret_enc: str | None = None
    oauth_refresh_token_enc: str | None = None
    oauth_access_token_enc: str | None = None
    oauth_access_issued_at: datetime | None = None
    oauth_access_expires_at: datetime | None = None
    oauth_refresh_expires_at: datetime | None = None
    oauth_authorized_at: datetime | None = None
    enabled: bool = True
    created_at: datetime | None = None
    state: dict[str, Any] = Field(default_factory=dict)
    sync: dict[str, Any] = Field(default_factory=dict)
    progress: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


STATUS_COLUMNS = [
    "_id",
    "tenant_id",
    "state",
    "since",
    "last_fetch",
    "backlog",
    "progress",
    "rate",
    "eta",
    "message",
]


def status_row(doc: dict[str, Any], *, now: datetime) -> dict[str, Any]:
    """What `accounts status` shows of a stored account: state, backlog, progress, rate, ETA.

    `syncing` is an account whose last load has not finished; its rate is over that load.
    """
    state, progress = doc.get("state") or {}, doc.get("progress") or {}
    done, total = int(progress.get("done", 0)), int(progress.get("total", 0))
    backlog = max(total - done, 0)
    status = state.get("status") or "new"
    if not doc.get("enabled", True):
        status = "disabled"
    elif status == "ok" and backlog:
        status = "syncing"
    rate = _rate(progress, now)
    message = state.get("message") if status == "error" else None
    if doc.get("deletes_pending"):
        message = "deletes pending (the server has no UIDPLUS)"
    return {
        "_id": doc["_id"],
        "tenant_id": doc.get("tenant_id"),
        "state": status,
        "since": state.get("since"),
        "last_fetch": state.get("last_fetch_at"),
        "backlog": backlog,
        "progress": f"{done}/{total}",
        "rate": f"{rate:.1f}/s" if rate else None,
        "eta": f"{int(backlog / rate)}s" if rate and backlog else None,
        "message": message,
    }


def _rate(progress: dict[str, Any], now: datetime) -> float | None:
    started, updated = progress.get("started_at"), progress.get("updated_at")
    if not isinstance(started, datetime) or not isinstance(updated, datetime):
        return None
    moved = int(progress.get("done", 0)) - int(progress.get("done_at_start", 0))
    seconds = (updated - started).total_seconds()
    return moved / seconds if moved > 0 and seconds > 0 else None


# What a stage reads of an account to act on a mail: its tenant and options, never its secrets.
OPTION_FIELDS = {"tenant_id": 1, **dict.fromkeys(AccountOptions.model_fields, 1)}


class StoredAccountOptions:
    """The options of the tenants' accounts as stored now, read by tenant and `_id` (an
    account of another tenant is not found); `load` reads a batch's with one query per
    tenant, and the others are read one by one."""

    def __init__(self, store: Store) -> None:
        self._accounts = OwnCache(store.accounts, projection=OPTION_FIELDS)

    def load(self, keys: Iterable[tuple[str, str]]) -> None:
        """Read the accounts of these (tenant, account id) pairs."""
        with store_errors("read the batch's accounts"):
            self._accounts.load(keys)

    def get(self, tenant_id: str, account_id: str) -> AccountOptions | None:
        """The account's options; None when its tenant has no such account."""
        with store_errors("read account"):
            doc = self._accounts.get(tenant_id, account_id)
        return None if doc is None else AccountOptions.model_validate(doc)

"""OAuth2 provider presets: where a person authorizes, where tokens come from, which scopes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

ProviderName = Literal["google", "microsoft", "custom"]

MICROSOFT_BASE = "https://login.microsoftonline.com/common/oauth2/v2.0"
MICROSOFT_SCOPES = {
    "imap": "https://outlook.office.com/IMAP.AccessAsUser.All offline_access",
    "pop3": "https://outlook.office.com/POP.AccessAsUser.All offline_access",
}


@dataclass(frozen=True)
class Endpoints:
    """The authorization and token URLs of a provider and the scope a mailbox needs."""

    auth_url: str
    token_url: str
    scope: str


def preset(provider: ProviderName, protocol: str) -> Endpoints | None:
    """The preset of a known provider for IMAP or POP3 (None for `custom`)."""
    if provider == "google":
        return Endpoints(
            "https://accounts.google.com/o/oauth2/v2/auth",
            "https://oauth2.googleapis.com/token",
            "https://mail.google.com/",
        )
    if provider == "microsoft":
        return Endpoints(
            f"{MICROSOFT_BASE}/authorize", f"{MICROSOFT_BASE}/token", MICROSOFT_SCOPES[protocol]
        )
    return None


def _is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "127.0.0.1", "::1")


def check_url(url: str, what: str) -> str:
    """An endpoint URL must be https (plain http only on loopback, for local servers)."""
    scheme = urlsplit(url).scheme
    if scheme == "https" or (scheme == "http" and _is_loopback_url(url)):
        return url
    raise ValueError(f"{what} must be an https:// URL (got {url!r})")


class OAuthClient(BaseModel):
    """The OAuth2 client an account logs in through; custom URLs override a preset's."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    provider: ProviderName
    client_id: str = Field(min_length=1, max_length=500)
    token_url: str | None = None
    auth_url: str | None = None
    scope: str | None = None

    @model_validator(mode="after")
    def _check(self) -> OAuthClient:
        if self.provider == "custom":
            missing = [
                flag
                for flag, value in (
                    ("--token-url", self.token_url),
                    ("--auth-url", self.auth_url),
                    ("--scope", self.scope),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"a custom provider needs {', '.join(missing)}")
        for name, url in (("token URL", self.token_url), ("authorization URL", self.auth_url)):
            if url:
                check_url(url, name)
        return self

    def endpoints(self, protocol: str) -> Endpoints:
        """The URLs and scope to use: explicit values first, then the provider's preset."""
        base = preset(self.provider, protocol) or Endpoints("", "", "")
        return Endpoints(
            self.auth_url or base.auth_url,
            self.token_url or base.token_url,
            self.scope or base.scope,
        )

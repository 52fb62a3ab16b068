"""An account's access token: cached encrypted, refreshed before expiry, rotation saved."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from shared.crypto import SecretBox
from shared.errors import MailboxRejectedError, TransientError
from shared.logging import get_logger
from shared.oauth.client import TokenGrant

log = get_logger("mailintake.oauth")

RENEW_MARGIN = timedelta(seconds=120)  # at most; a short-lived token keeps 4/5 of its life


@dataclass(frozen=True)
class StoredTokens:
    """The encrypted tokens of one account as stored, with the access token's times."""

    refresh_enc: str | None = None
    access_enc: str | None = None
    access_issued_at: datetime | None = None
    access_expires_at: datetime | None = None


@dataclass(frozen=True)
class AccessToken:
    """A usable access token and when to get a new one (before it expires)."""

    token: str = field(repr=False)
    renew_at: datetime


class TokenStore(Protocol):
    """Where an account's encrypted tokens are kept."""

    def load(self, account_id: str) -> StoredTokens: ...

    def save_access(
        self, account_id: str, *, access_enc: str, issued_at: datetime, expires_at: datetime
    ) -> None: ...

    def rotate_refresh(
        self, account_id: str, *, old_enc: str, new_enc: str, expires_at: datetime | None
    ) -> bool:
        """Replace the refresh token if it is still `old_enc`; False if it changed meanwhile."""
        ...


class RefreshEndpoint(Protocol):
    """The provider's token endpoint, for the refresh grant."""

    def refresh(self, refresh_token: str, scope: str) -> TokenGrant: ...


def renew_at(issued_at: datetime, expires_at: datetime) -> datetime:
    """When to refresh: RENEW_MARGIN before expiry, or after 4/5 of a short life."""
    return expires_at - min(RENEW_MARGIN, (expires_at - issued_at) / 5)


class AccessTokens:
    """Gives one account's access token: the cached one while fresh, else a refreshed one.

    A refresh token the provider refused (revoked, consent expired) is not sent again: the
    same error is raised until a new one is stored (`mailintake accounts authorize`).
    """

    def __init__(
        self,
        account_id: str,
        scope: str,
        *,
        store: TokenStore,
        box: SecretBox,
        endpoint: RefreshEndpoint,
        clock: Callable[[], datetime],
    ) -> None:
        self.account_id = account_id
        self._scope = scope
        self._store = store
        self._box = box
        self._endpoint = endpoint
        self._clock = clock
        self._refused: tuple[str, MailboxRejectedError] | None = None

    def current(self) -> AccessToken:
        """The cached access token while it is fresh, else a refreshed one."""
        stored = self._store.load(self.account_id)
        issued, expires = stored.access_issued_at, stored.access_expires_at
        if stored.access_enc and issued and expires and renew_at(issued, expires) > self._clock():
            return AccessToken(self._box.decrypt(stored.access_enc), renew_at(issued, expires))
        return self.refresh()

    def refresh(self) -> AccessToken:
        """A new access token from the refresh token; a rotated refresh token is saved."""
        stored = self._store.load(self.account_id)
        refresh_enc = stored.refresh_enc
        if not refresh_enc:
            raise MailboxRejectedError(
                "oauth_not_authorized",
                f"account {self.account_id} has no refresh token: "
                f"run `mailintake accounts authorize {self.account_id}`",
            )
        if self._refused is not None and self._refused[0] == refresh_enc:
            raise self._refused[1]
        issued = self._clock()
        try:
            grant = self._endpoint.refresh(self._box.decrypt(refresh_enc), self._scope)
        except MailboxRejectedError as exc:
            self._refused = (refresh_enc, exc)
            raise
        return self._keep(grant, refresh_enc, issued)

    def _keep(self, grant: TokenGrant, refresh_enc: str, issued: datetime) -> AccessToken:
        expires = issued + timedelta(seconds=grant.expires_in)
        self._store.save_access(
            self.account_id,
            access_enc=self._box.encrypt(grant.access_token),
            issued_at=issued,
            expires_at=expires,
        )
        rotated = grant.refresh_token is not None
        if grant.refresh_token is not None:
            consent_ends = (
                issued + timedelta(seconds=grant.refresh_expires_in)
                if grant.refresh_expires_in
                else None
            )
            self._store.rotate_refresh(
                self.account_id,
                old_enc=refresh_enc,
                new_enc=self._box.encrypt(grant.refresh_token),
                expires_at=consent_ends,
            )
        log.info(
            "oauth_access_refreshed",
            account_id=self.account_id,
            expires_in=grant.expires_in,
            refresh_rotated=rotated,
        )
        return AccessToken(grant.access_token, renew_at(issued, expires))


class AccessTokenDueError(TransientError):
    """Raised between batches once a session's access token is due: reconnect with a new one."""

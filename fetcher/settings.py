"""The fetcher's own settings on top of the shared ones (prefix MAILINTAKE_)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class FetcherSettings(Settings):
    """Backoff of failing accounts, IDLE renewal, batch size, consent warning; lease is shared.

    `oauth_consent_warning_days`: how long ahead of an OAuth2 consent's end (where the provider
    tells it) the owner is warned; 0 turns the warning off. `login_rate`: logins a second to
    one mail server from this replica (connections are opened no faster). `amqp_connections`:
    the RabbitMQ connections the replica's accounts publish through, whatever their number.
    `fetch_budget_bytes`: the most message bytes one fetch asks for (by the sizes the server
    reported); a larger message is fetched on its own. `fetch_attempts`: failed fetches of one
    message before it is recorded `failed` and the mailbox goes on past it.
    `mailbox_timeout_seconds`: the longest wait for a mail server's answer (a line; a message
    gets one more second per 64 KiB).
    """

    fetch_backoff_base_seconds: float = Field(default=2.0, gt=0)
    fetch_backoff_max_seconds: float = Field(default=300.0, gt=0)
    idle_renew_seconds: float = Field(default=600.0, gt=0, le=1500)
    fetch_batch: int = Field(default=500, ge=1, le=2000)
    oauth_consent_warning_days: float = Field(default=7.0, ge=0, le=365)
    login_rate: float = Field(default=100.0, gt=0, le=10_000)
    amqp_connections: int = Field(default=2, ge=1, le=32)
    fetch_budget_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024, le=1024**3)
    fetch_attempts: int = Field(default=3, ge=1, le=100)
    mailbox_timeout_seconds: float = Field(default=30.0, gt=0, le=600)

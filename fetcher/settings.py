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
    """

    fetch_backoff_base_seconds: float = Field(default=2.0, gt=0)
    fetch_backoff_max_seconds: float = Field(default=300.0, gt=0)
    idle_renew_seconds: float = Field(default=600.0, gt=0, le=1500)
    fetch_batch: int = Field(default=500, ge=1, le=2000)
    oauth_consent_warning_days: float = Field(default=7.0, ge=0, le=365)
    login_rate: float = Field(default=100.0, gt=0, le=10_000)
    amqp_connections: int = Field(default=2, ge=1, le=32)

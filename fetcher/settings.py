"""The fetcher's own settings on top of the shared ones (prefix MAILINTAKE_)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class FetcherSettings(Settings):
    """Backoff of failing accounts, IDLE renewal, batch size; lease_seconds is shared."""

    fetch_backoff_base_seconds: float = Field(default=2.0, gt=0)
    fetch_backoff_max_seconds: float = Field(default=300.0, gt=0)
    idle_renew_seconds: float = Field(default=600.0, gt=0, le=1500)
    fetch_batch: int = Field(default=500, ge=1, le=2000)

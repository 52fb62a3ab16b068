"""The API process's settings: those of every process, plus where it listens."""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class ApiSettings(Settings):
    """`MAILINTAKE_API_ADDR` (host:port, default 127.0.0.1:8080) and the long-poll's bounds."""

    api_addr: str = Field(default="127.0.0.1:8080", pattern=r"^[^\s:]*:\d{1,5}$")
    api_poll_seconds: float = Field(default=0.5, gt=0, le=10)
    api_max_wait_seconds: float = Field(default=30.0, gt=0, le=300)

    @property
    def api_host(self) -> str:
        return self.api_addr.rsplit(":", 1)[0] or "0.0.0.0"

    @property
    def api_port(self) -> int:
        return int(self.api_addr.rsplit(":", 1)[1])

"""A stage connects as its own broker user when one is set; the endpoints listen where told."""

from __future__ import annotations

import pytest

from shared.health import Readiness, serve
from shared.settings import Settings


def test_a_stage_uses_its_own_amqp_url_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILINTAKE_AMQP_URL", "amqp://shared:pw@broker:5672/")
    monkeypatch.setenv("MAILINTAKE_AMQP_URL_BINDER", "amqp://mailintake-binder:pw@broker:5672/")
    settings = Settings()
    assert settings.stage_amqp_url("binder") == "amqp://mailintake-binder:pw@broker:5672/"
    assert settings.stage_amqp_url("assigner") == "amqp://shared:pw@broker:5672/"
    assert "pw" not in repr(settings)  # a SecretStr like the shared URL


def test_the_endpoints_listen_on_the_configured_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILINTAKE_METRICS_HOST", "127.0.0.1")
    settings = Settings()
    server = serve(0, Readiness(), host=settings.metrics_host)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()


def test_the_endpoints_listen_on_every_address_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MAILINTAKE_METRICS_HOST", raising=False)
    assert Settings().metrics_host == "0.0.0.0"  # probed from outside the container

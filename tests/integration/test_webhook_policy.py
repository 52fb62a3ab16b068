"""Webhooks cannot reach the inside: checked when set and again at each send, on the real
store, broker and a local HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from notifier.adapters import WEBHOOKS
from notifier.webhook import webhook_id
from ops.cli import main as cli
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from tests.conftest import settings_env
from tests.integration.test_notifier import TENANT, notifier, publish, skipped
from tests.integration.test_webhook import Receiver, serve, webhook_states
from tests.processes import wait_until

pytestmark = pytest.mark.integration

__all__ = ["notifier"]  # the fixture, shared with test_notifier
ALLOW = "MAILINTAKE_WEBHOOK_ALLOW_NETWORKS"


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The test's settings for `mailintake` run in this process; no network allow-listed."""
    for name, value in settings_env(settings).items():
        if name.startswith("MAILINTAKE_"):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv(ALLOW, raising=False)
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    return monkeypatch


def set_hook(url: str) -> int:
    args = ["webhooks", "set", "--tenant", TENANT, "--url", url, "--secret-env", "HOOK_SECRET"]
    return cli([*args, "--max-attempts", "2", "--timeout", "5"])


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://localhost:8080/hook", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[::ffff:169.254.169.254]/", "link-local, IPv6 form"),
        ("https://10.0.0.8/hook", "private"),
        ("https://[fd00::8]/hook", "private"),
        ("https://0.0.0.0/hook", "unspecified"),
    ],
)
def test_setting_a_webhook_to_an_inside_address_is_refused_without_the_allow_list(
    env: pytest.MonkeyPatch, store: Store, capsys: pytest.CaptureFixture[str], url: str, why: str
) -> None:
    assert set_hook(url) == 2
    err = capsys.readouterr().err
    assert f"({why})" in err and ALLOW in err and len(err.strip().splitlines()) == 1
    assert store[WEBHOOKS].count_documents({}) == 0


def test_an_allow_listed_network_may_be_set_by_address_or_by_name(
    env: pytest.MonkeyPatch, store: Store
) -> None:
    env.setenv(ALLOW, "127.0.0.1/32")
    assert set_hook("http://localhost:8080/hook") == 0
    assert set_hook("http://127.0.0.1:8080/hook") == 0
    assert set_hook("https://169.254.169.254/") == 2  # only the network allowed


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()
    server = serve(state)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, f"http://localhost:{server.server_address[1]}/hooks/crm?token=t0ken"
    server.shutdown()
    server.server_close()


def test_a_webhook_set_while_allowed_is_refused_at_send_when_no_longer_allowed(
    env: pytest.MonkeyPatch,
    receiver: tuple[Receiver, str],
    store: Store,
    broker: Broker,
    request: pytest.FixtureRequest,
) -> None:
    state, url = receiver
    env.setenv(ALLOW, "127.0.0.1/32")
    assert set_hook(url) == 0
    env.delenv(ALLOW)  # the notifier starts without it
    request.getfixturevalue("notifier")
    publish(broker, [skipped(1, notify=True)])
    wait_until(
        lambda: webhook_states(store).get("message_skipped", {}).get("state") == "failed",
        20,
        "the delivery refused",
    )
    error = webhook_states(store)["message_skipped"]["last_error"]
    assert "not allowed (loopback)" in error and "127.0.0.1" not in error
    assert state.requests == []  # nothing was sent
    assert webhook_states(store)["message_skipped"]["attempts"] == 1  # refused: not retried


def test_allowed_at_send_it_connects_to_the_checked_address_with_the_name_as_host(
    env: pytest.MonkeyPatch,
    receiver: tuple[Receiver, str],
    store: Store,
    broker: Broker,
    request: pytest.FixtureRequest,
) -> None:
    state, url = receiver
    env.setenv(ALLOW, "127.0.0.1/32")
    assert set_hook(url) == 0
    request.getfixturevalue("notifier")
    publish(broker, [skipped(1, notify=True)])
    wait_until(
        lambda: webhook_states(store).get("message_skipped", {}).get("state") == "delivered",
        20,
        "the delivery",
    )
    [seen] = state.requests
    assert seen["headers"]["Host"] == url.split("/")[2]  # localhost:PORT, not the address


class Leaky(BaseHTTPRequestHandler):
    """Answers 500 with its internals in the reason phrase and the body."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b"Traceback: db password=hunter2 at /srv/app.py line 12"
        self.send_response(500, "password=hunter2")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def test_a_stored_error_says_what_failed_without_the_servers_words(
    env: pytest.MonkeyPatch, store: Store, broker: Broker, request: pytest.FixtureRequest
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Leaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env.setenv(ALLOW, "127.0.0.1/32")
        assert set_hook(f"http://127.0.0.1:{server.server_address[1]}/") == 0
        request.getfixturevalue("notifier")
        publish(broker, [skipped(1, notify=True)])
        wait_until(
            lambda: webhook_states(store).get("message_skipped", {}).get("state") == "failed",
            30,
            "the delivery to give up",
        )
    finally:
        server.shutdown()
        server.server_close()
    assert webhook_states(store)["message_skipped"]["last_error"] == (
        "HTTP 500 Internal Server Error"
    )
    assert store[WEBHOOKS].find_one({"_id": webhook_id(TENANT)}) is not None

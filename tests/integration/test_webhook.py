"""Webhooks against a real local HTTP server: signed, retried, dead-lettered, never blocking."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from notifier.webhook import verify
from ops.cli import main as cli
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from tests.conftest import settings_env
from tests.integration.test_notifier import TENANT, failed, notifier, publish, routed, skipped
from tests.processes import wait_until

pytestmark = pytest.mark.integration

SECRET = "webhook-signing-secret"
__all__ = ["notifier"]  # the fixture, shared with test_notifier


@dataclass
class Receiver:
    """What the HTTP server saw, and how it answers (status by notification kind)."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    status: Callable[[dict[str, Any], int], int] = lambda _body, _n: 200
    gate: threading.Event = field(default_factory=threading.Event)
    hold: bool = False
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def serve(receiver: Receiver) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            data = json.loads(body)
            with receiver.lock:
                receiver.in_flight += 1
                seen = sum(1 for r in receiver.requests if r["body"]["id"] == data["id"])
                receiver.requests.append(
                    {
                        "body": data,
                        "headers": dict(self.headers),
                        "valid": verify(SECRET, body, self.headers["X-Mailintake-Signature"]),
                    }
                )
            if receiver.hold:
                receiver.gate.wait(30)
            code = receiver.status(data, seen + 1)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()
            with receiver.lock:
                receiver.in_flight -= 1

        def log_message(self, *_args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()
    server = serve(state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}/hooks/crm"
    state.gate.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def hooked(
    settings: Settings,
    store: Store,
    receiver: tuple[Receiver, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Receiver:
    """The tenant's webhook, configured through `mailintake webhooks set` (3 attempts); the
    local receiver's network allow-listed (for the CLI and the notifier, started after)."""
    for name, value in settings_env(settings).items():
        if name.startswith("MAILINTAKE_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("MAILINTAKE_WEBHOOK_ALLOW_NETWORKS", "127.0.0.1/32")
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    state, url = receiver
    args = ["webhooks", "set", "--tenant", TENANT, "--url", url, "--secret-env", "HOOK_SECRET"]
    assert cli([*args, "--max-attempts", "3", "--timeout", "5"]) == 0
    return state


def webhook_states(store: Store) -> dict[str, dict[str, Any]]:
    return {
        d["kind"]: d.get("webhook", {}) for d in store.notifications.find({"tenant_id": TENANT})
    }


def test_each_notification_is_posted_signed_and_marked_delivered(
    hooked: Receiver, notifier: threading.Event, broker: Broker, store: Store
) -> None:
    publish(broker, [routed(1, manager_id="m1", assigned_now=True, matched_by="created")])
    wait_until(
        lambda: [s.get("state") for s in webhook_states(store).values()] == ["delivered"] * 2,
        20,
        "both notifications delivered",
    )
    assert [r["body"]["kind"] for r in hooked.requests] == ["customer_assigned", "incoming_email"]
    assert all(r["valid"] for r in hooked.requests)
    ids = {d["_id"] for d in store.notifications.find({"tenant_id": TENANT})}
    assert {r["body"]["id"] for r in hooked.requests} == ids
    first = hooked.requests[0]
    assert first["headers"]["X-Mailintake-Notification"] == first["body"]["id"]
    assert first["headers"]["X-Mailintake-Timestamp"].isdigit()
    assert first["body"]["user_id"] == "m1" and first["body"]["tenant_id"] == TENANT
    state = webhook_states(store)["incoming_email"]
    assert state["attempts"] == 1 and state["delivered_at"] is not None


def test_a_500_is_retried_until_delivered(
    hooked: Receiver, notifier: threading.Event, broker: Broker, store: Store
) -> None:
    hooked.status = lambda _body, n: 500 if n <= 2 else 204
    publish(broker, [skipped(1, notify=True)])
    wait_until(
        lambda: webhook_states(store).get("message_skipped", {}).get("state") == "delivered",
        30,
        "delivery after two 500s",
    )
    assert [r["headers"]["X-Mailintake-Attempt"] for r in hooked.requests] == ["1", "2", "3"]
    assert len({r["body"]["id"] for r in hooked.requests}) == 1
    assert all(r["valid"] for r in hooked.requests)
    assert webhook_states(store)["message_skipped"]["attempts"] == 3


def test_a_failing_webhook_is_dead_lettered_after_the_limit_and_others_go_on(
    hooked: Receiver, notifier: threading.Event, broker: Broker, store: Store
) -> None:
    hooked.status = lambda body, _n: 500 if body["kind"] == "message_skipped" else 200
    publish(broker, [skipped(1, notify=True), failed(2, "incident-2")])

    def settled() -> bool:
        states = webhook_states(store)
        skipped_state = states.get("message_skipped", {}).get("state")
        return skipped_state == "failed" and states.get("account_error", {}).get("state") in {
            "delivered",
            "failed",
        }

    wait_until(settled, 30, "the failing delivery to give up, the other to be done")
    states = webhook_states(store)
    assert states["account_error"]["state"] == "delivered"
    assert states["message_skipped"]["attempts"] == 3
    assert states["message_skipped"]["last_error"] == "HTTP 500 Internal Server Error"
    dlq = broker.topology.dead_letter_queue(broker.topology.work_queue("webhook"))
    wait_until(lambda: broker.queue_counts(dlq)[0] == 1, 10, "the dead-lettered delivery")
    item = broker.get(dlq)
    assert item is not None and "HTTP 500" in str(item[0].headers["mailintake-error"])
    assert sum(1 for r in hooked.requests if r["body"]["kind"] == "message_skipped") == 3


def test_a_hanging_webhook_never_blocks_the_notifications(
    hooked: Receiver, notifier: threading.Event, broker: Broker, store: Store
) -> None:
    hooked.hold = True
    publish(broker, [routed(n, manager_id="m1", assigned_now=True) for n in range(5)])
    wait_until(
        lambda: store.notifications.count_documents({"tenant_id": TENANT}) == 10,
        20,
        "all ten notifications stored while the webhook hangs",
    )
    # the first POST may reach the receiver after the notifications are stored: wait for it
    wait_until(lambda: hooked.in_flight == 1, 10, "the first POST held by the receiver")
    assert len(hooked.requests) == 1, "only one POST at a time while the webhook hangs"
    hooked.gate.set()
    hooked.hold = False
    wait_until(
        lambda: (
            store.notifications.count_documents({"tenant_id": TENANT, "webhook.state": "delivered"})
            == 10
        ),
        30,
        "all ten delivered once the webhook answers",
    )

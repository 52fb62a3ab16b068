"""Webhook events from the notifier, and the webhook handler's delivery state and signature."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from notifier.handlers import handle_mail_routed, handle_mail_skipped
from notifier.ports import DeliveryResult, WebhookConfig
from notifier.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookFailedError,
    WebhookRetryError,
    handle_notification_created,
    payload,
    sign,
    verify,
)
from shared.contracts import NotificationCreated
from tests.fakes import FakeNotificationInbox, FakeWebhookDirectory, FakeWebhookSender
from tests.unit.test_assigner_notifier import NOW, routed, skipped

CONFIG = WebhookConfig(url="http://127.0.0.1:9/hook", secret="s3cret", max_attempts=3)


def hooked() -> FakeWebhookDirectory:
    return FakeWebhookDirectory({"t": CONFIG})


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"a":1}'
    sig = sign("key", body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify("key", body, sig)
    assert not verify("other", body, sig)
    assert not verify("key", body + b" ", sig)


def test_payload_carries_the_notification_and_sent_at_but_no_internals() -> None:
    doc = {
        "_id": "n1",
        "tenant_id": "t",
        "kind": "x",
        "event_id": "e",
        "webhook": {},
        "created_at": NOW,
    }
    data = json.loads(payload(doc, sent_at=NOW))
    assert data["id"] == "n1" and data["kind"] == "x" and data["sent_at"] == NOW.isoformat()
    assert "webhook" not in data and "event_id" not in data and "_id" not in data


def test_notifications_of_a_hooked_tenant_emit_events_in_order() -> None:
    inbox = FakeNotificationInbox()
    event = routed(assigned=True, manager="m1", notify=False)
    out = handle_mail_routed(event, inbox=inbox, webhooks=hooked(), now=NOW)
    assert [e.kind for e in out if isinstance(e, NotificationCreated)] == [
        "customer_assigned",
        "incoming_email",
    ]
    assert [e.notification_id for e in out if isinstance(e, NotificationCreated)] == [
        d["_id"] for d in inbox.docs
    ]
    assert all(d["webhook"]["state"] == "pending" for d in inbox.docs)
    again = handle_mail_routed(event, inbox=inbox, webhooks=hooked(), now=NOW + timedelta(1))
    assert [e.event_id for e in again] == [e.event_id for e in out]
    assert len(inbox.docs) == 2


def test_no_webhook_no_events() -> None:
    inbox = FakeNotificationInbox()
    out = handle_mail_skipped(skipped(True), inbox=inbox, webhooks=FakeWebhookDirectory(), now=NOW)
    assert out == [] and "webhook" not in inbox.docs[0]


def created(inbox: FakeNotificationInbox) -> NotificationCreated:
    [event] = handle_mail_skipped(skipped(True), inbox=inbox, webhooks=hooked(), now=NOW)
    assert isinstance(event, NotificationCreated)
    return event


def deliver(
    event: NotificationCreated, inbox: FakeNotificationInbox, sender: FakeWebhookSender
) -> None:
    handle_notification_created(event, inbox=inbox, webhooks=hooked(), sender=sender, now=NOW)


def test_delivered_once_signed_and_recorded() -> None:
    inbox, sender = FakeNotificationInbox(), FakeWebhookSender()
    event = created(inbox)
    deliver(event, inbox, sender)
    deliver(event, inbox, sender)
    [(url, body, headers)] = sender.sent
    assert url == CONFIG.url and verify("s3cret", body, headers[SIGNATURE_HEADER])
    assert headers[TIMESTAMP_HEADER] == str(int(NOW.timestamp()))
    state = inbox.docs[0]["webhook"]
    assert state["state"] == "delivered" and state["attempts"] == 1
    assert state["delivered_at"] == NOW


def test_5xx_is_retried_then_failed_at_the_limit() -> None:
    inbox = FakeNotificationInbox()
    sender = FakeWebhookSender([DeliveryResult(False, 500, "HTTP 500")] * 3)
    event = created(inbox)
    for attempt in (1, 2):
        with pytest.raises(WebhookRetryError):
            deliver(event, inbox, sender)
        assert inbox.docs[0]["webhook"]["state"] == "pending"
        assert inbox.docs[0]["webhook"]["attempts"] == attempt
    with pytest.raises(WebhookFailedError):
        deliver(event, inbox, sender)
    state = inbox.docs[0]["webhook"]
    assert (
        state["state"] == "failed" and state["attempts"] == 3 and state["last_error"] == "HTTP 500"
    )


def test_4xx_fails_at_once() -> None:
    inbox = FakeNotificationInbox()
    sender = FakeWebhookSender([DeliveryResult(False, 404, "HTTP 404", retryable=False)])
    event = created(inbox)
    with pytest.raises(WebhookFailedError):
        deliver(event, inbox, sender)
    assert inbox.docs[0]["webhook"]["state"] == "failed"


def test_removed_webhook_marks_failed_without_sending() -> None:
    inbox, sender = FakeNotificationInbox(), FakeWebhookSender()
    event = created(inbox)
    handle_notification_created(
        event, inbox=inbox, webhooks=FakeWebhookDirectory(), sender=sender, now=NOW
    )
    assert sender.sent == [] and inbox.docs[0]["webhook"]["state"] == "failed"

"""Outbound webhooks: each notification POSTed as signed JSON, its delivery state kept on it."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from notifier.handlers import pending_webhook
from notifier.ports import NotificationInbox, WebhookConfig, WebhookDirectory, WebhookSender
from shared.contracts import Event, NotificationCreated, deterministic_id
from shared.errors import PermanentError, TransientError

SIGNATURE_HEADER = "X-Mailintake-Signature"
TIMESTAMP_HEADER = "X-Mailintake-Timestamp"
NOTIFICATION_HEADER = "X-Mailintake-Notification"
ATTEMPT_HEADER = "X-Mailintake-Attempt"
USER_AGENT = "mailintake-webhook/1"
MAX_ATTEMPTS_LIMIT = 50
PRIVATE_FIELDS = frozenset({"_id", "webhook", "event_id"})


class WebhookRetryError(TransientError):
    """Raised when a webhook POST failed in a way a later attempt may fix (error, 5xx)."""


class WebhookFailedError(PermanentError):
    """Raised when a webhook POST will not be tried again (4xx, or the attempts used up)."""


def webhook_id(tenant_id: str) -> str:
    """The `webhooks` _id of a tenant's webhook (one per tenant)."""
    return deterministic_id("webhook", tenant_id)


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: `sha256=` + hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """True when `signature` is this body's signature under `secret` (constant time)."""
    return hmac.compare_digest(sign(secret, body), signature)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def payload(doc: dict[str, Any], *, sent_at: datetime) -> bytes:
    """The JSON body: the notification (its _id as `id`) and `sent_at`, which the
    signature covers, so that a receiver can refuse old replays."""
    data = {k: v for k, v in doc.items() if k not in PRIVATE_FIELDS}
    data.update(id=doc["_id"], sent_at=sent_at)
    return json.dumps(data, default=_json_default, sort_keys=True, separators=(",", ":")).encode()


def request_headers(
    config: WebhookConfig, body: bytes, *, notification_id: str, attempt: int, now: datetime
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(config.secret, body),
        TIMESTAMP_HEADER: str(int(now.timestamp())),
        NOTIFICATION_HEADER: notification_id,
        ATTEMPT_HEADER: str(attempt),
    }


def handle_notification_created(
    event: NotificationCreated,
    *,
    inbox: NotificationInbox,
    webhooks: WebhookDirectory,
    sender: WebhookSender,
    now: datetime,
) -> list[Event]:
    """POST a new notification to the tenant's webhook, signed; the state stays on it.

    Errors and 5xx are retried with growing delays (through the retry queue, so other
    deliveries go on meanwhile) until the tenant's attempt limit; then, or at once for a
    4xx, the state becomes `failed` and the event is dead-lettered. Delivered stays
    delivered: a redelivered event sends nothing.
    """
    doc = inbox.get(event.tenant_id, event.notification_id)
    if doc is None:
        return []
    state = {**pending_webhook(), **(doc.get("webhook") or {})}
    if state["state"] == "delivered":
        return []
    if state["state"] == "failed":  # replayed from the DLQ: a new round of attempts
        state.update(state="pending", attempts=0)
    config = webhooks.config(event.tenant_id)
    if config is None:
        state.update(state="failed", last_error="the tenant has no webhook configured")
        inbox.set_webhook_state(event.tenant_id, event.notification_id, state)
        return []
    _deliver(doc, state, config, inbox=inbox, sender=sender, now=now)
    return []


def _deliver(
    doc: dict[str, Any],
    state: dict[str, Any],
    config: WebhookConfig,
    *,
    inbox: NotificationInbox,
    sender: WebhookSender,
    now: datetime,
) -> None:
    attempt = int(state["attempts"]) + 1
    body = payload(doc, sent_at=now)
    headers = request_headers(config, body, notification_id=doc["_id"], attempt=attempt, now=now)
    result = sender.post(config.url, body, headers, timeout=config.timeout_seconds)
    state.update(attempts=attempt, last_status=result.status, last_attempt_at=now)
    if result.ok:
        state.update(state="delivered", last_error=None, delivered_at=now)
        inbox.set_webhook_state(doc["tenant_id"], doc["_id"], state)
        return
    error = result.error or f"HTTP {result.status}"
    if result.retryable and attempt < config.max_attempts:
        state.update(state="pending", last_error=error)
        inbox.set_webhook_state(doc["tenant_id"], doc["_id"], state)
        raise WebhookRetryError(f"webhook attempt {attempt} of {config.max_attempts}: {error}")
    state.update(state="failed", last_error=error)
    inbox.set_webhook_state(doc["tenant_id"], doc["_id"], state)
    raise WebhookFailedError(f"webhook failed after {attempt} attempt(s): {error}")

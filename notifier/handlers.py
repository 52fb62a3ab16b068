"""The notifier's handlers: which notifications the rules require, in which order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from notifier.ports import NotificationInbox, WebhookDirectory
from shared.contracts import (
    AccountFailed,
    AccountWarning,
    Event,
    MailRouted,
    MailSkipped,
    NotificationCreated,
    deterministic_id,
)

SKIP_REASONS = {
    "no_customer": "no customer or order matches it",
    "too_large": "it is larger than the size limit",
    "parse_error": "it could not be parsed",
    "no_sender": "it has no usable sender address",
    "auto_reply": "it is an automatic reply",
    "invalid_event": "it could not be read",
    "own_address": "it comes from one of the shop's own mailboxes",
    "failed": "it could not be processed (it waits in the dead-letter queue for a replay)",
}


def notification(
    kind: str, key: str, recipient: str, event: Event, *, now: datetime, text: str, **fields: Any
) -> dict[str, Any]:
    """A notification document; its _id is tenant + kind + subject (e-mail, customer or
    incident) + recipient, so a redelivered event finds the one it made before."""
    return {
        "_id": deterministic_id("notification", event.tenant_id, kind, key, recipient),
        "tenant_id": event.tenant_id,
        "user_id": recipient,
        "kind": kind,
        "text": text,
        "account_id": event.account_id,
        "email_id": event.email_id,
        "created_at": now,
        "event_id": event.event_id,
        **fields,
    }


def pending_webhook() -> dict[str, Any]:
    """The delivery state of a notification whose tenant has a webhook, before any attempt."""
    return {"state": "pending", "attempts": 0, "last_error": None, "delivered_at": None}


def store_all(
    docs: list[dict[str, Any]],
    event: Event,
    *,
    inbox: NotificationInbox,
    webhooks: WebhookDirectory,
    now: datetime,
) -> list[Event]:
    """Store the notifications in order; with a webhook, one NotificationCreated for each.

    The events are emitted again on a redelivery (same ids): the webhook worker skips what
    it already delivered, and nothing is lost if a crash came between store and publish.
    """
    hooked = bool(docs) and webhooks.enabled(event.tenant_id)
    out: list[Event] = []
    for doc in docs:
        if hooked:
            doc["webhook"] = pending_webhook()
        inbox.add(doc)
        if hooked:
            out.append(
                NotificationCreated(
                    event_id=NotificationCreated.child_id(event.event_id, f"/{doc['_id']}"),
                    tenant_id=event.tenant_id,
                    account_id=event.account_id,
                    email_id=event.email_id,
                    occurred_at=now,
                    notification_id=doc["_id"],
                    kind=doc["kind"],
                    user_id=doc["user_id"],
                )
            )
    return out


def _sender(event: MailRouted | MailSkipped) -> str:
    s = event.summary
    return f"{s.from_name} <{s.from_address}>" if s.from_name else (s.from_address or "unknown")


def handle_mail_routed(
    event: MailRouted, *, inbox: NotificationInbox, webhooks: WebhookDirectory, now: datetime
) -> list[Event]:
    """A manager who got a new customer is told so first, then of the mail.

    Otherwise, with "notify manager", the order's (else the customer's) manager is told of
    each incoming mail; nobody when there is no manager. A new customer that the account's
    manager group could not take (missing or empty) is reported to the account's owner.
    """
    docs = _assignment_failed(event, now=now)
    manager = event.manager_id
    if manager is not None and (event.assigned_now or event.options.notify_manager):
        docs += _manager_notifications(event, manager, now=now)
    return store_all(docs, event, inbox=inbox, webhooks=webhooks, now=now)


def _assignment_failed(event: MailRouted, *, now: datetime) -> list[dict[str, Any]]:
    group = event.unassigned_group_id
    if group is None:
        return []
    who = event.summary.from_address or event.customer_id
    why = event.assignment_note or f"manager group {group} cannot take it"
    return [
        notification(
            "assignment_failed",
            event.email_id,
            event.options.owner_id,
            event,
            now=now,
            text=f"Customer {who} was left without a manager: {why}",
            customer_id=event.customer_id,
            group_id=group,
            reason=event.assignment_note,
        )
    ]


def _manager_notifications(
    event: MailRouted, manager: str, *, now: datetime
) -> list[dict[str, Any]]:
    docs = []
    if event.assigned_now:
        docs.append(
            notification(
                "customer_assigned",
                event.customer_id,
                manager,
                event,
                now=now,
                text=f"Customer {event.summary.from_address} was assigned to you",
                customer_id=event.customer_id,
            )
        )
    docs.append(
        notification(
            "incoming_email",
            event.email_id,
            manager,
            event,
            # Strictly after customer_assigned, so the inbox's order is the rule's order.
            now=now + timedelta(milliseconds=1),
            text=f"New mail from {_sender(event)}: {event.summary.subject}",
            customer_id=event.customer_id,
            order_id=event.order_id,
            subject=event.summary.subject,
            from_address=event.summary.from_address,
            from_name=event.summary.from_name,
            preview=event.summary.preview[:300],
        )
    )
    return docs


def handle_mail_skipped(
    event: MailSkipped, *, inbox: NotificationInbox, webhooks: WebhookDirectory, now: datetime
) -> list[Event]:
    """With "notify about skipped messages", the account's owner is told why a mail was skipped.

    A mail that failed is told of on its own: a replay that skips it says so again.
    """
    if not event.options.notify_skipped:
        return []
    why = SKIP_REASONS.get(event.reason, event.reason)
    doc = notification(
        "message_skipped",
        f"{event.email_id}/failed" if event.reason == "failed" else event.email_id,
        event.options.owner_id,
        event,
        now=now,
        text=_skipped_text(event, why),
        reason=event.reason,
        detail=event.detail,
        subject=event.summary.subject,
        from_address=event.summary.from_address,
        from_name=event.summary.from_name,
    )
    return store_all([doc], event, inbox=inbox, webhooks=webhooks, now=now)


def _skipped_text(event: MailSkipped, why: str) -> str:
    if event.summary.from_address is None and not event.summary.subject:
        return f"A mail ({event.email_id}) was not loaded: {why}"
    return f"A mail from {_sender(event)} ({event.summary.subject!r}) was skipped: {why}"


def handle_account_failed(
    event: AccountFailed, *, inbox: NotificationInbox, webhooks: WebhookDirectory, now: datetime
) -> list[Event]:
    """The account's owner is told once per incident that the mailbox is failing."""
    doc = notification(
        "account_error",
        event.incident_id,
        event.owner_id,
        event,
        now=now,
        text=f"The mailbox cannot be read: {event.message}",
        reason=event.reason,
        incident_id=event.incident_id,
    )
    return store_all([doc], event, inbox=inbox, webhooks=webhooks, now=now)


def _warning_text(event: AccountWarning) -> str:
    if event.reason == "oauth_consent_expiring" and event.expires_at is not None:
        ends = event.expires_at.astimezone(UTC)
        return (
            f"The mailbox's sign-in expires on {ends:%Y-%m-%d %H:%M} UTC: "
            f"run `mailintake accounts authorize {event.account_id}`"
        )
    return f"The mailbox needs attention: {event.message}"


def handle_account_warning(
    event: AccountWarning, *, inbox: NotificationInbox, webhooks: WebhookDirectory, now: datetime
) -> list[Event]:
    """The account's owner is told once per warning that the mailbox will stop working (its
    OAuth2 sign-in ends), with what to do about it."""
    doc = notification(
        "account_warning",
        event.warning_id,
        event.owner_id,
        event,
        now=now,
        text=_warning_text(event),
        reason=event.reason,
        warning_id=event.warning_id,
        expires_at=event.expires_at,
    )
    return store_all([doc], event, inbox=inbox, webhooks=webhooks, now=now)

"""The notifier's handlers: which notifications the rules require, in which order."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from notifier.ports import NotificationInbox
from shared.contracts import AccountFailed, Event, MailRouted, MailSkipped, deterministic_id

SKIP_REASONS = {
    "no_customer": "no customer or order matches it",
    "too_large": "it is larger than the size limit",
    "parse_error": "it could not be parsed",
    "no_sender": "it has no usable sender address",
    "auto_reply": "it is an automatic reply",
    "invalid_event": "it could not be read",
}


def notification(
    kind: str, key: str, recipient: str, event: Event, *, now: datetime, text: str, **fields: Any
) -> dict[str, Any]:
    """A notification document; its _id is kind + subject (e-mail or incident) + recipient."""
    return {
        "_id": deterministic_id("notification", kind, key, recipient),
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


def _sender(event: MailRouted | MailSkipped) -> str:
    s = event.summary
    return f"{s.from_name} <{s.from_address}>" if s.from_name else (s.from_address or "unknown")


def handle_mail_routed(
    event: MailRouted, *, inbox: NotificationInbox, now: datetime
) -> list[Event]:
    """A manager who got a new customer is told so first, then of the mail.

    Otherwise, with "notify manager", the order's (else the customer's) manager is told of
    each incoming mail; nobody when there is no manager.
    """
    manager = event.manager_id
    if manager is None or not (event.assigned_now or event.options.notify_manager):
        return []
    if event.assigned_now:
        inbox.add(
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
    inbox.add(
        notification(
            "incoming_email",
            event.email_id,
            manager,
            event,
            now=now + timedelta(milliseconds=1),
            text=f"New mail from {_sender(event)}: {event.summary.subject}",
            customer_id=event.customer_id,
            order_id=event.order_id,
            subject=event.summary.subject,
            from_address=event.summary.from_address,
            preview=event.summary.preview[:300],
        )
    )
    return []


def handle_mail_skipped(
    event: MailSkipped, *, inbox: NotificationInbox, now: datetime
) -> list[Event]:
    """With "notify about skipped messages", the account's owner is told why a mail was skipped."""
    if not event.options.notify_skipped:
        return []
    why = SKIP_REASONS.get(event.reason, event.reason)
    inbox.add(
        notification(
            "message_skipped",
            event.email_id,
            event.options.owner_id,
            event,
            now=now,
            text=f"A mail from {_sender(event)} ({event.summary.subject!r}) was skipped: {why}",
            reason=event.reason,
            subject=event.summary.subject,
            from_address=event.summary.from_address,
        )
    )
    return []


def handle_account_failed(
    event: AccountFailed, *, inbox: NotificationInbox, now: datetime
) -> list[Event]:
    """The account's owner is told once per incident that the mailbox is failing."""
    inbox.add(
        notification(
            "account_error",
            event.incident_id,
            event.owner_id,
            event,
            now=now,
            text=f"The mailbox cannot be read: {event.message}",
            reason=event.reason,
        )
    )
    return []

"""The event contracts between the stages: versioned, frozen pydantic models.

An event travels as an AMQP message: JSON body (application/json), or — for MailFetched — the
raw mail as the body (message/rfc822) with the event JSON in the `mailintake-event` header.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

EVENT_NAMESPACE = uuid.UUID("6f1c1f5e-4a53-4b8c-9d9e-6d61696c696e")
EVENT_HEADER = "mailintake-event"

MatchedBy = Literal["subject_tag", "sender", "created", "thread"]
SkipReason = Literal[
    "no_customer",
    "too_large",
    "parse_error",
    "no_sender",
    "auto_reply",
    "invalid_event",
    "own_address",
    "failed",
]


def deterministic_id(*parts: object) -> str:
    """A stable id (hex) for a document keyed by `parts`: same parts, same id."""
    key = "\x1f".join(str(p) for p in parts)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def email_id_for_imap(account_id: str, folder: str, uidvalidity: int, uid: int) -> str:
    """The `emails` _id of an IMAP message: account + folder + UIDVALIDITY + UID."""
    return deterministic_id("imap", account_id, folder, uidvalidity, uid)


def email_id_for_pop3(account_id: str, uidl: str) -> str:
    """The `emails` _id of a POP3 message: account + UIDL."""
    return deterministic_id("pop3", account_id, uidl)


class Event(BaseModel):
    """Fields every event carries; subclasses name their routing key and version."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    routing_key: ClassVar[str]
    schema_version: int = 1
    event_id: str
    tenant_id: str
    account_id: str
    email_id: str | None = None
    occurred_at: datetime

    @classmethod
    def child_id(cls, parent_event_id: str, suffix: str = "") -> str:
        """A child's event id derives from its parent's, so a replay repeats it exactly."""
        return str(uuid.uuid5(EVENT_NAMESPACE, f"{parent_event_id}/{cls.event_type}{suffix}"))

    @classmethod
    def caused_by(cls, parent: Event, *, now: datetime, **fields: Any) -> Self:
        """A new event of this type, caused by `parent`, with the shared ids copied over."""
        base: dict[str, Any] = {
            "event_id": cls.child_id(parent.event_id),
            "tenant_id": parent.tenant_id,
            "account_id": parent.account_id,
            "email_id": parent.email_id,
            "occurred_at": now,
        }
        return cls(**{**base, **fields})

    def routing(self) -> str:
        """The routing key this event is published with."""
        return self.routing_key


class AccountOptions(BaseModel):
    """What the binder and notifier need to know about the account the mail came from."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    owner_id: str
    shop_id: str | None = None
    create_customer: bool = False
    manager_group_id: str | None = None
    notify_manager: bool = False
    notify_skipped: bool = False
    ignore_auto_replies: bool = False
    thread_replies: bool = False
    tag_requires_sender: bool = False


class MailFetched(Event):
    """A message was taken from a mailbox; the raw mail is the body (or in GridFS)."""

    event_type: ClassVar[str] = "mail.fetched"
    routing_key: ClassVar[str] = "mail.fetched"
    email_id: str
    options: AccountOptions
    protocol: Literal["imap", "pop3"]
    folder: str | None = None
    uidvalidity: int | None = None
    uid: int | None = None
    uidl: str | None = None
    size: int
    internal_date: datetime | None = None
    raw_ref: str | None = None
    oversize: bool = False
    oversize_detail: str | None = None

    def routing(self) -> str:
        return f"{self.routing_key}.{self.account_id}"

    @classmethod
    def for_mail(cls, *, email_id: str, now: datetime, **fields: Any) -> Self:
        """The fetch event of a mail; its id derives from the mail's own id."""
        return cls(event_id=cls.child_id(email_id), email_id=email_id, occurred_at=now, **fields)


class MailSummary(BaseModel):
    """Who sent a mail and what it is about, as the notifications show it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    from_address: str | None = None
    from_name: str | None = None
    subject: str = ""
    preview: str = ""
    message_id: str | None = None


class MailBound(Event):
    """A mail was bound to an order or a customer."""

    event_type: ClassVar[str] = "mail.bound"
    routing_key: ClassVar[str] = "mail.bound"
    email_id: str
    options: AccountOptions
    summary: MailSummary
    matched_by: MatchedBy
    customer_id: str
    order_id: str | None = None
    customer_created: bool = False
    manager_id: str | None = None


class MailRouted(MailBound):
    """A bound mail whose manager is settled (assigned now, or already known)."""

    event_type: ClassVar[str] = "mail.routed"
    routing_key: ClassVar[str] = "mail.routed"
    assigned_now: bool = False
    assignment_note: str | None = None
    # The account's manager group could not take the new customer (missing or empty).
    unassigned_group_id: str | None = None


class MailSkipped(Event):
    """A mail was not loaded; `reason` says why."""

    event_type: ClassVar[str] = "mail.skipped"
    routing_key: ClassVar[str] = "mail.skipped"
    email_id: str
    options: AccountOptions
    summary: MailSummary = Field(default_factory=MailSummary)
    reason: SkipReason
    detail: str | None = None


class AccountFailed(Event):
    """A mailbox could not be used; one event per incident, not per retry."""

    event_type: ClassVar[str] = "account.failed"
    routing_key: ClassVar[str] = "account.failed"
    owner_id: str
    incident_id: str
    reason: str
    message: str


class AccountWarning(Event):
    """A mailbox works but will stop: e.g. its OAuth2 consent ends at `expires_at`."""

    event_type: ClassVar[str] = "account.warning"
    routing_key: ClassVar[str] = "account.warning"
    owner_id: str
    warning_id: str
    reason: str
    message: str
    expires_at: datetime | None = None

    @classmethod
    def for_warning(cls, warning_id: str, **fields: Any) -> Self:
        """The event of a warning; its id follows from the warning's, so a replay repeats it."""
        return cls(event_id=cls.child_id(warning_id), warning_id=warning_id, **fields)


class NotificationCreated(Event):
    """A notification was stored; the tenant's webhook (if any) is to be told."""

    event_type: ClassVar[str] = "notification.created"
    routing_key: ClassVar[str] = "notification.created"
    notification_id: str
    kind: str
    user_id: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in (
        MailFetched,
        MailBound,
        MailRouted,
        MailSkipped,
        AccountFailed,
        AccountWarning,
        NotificationCreated,
    )
}

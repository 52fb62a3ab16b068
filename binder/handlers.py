"""The binder's handler: a fetched mail becomes an `emails` document and one event."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from binder.ports import AccountDirectory, BlobStore, CrmDirectory, EmailArchive
from binder.rules import Bound, Skipped, bind
from shared.contracts import (
    Event,
    MailBound,
    MailFetched,
    MailRouted,
    MailSkipped,
    MailSummary,
)
from shared.errors import UnknownAccountError
from shared.letter import (
    DEFAULT_PART_LIMITS,
    PartLimits,
    base_document,
    letter_fields,
    stored_parts,
)
from shared.mail import MailParseError, ParsedMail, parse_mail
from shared.mailboxref import mailbox_outcome


def handle_mail_fetched(
    event: MailFetched,
    raw: bytes | None,
    *,
    accounts: AccountDirectory,
    crm: CrmDirectory,
    archive: EmailArchive,
    blobs: BlobStore,
    now: datetime,
    parsed: ParsedMail | MailParseError | None = None,
    limits: PartLimits = DEFAULT_PART_LIMITS,
) -> list[Event]:
    """Bind a fetched mail by the rules (order tag, sender, create customer, skip).

    The event is not trusted: the account must be its tenant's in the store, and the
    account's options and owner are the stored ones (`with_stored_account`); else nothing
    is written and the mail is refused (dead-lettered with the reason).

    The stored `emails` document is the record: a redelivered mail re-emits the event built
    from it, so the outcome, the document and the event id are the same every time. A mail
    recorded as `failed` (it ended in the dead-letter queue) is decided again when it is
    replayed, and its decision replaces the failed document.
    `parsed`: the raw mail as parsed already (or why it could not be), not parsed again;
    `limits`: what one mail may store of its parts.
    """
    event = with_stored_account(event, accounts)
    stored = archive.get(event.tenant_id, event.email_id)
    if stored is None or stored.get("status") == "failed":
        doc = _decide(
            event, raw, parsed, crm=crm, archive=archive, blobs=blobs, now=now, limits=limits
        )
        stored = archive.record(doc) if stored is None else archive.replace_failed(doc)
    if stored.get("status") != "failed":
        archive.record_outcome(mailbox_outcome(event, stored))  # again on a redelivery: once
    return [outcome_event(event, stored, now=now)]


def with_stored_account(event: MailFetched, accounts: AccountDirectory) -> MailFetched:
    """`event` with its account's options (and owner) as stored; UnknownAccountError if its
    tenant has no such account (unknown, or another tenant's: anyone who can publish could
    name any tenant)."""
    account = accounts.find(event.tenant_id, event.account_id)
    if account is None:
        raise UnknownAccountError(
            f"account {event.account_id!r} is not an account of tenant {event.tenant_id!r} "
            "(unknown, or another tenant's): nothing of the mail is stored"
        )
    return event.model_copy(update={"options": account.options})


def _decide(
    event: MailFetched,
    raw: bytes | None,
    parsed: ParsedMail | MailParseError | None,
    *,
    crm: CrmDirectory,
    archive: EmailArchive,
    blobs: BlobStore,
    now: datetime,
    limits: PartLimits,
) -> dict[str, Any]:
    # A mail passed by reference travels with an empty body: the blob store has it.
    if event.raw_ref is not None:
        raw = blobs.get_own(event.tenant_id, event.raw_ref)
    raw = raw or b""
    try:
        if isinstance(parsed, MailParseError):
            raise parsed
        mail = parsed or parse_mail(raw)
    except MailParseError as exc:
        ref = blobs.put(
            f"raw/{event.email_id}", raw, tenant_id=event.tenant_id, content_type="message/rfc822"
        )
        return skipped_document(event, "parse_error", str(exc), now=now, raw_ref=ref)
    if event.oversize:
        return email_document(event, mail, Skipped("too_large", event.oversize_detail), now=now)
    binding = bind(
        tenant_id=event.tenant_id,
        email_id=event.email_id,
        mail=mail,
        options=event.options,
        crm=crm,
        archive=archive,
        now=now,
    )
    doc = email_document(event, mail, binding, now=now)
    if isinstance(binding, Skipped):  # its attachments only, as listed in the whole letter
        doc.update(stored_parts(event.email_id, event.tenant_id, mail.attachments, blobs, limits))
        return doc
    # A loaded mail keeps its whole letter: bodies, parts, recipients and the raw source.
    doc.update(
        letter_fields(
            event.email_id,
            event.tenant_id,
            mail,
            raw=raw,
            raw_ref=event.raw_ref,
            blobs=blobs,
            limits=limits,
        )
    )
    return doc


def email_document(
    event: MailFetched, mail: ParsedMail, binding: Bound | Skipped, *, now: datetime
) -> dict[str, Any]:
    """The `emails` document of a parsed mail and its binding."""
    doc = base_document(event, now)
    doc.update(
        {
            "message_id": mail.message_id,
            "from_address": mail.from_address,
            "from_name": mail.from_name,
            "subject": mail.subject,
            "preview": mail.preview,
            "sent_at": mail.date,
            "in_reply_to": list(mail.in_reply_to),
            "references": list(mail.references)[-20:],
            "received_at": event.internal_date or mail.date or now,
            "auto_reply": mail.auto_reply_reason,
        }
    )
    if isinstance(binding, Bound):
        doc.update(
            {
                "status": "bound",
                "matched_by": binding.matched_by,
                "customer_id": binding.customer_id,
                "order_id": binding.order_id,
                "manager_id": binding.manager_id,
                "customer_created": binding.customer_created,
            }
        )
    else:
        doc.update(
            {
                "status": "skipped",
                "matched_by": None,
                "skip_reason": binding.reason,
                "skip_detail": binding.detail,
            }
        )
    return doc


def skipped_document(
    event: MailFetched, reason: str, detail: str, *, now: datetime, raw_ref: str | None = None
) -> dict[str, Any]:
    """The `emails` document of a mail that could not be parsed at all."""
    doc = base_document(event, now)
    doc.update(
        {
            "status": "skipped",
            "matched_by": None,
            "skip_reason": reason,
            "skip_detail": detail[:500],
            "raw_ref": raw_ref,
            "message_id": None,
            "from_address": None,
            "from_name": None,
            "subject": "",
        }
    )
    return doc


def needs_assigner(event: MailFetched, doc: dict[str, Any]) -> bool:
    """Whether a bound mail has something for the assigner to settle.

    A customer this mail created is to be given a manager; with "notify manager", a binding
    without a manager (an order with none, a customer not yet assigned) has the customer's
    manager looked up, as late as possible. Any other bound mail the assigner would pass on
    unchanged: the binder routes it to the notifier itself, one hop fewer.
    """
    if doc.get("customer_created"):
        return True
    return doc.get("manager_id") is None and event.options.notify_manager


def outcome_event(event: MailFetched, doc: dict[str, Any], *, now: datetime) -> Event:
    """The event for the next stage, built from the stored document alone: `mail.bound` for
    the assigner when `needs_assigner`, else `mail.routed` for the notifier (a `MailRouted`
    is a `MailBound` whose manager is settled), or `mail.skipped`."""
    summary = MailSummary(
        from_address=doc.get("from_address"),
        from_name=doc.get("from_name"),
        subject=doc.get("subject") or "",
        preview=doc.get("preview") or "",
        message_id=doc.get("message_id"),
    )
    if doc["status"] == "bound":
        bound = MailBound if needs_assigner(event, doc) else MailRouted
        return bound.caused_by(
            event,
            now=now,
            options=event.options,
            summary=summary,
            matched_by=doc["matched_by"],
            customer_id=doc["customer_id"],
            order_id=doc.get("order_id"),
            customer_created=bool(doc.get("customer_created")),
            manager_id=doc.get("manager_id"),
        )
    return MailSkipped.caused_by(
        event,
        now=now,
        options=event.options,
        summary=summary,
        reason=doc["skip_reason"],
        detail=doc.get("skip_detail"),
    )

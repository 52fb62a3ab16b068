"""The whole letter in an `emails` document: the one place that writes and reads its shape.

README's "The `emails` contract" describes the same shape for the CRM.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from shared.contracts import MailFetched
from shared.htmlsafe import safe_html
from shared.mail import Attachment, MailBody, Mailbox, ParsedMail
from shared.mailboxref import MAILBOX, mailbox_place

__all__ = [
    "BODY_INLINE_CHARS",
    "DEFAULT_PART_LIMITS",
    "BlobReader",
    "BlobWriter",
    "PartLimits",
    "body_text",
    "letter_fields",
    "part_ref",
    "prunable_raw",
    "pruned_raw",
    "raw_key",
    "stored_parts",
]

# A body (text, HTML, sanitised HTML) of up to this many characters is kept in the document,
# a longer one in the blob store (so a document stays small for the updates that follow).
BODY_INLINE_CHARS = 16_384
BodyField = Literal["text", "html", "html_safe"]
_TEXT_TYPE = "text/plain; charset=utf-8"
_HTML_TYPE = "text/html; charset=utf-8"


@dataclass(frozen=True)
class PartLimits:
    """What one mail may store of its parts: how many, and how many bytes in all."""

    max_parts: int = 100
    max_bytes: int = 50 * 1024 * 1024


DEFAULT_PART_LIMITS = PartLimits()


class BlobWriter(Protocol):
    """Where the letter's blobs are written (the binder's blob store)."""

    def put(self, key: str, data: bytes, *, tenant_id: str, content_type: str) -> str: ...


class BlobReader(Protocol):
    """Where the letter's blobs are read (and a raw source dropped): within the tenant."""

    def get_own(self, tenant_id: str, ref: str) -> bytes: ...

    def delete_own(self, tenant_id: str, ref: str) -> None: ...


def raw_key(email_id: str) -> str:
    """The blob key of a mail's raw source (the fetcher's for large mail, the binder's else)."""
    return f"raw/{email_id}"


def letter_fields(
    email_id: str,
    tenant_id: str,
    mail: ParsedMail,
    *,
    raw: bytes,
    raw_ref: str | None,
    blobs: BlobWriter,
    limits: PartLimits = DEFAULT_PART_LIMITS,
) -> dict[str, Any]:
    """The letter's fields of a loaded mail's document; bodies, parts (within `limits`) and
    the raw source (unless stored already, `raw_ref`) are written to `blobs`."""
    if raw_ref is None:
        raw_ref = blobs.put(
            raw_key(email_id), raw, tenant_id=tenant_id, content_type="message/rfc822"
        )
    return {
        "to": _mailboxes(mail.to),
        "cc": _mailboxes(mail.cc),
        "reply_to": _mailboxes(mail.reply_to),
        "body": _body(email_id, tenant_id, mail.body, blobs),
        **stored_parts(email_id, tenant_id, mail.parts, blobs, limits),
        "raw_ref": raw_ref,
    }


def stored_parts(
    email_id: str,
    tenant_id: str,
    parts: Iterable[Attachment],
    blobs: BlobWriter,
    limits: PartLimits = DEFAULT_PART_LIMITS,
) -> dict[str, list[dict[str, Any]]]:
    """Each part within `limits` written once to `blobs` (key `att/{email_id}/{index}`), as
    listed in `attachments`; the others, in order past the limits, in `parts_not_stored`
    with the reason."""
    listed: list[dict[str, Any]] = []
    not_stored: list[dict[str, Any]] = []
    stored_bytes = 0
    for index, part in enumerate(parts):
        reason = _over_limits(len(listed), stored_bytes, part.size, limits)
        if reason is not None:
            not_stored.append(
                {
                    "index": index,
                    "name": part.filename,
                    "content_type": part.content_type,
                    "size": part.size,
                    "reason": reason[0],
                    "detail": reason[1],
                }
            )
            continue
        ref = blobs.put(
            f"att/{email_id}/{index}",
            part.payload,
            tenant_id=tenant_id,
            content_type=part.content_type,
        )
        stored_bytes += part.size
        listed.append(
            {
                "index": index,
                "filename": part.filename,
                "content_type": part.content_type,
                "size": part.size,
                "disposition": part.disposition,
                "content_id": part.content_id,
                "ref": ref,
            }
        )
    return {"attachments": listed, "parts_not_stored": not_stored}


def _over_limits(
    stored: int, stored_bytes: int, size: int, limits: PartLimits
) -> tuple[str, str] | None:
    """Why (reason, detail) a part of `size` bytes is not stored after `stored` parts of
    `stored_bytes` bytes; None: it is stored."""
    if stored >= limits.max_parts:
        return "too_many_parts", f"a mail stores at most {limits.max_parts} parts"
    if stored_bytes + size > limits.max_bytes:
        return "parts_too_large", f"a mail stores at most {limits.max_bytes} bytes of parts"
    return None


def _mailboxes(mailboxes: tuple[Mailbox, ...]) -> list[dict[str, str | None]]:
    return [{"address": box.address, "name": box.name} for box in mailboxes]


def _body(email_id: str, tenant_id: str, body: MailBody, blobs: BlobWriter) -> dict[str, Any]:
    source = ("html" if body.text_from_html else "plain") if body.text else None
    doc: dict[str, Any] = {"text_source": source}
    texts: list[tuple[BodyField, str | None, str]] = [
        ("text", body.text, _TEXT_TYPE),
        ("html", body.html, _HTML_TYPE),
        ("html_safe", None if body.html is None else safe_html(body.html), _HTML_TYPE),
    ]
    for name, text, content_type in texts:
        inline, ref = text, None
        if text is not None and len(text) > BODY_INLINE_CHARS:
            data = text.encode("utf-8")
            ref = blobs.put(
                f"body/{email_id}/{name}", data, tenant_id=tenant_id, content_type=content_type
            )
            inline = None
        doc.update({name: inline, f"{name}_ref": ref, f"{name}_length": len(text or "")})
    return doc


def body_text(doc: dict[str, Any], name: BodyField, blobs: BlobReader) -> str | None:
    """A body of a document written by `letter_fields` (None: the mail has none, or the
    document has no letter)."""
    body = doc.get("body") or {}
    if body.get(name) is not None:
        return str(body[name])
    ref = body.get(f"{name}_ref")
    return None if ref is None else blobs.get_own(doc["tenant_id"], ref).decode("utf-8")


def part_ref(doc: dict[str, Any], index: int) -> str:
    """The blob of the document's part `index`; IndexError if it has no such part."""
    parts = doc.get("attachments") or []
    if not 0 <= index < len(parts):
        raise IndexError(index)
    return str(parts[index]["ref"])


def prunable_raw(tenant_id: str, stored_before: datetime) -> dict[str, Any]:
    """The filter of a tenant's loaded mails whose raw source was stored before a time (the
    raw source of mail that could not be parsed is all there is of it: never pruned)."""
    return {
        "tenant_id": tenant_id,
        "status": "bound",
        "raw_ref": {"$ne": None},
        "created_at": {"$lt": stored_before},
    }


def pruned_raw(now: datetime) -> dict[str, Any]:
    """The fields of a document whose raw source was dropped (the letter stays)."""
    return {"raw_ref": None, "raw_pruned_at": now}


MAX_REASON = 1000  # characters of a failure's reason kept on its document and notice


def base_document(event: MailFetched, now: datetime) -> dict[str, Any]:
    """What every `emails` document of a fetched mail holds, whatever became of it."""
    return {
        "_id": event.email_id,
        "tenant_id": event.tenant_id,
        "account_id": event.account_id,
        "shop_id": event.options.shop_id,
        "size": event.size,
        "received_at": event.internal_date or now,
        "created_at": now,
        "event_id": event.event_id,
        MAILBOX: mailbox_place(event),
    }


def failed_fields(reason: str, *, now: datetime, raw_ref: str | None) -> dict[str, Any]:
    """The fields of a mail that failed (could not be fetched, or was dead-lettered): no
    binding, the reason, and none of the letter."""
    return {
        "status": "failed",
        "matched_by": None,
        "failure_reason": reason[:MAX_REASON],
        "failed_at": now,
        "raw_ref": raw_ref,
        "message_id": None,
        "from_address": None,
        "from_name": None,
        "subject": "",
    }

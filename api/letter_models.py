"""The letters' response bodies: a page of summaries, one whole letter."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Outcome = Literal["bound", "skipped", "failed"]
SUMMARY_FIELDS = (
    "account_id",
    "received_at",
    "from_address",
    "from_name",
    "subject",
    "status",
    "matched_by",
    "order_id",
    "customer_id",
    "skip_reason",
    "failure_reason",
)


class LetterSummary(BaseModel):
    """One mail in a listing: who sent it, when, and what became of it."""

    id: str
    account_id: str | None = None
    received_at: datetime | None = None
    from_address: str | None = None
    from_name: str | None = None
    subject: str | None = None
    status: str
    matched_by: str | None = None
    order_id: str | None = None
    customer_id: str | None = None
    skip_reason: str | None = None
    failure_reason: str | None = None


class LetterPage(BaseModel):
    """Newest first; `next_cursor` fetches the next page (null: there is none)."""

    items: list[LetterSummary]
    next_cursor: str | None = None


class Address(BaseModel):
    address: str | None = None
    name: str | None = None


class Part(BaseModel):
    """An attachment or inline image; its content at `download`."""

    index: int
    filename: str | None = None
    content_type: str | None = None
    size: int | None = None
    disposition: str | None = None
    content_id: str | None = None
    download: str


class Letter(LetterSummary):
    """The whole letter: text, sanitised HTML, addresses, binding, why skipped, parts."""

    message_id: str | None = None
    sent_at: datetime | None = None
    size: int | None = None
    manager_id: str | None = None
    to: list[Address] = Field(default_factory=list)
    cc: list[Address] = Field(default_factory=list)
    reply_to: list[Address] = Field(default_factory=list)
    loaded: bool = Field(description="false: not loaded, no letter is kept (see skip_reason)")
    text: str | None = None
    text_source: str | None = Field(default=None, description="plain, or html (rendered)")
    html_safe: str | None = Field(default=None, description="the HTML, sanitised")
    has_html: bool = False
    preview: str | None = None
    attachments: list[Part] = Field(default_factory=list)
    raw: str | None = Field(default=None, description="where the raw source is (null: not kept)")
    raw_pruned_at: datetime | None = None


_IDS = ("account_id", "order_id", "customer_id", "manager_id")


def summary_fields(doc: dict[str, Any]) -> dict[str, Any]:
    fields = {"id": str(doc["_id"]), **{k: doc.get(k) for k in SUMMARY_FIELDS}}
    for key in _IDS:
        if doc.get(key) is not None:
            fields[key] = str(doc[key])
    return fields

"""/letters: a tenant's mail by customer, order, account or outcome; one letter whole; its
raw source and parts as downloads."""

from __future__ import annotations

import base64
import itertools
import json
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import StreamingResponse

from api.auth import StoreDep, Tenant
from api.letter_models import Letter, LetterPage, LetterSummary, Outcome, summary_fields
from api.problems import FieldError, ProblemError, not_found, responses
from shared.blobs import BlobStream, GridFsBlobStore
from shared.letter import body_text, part_ref
from shared.store import Doc, Store, store_errors

router = APIRouter(tags=["letters"], responses=responses(400, 401, 403, 404, 422))
Limit = Annotated[int, Query(ge=1, le=200, description="letters per page")]
Cursor = Annotated[str | None, Query(max_length=500, description="a page's next_cursor")]
T = TypeVar("T")
_LIST_FIELDS = {"_id": 1, **dict.fromkeys(("account_id", "received_at", "from_address"), 1)}
_LIST_FIELDS |= dict.fromkeys(("from_name", "subject", "status", "matched_by"), 1)
_LIST_FIELDS |= dict.fromkeys(("order_id", "customer_id", "skip_reason", "failure_reason"), 1)


def encode_cursor(doc: Doc) -> str:
    received = doc.get("received_at")
    data = [received.isoformat() if isinstance(received, datetime) else None, doc["_id"]]
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime | None, str]:
    """The (received_at, _id) a cursor points past; 400 naming it if it is not one of ours."""
    try:
        received, email_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        when = None if received is None else datetime.fromisoformat(received)
        if not isinstance(email_id, str):
            raise TypeError(email_id)
        return when, email_id
    except (ValueError, TypeError) as exc:
        error = FieldError(field="query.cursor", value=cursor, message="not a page's next_cursor")
        raise ProblemError(400, f"cursor {cursor!r} is not a page's next_cursor", [error]) from exc


def _after(cursor: str | None) -> dict[str, Any]:
    if cursor is None:
        return {}
    received, email_id = decode_cursor(cursor)
    return {
        "$or": [
            {"received_at": {"$lt": received}},
            {"received_at": received, "_id": {"$lt": email_id}},
        ]
    }


def page(store: Store, query: dict[str, Any], cursor: str | None, limit: int) -> LetterPage:
    """Newest first (received_at, then _id, both descending), `limit` at a time."""
    with store_errors("read the letters"):
        found = list(
            store.emails.find({**query, **_after(cursor)}, _LIST_FIELDS)
            .sort([("received_at", -1), ("_id", -1)])
            .limit(limit + 1)
        )
    items = [LetterSummary.model_validate(summary_fields(d)) for d in found[:limit]]
    return LetterPage(
        items=items, next_cursor=encode_cursor(found[limit - 1]) if len(found) > limit else None
    )


def _owned(store: Store, collection: str, tenant: str, ident: str, what: str) -> None:
    with store_errors(f"read the {what}"):
        if store[collection].find_one({"_id": ident, "tenant_id": tenant}, {"_id": 1}) is None:
            raise not_found(what, ident)


@router.get("/letters")
def list_letters(
    tenant: Tenant,
    store: StoreDep,
    status: Annotated[Outcome | None, Query(description="only this outcome")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> LetterPage:
    """The tenant's mail, newest first; `status` picks one outcome (bound, skipped, failed)."""
    query: dict[str, Any] = {"tenant_id": tenant}
    if status is not None:
        query["status"] = status
    return page(store, query, cursor, limit)


@router.get("/customers/{customer_id}/letters")
def customer_letters(
    customer_id: str, tenant: Tenant, store: StoreDep, limit: Limit = 50, cursor: Cursor = None
) -> LetterPage:
    """The mail bound to a customer (its orders' mail included), newest first."""
    _owned(store, "customers", tenant, customer_id, "customer")
    return page(store, {"tenant_id": tenant, "customer_id": customer_id}, cursor, limit)


@router.get("/orders/{order_id}/letters")
def order_letters(
    order_id: str, tenant: Tenant, store: StoreDep, limit: Limit = 50, cursor: Cursor = None
) -> LetterPage:
    """The mail bound to an order, newest first."""
    _owned(store, "orders", tenant, order_id, "order")
    return page(store, {"tenant_id": tenant, "order_id": order_id}, cursor, limit)


@router.get("/accounts/{account_id}/letters")
def account_letters(
    account_id: str, tenant: Tenant, store: StoreDep, limit: Limit = 50, cursor: Cursor = None
) -> LetterPage:
    """The mail taken from one account, newest first."""
    _owned(store, "accounts", tenant, account_id, "account")
    return page(store, {"tenant_id": tenant, "account_id": account_id}, cursor, limit)


def find_letter(store: Store, tenant: str, letter_id: str) -> Doc:
    with store_errors("read the letter"):
        doc = store.emails.find_one({"_id": letter_id, "tenant_id": tenant})
    if doc is None:
        raise not_found("letter", letter_id)
    return doc


def _blob(what: str, read: Callable[[], T]) -> T:
    try:
        return read()
    except KeyError as exc:  # a document naming a blob that is gone: say so, do not 500
        raise ProblemError(404, f"{what} is missing from the blob store") from exc


@router.get("/letters/{letter_id}")
def read_letter(letter_id: str, tenant: Tenant, store: StoreDep) -> Letter:
    """One letter whole: text, sanitised HTML, addresses, binding or why it was skipped."""
    doc = find_letter(store, tenant, letter_id)
    blobs = GridFsBlobStore(store)
    body = doc.get("body") or {}
    letter: dict[str, Any] = {
        **{k: doc.get(k) for k in ("message_id", "sent_at", "size", "preview", "raw_pruned_at")},
        **summary_fields(doc),
        **{k: doc.get(k) or [] for k in ("to", "cc", "reply_to")},
        "manager_id": None if doc.get("manager_id") is None else str(doc["manager_id"]),
        "loaded": "body" in doc,
        "text_source": body.get("text_source"),
        "has_html": body.get("html") is not None or body.get("html_ref") is not None,
        "raw": f"/letters/{letter_id}/raw" if doc.get("raw_ref") else None,
        "attachments": [
            {**part, "download": f"/letters/{letter_id}/attachments/{part['index']}"}
            for part in doc.get("attachments") or []
        ],
    }
    if "body" in doc:
        letter["text"] = _blob("the text", lambda: body_text(doc, "text", blobs))
        letter["html_safe"] = _blob("the HTML", lambda: body_text(doc, "html_safe", blobs))
    return Letter.model_validate(letter)


def _download(blob: BlobStream, content_type: str, filename: str) -> Response:
    """The blob sent as it is read (a large one is never whole in the API's memory). The
    first piece is read before the answer starts, so a blob that cannot be read at all is
    still a problem answer, not a 200 cut short."""
    quoted = urllib.parse.quote(filename, safe="")
    headers = {
        "Content-Disposition": f"attachment; filename*=UTF-8''{quoted}",
        "Content-Length": str(blob.length),
    }
    first = next(blob.pieces, b"")
    return StreamingResponse(
        itertools.chain([first], blob.pieces), media_type=content_type, headers=headers
    )


_RAW: dict[int | str, dict[str, Any]] = {
    200: {"content": {"message/rfc822": {}}, "description": "the source as the server held it"}
}
_PART: dict[int | str, dict[str, Any]] = {
    200: {"content": {"*/*": {}}, "description": "the part's content, in its own type"}
}


@router.get("/letters/{letter_id}/raw", response_class=Response, responses=_RAW)
def letter_raw(letter_id: str, tenant: Tenant, store: StoreDep) -> Response:
    """The raw source (message/rfc822); 404 when it was not kept or was pruned."""
    doc = find_letter(store, tenant, letter_id)
    ref = doc.get("raw_ref")
    if ref is None:
        why = "was pruned" if doc.get("raw_pruned_at") else f"is not kept ({doc.get('status')})"
        raise ProblemError(404, f"letter {letter_id}'s raw source {why}")
    blobs = GridFsBlobStore(store)
    return _blob(
        "the raw source",
        lambda: _download(blobs.open_own(tenant, ref), "message/rfc822", f"{letter_id}.eml"),
    )


@router.get("/letters/{letter_id}/attachments/{index}", response_class=Response, responses=_PART)
def letter_part(
    letter_id: str, index: Annotated[int, Path(ge=0, le=100_000)], tenant: Tenant, store: StoreDep
) -> Response:
    """One part of the letter, with its own content type and file name."""
    doc = find_letter(store, tenant, letter_id)
    parts = doc.get("attachments") or []
    if not 0 <= index < len(parts):
        raise not_found(f"part of letter {letter_id}:", index)
    part, blobs = parts[index], GridFsBlobStore(store)
    name = part.get("filename") or f"part-{index}"
    content_type = part.get("content_type") or "application/octet-stream"
    return _blob(
        f"part {index}",
        lambda: _download(blobs.open_own(tenant, part_ref(doc, index)), content_type, name),
    )

"""/users/{user_id}/notifications: a user's notifications in the order they were made, marked
read, and a long-poll for the bell."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from api.auth import StoreDep, Tenant
from api.problems import FieldError, ProblemError, not_found, responses
from shared.store import Doc, Store, store_errors

router = APIRouter(
    prefix="/users/{user_id}/notifications",
    tags=["notifications"],
    responses=responses(400, 401, 403, 404, 422),
)
After = Annotated[str | None, Query(max_length=500, description="a page's next_cursor")]
Limit = Annotated[int, Query(ge=1, le=500)]


class Notification(BaseModel):
    """One notification: what happened, about which mail, customer or order; read or not."""

    id: str
    kind: str
    text: str | None = None
    created_at: datetime
    email_id: str | None = None
    customer_id: str | None = None
    order_id: str | None = None
    account_id: str | None = None
    read_at: datetime | None = None


class NotificationPage(BaseModel):
    """Oldest first; `next_cursor` asks for those made after the last one (also when empty)."""

    items: list[Notification]
    next_cursor: str | None = None


def _note(doc: Doc) -> Notification:
    ids = ("email_id", "customer_id", "order_id", "account_id")
    fields = {k: None if doc.get(k) is None else str(doc[k]) for k in ids}
    return Notification(
        id=str(doc["_id"]),
        kind=str(doc.get("kind")),
        text=doc.get("text"),
        created_at=doc["created_at"],
        read_at=doc.get("read_at"),
        **fields,
    )


def _cursor(doc: Doc) -> str:
    data = [doc["created_at"].isoformat(), doc["_id"]]
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def _after(cursor: str | None) -> dict[str, Any]:
    if cursor is None:
        return {}
    try:
        made, note_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        when = datetime.fromisoformat(made)
        if not isinstance(note_id, str):
            raise TypeError(note_id)
    except (ValueError, TypeError) as exc:
        error = FieldError(field="query.after", value=cursor, message="not a page's next_cursor")
        raise ProblemError(400, f"after {cursor!r} is not a page's next_cursor", [error]) from exc
    return {"$or": [{"created_at": {"$gt": when}}, {"created_at": when, "_id": {"$gt": note_id}}]}


def check_user(store: Store, tenant: str, user_id: str) -> None:
    """A user of the tenant: a manager, an account's owner, or someone notified; else 404."""
    with store_errors("read the user"):
        known = (
            store.managers.find_one({"tenant_id": tenant, "_id": user_id}, {"_id": 1})
            or store.accounts.find_one({"tenant_id": tenant, "owner_id": user_id}, {"_id": 1})
            or store.notifications.find_one({"tenant_id": tenant, "user_id": user_id}, {"_id": 1})
        )
    if known is None:
        raise not_found("user", user_id)


def _page(store: Store, query: dict[str, Any], after: str | None, limit: int) -> NotificationPage:
    with store_errors("read the notifications"):
        found = list(
            store.notifications.find({**query, **_after(after)})
            .sort([("created_at", 1), ("_id", 1)])
            .limit(limit)
        )
    return NotificationPage(
        items=[_note(d) for d in found], next_cursor=_cursor(found[-1]) if found else after
    )


def _query(tenant: str, user_id: str, unread: bool) -> dict[str, Any]:
    query: dict[str, Any] = {"tenant_id": tenant, "user_id": user_id}
    if unread:
        query["read_at"] = None
    return query


@router.get("")
def list_notifications(
    user_id: str,
    tenant: Tenant,
    store: StoreDep,
    after: After = None,
    unread: bool = False,
    limit: Limit = 100,
) -> NotificationPage:
    """The user's notifications in the order they were made (`unread`: only those not read)."""
    check_user(store, tenant, user_id)
    return _page(store, _query(tenant, user_id, unread), after, limit)


@router.get("/wait")
async def wait_notifications(
    user_id: str,
    tenant: Tenant,
    store: StoreDep,
    request: Request,
    after: After = None,
    timeout: Annotated[float, Query(ge=0, le=300, description="seconds to wait at most")] = 25.0,
    limit: Limit = 100,
) -> NotificationPage:
    """The bell: answers as soon as the user has notifications made after `after` (all of them
    without it), or empty after `timeout` seconds; ask again with the page's next_cursor."""
    await run_in_threadpool(check_user, store, tenant, user_id)
    settings = request.app.state.settings
    deadline = asyncio.get_running_loop().time() + min(timeout, settings.api_max_wait_seconds)
    query = _query(tenant, user_id, False)
    while True:
        found = await run_in_threadpool(_page, store, query, after, limit)
        left = deadline - asyncio.get_running_loop().time()
        if found.items or left <= 0 or await request.is_disconnected():
            return found
        await asyncio.sleep(min(settings.api_poll_seconds, left))


@router.post("/{notification_id}/read")
def mark_read(notification_id: str, user_id: str, tenant: Tenant, store: StoreDep) -> Notification:
    """Mark one notification read (again: it keeps its first read time)."""
    own = {"tenant_id": tenant, "user_id": user_id, "_id": notification_id}
    with store_errors("mark the notification read"):
        store.notifications.update_one(
            {**own, "read_at": None}, {"$set": {"read_at": datetime.now(UTC)}}
        )
        doc = store.notifications.find_one(own)
    if doc is None:
        raise not_found("notification", notification_id)
    return _note(doc)


class ReadAll(BaseModel):
    marked: int


@router.post("/read")
def mark_all_read(user_id: str, tenant: Tenant, store: StoreDep) -> ReadAll:
    """Mark every notification of the user read."""
    check_user(store, tenant, user_id)
    with store_errors("mark the notifications read"):
        done = store.notifications.update_many(
            _query(tenant, user_id, True), {"$set": {"read_at": datetime.now(UTC)}}
        )
    return ReadAll(marked=done.modified_count)

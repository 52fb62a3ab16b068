"""The operators' audit trail: who replayed or purged which dead letters, and when.

One `audit` document per action. These are operator records, not a tenant's data: they carry
no tenant_id, and listing them spans every tenant on purpose.
"""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from shared.store import Doc, Store, store_errors

AUDIT = "audit"
MAX_IDS = 1000  # ids kept on one record; `count` is always the whole number


def actor(by: str | None) -> str:
    """Who is acting: `--by NAME`, else the operating-system user."""
    if by is not None and by.strip():
        return by.strip()
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry for the uid
        return "unknown"


def record(
    store: Store,
    *,
    action: str,
    queue: str,
    message_ids: Sequence[str],
    count: int,
    by: str,
    at: datetime,
) -> Doc:
    """Store one audit record (operator-wide, no tenant) and return it."""
    doc: Doc = {
        "_id": str(uuid.uuid4()),
        "action": action,
        "queue": queue,
        "count": count,
        "message_ids": list(message_ids[:MAX_IDS]),
        "actor": by,
        "at": at,
    }
    with store_errors("record audit"):
        store[AUDIT].insert_one(doc)
    return doc


def newest(store: Store, limit: int) -> list[dict[str, Any]]:
    """The latest audit records, newest first (every tenant's queues: operator records)."""
    with store_errors("read audit"):
        return list(store[AUDIT].find({}).sort([("at", -1), ("_id", -1)]).limit(limit))

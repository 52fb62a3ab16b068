"""The notifier's ports on MongoDB."""

from __future__ import annotations

from typing import Any

from shared.store import Store, insert_or_ignore, store_errors


class MongoNotificationInbox:
    """Notifications in the `notifications` collection, insert-or-ignore by _id."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def add(self, doc: dict[str, Any]) -> bool:
        with store_errors("add notification"):
            return insert_or_ignore(self._store.notifications, doc)

"""What the notifier needs: the CRM's in-app inbox of notifications."""

from __future__ import annotations

from typing import Any, Protocol


class NotificationInbox(Protocol):
    """The `notifications` collection; adding a notification twice keeps one."""

    def add(self, doc: dict[str, Any]) -> bool:
        """Store `doc` unless its _id exists; True when it was new."""
        ...

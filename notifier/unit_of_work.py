"""The notifier's unit of work on MongoDB: a batch's notifications written at commit."""

from __future__ import annotations

from collections.abc import Sequence

from notifier.adapters import MongoNotificationInbox
from shared.contracts import Event
from shared.store import Store


class MongoNotificationBatch:
    """`NotificationBatch` on MongoDB: the batch's notifications written with one command."""

    def __init__(self, store: Store) -> None:
        self.inbox = MongoNotificationInbox(store, deferred=True)

    def begin(self, batch: Sequence[tuple[Event, bytes | None]]) -> None:
        self.inbox.discard()

    def commit(self) -> None:
        self.inbox.flush()

"""The notifier's unit of work on MongoDB: what a batch names read at begin, its
notifications written at commit."""

from __future__ import annotations

from collections.abc import Sequence

from notifier.adapters import MongoNotificationInbox, MongoRecipientDirectory
from shared.contracts import Event
from shared.store import Store


class MongoNotificationBatch:
    """`NotificationBatch` on MongoDB: the accounts, customers and orders the batch names
    read with one query per collection and tenant; its notifications written with one command."""

    def __init__(self, store: Store) -> None:
        self.inbox = MongoNotificationInbox(store, deferred=True)
        self.recipients = MongoRecipientDirectory(store)

    def begin(self, batch: Sequence[tuple[Event, bytes | None]]) -> None:
        self.inbox.discard()
        self.recipients.load(event for event, _ in batch)

    def commit(self) -> None:
        self.inbox.flush()

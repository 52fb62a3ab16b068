"""The notifier's ports on MongoDB: notifications and the tenants' webhooks."""

from __future__ import annotations

import time
from typing import Any

from notifier.ports import WebhookConfig
from notifier.webhook import webhook_id
from shared.crypto import SecretBox
from shared.errors import ConfigError
from shared.store import Store, find_own, insert_many_or_ignore, insert_or_ignore, store_errors

WEBHOOKS = "webhooks"


class MongoNotificationInbox:
    """Notifications in the `notifications` collection, insert-or-ignore by _id.

    `deferred`: added notifications are kept until `flush`, which writes the batch's with
    one command (`MongoNotificationBatch.commit`, before any of the batch's events is
    published); `discard` drops them.
    """

    def __init__(self, store: Store, *, deferred: bool = False) -> None:
        self._store = store
        self._pending: dict[str, dict[str, Any]] | None = {} if deferred else None

    def add(self, doc: dict[str, Any]) -> bool:
        if self._pending is not None:
            return self._pending.setdefault(doc["_id"], doc) is doc
        with store_errors("add notification"):
            return insert_or_ignore(self._store.notifications, doc)

    def discard(self) -> None:
        """Forget the kept notifications."""
        if self._pending is not None:
            self._pending = {}

    def flush(self) -> None:
        """Write the kept notifications; those stored already stay as they are."""
        if not self._pending:
            return
        docs, self._pending = list(self._pending.values()), {}
        with store_errors("add notifications"):
            insert_many_or_ignore(self._store.notifications, docs)

    def get(self, tenant_id: str, notification_id: str) -> dict[str, Any] | None:
        with store_errors("read notification"):
            return find_own(self._store.notifications, tenant_id, notification_id)

    def set_webhook_state(
        self, tenant_id: str, notification_id: str, state: dict[str, Any]
    ) -> None:
        with store_errors("record webhook state"):
            self._store.notifications.update_one(
                {"tenant_id": tenant_id, "_id": notification_id}, {"$set": {"webhook": state}}
            )


class MongoWebhookDirectory:
    """One webhook per tenant in `webhooks`; the secret is stored encrypted.

    Each tenant's document is read at most once per `cache_seconds` (every mail asks whether
    its tenant has a webhook); a change reaches the notifier within that time.
    """

    def __init__(
        self, store: Store, secrets: SecretBox | None, *, cache_seconds: float = 5.0
    ) -> None:
        self._store = store
        self._secrets = secrets
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    def _doc(self, tenant_id: str) -> dict[str, Any] | None:
        cached = self._cache.get(tenant_id)
        if cached is not None and time.monotonic() - cached[0] < self._cache_seconds:
            return cached[1]
        with store_errors("read webhook"):
            doc = find_own(self._store[WEBHOOKS], tenant_id, webhook_id(tenant_id))
        self._cache[tenant_id] = (time.monotonic(), doc)
        return doc

    def enabled(self, tenant_id: str) -> bool:
        return self._doc(tenant_id) is not None

    def config(self, tenant_id: str) -> WebhookConfig | None:
        doc = self._doc(tenant_id)
        if doc is None:
            return None
        if self._secrets is None:
            raise ConfigError("MAILINTAKE_SECRET_KEY is not set: webhook secrets cannot be read")
        return WebhookConfig(
            url=str(doc["url"]),
            secret=self._secrets.decrypt(str(doc["secret_enc"])),
            max_attempts=int(doc.get("max_attempts", 8)),
            timeout_seconds=float(doc.get("timeout_seconds", 10.0)),
        )

"""The notifier's ports on MongoDB: notifications and the tenants' webhooks."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from notifier.ports import Party, WebhookConfig
from notifier.webhook import webhook_id
from shared.contracts import AccountOptions, Event, MailRouted
from shared.crypto import SecretBox
from shared.errors import ConfigError
from shared.store import (
    Doc,
    OwnCache,
    Store,
    find_own,
    insert_many_or_ignore,
    insert_or_ignore,
    store_errors,
)

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


def _party(doc: Doc | None) -> Party | None:
    if doc is None:
        return None
    manager, customer = doc.get("manager_id"), doc.get("customer_id")
    return Party(
        str(doc["_id"]),
        None if manager is None else str(manager),
        None if customer is None else str(customer),
    )


class MongoRecipientDirectory:
    """The tenants' accounts, customers and orders, read by tenant and _id; `load` reads
    what a batch of events names with one query per collection and tenant."""

    def __init__(self, store: Store) -> None:
        self._accounts = OwnCache(store.accounts)
        self._customers = OwnCache(store.customers)
        self._orders = OwnCache(store.orders)

    def load(self, events: Iterable[Event]) -> None:
        """Read what `events` name (other reads go to the store one by one)."""
        events = list(events)
        mail = [e for e in events if isinstance(e, MailRouted)]
        with store_errors("read recipients"):
            self._accounts.load((e.tenant_id, e.account_id) for e in events)
            self._customers.load((e.tenant_id, e.customer_id) for e in mail)
            self._orders.load((e.tenant_id, e.order_id) for e in mail if e.order_id is not None)

    def account(self, tenant_id: str, account_id: str) -> AccountOptions | None:
        with store_errors("read account"):
            doc = self._accounts.get(tenant_id, account_id)
        return None if doc is None else AccountOptions.model_validate(doc)

    def customer(self, tenant_id: str, customer_id: str) -> Party | None:
        with store_errors("read customer"):
            return _party(self._customers.get(tenant_id, customer_id))

    def order(self, tenant_id: str, order_id: str) -> Party | None:
        with store_errors("read order"):
            return _party(self._orders.get(tenant_id, order_id))

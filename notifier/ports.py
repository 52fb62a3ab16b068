"""What the notifier needs: the CRM's in-app inbox, the tenants' webhooks, an HTTP sender.

The notifier handles a consumed batch as one unit of work (`NotificationBatch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shared.contracts import AccountOptions, Event


class NotificationInbox(Protocol):
    """The `notifications` collection; adding a notification twice keeps one.

    In a batch (`NotificationBatch`) what is added is stored when the batch commits; outside
    one (the webhook worker's) every call writes at once.
    """

    def add(self, doc: dict[str, Any]) -> bool:
        """Store `doc` unless its _id exists; True when it was new (in a batch: new to it)."""
        ...

    def get(self, tenant_id: str, notification_id: str) -> dict[str, Any] | None:
        """The stored notification, or None."""
        ...

    def set_webhook_state(
        self, tenant_id: str, notification_id: str, state: dict[str, Any]
    ) -> None:
        """Replace the notification's `webhook` delivery state."""
        ...


@dataclass(frozen=True)
class Party:
    """A customer or an order as the store has it: who manages it (an order: whose it is)."""

    id: str
    manager_id: str | None
    customer_id: str | None = None


class RecipientDirectory(Protocol):
    """Who is to be told, as the store says (events are not trusted): the tenant's accounts,
    customers and orders, each read by tenant and _id."""

    def account(self, tenant_id: str, account_id: str) -> AccountOptions | None:
        """The stored account's options (its owner, what to notify); None if not the tenant's."""
        ...

    def customer(self, tenant_id: str, customer_id: str) -> Party | None:
        """The tenant's customer, or None."""
        ...

    def order(self, tenant_id: str, order_id: str) -> Party | None:
        """The tenant's order, or None."""
        ...


class NotificationBatch(Protocol):
    """The notifier's unit of work: one consumed batch, its notifications kept in `inbox`
    until `commit` stores them with one command (those stored already stay as they are);
    `begin` reads in bulk the accounts, customers and orders the batch names."""

    @property
    def inbox(self) -> NotificationInbox: ...

    @property
    def recipients(self) -> RecipientDirectory: ...

    def begin(self, batch: Sequence[tuple[Event, bytes | None]]) -> None: ...

    def commit(self) -> None: ...


@dataclass(frozen=True)
class WebhookConfig:
    """Where a tenant's notifications are POSTed, and how hard to try."""

    url: str
    secret: str
    max_attempts: int = 8
    timeout_seconds: float = 10.0


class WebhookDirectory(Protocol):
    """The tenants' outbound webhooks, read only (a change may take a few seconds to show)."""

    def enabled(self, tenant_id: str) -> bool:
        """True when the tenant has a webhook configured."""
        ...

    def config(self, tenant_id: str) -> WebhookConfig | None:
        """The tenant's webhook with its secret decrypted, or None."""
        ...


@dataclass(frozen=True)
class DeliveryResult:
    """What one POST achieved: `status` is the HTTP status (None if no answer)."""

    ok: bool
    status: int | None = None
    error: str | None = None
    retryable: bool = True


class WebhookSender(Protocol):
    """Sends one signed POST."""

    def post(
        self, url: str, body: bytes, headers: dict[str, str], *, timeout: float
    ) -> DeliveryResult: ...

"""`python -m notifier`: store the notifications the rules require, and deliver webhooks.

Two consumers in one process, each with its own connection: the notifier on `notifier.in`,
the webhook worker on `webhook.in`, so a slow or failing webhook never holds up the inbox.
"""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime

from notifier.adapters import MongoNotificationInbox, MongoWebhookDirectory
from notifier.handlers import (
    handle_account_failed,
    handle_account_warning,
    handle_mail_routed,
    handle_mail_skipped,
)
from notifier.http import PinnedWebhookSender
from notifier.ports import NotificationBatch, WebhookDirectory
from notifier.trust import trusted
from notifier.unit_of_work import MongoNotificationBatch
from notifier.webhook import MAX_ATTEMPTS_LIMIT, handle_notification_created
from shared.contracts import (
    AccountFailed,
    AccountWarning,
    Event,
    MailRouted,
    MailSkipped,
    NotificationCreated,
)
from shared.crypto import SecretBox
from shared.errors import InvalidEventError
from shared.logging import configure_logging
from shared.netpolicy import webhook_policy
from shared.runtime import open_broker, open_store, retry_policy, run_stage
from shared.settings import Settings
from shared.store import Store
from shared.worker import (
    EventHandler,
    RetryPolicy,
    StageHandler,
    StageWorker,
    install_stop_signals,
)


def _directory(settings: Settings, store: Store) -> MongoWebhookDirectory:
    key = settings.secret_key.get_secret_value() if settings.secret_key else ""
    return MongoWebhookDirectory(store, SecretBox(key) if key else None)


class NotifierHandler:
    """The notifier's handler: each event of a batch checked against the store (its
    recipients are the store's), then notified through the batch's inbox."""

    def __init__(self, batch: NotificationBatch, webhooks: WebhookDirectory) -> None:
        self.batch = batch
        self.webhooks = webhooks

    def __call__(self, event: Event, _payload: bytes | None) -> list[Event]:
        now, inbox, webhooks = datetime.now(UTC), self.batch.inbox, self.webhooks
        event = trusted(event, recipients=self.batch.recipients)
        if isinstance(event, MailRouted):
            return handle_mail_routed(event, inbox=inbox, webhooks=webhooks, now=now)
        if isinstance(event, MailSkipped):
            return handle_mail_skipped(event, inbox=inbox, webhooks=webhooks, now=now)
        if isinstance(event, AccountFailed):
            return handle_account_failed(event, inbox=inbox, webhooks=webhooks, now=now)
        if isinstance(event, AccountWarning):
            return handle_account_warning(event, inbox=inbox, webhooks=webhooks, now=now)
        raise InvalidEventError(f"the notifier does not take {event.event_type}")


def build_handler(settings: Settings, store: Store) -> StageHandler:
    """The notifier's handler over the unit of work of its batches."""
    batch = MongoNotificationBatch(store)
    return StageHandler(NotifierHandler(batch, _directory(settings, store)), unit_of_work=batch)


def build_webhook_handler(settings: Settings, store: Store) -> EventHandler:
    inbox = MongoNotificationInbox(store)
    webhooks = _directory(settings, store)
    sender = PinnedWebhookSender(webhook_policy())

    def handle(event: Event, _payload: bytes | None) -> list[Event]:
        if not isinstance(event, NotificationCreated):
            raise InvalidEventError(f"the webhook worker does not take {event.event_type}")
        return handle_notification_created(
            event, inbox=inbox, webhooks=webhooks, sender=sender, now=datetime.now(UTC)
        )

    return handle


def build_webhook_worker(settings: Settings, store: Store) -> StageWorker:
    """The webhook worker, with its own broker connection."""
    base = retry_policy(settings)
    # The tenant's own attempt limit ends a delivery; this limit is only a backstop.
    policy = RetryPolicy(MAX_ATTEMPTS_LIMIT, base.base_seconds, base.max_seconds)
    return StageWorker(
        "webhook",
        open_broker(settings, "notifier"),
        build_webhook_handler(settings, store),
        policy=policy,
    )


def run(settings: Settings | None = None, stop: threading.Event | None = None) -> int:
    """Run the notifier (as every stage runs) and the webhook worker beside it; the exit code."""
    settings = settings or Settings()
    if "--check" in sys.argv[1:]:
        return run_stage("notifier", build_handler, settings)
    configure_logging(settings.log_format, settings.log_level)
    store = open_store(settings)  # before the handlers: SIGTERM while waiting just ends it
    if stop is None:
        stop = threading.Event()
        install_stop_signals(stop)
    webhook = build_webhook_worker(settings, store)
    webhook.stop = stop
    thread = threading.Thread(target=webhook.run, name="webhook-worker", daemon=True)
    thread.start()
    try:
        return run_stage("notifier", build_handler, settings, stop)
    finally:
        stop.set()
        thread.join(timeout=60)
        store.close()


def main() -> int:
    return run()


if __name__ == "__main__":
    sys.exit(main())

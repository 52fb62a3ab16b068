"""`python -m notifier`: store the notifications the rules require."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from notifier.adapters import MongoNotificationInbox
from notifier.handlers import handle_account_failed, handle_mail_routed, handle_mail_skipped
from shared.contracts import AccountFailed, Event, MailRouted, MailSkipped
from shared.errors import InvalidEventError
from shared.runtime import run_stage
from shared.settings import Settings
from shared.store import Store
from shared.worker import EventHandler


def build_handler(_settings: Settings, store: Store) -> EventHandler:
    inbox = MongoNotificationInbox(store)

    def handle(event: Event, _payload: bytes | None) -> list[Event]:
        now = datetime.now(UTC)
        if isinstance(event, MailRouted):
            return handle_mail_routed(event, inbox=inbox, now=now)
        if isinstance(event, MailSkipped):
            return handle_mail_skipped(event, inbox=inbox, now=now)
        if isinstance(event, AccountFailed):
            return handle_account_failed(event, inbox=inbox, now=now)
        raise InvalidEventError(f"the notifier does not take {event.event_type}")

    return handle


def main() -> int:
    return run_stage("notifier", build_handler)


if __name__ == "__main__":
    sys.exit(main())

"""`python -m binder`: bind fetched mail to orders and customers."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from binder.adapters import MongoCrmDirectory, MongoEmailArchive
from binder.handlers import handle_mail_fetched
from shared.blobs import GridFsBlobStore
from shared.contracts import Event, MailFetched
from shared.errors import InvalidEventError
from shared.runtime import run_stage
from shared.settings import Settings
from shared.store import Store
from shared.worker import EventHandler


def build_handler(_settings: Settings, store: Store) -> EventHandler:
    crm, archive, blobs = MongoCrmDirectory(store), MongoEmailArchive(store), GridFsBlobStore(store)

    def handle(event: Event, payload: bytes | None) -> list[Event]:
        if not isinstance(event, MailFetched):
            raise InvalidEventError(f"the binder takes mail.fetched, not {event.event_type}")
        return handle_mail_fetched(
            event, payload, crm=crm, archive=archive, blobs=blobs, now=datetime.now(UTC)
        )

    return handle


def main() -> int:
    return run_stage("binder", build_handler)


if __name__ == "__main__":
    sys.exit(main())

"""`python -m binder`: bind fetched mail to orders and customers."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from binder.accounts import MongoAccountDirectory
from binder.adapters import MongoCrmDirectory, MongoEmailArchive
from binder.batch import Parsed, parse_batch, wanted_lookups
from binder.failures import handle_mail_dead_lettered
from binder.handlers import handle_mail_fetched
from shared.blobs import GridFsBlobStore
from shared.contracts import Event, MailFetched
from shared.errors import InvalidEventError
from shared.runtime import run_stage
from shared.settings import Settings
from shared.store import Store


class BinderHandler:
    """The binder's handler; each batch's lookups are read and its e-mails written in bulk."""

    def __init__(self, store: Store) -> None:
        self.crm = MongoCrmDirectory(store)
        self.archive = MongoEmailArchive(store)
        self.blobs = GridFsBlobStore(store, deferred=True)
        self._parsed: dict[str, Parsed] = {}

    def __call__(self, event: Event, payload: bytes | None) -> list[Event]:
        if not isinstance(event, MailFetched):
            raise InvalidEventError(f"the binder takes mail.fetched, not {event.event_type}")
        return handle_mail_fetched(
            event,
            payload,
            crm=self.crm,
            archive=self.archive,
            blobs=self.blobs,
            now=datetime.now(UTC),
            parsed=self._parsed.pop(event.email_id, None),
        )

    def prepare(self, batch: Sequence[tuple[Event, bytes | None]]) -> None:
        """Read which mails are decided, parse the others once, read their lookups in bulk."""
        self._parsed = {}
        self.archive.warm(e.email_id for e, _ in batch if isinstance(e, MailFetched))
        unbound = [
            (e, raw) for e, raw in batch if isinstance(e, MailFetched) and not self._decided(e)
        ]
        self._parsed = parse_batch(unbound)
        self.crm.warm(wanted_lookups(unbound, self._parsed))

    def _decided(self, event: MailFetched) -> bool:
        stored = self.archive.get(event.tenant_id, event.email_id)
        return stored is not None and stored.get("status") != "failed"

    def finish(self) -> None:
        # Customers and attachments first: a stored e-mail names only what is stored.
        self.crm.flush()
        self.blobs.flush()
        self.archive.flush()


class BinderDeadLetters:
    """A mail the binder dead-letters is recorded `failed` at once, and its owner told."""

    def __init__(self, store: Store) -> None:
        self.accounts = MongoAccountDirectory(store)
        self.archive = MongoEmailArchive(store)

    def record(self, event: Event, reason: str) -> list[Event]:
        if not isinstance(event, MailFetched):
            return []
        return handle_mail_dead_lettered(
            event, reason, accounts=self.accounts, archive=self.archive, now=datetime.now(UTC)
        )


def build_handler(_settings: Settings, store: Store) -> BinderHandler:
    return BinderHandler(store)


def build_dead_letters(_settings: Settings, store: Store) -> BinderDeadLetters:
    return BinderDeadLetters(store)


def main() -> int:
    return run_stage("binder", build_handler, build_dead_letters=build_dead_letters)


if __name__ == "__main__":
    sys.exit(main())

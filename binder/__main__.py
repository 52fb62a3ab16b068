"""`python -m binder`: bind fetched mail to orders and customers."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from binder.adapters import MongoCrmDirectory, MongoEmailArchive
from binder.batch import Parsed, parse_batch, wanted_lookups
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
        """Read which mails are stored, parse the others once, read their lookups in bulk."""
        self._parsed = {}
        self.archive.warm(e.email_id for e, _ in batch if isinstance(e, MailFetched))
        unbound = [
            (e, raw)
            for e, raw in batch
            if isinstance(e, MailFetched) and self.archive.get(e.tenant_id, e.email_id) is None
        ]
        self._parsed = parse_batch(unbound)
        self.crm.warm(wanted_lookups(unbound, self._parsed))

    def finish(self) -> None:
        # Customers and attachments first: a stored e-mail names only what is stored.
        self.crm.flush()
        self.blobs.flush()
        self.archive.flush()


def build_handler(_settings: Settings, store: Store) -> BinderHandler:
    return BinderHandler(store)


def main() -> int:
    return run_stage("binder", build_handler)


if __name__ == "__main__":
    sys.exit(main())

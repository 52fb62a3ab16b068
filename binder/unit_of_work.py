"""The binder's unit of work on MongoDB: a batch read in bulk, its writes stored at commit."""

from __future__ import annotations

from collections.abc import Sequence

from binder.adapters import MongoCrmDirectory, MongoEmailArchive
from binder.batch import Parsed, parse_batch, wanted_lookups
from shared.blobs import GridFsBlobStore
from shared.contracts import Event, MailFetched
from shared.store import Store


class MongoBindingBatch:
    """`BindingBatch` on MongoDB: bulk reads when the batch begins, and at commit one write
    command per collection (customers, then blobs, then e-mails)."""

    def __init__(self, store: Store) -> None:
        self.crm = MongoCrmDirectory(store)
        self.accounts = self.crm.accounts
        self.archive = MongoEmailArchive(store)
        self.blobs = GridFsBlobStore(store, deferred=True)
        self._parsed: dict[str, Parsed] = {}

    def begin(self, batch: Sequence[tuple[Event, bytes | None]]) -> None:
        """Drop what an earlier batch kept; read the accounts the events name and which
        mails are decided, parse the others once, and read what they will look up in bulk."""
        self._parsed = {}
        self.crm.discard()
        self.archive.discard()
        self.blobs.discard()
        fetched = [(e, raw) for e, raw in batch if isinstance(e, MailFetched)]
        self.accounts.warm_accounts((e.tenant_id, e.account_id) for e, _ in fetched)
        self.archive.warm((e.tenant_id, e.email_id) for e, _ in fetched)
        undecided = [(e, raw) for e, raw in fetched if not self._decided(e)]
        self._parsed = parse_batch(undecided)
        self.crm.warm(wanted_lookups(undecided, self._parsed))

    def _decided(self, event: MailFetched) -> bool:
        stored = self.archive.get(event.tenant_id, event.email_id)
        return stored is not None and stored.get("status") != "failed"

    def parsed(self, email_id: str) -> Parsed | None:
        return self._parsed.pop(email_id, None)

    def commit(self) -> None:
        # Customers and attachments first: a stored e-mail names only what is stored.
        self.crm.flush()
        self.blobs.flush()
        self.archive.flush()

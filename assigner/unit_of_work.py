"""The assigner's unit of work on MongoDB: a batch read and claimed in bulk, written at commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from assigner.adapters import MongoManagerRotation
from assigner.bindings import MongoBoundMailDirectory
from assigner.records import MongoAssignmentRecords
from assigner.trust import trusted
from shared.contracts import Event, MailBound
from shared.errors import PermanentError
from shared.store import OwnCache, Store


def _bound(batch: Sequence[tuple[Event, bytes | None]]) -> list[MailBound]:
    """The batch's `mail.bound` events (a `MailRouted` is a `MailBound` too: not these)."""
    return [
        e for e, _ in batch if isinstance(e, MailBound) and e.event_type == MailBound.event_type
    ]


class MongoAssignmentBatch:
    """`AssignmentBatch` on MongoDB: the batch's e-mails, accounts, customers and claims read
    with one query each (per tenant) and the new customers the store says its mails created
    claimed together when it begins; the managers it settled and its outcomes written with
    one bulk update each at commit."""

    def __init__(self, store: Store) -> None:
        customers = OwnCache(store.customers)
        self.bindings = MongoBoundMailDirectory(store, customers=customers)
        self.rotation = MongoManagerRotation(store, deferred=True, customers=customers)
        self.records = MongoAssignmentRecords(store, deferred=True, customers=customers)

    def begin(self, batch: Sequence[tuple[Event, bytes | None]]) -> None:
        self.rotation.discard()
        self.records.discard()
        bound = _bound(batch)
        self.bindings.load(bound)
        self.rotation.begin_batch((e.tenant_id, e.customer_id) for e in bound)
        # Only what the store vouches for is claimed: a forged event takes nobody's turn.
        self.rotation.claim_batch(
            (
                (e.tenant_id, e.options.manager_group_id, e.customer_id, e.email_id)
                for e in self._trusted(bound)
                if e.customer_created and e.options.manager_group_id is not None
            ),
            datetime.now(UTC),
        )

    def _trusted(self, bound: list[MailBound]) -> list[MailBound]:
        """The events as the store has them; those it refuses are left to their handling."""
        out = []
        for event in bound:
            try:
                out.append(trusted(event, bindings=self.bindings))
            except PermanentError:
                continue
        return out

    def commit(self) -> None:
        self.rotation.flush()
        self.records.flush()

"""The assigner's unit of work on MongoDB: a batch read and claimed in bulk, written at commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from assigner.adapters import MongoManagerRotation
from assigner.records import MongoAssignmentRecords
from shared.contracts import Event, MailBound
from shared.store import OwnCache, Store


def _bound(batch: Sequence[tuple[Event, bytes | None]]) -> list[MailBound]:
    """The batch's `mail.bound` events (a `MailRouted` is a `MailBound` too: not these)."""
    return [
        e for e, _ in batch if isinstance(e, MailBound) and e.event_type == MailBound.event_type
    ]


class MongoAssignmentBatch:
    """`AssignmentBatch` on MongoDB: the batch's customers and claims read with one query
    each and its new customers claimed together when it begins; the managers it settled and
    its outcomes written with one bulk update each at commit."""

    def __init__(self, store: Store) -> None:
        customers = OwnCache(store.customers)
        self.rotation = MongoManagerRotation(store, deferred=True, customers=customers)
        self.records = MongoAssignmentRecords(store, deferred=True, customers=customers)

    def begin(self, batch: Sequence[tuple[Event, bytes | None]]) -> None:
        self.rotation.discard()
        self.records.discard()
        bound = _bound(batch)
        self.rotation.begin_batch((e.tenant_id, e.customer_id) for e in bound)
        self.rotation.claim_batch(
            (
                (e.tenant_id, e.options.manager_group_id, e.customer_id, e.email_id)
                for e in bound
                if e.customer_created and e.options.manager_group_id is not None
            ),
            datetime.now(UTC),
        )

    def commit(self) -> None:
        self.rotation.flush()
        self.records.flush()

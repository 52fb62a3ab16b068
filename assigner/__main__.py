"""`python -m assigner`: hand customers created from mail to managers."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from assigner.adapters import MongoAssignmentRecords, MongoManagerRotation
from assigner.handlers import handle_mail_bound
from shared.contracts import Event, MailBound
from shared.errors import InvalidEventError
from shared.runtime import run_stage
from shared.settings import Settings
from shared.store import OwnCache, Store


class AssignerHandler:
    """The assigner's handler; each batch reads the manager groups afresh.

    A batch's customers and claims are read with one query each before it, and the managers
    and outcomes it settled are written in bulk after it; each new customer's slot and claim
    are inserted as it is handled, since they decide who gets it.
    """

    def __init__(self, store: Store) -> None:
        customers = OwnCache(store.customers)
        self.rotation = MongoManagerRotation(store, deferred=True, customers=customers)
        self.records = MongoAssignmentRecords(store, deferred=True, customers=customers)

    def __call__(self, event: Event, _payload: bytes | None) -> list[Event]:
        if not isinstance(event, MailBound) or event.event_type != MailBound.event_type:
            raise InvalidEventError(f"the assigner takes mail.bound, not {event.event_type}")
        return handle_mail_bound(
            event, rotation=self.rotation, records=self.records, now=datetime.now(UTC)
        )

    def prepare(self, batch: Sequence[tuple[Event, bytes | None]]) -> None:
        bound = [
            e for e, _ in batch if isinstance(e, MailBound) and e.event_type == MailBound.event_type
        ]
        self.rotation.begin_batch((e.tenant_id, e.customer_id) for e in bound)
        self.rotation.claim_batch(
            (
                (e.tenant_id, e.options.manager_group_id, e.customer_id, e.email_id)
                for e in bound
                if e.customer_created and e.options.manager_group_id is not None
            ),
            datetime.now(UTC),
        )

    def finish(self) -> None:
        self.rotation.flush()
        self.records.flush()


def build_handler(_settings: Settings, store: Store) -> AssignerHandler:
    return AssignerHandler(store)


def main() -> int:
    return run_stage("assigner", build_handler)


if __name__ == "__main__":
    sys.exit(main())

"""`python -m assigner`: hand customers created from mail to managers."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from assigner.handlers import handle_mail_bound
from assigner.ports import AssignmentBatch
from assigner.trust import trusted
from assigner.unit_of_work import MongoAssignmentBatch
from shared.contracts import Event, MailBound
from shared.errors import InvalidEventError
from shared.runtime import run_stage
from shared.settings import Settings
from shared.store import Store
from shared.worker import StageHandler


class AssignerHandler:
    """The assigner's handler: each bound mail of a batch checked against the store (what it
    acts on is the store's), then settled through the batch's ports."""

    def __init__(self, batch: AssignmentBatch) -> None:
        self.batch = batch

    def __call__(self, event: Event, _payload: bytes | None) -> list[Event]:
        if not isinstance(event, MailBound) or event.event_type != MailBound.event_type:
            raise InvalidEventError(f"the assigner takes mail.bound, not {event.event_type}")
        event = trusted(event, bindings=self.batch.bindings)
        return handle_mail_bound(
            event, rotation=self.batch.rotation, records=self.batch.records, now=datetime.now(UTC)
        )


def build_handler(_settings: Settings, store: Store) -> StageHandler:
    """The assigner's handler over the unit of work of its batches."""
    batch = MongoAssignmentBatch(store)
    return StageHandler(AssignerHandler(batch), unit_of_work=batch)


def main() -> int:
    return run_stage("assigner", build_handler)


if __name__ == "__main__":
    sys.exit(main())

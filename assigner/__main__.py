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
from shared.store import Store


class AssignerHandler:
    """The assigner's handler; each batch reads the manager groups afresh."""

    def __init__(self, store: Store) -> None:
        self.rotation = MongoManagerRotation(store)
        self.records = MongoAssignmentRecords(store)

    def __call__(self, event: Event, _payload: bytes | None) -> list[Event]:
        if not isinstance(event, MailBound) or event.event_type != MailBound.event_type:
            raise InvalidEventError(f"the assigner takes mail.bound, not {event.event_type}")
        return handle_mail_bound(
            event, rotation=self.rotation, records=self.records, now=datetime.now(UTC)
        )

    def prepare(self, _batch: Sequence[tuple[Event, bytes | None]]) -> None:
        self.rotation.begin_batch()


def build_handler(_settings: Settings, store: Store) -> AssignerHandler:
    return AssignerHandler(store)


def main() -> int:
    return run_stage("assigner", build_handler)


if __name__ == "__main__":
    sys.exit(main())

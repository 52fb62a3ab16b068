"""`python -m binder`: bind fetched mail to orders and customers."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from binder.accounts import MongoAccountDirectory
from binder.adapters import MongoEmailArchive
from binder.failures import handle_mail_dead_lettered
from binder.handlers import handle_mail_fetched
from binder.ports import BindingBatch
from binder.unit_of_work import MongoBindingBatch
from shared.contracts import Event, MailFetched
from shared.errors import InvalidEventError
from shared.letter import DEFAULT_PART_LIMITS, PartLimits
from shared.runtime import run_stage
from shared.settings import Settings
from shared.store import Store
from shared.worker import StageHandler


class BinderHandler:
    """The binder's handler: each fetched mail of a batch bound through the batch's ports."""

    def __init__(self, batch: BindingBatch, limits: PartLimits = DEFAULT_PART_LIMITS) -> None:
        self.batch = batch
        self.limits = limits

    def __call__(self, event: Event, payload: bytes | None) -> list[Event]:
        if not isinstance(event, MailFetched):
            raise InvalidEventError(f"the binder takes mail.fetched, not {event.event_type}")
        return handle_mail_fetched(
            event,
            payload,
            accounts=self.batch.accounts,
            crm=self.batch.crm,
            archive=self.batch.archive,
            blobs=self.batch.blobs,
            now=datetime.now(UTC),
            parsed=self.batch.parsed(event.email_id),
            limits=self.limits,
        )


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


def build_handler(settings: Settings, store: Store) -> StageHandler:
    """The binder's handler over the unit of work of its batches."""
    batch = MongoBindingBatch(store)
    limits = PartLimits(settings.max_parts, settings.max_parts_bytes)
    return StageHandler(BinderHandler(batch, limits), unit_of_work=batch)


def build_dead_letters(_settings: Settings, store: Store) -> BinderDeadLetters:
    return BinderDeadLetters(store)


def main() -> int:
    return run_stage("binder", build_handler, build_dead_letters=build_dead_letters)


if __name__ == "__main__":
    sys.exit(main())

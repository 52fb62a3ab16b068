"""A message that cannot be fetched: its failed attempts counted per account, and after the
last one it is recorded `failed`, its owner told, and the mailbox goes on past it.

The `emails` document has the shape the binder gives a mail it dead-letters
(binder/failures.py), and the notice is the same `mail.skipped` (reason `failed`) with the
same id, so the CRM and the notifier see one kind of failed mail whichever stage gave up.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from typing import Any

from fetcher.ports import EventPublisher, FailedMailArchive, FailureState, FailureStore
from shared.accounts import Account
from shared.contracts import MailFetched, MailSkipped
from shared.letter import MAX_REASON, base_document, failed_fields


def failed_document(event: MailFetched, reason: str, *, now: datetime) -> dict[str, Any]:
    """The `emails` document of a mail that could not be fetched."""
    return {**base_document(event, now), **failed_fields(reason, now=now, raw_ref=None)}


def failed_notice(event: MailFetched, reason: str, *, now: datetime) -> MailSkipped:
    """What tells the owner (with "notify about skipped messages"); a replay repeats its id."""
    return MailSkipped(
        event_id=MailSkipped.child_id(event.event_id, "/failed"),
        tenant_id=event.tenant_id,
        account_id=event.account_id,
        email_id=event.email_id,
        occurred_at=now,
        options=event.options,
        reason="failed",
        detail=reason[:MAX_REASON],
    )


class MessageFailures:
    """An account's failed fetch attempts, read once and saved on each change."""

    def __init__(
        self,
        account: Account,
        *,
        store: FailureStore,
        archive: FailedMailArchive,
        publisher: EventPublisher,
        attempts: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.account = account
        self.attempts = attempts
        self._store = store
        self._archive = archive
        self._publisher = publisher
        self._clock = clock
        self._state: FailureState | None = None

    @property
    def state(self) -> FailureState:
        if self._state is None:
            self._state = self._store.load(self.account.id)
        return self._state

    def exhausted(self, email_id: str) -> bool:
        """Whether the mail has had all its attempts."""
        return self.state.counts.get(email_id, 0) >= self.attempts

    def failed_attempt(self, email_id: str) -> bool:
        """Count one more failed attempt (saved); True once it was the last allowed."""
        self.state.counts[email_id] = self.state.counts.get(email_id, 0) + 1
        self._save()
        return self.exhausted(email_id)

    def fetched(self, email_ids: Iterable[str]) -> None:
        """Mail fetched after failed attempts is no longer counted."""
        counted = [e for e in email_ids if e in self.state.counts]
        for email_id in counted:
            del self.state.counts[email_id]
        if counted:
            self._save()

    def keep_only(self, email_ids: Collection[str]) -> None:
        """Forget the counts of mail the pass will not read (deleted from the server, or
        read elsewhere meanwhile): only mail still to be fetched keeps its count."""
        gone = [e for e in self.state.counts if e not in email_ids]
        for email_id in gone:
            del self.state.counts[email_id]
        if gone:
            self._save()

    def give_up(self, event: MailFetched, reason: str) -> None:
        """Record the mail `failed` and tell the owner; then it is no longer counted."""
        now = self._clock()
        self._archive.record_failed(failed_document(event, reason, now=now))
        self._publisher.publish([(failed_notice(event, reason, now=now), None)])
        self.fetched([event.email_id])

    def suspect(self, uidvalidity: int, until: int) -> None:
        """A fetch of several UIDs up to `until` failed: those are fetched one at a time."""
        state = self.state
        if state.suspect_uidvalidity != uidvalidity or state.suspect_until < until:
            state.suspect_uidvalidity, state.suspect_until = uidvalidity, until
            self._save()

    def alone(self, uidvalidity: int, uid: int) -> bool:
        """Whether the UID is to be fetched on its own."""
        state = self.state
        return state.suspect_uidvalidity == uidvalidity and uid <= state.suspect_until

    def _save(self) -> None:
        self._store.save(self.account.id, self.state)

"""One IMAP sync pass: new mail → confirmed publish → marked read (or deleted) → position saved."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from fetcher.ports import EventPublisher, FetchedMessage, ImapMailbox
from shared.accounts import Account
from shared.contracts import Event, MailFetched, email_id_for_imap

BATCH = 500


@dataclass(frozen=True)
class Position:
    """Where an account's folder was read up to."""

    uidvalidity: int
    last_uid: int


class PositionStore(Protocol):
    """Sync positions and progress of accounts."""

    def get(self, account_id: str, folder: str) -> Position | None: ...

    def save(self, account_id: str, folder: str, position: Position) -> None: ...

    def progress(self, account_id: str, *, done: int, total: int, now: datetime) -> None: ...


class BlobWriter(Protocol):
    def put(self, key: str, data: bytes, *, tenant_id: str, content_type: str) -> str: ...


@dataclass(frozen=True)
class SyncResult:
    fetched: int
    pending_deletes: bool = False


def criteria_for(account: Account, position: Position | None, uidnext: int) -> list[str] | None:
    """What to search for: None when there is nothing to read (first run in `new` mode)."""
    if position is None:
        if account.initial_sync == "new":
            return None
        return ["UNSEEN"] if account.initial_sync == "unseen" else ["ALL"]
    base = ["UID", f"{position.last_uid + 1}:*"]
    return [*base, "UNSEEN"] if account.initial_sync == "unseen" else base


def fetched_event(
    account: Account,
    folder: str,
    uidvalidity: int,
    message: FetchedMessage,
    *,
    raw_ref: str | None,
    now: datetime,
) -> MailFetched:
    """The event of one fetched message; its ids follow from account, folder and UID."""
    return MailFetched.for_mail(
        email_id=email_id_for_imap(account.id, folder, uidvalidity, message.uid),
        now=now,
        tenant_id=account.tenant_id,
        account_id=account.id,
        options=account.options(),
        protocol="imap",
        folder=folder,
        uidvalidity=uidvalidity,
        uid=message.uid,
        size=message.size,
        internal_date=message.internal_date,
        raw_ref=raw_ref,
        oversize=message.oversize,
        oversize_detail=f"{message.size} bytes" if message.oversize else None,
    )


class ImapSync:
    """Reads one account's folder from its saved position, in confirmed batches."""

    def __init__(
        self,
        account: Account,
        *,
        publisher: EventPublisher,
        positions: PositionStore,
        blobs: BlobWriter,
        clock: Callable[[], datetime],
        inline_limit: int,
    ) -> None:
        self.account = account
        self._publisher = publisher
        self._positions = positions
        self._blobs = blobs
        self._clock = clock
        self._inline_limit = inline_limit

    def run(self, mailbox: ImapMailbox) -> SyncResult:
        a = self.account
        state = mailbox.select(a.folder)
        position = self._positions.get(a.id, a.folder)
        if position is not None and position.uidvalidity != state.uidvalidity:
            position = None  # the folder was recreated: read it again (ids differ, keyed anew)
        criteria = criteria_for(a, position, state.uidnext)
        if criteria is None:
            self._positions.save(a.id, a.folder, Position(state.uidvalidity, state.uidnext - 1))
            return SyncResult(0)
        last = position.last_uid if position else 0
        uids = [u for u in mailbox.search(criteria) if u > last]
        return self._load(mailbox, state.uidvalidity, uids)

    def _load(self, mailbox: ImapMailbox, uidvalidity: int, uids: Sequence[int]) -> SyncResult:
        a, pending, done = self.account, False, 0
        for start in range(0, len(uids), BATCH):
            batch = uids[start : start + BATCH]
            messages = list(mailbox.fetch(batch, max_bytes=a.max_message_bytes))
            self._publisher.publish([self._event(uidvalidity, m) for m in messages])
            taken = [m.uid for m in messages]
            if a.delete_after_import:
                pending = not mailbox.delete(taken) or pending
            if not a.delete_after_import or pending:
                mailbox.mark_seen(taken)
            self._positions.save(a.id, a.folder, Position(uidvalidity, max(batch)))
            done += len(messages)
            self._positions.progress(a.id, done=done, total=len(uids), now=self._clock())
        return SyncResult(done, pending)

    def _event(self, uidvalidity: int, message: FetchedMessage) -> tuple[Event, bytes | None]:
        now = self._clock()
        event = fetched_event(
            self.account, self.account.folder, uidvalidity, message, raw_ref=None, now=now
        )
        if len(message.raw) <= self._inline_limit:
            return event, message.raw
        ref = self._blobs.put(
            f"raw/{event.email_id}",
            message.raw,
            tenant_id=self.account.tenant_id,
            content_type="message/rfc822",
        )
        return event.model_copy(update={"raw_ref": ref}), None

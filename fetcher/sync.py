"""One IMAP sync pass: new mail → confirmed publish → marked read (or deleted) → position saved."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from fetcher.ports import (
    BlobWriter,
    EventPublisher,
    FetchedMessage,
    ImapMailbox,
    Position,
    PositionStore,
    TakenMail,
)
from shared.accounts import Account
from shared.contracts import Event, MailFetched, email_id_for_imap

BATCH = 500


@dataclass(frozen=True)
class SyncResult:
    """What one pass took: messages published, duplicates skipped, deletes left pending."""

    fetched: int
    duplicates: int = 0
    pending_deletes: bool = False


def criteria_for(account: Account, position: Position | None, *, resync: bool) -> list[str] | None:
    """What to search for: None when there is nothing to read (first run in `new` mode).

    After a UIDVALIDITY change the folder is read again (all of it for `all`, else its unread
    mail); what was taken before is recognised by its fingerprint and not published twice.
    """
    if position is not None:
        base = ["UID", f"{position.last_uid + 1}:*"]
        return [*base, "UNSEEN"] if account.initial_sync == "unseen" else base
    if resync:
        return ["ALL"] if account.initial_sync == "all" else ["UNSEEN"]
    if account.initial_sync == "new":
        return None
    return ["UNSEEN"] if account.initial_sync == "unseen" else ["ALL"]


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
        oversize_detail=oversize_detail(account, message),
    )


def oversize_detail(account: Account, message: FetchedMessage) -> str | None:
    if not message.oversize:
        return None
    return f"{message.size} bytes, over the limit of {account.max_message_bytes} bytes"


def with_payload(
    event: MailFetched, raw: bytes, *, blobs: BlobWriter, inline_limit: int
) -> tuple[Event, bytes | None]:
    """The raw mail travels as the body, or — above the inline limit — stored once in GridFS."""
    if len(raw) <= inline_limit:
        return event, raw
    ref = blobs.put(
        f"raw/{event.email_id}", raw, tenant_id=event.tenant_id, content_type="message/rfc822"
    )
    return event.model_copy(update={"raw_ref": ref}), None


class ImapSync:
    """Reads one account's folder from its saved position, in confirmed batches."""

    def __init__(
        self,
        account: Account,
        *,
        publisher: EventPublisher,
        positions: PositionStore,
        taken: TakenMail,
        blobs: BlobWriter,
        clock: Callable[[], datetime],
        inline_limit: int,
        batch: int = BATCH,
    ) -> None:
        self.account = account
        self._publisher = publisher
        self._positions = positions
        self._taken = taken
        self._blobs = blobs
        self._clock = clock
        self._inline_limit = inline_limit
        self._batch = batch

    def run(self, mailbox: ImapMailbox) -> SyncResult:
        """Take the folder's new mail; a changed UIDVALIDITY starts over without duplicates."""
        a = self.account
        state = mailbox.select(a.folder)
        position = self._positions.get(a.id, a.folder)
        resync = position is not None and position.uidvalidity != state.uidvalidity
        if resync:
            position = None
        criteria = criteria_for(a, position, resync=resync)
        if criteria is None:
            start = Position(state.uidvalidity, max(state.uidnext - 1, 0))
            self._positions.save(a.id, a.folder, start)
            return SyncResult(0)
        last = position.last_uid if position else 0
        uids = [u for u in mailbox.search(criteria) if u > last]
        if not uids:
            if position is None:  # remember the UIDVALIDITY even when there was nothing to read
                self._positions.save(a.id, a.folder, Position(state.uidvalidity, 0))
            return SyncResult(0)
        return self._load(mailbox, state.uidvalidity, uids)

    def _load(self, mailbox: ImapMailbox, uidvalidity: int, uids: Sequence[int]) -> SyncResult:
        a = self.account
        done = self._positions.begin_progress(a.id, remaining=len(uids), now=self._clock())
        fetched = duplicates = 0
        pending = False
        for start in range(0, len(uids), self._batch):
            batch = uids[start : start + self._batch]
            messages = list(mailbox.fetch(batch, max_bytes=a.max_message_bytes))
            published = self._publish(uidvalidity, messages)
            pending = self._settle(mailbox, messages) or pending
            done += len(batch)
            position = Position(uidvalidity, max(batch))
            self._positions.advance(a.id, a.folder, position, done=done, now=self._clock())
            fetched += published
            duplicates += len(messages) - published
        if a.delete_after_import:
            self._positions.deletes_pending(a.id, pending)
        return SyncResult(fetched, duplicates, pending)

    def _publish(self, uidvalidity: int, messages: Sequence[FetchedMessage]) -> int:
        """Publish what was not taken before (by fingerprint); remember it once confirmed."""
        a = self.account
        prints = {m.uid: m.fingerprint(a.id) for m in messages}
        known = self._taken.known(a.id, list(prints.values()))
        fresh = [m for m in messages if prints[m.uid] not in known]
        events = [self._event(uidvalidity, m) for m in fresh]
        self._publisher.publish(events)
        pairs = zip(fresh, events, strict=True)
        self._taken.remember(a.id, [(prints[m.uid], e.email_id or "") for m, (e, _) in pairs])
        return len(fresh)

    def _settle(self, mailbox: ImapMailbox, messages: Sequence[FetchedMessage]) -> bool:
        """Mark taken mail read, or delete it; True when the server cannot expunge by UID.

        Oversize mail is never deleted (it was not imported): it is marked read so that it
        is not fetched again.
        """
        taken = [m.uid for m in messages]
        if not self.account.delete_after_import:
            mailbox.mark_seen(taken)
            return False
        loaded = [m.uid for m in messages if not m.oversize]
        if loaded and mailbox.delete(loaded):
            mailbox.mark_seen([m.uid for m in messages if m.oversize])
            return False
        mailbox.mark_seen(taken)
        return bool(loaded)

    def _event(self, uidvalidity: int, message: FetchedMessage) -> tuple[Event, bytes | None]:
        a = self.account
        event = fetched_event(a, a.folder, uidvalidity, message, raw_ref=None, now=self._clock())
        return with_payload(event, message.raw, blobs=self._blobs, inline_limit=self._inline_limit)

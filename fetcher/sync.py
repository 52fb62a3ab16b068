"""One IMAP sync pass: new mail → confirmed publish → position saved; the mailbox effects of
the binder's outcomes are made as they become known (fetcher.settle)."""

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
from fetcher.settle import Settler
from shared.accounts import Account
from shared.contracts import Event, MailFetched, email_id_for_imap

BATCH = 500


@dataclass(frozen=True)
class SyncResult:
    """What one pass took: messages published and duplicates skipped."""

    fetched: int
    duplicates: int = 0


def criteria_for(account: Account, position: Position | None, *, resync: bool) -> list[str] | None:
    """What to search for: None when there is nothing to read (first run in `new` mode).

    With `unseen`, the first load takes the unread mail up to its end; any message past that
    end is new mail and taken whether or not somebody read it already. After a UIDVALIDITY
    change the folder is read again (all of it for `all`, else its unread mail); what was
    taken before is recognised by its fingerprint and not published twice.
    """
    if position is not None:
        return ["UID", f"{position.last_uid + 1}:*"]
    if resync:
        return ["ALL"] if account.initial_sync == "all" else ["UNSEEN"]
    if account.initial_sync == "new":
        return None
    return ["UNSEEN"] if account.initial_sync == "unseen" else ["ALL"]


def unseen_until(account: Account, position: Position | None, *, first_load_end: int) -> int:
    """The last UID that only counts when unread (0: none): the first load's end in `unseen`."""
    if account.initial_sync != "unseen":
        return 0
    return position.first_load_end if position is not None else first_load_end


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
        settler: Settler,
        clock: Callable[[], datetime],
        inline_limit: int,
        batch: int = BATCH,
    ) -> None:
        self.account = account
        self._settler = settler
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
        self._settler.settle_imap(mailbox, state.uidvalidity)
        position = self._positions.get(a.id, a.folder)
        resync = position is not None and position.uidvalidity != state.uidvalidity
        if resync:
            position = None
        criteria = criteria_for(a, position, resync=resync)
        end = position.first_load_end if position else max(state.uidnext - 1, 0)
        if criteria is None:
            self._positions.save(a.id, a.folder, Position(state.uidvalidity, end, end))
            return SyncResult(0)
        uids = self._search(mailbox, criteria, position, end)
        if not uids:
            if position is None:  # nothing to read up to the first load's end: it is done
                self._positions.save(a.id, a.folder, Position(state.uidvalidity, end, end))
            return SyncResult(0)
        return self._load(mailbox, Position(state.uidvalidity, 0, end), uids)

    def _search(
        self, mailbox: ImapMailbox, criteria: list[str], position: Position | None, end: int
    ) -> list[int]:
        """The UIDs to take: past the position, and unread where only unread mail counts."""
        last = position.last_uid if position else 0
        uids = [u for u in mailbox.search(criteria) if u > last]
        until = unseen_until(self.account, position, first_load_end=end)
        if position is None or until <= last or not uids or uids[0] > until:
            return uids
        unread = set(mailbox.search(["UID", f"{last + 1}:{until}", "UNSEEN"]))
        return [u for u in uids if u > until or u in unread]

    def _load(self, mailbox: ImapMailbox, start: Position, uids: Sequence[int]) -> SyncResult:
        a = self.account
        done = self._positions.begin_progress(a.id, remaining=len(uids), now=self._clock())
        fetched = duplicates = 0
        for first in range(0, len(uids), self._batch):
            batch = uids[first : first + self._batch]
            messages = list(mailbox.fetch(batch, max_bytes=a.max_message_bytes))
            published = self._publish(start.uidvalidity, messages)
            done += len(batch)
            position = Position(start.uidvalidity, max(batch), start.first_load_end)
            self._positions.advance(a.id, a.folder, position, done=done, now=self._clock())
            self._settler.settle_imap(mailbox, start.uidvalidity)
            fetched += published
            duplicates += len(messages) - published
        return SyncResult(fetched, duplicates)

    def _publish(self, uidvalidity: int, messages: Sequence[FetchedMessage]) -> int:
        """Publish what was not taken before (by fingerprint); remember it once confirmed."""
        a = self.account
        prints = {m.uid: m.fingerprint(a.id) for m in messages}
        known = self._taken.known(a.id, list(prints.values()))
        fresh = [m for m in messages if prints[m.uid] not in known]
        events = [self._event(uidvalidity, m) for m in fresh]
        self._publisher.publish(events)
        ids = [e.email_id or "" for e, _ in events]
        self._settler.expect(ids)
        self._taken.remember(a.id, [(prints[m.uid], i) for m, i in zip(fresh, ids, strict=True)])
        return len(fresh)

    def _event(self, uidvalidity: int, message: FetchedMessage) -> tuple[Event, bytes | None]:
        a = self.account
        event = fetched_event(a, a.folder, uidvalidity, message, raw_ref=None, now=self._clock())
        return with_payload(event, message.raw, blobs=self._blobs, inline_limit=self._inline_limit)

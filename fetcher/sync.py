"""One IMAP sync pass: new mail → confirmed publish → position saved; the mailbox effects of
the binder's outcomes are made as they become known (fetcher.settle)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from fetcher.batching import DEFAULT_BUDGET, plan_groups
from fetcher.failures import MessageFailures
from fetcher.ports import (
    BlobWriter,
    EventPublisher,
    FetchedMessage,
    ImapMailbox,
    MessageFetchError,
    MessageMeta,
    Position,
    PositionStore,
    TakenMail,
)
from fetcher.settle import Settler
from shared.accounts import Account
from shared.contracts import Event, MailFetched, email_id_for_imap
from shared.errors import MailboxError, MailboxUnavailableError

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
    """Reads one account's folder from its saved position, in confirmed batches.

    `batch` UIDs are looked at together (sizes, dates, Message-IDs); their bodies are fetched
    in groups of at most `budget` bytes, a larger message on its own. A message whose fetch
    fails is counted (`failures`); after its last attempt it is recorded `failed` and the
    folder is read on past it.
    """

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
        failures: MessageFailures,
        batch: int = BATCH,
        budget: int = DEFAULT_BUDGET,
    ) -> None:
        self.account = account
        self._settler = settler
        self._publisher = publisher
        self._positions = positions
        self._taken = taken
        self._blobs = blobs
        self._clock = clock
        self._inline_limit = inline_limit
        self._failures = failures
        self._batch = batch
        self._budget = budget

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
        self._failures.keep_only({self._id(start.uidvalidity, u) for u in uids})
        done = self._positions.begin_progress(a.id, remaining=len(uids), now=self._clock())
        fetched = duplicates = 0
        for first in range(0, len(uids), self._batch):
            batch = uids[first : first + self._batch]
            for group in self._groups(start.uidvalidity, mailbox.headers(batch)):
                taking = _Taking()
                try:
                    self._fetch_group(mailbox, start.uidvalidity, group, taking)
                except _PassEndedError as lost:
                    taking.ended.append(lost)
                # What was fetched is published, past a failed message too (known by its
                # fingerprint when the folder is read again from that message).
                published = self._publish(start.uidvalidity, taking.messages)
                if taking.ended:
                    first_end = min(taking.ended, key=lambda e: e.last)
                    self._advance(start, first_end.last, done, batch)
                    raise first_end.cause from first_end.cause.__cause__
                self._advance(start, group[-1].uid, done, batch)
                fetched += published
                duplicates += len(taking.messages) - published
            done += len(batch)
            self._advance(start, max(batch), done, [])
            self._settler.settle_imap(mailbox, start.uidvalidity)
        return SyncResult(fetched, duplicates)

    def _advance(self, start: Position, last: int, done: int, batch: Sequence[int]) -> None:
        """Save the position at `last`; `done` plus the batch's UIDs up to it are done."""
        a = self.account
        position = Position(start.uidvalidity, last, start.first_load_end)
        done += bisect_right(batch, last)
        self._positions.advance(a.id, a.folder, position, done=done, now=self._clock())

    def _groups(self, uidvalidity: int, metas: Sequence[MessageMeta]) -> list[list[MessageMeta]]:
        return plan_groups(
            metas,
            budget=self._budget,
            max_bytes=self.account.max_message_bytes,
            alone=lambda m: self._failures.alone(uidvalidity, m.uid),
        )

    def _fetch_group(
        self,
        mailbox: ImapMailbox,
        uidvalidity: int,
        group: Sequence[MessageMeta],
        taking: _Taking,
    ) -> None:
        """The group's messages, added to `taking`. A FETCH the server refuses is split
        until the message at fault is alone, and the rest is fetched without it; a lost
        connection ends the pass (_PassEndedError), and its UIDs are fetched one at a time
        from then on, so the message at fault is found."""
        try:
            messages = mailbox.bodies(group, max_bytes=self.account.max_message_bytes)
        except MessageFetchError as exc:
            if len(group) == 1:
                ended = self._failed_alone(uidvalidity, group[0], exc)
                taking.ended.extend([ended] if ended else [])
                return
            half = len(group) // 2
            self._fetch_group(mailbox, uidvalidity, group[:half], taking)
            self._fetch_group(mailbox, uidvalidity, group[half:], taking)
            return
        except MailboxError as exc:  # the connection is gone with the FETCH
            if len(group) == 1:
                ended = self._failed_alone(uidvalidity, group[0], exc)
                raise ended or _PassEndedError(group[0].uid, exc) from exc
            self._failures.suspect(uidvalidity, group[-1].uid)
            raise _PassEndedError(group[0].uid - 1, exc) from exc
        self._failures.fetched(self._id(uidvalidity, m.uid) for m in messages)
        taking.messages.extend(messages)

    def _failed_alone(
        self, uidvalidity: int, meta: MessageMeta, exc: MailboxError
    ) -> _PassEndedError | None:
        """Count a failed attempt of one message: the last one records it `failed` (None:
        the folder is read on past it); before that the pass is to end just before it."""
        if not self._failures.failed_attempt(self._id(uidvalidity, meta.uid)):
            cause = MailboxUnavailableError(exc.reason, f"message UID {meta.uid}: {exc}")
            cause.__cause__ = exc
            return _PassEndedError(meta.uid - 1, cause)
        a = self.account
        message = FetchedMessage(meta.uid, b"", meta.size, meta.internal_date, False)
        event = fetched_event(a, a.folder, uidvalidity, message, raw_ref=None, now=self._clock())
        self._failures.give_up(event, f"{exc.reason}: {exc}")
        return None

    def _id(self, uidvalidity: int, uid: int) -> str:
        return email_id_for_imap(self.account.id, self.account.folder, uidvalidity, uid)

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


@dataclass
class _Taking:
    """What the fetch of a group brought, and the ends of the pass its failures make."""

    messages: list[FetchedMessage] = field(default_factory=list)
    ended: list[_PassEndedError] = field(default_factory=list)


class _PassEndedError(Exception):
    """Raised when a fetch failure ends the pass: the position may go up to `last`."""

    def __init__(self, last: int, cause: MailboxError) -> None:
        super().__init__(str(cause))
        self.last = last
        self.cause = cause

"""One POP3 pass: UIDLs not taken yet → RETR → confirmed publish → UIDLs saved → DELE."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from fetcher.ports import BlobWriter, EventPublisher, FetchedMessage, Pop3Mailbox, Pop3Positions
from fetcher.sync import SyncResult, oversize_detail, with_payload
from shared.accounts import Account
from shared.contracts import Event, MailFetched, email_id_for_pop3

BATCH = 200


class Pop3Sync:
    """Reads one POP3 account: every message whose UIDL was not taken before.

    POP3 has no read flag, so the taken UIDLs are the position; they are pruned to what the
    server still lists. With "delete loaded messages", DELE is sent for loaded mail after its
    publish was confirmed (the session's QUIT, sent by the caller, makes it final).
    """

    def __init__(
        self,
        account: Account,
        *,
        publisher: EventPublisher,
        positions: Pop3Positions,
        blobs: BlobWriter,
        clock: Callable[[], datetime],
        inline_limit: int,
        batch: int = BATCH,
    ) -> None:
        self.account = account
        self._publisher = publisher
        self._positions = positions
        self._blobs = blobs
        self._clock = clock
        self._inline_limit = inline_limit
        self._batch = batch

    def run(self, mailbox: Pop3Mailbox) -> SyncResult:
        a = self.account
        listing = mailbox.listing()
        on_server = {uidl for _n, uidl, _s in listing}
        taken, oversize = self._positions.taken(a.id)
        taken &= on_server
        oversize &= on_server
        new = [entry for entry in listing if entry[1] not in taken]
        for start in range(0, len(new), self._batch):
            batch = new[start : start + self._batch]
            limit = a.max_message_bytes
            messages = [mailbox.retrieve(n, u, s, max_bytes=limit) for n, u, s in batch]
            self._publisher.publish([self._event(m) for m in messages])
            taken |= {u for _n, u, _s in batch}
            oversize |= {m.uidl or "" for m in messages if m.oversize}
            self._positions.save_taken(a.id, taken, oversize)
        if not new:
            self._positions.save_taken(a.id, taken, oversize)
        if a.delete_after_import:
            self._delete(mailbox, listing, taken - oversize)
        return SyncResult(len(new))

    def _delete(
        self, mailbox: Pop3Mailbox, listing: Sequence[tuple[int, str, int]], loaded: set[str]
    ) -> None:
        for number, uidl, _size in listing:
            if uidl in loaded:
                mailbox.delete(number)

    def _event(self, message: FetchedMessage) -> tuple[Event, bytes | None]:
        a, uidl = self.account, message.uidl or ""
        event = MailFetched.for_mail(
            email_id=email_id_for_pop3(a.id, uidl),
            now=self._clock(),
            tenant_id=a.tenant_id,
            account_id=a.id,
            options=a.options(),
            protocol="pop3",
            uidl=uidl,
            size=message.size,
            oversize=message.oversize,
            oversize_detail=oversize_detail(a, message),
        )
        return with_payload(event, message.raw, blobs=self._blobs, inline_limit=self._inline_limit)

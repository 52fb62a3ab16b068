"""One POP3 pass: the known outcomes settled (DELE) → UIDLs not taken yet → RETR → confirmed
publish → UIDLs saved."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from fetcher.ports import (
    BlobWriter,
    EventPublisher,
    FetchedMessage,
    Outcome,
    Pop3Mailbox,
    Pop3Positions,
)
from fetcher.settle import Settler
from fetcher.sync import SyncResult, oversize_detail, with_payload
from shared.accounts import Account
from shared.contracts import Event, MailFetched, email_id_for_pop3

BATCH = 200


@dataclass(frozen=True)
class Pop3Result(SyncResult):
    """A POP3 pass, and the outcomes it made, to mark done once its QUIT made the DELEs final."""

    settled: list[Outcome] = field(default_factory=list)


class Pop3Sync:
    """Reads one POP3 account: every message whose UIDL was not taken before.

    POP3 has no read flag, so the taken UIDLs are the position; they are pruned to what the
    server still lists. With "delete loaded messages", DELE is sent at the start of a pass for
    the mail the binder loaded since (the session's QUIT, sent by the caller, makes it
    final); mail it skipped stays on the server.
    """

    def __init__(
        self,
        account: Account,
        *,
        publisher: EventPublisher,
        positions: Pop3Positions,
        blobs: BlobWriter,
        settler: Settler,
        clock: Callable[[], datetime],
        inline_limit: int,
        batch: int = BATCH,
    ) -> None:
        self.account = account
        self._publisher = publisher
        self._positions = positions
        self._blobs = blobs
        self._settler = settler
        self._clock = clock
        self._inline_limit = inline_limit
        self._batch = batch

    def run(self, mailbox: Pop3Mailbox) -> Pop3Result:
        a = self.account
        listing = mailbox.listing()
        settled = self._settler.settle_pop3(mailbox, listing)
        on_server = {uidl for _n, uidl, _s in listing}
        taken, oversize = self._positions.taken(a.id)
        taken &= on_server
        oversize &= on_server
        new = [entry for entry in listing if entry[1] not in taken]
        for start in range(0, len(new), self._batch):
            batch = new[start : start + self._batch]
            limit = a.max_message_bytes
            messages = [mailbox.retrieve(n, u, s, max_bytes=limit) for n, u, s in batch]
            events = [self._event(m) for m in messages]
            self._publisher.publish(events)
            self._settler.expect(e.email_id or "" for e, _ in events)
            taken |= {u for _n, u, _s in batch}
            oversize |= {m.uidl or "" for m in messages if m.oversize}
            self._positions.save_taken(a.id, taken, oversize)
        if not new:
            self._positions.save_taken(a.id, taken, oversize)
        return Pop3Result(len(new), settled=settled)

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

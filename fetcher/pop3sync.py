"""One POP3 pass: the known outcomes settled (DELE) → UIDLs not taken yet → RETR → confirmed
publish → UIDLs saved."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from fetcher.batching import DEFAULT_BUDGET, cost
from fetcher.failures import MessageFailures
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
from shared.errors import MailboxError, MailboxUnavailableError

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
    final); mail it skipped stays on the server. What is retrieved is published once it
    reaches `budget` bytes (by the sizes LIST gave) or `batch` messages; a message over the
    account's limit is not retrieved (its header only, TOP n 0). A message whose RETR fails
    is counted (`failures`); after its last attempt it is recorded `failed` and taken.
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
        failures: MessageFailures,
        batch: int = BATCH,
        budget: int = DEFAULT_BUDGET,
    ) -> None:
        self.account = account
        self._publisher = publisher
        self._positions = positions
        self._blobs = blobs
        self._settler = settler
        self._clock = clock
        self._inline_limit = inline_limit
        self._failures = failures
        self._batch = batch
        self._budget = budget

    def run(self, mailbox: Pop3Mailbox) -> Pop3Result:
        a = self.account
        listing = mailbox.listing()
        settled = self._settler.settle_pop3(mailbox, listing)
        on_server = {uidl for _n, uidl, _s in listing}
        taken, oversize = self._positions.taken(a.id)
        self._taken, self._oversize = taken & on_server, oversize & on_server
        new = [entry for entry in listing if entry[1] not in self._taken]
        if new:
            self._failures.keep_only({email_id_for_pop3(a.id, uidl) for _n, uidl, _s in new})
        group: list[FetchedMessage] = []
        used = 0
        for number, uidl, size in new:
            need = cost(size, max_bytes=a.max_message_bytes)
            if group and (len(group) >= self._batch or used + need > self._budget):
                self._publish(group)
                group, used = [], 0
            message = self._retrieve(mailbox, number, uidl, size, done=group)
            if message is not None:  # counted as it came, whatever LIST said of it
                group.append(message)
                used += max(need, len(message.raw))
            if used >= self._budget:
                self._publish(group)
                group, used = [], 0
        self._publish(group)
        return Pop3Result(len(new), settled=settled)

    def _retrieve(
        self, mailbox: Pop3Mailbox, number: int, uidl: str, size: int, *, done: list[FetchedMessage]
    ) -> FetchedMessage | None:
        """RETR one message; a failure publishes what came before it, and is counted: after
        the last attempt the message is recorded `failed` (None), before it the pass ends."""
        email_id = email_id_for_pop3(self.account.id, uidl)
        try:
            message = mailbox.retrieve(number, uidl, size, max_bytes=self.account.max_message_bytes)
        except MailboxError as exc:
            self._publish(done)
            done.clear()
            if not self._failures.failed_attempt(email_id):
                raise MailboxUnavailableError(exc.reason, f"message {uidl!r}: {exc}") from exc
            self._failures.give_up(self._fetched(uidl, size), f"{exc.reason}: {exc}")
            self._taken.add(uidl)
            self._positions.save_taken(self.account.id, self._taken, self._oversize)
            raise  # the session is in doubt after a failed RETR: the next pass goes on
        self._failures.fetched([email_id])
        return message

    def _publish(self, messages: list[FetchedMessage]) -> None:
        """Publish, then remember the UIDLs (also when there is nothing: pruned to the server)."""
        events = [self._event(m) for m in messages]
        if events:
            self._publisher.publish(events)
            self._settler.expect(e.email_id or "" for e, _ in events)
        self._taken |= {m.uidl or "" for m in messages}
        self._oversize |= {m.uidl or "" for m in messages if m.oversize}
        self._positions.save_taken(self.account.id, self._taken, self._oversize)

    def _fetched(self, uidl: str, size: int, *, oversize: str | None = None) -> MailFetched:
        """The event of a mail; `oversize`: why only its header was taken."""
        a = self.account
        return MailFetched.for_mail(
            email_id=email_id_for_pop3(a.id, uidl),
            now=self._clock(),
            tenant_id=a.tenant_id,
            account_id=a.id,
            options=a.options(),
            protocol="pop3",
            uidl=uidl,
            size=size,
            oversize=oversize is not None,
            oversize_detail=oversize,
        )

    def _event(self, message: FetchedMessage) -> tuple[Event, bytes | None]:
        uidl = message.uidl or ""
        detail = oversize_detail(self.account, message)
        event = self._fetched(uidl, message.size, oversize=detail)
        return with_payload(event, message.raw, blobs=self._blobs, inline_limit=self._inline_limit)

"""The mailbox follows the binder: loaded mail is marked read (or deleted), skipped mail is left.

A published mail's outcome is known once the binder stored its `emails` document: `bound`
mail is `pending` there until the fetcher holding the account has changed the mailbox for it
and recorded what it did. Nothing is marked or deleted before the letter is stored, and a
mail the rules skipped, or that failed, stays on the server as it was (unread, if it was).
Doing an effect twice changes nothing (a flag set again, a UID expunged already), so a crash
between the mailbox change and its record only repeats it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from fetcher.ports import (
    ImapMailbox,
    Loaded,
    MailboxState,
    MailOutcomes,
    Pop3Mailbox,
    PositionStore,
)
from shared.accounts import Account
from shared.logging import get_logger

log = get_logger("mailintake.fetcher")

UNSETTLED_LIMIT = 5_000  # loaded mail settled per round at a pass's start
ASKED_LIMIT = 2_000  # published mail whose outcome is asked for per round
WAIT_SECONDS = 300.0  # how long outcomes are waited for after a publish; later, at a pass
LOOK_EVERY = 1.0  # seconds between looks for the outcomes of mail this session published
SWEEP_GAP_MAX = 30.0  # the longest gap between looks for another session's pending mail


class Settler:
    """One account's published mail awaiting its outcome, and the effects that follow it."""

    def __init__(
        self,
        account: Account,
        *,
        outcomes: MailOutcomes,
        positions: PositionStore,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.account = account
        self._outcomes = outcomes
        self._positions = positions
        self._clock = clock
        self._monotonic = monotonic
        self._awaiting: dict[str, None] = {}  # in publish order
        self._wait_until = 0.0
        self._sweep_until = 0.0
        self._sweep_gap = LOOK_EVERY
        self._pending_deletes: bool | None = None

    @property
    def waiting(self) -> bool:
        """Whether mail published lately still has no outcome (worth a prompt look)."""
        if self._awaiting and self._monotonic() > self._wait_until:
            self._awaiting.clear()  # the binder is slow or down: a later pass settles them
        return bool(self._awaiting)

    def expect(self, email_ids: Iterable[str]) -> None:
        """Mail whose publish was confirmed: its outcome is to come."""
        self._awaiting.update(dict.fromkeys(email_ids))
        self._wait_until = self._monotonic() + WAIT_SECONDS

    def resume(self, last_publish: datetime | None) -> None:
        """A session starts: if the account published mail lately (perhaps from a replica
        that died since), its outcomes may still come, unknown to this session: look for
        pending mail for a while, at growing gaps."""
        if last_publish is None:
            return
        left = WAIT_SECONDS - (self._clock() - last_publish).total_seconds()
        if left > 0:
            self._sweep_until = self._monotonic() + left
            self._sweep_gap = LOOK_EVERY

    def next_look(self) -> float | None:
        """Seconds until the next look for outcomes; None when none is expected."""
        if self.waiting:
            return LOOK_EVERY
        if self._monotonic() < self._sweep_until:
            gap, self._sweep_gap = self._sweep_gap, min(self._sweep_gap * 2, SWEEP_GAP_MAX)
            return gap
        return None

    def settle_imap(self, mailbox: ImapMailbox, uidvalidity: int, *, everything: bool) -> int:
        """Make the mailbox effects of the outcomes known; `everything`: not only of the mail
        this session published, of any loaded mail still pending (a pass's start)."""
        loaded = self._loaded(everything)
        if not loaded:
            return 0
        states: dict[str, MailboxState] = {}
        here = [m for m in loaded if m.folder == self.account.folder]
        current = [m for m in here if m.uidvalidity == uidvalidity and m.uid is not None]
        for mail in loaded:
            states[mail.email_id] = "stale"  # another folder's, or UIDs of an old UIDVALIDITY
        if current:
            states.update(self._flag(mailbox, current))
        self.record(states)
        return len(current)

    def settle_pop3(
        self, mailbox: Pop3Mailbox, listing: Sequence[tuple[int, str, int]]
    ) -> dict[str, MailboxState]:
        """DELE the loaded mail (with "delete loaded messages"), else keep it; the states to
        record once the session's QUIT made the deletions final."""
        states: dict[str, MailboxState] = {}
        numbers = {uidl: number for number, uidl, _size in listing}
        for mail in self._loaded(everything=True):
            number = numbers.get(mail.uidl or "")
            if number is None:
                states[mail.email_id] = "gone"
            elif self.account.delete_after_import:
                mailbox.delete(number)
                states[mail.email_id] = "deleted"
            else:
                states[mail.email_id] = "kept"
        return states

    def record(self, states: dict[str, MailboxState]) -> None:
        """Record what was done in the mailbox (the e-mails stay pending until then)."""
        if not states:
            return
        self._outcomes.settle(self.account.id, states, now=self._clock())
        counts = Counter(states.values())
        log.info("mailbox_settled", account_id=self.account.id, **dict(sorted(counts.items())))

    def _loaded(self, everything: bool) -> list[Loaded]:
        a = self.account
        loaded: dict[str, Loaded] = {}
        if everything:
            for mail in self._outcomes.unsettled(a.id, limit=UNSETTLED_LIMIT):
                loaded[mail.email_id] = mail
        asked = list(self._awaiting)[:ASKED_LIMIT]
        if asked:
            pending, decided = self._outcomes.decided(a.id, asked)
            for email_id in decided:
                self._awaiting.pop(email_id, None)
            loaded.update((m.email_id, m) for m in pending)
        return list(loaded.values())

    def _flag(self, mailbox: ImapMailbox, loaded: Sequence[Loaded]) -> dict[str, MailboxState]:
        uids = [m.uid for m in loaded if m.uid is not None]
        state: MailboxState = "seen"
        if self.account.delete_after_import:
            deleted = mailbox.delete(uids)
            if deleted:
                state = "deleted"
            else:  # no UIDPLUS: an EXPUNGE would also remove what others flagged \\Deleted
                mailbox.mark_seen(uids)
            self._deletes_pending(not deleted)
        else:
            mailbox.mark_seen(uids)
        return {m.email_id: state for m in loaded}

    def _deletes_pending(self, pending: bool) -> None:
        """Shown by `accounts list`: the server cannot delete by UID; written on a change."""
        if pending != self._pending_deletes:
            self._positions.deletes_pending(self.account.id, pending)
            self._pending_deletes = pending

"""The mailbox follows the binder: loaded mail is marked read (or deleted), skipped mail is left.

Once the binder stored a mail's `emails` document, it writes the mail's outcome for the
fetcher (`shared.mailboxref`): loaded, or not. The fetcher holding the account makes the
effect of each outcome — \\Seen, or \\Deleted and UID EXPUNGE (IMAP), DELE (POP3) — and
then removes the outcome. Nothing is marked or deleted before the letter is stored, and a
mail the rules skipped, or that failed, stays on the server as it was (unread, if it was).
Doing an effect twice changes nothing (a flag set again, a UID expunged already), so a crash
between the mailbox change and the removal only repeats it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from fetcher.ports import ImapMailbox, MailOutcomes, Outcome, Pop3Mailbox, PositionStore
from shared.accounts import Account
from shared.logging import get_logger

log = get_logger("mailintake.fetcher")

OUTCOMES_LIMIT = 5_000  # outcomes made per round
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

    def settle_imap(self, mailbox: ImapMailbox, uidvalidity: int) -> int:
        """Make the mailbox effects of the outcomes known; the number of mails changed.

        A loaded mail's UID of an earlier UIDVALIDITY (or another folder) names nothing now:
        it is counted `stale` and left.
        """
        outcomes = self._outcomes_now()
        if not outcomes:
            return 0
        a = self.account
        uids = [
            o.uid
            for o in outcomes
            if o.loaded and o.folder == a.folder and o.uidvalidity == uidvalidity and o.uid
        ]
        loaded = sum(o.loaded for o in outcomes)
        counts = Counter({"left": len(outcomes) - loaded, "stale": loaded - len(uids)})
        if uids:
            counts[self._flag(mailbox, uids)] += len(uids)
        self._done(outcomes, +counts)
        return len(uids)

    def settle_pop3(
        self, mailbox: Pop3Mailbox, listing: Sequence[tuple[int, str, int]]
    ) -> list[Outcome]:
        """DELE the loaded mail (with "delete loaded messages"); the outcomes to mark done once
        the session's QUIT made the deletions final (`record`)."""
        numbers = {uidl: number for number, uidl, _size in listing}
        outcomes = self._outcomes_now()
        for outcome in outcomes:
            number = numbers.get(outcome.uidl or "")
            if outcome.loaded and number is not None and self.account.delete_after_import:
                mailbox.delete(number)
        return outcomes

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Mark the outcomes of a POP3 session done, after its QUIT."""
        if outcomes:
            action = "deleted" if self.account.delete_after_import else "kept"
            self._done(outcomes, Counter(action if o.loaded else "left" for o in outcomes))

    def _outcomes_now(self) -> list[Outcome]:
        outcomes = self._outcomes.pending(self.account.id, limit=OUTCOMES_LIMIT)
        for outcome in outcomes:
            self._awaiting.pop(outcome.email_id, None)
        return outcomes

    def _done(self, outcomes: Sequence[Outcome], counts: Counter[str]) -> None:
        self._outcomes.done(self.account.id, [o.email_id for o in outcomes])
        log.info("mailbox_settled", account_id=self.account.id, **dict(sorted(counts.items())))

    def _flag(self, mailbox: ImapMailbox, uids: list[int]) -> str:
        """Mark read, or delete; what was done."""
        if not self.account.delete_after_import:
            mailbox.mark_seen(uids)
            return "seen"
        deleted = mailbox.delete(uids)
        if not deleted:  # no UIDPLUS: an EXPUNGE would also remove what others flagged \\Deleted
            mailbox.mark_seen(uids)
        self._deletes_pending(not deleted)
        return "deleted" if deleted else "seen"

    def _deletes_pending(self, pending: bool) -> None:
        """Shown by `accounts list`: the server cannot delete by UID; written on a change."""
        if pending != self._pending_deletes:
            self._positions.deletes_pending(self.account.id, pending)
            self._pending_deletes = pending

"""ImapSync, Pop3Sync, AccountHealth and IDLE waiting on fakes of the fetcher's own ports."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from fetcher.failures import MessageFailures
from fetcher.health import AccountHealth
from fetcher.idle import wait_for_mail
from fetcher.pop3sync import Pop3Sync
from fetcher.ports import (
    FailureState,
    FetchedMessage,
    FolderState,
    MessageFetchError,
    MessageMeta,
    Outcome,
    Position,
)
from fetcher.settle import Settler
from fetcher.sync import ImapSync
from shared.accounts import Account
from shared.contracts import AccountFailed, Event, MailFetched
from shared.errors import MailboxRejectedError, MailboxUnavailableError, PublishNotConfirmedError
from tests.fakes import FakeBlobStore

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def account(**overrides: Any) -> Account:
    fields: dict[str, Any] = {
        "_id": "acc1",
        "tenant_id": "t1",
        "owner_id": "owner",
        "protocol": "imap",
        "host": "mail.example.com",
        "username": "u",
        "password_enc": "x",
    }
    return Account.model_validate({**fields, **overrides})


def mail(
    uid: int, *, seen: bool = False, size: int = 100, mid: str | None = None
) -> dict[str, Any]:
    return {"uid": uid, "seen": seen, "size": size, "mid": mid or f"<{uid}@x>", "deleted": False}


@dataclass
class FakeImapMailbox:
    """`refused`: UIDs whose FETCH the server answers NO; `dropping`: UIDs whose FETCH loses
    the connection. `fetches`: the UIDs of each body FETCH."""

    messages: list[dict[str, Any]]
    uidvalidity: int = 7
    uidplus: bool = True
    expunged: list[int] = field(default_factory=list)
    refused: set[int] = field(default_factory=set)
    dropping: set[int] = field(default_factory=set)
    fetches: list[list[int]] = field(default_factory=list)

    def select(self, folder: str) -> FolderState:
        return FolderState(self.uidvalidity, max((m["uid"] for m in self.messages), default=0) + 1)

    def search(self, criteria: Sequence[str]) -> list[int]:
        low = int(criteria[1].split(":")[0]) if criteria[0] == "UID" else 1
        unseen = "UNSEEN" in criteria
        return [m["uid"] for m in self.messages if m["uid"] >= low and not (unseen and m["seen"])]

    def headers(self, uids: Sequence[int]) -> list[MessageMeta]:
        return [
            MessageMeta(m["uid"], m["size"], NOW, m["mid"])
            for m in self.messages
            if m["uid"] in uids
        ]

    def bodies(self, metas: Sequence[MessageMeta], *, max_bytes: int) -> list[FetchedMessage]:
        uids = [meta.uid for meta in metas]
        self.fetches.append(uids)
        if self.dropping & set(uids):
            raise MailboxUnavailableError("connection_failed", "the server hung up")
        if self.refused & set(uids):
            raise MessageFetchError("fetch_refused", "NO [SERVERBUG]")
        return list(self.fetch(uids, max_bytes=max_bytes))

    def fetch(self, uids: Sequence[int], *, max_bytes: int) -> Iterator[FetchedMessage]:
        for m in self.messages:
            if m["uid"] in uids:
                big = m["size"] > max_bytes
                raw = b"Message-ID: " + m["mid"].encode() + (b"\r\n" if big else b"\r\n\r\nbody")
                yield FetchedMessage(m["uid"], raw, m["size"], NOW, big, m["mid"])

    def mark_seen(self, uids: Sequence[int]) -> None:
        for m in self.messages:
            m["seen"] = m["seen"] or m["uid"] in uids

    def delete(self, uids: Sequence[int]) -> bool:
        if not self.uidplus:
            return False
        self.expunged.extend(uids)
        self.messages = [m for m in self.messages if m["uid"] not in uids]
        return True


@dataclass
class FakeOutcomes:
    """The outcomes as the binder writes them: loaded unless the mail is oversize or its
    UID/UIDL is in `skip`; none while `binder_down`. `made`: those the fetcher marked done."""

    skip: set[object] = field(default_factory=set)
    binder_down: bool = False
    waiting: dict[str, Outcome] = field(default_factory=dict)
    made: dict[str, Outcome] = field(default_factory=dict)

    def bind(self, event: MailFetched) -> None:
        if self.binder_down or event.email_id in self.waiting or event.email_id in self.made:
            return
        skipped = event.oversize or event.uid in self.skip or event.uidl in self.skip
        self.waiting[event.email_id] = Outcome(
            event.email_id, not skipped, event.folder, event.uidvalidity, event.uid, event.uidl
        )

    def bind_all(self, events: Sequence[Event]) -> None:
        for event in events:
            if isinstance(event, MailFetched):
                self.bind(event)

    def state_of(self, uid: object) -> str:
        """'pending' until the fetcher made the outcome, then 'done'."""
        found = [
            ("pending" if o.email_id in self.waiting else "done")
            for o in [*self.waiting.values(), *self.made.values()]
            if uid in (o.uid, o.uidl)
        ]
        (state,) = found
        return state

    def pending(self, account_id: str, *, limit: int) -> list[Outcome]:
        return list(self.waiting.values())[:limit]

    def done(self, account_id: str, email_ids: Sequence[str]) -> None:
        for email_id in email_ids:
            self.made[email_id] = self.waiting.pop(email_id)


@dataclass
class FakePublisher:
    events: list[Event] = field(default_factory=list)
    fail_after: int | None = None
    outcomes: FakeOutcomes | None = None  # the binder, deciding as soon as it is published

    def publish(self, events: Sequence[tuple[Event, bytes | None]]) -> None:
        for event, _payload in events:
            if self.fail_after is not None and len(self.events) >= self.fail_after:
                raise PublishNotConfirmedError("nacked")
            self.events.append(event)
            if self.outcomes is not None:
                self.outcomes.bind_all([event])


@dataclass
class FakePositions:
    positions: dict[str, Position] = field(default_factory=dict)
    progress_doc: dict[str, Any] = field(default_factory=dict)
    pending: bool | None = None

    def get(self, account_id: str, folder: str) -> Position | None:
        return self.positions.get(folder)

    def save(self, account_id: str, folder: str, position: Position) -> None:
        self.positions[folder] = position

    def begin_progress(self, account_id: str, *, remaining: int, now: datetime) -> int:
        done, total = self.progress_doc.get("done", 0), self.progress_doc.get("total", 0)
        base = done if done < total else 0
        self.progress_doc = {"done": base, "total": base + remaining}
        return int(base)

    def advance(
        self, account_id: str, folder: str, position: Position, *, done: int, now: datetime
    ) -> None:
        self.positions[folder] = position
        self.progress_doc["done"] = done

    def deletes_pending(self, account_id: str, pending: bool) -> None:
        self.pending = pending


@dataclass
class FakeTakenMail:
    prints: dict[str, str] = field(default_factory=dict)

    def known(self, account_id: str, fingerprints: Sequence[str]) -> set[str]:
        return {f for f in fingerprints if f in self.prints}

    def remember(self, account_id: str, entries: Sequence[tuple[str, str]]) -> None:
        self.prints.update(entries)


@dataclass
class FakeFailureStore:
    saved: FailureState = field(default_factory=FailureState)

    def load(self, account_id: str) -> FailureState:
        return FailureState(dict(self.saved.counts), *self._suspect())

    def _suspect(self) -> tuple[int, int]:
        return self.saved.suspect_uidvalidity, self.saved.suspect_until

    def save(self, account_id: str, state: FailureState) -> None:
        self.saved = FailureState(
            dict(state.counts), state.suspect_uidvalidity, state.suspect_until
        )


@dataclass
class FakeFailedMail:
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record_failed(self, document: dict[str, Any]) -> None:
        self.documents.setdefault(document["_id"], document)


@dataclass
class World:
    outcomes: FakeOutcomes = field(default_factory=FakeOutcomes)
    publisher: FakePublisher = field(default_factory=FakePublisher)
    positions: FakePositions = field(default_factory=FakePositions)
    taken: FakeTakenMail = field(default_factory=FakeTakenMail)
    settlers: dict[str, Settler] = field(default_factory=dict)
    failure_store: FakeFailureStore = field(default_factory=FakeFailureStore)
    failed_mail: FakeFailedMail = field(default_factory=FakeFailedMail)

    def failures(self, acc: Account, attempts: int = 3) -> MessageFailures:
        """Read from what is stored, as each pass of the runner does."""
        return MessageFailures(
            acc,
            store=self.failure_store,
            archive=self.failed_mail,
            publisher=self.publisher,
            attempts=attempts,
            clock=lambda: NOW,
        )

    def __post_init__(self) -> None:
        self.publisher.outcomes = self.outcomes

    def settler(self, acc: Account) -> Settler:
        """One per account, as the fetcher's runner keeps one for the account's life."""
        if acc.id not in self.settlers:
            self.settlers[acc.id] = Settler(
                acc, outcomes=self.outcomes, positions=self.positions, clock=lambda: NOW
            )
        self.settlers[acc.id].account = acc
        return self.settlers[acc.id]

    def sync(self, acc: Account, batch: int = 2, budget: int = 1 << 30) -> ImapSync:
        return ImapSync(
            acc,
            publisher=self.publisher,
            positions=self.positions,
            taken=self.taken,
            blobs=FakeBlobStore(),
            settler=self.settler(acc),
            clock=lambda: NOW,
            inline_limit=10_000,
            failures=self.failures(acc),
            batch=batch,
            budget=budget,
        )

    def uids(self) -> list[int | None]:
        return [e.uid for e in self.publisher.events if isinstance(e, MailFetched)]


def seen(box: FakeImapMailbox) -> list[bool]:
    return [m["seen"] for m in box.messages]


def test_unseen_first_load_takes_unread_mail_and_marks_it_read_once_loaded() -> None:
    box = FakeImapMailbox([mail(1, seen=True), mail(2), mail(3)])
    w = World()
    result = w.sync(account()).run(box)
    assert result.fetched == 2 and w.uids() == [2, 3]
    assert seen(box) == [True, True, True]
    assert w.outcomes.state_of(2) == w.outcomes.state_of(3) == "done"
    assert w.positions.positions["INBOX"] == Position(7, 3, 3)
    assert w.positions.progress_doc == {"done": 2, "total": 2}


def test_the_mailbox_is_not_changed_before_the_outcome_is_stored() -> None:
    box = FakeImapMailbox([mail(1), mail(2)])
    w = World(outcomes=FakeOutcomes(binder_down=True))
    w.sync(account(delete_after_import=True)).run(box)
    assert w.uids() == [1, 2] and seen(box) == [False, False] and box.expunged == []
    assert w.positions.positions["INBOX"].last_uid == 2  # not imported twice meanwhile
    w.outcomes.binder_down = False
    w.outcomes.bind_all(w.publisher.events)
    w.sync(account(delete_after_import=True)).run(box)  # the next pass settles them
    assert w.uids() == [1, 2] and box.expunged == [1, 2]
    assert w.outcomes.state_of(1) == "done"


def test_skipped_mail_is_left_unread_and_never_deleted() -> None:
    box = FakeImapMailbox([mail(1), mail(2), mail(3, size=50 * 1024 * 1024)])
    w = World(outcomes=FakeOutcomes(skip={2}))
    w.sync(account(delete_after_import=True), batch=5).run(box)
    assert box.expunged == [1]
    assert [(m["uid"], m["seen"]) for m in box.messages] == [(2, False), (3, False)]
    assert w.outcomes.state_of(2) == w.outcomes.state_of(3) == "done"
    w.sync(account(delete_after_import=True)).run(box)
    assert w.uids() == [1, 2, 3]  # skipped mail is not taken again: the position is past it


def test_outcomes_are_settled_as_they_come_while_the_load_goes_on() -> None:
    box = FakeImapMailbox([mail(u) for u in range(1, 7)])
    w = World(outcomes=FakeOutcomes(binder_down=True))
    acc = account()
    settler = w.settler(acc)
    w.publisher.outcomes = None
    original = w.publisher.publish

    def publish_then_bind_earlier(events: Sequence[tuple[Event, bytes | None]]) -> None:
        w.outcomes.binder_down = False
        w.outcomes.bind_all(w.publisher.events)  # the binder is one batch behind
        w.outcomes.binder_down = True
        original(events)

    w.publisher.publish = publish_then_bind_earlier  # type: ignore[method-assign]
    w.sync(acc, batch=2).run(box)
    assert seen(box) == [True] * 4 + [False] * 2 and settler.waiting
    w.outcomes.binder_down = False
    w.outcomes.bind_all(w.publisher.events)
    assert settler.settle_imap(box, 7) == 2
    assert seen(box) == [True] * 6 and not settler.waiting


def test_a_new_mail_read_elsewhere_after_the_first_load_is_still_loaded() -> None:
    box = FakeImapMailbox([mail(1, seen=True), mail(2)])
    w = World()
    w.sync(account()).run(box)
    box.messages.append(mail(3, seen=True))  # opened in webmail before the fetcher saw it
    w.sync(account()).run(box)
    assert w.uids() == [2, 3]


def test_a_resumed_unseen_first_load_still_leaves_out_mail_read_before_it() -> None:
    box = FakeImapMailbox([mail(1), mail(2, seen=True), mail(3), mail(4, seen=True), mail(5)])
    w = World(publisher=FakePublisher(fail_after=1))
    with pytest.raises(PublishNotConfirmedError):
        w.sync(account(), batch=1).run(box)
    assert w.positions.positions["INBOX"] == Position(7, 1, 5)
    box.messages.append(mail(6, seen=True))  # new mail, after the first load's end
    w.publisher.fail_after = None
    w.sync(account(), batch=1).run(box)
    assert w.uids() == [1, 3, 5, 6]


def test_all_and_new_initial_sync() -> None:
    box = FakeImapMailbox([mail(1, seen=True), mail(2)])
    w = World()
    w.sync(account(initial_sync="all")).run(box)
    assert w.uids() == [1, 2]
    w2 = World()
    w2.sync(account(initial_sync="new")).run(box)
    assert w2.uids() == [] and w2.positions.positions["INBOX"] == Position(7, 2, 2)
    box.messages.append(mail(3))
    w2.sync(account(initial_sync="new")).run(box)
    assert w2.uids() == [3]


def test_position_advances_only_after_a_confirmed_publish() -> None:
    box = FakeImapMailbox([mail(u) for u in range(1, 6)])
    w = World(publisher=FakePublisher(fail_after=2))
    with pytest.raises(PublishNotConfirmedError):
        w.sync(account(), batch=2).run(box)
    assert w.positions.positions["INBOX"] == Position(7, 2, 5)
    assert seen(box) == [True, True, False, False, False]
    w.publisher.fail_after = None
    w.sync(account(), batch=2).run(box)
    assert w.uids() == [1, 2, 3, 4, 5]
    assert w.positions.progress_doc == {"done": 5, "total": 5}  # the load resumed its count


def test_uidvalidity_change_resyncs_without_duplicates() -> None:
    box = FakeImapMailbox([mail(1), mail(2)])
    w = World()
    w.sync(account()).run(box)
    box.uidvalidity, box.messages = 8, [mail(1, mid="<1@x>"), mail(2, mid="<2@x>"), mail(3)]
    result = w.sync(account()).run(box)
    assert result.fetched == 1 and result.duplicates == 2
    assert w.uids() == [1, 2, 3]
    assert w.outcomes.state_of(3) == "done" and box.messages[2]["seen"]
    assert w.positions.positions["INBOX"] == Position(8, 3, 3)


def test_loaded_mail_of_an_earlier_uidvalidity_is_not_flagged() -> None:
    box = FakeImapMailbox([mail(1)])
    w = World(outcomes=FakeOutcomes(binder_down=True))
    w.sync(account()).run(box)
    w.outcomes.binder_down = False
    w.outcomes.bind_all(w.publisher.events)
    box.uidvalidity, box.messages = 8, [mail(1, mid="<other@x>")]  # UID 1 is another mail now
    w.outcomes.binder_down = True
    w.sync(account()).run(box)
    assert not box.messages[0]["seen"]  # the old outcome was made without a flag
    first, again = w.publisher.events
    assert first.email_id in w.outcomes.made and again.email_id not in w.outcomes.made


def test_settling_again_after_a_crash_changes_nothing() -> None:
    box = FakeImapMailbox([mail(1), mail(2)])
    w = World(outcomes=FakeOutcomes(binder_down=True))
    acc = account(delete_after_import=True)
    w.sync(acc).run(box)
    w.outcomes.binder_down = False
    w.outcomes.bind_all(w.publisher.events)
    pending = w.outcomes.pending(acc.id, limit=10)
    box.delete([p.uid for p in pending if p.uid is not None])  # done, then the fetcher died
    w.settlers.clear()
    w.sync(acc).run(box)
    assert box.expunged == [1, 2, 1, 2] and box.messages == []
    assert w.outcomes.state_of(1) == w.outcomes.state_of(2) == "done"


def test_without_uidplus_deletes_are_pending_and_mail_is_marked_read() -> None:
    box = FakeImapMailbox([mail(1)], uidplus=False)
    w = World()
    w.sync(account(delete_after_import=True)).run(box)
    assert w.positions.pending is True
    assert box.messages[0]["seen"] and box.expunged == []
    assert w.outcomes.state_of(1) == "done"


def test_oversize_mail_is_published_as_its_header() -> None:
    box = FakeImapMailbox([mail(1), mail(2, size=50 * 1024 * 1024)])
    w = World()
    w.sync(account()).run(box)
    big = w.publisher.events[1]
    assert (
        isinstance(big, MailFetched)
        and big.oversize
        and "over the limit" in str(big.oversize_detail)
    )


@dataclass
class FakePop3:
    listing_: list[tuple[int, str, int]]
    deleted: list[int] = field(default_factory=list)

    def listing(self) -> list[tuple[int, str, int]]:
        return list(self.listing_)

    def retrieve(self, number: int, uidl: str, size: int, *, max_bytes: int) -> FetchedMessage:
        return FetchedMessage(
            number, b"Subject: x\r\n\r\n", size, None, size > max_bytes, None, uidl
        )

    def delete(self, number: int) -> None:
        self.deleted.append(number)


@dataclass
class FakePop3Positions:
    taken_: set[str] = field(default_factory=set)
    oversize: set[str] = field(default_factory=set)

    def taken(self, account_id: str) -> tuple[set[str], set[str]]:
        return set(self.taken_), set(self.oversize)

    def save_taken(self, account_id: str, taken: set[str], oversize: set[str]) -> None:
        self.taken_, self.oversize = set(taken), set(oversize)


def pop3_pass(acc: Account, w: World, pos: FakePop3Positions, box: FakePop3) -> None:
    """One pass, and the states recorded after its QUIT, as the runner does."""
    settler = w.settler(acc)
    result = Pop3Sync(
        acc,
        publisher=w.publisher,
        positions=pos,
        blobs=FakeBlobStore(),
        settler=settler,
        clock=lambda: NOW,
        inline_limit=9999,
        failures=w.failures(acc),
    ).run(box)
    settler.record(result.settled)


def test_pop3_takes_each_uidl_once_and_prunes_what_the_server_dropped() -> None:
    acc, w, pos = account(protocol="pop3"), World(), FakePop3Positions({"gone"})
    box = FakePop3([(1, "a", 10), (2, "b", 10)])
    pop3_pass(acc, w, pos, box)
    pop3_pass(acc, w, pos, box)
    assert [e.uidl for e in w.publisher.events if isinstance(e, MailFetched)] == ["a", "b"]
    assert pos.taken_ == {"a", "b"} and box.deleted == []
    assert w.outcomes.state_of("a") == "done"


def test_pop3_deletes_loaded_mail_at_the_next_pass_never_skipped_or_oversize() -> None:
    acc = account(protocol="pop3", delete_after_import=True)
    w, pos = World(outcomes=FakeOutcomes(skip={"s"})), FakePop3Positions()
    box = FakePop3([(1, "a", 10), (2, "big", 30 * 1024 * 1024), (3, "s", 10)])
    pop3_pass(acc, w, pos, box)
    assert box.deleted == [] and w.outcomes.state_of("a") == "pending"
    pop3_pass(acc, w, pos, box)
    assert box.deleted == [1] and pos.oversize == {"big"}
    assert w.outcomes.state_of("a") == w.outcomes.state_of("s") == "done"


def test_pop3_nothing_is_deleted_or_remembered_when_the_publish_fails() -> None:
    acc = account(protocol="pop3", delete_after_import=True)
    w, pos = World(publisher=FakePublisher(fail_after=0)), FakePop3Positions()
    box = FakePop3([(1, "a", 10)])
    with pytest.raises(PublishNotConfirmedError):
        pop3_pass(acc, w, pos, box)
    assert box.deleted == [] and pos.taken_ == set()


@dataclass
class FakeStates:
    saved: list[dict[str, Any]] = field(default_factory=list)

    def save_state(self, account: Account, state: dict[str, Any]) -> None:
        self.saved.append(dict(state))


def test_one_account_failed_per_incident_and_a_new_one_after_recovery() -> None:
    states, pub = FakeStates(), FakePublisher()
    health = AccountHealth(account(), states, pub)
    error = MailboxRejectedError("login_rejected", "login rejected by mail.example.com:993")
    health.failed(error, now=NOW)
    health.failed(error, now=NOW.replace(minute=5))
    assert len(pub.events) == 1
    first = pub.events[0]
    assert isinstance(first, AccountFailed) and first.reason == "login_rejected"
    assert health.state["status"] == "error" and health.state["since"] == NOW
    health.succeeded(now=NOW.replace(minute=10))
    assert health.state["status"] == "ok" and "incident_id" not in health.state
    health.failed(error, now=NOW.replace(minute=20))
    assert len(pub.events) == 2
    second = pub.events[1]
    assert isinstance(second, AccountFailed) and second.incident_id != first.incident_id


def test_an_incident_survives_a_restart_without_a_second_notice() -> None:
    states, pub = FakeStates(), FakePublisher()
    error = MailboxRejectedError("login_rejected", "login rejected")
    AccountHealth(account(), states, pub).failed(error, now=NOW)
    restarted = AccountHealth(account(state=states.saved[-1]), states, pub)
    restarted.failed(error, now=NOW.replace(minute=1))
    assert len(pub.events) == 1


@dataclass
class FakeIdle:
    script: list[list[Any]]
    calls: list[str] = field(default_factory=list)

    def idle_start(self) -> None:
        self.calls.append("idle")

    def idle_wait(self, timeout: float) -> list[Any]:
        return self.script.pop(0) if self.script else [(b"OK", b"Still here")]

    def idle_stop(self) -> None:
        self.calls.append("done")

    def noop(self) -> None:
        self.calls.append("noop")


def test_idle_returns_on_new_mail_and_checks_liveness() -> None:
    box = FakeIdle([[(b"OK", b"Still here")], [(3, b"EXISTS")]])
    assert wait_for_mail(box, threading.Event(), renew_after=600) is True
    assert box.calls == ["idle", "done", "noop"]


def test_idle_is_reissued_when_renewal_is_due() -> None:
    ticks = iter(range(0, 10_000, 100))
    box = FakeIdle([])
    changed = wait_for_mail(box, threading.Event(), renew_after=500, clock=lambda: next(ticks))
    assert changed is False and box.calls == ["idle", "done", "noop"]


def test_a_new_session_sweeps_for_outcomes_only_after_a_recent_publish() -> None:
    ticks = [0.0]
    w = World()
    settler = Settler(
        account(), outcomes=w.outcomes, positions=w.positions, clock=lambda: NOW,
        monotonic=lambda: ticks[0],
    )  # fmt: skip
    settler.resume(None)
    assert settler.next_look() is None
    settler.resume(NOW.replace(hour=11))  # an hour ago: its outcomes are settled by a pass
    assert settler.next_look() is None
    settler.resume(NOW)  # published just now
    assert [settler.next_look() for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    ticks[0] = 301.0
    assert settler.next_look() is None
    settler.expect(["e1"])
    assert settler.next_look() == 1.0  # this session's own mail: looked for every second

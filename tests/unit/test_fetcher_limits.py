"""Fetching bounded by bytes, reads bounded by caps and deadlines, and a message that keeps
failing recorded `failed` while the mailbox moves on (fakes of the fetcher's own ports;
the reader on a real socket pair)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import pytest

from fetcher.batching import HEADER_COST, plan_groups
from fetcher.guard import BoundedReader, ReadLimits, ResponseLimitError
from fetcher.pop3sync import Pop3Sync
from fetcher.ports import FetchedMessage, MessageMeta
from shared.accounts import Account
from shared.contracts import MailFetched, MailSkipped, email_id_for_imap, email_id_for_pop3
from shared.errors import MailboxUnavailableError
from tests.fakes import FakeBlobStore
from tests.unit.test_fetcher_sync import (
    NOW,
    FakeImapMailbox,
    FakePop3,
    FakePop3Positions,
    World,
    account,
    mail,
)

MIB = 1024 * 1024


def metas(*sizes: int) -> list[MessageMeta]:
    return [MessageMeta(uid, size, NOW) for uid, size in enumerate(sizes, 1)]


def uids(groups: list[list[MessageMeta]]) -> list[list[int]]:
    return [[m.uid for m in group] for group in groups]


def test_groups_stay_within_the_byte_budget_and_a_larger_message_goes_alone() -> None:
    groups = plan_groups(metas(4, 4, 4, 20, 1, 9), budget=10, max_bytes=100)
    assert uids(groups) == [[1, 2], [3], [4], [5, 6]]


def test_mail_over_the_limit_costs_its_header_and_a_suspect_uid_goes_alone() -> None:
    big = 50 * MIB  # over the limit: only its header is fetched
    groups = plan_groups(
        metas(10, big, 10, 10), budget=HEADER_COST + 20, max_bytes=MIB, alone=lambda m: m.uid == 3
    )
    assert uids(groups) == [[1, 2], [3], [4]]


def test_bodies_are_fetched_in_groups_of_at_most_the_budget() -> None:
    box = FakeImapMailbox([mail(u, size=400) for u in range(1, 8)])
    w = World()
    w.sync(account(initial_sync="all"), batch=500, budget=1000).run(box)
    assert box.fetches == [[1, 2], [3, 4], [5, 6], [7]]
    assert w.uids() == [1, 2, 3, 4, 5, 6, 7]


def failed_docs(w: World) -> list[str]:
    return [d["mailbox"]["uid"] for d in w.failed_mail.documents.values()]


def run_passes(w: World, acc: Account, box: FakeImapMailbox, passes: int) -> list[str]:
    """Passes as the runner makes them (each reads the stored failure counts); the reasons
    of those that failed."""
    errors = []
    for _ in range(passes):
        try:
            w.sync(acc, batch=500, budget=10_000).run(box)
        except MailboxUnavailableError as exc:
            errors.append(exc.reason)
    return errors


def test_a_refused_fetch_is_split_and_the_others_are_published_at_once() -> None:
    box = FakeImapMailbox([mail(u) for u in range(1, 6)], refused={3})
    acc, w = account(initial_sync="all"), World()
    assert run_passes(w, acc, box, 1) == ["fetch_refused"]
    assert w.uids() == [1, 2, 4, 5]  # the rest without the bad one
    assert w.positions.positions["INBOX"].last_uid == 2  # stops before it
    assert [1, 2, 3, 4, 5] in box.fetches and [3] in box.fetches


def test_a_message_failing_every_attempt_is_recorded_failed_and_the_folder_moves_on() -> None:
    box = FakeImapMailbox([mail(u) for u in range(1, 6)], refused={3})
    acc, w = account(initial_sync="all", notify_skipped=True), World()
    assert run_passes(w, acc, box, 4) == ["fetch_refused", "fetch_refused"]
    assert failed_docs(w) == [3]
    (doc,) = w.failed_mail.documents.values()
    assert doc["_id"] == email_id_for_imap(acc.id, "INBOX", 7, 3)
    assert doc["status"] == "failed" and "NO [SERVERBUG]" in doc["failure_reason"]
    skipped = [e for e in w.publisher.events if isinstance(e, MailSkipped)]
    assert [(e.email_id, e.reason) for e in skipped] == [(doc["_id"], "failed")]
    assert w.uids() == [1, 2, 4, 5]  # each once: what was published past it is known
    assert w.positions.positions["INBOX"].last_uid == 5
    assert w.failure_store.saved.counts == {}


def test_a_connection_lost_in_a_fetch_finds_the_message_at_fault_one_by_one() -> None:
    box = FakeImapMailbox([mail(u) for u in range(1, 6)], dropping={4})
    acc, w = account(initial_sync="all"), World()
    errors = run_passes(w, acc, box, 5)
    assert errors == ["connection_failed"] * 4  # the group, then three attempts of UID 4
    assert box.fetches[:4] == [[1, 2, 3, 4, 5], [1], [2], [3]]
    assert failed_docs(w) == [4]
    assert w.uids() == [1, 2, 3, 5]
    assert w.positions.positions["INBOX"].last_uid == 5


def test_the_count_of_a_failing_message_deleted_from_the_server_is_forgotten() -> None:
    box = FakeImapMailbox([mail(u) for u in range(1, 6)], refused={3})
    acc, w = account(initial_sync="all"), World()
    assert run_passes(w, acc, box, 1) == ["fetch_refused"]
    assert w.failure_store.saved.counts == {email_id_for_imap(acc.id, "INBOX", 7, 3): 1}
    box.messages = [m for m in box.messages if m["uid"] != 3]  # deleted by someone else
    assert run_passes(w, acc, box, 1) == []
    assert w.failure_store.saved.counts == {} and failed_docs(w) == []
    assert w.positions.positions["INBOX"].last_uid == 5


@dataclass
class FailingPop3(FakePop3):
    failing: set[str] = field(default_factory=set)

    def retrieve(self, number: int, uidl: str, size: int, *, max_bytes: int) -> FetchedMessage:
        if uidl in self.failing:
            raise MailboxUnavailableError("line_too_long", "a response line over the cap")
        return super().retrieve(number, uidl, size, max_bytes=max_bytes)


def pop3_passes(w: World, acc: Account, pos: FakePop3Positions, box: FakePop3, n: int) -> int:
    failures = 0
    for _ in range(n):
        sync = Pop3Sync(
            acc,
            publisher=w.publisher,
            positions=pos,
            blobs=FakeBlobStore(),
            settler=w.settler(acc),
            clock=lambda: NOW,
            inline_limit=9999,
            failures=w.failures(acc),
            budget=1000,
        )
        try:
            sync.run(box)
        except MailboxUnavailableError:
            failures += 1
    return failures


def test_pop3_a_message_failing_every_attempt_is_taken_as_failed() -> None:
    acc, w, pos = account(protocol="pop3"), World(), FakePop3Positions()
    box = FailingPop3([(1, "a", 10), (2, "b", 10), (3, "c", 10)], failing={"b"})
    assert pop3_passes(w, acc, pos, box, 4) == 3
    fetched = [e.uidl for e in w.publisher.events if isinstance(e, MailFetched)]
    assert fetched == ["a", "c"]
    assert [d["mailbox"]["uidl"] for d in w.failed_mail.documents.values()] == ["b"]
    assert pos.taken_ == {"a", "b", "c"}


def test_pop3_the_count_of_a_failing_message_deleted_from_the_server_is_forgotten() -> None:
    acc, w, pos = account(protocol="pop3"), World(), FakePop3Positions()
    box = FailingPop3([(1, "a", 10), (2, "b", 10), (3, "c", 10)], failing={"b"})
    assert pop3_passes(w, acc, pos, box, 1) == 1
    assert w.failure_store.saved.counts == {email_id_for_pop3(acc.id, "b"): 1}
    box.listing_ = [(1, "a", 10), (2, "c", 10)]  # "b" deleted by someone else
    assert pop3_passes(w, acc, pos, box, 1) == 0
    assert w.failure_store.saved.counts == {} and pos.taken_ == {"a", "c"}


@dataclass
class CountingPublisher:
    calls: list[int] = field(default_factory=list)

    def publish(self, events: list[tuple[object, bytes | None]]) -> None:
        self.calls.append(len(events))


def test_pop3_publishes_what_it_retrieved_each_time_it_reaches_the_budget() -> None:
    acc, w, pos = account(protocol="pop3"), World(), FakePop3Positions()
    box = FakePop3([(n, f"u{n}", 400) for n in range(1, 6)])
    publisher = CountingPublisher()
    Pop3Sync(
        acc,
        publisher=publisher,
        positions=pos,
        blobs=FakeBlobStore(),
        settler=w.settler(acc),
        clock=lambda: NOW,
        inline_limit=9999,
        failures=w.failures(acc),
        budget=1000,
    ).run(box)
    assert publisher.calls == [2, 2, 1]


# -- the bounded reader, on a real socket pair ------------------------------------------


FILES: list[BinaryIO] = []


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    client, server = socket.socketpair()
    yield client, server
    while FILES:
        FILES.pop().close()
    client.close()
    server.close()


def reader(client: socket.socket, **limits: float) -> BoundedReader:
    fields = {"seconds": 2.0, "literal_bytes": 4 * MIB, "command_bytes": 6 * MIB, **limits}
    file = client.makefile("rb")
    FILES.append(file)
    return BoundedReader(ReadLimits(**fields), lambda: file, lambda: client)  # type: ignore[arg-type]


def test_an_announced_literal_over_the_cap_is_refused_before_reading(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = pair
    server.sendall(b"x" * 1000)
    r = reader(client)
    with pytest.raises(ResponseLimitError) as caught:
        r.read(10 * 1024**3)
    assert caught.value.reason == "literal_too_large" and r.broken and r.read_bytes == 0


def test_a_line_without_end_is_cut_at_the_cap(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    sender = threading.Thread(target=lambda: _send_quietly(server, b"y" * 8 * MIB), daemon=True)
    sender.start()
    r = reader(client, literal_bytes=MIB)
    with pytest.raises(ResponseLimitError) as caught:
        r.readline()
    assert caught.value.reason == "line_too_long" and r.read_bytes <= 2 * MIB


def test_one_answer_is_capped_whatever_its_lines(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    sender = threading.Thread(target=lambda: _send_quietly(server, b"z\r\n" * MIB), daemon=True)
    sender.start()
    r = reader(client, command_bytes=MIB)
    with pytest.raises(ResponseLimitError) as caught:
        _read_lines_forever(r)
    assert caught.value.reason == "response_too_large" and r.read_bytes <= MIB + 3
    r.command()
    assert r.read_bytes == 0  # the next command starts counting again


def test_a_trickled_literal_ends_at_its_deadline(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            _send_quietly(server, b"t")
            time.sleep(0.05)

    threading.Thread(target=trickle, daemon=True).start()
    r = reader(client, seconds=0.5, min_rate=1_000_000)
    try:
        with pytest.raises(ResponseLimitError) as caught:
            r.read(100_000)  # each byte comes well within the timeout: only the deadline ends it
    finally:
        stop.set()
    assert caught.value.reason == "too_slow"


def test_a_literal_is_held_once_in_memory(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    size = 8 * MIB
    sender = threading.Thread(target=lambda: _send_quietly(server, b"m" * size), daemon=True)
    sender.start()
    r = reader(client, literal_bytes=16 * MIB, command_bytes=16 * MIB)
    tracemalloc.start()
    try:
        data = r.read(size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    sender.join()
    assert len(data) == size and data == b"m" * size
    assert peak < size * 1.5  # not a second whole copy


def _read_lines_forever(r: BoundedReader) -> None:
    while True:
        r.readline()


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the reader gave up and closed
        sock.sendall(data)


@dataclass
class LyingPop3(FakePop3):
    """LIST says 10 bytes; each RETR brings 600."""

    def retrieve(self, number: int, uidl: str, size: int, *, max_bytes: int) -> FetchedMessage:
        return FetchedMessage(number, b"x" * 600, size, None, False, None, uidl)


def test_pop3_counts_what_a_retr_brought_not_what_list_said() -> None:
    acc, w, pos = account(protocol="pop3"), World(), FakePop3Positions()
    box = LyingPop3([(n, f"u{n}", 10) for n in range(1, 5)])
    publisher = CountingPublisher()
    Pop3Sync(
        acc,
        publisher=publisher,
        positions=pos,
        blobs=FakeBlobStore(),
        settler=w.settler(acc),
        clock=lambda: NOW,
        inline_limit=9999,
        failures=w.failures(acc),
        budget=1000,
    ).run(box)
    # A group holds at most the budget and the one message that went over it (by LIST, all
    # four would have been one group).
    assert publisher.calls == [2, 2]

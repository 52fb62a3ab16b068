"""The fetcher against a hostile mail server (tests/hostile_server.py): the real supervisor,
runners and store, mail published to the real RabbitMQ, another account on Dovecot.

Each case: the fetcher's memory stays bounded (tracemalloc's peak over the whole process,
server included), the bad message ends `failed` with its reason and the mailbox goes on
past it, and an account on Dovecot still gets its mail picked up.
"""

from __future__ import annotations

import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from fetcher.settings import FetcherSettings
from fetcher.supervisor import Supervisor
from shared.contracts import MailFetched, MailSkipped
from shared.crypto import SecretBox
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from tests.conftest import Mailbox, make_mail
from tests.hostile_server import HostileServer
from tests.integration.test_fetcher_imap import add_account, binder_queue, drain, now
from tests.processes import wait_until

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
MAX_MESSAGE = MIB  # the hostile accounts' limit: caps of 2 MiB a literal, 3 MiB an answer
MEMORY_BOUND = 32 * 1024 * 1024  # against 10 GB, 50 MB and 100 MiB offered by the server


def hostile_settings(settings: Settings, **overrides: Any) -> FetcherSettings:
    return FetcherSettings.model_validate(
        {
            **settings.model_dump(),
            "fetch_backoff_base_seconds": 0.05,
            "fetch_backoff_max_seconds": 0.2,
            "lease_seconds": 3.0,
            "mailbox_timeout_seconds": 1.0,
            "fetch_budget_bytes": 256 * 1024,
            "fetch_attempts": 3,
            **overrides,
        }
    )


def hostile_account(
    store: Store, settings: Settings, protocol: str, port: int, **overrides: Any
) -> str:
    assert settings.secret_key is not None
    box = SecretBox(settings.secret_key.get_secret_value())
    doc: dict[str, Any] = {
        "_id": uuid.uuid4().hex[:16],
        "tenant_id": "t-fetch",
        "owner_id": "owner-1",
        "protocol": protocol,
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "username": "hostile",
        "password_enc": box.encrypt("secret"),
        "initial_sync": "all",
        "poll_interval": 1,
        "notify_skipped": True,
        "max_message_bytes": MAX_MESSAGE,
        "enabled": True,
        "state": {"status": "new"},
        "sync": {},
        **overrides,
    }
    store.accounts.insert_one(doc)
    return str(doc["_id"])


@contextmanager
def fetcher(settings: FetcherSettings, store: Store) -> Iterator[dict[str, int]]:
    """A fetcher replica in this process; yields its memory figures (filled in at the end)."""
    figures: dict[str, int] = {}
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    stop = threading.Event()
    supervisor = Supervisor(settings, store, stop, clock=now)
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    try:
        yield figures
    finally:
        stop.set()
        thread.join(30)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        figures["peak_growth"] = peak - start


def account_doc(store: Store, account_id: str) -> dict[str, Any]:
    return store.accounts.find_one({"tenant_id": "t-fetch", "_id": account_id}) or {}


def failed_mail(store: Store, account_id: str) -> list[dict[str, Any]]:
    query = {"tenant_id": "t-fetch", "account_id": account_id, "status": "failed"}
    return list(store.emails.find(query))


class Published:
    """What the fetchers published so far, taken from the queues as it comes."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.fetched: list[MailFetched] = []
        self.skipped: list[MailSkipped] = []

    def poll(self) -> Published:
        for event in drain(self._broker, binder_queue(self._broker)):
            self.fetched.append(event)
        for event in drain(self._broker, self._broker.topology.work_queue("notifier")):
            if isinstance(event, MailSkipped):
                self.skipped.append(event)
        return self

    def of(self, account_id: str) -> list[MailFetched]:
        return [e for e in self.fetched if e.account_id == account_id]


IMAP_CASES = {
    "huge_literal": "literal_too_large",
    "lie_size": "literal_too_large",
    "slowloris": "too_slow",
    "drop": "connection_failed",
    "long_line": "line_too_long",
    "silent": "timeout",
    "refuse": "fetch_refused",
}


@pytest.mark.parametrize("behaviour", sorted(IMAP_CASES))
def test_a_hostile_imap_message_fails_alone_and_the_mailbox_moves_on(
    behaviour: str, mailbox: Mailbox, store: Store, broker: Broker, settings: Settings
) -> None:
    server = HostileServer(behaviour)
    port = server.start("imap")
    mailbox.append(make_mail("friend@x.org", "for the account on Dovecot"))
    healthy = add_account(store, settings, mailbox)
    published = Published(broker)
    try:
        with fetcher(hostile_settings(settings), store) as memory:
            hostile = hostile_account(store, settings, "imap", port)
            wait_until(
                lambda: len(failed_mail(store, hostile)) == 1,
                timeout=60,
                what="the bad message recorded failed",
            )
            wait_until(
                lambda: len(published.poll().of(hostile)) == 2 and published.of(healthy.id),
                timeout=30,
                what="the other messages and the Dovecot account's mail published",
            )
            wait_until(
                lambda: account_doc(store, hostile)["sync"]["INBOX"]["last_uid"] == 3,
                timeout=30,
                what="the position past the bad message",
            )
    finally:
        server.stop()
    (failed,) = failed_mail(store, hostile)
    assert failed["mailbox"]["uid"] == 2 and IMAP_CASES[behaviour] in failed["failure_reason"]
    assert sorted(e.uid or 0 for e in published.of(hostile)) == [1, 3]
    assert [(s.email_id, s.reason) for s in published.poll().skipped] == [(failed["_id"], "failed")]
    assert account_doc(store, hostile)["fetch_failures"]["counts"] == {}
    assert memory["peak_growth"] < MEMORY_BOUND, memory


POP3_CASES = {
    "lie_size": "line_too_long",
    "long_line": "line_too_long",
    "silent": "timeout",
    "drop": "protocol_error",
}


@pytest.mark.parametrize("behaviour", sorted(POP3_CASES))
def test_a_hostile_pop3_message_fails_alone_and_the_mailbox_moves_on(
    behaviour: str, store: Store, broker: Broker, settings: Settings
) -> None:
    server = HostileServer(behaviour)
    port = server.start("pop3")
    published = Published(broker)
    try:
        with fetcher(hostile_settings(settings), store) as memory:
            hostile = hostile_account(store, settings, "pop3", port)
            wait_until(
                lambda: len(failed_mail(store, hostile)) == 1,
                timeout=60,
                what="the bad message recorded failed",
            )
            wait_until(
                lambda: len(published.poll().of(hostile)) == 2,
                timeout=30,
                what="the other messages published",
            )
    finally:
        server.stop()
    (failed,) = failed_mail(store, hostile)
    assert failed["mailbox"]["uidl"] == "uidl-2"
    assert POP3_CASES[behaviour] in failed["failure_reason"]
    assert sorted(e.uidl or "" for e in published.of(hostile)) == ["uidl-1", "uidl-3"]
    assert "uidl-2" in account_doc(store, hostile)["pop3"]["taken"]
    assert memory["peak_growth"] < MEMORY_BOUND, memory


def test_pop3_lines_longer_than_poplib_allows_are_read(
    store: Store, broker: Broker, settings: Settings
) -> None:
    server = HostileServer("pop_long_lines")
    port = server.start("pop3")
    published = Published(broker)
    try:
        with fetcher(hostile_settings(settings), store):
            hostile = hostile_account(store, settings, "pop3", port)
            wait_until(
                lambda: len(published.poll().of(hostile)) == 3,
                timeout=30,
                what="every message published, the one with 100 KB lines too",
            )
    finally:
        server.stop()
    assert failed_mail(store, hostile) == []
    assert account_doc(store, hostile)["state"]["status"] == "ok"


def test_a_message_larger_than_the_budget_is_fetched_alone_and_held_once(
    store: Store, broker: Broker, settings: Settings
) -> None:
    server = HostileServer("big")  # UID 2 is 20 MiB, the budget 256 KiB
    port = server.start("imap")
    published = Published(broker)
    try:
        with fetcher(hostile_settings(settings), store) as memory:
            hostile = hostile_account(store, settings, "imap", port, max_message_bytes=25 * MIB)
            wait_until(lambda: len(published.poll().of(hostile)) == 3, 60, "the three messages")
    finally:
        server.stop()
    assert server.body_fetches == [[1], [2], [3]]
    big = next(e for e in published.of(hostile) if e.uid == 2)
    assert big.raw_ref is not None and not big.oversize  # stored once in GridFS, by reference
    stored = store.gridfs().find_one({"_id": big.raw_ref, "tenant_id": "t-fetch"})
    assert stored is not None and stored.length == len(server.messages[2])
    # One copy read from the server; storing it, pymongo's GridFS buffers the chunks and
    # encodes them in one insert (two more copies, up to 48 MB): the peak is that one mail's.
    assert memory["peak_growth"] < 3.5 * len(server.messages[2]), memory


def test_a_server_that_never_answers_delays_no_other_account(
    mailbox: Mailbox, store: Store, broker: Broker, settings: Settings
) -> None:
    server = HostileServer("silent")
    port = server.start("imap")
    mailbox.append(make_mail("friend@x.org", "picked up while the other server is silent"))
    published = Published(broker)
    try:
        with fetcher(hostile_settings(settings, mailbox_timeout_seconds=120.0), store):
            hostile = hostile_account(store, settings, "imap", port)
            wait_until(lambda: server.stalls == 1, timeout=30, what="the server gone silent")
            healthy = add_account(store, settings, mailbox)
            wait_until(
                lambda: published.poll().of(healthy.id),
                timeout=60,
                what="the Dovecot account's mail",
            )
            # Still the first silent FETCH: the other account did not wait for it.
            assert server.stalls == 1 and server.closed_by_client == 0
            assert published.of(hostile) == []
            server.stop()  # the fetcher's stop does not wait for the 120 s timeout
    finally:
        server.stop()


def test_a_changed_uidvalidity_reads_the_folder_again_without_duplicates(
    store: Store, broker: Broker, settings: Settings
) -> None:
    server = HostileServer("none", bad_uid=0)
    port = server.start("imap")
    published = Published(broker)
    try:
        with fetcher(hostile_settings(settings), store):
            hostile = hostile_account(store, settings, "imap", port)
            wait_until(lambda: len(published.poll().of(hostile)) == 3, 30, "the first pass")
            server.uidvalidity = 200
            logins = server.logins
            wait_until(
                lambda: account_doc(store, hostile)["sync"]["INBOX"]["uidvalidity"] == 200,
                timeout=30,
                what="the folder read again",
            )
            wait_until(lambda: server.logins >= logins + 2, 30, "a pass after the resync")
    finally:
        server.stop()
    assert len(published.poll().of(hostile)) == 3
    assert account_doc(store, hostile)["state"]["status"] == "ok"

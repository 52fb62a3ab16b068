"""The fetcher on the real Dovecot, RabbitMQ and store: TLS, read flags and deletes that follow
the binder's outcomes, resync, IDLE."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from typing import Any

import pytest
from imapclient.response_parser import parse_fetch_response

from binder.__main__ import BinderHandler
from binder.unit_of_work import MongoBindingBatch
from fetcher.adapters import (
    BrokerEventPublisher,
    MongoFailedMail,
    MongoFetchFailures,
    MongoMailOutcomes,
    MongoPositionStore,
    MongoTakenMail,
)
from fetcher.failures import MessageFailures
from fetcher.fetchparse import parse_fetch
from fetcher.imap import MESSAGE_ID_ITEM, ImapClientMailbox
from fetcher.settings import FetcherSettings
from fetcher.settle import Settler
from fetcher.supervisor import Supervisor
from fetcher.sync import ImapSync, SyncResult
from shared.accounts import Account
from shared.blobs import GridFsBlobStore
from shared.contracts import AccountFailed, Event, MailBound, MailFetched, MailSkipped
from shared.crypto import SecretBox
from shared.mailboxref import OUTCOMES
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from shared.wire import decode_event
from tests.conftest import Mailbox, make_mail
from tests.processes import wait_until

pytestmark = pytest.mark.integration


def now() -> datetime:
    return datetime.now(UTC)


def add_account(store: Store, settings: Settings, mailbox: Mailbox, **overrides: Any) -> Account:
    """An account document as `accounts add` writes it (password encrypted)."""
    s = mailbox.server
    assert settings.secret_key is not None
    box = SecretBox(settings.secret_key.get_secret_value())
    password = overrides.pop("password", s.password)
    doc: dict[str, Any] = {
        "_id": uuid.uuid4().hex[:16],
        "tenant_id": "t-fetch",
        "owner_id": "owner-1",
        "protocol": "imap",
        "host": s.host,
        "port": s.imaps_port,
        "security": "ssl",
        "username": mailbox.user,
        "ca_file": s.ca_file,
        "password_enc": box.encrypt(password),
        "enabled": True,
        "state": {"status": "new"},
        "sync": {},
        **overrides,
    }
    store.accounts.insert_one(doc)
    return Account.model_validate(doc)


def drain(broker: Broker, queue: str) -> list[Any]:
    """Every event waiting in `queue` (taken and acked)."""
    events = []
    while (got := broker.get(queue)) is not None:
        message, tag = got
        events.append(decode_event(message)[0])
        broker.ack(tag)
    return events


def settler_for(account: Account, store: Store) -> Settler:
    positions = MongoPositionStore(store, account.tenant_id)
    outcomes = MongoMailOutcomes(store, account.tenant_id)
    return Settler(account, outcomes=outcomes, positions=positions, clock=now)


def failures_for(account: Account, store: Store, broker: Broker) -> MessageFailures:
    """The account's failed fetch attempts as the runner reads them for a pass."""
    return MessageFailures(
        account,
        store=MongoFetchFailures(store, account.tenant_id),
        archive=MongoFailedMail(store),
        publisher=BrokerEventPublisher(broker),
        attempts=3,
        clock=now,
    )


def imap_sync(account: Account, store: Store, broker: Broker, settings: Settings) -> ImapSync:
    return ImapSync(
        account,
        publisher=BrokerEventPublisher(broker),
        positions=MongoPositionStore(store, account.tenant_id),
        taken=MongoTakenMail(store, account.tenant_id),
        blobs=GridFsBlobStore(store),
        settler=settler_for(account, store),
        clock=now,
        inline_limit=settings.inline_body_limit,
        failures=failures_for(account, store, broker),
    )


def take_published(broker: Broker) -> list[tuple[Event, bytes | None]]:
    """Every event (and raw mail) waiting in the binder's queue, taken and acked."""
    taken = []
    queue = binder_queue(broker)
    while (got := broker.get(queue)) is not None:
        message, tag = got
        taken.append(decode_event(message))
        broker.ack(tag)
    return taken


def bind(store: Store, batch: list[tuple[Event, bytes | None]]) -> list[Event]:
    """The binder's own handler, run here on what the fetcher published: the outcomes are
    stored as the binder stage stores them (the events it would publish are returned)."""
    unit_of_work = MongoBindingBatch(store)
    handler = BinderHandler(unit_of_work)
    unit_of_work.begin(batch)
    out = [e for event, payload in batch for e in handler(event, payload)]
    unit_of_work.commit()
    return out


def outcomes_left(store: Store, account: Account) -> int:
    """The account's mailbox outcomes not yet made by the fetcher."""
    query = {"tenant_id": account.tenant_id, "account_id": account.id}
    return store[OUTCOMES].count_documents(query)


def bind_published(broker: Broker, store: Store) -> list[Event]:
    return bind(store, take_published(broker))


def run_once(account: Account, store: Store, broker: Broker, settings: Settings) -> SyncResult:
    with ImapClientMailbox(account, mailbox_password(settings, account)) as box:
        return imap_sync(account, store, broker, settings).run(box)


def mailbox_password(settings: Settings, account: Account) -> str:
    assert settings.secret_key is not None
    return SecretBox(settings.secret_key.get_secret_value()).decrypt(account.password_enc)


def binder_queue(broker: Broker) -> str:
    return broker.topology.work_queue("binder")


def test_imap_over_tls_publishes_unread_mail_and_marks_it_read_once_loaded(
    mailbox: Mailbox, store: Store, broker: Broker, settings: Settings
) -> None:
    mailbox.append(make_mail("a@x.org", "already read"), flags="\\Seen")
    mailbox.append(make_mail("b@x.org", "one"))
    mailbox.append(make_mail("c@x.org", "two"))
    account = add_account(store, settings, mailbox, create_customer=True)

    assert run_once(account, store, broker, settings).fetched == 2
    assert ["\\Seen" in f for f in mailbox.flags()] == [True, False, False]  # no outcome yet
    events = bind_published(broker, store)
    assert len(events) == 2 and all(isinstance(e, MailBound) for e in events)
    assert run_once(account, store, broker, settings).fetched == 0
    assert all("\\Seen" in f for f in mailbox.flags())
    docs = store.emails.find({"tenant_id": "t-fetch", "account_id": account.id})
    assert sorted(d["mailbox"]["uid"] for d in docs) == [2, 3]
    assert outcomes_left(store, account) == 0  # made, and removed
    doc = store.accounts.find_one({"_id": account.id})
    assert doc is not None and doc["sync"]["INBOX"]["last_uid"] == 3
    assert doc["progress"]["done"] == doc["progress"]["total"] == 2


def test_starttls_and_delete_after_import_expunge_loaded_mail(
    mailbox: Mailbox, store: Store, broker: Broker, settings: Settings
) -> None:
    for i in range(3):
        mailbox.append(make_mail("a@x.org", f"mail {i}"))
    account = add_account(
        store,
        settings,
        mailbox,
        port=mailbox.server.imap_port,
        security="starttls",
        delete_after_import=True,
        create_customer=True,
    )
    assert run_once(account, store, broker, settings).fetched == 3
    assert mailbox.count() == 3  # nothing is deleted before the letter is stored
    assert len(bind_published(broker, store)) == 3
    run_once(account, store, broker, settings)
    assert mailbox.count() == 0
    doc = store.accounts.find_one({"_id": account.id})
    assert doc is not None and not doc.get("deletes_pending")


def test_skipped_mail_is_left_unread_and_not_deleted(
    mailbox: Mailbox, store: Store, broker: Broker, settings: Settings
) -> None:
    customer = {"_id": uuid.uuid4().hex, "tenant_id": "t-fetch", "emails": ["known@x.org"]}
    store.customers.insert_one(customer)
    mailbox.append(make_mail("known@x.org", "from a customer"))
    mailbox.append(make_mail("stranger@x.org", "from nobody we know"))
    account = add_account(store, settings, mailbox, delete_after_import=True)
    assert run_once(account, store, broker, settings).fetched == 2
    bound, skipped = bind_published(broker, store)
    assert isinstance(bound, MailBound) and isinstance(skipped, MailSkipped)
    assert run_once(account, store, broker, settings).fetched == 0
    assert (
        mailbox.count() == 1 and "\\Seen" not in mailbox.flags()[0]
    )  # the stranger's mail, unread
    assert run_once(account, store, broker, settings).fetched == 0  # and not taken again


def test_mail_read_elsewhere_after_the_first_load_is_still_loaded(
    mailbox: Mailbox, store: Store, broker: Broker, settings: Settings
) -> None:
    mailbox.append(make_mail("a@x.org", "read before the first load"), flags="\\Seen")
    account = add_account(store, settings, mailbox)
    assert run_once(account, store, broker, settings).fetched == 0
    mailbox.append(make_mail("b@x.org", "opened in webmail first"), flags="\\Seen")
    assert run_once(account, store, broker, settings).fetched == 1


def test_oversize_mail_travels_as_its_header_is_left_and_not_fetched_again(
    mailbox: Mailbox, store: Store, broker: Broker, settings: Settings
) -> None:
    mailbox.append(make_mail("a@x.org", "huge", body="x" * 8000))
    account = add_account(store, settings, mailbox, max_message_bytes=2048, create_customer=True)
    run_once(account, store, broker, settings)
    [event] = drain(broker, binder_queue(broker))
    assert isinstance(event, MailFetched) and event.oversize and event.size > 8000
    assert run_once(account, store, broker, settings).fetched == 0
    assert "\\Seen" not in mailbox.flags()[0]


def recreate_folder(mailbox: Mailbox, folder: str) -> None:
    client = mailbox.connect()
    try:
        client.delete(folder)
        client.create(folder)
    finally:
        client.logout()


def test_uidvalidity_change_resyncs_without_duplicates(
    mailbox: Mailbox, store: Store, broker: Broker, settings: Settings
) -> None:
    folder = "Orders"
    client = mailbox.connect()
    client.create(folder)
    client.logout()
    mails = [make_mail("a@x.org", f"order {i}") for i in range(3)]
    for raw in mails:
        mailbox.append(raw, folder=folder)
    account = add_account(store, settings, mailbox, folder=folder, create_customer=True)
    assert run_once(account, store, broker, settings).fetched == 3
    bind_published(broker, store)

    recreate_folder(mailbox, folder)
    for raw in [*mails, make_mail("b@x.org", "a new one")]:
        mailbox.append(raw, folder=folder)
    result = run_once(account, store, broker, settings)

    assert (result.fetched, result.duplicates) == (1, 3)
    assert len(bind_published(broker, store)) == 1
    run_once(account, store, broker, settings)
    assert outcomes_left(store, account) == 0
    # The old UIDs name nothing now: only the mail loaded since the change is marked read.
    assert ["\\Seen" in f for f in mailbox.flags(folder)] == [False, False, False, True]


@pytest.fixture
def fetcher_settings(settings: Settings) -> FetcherSettings:
    return FetcherSettings.model_validate(
        {
            **settings.model_dump(),
            "fetch_backoff_base_seconds": 0.1,
            "fetch_backoff_max_seconds": 0.5,
            "lease_seconds": 3.0,
        }
    )


@pytest.fixture
def supervisor(fetcher_settings: FetcherSettings, store: Store) -> Iterator[Supervisor]:
    stop = threading.Event()
    sup = Supervisor(fetcher_settings, store, stop, clock=now)
    thread = threading.Thread(target=sup.run, daemon=True)
    thread.start()
    yield sup
    stop.set()
    thread.join(30)


def test_idle_delivers_new_mail_long_before_the_poll_interval(
    mailbox: Mailbox, store: Store, broker: Broker, settings: Settings, supervisor: Supervisor
) -> None:
    account = add_account(store, settings, mailbox, poll_interval=60, create_customer=True)
    wait_until(
        lambda: (
            (store.accounts.find_one({"_id": account.id}) or {}).get("state", {}).get("status")
            == "ok"
        ),
        timeout=15,
        what="the first pass",
    )
    time.sleep(0.5)  # let the runner enter IDLE (the mail must not be found by the first pass)
    mailbox.append(make_mail("a@x.org", "arrives during IDLE"))
    queue = binder_queue(broker)
    wait_until(lambda: broker.queue_counts(queue)[0] == 1, timeout=10, what="the IDLE push")
    assert "\\Seen" not in mailbox.flags()[0]
    assert len(bind_published(broker, store)) == 1
    wait_until(lambda: "\\Seen" in mailbox.flags()[0], timeout=15, what="marked read once loaded")


def test_wrong_password_is_an_error_with_one_account_failed(
    mailbox: Mailbox, store: Store, broker: Broker, settings: Settings, supervisor: Supervisor
) -> None:
    account = add_account(store, settings, mailbox, password="wrong-password")
    retries: set[object] = set()

    def failed_several_times() -> bool:
        state = (store.accounts.find_one({"_id": account.id}) or {}).get("state", {})
        if state.get("status") == "error":
            retries.add(state.get("updated_at"))  # each retry of the incident updates it
        return len(retries) >= 4

    wait_until(failed_several_times, timeout=30, what="the account in error")
    state = (store.accounts.find_one({"_id": account.id}) or {})["state"]
    assert state["reason"] == "login_rejected" and state["since"] is not None
    failed = drain(broker, broker.topology.work_queue("notifier"))
    assert len(failed) == 1
    assert isinstance(failed[0], AccountFailed) and failed[0].owner_id == "owner-1"
    assert "wrong-password" not in failed[0].message


def test_other_accounts_keep_fetching_while_one_fails(
    mailbox: Mailbox, store: Store, broker: Broker, settings: Settings, supervisor: Supervisor
) -> None:
    add_account(store, settings, mailbox, password="wrong-password")
    other = Mailbox(mailbox.server, f"u{uuid.uuid4().hex[:12]}")
    other.append(make_mail("a@x.org", "for the healthy account"))
    add_account(store, settings, other)
    queue = binder_queue(broker)
    wait_until(lambda: broker.queue_counts(queue)[0] == 1, timeout=15, what="the healthy mail")


def test_disabling_an_account_releases_its_lease(
    mailbox: Mailbox, store: Store, settings: Settings, supervisor: Supervisor
) -> None:
    account = add_account(store, settings, mailbox)
    wait_until(lambda: account.id in supervisor.runners, timeout=10, what="the lease")
    store.accounts.update_one({"_id": account.id}, {"$set": {"enabled": False}})
    wait_until(lambda: account.id not in supervisor.runners, timeout=10, what="the stop")


def test_a_changed_password_restarts_the_account_with_it(
    mailbox: Mailbox, store: Store, broker: Broker, settings: Settings, supervisor: Supervisor
) -> None:
    """The runner of an account whose config or secret changed is stopped, and a later lease
    round starts one with the new config (the lease stays with the replica meanwhile)."""
    mailbox.append(make_mail("a@x.org", "waits for the right password"))
    account = add_account(store, settings, mailbox, password="wrong-password")
    wait_until(lambda: account.id in supervisor.runners, timeout=10, what="the lease")
    first = supervisor.runners[account.id].runner
    assert settings.secret_key is not None
    right = SecretBox(settings.secret_key.get_secret_value()).encrypt(mailbox.server.password)
    store.accounts.update_one({"_id": account.id}, {"$set": {"password_enc": right}})
    queue = binder_queue(broker)
    wait_until(lambda: broker.queue_counts(queue)[0] == 1, timeout=20, what="the mail")
    assert not first.alive()
    assert supervisor.runners[account.id].runner is not first


@pytest.mark.parametrize(
    "items", [f"RFC822.SIZE INTERNALDATE {MESSAGE_ID_ITEM}", "BODY.PEEK[]", "BODY.PEEK[HEADER]"]
)
def test_dovecot_answers_the_fetcher_in_the_shapes_its_reader_knows(
    mailbox: Mailbox, store: Store, settings: Settings, items: str
) -> None:
    """What the fetcher asks for is read by parse_fetch itself (not handed back to
    imapclient), and reads as imapclient reads it."""
    mailbox.append(make_mail("a@x.org", "one"))
    mailbox.append(make_mail("b@x.org", "two", body="ü" * 3000))
    mailbox.append(b"From: c@x.org\r\nSubject: no id\r\n\r\nbody\r\n")
    account = add_account(store, settings, mailbox)
    with ImapClientMailbox(account, mailbox_password(settings, account)) as box:
        assert box.client is not None
        box.client.select_folder("INBOX", readonly=True)
        typ, data = box.client._imap.uid("FETCH", "1:*", f"({items})")
    assert typ == "OK"
    ours = parse_fetch(data)
    assert ours is not None and sorted(ours) == [1, 2, 3]
    assert ours == dict(parse_fetch_response(data, False, True))


def test_fetched_messages_carry_size_date_and_message_id(
    mailbox: Mailbox, store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also where local time is not UTC: the arrival time keeps the zone the server gave."""
    with monkeypatch.context() as local:
        local.setenv("TZ", "Asia/Tokyo")
        time.tzset()
        try:
            fetch_two_and_check(mailbox, store, settings)
        finally:
            local.undo()
            time.tzset()


def fetch_two_and_check(mailbox: Mailbox, store: Store, settings: Settings) -> None:
    raw = make_mail("a@x.org", "one")
    message_id = message_from_bytes(raw)["Message-ID"]
    mailbox.append(raw)
    mailbox.append(b"From: c@x.org\r\nSubject: no id\r\n\r\nbody\r\n")
    account = add_account(store, settings, mailbox)
    with ImapClientMailbox(account, mailbox_password(settings, account)) as box:
        box.select("INBOX")
        first, second = box.fetch([1, 2], max_bytes=10_000)
    assert first.raw.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
    assert first.size == len(first.raw) and first.message_id == message_id
    assert second.message_id is None
    assert first.internal_date is not None and first.internal_date.tzinfo is not None
    assert abs(first.internal_date - now()).total_seconds() < 300

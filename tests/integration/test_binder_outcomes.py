"""The binder on the real RabbitMQ and store: the tenant's own mailboxes read from `accounts`,
and every mail's outcome visible, a dead-lettered one recorded `failed` until a replay binds it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from binder.__main__ import build_dead_letters, build_handler
from binder.adapters import MongoEmailArchive, customer_id_for
from ops.deadletters import DeadLetter
from shared.contracts import AccountOptions, MailFetched, MailSkipped, email_id_for_imap
from shared.errors import TransientError
from shared.mailboxref import OUTCOMES
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from shared.topology import Topology
from shared.wire import H_ERROR, encode_event
from shared.worker import RetryPolicy, StageWorker
from tests.conftest import make_mail
from tests.processes import wait_until

pytestmark = pytest.mark.integration

TENANT, ACCOUNT = "t-outcomes", "acc-orders"
NOW = datetime(2026, 11, 27, tzinfo=UTC)
Start = Callable[[], None]


def fetched(uid: int, raw: bytes, **options: Any) -> tuple[MailFetched, bytes]:
    """A fetched mail of ACCOUNT; its options as the event carries them (not trusted)."""
    event = MailFetched.for_mail(
        email_id=email_id_for_imap(ACCOUNT, "INBOX", 1, uid),
        now=NOW,
        tenant_id=TENANT,
        account_id=ACCOUNT,
        options=AccountOptions(owner_id="someone-else", **options),
        protocol="imap",
        folder="INBOX",
        uidvalidity=1,
        uid=uid,
        size=len(raw),
    )
    return event, raw


def add_account(store: Store, account_id: str, username: str, tenant: str = TENANT) -> None:
    store.accounts.insert_one(
        {
            "_id": account_id,
            "tenant_id": tenant,
            "owner_id": "u-owner",
            "protocol": "imap",
            "host": "imap.example.com",
            "username": username,
            "shop_id": "shop-1",
            "create_customer": True,
            "notify_skipped": True,
        }
    )


@pytest.fixture
def binder(settings: Settings) -> Iterator[Start]:
    """A binder worker as `python -m binder` wires it (dead letters recorded), in a thread."""
    started: list[tuple[StageWorker, threading.Thread, Store]] = []

    def start() -> None:
        store = Store(settings.mongo_url.get_secret_value(), settings.mongo_database)
        broker = Broker(
            settings.amqp_url.get_secret_value(),
            Topology(settings.namespace, settings.delivery_limit),
            prefetch=20,
        )
        handler = build_handler(settings, store)
        worker = StageWorker(
            "binder",
            broker,
            handler.handle,
            policy=RetryPolicy(2, 0.2, 1.0),
            unit_of_work=handler.unit_of_work,
            dead_letters=build_dead_letters(settings, store),
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((worker, thread, store))
        wait_until(worker.consuming.is_set, 20, "binder consuming")

    yield start
    for worker, thread, store in started:
        worker.stop.set()
        thread.join(timeout=30)
        store.close()


def emails(store: Store) -> dict[int, dict[str, Any]]:
    return {doc["mailbox"]["uid"]: doc for doc in store.emails.find({"tenant_id": TENANT})}


def test_mail_from_the_tenants_own_mailboxes_creates_no_customer(
    broker: Broker, store: Store, binder: Start
) -> None:
    add_account(store, ACCOUNT, "Orders@Shop.Example")
    add_account(store, "acc-info", "info@shop.example")
    add_account(store, "acc-theirs", "buyer@elsewhere.example", tenant="another-tenant")
    batch = [
        fetched(1, make_mail("orders@shop.example", "Undelivered Mail"), create_customer=True),
        fetched(2, make_mail("info@shop.example", "Fwd: a question"), create_customer=True),
        fetched(3, make_mail("buyer@elsewhere.example", "hello"), create_customer=True),
    ]
    broker.publish([encode_event(e, raw) for e, raw in batch])
    binder()
    wait_until(lambda: len(emails(store)) == 3, 30, "3 mails")
    got = emails(store)
    assert [got[uid].get("skip_reason") for uid in (1, 2)] == ["own_address", "own_address"]
    assert (got[3]["matched_by"], got[3]["customer_id"]) == (
        "created",
        customer_id_for(TENANT, "buyer@elsewhere.example"),
    )
    assert store.customers.count_documents({"tenant_id": TENANT}) == 1


def poison(store: Store, address: str) -> dict[str, Any]:
    """The id the binder gives the new customer taken by another tenant: binding fails."""
    stray = {"_id": customer_id_for(TENANT, address), "tenant_id": "other", "emails": [address]}
    store.customers.insert_one(stray)
    return stray


def take_notices(broker: Broker) -> list[MailSkipped]:
    queue, out = broker.topology.work_queue("notifier"), []
    while (item := broker.get(queue)) is not None:
        broker.ack(item[1])
        out.append(MailSkipped.model_validate_json(item[0].body))
    return out


def test_a_dead_lettered_mail_is_recorded_failed_and_a_replay_replaces_it(
    broker: Broker, store: Store, binder: Start
) -> None:
    add_account(store, ACCOUNT, "orders@shop.example")
    stray = poison(store, "lena@new.example")
    event, raw = fetched(1, make_mail("Lena <lena@new.example>", "Norway?"), create_customer=True)
    broker.publish([encode_event(event, raw)])
    binder()
    dlq = Topology.dead_letter_queue(broker.topology.work_queue("binder"))
    wait_until(lambda: broker.queue_counts(dlq)[0] == 1, 30, "the dead letter")
    [doc] = emails(store).values()
    assert (doc["status"], doc["account_id"], doc["shop_id"]) == ("failed", ACCOUNT, "shop-1")
    assert "another tenant" in doc["failure_reason"]
    wait_until(lambda: broker.queue_counts(broker.topology.work_queue("notifier"))[0], 10, "notice")
    [notice] = take_notices(broker)
    assert (notice.reason, notice.options.owner_id) == ("failed", "u-owner")  # the stored owner

    store.customers.delete_one(stray)  # the fix, then the replay
    message, tag = broker.get(dlq) or pytest.fail("no dead letter")
    replay = DeadLetter(message, tag).replay_copy(broker.topology.work_queue("binder"), NOW)
    broker.publish([replay])
    broker.ack(tag)
    wait_until(lambda: emails(store)[1]["status"] == "bound", 30, "the replayed mail bound")
    [doc] = emails(store).values()
    assert (doc["matched_by"], doc["customer_id"]) == ("created", stray["_id"])
    assert "failure_reason" not in doc


def test_a_mail_on_its_last_allowed_delivery_is_dead_lettered_and_recorded(
    broker: Broker, store: Store, binder: Start, settings: Settings
) -> None:
    """Each consumer before died holding it (RabbitMQ counts the deliveries)."""
    add_account(store, ACCOUNT, "orders@shop.example")
    event, raw = fetched(1, make_mail("ann@example.com", "hello"), create_customer=True)
    broker.publish([encode_event(event, raw)])
    queue = broker.topology.work_queue("binder")
    for count in range(settings.delivery_limit):
        taken = Broker(settings.amqp_url.get_secret_value(), broker.topology)
        message, _tag = taken.get(queue) or pytest.fail("the message is gone")
        assert message.delivery_count == count
        taken.close()  # dies holding it
    binder()
    dlq = Topology.dead_letter_queue(queue)
    wait_until(lambda: broker.queue_counts(dlq)[0] == 1, 30, "the dead letter")
    [doc] = emails(store).values()
    assert doc["status"] == "failed"
    assert f"delivered {settings.delivery_limit + 1} times" in doc["failure_reason"]
    message, tag = broker.get(dlq) or pytest.fail("no dead letter")
    broker.ack(tag)
    assert message.headers[H_ERROR] == doc["failure_reason"]
    assert store.customers.count_documents({"tenant_id": TENANT}) == 0  # never handled


def test_of_two_binders_replacing_one_failed_mail_the_second_handles_it_again(
    store: Store,
) -> None:
    failed = {"_id": "e1", "tenant_id": TENANT, "status": "failed", "failure_reason": "boom"}
    store.emails.insert_one(failed)
    ours, rival = MongoEmailArchive(store), MongoEmailArchive(store)
    for archive, customer in ((ours, "c-ours"), (rival, "c-rival")):
        archive.warm([(TENANT, "e1")])
        assert archive.get(TENANT, "e1") == failed
        archive.replace_failed({"_id": "e1", "tenant_id": TENANT, "status": "bound",
                                "customer_id": customer})  # fmt: skip
    ours.flush()
    with pytest.raises(TransientError, match="decided meanwhile by another binder"):
        rival.flush()
    [doc] = store.emails.find({"tenant_id": TENANT})
    assert (doc["status"], doc["customer_id"]) == ("bound", "c-ours")


def test_a_failure_recorded_again_replaces_only_a_failed_document(store: Store) -> None:
    archive = MongoEmailArchive(store)
    first = {"_id": "e1", "tenant_id": TENANT, "status": "failed", "failure_reason": "one"}
    assert archive.record_failure(first) == first
    again = {**first, "failure_reason": "two"}
    assert archive.record_failure(again) == again
    store.emails.update_one({"_id": "e1"}, {"$set": {"status": "bound"}})
    assert archive.record_failure(first)["status"] == "bound"  # type: ignore[index]
    assert archive.record_failure({**first, "tenant_id": "other"}) is None


def dead_letters(broker: Broker) -> list[Any]:
    """The binder's dead letters, taken (and acked) off its DLQ."""
    dlq = Topology.dead_letter_queue(broker.topology.work_queue("binder"))
    taken = []
    while (got := broker.get(dlq)) is not None:
        message, tag = got
        broker.ack(tag)
        taken.append(message)
    return taken


def test_one_poisonous_mail_in_a_batch_is_dead_lettered_alone_and_the_others_are_bound(
    broker: Broker, store: Store, binder: Start
) -> None:
    """The poison: the key of the customer its sender would create is another tenant's
    customer's already. Its batch's commit fails; the batch is handled again in halves."""
    add_account(store, ACCOUNT, "orders@shop.example")
    poison = "taken@example.org"
    store.customers.insert_one(
        {"_id": customer_id_for(TENANT, poison), "tenant_id": "t-elsewhere", "emails": [poison]}
    )
    senders = [f"buyer{n}@example.org" for n in range(1, 13)]
    senders[6] = poison
    batch = [fetched(uid, make_mail(s, f"mail {uid}")) for uid, s in enumerate(senders, 1)]
    broker.publish([encode_event(e, raw) for e, raw in batch])  # queued: one batch
    binder()
    wait_until(lambda: len(emails(store)) == 12, 60, "12 mails recorded")
    docs = emails(store)
    assert {uid for uid, doc in docs.items() if doc["status"] == "bound"} == set(range(1, 13)) - {7}
    assert docs[7]["status"] == "failed"
    assert "exists in another tenant" in docs[7]["failure_reason"]
    taken: list[Any] = []  # dead-lettered once the whole batch is handled
    wait_until(lambda: bool(taken.extend(dead_letters(broker)) or taken), 30, "the dead letter")
    [dead] = taken
    assert dead.correlation_id == batch[6][0].email_id
    assert dead.headers["mailintake-error-class"] == "ForeignKeyError"
    assert store.customers.count_documents({"tenant_id": TENANT}) == 11
    assert store.customers.count_documents({"tenant_id": "t-elsewhere"}) == 1  # untouched


def test_an_event_naming_another_tenants_account_writes_nothing_and_is_dead_lettered(
    broker: Broker, store: Store, binder: Start
) -> None:
    """Anyone who can publish could name any tenant: the account must be the tenant's."""
    add_account(store, "acc-a", "orders@a.example", tenant="t-a")
    forged = MailFetched.for_mail(
        email_id=email_id_for_imap("acc-a", "INBOX", 1, 1),
        now=NOW, tenant_id=TENANT, account_id="acc-a",
        options=AccountOptions(owner_id="mallory", create_customer=True),
        protocol="imap", folder="INBOX", uidvalidity=1, uid=1, size=100,
    )  # fmt: skip
    broker.publish([encode_event(forged, make_mail("new@example.org", "hello"))])
    binder()
    taken: list[Any] = []
    wait_until(lambda: bool(taken.extend(dead_letters(broker)) or taken), 30, "the dead letter")
    [dead] = taken
    assert "'acc-a' is not an account of tenant 't-outcomes'" in dead.headers[H_ERROR]
    assert dead.headers["mailintake-error-class"] == "UnknownAccountError"
    for tenant in (TENANT, "t-a"):
        assert store.emails.count_documents({"tenant_id": tenant}) == 0
        assert store.customers.count_documents({"tenant_id": tenant}) == 0
        assert store[OUTCOMES].count_documents({"tenant_id": tenant}) == 0


def test_a_store_that_is_away_never_makes_an_account_look_unknown() -> None:
    """The batch's bulk read of its accounts fails with the store away: each account is then
    read for itself and fails as the store does (retried), never "unknown" (dead-lettered)."""
    from binder.accounts import MongoAccountDirectory
    from shared.errors import StoreUnavailableError

    away = Store("mongodb://127.0.0.1:1/mailintake", timeout_ms=300)
    try:
        accounts = MongoAccountDirectory(away)
        with pytest.raises(StoreUnavailableError):
            accounts.warm_accounts([("t1", "a1")])
        with pytest.raises(StoreUnavailableError):
            accounts.find("t1", "a1")  # before the fix: None, an unknown account
    finally:
        away.close()

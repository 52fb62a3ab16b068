"""The binder stage on the real RabbitMQ and store: racing binders, and the whole mail corpus."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from binder.__main__ import build_handler
from binder.adapters import MongoCrmDirectory, MongoEmailArchive
from binder.batch import Wanted
from binder.ports import CustomerRef, OrderRef
from shared.contracts import AccountOptions, MailFetched, email_id_for_imap
from shared.errors import StoreUnavailableError, TransientError
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store, insert_many_or_ignore
from shared.topology import Topology
from shared.wire import encode_event
from shared.worker import RetryPolicy, StageWorker
from tests.conftest import make_mail, store_accounts
from tests.corpus import FILES, require_corpus
from tests.processes import wait_until

pytestmark = pytest.mark.integration

TENANT = "t-binder"
NOW = datetime(2026, 11, 27, tzinfo=UTC)


def fetched(uid: int, raw: bytes, **options: object) -> tuple[MailFetched, bytes]:
    """A mail of the account with these options (one account per set of options)."""
    account = "-".join(["acc", *sorted(name for name, on in options.items() if on)])
    event = MailFetched.for_mail(
        email_id=email_id_for_imap(account, "INBOX", 1, uid),
        now=NOW,
        tenant_id=TENANT,
        account_id=account,
        options=AccountOptions(owner_id="owner", **options),  # type: ignore[arg-type]
        protocol="imap",
        folder="INBOX",
        uidvalidity=1,
        uid=uid,
        size=len(raw),
    )
    return event, raw


@pytest.fixture
def binders(settings: Settings) -> Iterator[object]:
    """Start binder workers (threads, each with its own connection and store client)."""
    started: list[tuple[StageWorker, threading.Thread, Store]] = []

    def start(count: int) -> None:
        for _ in range(count):
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
            )
            thread = threading.Thread(target=worker.run, daemon=True)
            thread.start()
            started.append((worker, thread, store))
        for worker, _, _ in started:
            wait_until(worker.consuming.is_set, 20, "binder consuming")

    yield start
    for worker, thread, store in started:
        worker.stop.set()
        thread.join(timeout=30)
        store.close()


def queue_depths(broker: Broker) -> dict[str, int]:
    queue = broker.topology.work_queue("binder")
    return {q: broker.queue_counts(q)[0] for q in (queue, f"{queue}.retry", f"{queue}.dlq")}


def test_two_binders_racing_on_one_new_sender_make_one_customer(
    broker: Broker, store: Store, binders: object
) -> None:
    burst = [
        fetched(uid, make_mail("New.Buyer@Example.org", f"question {uid}"), create_customer=True)
        for uid in range(1, 61)
    ]
    binders(2)  # type: ignore[operator]
    store_accounts(store, [e for e, _ in burst])
    broker.publish([encode_event(e, raw) for e, raw in burst])
    wait_until(
        lambda: store.emails.count_documents({"tenant_id": TENANT}) == 60, 60, "60 bound mails"
    )
    customers = list(store.customers.find({"tenant_id": TENANT}))
    assert len(customers) == 1
    assert customers[0]["emails"] == ["new.buyer@example.org"]
    matched = [e["matched_by"] for e in store.emails.find({"tenant_id": TENANT})]
    assert matched.count("created") == 1
    assert matched.count("sender") == 59
    assert {e["customer_id"] for e in store.emails.find({"tenant_id": TENANT})} == {
        customers[0]["_id"]
    }


def test_every_corpus_message_is_bound_skipped_or_stored_unparseable(
    broker: Broker, store: Store, binders: object
) -> None:
    require_corpus()
    store.customers.insert_one(
        {
            "_id": "c-known",
            "tenant_id": TENANT,
            "emails": ["mikel@test.lindsaar.net"],
            "manager_id": None,
        }
    )
    events = [
        fetched(uid, path.read_bytes(), create_customer=uid % 2 == 0, ignore_auto_replies=True)
        for uid, path in enumerate(FILES, start=1)
    ]
    binders(1)  # type: ignore[operator]
    store_accounts(store, [e for e, _ in events])
    broker.publish([encode_event(e, raw) for e, raw in events])
    wait_until(
        lambda: store.emails.count_documents({"tenant_id": TENANT}) == len(FILES),
        120,
        f"{len(FILES)} corpus mails recorded",
    )
    for doc in store.emails.find({"tenant_id": TENANT}):
        assert doc["status"] in ("bound", "skipped")
        if doc["status"] == "skipped":
            assert doc["skip_reason"] in ("no_customer", "no_sender", "parse_error", "auto_reply")
        else:
            assert doc["matched_by"] in ("sender", "created", "subject_tag")
    wait_until(lambda: sum(queue_depths(broker).values()) == 0, 30, "empty binder queues")
    assert queue_depths(broker) == {q: 0 for q in queue_depths(broker)}


def test_a_batch_read_in_bulk_binds_as_one_mail_at_a_time_would(
    broker: Broker, store: Store, binders: object
) -> None:
    store.customers.insert_many(
        [
            {
                "_id": "c-2",
                "tenant_id": TENANT,
                "emails": ["twice@example.org"],
                "manager_id": "m2",
            },
            {
                "_id": "c-1",
                "tenant_id": TENANT,
                "emails": ["twice@example.org"],
                "manager_id": "m1",
            },
            {"_id": "c-x", "tenant_id": "other", "emails": ["new@example.org"], "manager_id": "mx"},
        ]
    )
    store.orders.insert_one(
        {"_id": "o-7", "tenant_id": TENANT, "number": "7", "customer_id": "c-2"}
    )
    batch = [
        fetched(1, make_mail("Twice@Example.org", "hello"), create_customer=True),
        fetched(2, make_mail("new@example.org", "first"), create_customer=True),
        fetched(3, make_mail("new@example.org", "second"), create_customer=True),
        fetched(4, make_mail("someone@example.org", "about [#7]"), create_customer=True),
        fetched(5, make_mail("someone@example.org", "about [#8]"), create_customer=False),
    ]
    store_accounts(store, [e for e, _ in batch])
    broker.publish([encode_event(e, raw) for e, raw in batch])  # queued: one batch
    binders(1)  # type: ignore[operator]
    wait_until(lambda: store.emails.count_documents({"tenant_id": TENANT}) == 5, 30, "5 mails")
    emails = {e["_id"]: e for e in store.emails.find({"tenant_id": TENANT})}
    got = [emails[event.email_id] for event, _ in batch]
    assert [(e["matched_by"], e.get("customer_id")) for e in got[:2]] == [
        ("sender", "c-1"),
        ("created", got[1]["customer_id"]),
    ]
    assert (got[2]["matched_by"], got[2]["customer_id"]) == ("sender", got[1]["customer_id"])
    assert (got[3]["matched_by"], got[3]["order_id"]) == ("subject_tag", "o-7")
    assert (got[4]["status"], got[4]["skip_reason"]) == ("skipped", "no_customer")
    assert store.customers.count_documents({"tenant_id": TENANT}) == 3


def test_warm_answers_the_batch_from_one_read_and_forgets_it_at_the_next(store: Store) -> None:
    store.customers.insert_one({"_id": "c-1", "tenant_id": TENANT, "emails": ["a@example.org"]})
    store.orders.insert_one(
        {"_id": "o-1", "tenant_id": TENANT, "number": "1", "customer_id": "c-1"}
    )
    crm = MongoCrmDirectory(store)
    crm.warm({TENANT: Wanted({"a@example.org", "b@example.org"}, {"1", "2"})})
    store.customers.delete_many({})
    store.orders.delete_many({})
    assert crm.find_customer(TENANT, "a@example.org") == CustomerRef("c-1", None)
    assert crm.find_customer(TENANT, "b@example.org") is None
    assert crm.find_order(TENANT, "1") == OrderRef("o-1", "c-1", None)
    assert crm.find_customer("other", "a@example.org") is None  # not warmed: asks the store
    crm.warm({})
    assert crm.find_customer(TENANT, "a@example.org") is None
    assert crm.find_order(TENANT, "1") is None


def test_customers_created_by_a_batch_are_written_at_its_end_and_a_rival_retries(
    store: Store,
) -> None:
    ours, rival = MongoCrmDirectory(store), MongoCrmDirectory(store)
    for crm, email in ((ours, "e-1"), (rival, "e-2")):
        crm.warm({TENANT: Wanted({"new@example.org"})})
        created = crm.create_customer(
            TENANT, "new@example.org", shop_id=None, email_id=email, now=NOW
        )
        assert created.source_email_id == email
        assert crm.find_customer(TENANT, "new@example.org") == created  # the batch sees it
    assert store.customers.count_documents({"tenant_id": TENANT}) == 0  # nothing written yet
    ours.flush()
    with pytest.raises(TransientError, match="created meanwhile by another binder"):
        rival.flush()
    [stored] = store.customers.find({"tenant_id": TENANT})
    assert stored["source_email_id"] == "e-1"  # the rival's batch, handled again, finds it
    rival.warm({TENANT: Wanted({"new@example.org"})})
    assert rival.find_customer(TENANT, "new@example.org") == CustomerRef(stored["_id"], None, "e-1")


def test_a_failed_bulk_read_leaves_each_mail_to_its_own_lookups(
    broker: Broker, store: Store, binders: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_self: object, _wanted: object) -> None:
        raise RuntimeError("bulk read failed")

    monkeypatch.setattr(MongoCrmDirectory, "warm", broken)
    store.customers.insert_one({"_id": "c-1", "tenant_id": TENANT, "emails": ["a@example.org"]})
    batch = [fetched(uid, make_mail("a@example.org", f"mail {uid}")) for uid in (1, 2, 3)]
    store_accounts(store, [e for e, _ in batch])
    broker.publish([encode_event(e, raw) for e, raw in batch])
    binders(1)  # type: ignore[operator]
    wait_until(lambda: store.emails.count_documents({"tenant_id": TENANT}) == 3, 30, "3 mails")
    assert {e["customer_id"] for e in store.emails.find({"tenant_id": TENANT})} == {"c-1"}
    assert queue_depths(broker) == dict.fromkeys(queue_depths(broker), 0)


def test_a_failed_bulk_write_sends_the_whole_batch_round_again_and_passes_each_mail_once(
    broker: Broker, store: Store, binders: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    flush = MongoEmailArchive.flush
    failures = iter([StoreUnavailableError("the store is not reachable")])

    def fail_once(self: MongoEmailArchive) -> None:
        for exc in failures:
            self.warm(())  # what the batch kept is dropped, as a failed write leaves it
            raise exc
        flush(self)

    monkeypatch.setattr(MongoEmailArchive, "flush", fail_once)
    batch = [fetched(uid, make_mail(f"new{uid}@example.org", "hi"), create_customer=True)
             for uid in (1, 2, 3)]  # fmt: skip
    store_accounts(store, [e for e, _ in batch])
    broker.publish([encode_event(e, raw) for e, raw in batch])
    binders(1)  # type: ignore[operator]
    wait_until(lambda: store.emails.count_documents({"tenant_id": TENANT}) == 3, 30, "3 mails")
    assigner = broker.topology.work_queue("assigner")
    wait_until(lambda: broker.queue_counts(assigner)[0] == 3, 10, "3 events for the assigner")
    assert queue_depths(broker) == dict.fromkeys(queue_depths(broker), 0)
    assert {e["matched_by"] for e in store.emails.find({"tenant_id": TENANT})} == {"created"}


def test_insert_many_or_ignore_reports_the_ids_that_existed(store: Store) -> None:
    store.emails.insert_one({"_id": "b", "tenant_id": TENANT, "v": 1})
    docs = [{"_id": i, "tenant_id": TENANT, "v": 2} for i in ("a", "b", "c")]
    assert insert_many_or_ignore(store.emails, docs) == {"b"}
    assert {d["_id"]: d["v"] for d in store.emails.find()} == {"a": 2, "b": 1, "c": 2}
    assert insert_many_or_ignore(store.emails, []) == set()

"""The binder stage on the real RabbitMQ and store: racing binders, and the whole mail corpus."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from binder.__main__ import build_handler
from shared.contracts import AccountOptions, MailFetched, email_id_for_imap
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from shared.topology import Topology
from shared.wire import encode_event
from shared.worker import RetryPolicy, StageWorker
from tests.conftest import make_mail
from tests.processes import wait_until
from tests.unit.test_mail_corpus import CORPUS, FILES

pytestmark = pytest.mark.integration

TENANT = "t-binder"
NOW = datetime(2026, 11, 27, tzinfo=UTC)


def fetched(uid: int, raw: bytes, **options: object) -> tuple[MailFetched, bytes]:
    event = MailFetched.for_mail(
        email_id=email_id_for_imap("acc", "INBOX", 1, uid),
        now=NOW,
        tenant_id=TENANT,
        account_id="acc",
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
            worker = StageWorker(
                "binder", broker, build_handler(settings, store), policy=RetryPolicy(2, 0.2, 1.0)
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
    if not FILES:
        pytest.fail(f"no mail corpus at {CORPUS}", pytrace=False)
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

"""The notifier on the real queues and store: which notifications, in which order, once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from notifier.__main__ import run
from shared.contracts import (
    AccountFailed,
    AccountOptions,
    Event,
    MailRouted,
    MailSkipped,
    MailSummary,
)
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from shared.wire import encode_event
from tests.processes import wait_until

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TENANT = "t1"


def seed_recipients(store: Store) -> None:
    """The accounts, customers and orders the events name, as the store has them: `a1` tells
    nobody of mail, `a2` tells the manager and the owner of skips; customers c0-c9 are m1's,
    `c-lone` has no manager, order o4 (c4's) is m2's."""
    told = {"notify_manager": True, "notify_skipped": True}
    store.accounts.insert_many(
        [
            {"_id": "a1", "tenant_id": TENANT, "owner_id": "owner"},
            {"_id": "a2", "tenant_id": TENANT, "owner_id": "owner", **told},
        ]
    )
    managed = {f"c{n}": "m1" for n in range(10)}
    store.customers.insert_many(
        [
            {"_id": c, "tenant_id": TENANT, "emails": [f"{c}@x.org"], "manager_id": m}
            for c, m in {**managed, "c-lone": None}.items()
        ]
    )
    store.orders.insert_one(
        {"_id": "o4", "tenant_id": TENANT, "number": "4", "customer_id": "c4", "manager_id": "m2"}
    )


@pytest.fixture
def notifier(settings: Settings, broker: Broker, store: Store) -> Iterator[threading.Event]:
    """The notifier process's two consumers, in a thread of this one, over the stored
    recipients (`seed_recipients`)."""
    seed_recipients(store)
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(settings, stop), daemon=True)
    thread.start()
    yield stop
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()


def routed(n: int, **fields: Any) -> MailRouted:
    """Mail of customer c`n`; with notify_manager in `options`, from account a2 (else a1)."""
    options = fields.pop("options", {})
    return MailRouted(
        **{
            "event_id": f"r{n}",
            "tenant_id": TENANT,
            "account_id": "a2" if options.get("notify_manager") else "a1",
            "email_id": f"e{n}",
            "occurred_at": NOW,
            "options": AccountOptions(owner_id="owner", **options),
            "summary": MailSummary(
                from_address=f"c{n}@x.org", subject=f"subject {n}", preview="Hello there"
            ),
            "matched_by": "sender",
            "customer_id": f"c{n}",
            **fields,
        }
    )


def skipped(n: int, *, notify: bool, reason: str = "no_customer") -> MailSkipped:
    return MailSkipped(
        event_id=f"s{n}",
        tenant_id=TENANT,
        account_id="a2" if notify else "a1",
        email_id=f"se{n}",
        occurred_at=NOW,
        options=AccountOptions(owner_id="owner", notify_skipped=notify),
        summary=MailSummary(from_address=f"x{n}@y.org", subject=f"skipped {n}"),
        reason=reason,
    )


def failed(n: int, incident: str) -> AccountFailed:
    return AccountFailed(
        event_id=f"f{n}",
        tenant_id=TENANT,
        account_id="a1",
        occurred_at=NOW,
        owner_id="owner",
        incident_id=incident,
        reason="login_rejected",
        message="login rejected by imap.example.com:993",
    )


def publish(broker: Broker, events: list[Event]) -> None:
    broker.publish([encode_event(e) for e in events])


def notifications(store: Store, **query: Any) -> list[dict[str, Any]]:
    return list(
        store.notifications.find({"tenant_id": TENANT, **query}).sort(
            [("created_at", 1), ("_id", 1)]
        )
    )


def settled(broker: Broker, store: Store, count: int) -> Callable[[], bool]:
    """All published events consumed and `count` notifications stored."""
    queue = broker.topology.work_queue("notifier")
    return lambda: (
        broker.queue_counts(queue)[0] == 0
        and store.notifications.count_documents({"tenant_id": TENANT}) >= count
    )


def test_new_customer_gets_customer_assigned_then_incoming_email(
    notifier: threading.Event, broker: Broker, store: Store
) -> None:
    publish(broker, [routed(1, manager_id="m1", assigned_now=True, matched_by="created")])
    wait_until(settled(broker, store, 2), 20, "two notifications")
    docs = notifications(store)
    assert [d["kind"] for d in docs] == ["customer_assigned", "incoming_email"]
    assert docs[0]["created_at"] < docs[1]["created_at"]
    assert {d["user_id"] for d in docs} == {"m1"}
    mail = docs[1]
    assert (mail["email_id"], mail["subject"], mail["from_address"]) == (
        "e1",
        "subject 1",
        "c1@x.org",
    )
    assert mail["preview"] == "Hello there" and "webhook" not in mail


def test_incoming_email_only_with_notify_manager(
    notifier: threading.Event, broker: Broker, store: Store
) -> None:
    publish(
        broker,
        [
            routed(1, manager_id="m1"),
            routed(2, manager_id="m1", options={"notify_manager": True}),
            routed(3, manager_id=None, customer_id="c-lone", options={"notify_manager": True}),
            routed(4, manager_id="m2", order_id="o4", options={"notify_manager": True}),
        ],
    )
    wait_until(settled(broker, store, 2), 20, "the notifier to drain")
    docs = notifications(store)
    assert sorted((d["kind"], d["email_id"], d["user_id"]) for d in docs) == [
        ("incoming_email", "e2", "m1"),
        ("incoming_email", "e4", "m2"),
    ]
    assert next(d for d in docs if d["email_id"] == "e4")["order_id"] == "o4"


def test_message_skipped_only_with_notify_skipped(
    notifier: threading.Event, broker: Broker, store: Store
) -> None:
    publish(broker, [skipped(1, notify=False), skipped(2, notify=True, reason="too_large")])
    wait_until(settled(broker, store, 1), 20, "the notifier to drain")
    [doc] = notifications(store)
    assert (doc["kind"], doc["user_id"], doc["reason"]) == ("message_skipped", "owner", "too_large")
    assert doc["from_address"] == "x2@y.org" and doc["subject"] == "skipped 2"
    assert "x2@y.org" in doc["text"] and "larger" in doc["text"]


def test_every_event_type_redelivered_notifies_once(
    notifier: threading.Event, broker: Broker, store: Store
) -> None:
    events: list[Event] = [
        routed(1, manager_id="m1", assigned_now=True, matched_by="created"),
        routed(2, manager_id="m1", options={"notify_manager": True}),
        skipped(3, notify=True),
        failed(4, "incident-1"),
        failed(5, "incident-1"),  # another retry of the same incident
    ]
    publish(broker, events)
    publish(broker, events)
    wait_until(settled(broker, store, 5), 20, "five notifications")
    kinds = sorted(d["kind"] for d in notifications(store))
    assert kinds == [
        "account_error",
        "customer_assigned",
        "incoming_email",
        "incoming_email",
        "message_skipped",
    ]
    dlq = broker.topology.dead_letter_queue(broker.topology.work_queue("notifier"))
    assert broker.queue_counts(dlq)[0] == 0


def test_a_failed_mail_is_told_of_apart_from_the_skip_of_its_replay(
    notifier: threading.Event, broker: Broker, store: Store
) -> None:
    failed = skipped(1, notify=True, reason="failed")
    replayed = skipped(1, notify=True).model_copy(update={"event_id": "s1-replayed"})
    publish(broker, [failed, failed, replayed])
    wait_until(settled(broker, store, 2), 20, "two notifications")
    docs = notifications(store)
    assert sorted((d["kind"], d["reason"], d["email_id"]) for d in docs) == [
        ("message_skipped", "failed", "se1"),
        ("message_skipped", "no_customer", "se1"),
    ]
    assert "could not be processed" in next(d for d in docs if d["reason"] == "failed")["text"]


def test_an_event_naming_another_tenants_owner_or_account_notifies_nobody_of_theirs(
    notifier: threading.Event, broker: Broker, store: Store
) -> None:
    """A forged owner is replaced by the account's own; another tenant's account or customer
    is refused: no notification, dead-lettered with the reason."""
    store.accounts.insert_one({"_id": "b1", "tenant_id": "t2", "owner_id": "owner-b"})
    store.customers.insert_one({"_id": "cb", "tenant_id": "t2", "emails": [], "manager_id": "mb"})
    forged = [
        skipped(1, notify=True).model_copy(
            update={"options": AccountOptions(owner_id="owner-b", notify_skipped=True)}
        ),
        routed(2, manager_id="mb", options={"notify_manager": True}).model_copy(
            update={"account_id": "b1"}
        ),
        routed(3, manager_id="mb", customer_id="cb", options={"notify_manager": True}),
    ]
    publish(broker, forged)
    dlq = broker.topology.dead_letter_queue(broker.topology.work_queue("notifier"))
    wait_until(lambda: broker.queue_counts(dlq)[0] == 2, 20, "the two events dead-lettered")
    wait_until(
        lambda: store.notifications.count_documents({}) == 1, 20, "the skip told to its owner"
    )
    told = store.notifications.find_one({})
    assert told is not None and (told["user_id"], told["tenant_id"]) == ("owner", TENANT)
    assert store.notifications.count_documents({"user_id": {"$in": ["owner-b", "mb"]}}) == 0
    reasons = {}
    for _ in range(2):
        item = broker.get(dlq)
        assert item is not None
        reasons[item[0].message_id] = str(item[0].headers["mailintake-error"])
    broker.requeue_all()
    assert "account 'b1' is not an account of tenant 't1'" in reasons["r2"]
    assert "customer 'cb' is not one of tenant 't1'" in reasons["r3"]

"""The assigner on the real queues and store: even shares, tiers, replicas racing, redelivery."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from assigner.__main__ import build_handler
from assigner.adapters import MongoManagerRotation
from assigner.handlers import handle_mail_bound
from assigner.records import MongoAssignmentRecords
from assigner.rules import Manager
from assigner.slots import CLAIMS, SLOTS, slot_id
from notifier.__main__ import run as run_notifier
from shared.contracts import AccountOptions, MailBound, MailRouted, MailSummary, deterministic_id
from shared.messaging import Broker
from shared.runtime import open_broker, retry_policy
from shared.settings import Settings
from shared.store import Store
from shared.wire import encode_event
from shared.worker import StageWorker
from tests.conftest import store_accounts
from tests.processes import wait_until

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TENANT = "t1"


def seed_group(store: Store, group: str, *spec: tuple[str, str, bool]) -> None:
    """Managers (id, status, online) and a group listing them in that order."""
    for mid, status, online in spec:
        store.managers.insert_one(
            {"_id": mid, "tenant_id": TENANT, "name": mid, "status": status, "online": online}
        )
    store.manager_groups.insert_one(
        {"_id": group, "tenant_id": TENANT, "name": group, "manager_ids": [m for m, _, _ in spec]}
    )


def new_customer(store: Store, n: int, *, group: str | None = "g1") -> MailBound:
    """A customer the binder created from mail e<n>, its `emails` document and event."""
    cid, eid = f"c{n}", f"e{n}"
    store.customers.insert_one(
        {
            "_id": cid,
            "tenant_id": TENANT,
            "emails": [f"c{n}@x.org"],
            "manager_id": None,
            "source": "mail",
            "source_email_id": eid,
        }
    )
    store.emails.insert_one(bound_email(eid, cid))
    event = MailBound(
        event_id=f"ev{n}",
        tenant_id=TENANT,
        account_id="a1",
        email_id=eid,
        occurred_at=NOW,
        options=AccountOptions(owner_id="owner", create_customer=True, manager_group_id=group),
        summary=MailSummary(from_address=f"c{n}@x.org", subject=f"hello {n}"),
        matched_by="created",
        customer_id=cid,
        customer_created=True,
    )
    store_accounts(store, [event])
    return event


def bound_email(
    email_id: str, customer_id: str, *, tenant: str = TENANT, matched_by: str = "created"
) -> dict[str, Any]:
    """The `emails` document of mail from account a1 that the binder bound to a customer."""
    return {
        "_id": email_id, "tenant_id": tenant, "account_id": "a1", "status": "bound",
        "matched_by": matched_by, "customer_id": customer_id, "manager_id": None,
        "customer_created": matched_by == "created",
    }  # fmt: skip


def group_managers(store: Store) -> list[Manager]:
    """The tenant's managers as the rule sees them, by id."""
    return [Manager.from_doc(m) for m in store.managers.find({"tenant_id": TENANT}).sort("_id", 1)]


def shares(store: Store) -> Counter[str]:
    return Counter(
        str(c["manager_id"])
        for c in store.customers.find({"tenant_id": TENANT, "manager_id": {"$ne": None}})
    )


@contextmanager
def assigners(settings: Settings, replicas: int) -> Iterator[list[StageWorker]]:
    """`replicas` assigner workers in threads, each with its own Broker and Store."""
    stop = threading.Event()
    stores: list[Store] = []
    workers, threads = [], []
    for i in range(replicas):
        store = Store(settings.mongo_url.get_secret_value(), settings.mongo_database)
        stores.append(store)
        handler = build_handler(settings, store)
        worker = StageWorker(
            "assigner",
            open_broker(settings),
            handler.handle,
            policy=retry_policy(settings),
            unit_of_work=handler.unit_of_work,
        )
        worker.stop = stop
        workers.append(worker)
        threads.append(threading.Thread(target=worker.run, name=f"assigner-{i}", daemon=True))
    for t in threads:
        t.start()
    try:
        yield workers
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        for s in stores:
            s.close()


def routed_messages(broker: Broker) -> list[MailRouted]:
    """Take every MailRouted waiting in the notifier's queue."""
    queue = broker.topology.work_queue("notifier")
    out = []
    while (item := broker.get(queue)) is not None:
        message, tag = item
        broker.ack(tag)
        out.append(MailRouted.model_validate_json(message.body))
    return out


def publish_and_wait(
    settings: Settings, broker: Broker, store: Store, events: list[Any], replicas: int, expect: int
) -> None:
    with assigners(settings, replicas):
        broker.publish([encode_event(e) for e in events])
        wait_until(
            lambda: (
                sum(shares(store).values()) >= expect
                and broker.queue_counts(broker.topology.work_queue("assigner"))[0] == 0
            ),
            timeout=120,
            what=f"{expect} customers assigned",
        )
        queue = broker.topology.work_queue("notifier")
        wait_until(lambda: broker.queue_counts(queue)[0] >= len(events), 30, "routed events")


def test_thirty_new_customers_go_ten_to_each_of_three_free_managers(
    settings: Settings, broker: Broker, store: Store
) -> None:
    seed_group(
        store,
        "g1",
        ("m1", "free", True),
        ("m2", "busy", True),
        ("m3", "free", True),
        ("m4", "free", False),
        ("m5", "free", True),
    )
    events = [new_customer(store, n) for n in range(30)]
    publish_and_wait(settings, broker, store, events, replicas=1, expect=30)
    assert shares(store) == {"m1": 10, "m3": 10, "m5": 10}
    routed = routed_messages(broker)
    assert len(routed) == 30 and all(r.assigned_now for r in routed)
    email = store.emails.find_one({"tenant_id": TENANT, "_id": "e0"})
    assert email is not None and email["manager_id"] == "m1" and email["unassigned_reason"] is None


@pytest.mark.slow
def test_two_replicas_racing_share_300_customers_evenly(
    settings: Settings, broker: Broker, store: Store
) -> None:
    seed_group(store, "g1", ("m1", "free", True), ("m2", "free", True), ("m3", "free", True))
    events = [new_customer(store, n) for n in range(300)]
    publish_and_wait(settings, broker, store, events, replicas=2, expect=300)
    counts = shares(store)
    assert sum(counts.values()) == 300
    assert all(99 <= counts[m] <= 101 for m in ("m1", "m2", "m3")), counts
    slots = list(store[SLOTS].find({"tenant_id": TENANT}))
    assert sorted(s["seq"] for s in slots) == list(range(1, 301))
    assert len({s["customer_id"] for s in slots}) == 300
    claims = {c["customer_id"]: c["slot_id"] for c in store[CLAIMS].find({"tenant_id": TENANT})}
    assert claims == {s["customer_id"]: s["_id"] for s in slots}
    # Both replicas took part: the race was real.
    assert len({r.event_id for r in routed_messages(broker)}) == 300


def test_nobody_free_tier_two_shares_evenly_and_a_manager_turning_free_gets_the_next(
    store: Store,
) -> None:
    seed_group(store, "g1", ("m1", "busy", True), ("m2", "lunch", True), ("m3", "free", False))
    rotation = MongoManagerRotation(store)
    got = [
        rotation.assign(TENANT, "g1", new_customer(store, n).customer_id, email_id=f"e{n}", now=NOW)
        for n in range(9)
    ]
    assert Counter(a.manager_id for a in got) == {"m1": 3, "m2": 3, "m3": 3}
    store.managers.update_one({"tenant_id": TENANT, "_id": "m2"}, {"$set": {"status": "free"}})
    nxt = [
        rotation.assign(TENANT, "g1", new_customer(store, n).customer_id, email_id=f"e{n}", now=NOW)
        for n in (9, 10)
    ]
    assert [a.manager_id for a in nxt] == ["m2", "m2"]


@pytest.mark.parametrize(
    ("group", "why"),
    [("empty", "has no managers"), ("nope", "does not exist"), (None, "no manager group")],
)
def test_empty_or_missing_group_leaves_the_customer_unassigned(
    store: Store, group: str | None, why: str
) -> None:
    store.manager_groups.insert_one({"_id": "empty", "tenant_id": TENANT, "manager_ids": []})
    event = new_customer(store, 1, group=group)
    [out] = handle_mail_bound(
        event,
        rotation=MongoManagerRotation(store),
        records=MongoAssignmentRecords(store),
        now=NOW,
    )
    assert isinstance(out, MailRouted) and out.manager_id is None and not out.assigned_now
    assert out.assignment_note and why in out.assignment_note
    email = store.emails.find_one({"tenant_id": TENANT, "_id": "e1"})
    assert email is not None and why in email["unassigned_reason"]
    customer = store.customers.find_one({"tenant_id": TENANT, "_id": "c1"})
    assert customer is not None and customer["manager_id"] is None


def test_every_event_delivered_twice_assigns_once(
    settings: Settings, broker: Broker, store: Store
) -> None:
    seed_group(store, "g1", ("m1", "free", True), ("m2", "free", True), ("m3", "free", True))
    events = [new_customer(store, n) for n in range(30)]
    publish_and_wait(settings, broker, store, events + events, replicas=2, expect=30)
    assert shares(store) == {"m1": 10, "m2": 10, "m3": 10}
    snapshot = store.rotations.find_one({"tenant_id": TENANT})
    # A replica may put back an older snapshot where the store's conditional write is not
    # atomic (assigner/slots.py); the slots are what counts.
    assert snapshot is not None and 0 < snapshot["seq"] <= 30
    assert store[SLOTS].count_documents({"tenant_id": TENANT}) == 30
    routed = routed_messages(broker)
    assert len(routed) == 60
    by_id = {r.event_id: r.manager_id for r in routed}
    assert len(by_id) == 30
    assert all(by_id[r.event_id] == r.manager_id and r.assigned_now for r in routed)


def test_a_crash_between_claim_and_settle_is_finished_by_the_redelivery(store: Store) -> None:
    seed_group(store, "g1", ("m1", "free", True), ("m2", "free", True))
    rotation = MongoManagerRotation(store)
    managers = group_managers(store)
    claim = rotation._claim(TENANT, "g1", new_customer(store, 1).customer_id, "e1", managers, NOW)
    assert claim["manager_id"] == "m1"
    assert store.customers.find_one({"_id": "c1"})["manager_id"] is None  # type: ignore[index]
    again = rotation.assign(TENANT, "g1", "c1", email_id="e1", now=NOW)
    assert again.manager_id == "m1" and again.assigned_now
    assert store.customers.find_one({"_id": "c1"})["manager_id"] == "m1"  # type: ignore[index]
    assert store[SLOTS].count_documents({"tenant_id": TENANT}) == 1
    nxt = rotation.assign(TENANT, "g1", new_customer(store, 2).customer_id, email_id="e2", now=NOW)
    assert nxt.manager_id == "m2"


def test_a_crash_between_slot_and_claim_reuses_the_slot(store: Store) -> None:
    seed_group(store, "g1", ("m1", "free", True), ("m2", "free", True))
    customer = new_customer(store, 1).customer_id
    store[SLOTS].insert_one(
        {"_id": slot_id(TENANT, "g1", 1), "tenant_id": TENANT, "group_id": "g1", "seq": 1,
         "manager_id": "m1", "customer_id": customer, "email_id": "e1", "claimed_at": NOW}
    )  # fmt: skip
    rotation = MongoManagerRotation(store)
    again = rotation.assign(TENANT, "g1", customer, email_id="e1", now=NOW)
    assert again.manager_id == "m1" and again.assigned_now
    assert store[SLOTS].count_documents({"tenant_id": TENANT}) == 1
    nxt = rotation.assign(TENANT, "g1", new_customer(store, 2).customer_id, email_id="e2", now=NOW)
    assert nxt.manager_id == "m2"
    assert store[SLOTS].count_documents({"tenant_id": TENANT}) == 2


def test_a_customer_claimed_twice_keeps_the_first_claim(store: Store) -> None:
    seed_group(store, "g1", ("m1", "free", True), ("m2", "free", True))
    customer = new_customer(store, 1).customer_id
    rotation = MongoManagerRotation(store)
    managers = group_managers(store)
    first = rotation._claim(TENANT, "g1", customer, "e1", managers, NOW)
    store[CLAIMS].delete_one({"_id": first["_id"]})  # let a second claim through ...
    second = rotation._claim(TENANT, "g1", customer, "e1", managers, NOW)
    assert second["manager_id"] == "m2"
    store[CLAIMS].replace_one({"_id": first["_id"]}, first)  # ... then the first one wins
    third = rotation._claim(TENANT, "g1", customer, "e1", managers, NOW)
    assert third == first
    got = rotation.assign(TENANT, "g1", customer, email_id="e1", now=NOW)
    assert got.manager_id == "m1" and got.assigned_now


def test_a_batch_reads_its_group_once_and_the_next_batch_reads_it_again(store: Store) -> None:
    seed_group(store, "g1", ("m1", "busy", True), ("m2", "free", True))
    rotation = MongoManagerRotation(store)
    rotation.begin_batch()
    first = rotation.assign(
        TENANT, "g1", new_customer(store, 1).customer_id, email_id="e1", now=NOW
    )
    store.managers.update_one({"_id": "m2"}, {"$set": {"status": "lunch"}})
    second = rotation.assign(
        TENANT, "g1", new_customer(store, 2).customer_id, email_id="e2", now=NOW
    )
    assert (first.manager_id, second.manager_id) == ("m2", "m2")  # the batch's view of m2
    rotation.begin_batch()
    third = rotation.assign(
        TENANT, "g1", new_customer(store, 3).customer_id, email_id="e3", now=NOW
    )
    assert third.manager_id == "m1"  # nobody free now: least recently assigned of everyone


def test_customer_with_a_manager_keeps_it(store: Store) -> None:
    seed_group(store, "g1", ("m1", "free", True), ("m2", "free", True))
    event = new_customer(store, 1)
    store.customers.update_one({"_id": "c1", "tenant_id": TENANT}, {"$set": {"manager_id": "m2"}})
    a = MongoManagerRotation(store).assign(TENANT, "g1", "c1", email_id="e1", now=NOW)
    assert a.manager_id == "m2" and not a.assigned_now
    assert store[SLOTS].count_documents({}) == 0 and event.customer_id == "c1"


def test_existing_customers_and_orders_pass_through(store: Store) -> None:
    seed_group(store, "g1", ("m1", "free", True))
    event = new_customer(store, 1).model_copy(
        update={
            "customer_created": False,
            "matched_by": "subject_tag",
            "order_id": "o1",
            "manager_id": "m9",
        }
    )
    [out] = handle_mail_bound(
        event, rotation=MongoManagerRotation(store), records=MongoAssignmentRecords(store), now=NOW
    )
    assert isinstance(out, MailRouted)
    assert (out.manager_id, out.order_id, out.assigned_now) == ("m9", "o1", False)
    assert store[SLOTS].count_documents({}) == 0


def _batch(rotation: MongoManagerRotation, events: list[MailBound]) -> list[str | None]:
    """The assigner's batch: read, claim together, assign each, write; the managers."""
    rotation.begin_batch((e.tenant_id, e.customer_id) for e in events)
    rotation.claim_batch(((TENANT, "g1", e.customer_id, e.email_id) for e in events), NOW)
    got = [
        rotation.assign(TENANT, "g1", e.customer_id, email_id=e.email_id, now=NOW).manager_id
        for e in events
    ]
    rotation.flush()
    return got


def test_a_batch_claims_its_customers_together_in_rotation_order(store: Store) -> None:
    seed_group(store, "g1", ("m1", "free", True), ("m2", "free", True), ("m3", "free", True))
    rotation = MongoManagerRotation(store, deferred=True)
    got = _batch(rotation, [new_customer(store, n) for n in range(250)])  # 3 ordered inserts
    assert got == [f"m{1 + n % 3}" for n in range(250)]
    assert shares(store) == {"m1": 84, "m2": 83, "m3": 83}
    slots = sorted(store[SLOTS].find({"tenant_id": TENANT}), key=lambda s: s["seq"])
    assert [s["customer_id"] for s in slots] == [f"c{n}" for n in range(250)]
    assert store[CLAIMS].count_documents({"tenant_id": TENANT}) == 250
    snapshot = store.rotations.find_one({"tenant_id": TENANT})
    assert snapshot is not None and snapshot["seq"] == 250


def test_a_batch_that_loses_a_slot_reads_it_and_decides_the_rest_after_it(store: Store) -> None:
    seed_group(store, "g1", ("m1", "free", True), ("m2", "free", True))
    rival = new_customer(store, 99).customer_id  # another replica took slot 3 for m1
    store[SLOTS].insert_one(
        {"_id": slot_id(TENANT, "g1", 3), "tenant_id": TENANT, "group_id": "g1", "seq": 3,
         "manager_id": "m1", "customer_id": rival, "email_id": "e99", "claimed_at": NOW}
    )  # fmt: skip
    rotation = MongoManagerRotation(store, deferred=True)
    got = _batch(rotation, [new_customer(store, n) for n in range(5)])
    # Slots 1, 2 ours (m1, m2); 3 the rival's (m1); then m2, m1, m2 for the rest.
    assert got == ["m1", "m2", "m2", "m1", "m2"]
    seqs = {s["customer_id"]: s["seq"] for s in store[SLOTS].find({"tenant_id": TENANT})}
    assert seqs == {"c0": 1, "c1": 2, rival: 3, "c2": 4, "c3": 5, "c4": 6}


def test_a_batch_takes_back_the_slot_a_crashed_run_left_without_its_claim(store: Store) -> None:
    seed_group(store, "g1", ("m1", "free", True), ("m2", "free", True))
    events = [new_customer(store, n) for n in range(3)]
    store[SLOTS].insert_one(
        {"_id": slot_id(TENANT, "g1", 1), "tenant_id": TENANT, "group_id": "g1", "seq": 1,
         "manager_id": "m2", "customer_id": "c1", "email_id": "e1", "claimed_at": NOW}
    )  # fmt: skip
    got = _batch(MongoManagerRotation(store, deferred=True), events)
    assert got == ["m1", "m2", "m2"]  # c1 keeps slot 1 (m2); c0 gets 2 (m1); c2 gets 3 (m2)
    assert store[SLOTS].count_documents({"tenant_id": TENANT}) == 3
    claims = {c["customer_id"]: c["slot_id"] for c in store[CLAIMS].find({"tenant_id": TENANT})}
    assert claims["c1"] == slot_id(TENANT, "g1", 1)


def test_an_outcome_is_written_only_on_an_e_mail_of_its_own_tenant(store: Store) -> None:
    new_customer(store, 1)
    records = MongoAssignmentRecords(store, deferred=True)
    records.record("other-tenant", "e1", manager_id="m9", note=None)
    records.record(TENANT, "e1", manager_id=None, note="why not")
    assert "unassigned_reason" not in store.emails.find_one({"_id": "e1"})  # type: ignore[operator]
    records.flush()
    email = store.emails.find_one({"_id": "e1"})
    assert email is not None and (email["manager_id"], email["unassigned_reason"]) == (
        None,
        "why not",
    )
    records.record("other-tenant", "e1", manager_id="m9", note=None)
    records.flush()
    assert store.emails.find_one({"_id": "e1"})["manager_id"] is None  # type: ignore[index]


def test_slots_a_dead_run_left_keep_their_turns_when_its_events_come_one_at_a_time(
    store: Store,
) -> None:
    """A run died after inserting its batch's slots, before their claims; the events come
    back one at a time (a redelivered message is a batch of its own). Each customer gets the
    slot the dead run took for it: no turn is lost, the shares stay even."""
    seed_group(store, "g1", ("m1", "free", True), ("m2", "free", True), ("m3", "free", True))
    events = [new_customer(store, n) for n in range(7)]
    store[SLOTS].insert_many(
        [{"_id": slot_id(TENANT, "g1", n + 1), "tenant_id": TENANT, "group_id": "g1",
          "seq": n + 1, "manager_id": f"m{1 + n % 3}", "customer_id": f"c{n}",
          "email_id": f"e{n}", "claimed_at": NOW} for n in range(6)]
    )  # fmt: skip
    rotation = MongoManagerRotation(store)  # the restarted replica
    got = [
        rotation.assign(TENANT, "g1", e.customer_id, email_id=e.email_id, now=NOW).manager_id
        for e in events
    ]
    assert got == ["m1", "m2", "m3", "m1", "m2", "m3", "m1"]
    assert store[SLOTS].count_documents({"tenant_id": TENANT}) == 7
    assert shares(store) == {"m1": 3, "m2": 2, "m3": 2}


@pytest.mark.parametrize("change", ["emptied", "vanished"])
def test_a_group_emptied_or_gone_leaves_the_customer_unassigned_and_tells_the_owner(
    settings: Settings, broker: Broker, store: Store, change: str
) -> None:
    seed_group(store, "g1", ("m1", "free", True))
    if change == "emptied":
        store.manager_groups.update_one({"_id": "g1"}, {"$set": {"manager_ids": []}})
    else:
        store.manager_groups.delete_one({"_id": "g1"})
    event = new_customer(store, 1)
    stop = threading.Event()
    notifier = threading.Thread(target=run_notifier, args=(settings, stop), daemon=True)
    notifier.start()
    try:
        with assigners(settings, 1):
            broker.publish([encode_event(event), encode_event(event)])  # and redelivered
            wait_until(
                lambda: store.notifications.count_documents({"tenant_id": TENANT}) > 0,
                30,
                "the owner's notification",
            )
            queue = broker.topology.work_queue("notifier")
            wait_until(lambda: broker.queue_counts(queue)[0] == 0, 30, "the notifier to drain")
    finally:
        stop.set()
        notifier.join(timeout=30)
    [doc] = store.notifications.find({"tenant_id": TENANT})
    assert (doc["kind"], doc["user_id"], doc["group_id"]) == ("assignment_failed", "owner", "g1")
    assert "g1" in doc["text"] and "c1@x.org" in doc["text"]
    key = ("notification", TENANT, "assignment_failed", "e1", "owner")  # kind + mail + recipient
    assert doc["_id"] == deterministic_id(*key)
    customer = store.customers.find_one({"tenant_id": TENANT, "_id": "c1"})
    assert customer is not None and customer["manager_id"] is None
    email = store.emails.find_one({"tenant_id": TENANT, "_id": "e1"})
    assert email is not None and "g1" in email["unassigned_reason"]

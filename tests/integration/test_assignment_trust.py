"""The assigner on the real queues and store trusts no `mail.bound`: the mail, its account and
its customer are the store's; an event the store does not vouch for is dead-lettered."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from assigner.slots import CLAIMS, SLOTS
from notifier.__main__ import run as run_notifier
from shared.contracts import AccountOptions, MailBound
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import Store
from shared.topology import Topology
from shared.wire import H_ERROR, H_ERROR_CLASS, encode_event
from tests.integration.test_assignment import (
    TENANT,
    assigners,
    bound_email,
    new_customer,
    routed_messages,
    seed_group,
    shares,
)
from tests.processes import wait_until

pytestmark = pytest.mark.integration

OTHER = "t-other"
STORED = AccountOptions(
    owner_id="owner", create_customer=True, manager_group_id="g1", notify_manager=True
)
FORGED = AccountOptions(owner_id="mallory", manager_group_id="g-evil", notify_manager=False)


def seed(store: Store) -> list[MailBound]:
    """Tenant t1: groups g1 (m1) and g-evil (m-evil), account a1 as STORED, new customers c1
    to c3 from mails e1 to e3; tenant t-other: account a-other, customer c9 from mail e9."""
    seed_group(store, "g1", ("m1", "free", True))
    store.managers.insert_one({"_id": "m-evil", "tenant_id": TENANT, "status": "free"})
    store.manager_groups.insert_one(
        {"_id": "g-evil", "tenant_id": TENANT, "manager_ids": ["m-evil"]}
    )
    events = [new_customer(store, n) for n in (1, 2, 3)]
    store.accounts.update_one({"tenant_id": TENANT, "_id": "a1"}, {"$set": STORED.model_dump()})
    store.accounts.insert_one({"_id": "a-other", "tenant_id": OTHER, "owner_id": "o"})
    store.customers.insert_one({"_id": "c9", "tenant_id": OTHER, "emails": [], "manager_id": None})
    store.emails.insert_one({**bound_email("e9", "c9", tenant=OTHER), "account_id": "a-other"})
    return events


def forge(event: MailBound, n: int, **fields: Any) -> MailBound:
    return event.model_copy(update={"event_id": f"forged-{n}", **fields})


def dead_letters(broker: Broker) -> dict[str, tuple[str, str]]:
    """The assigner's dead letters, taken off its DLQ: (error class, reason) by event id."""
    dlq = Topology.dead_letter_queue(broker.topology.work_queue("assigner"))
    taken = {}
    while (got := broker.get(dlq)) is not None:
        message, tag = got
        broker.ack(tag)
        headers = message.headers or {}
        taken[str(message.message_id)] = (str(headers[H_ERROR_CLASS]), str(headers[H_ERROR]))
    return taken


def test_forged_events_assign_nobody_notify_nobody_and_are_dead_lettered_with_the_reason(
    settings: Settings, broker: Broker, store: Store
) -> None:
    e1, _e2, e3 = seed(store)
    forged = [
        forge(e1, 1, customer_id="c9"),  # another tenant's customer, on our mail
        forge(e1, 2, account_id="a-other"),  # another tenant's account
        forge(e1, 3, email_id="e9", customer_id="c9"),  # another tenant's mail and customer
        forge(e1, 4, customer_id="c2"),  # a customer of ours its mail does not name
        # another tenant's mail that created no customer, passed off as one that did
        forge(e1, 5, tenant_id=OTHER, account_id="a-other", email_id="e9", customer_id="c9",
              customer_created=True, options=STORED),
    ]  # fmt: skip
    store.emails.update_one({"tenant_id": OTHER, "_id": "e9"}, {"$set": {"matched_by": "sender"}})
    stop = threading.Event()
    notifier = threading.Thread(target=run_notifier, args=(settings, stop), daemon=True)
    notifier.start()
    try:
        with assigners(settings, 1):
            # e3 last: once its manager is told, everything before it was handled (one
            # consumer, in order) and its batch's dead letters are in the DLQ.
            broker.publish([encode_event(e) for e in [*forged, e3]])
            wait_until(
                lambda: store.notifications.count_documents({"tenant_id": TENANT}) >= 2,
                30,
                "c3's manager told",
            )
            queue = broker.topology.work_queue("notifier")
            wait_until(lambda: broker.queue_counts(queue)[0] == 0, 30, "the notifier to drain")
    finally:
        stop.set()
        notifier.join(timeout=30)
    assert dead_letters(broker) == {
        "forged-1": ("UntrustedEventError", "e-mail 'e1' of tenant 't1' is bound to customer "
                     "'c1', not 'c9'"),
        "forged-2": ("UnknownAccountError", "account 'a-other' is not an account of tenant "
                     "'t1' (unknown, or another tenant's): nothing is assigned"),
        "forged-3": ("UntrustedEventError", "e-mail 'e9' is not one of tenant 't1'"),
        "forged-4": ("UntrustedEventError", "e-mail 'e1' of tenant 't1' is bound to customer "
                     "'c1', not 'c2'"),
    }  # fmt: skip
    assert shares(store) == {"m1": 1}  # c3 only, the one event the store vouches for
    assert [c["customer_id"] for c in store[CLAIMS].find({})] == ["c3"]
    assert store[SLOTS].count_documents({}) == 1
    assert store.customers.find_one({"_id": "c9"})["manager_id"] is None  # type: ignore[index]
    told = {(n["tenant_id"], n["user_id"], n["customer_id"]) for n in store.notifications.find()}
    assert told == {(TENANT, "m1", "c3")}
    for tenant, email_id in ((TENANT, "e1"), (OTHER, "e9")):  # no outcome: nothing assigned
        email = store.emails.find_one({"tenant_id": tenant, "_id": email_id})
        assert email is not None and "unassigned_reason" not in email


def test_the_group_notify_manager_and_owner_in_an_event_give_way_to_the_stores(
    settings: Settings, broker: Broker, store: Store
) -> None:
    _e1, _e2, e3 = seed(store)
    store.customers.insert_one({"_id": "c7", "tenant_id": TENANT, "emails": [], "manager_id": "m7"})
    store.emails.insert_one(bound_email("e7", "c7", matched_by="sender"))
    existing = e3.model_copy(
        update={"event_id": "ev7", "email_id": "e7", "customer_id": "c7", "matched_by": "sender",
                "customer_created": False, "options": FORGED}
    )  # fmt: skip
    with assigners(settings, 1):
        broker.publish([encode_event(forge(e3, 3, options=FORGED)), encode_event(existing)])
        queue = broker.topology.work_queue("notifier")
        wait_until(lambda: broker.queue_counts(queue)[0] >= 2, 30, "2 routed events")
    routed = {r.customer_id: r for r in routed_messages(broker)}
    assert (routed["c3"].manager_id, routed["c3"].assigned_now) == ("m1", True)  # g1's, not g-evil
    assert routed["c3"].options == routed["c7"].options == STORED
    assert routed["c7"].manager_id == "m7"  # looked up: "notify manager" is on in the store
    assert shares(store) == {"m1": 1, "m7": 1}

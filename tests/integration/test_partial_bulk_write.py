"""A bulk update that fails part-way on the real store, and the stage that handles its batch
again: what the failed command wrote stays, and the re-handling completes it to the state
one clean run leaves (each customer one slot, one claim, one manager; each mail one outcome
and one event), nothing lost and nothing twice."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from pymongo import ASCENDING

from assigner.adapters import CLAIMS, SLOTS
from shared.contracts import AccountOptions, MailBound, MailSummary
from shared.messaging import Broker
from shared.settings import Settings
from shared.store import WRITE_CHUNK, Store
from shared.wire import encode_event
from tests.conftest import store_accounts
from tests.integration.test_assignment import (
    NOW,
    TENANT,
    assigners,
    bound_email,
    routed_messages,
    seed_group,
    shares,
)
from tests.processes import wait_until

pytestmark = pytest.mark.integration

MAILS = 80  # three commands of WRITE_CHUNK statements in the assigner's write of managers
BROKEN = 40  # the customer whose update fails: in the second of them


def customer_from_mail(store: Store, n: int) -> MailBound:
    """A customer the binder created from mail e<n>, its `emails` document and event.

    Each customer has its own `assigned_for_email` (which the assigner overwrites with the
    mail that got it its manager), so that MongoDB can build a unique index on it."""
    store.customers.insert_one(
        {"_id": f"c{n}", "tenant_id": TENANT, "emails": [f"c{n}@x.org"], "manager_id": None,
         "source": "mail", "source_email_id": f"e{n}", "assigned_for_email": f"none-{n}"}
    )  # fmt: skip
    store.emails.insert_one(bound_email(f"e{n}", f"c{n}"))
    event = MailBound(
        event_id=f"ev{n}",
        tenant_id=TENANT,
        account_id="a1",
        email_id=f"e{n}",
        occurred_at=NOW,
        options=AccountOptions(owner_id="owner", create_customer=True, manager_group_id="g1"),
        summary=MailSummary(from_address=f"c{n}@x.org", subject=f"hello {n}"),
        matched_by="created",
        customer_id=f"c{n}",
        customer_created=True,
    )
    store_accounts(store, [event])
    return event


def test_an_update_that_fails_part_way_is_completed_by_handling_the_batch_again(
    settings: Settings, broker: Broker, store: Store
) -> None:
    assert WRITE_CHUNK < BROKEN < 2 * WRITE_CHUNK < MAILS
    seed_group(store, "g1", ("m1", "free", True), ("m2", "free", True), ("m3", "free", True))
    events = [customer_from_mail(store, n) for n in range(MAILS)]
    # The fault: a unique index, and a CRM customer already holding the value that the
    # assigner's update of customer c40 writes. That statement fails with a duplicate key in
    # the middle of a bulk update; MongoDB applies the command's other statements, FerretDB
    # those before it; the commands after it are not sent. The batch fails and is retried.
    store.customers.create_index([("assigned_for_email", ASCENDING)], unique=True)
    store.customers.insert_one(
        {"_id": "crm-1", "tenant_id": TENANT, "emails": ["crm@x.org"], "manager_id": "m9",
         "assigned_for_email": f"e{BROKEN}"}
    )  # fmt: skip
    broker.publish([encode_event(e) for e in events])
    retrying = settings.model_copy(update={"max_retries": 20, "retry_max_seconds": 1.0})
    with assigners(retrying, 1):

        def assigned() -> set[str]:
            query = {"tenant_id": TENANT, "_id": {"$ne": "crm-1"}, "manager_id": {"$ne": None}}
            return {str(c["_id"]) for c in store.customers.find(query)}

        wait_until(lambda: assigned(), 30, "the first commands of the bulk update")
        time.sleep(1.0)  # the batch fails, and again on its retries, while the fault holds
        written = assigned()
        assert 0 < len(written) < MAILS and f"c{BROKEN}" not in written  # part of it applied
        broken = store.emails.find_one({"tenant_id": TENANT, "_id": f"e{BROKEN}"})
        assert broken is not None and broken["manager_id"] is None  # its outcome: not yet

        store.customers.update_one(
            {"tenant_id": TENANT, "_id": "crm-1"}, {"$set": {"assigned_for_email": "other"}}
        )  # the fault is gone: the next retry goes through
        queue = broker.topology.work_queue("notifier")
        wait_until(lambda: broker.queue_counts(queue)[0] >= MAILS, 60, "every routed event")

    customers = {
        str(c["_id"]): c for c in store.customers.find({"tenant_id": TENANT, "source": "mail"})
    }
    assert all(c["manager_id"] in {"m1", "m2", "m3"} for c in customers.values())
    assert sorted(shares(store).values()) == [1, 26, 27, 27]  # crm-1's m9, and even shares
    claims = {c["customer_id"]: c for c in store[CLAIMS].find({"tenant_id": TENANT})}
    assert store[SLOTS].count_documents({"tenant_id": TENANT}) == MAILS == len(claims)
    for cid, customer in customers.items():
        claim = claims[cid]
        assert customer["manager_id"] == claim["manager_id"]
        assert customer["assigned_for_email"] == claim["email_id"] == customer["source_email_id"]
    emails = {str(e["_id"]): e for e in store.emails.find({"tenant_id": TENANT})}
    assert all(
        emails[f"e{n}"]["manager_id"] == customers[f"c{n}"]["manager_id"] for n in range(MAILS)
    )
    routed = routed_messages(broker)  # each mail's event once: none lost, none twice
    assert Counter(r.email_id for r in routed) == Counter(e.email_id for e in events)
    for r in routed:
        assert r.assigned_now and r.manager_id == customers[str(r.customer_id)]["manager_id"]

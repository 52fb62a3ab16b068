"""Every command the stages send about a tenant's data names the tenant in its filter, in the
store (DESIGN.md, invariant 5): watched on the wire while the binder, the assigner and the
notifier handle mail of every kind."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from pymongo import MongoClient, monitoring

import assigner.__main__ as assigner_main
import binder.__main__ as binder_main
import shared.store
from notifier.__main__ import run as run_notifier
from shared.messaging import Broker
from shared.runtime import run_stage
from shared.settings import Settings
from shared.store import Store
from shared.wire import encode_event
from tests.conftest import make_mail, store_accounts
from tests.integration.test_binder_stage import TENANT, fetched
from tests.processes import wait_until

pytestmark = pytest.mark.integration

# The collections that hold a tenant's documents. GridFS's chunks (`rawmail.chunks`) carry no
# tenant: they are reached through their file, whose document does.
TENANT_DATA = {
    "accounts", "customers", "orders", "managers", "manager_groups", "emails", "notifications",
    "blobs", "rawmail.files", "rotations", "rotation_slots", "rotation_claims", "webhooks",
    "fetched_mail", "mailbox_outcomes",
}  # fmt: skip


class Filters(monitoring.CommandListener):
    """The filter of each read, update and delete sent on tenant data, and each insert."""

    def __init__(self) -> None:
        self.filters: list[tuple[str, str, dict[str, Any]]] = []
        self.inserted: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command, name = event.command, event.command_name
        collection = command.get(name)
        if collection not in TENANT_DATA:
            return
        if name == "find":
            self.filters.append((name, collection, command.get("filter", {})))
        elif name in ("update", "delete"):
            self.filters += [(name, collection, s["q"]) for s in command.get(f"{name}s", [])]
        elif name in ("count", "distinct", "findAndModify"):
            self.filters.append((name, collection, command.get("query", {})))
        elif name == "aggregate":
            first = (command.get("pipeline") or [{}])[0]
            self.filters.append((name, collection, first.get("$match", {})))
        elif name == "insert":
            self.inserted += [(collection, doc) for doc in command.get("documents", [])]

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> Filters:
    """Every store client made from here on (the stages') reports to one listener."""
    listener = Filters()
    monkeypatch.setattr(
        shared.store, "MongoClient", partial(MongoClient, event_listeners=[listener])
    )
    return listener


@pytest.fixture
def stages(settings: Settings, watched: Filters) -> Iterator[None]:
    """The binder, the assigner and the notifier, as their processes run them, in threads."""
    stop = threading.Event()
    runs = [
        partial(run_stage, "binder", binder_main.build_handler, settings, stop,
                build_dead_letters=binder_main.build_dead_letters),
        partial(run_stage, "assigner", assigner_main.build_handler, settings, stop),
        partial(run_notifier, settings, stop),
    ]  # fmt: skip
    threads = [threading.Thread(target=run, daemon=True) for run in runs]
    for t in threads:
        t.start()
    yield
    stop.set()
    for t in threads:
        t.join(timeout=30)


def seed(store: Store) -> None:
    """The account, a group of two free managers, a known customer with a manager, and its
    order 7."""
    store.accounts.insert_one(
        {"_id": "acc", "tenant_id": TENANT, "owner_id": "owner", "create_customer": True,
         "manager_group_id": "g1", "notify_manager": True, "notify_skipped": True}
    )  # fmt: skip
    for m in ("m1", "m2"):
        store.managers.insert_one(
            {"_id": m, "tenant_id": TENANT, "name": m, "status": "free", "online": True}
        )
    store.manager_groups.insert_one(
        {"_id": "g1", "tenant_id": TENANT, "name": "g1", "manager_ids": ["m1", "m2"]}
    )
    store.customers.insert_one(
        {"_id": "c-known", "tenant_id": TENANT, "emails": ["known@example.org"],
         "manager_id": "m1"}
    )  # fmt: skip
    store.orders.insert_one(
        {"_id": "o-7", "tenant_id": TENANT, "number": "7", "customer_id": "c-known",
         "manager_id": "m2"}
    )  # fmt: skip


def test_every_command_on_tenant_data_filters_on_the_tenant(
    settings: Settings, broker: Broker, store: Store, watched: Filters, stages: None
) -> None:
    seed(store)
    options = {"create_customer": True, "manager_group_id": "g1", "notify_manager": True,
               "notify_skipped": True}  # fmt: skip
    mails = [
        make_mail("someone@example.org", "[#7] where is it"),  # the order's
        make_mail("known@example.org", "hello"),  # the customer's
        make_mail("new1@example.org", "first"),  # a new customer, assigned
        make_mail("new2@example.org", "second"),
        make_mail("new1@example.org", "again"),  # the new customer's again
        b"not a mail at all",  # skipped, and the owner told
    ]
    events = [fetched(uid, raw, **options) for uid, raw in enumerate(mails, 1)]
    store_accounts(store, [e for e, _ in events])
    broker.publish([encode_event(e, raw) for e, raw in events])
    # two customer_assigned, five incoming_email, one message_skipped
    wait_until(
        lambda: store.notifications.count_documents({"tenant_id": TENANT}) >= 8,
        60,
        "every notification",
    )

    assert {c for _, c, _ in watched.filters} >= {"emails", "customers", "orders"}
    unfiltered = [(n, c, f) for n, c, f in watched.filters if "tenant_id" not in f]
    assert unfiltered == []
    untagged = [(c, d.get("_id")) for c, d in watched.inserted if d.get("tenant_id") != TENANT]
    assert untagged == []
